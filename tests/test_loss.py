"""Both kernels of the cross-entropy, blockwise and native, give F.cross_entropy's value and gradient."""

import pytest
import torch
import torch.nn.functional as F
from test_native import built

from triform.kernels import loss as loss_module
from triform.kernels.calibrate import Calibration, set_calibration
from triform.kernels.loss import cross_entropy


@pytest.fixture(params=["blocks", "native"])
def kernel(request, monkeypatch):
    """Each kernel chosen in turn wherever it is a candidate; the blocks of a few rows, so that a small
    test crosses block boundaries (and a partial last block)."""
    monkeypatch.setattr(loss_module, "BLOCK_BYTES", 4 * 50 * 3)
    if request.param == "native":
        built()
    calibration = Calibration(timer=lambda name, run: 0.0 if name == request.param else 1.0, read_disk=False)
    old = set_calibration(calibration)
    yield request.param
    set_calibration(old)
    assert {choice.kernel for _, choice in calibration.table()} <= {request.param}


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_value_and_gradient_equal_torch_in_fp32(kernel, label_smoothing):
    generator = torch.Generator().manual_seed(0)
    logits = (torch.randn(11, 50, generator=generator) * 3).requires_grad_()
    targets = torch.randint(0, 50, (11,), generator=generator)
    targets[[2, 7]] = -100
    expected = F.cross_entropy(logits, targets, ignore_index=-100, label_smoothing=label_smoothing)
    (expected_gradient,) = torch.autograd.grad(expected * 2.5, logits)
    ours = cross_entropy(logits, targets, ignore_index=-100, label_smoothing=label_smoothing)
    (gradient,) = torch.autograd.grad(ours * 2.5, logits)
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(gradient, expected_gradient, rtol=0, atol=1e-7)
    assert gradient[[2, 7]].abs().max() == 0  # ignored rows get no gradient


def test_bf16_logits_get_a_bf16_gradient_close_to_the_fp32_one(kernel):
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(9, 50, generator=generator).to(torch.bfloat16).requires_grad_()
    targets = torch.randint(0, 50, (9,), generator=generator)
    expected = F.cross_entropy(logits.float(), targets)
    (expected_gradient,) = torch.autograd.grad(expected, logits)
    ours = cross_entropy(logits, targets)
    (gradient,) = torch.autograd.grad(ours, logits)
    assert ours.dtype == torch.float32 and gradient.dtype == torch.bfloat16
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(gradient.float(), expected_gradient.float(), rtol=0.01, atol=1e-4)


def test_without_gradient_nothing_is_kept_and_no_target_gives_zero(kernel):
    logits, targets = torch.randn(4, 7), torch.tensor([1, 2, 3, 4])
    with torch.no_grad():
        assert cross_entropy(logits, targets) == pytest.approx(float(F.cross_entropy(logits, targets)), abs=1e-6)
    assert float(cross_entropy(logits, torch.full((4,), -100))) == 0.0


def test_a_second_backward_is_right_or_refused(kernel):
    """The gradient is kept as computed for loss.backward() (an incoming gradient of 1) and scaled
    in place otherwise: a backward after a scaled one would read a changed gradient, and is refused."""
    logits = torch.randn(3, 5, requires_grad=True)
    loss = cross_entropy(logits, torch.tensor([0, 1, 2]))
    loss.backward(retain_graph=True)
    first = logits.grad.clone()
    loss.backward(retain_graph=True)
    torch.testing.assert_close(logits.grad, 2 * first)
    (0.5 * loss).backward(retain_graph=True)
    torch.testing.assert_close(logits.grad, 2.5 * first)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


def test_a_large_vocabulary_and_extreme_logits_match_torch(kernel):
    """Rows long enough for every vector path, logits far from 0 (the largest is taken off first)."""
    generator = torch.Generator().manual_seed(2)
    logits = (torch.randn(5, 8195, generator=generator) * 30 + 200).requires_grad_()
    targets = torch.randint(0, 8195, (5,), generator=generator)
    expected = F.cross_entropy(logits, targets, label_smoothing=0.1)
    (expected_gradient,) = torch.autograd.grad(expected, logits)
    ours = cross_entropy(logits, targets, label_smoothing=0.1)
    (gradient,) = torch.autograd.grad(ours, logits)
    torch.testing.assert_close(ours, expected, rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(gradient, expected_gradient, rtol=2e-5, atol=1e-7)


def test_a_target_outside_the_vocabulary_is_refused_by_name(kernel):
    logits = torch.randn(3, 10, requires_grad=True)
    with pytest.raises(IndexError, match="target id 10 is outside the vocabulary of 10 ids"):
        cross_entropy(logits, torch.tensor([1, 10, -100]))
    with pytest.raises(IndexError, match="target id -3 is outside"):
        cross_entropy(logits, torch.tensor([1, -3, 2]))


def produced_logits(dtype: torch.dtype, rows: int = 11, vocab: int = 50):
    """(weight, hidden, logits made by a product of them, targets with two rows ignored): logits as a
    model's head makes them, so that they are not a leaf."""
    generator = torch.Generator().manual_seed(3)
    weight = torch.randn(vocab, 8, generator=generator, dtype=dtype).requires_grad_()
    hidden = torch.randn(rows, 8, generator=generator, dtype=dtype)
    targets = torch.randint(0, vocab, (rows,), generator=generator)
    targets[[2, 7]] = -100
    return weight, hidden, hidden @ weight.T, targets


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_released_logits_hold_the_gradient_and_it_is_the_same(kernel, dtype, label_smoothing):
    weight, hidden, logits, targets = produced_logits(dtype)
    expected = F.cross_entropy(logits.float(), targets, ignore_index=-100, label_smoothing=label_smoothing)
    (expected_gradient,) = torch.autograd.grad(expected, weight)
    weight, hidden, logits, targets = produced_logits(dtype)
    seen = []
    logits.register_hook(lambda gradient: seen.append(gradient.data_ptr()))
    with loss_module.logits_released():
        ours = cross_entropy(logits, targets, ignore_index=-100, label_smoothing=label_smoothing)
    (gradient,) = torch.autograd.grad(ours, weight)
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-5)
    tolerance = dict(rtol=0, atol=1e-6) if dtype == torch.float32 else dict(rtol=0.02, atol=2e-3)
    torch.testing.assert_close(gradient.float(), expected_gradient.float(), **tolerance)
    assert seen == [logits.data_ptr()]  # no memory of its own


def test_logits_not_released_or_not_produced_are_left_as_they_were(kernel):
    weight, hidden, logits, targets = produced_logits(torch.float32)
    before = logits.detach().clone()
    cross_entropy(logits, targets).backward()
    assert torch.equal(logits, before)
    leaf = before.clone().requires_grad_()  # the caller's own tensor, not an operation's result
    with loss_module.logits_released():
        cross_entropy(leaf, targets).backward()
    assert torch.equal(leaf.detach(), before) and leaf.grad.data_ptr() != leaf.data_ptr()


def test_an_operation_that_saved_the_released_logits_refuses_its_backward_pass(kernel):
    """The logits' version is bumped when the gradient takes their memory: a product that kept them
    for its own gradient fails loudly instead of reading the loss's gradient."""
    weight, hidden, logits, targets = produced_logits(torch.float32)
    squares = logits * logits  # saves the logits
    with loss_module.logits_released():
        loss = cross_entropy(logits, targets) + squares.sum()
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()
