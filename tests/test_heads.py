"""The language-model head: its bias is added as a linear layer's own bias is, in the logits' dtype."""

import pytest
import torch
import torch.nn.functional as F

from triform.kernels import Linear
from triform.models.heads import LanguageModelHead


def head_with_bias(linear=torch.nn.Linear) -> LanguageModelHead:
    torch.manual_seed(0)
    head = LanguageModelHead(linear(16, 50, bias=False), bias=True)
    torch.nn.init.normal_(head.bias)
    return head


def test_under_bf16_autocast_the_logits_stay_bf16_and_equal_a_biased_linear_layer_s():
    """An fp32 bias added to bf16 logits would make them fp32: a second tokens x vocabulary tensor."""
    head, hidden = head_with_bias(), torch.randn(7, 16, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = head(hidden)
        expected = F.linear(hidden, head.projection.weight, head.bias)  # autocast casts the bias to bf16
    assert logits.dtype == expected.dtype == torch.bfloat16
    torch.testing.assert_close(logits, expected, rtol=0.02, atol=0.02)
    logits.float().sum().backward()
    assert head.bias.grad.dtype == torch.float32
    torch.testing.assert_close(head.bias.grad, torch.full((50,), 7.0))


@pytest.mark.parametrize("linear", [torch.nn.Linear, Linear])
def test_in_training_the_bias_is_the_product_s_and_gets_the_gradient_of_one(linear):
    """With autograd the bias goes into the product itself (no tokens x vocabulary sum after it)."""
    head, hidden = head_with_bias(linear), torch.randn(7, 16, requires_grad=True)
    weights = torch.randn(7, 50)
    logits = head(hidden)
    assert type(logits.grad_fn).__name__ != "AddBackward0"  # made by the product, not a sum after it
    torch.testing.assert_close(logits, F.linear(hidden, head.projection.weight, head.bias))
    (logits * weights).sum().backward()
    torch.testing.assert_close(head.bias.grad, weights.sum(0))
    torch.testing.assert_close(head.projection.weight.grad, weights.t() @ hidden.detach())
    torch.testing.assert_close(hidden.grad, weights @ head.projection.weight.detach())


def test_in_fp32_the_bias_is_added_as_it_is():
    head, hidden = head_with_bias(), torch.randn(7, 16)
    torch.testing.assert_close(head(hidden), F.linear(hidden, head.projection.weight, head.bias))


@pytest.mark.parametrize("swapped", ["torch-swapped", "onednn-swapped"])
def test_a_weight_gradient_asked_in_rows_comes_contiguous_from_a_swapped_product(swapped):
    """A tied projection's (gradient_in_rows): torch adds the embedding's gradient into it in place
    only where it is contiguous."""
    from triform.kernels import linear as linear_module
    from triform.kernels.calibrate import Calibration, set_calibration

    if swapped == "onednn-swapped" and not linear_module.ONEDNN:
        pytest.skip("no oneDNN in this torch")
    old = set_calibration(Calibration(timer=lambda name, run: 0.0 if name == swapped else 1.0, read_disk=False))
    try:
        weight, x = torch.randn(40, 16, requires_grad=True), torch.randn(2, 5, 16)
        grad = torch.randn(2, 5, 40)
        expected = grad.reshape(-1, 40).t() @ x.reshape(-1, 16)
        for in_rows in (False, True):
            (got,) = torch.autograd.grad(linear_module.linear(x, weight, None, in_rows), weight, grad)
            assert got.is_contiguous() == in_rows
            torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    finally:
        set_calibration(old)


def test_a_tied_output_projection_asks_for_its_weight_gradient_in_rows():
    from conftest import tiny_config

    from triform.models import build_model

    tied = build_model(tiny_config("stack", tie_embeddings=True))
    untied = build_model(tiny_config("stack", tie_embeddings=False))
    heads = [module for model in (tied, untied) for module in model.modules() if isinstance(module, LanguageModelHead)]
    assert [head.projection.gradient_in_rows for head in heads] == [True, False]
