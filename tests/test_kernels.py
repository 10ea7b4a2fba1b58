"""The kernels compute what the textbook parts compute: linear layers, attention, dropout, whole models."""

import pytest
import torch
import torch.nn.functional as F
from conftest import random_ids, tiny_config

from triform.kernels import linear as linear_module
from triform.kernels import native
from triform.kernels.attention import attend
from triform.kernels.dropout import Dropout, dropout, keep_mask
from triform.kernels.linear import Linear
from triform.models import build_model
from triform.models.build import TEXTBOOK
from triform.nn import attention as textbook


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("rows", [1, 40])
def test_a_bf16_layer_chooses_the_widened_product_and_computes_in_fp32_rounded_once(forced, bias, rows):
    calibration = forced("widened")
    torch.manual_seed(0)
    layer = Linear(64, 96, bias=bias).to(torch.bfloat16)
    x = torch.randn(rows, 64).bfloat16()
    with torch.no_grad():
        y = layer(x)
    expected = F.linear(x.float(), layer.weight.float(), None if layer.bias is None else layer.bias.float())
    assert y.dtype == torch.bfloat16 and torch.equal(y, expected.bfloat16())  # one rounding, of the fp32 sum
    assert [choice.kernel for _, choice in calibration.table()] == ["widened"]


@pytest.mark.parametrize("kernel", ["torch", "onednn", "torch-swapped", "onednn-swapped"])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_matches_torch_forward_and_backward(bias, kernel, forced):
    calibration = forced(kernel)
    torch.manual_seed(0)
    layer = Linear(64, 160, bias=bias)
    x = torch.randn(4, 32, 64, requires_grad=True)
    expected = F.linear(x, layer.weight, layer.bias)
    grads_expected = torch.autograd.grad(expected.square().sum(), [x, *layer.parameters()])
    y = layer(x)
    grads = torch.autograd.grad(y.square().sum(), [x, *layer.parameters()])
    assert y.shape == (4, 32, 160)
    torch.testing.assert_close(y, expected, rtol=1e-5, atol=1e-5)
    for got, want in zip(grads, grads_expected):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    roles = {key.split()[1] for key, _ in calibration.table()}
    chosen = {choice.kernel for _, choice in calibration.table()}
    assert roles == ({"x·Wᵀ", "g·W", "gᵀ·x"} if linear_module.ONEDNN else set())  # each product chose
    assert chosen <= {kernel, "torch"}  # the swapped kernels are candidates of the weight's gradient only
    assert all(choice.kernel == kernel for key, choice in calibration.table() if " gᵀ·x " in key)


@pytest.mark.parametrize("kernel", ["torch", "onednn", "onednn-packed", "mkl-packed", "fp32"])
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("rows", [1, 3, 40])
def test_every_inference_kernel_computes_the_plain_product(kernel, precision, rows, forced):
    """Without autograd each candidate, when chosen, gives nn.Linear's result (bf16: autocast's, to rounding)."""
    forced(kernel)
    torch.manual_seed(0)
    layer = Linear(64, 96)
    x = torch.randn(rows, 64)
    bf16 = precision == "bf16"
    with torch.no_grad():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            ours, plain = layer(x), F.linear(x, layer.weight, layer.bias)
        layer.weight.mul_(2)  # an optimizer step (between autocast regions): prepared weights follow it
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            twice = layer(x)
    assert ours.dtype == plain.dtype
    tolerance = dict(rtol=1e-5, atol=1e-5) if precision == "fp32" else dict(rtol=0.02, atol=0.03)
    torch.testing.assert_close(ours.float(), plain.float(), **tolerance)
    expected = 2 * F.linear(x, layer.weight / 2, None) + layer.bias
    torch.testing.assert_close(twice.float(), expected, **tolerance)
    layer.weight = torch.nn.Parameter(-layer.weight.detach())  # replaced (as tying does), version 0 again
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        replaced = layer(x)
    torch.testing.assert_close(replaced.float(), F.linear(x, layer.weight, layer.bias), **tolerance)


def test_a_bf16_autocast_training_step_matches_autocast_forward_and_backward(forced):
    forced("onednn")
    torch.manual_seed(0)
    layer = Linear(64, 96)
    x = torch.randn(2, 5, 64, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours = layer(x)
        plain = F.linear(x, layer.weight, layer.bias)
    assert ours.dtype == plain.dtype == torch.bfloat16
    torch.testing.assert_close(ours.float(), plain.float(), rtol=0.02, atol=0.02)
    grads = torch.autograd.grad(ours.float().square().sum(), [x, *layer.parameters()])
    expected = torch.autograd.grad(plain.float().square().sum(), [x, *layer.parameters()])
    for got, want in zip(grads, expected):
        assert got.dtype == want.dtype == torch.float32  # the fp32 parameters get fp32 gradients
        torch.testing.assert_close(got, want, rtol=0.05, atol=0.05)


def attention_inputs(queries: int, keys: int, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(2, 3, n, 16, generator=generator) for n in (queries, keys, keys)]


@pytest.mark.parametrize("kernel", ["sdpa", "written-out"])
@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
@pytest.mark.parametrize("case", ["causal", "mask", "bias", "cross", "none"])
def test_every_attention_kernel_matches_the_fused_kernel(case, dtype, kernel, forced):
    forced(kernel)
    queries, keys = (5, 9) if case == "cross" else (7, 7)
    q, k, v = attention_inputs(queries, keys)
    mask = bias = None
    if case in ("mask", "cross"):
        mask = torch.rand(2, 1, queries, keys, generator=torch.Generator().manual_seed(1)) > 0.3
        mask[..., 0] = True  # every query sees something
    if case == "bias":
        bias = torch.randn(1, 3, queries, keys)
    attention_mask = bias if bias is not None else mask
    expected = textbook.attend(q, k, v, attention_mask, case == "causal", 0.0, None)
    inputs = [t.bfloat16() if dtype == "bf16" else t for t in (q, k, v)]
    ours = attend(*inputs, attention_mask, case == "causal", 0.0, None)
    assert ours.dtype == inputs[0].dtype
    tolerance = dict(rtol=0, atol=0.03) if dtype == "bf16" else dict(rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours.float(), expected, **tolerance)


@pytest.mark.parametrize("case", ["mask", "bias"])
def test_single_query_under_bf16_autocast_attends_in_fp32(case, forced):
    forced("fp32")
    q, k, v = attention_inputs(1, 9)
    if case == "mask":
        mask = torch.rand(2, 1, 1, 9, generator=torch.Generator().manual_seed(1)) > 0.3
        mask[..., 0] = True
    else:
        mask = torch.randn(1, 3, 1, 9)
    expected = textbook.attend(q, k, v, mask, False, 0.0, None)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours = attend(q.bfloat16(), k, v, mask.bfloat16() if case == "bias" else mask, False, 0.0, None)
    assert ours.dtype == torch.float32
    torch.testing.assert_close(ours, expected, rtol=0, atol=0.02)


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
@pytest.mark.parametrize("case", ["none", "mask", "bias", "causal-one-key", "causal"])
def test_a_decoding_step_attends_by_triform_s_kernel_as_the_fused_kernel_does(case, dtype, forced):
    from triform.kernels import native

    if native.library() is None:
        pytest.skip(f"triform's native kernels are not built here: {native.unavailable()}")
    calibration = forced("native")
    keys = 1 if case == "causal-one-key" else 9
    q, _, _ = attention_inputs(1, keys)
    cache = torch.randn(2, 3, keys + 4, 16, generator=torch.Generator().manual_seed(3))
    k, v = cache[:, :, :keys], cache[:, :, 4:]  # views of a longer cache, as a step's keys are
    mask = None
    if case == "mask":
        mask = torch.rand(2, 1, 1, keys, generator=torch.Generator().manual_seed(1)) > 0.3
        mask[..., 0] = True
    if case == "bias":
        mask = torch.randn(3, 1, keys)  # broadcast over the batch, fewer dimensions than the scores
    causal = case.startswith("causal")
    inputs = [t.bfloat16() if dtype == "bf16" else t for t in (q, k, v)]
    expected = textbook.attend(*(t.double() for t in inputs), None if mask is None else mask, causal, 0.0, None)
    with torch.no_grad():
        ours = attend(*inputs, mask, causal, 0.0, None)
    assert ours.dtype == inputs[0].dtype
    tolerance = dict(rtol=0, atol=0.02) if dtype == "bf16" else dict(rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours.double(), expected, **tolerance)
    assert {choice.kernel for _, choice in calibration.table()} == {"native"}


def test_attention_with_dropout_draws_as_if_it_had_not_calibrated(forced):
    forced("written-out")  # the warm-up calls of every candidate draw masks; the state is restored
    """Timing candidates restores torch's random state: a run that calibrates on its first step
    draws the same dropout masks as one whose choices were already made."""
    q, k, v = attention_inputs(7, 7)
    outputs = []
    for _ in range(2):  # the first call measures, the second finds the choice made
        torch.manual_seed(5)
        outputs.append(attend(q, k, v, None, True, 0.3, None))
    assert torch.equal(outputs[0], outputs[1])


def test_keep_mask_drops_p_of_the_elements():
    torch.manual_seed(0)
    keep, kept = keep_mask(torch.Size([500, 401]), 0.1, torch.device("cpu"))
    assert kept == pytest.approx(0.9, abs=1e-4)
    assert float(keep.float().mean()) == pytest.approx(kept, abs=0.003)  # 200,500 draws: 4 standard deviations


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("kernel", ["torch", "native"])
def test_each_dropout_kernel_drops_p_keeps_the_expectation_and_repeats_under_a_seed(kernel, dtype, forced):
    if kernel == "native" and native.library() is None:
        pytest.skip(f"triform's kernels are not built here: {native.unavailable()}")
    calibration = forced(kernel)
    x = torch.ones(400, 500, dtype=dtype, requires_grad=True)
    torch.manual_seed(1)
    y = dropout(x, 0.3)
    dropped = (y.detach() == 0).float()
    assert float(dropped.mean()) == pytest.approx(0.3, abs=0.004)  # 200,000 draws: 4 standard deviations
    values = torch.unique(y.detach().float()).tolist()
    assert float(y.detach().float().mean()) == pytest.approx(1.0, abs=0.01)
    assert len(values) == 2 and values[0] == 0.0 and values[1] == pytest.approx(1 / (1 - 0.3), rel=2**-7)
    # neighbours, rows and the next call draw independently: their decisions agree as chance would have it
    for a, b in [(dropped[:, 1:], dropped[:, :-1]), (dropped[1:], dropped[:-1])]:
        assert float((a * b).mean()) == pytest.approx(0.09, abs=0.005)
    again = (dropout(x, 0.3).detach() == 0).float()
    assert float((again * dropped).mean()) == pytest.approx(0.09, abs=0.005)
    y.float().sum().backward()
    torch.testing.assert_close(x.grad, y.detach())  # the gradient is the kept mask times the scale, as nn.Dropout's
    torch.manual_seed(1)
    assert torch.equal(dropout(x, 0.3), y)  # seeded: the same mask
    assert [choice.kernel for _, choice in calibration.table()] == [kernel]


def test_dropout_is_the_identity_in_evaluation_and_at_zero():
    x = torch.randn(4, 5)
    layer = Dropout(0.5).eval()
    assert layer(x) is x and Dropout(0.0)(x) is x and dropout(x, 0.5, training=False) is x
    assert torch.equal(torch.nn.Dropout(0.5).eval()(x), x)  # as the textbook one
    torch.manual_seed(3)
    first = Dropout(0.5)(x)
    torch.manual_seed(3)
    assert torch.equal(first, Dropout(0.5)(x))  # seeded: the same mask


def twins(arch: str):
    """The same model built with this device's kernels and on plain torch: the same weights, same names."""
    config = tiny_config(arch, d_model=64, n_heads=4, d_ff=256, position="relative", relative_buckets=8)
    torch.manual_seed(0)
    fast = build_model(config)
    torch.manual_seed(0)
    plain = build_model(config, TEXTBOOK)
    assert list(fast.state_dict()) == list(plain.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(fast.state_dict().values(), plain.state_dict().values()))
    return fast, plain


@pytest.mark.parametrize("arch", ["stack", "encoder-decoder"])
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_a_built_model_matches_its_textbook_twin_forward_and_backward(arch, precision):
    fast, plain = twins(arch)
    ids = random_ids(4, 48)  # 192 rows: oneDNN's products in fp32, the written-out attention in bf16
    inputs = (ids,) if arch == "stack" else (ids, ids[:, :40])
    results = []
    for model in (fast, plain):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            logits = model(*inputs)
        grads = torch.autograd.grad(logits.float().square().mean(), list(model.parameters()))
        results.append((logits.float(), grads))
    (logits, grads), (expected, expected_grads) = results
    tolerance = dict(rtol=1e-4, atol=1e-5) if precision == "fp32" else dict(rtol=0.05, atol=0.05)
    torch.testing.assert_close(logits, expected, **tolerance)
    for got, want in zip(grads, expected_grads):
        torch.testing.assert_close(got, want, rtol=tolerance["rtol"], atol=tolerance["atol"] * 10)


@pytest.mark.parametrize("arch", ["stack", "encoder-decoder"])
def test_decoding_steps_under_bf16_autocast_match_the_textbook_twin(arch):
    """One token a call at batch 1: the fp32 single rows and single-query attention against plain torch."""
    fast, plain = (model.eval() for model in twins(arch))
    ids, source = random_ids(1, 8), random_ids(1, 6, generator_seed=1)
    steps = []
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        for model in (fast, plain):
            cache = model.new_cache(1)
            if arch == "stack":
                logits = [model(ids[:, t : t + 1], "causal", cache=cache) for t in range(8)]
            else:
                memory = model.encode(source)
                logits = [model.decode(ids[:, t : t + 1], memory, cache=cache) for t in range(8)]
            steps.append(torch.cat(logits, 1).float())
    torch.testing.assert_close(steps[0], steps[1], rtol=0.05, atol=0.05)
