"""The faster paths give what the plain torch operations give: linear layers, attention, dropout."""

import pytest
import torch
import torch.nn.functional as F

from triform.kernels import linear as linear_module
from triform.kernels.attention import attend
from triform.kernels.dropout import Dropout, dropout, keep_mask
from triform.kernels.linear import Linear, use_onednn


@pytest.mark.parametrize("bias", [True, False])
def test_linear_matches_torch_forward_and_backward(bias):
    torch.manual_seed(0)
    layer = Linear(64, 160, bias=bias)
    x = torch.randn(4, 32, 64, requires_grad=True)  # large enough for oneDNN where it is present
    expected = F.linear(x, layer.weight, layer.bias)
    grads_expected = torch.autograd.grad(expected.square().sum(), [x, *layer.parameters()])
    y = layer(x)
    grads = torch.autograd.grad(y.square().sum(), [x, *layer.parameters()])
    assert y.shape == (4, 32, 160)
    torch.testing.assert_close(y, expected, rtol=1e-5, atol=1e-5)
    for got, want in zip(grads, grads_expected):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_linear_uses_onednn_only_for_large_fp32_products_outside_autocast():
    x, weight = torch.randn(64, 64), torch.randn(64, 64)  # 2^18 multiply-adds
    assert use_onednn(x, weight) == linear_module.ONEDNN
    assert not use_onednn(x[:1], weight)  # a single row: MKL's call costs less
    assert not use_onednn(x.double(), weight.double())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not use_onednn(x, weight)
        assert Linear(64, 64)(x).dtype == torch.bfloat16  # autocast applies as to nn.Linear
    torch.backends.mkldnn.enabled = False
    try:
        assert not use_onednn(x, weight)
    finally:
        torch.backends.mkldnn.enabled = True


def attention_inputs(queries: int, keys: int, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(2, 3, n, 16, generator=generator) for n in (queries, keys, keys)]


@pytest.mark.parametrize("case", ["causal", "mask", "bias", "cross", "none"])
def test_written_out_bf16_attention_matches_the_fused_kernel(case):
    queries, keys = (5, 9) if case == "cross" else (7, 7)
    q, k, v = attention_inputs(queries, keys)
    mask = bias = None
    if case in ("mask", "cross"):
        mask = torch.rand(2, 1, queries, keys, generator=torch.Generator().manual_seed(1)) > 0.3
        mask[..., 0] = True  # every query sees something
    if case == "bias":
        bias = torch.randn(1, 3, queries, keys)
    attention_mask = bias if bias is not None else mask
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=attention_mask, is_causal=case == "causal")
    ours = attend(*(t.bfloat16() for t in (q, k, v)), attention_mask, case == "causal", 0.0, None)
    assert ours.dtype == torch.bfloat16
    torch.testing.assert_close(ours.float(), expected, rtol=0, atol=0.03)


def test_keep_mask_drops_p_of_the_elements_and_dropout_keeps_the_expectation():
    torch.manual_seed(0)
    keep, kept = keep_mask(torch.Size([500, 401]), 0.1, torch.device("cpu"))
    assert kept == pytest.approx(0.9, abs=1e-4)
    assert float(keep.float().mean()) == pytest.approx(kept, abs=0.003)  # 200,500 draws: 4 standard deviations
    x = torch.ones(400, 500, requires_grad=True)
    y = dropout(x, 0.3)
    values = torch.unique(y.detach()).tolist()
    assert float(y.detach().mean()) == pytest.approx(1.0, abs=0.01)
    assert len(values) == 2 and values[0] == 0.0 and values[1] == pytest.approx(1 / (1 - 0.3), abs=1e-3)
    y.sum().backward()
    torch.testing.assert_close(x.grad, y.detach())  # the gradient is the kept mask times the scale


def test_dropout_is_the_identity_in_evaluation_and_at_zero():
    x = torch.randn(4, 5)
    layer = Dropout(0.5).eval()
    assert layer(x) is x and Dropout(0.0)(x) is x and dropout(x, 0.5, training=False) is x
    torch.manual_seed(3)
    first = Dropout(0.5)(x)
    torch.manual_seed(3)
    assert torch.equal(first, Dropout(0.5)(x))  # seeded: the same mask


def test_one_row_under_bf16_autocast_matches_the_plain_product_and_restores_onednn():
    torch.manual_seed(0)
    layer = Linear(64, 48)
    x = torch.randn(1, 1, 64)
    assert not linear_module.one_bf16_row(x)  # outside autocast
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert linear_module.one_bf16_row(x) and not linear_module.one_bf16_row(torch.randn(2, 64))
        ours = layer(x)
        plain = F.linear(x, layer.weight, layer.bias)  # autocast's own choice of kernel
        with pytest.raises(RuntimeError):
            layer(torch.randn(1, 63))  # a failing product leaves the flag as it found it
    assert torch.backends.mkldnn.enabled
    assert ours.dtype == plain.dtype == torch.bfloat16
    torch.testing.assert_close(ours.float(), plain.float(), rtol=0.02, atol=0.02)
    torch.testing.assert_close(ours.float(), F.linear(x, layer.weight, layer.bias), rtol=0.02, atol=0.02)


def test_one_row_products_in_threads_leave_onednn_enabled():
    import threading

    layer = Linear(32, 32)
    errors = []

    def decode():
        try:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                for _ in range(200):
                    layer(torch.randn(1, 32))
        except Exception as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=decode) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and torch.backends.mkldnn.enabled and linear_module._without_onednn.inside == 0


@pytest.mark.parametrize("case", ["mask", "bias"])
def test_single_query_under_bf16_autocast_attends_in_fp32(case):
    q, k, v = attention_inputs(1, 9)
    if case == "mask":
        mask = torch.rand(2, 1, 1, 9, generator=torch.Generator().manual_seed(1)) > 0.3
        mask[..., 0] = True
    else:
        mask = torch.randn(1, 3, 1, 9)
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours = attend(q.bfloat16(), k, v, mask.bfloat16() if case == "bias" else mask, False, 0.0, None)
    assert ours.dtype == torch.float32
    torch.testing.assert_close(ours, expected, rtol=0, atol=0.02)
