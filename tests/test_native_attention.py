"""triform's attention over many queries (native/training_attention.c): forward and backward as torch's
exact attention computes them, chosen by calibration only where it applies."""

import pytest
import torch
import torch.nn.functional as F
from conftest import random_ids, tiny_config
from test_native import built

from triform.kernels import attention
from triform.kernels.dropout import native_draw
from triform.models import build_model


def heads_of_one_projection(batch: int, length: int, heads: int, d: int, generator, parts: int = 3):
    """`parts` operands (B, H, T, d) viewed out of one (B, T, parts · H · d) projection, as attention
    splits its heads: strided, the last dimension contiguous."""
    joined = torch.randn(batch, length, parts, heads, d, generator=generator)
    return [joined[:, :, i].transpose(1, 2) for i in range(parts)]


def exact(q, k, v, causal, grad, scale=None, mask=None):
    """torch's attention in fp64 and its gradients: the reference."""
    inputs = [t.detach().double().requires_grad_() for t in (q, k, v)]
    if mask is not None:
        mask = mask if mask.dtype == torch.bool else mask.double()
    out = F.scaled_dot_product_attention(*inputs, attn_mask=mask, is_causal=causal, scale=scale)
    out.backward(grad.double())
    return out, *(t.grad for t in inputs)


# (batch, heads, queries, keys, d_head, causal)
SHAPES = [(2, 3, 37, 37, 64, True), (2, 3, 37, 50, 32, False), (1, 2, 70, 45, 16, True), (2, 2, 5, 90, 64, True),
          (1, 1, 2, 2, 16, False), (3, 4, 128, 128, 64, True), (1, 2, 33, 17, 48, False)]  # fmt: skip


def both_passes(kernels, dtype, sizes, threads):
    """((q, k, v, grad, scale), (out, lse, (dq, dk, dv))): the native forward and backward passes on
    `threads` threads, for operands of `sizes` (an entry of SHAPES) in `dtype` strided as heads are."""
    batch, heads, queries, keys, d, causal = sizes
    generator = torch.Generator().manual_seed(queries * keys + d)
    (q,) = heads_of_one_projection(batch, queries, heads, d, generator, parts=1)
    k, v = heads_of_one_projection(batch, keys, heads, d, generator, parts=2)
    grad = torch.randn(batch, queries, heads, d, generator=generator).transpose(1, 2)
    q, k, v, grad = (t.to(dtype) for t in (q, k, v, grad))
    scale = 0.3 if d == 48 else d**-0.5  # any scale, as T5's 1
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        out, lse = kernels.attention_forward(q, k, v, None, causal, scale)
        gradients = kernels.attention_backward(q, k, v, None, out, lse, grad, causal, scale)
    finally:
        torch.set_num_threads(before)
    return (q, k, v, grad, scale), (out, lse, gradients)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("sizes", SHAPES)
def test_forward_and_backward_match_exact_attention(sizes, threads):
    (q, k, v, grad, scale), (out, lse, gradients) = both_passes(built(), torch.float32, sizes, threads)
    batch, heads, queries, keys, d, causal = sizes
    want, *want_gradients = exact(q, k, v, causal, grad, scale)
    assert out.shape == q.shape and out.transpose(1, 2).is_contiguous()  # the heads' join is a view
    torch.testing.assert_close(out.double(), want, rtol=1e-5, atol=2e-6)
    scores = torch.einsum("bhqd,bhkd->bhqk", q.double(), k.double()) * scale
    if causal:
        scores = scores.masked_fill(torch.ones(queries, keys, dtype=torch.bool).triu(1), float("-inf"))
    torch.testing.assert_close(lse.double(), scores.logsumexp(-1), rtol=1e-5, atol=1e-5)
    for got, expected in zip(gradients, want_gradients):
        assert got.shape == expected.shape
        torch.testing.assert_close(got.double(), expected, rtol=1e-4, atol=1e-5)


def test_keys_no_query_attends_get_zero_gradients():
    """Causal with more keys than queries: the keys past the last query are never attended."""
    kernels = built()
    generator = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(1, 2, n, 16, generator=generator) for n in (4, 20, 20))
    out, lse = kernels.attention_forward(q, k, v, None, True, 0.25)
    _, dk, dv = kernels.attention_backward(q, k, v, None, out, lse, torch.ones_like(out), True, 0.25)
    assert torch.all(dk[:, :, 4:] == 0) and torch.all(dv[:, :, 4:] == 0) and torch.any(dv[:, :, :4] != 0)


def test_attend_chooses_it_by_calibration_and_gives_autograd_its_gradients(forced):
    built()
    calibration = forced("native")
    generator = torch.Generator().manual_seed(0)
    q, k, v = (t.requires_grad_() for t in heads_of_one_projection(2, 24, 3, 16, generator))
    out = attention.attend(q, k, v, None, True, 0.0, None)
    grad = torch.randn(out.shape, generator=generator)
    gradients = torch.autograd.grad(out, (q, k, v), grad)
    want, *want_gradients = exact(q, k, v, True, grad)
    torch.testing.assert_close(out.double(), want, rtol=1e-5, atol=2e-6)
    for got, expected in zip(gradients, want_gradients):
        torch.testing.assert_close(got.double(), expected, rtol=1e-4, atol=1e-5)
    assert [choice.kernel for _, choice in calibration.table()] == ["native"]


@pytest.mark.parametrize("case", ["learned bias", "bf16 without pairs", "autocast", "d_head", "pair-limit"])
def test_it_is_no_candidate_where_it_would_compute_something_else(case, monkeypatch):
    kernels = built()
    generator = torch.Generator().manual_seed(0)
    queries = 1025 if case == "pair-limit" else 8
    q, k, v = (torch.randn(1, 2, queries, 20 if case == "d_head" else 16, generator=generator) for _ in range(3))
    mask = torch.zeros(1, 2, queries, queries, requires_grad=True) if case == "learned bias" else None
    if case == "bf16 without pairs":  # a CPU without AVX512-BF16: the library has the fp32 kernel alone
        q, k, v = (t.bfloat16() for t in (q, k, v))
        monkeypatch.setattr(kernels, "training_attention_dtypes", (torch.float32,))
    assert "native" in attention.candidates(*(t.float()[:, :, :8, :16] for t in (q, k, v)), None, 0.0)  # as it is
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=case == "autocast"):
        assert "native" not in attention.candidates(q, k, v, mask, 0.0)
        # chosen for a class the call shares, it hands the call to torch's kernel, which computes it
        expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None)
        got = attention.native_attention(q, k, v, mask, mask is None, 0.0, None)
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("kind", ["padding", "bool", "bias"])
def test_a_mask_is_applied_forward_and_backward_and_a_query_attending_nothing_gets_zeros(kind, forced):
    built()
    calibration = forced("native")
    generator = torch.Generator().manual_seed(5)
    batch, heads, queries, keys = 2, 3, 21, 19
    q, k, v = (
        t.requires_grad_()
        for t in (torch.randn(batch, heads, n, 32, generator=generator) for n in (queries, keys, keys))
    )
    if kind == "padding":  # the second text's last 7 keys are padding: (B, 1, 1, keys)
        mask = torch.ones(batch, 1, 1, keys, dtype=torch.bool)
        mask[1, ..., -7:] = False
    elif kind == "bool":
        mask = torch.rand(batch, 1, queries, keys, generator=generator) > 0.5
        mask[0, 0, 3] = False  # query 3 of the first text attends no key
    else:  # a fixed bias (T5's relative positions, not being learned), with keys left out by -inf
        mask = torch.randn(1, heads, queries, keys, generator=generator)
        mask[..., 4] = float("-inf")
    out = attention.attend(q, k, v, mask, False, 0.0, None)
    grad = torch.randn(out.shape, generator=generator)
    gradients = torch.autograd.grad(out, (q, k, v), grad)
    if kind == "bool":
        torch.testing.assert_close(out[0, :, 3], torch.zeros(heads, 32))  # zeros, as torch's attention gives
    want, *want_gradients = exact(q, k, v, False, grad, None, mask)
    torch.testing.assert_close(out.double(), want, rtol=1e-5, atol=2e-6)
    for got, expected in zip(gradients, want_gradients):
        torch.testing.assert_close(got.double(), expected, rtol=1e-4, atol=1e-5)
    assert [choice.kernel for _, choice in calibration.table()] == ["native"]


def test_a_mask_not_expanded_to_the_scores_shape_is_refused_rather_than_read_past_its_end():
    """The kernels read a mask by its strides over (B, H, T, T_keys): a (B, 1, 1, keys) padding mask
    handed in as it is would be read at queries it does not have."""
    kernels = built()
    q, k, v = torch.randn(2, 3, 21, 32), torch.randn(2, 3, 19, 32), torch.randn(2, 3, 19, 32)
    mask = torch.ones(2, 1, 1, 19, dtype=torch.bool)
    with pytest.raises(ValueError, match=r"mask of shape \(2, 1, 1, 19\): expected it expanded to \(2, 3, 21, 19\)"):
        kernels.attention_forward(q, k, v, mask, False, 32**-0.5)
    out, lse = kernels.attention_forward(q, k, v, mask.expand(2, 3, 21, 19), False, 32**-0.5)
    with pytest.raises(ValueError, match="expected it expanded"):
        kernels.attention_backward(q, k, v, mask, out, lse, torch.randn_like(out), False, 32**-0.5)


def test_a_training_step_of_a_gpt_is_the_fused_kernel_s(forced):
    """The same logits and gradients whether the model attends by triform's kernel or torch's."""
    built()
    ids = random_ids(3, 40)
    results = []
    for kernel in ("native", "sdpa"):
        calibration = forced(kernel)
        torch.manual_seed(0)
        model = build_model(tiny_config(d_model=64, n_heads=4))
        logits = model(ids)
        grads = torch.autograd.grad(logits.square().mean(), list(model.parameters()))
        results.append((logits.detach(), grads))
        assert {c.kernel for key, c in calibration.table() if key.startswith("attention")} == {kernel}
    (logits, grads), (expected, expected_grads) = results
    torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-5)
    for got, want in zip(grads, expected_grads):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def bf16_kernels():
    kernels = built()
    if torch.bfloat16 not in kernels.training_attention_dtypes:
        pytest.skip("this CPU has no AVX512-BF16 pair products: bf16 attention is left to torch's kernels")
    return kernels


def bf16_error(got, want) -> float:
    want = want.detach()
    return float((got.detach().double() - want).abs().max() / want.abs().max())


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("sizes", SHAPES)
def test_in_bf16_it_is_as_close_to_exact_attention_as_torch_s_bf16_products(sizes, threads):
    """bf16 operands by pair products (training_attention_bf16.c): the output and the gradients of q, k
    and v no further from attention in fp64 on the same bf16 values than torch's bf16 products around
    a softmax (the written-out kernel, which it replaces: its probabilities rounded to bf16 as here)."""
    (q, k, v, grad, scale), (out, lse, gradients) = both_passes(bf16_kernels(), torch.bfloat16, sizes, threads)
    causal = sizes[-1]
    want, *want_gradients = exact(q, k, v, causal, grad, scale)
    inputs = [t.detach().clone().requires_grad_() for t in (q, k, v)]
    torch_out = attention.written_out(*inputs, None, causal, 0.0, scale)
    torch_gradients = torch.autograd.grad(torch_out, inputs, grad)
    assert out.dtype == torch.bfloat16 and out.transpose(1, 2).is_contiguous()
    assert all(g.dtype == torch.bfloat16 and g.shape == t.shape for g, t in zip(gradients, (q, k, v)))
    assert bf16_error(out, want) <= max(1.5 * bf16_error(torch_out, want), 2**-8)
    for got, ours_torch, expected in zip(gradients, torch_gradients, want_gradients):
        assert bf16_error(got, expected) <= max(1.5 * bf16_error(ours_torch, expected), 2**-7)


def test_a_bf16_training_step_under_autocast_chooses_it_and_learns_as_torch_s_kernel(forced):
    """A GPT step under bf16 autocast (q, k, v are bf16 there), with a padding mask: calibration may
    choose the bf16 kernel, and the logits and gradients are torch's fused kernel's within bf16."""
    bf16_kernels()
    ids = random_ids(3, 40)
    padding = torch.ones(3, 40, dtype=torch.bool)
    padding[1, 30:] = False
    results = []
    for kernel in ("native", "sdpa"):
        calibration = forced(kernel)
        torch.manual_seed(0)
        model = build_model(tiny_config(d_model=64, n_heads=4))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(ids, "bidirectional", padding_mask=padding)
        grads = torch.autograd.grad(logits.float().square().mean(), list(model.parameters()))
        results.append((logits.detach().float(), grads))
        chosen = {key: c.kernel for key, c in calibration.table() if key.startswith("attention")}
        assert chosen and set(chosen.values()) == {kernel} and all("bfloat16" in key for key in chosen)
    (logits, grads), (expected, expected_grads) = results
    assert bf16_error(logits, expected.double()) < 0.02
    for got, want in zip(grads, expected_grads):
        assert bf16_error(got, want.double()) < 0.05


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("sizes", [SHAPES[0], SHAPES[2], SHAPES[6]])
def test_dropout_on_the_probabilities_keeps_what_triform_s_dropout_keeps(sizes, dtype):
    """With dropout the probabilities are kept where kernels/dropout.py's native kernel, seeded alike,
    keeps element (b, h, i, j) of a (B, H, T, T_keys) tensor; the backward pass draws the same again
    from the seed. The reference: exact attention with that mask, in fp64."""
    kernels = bf16_kernels() if dtype == torch.bfloat16 else built()
    batch, heads, queries, keys, d, causal = sizes
    generator = torch.Generator().manual_seed(7)
    q, k, v = (torch.randn(batch, heads, n, d, generator=generator) for n in (queries, keys, keys))
    q, k, v = (t.to(dtype).requires_grad_() for t in (q, k, v))
    grad = torch.randn(batch, heads, queries, d, generator=generator).to(dtype)
    torch.manual_seed(11)
    out = attention.NativeAttention.apply(q, k, v, None, causal, d**-0.5, 0.25)
    gradients = torch.autograd.grad(out, (q, k, v), grad)
    torch.manual_seed(11)  # the one draw the forward pass made
    dropped, scale, seed = native_draw(0.25)
    kept, _ = kernels.dropout(torch.ones(batch, heads, queries, keys), dropped, scale, seed)
    inputs = [t.detach().double().requires_grad_() for t in (q, k, v)]
    scores = inputs[0] @ inputs[1].transpose(-1, -2) * d**-0.5
    if causal:
        scores = scores.masked_fill(torch.ones(queries, keys, dtype=torch.bool).triu(1), float("-inf"))
    want = (scores.softmax(-1) * kept.double()) @ inputs[2]
    want_gradients = torch.autograd.grad(want, inputs, grad.double())
    assert 0.6 < float((kept > 0).float().mean()) < 0.9  # a quarter dropped, about
    if dtype == torch.float32:
        torch.testing.assert_close(out.double(), want, rtol=1e-5, atol=2e-6)
        for got, expected in zip(gradients, want_gradients):
            torch.testing.assert_close(got.double(), expected, rtol=1e-4, atol=1e-5)
    else:
        assert bf16_error(out, want) < 0.02
        assert all(bf16_error(got, expected) < 0.03 for got, expected in zip(gradients, want_gradients))
    torch.manual_seed(11)
    assert torch.equal(attention.NativeAttention.apply(q, k, v, None, causal, d**-0.5, 0.25), out)  # repeats
