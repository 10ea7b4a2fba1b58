"""Queries, keys and values split from one projection (nn/joined.py): the same values and gradients as
`Tensor.split`, and no concatenation where the attention's backward wrote its gradients side by side."""

import pytest
import torch
import torch.nn.functional as F
from test_native import built

from triform.kernels.attention import NativeAttention, native_attention
from triform.nn.joined import joined_like, side_by_side, split_joined

B, T, D = 2, 37, 16


def plain_split(x: torch.Tensor, sizes: tuple[int, ...]) -> tuple[torch.Tensor, ...]:
    return tuple(part.view(B, T, -1, D).transpose(1, 2) for part in x.split(sizes, dim=-1))


@pytest.mark.parametrize("heads", [(3, 3), (4, 2)], ids=["multi-head", "grouped-query"])
def test_any_gradients_are_joined_as_the_split_s_own_backward_joins_them(heads):
    """Gradients from anything (here torch's attention and a scaling) concatenated; one unused part zeros."""
    sizes = (heads[0] * D, heads[1] * D, heads[1] * D)
    x = torch.randn(B, T, sum(sizes), requires_grad=True)
    twin = x.detach().clone().requires_grad_()
    for split, source in ((split_joined, x), (plain_split, twin)):
        q, k, _ = split(source, sizes, D) if split is split_joined else split(source, sizes)
        groups = heads[0] // heads[1]
        out = F.scaled_dot_product_attention(q, k.repeat_interleave(groups, 1), k.repeat_interleave(groups, 1))
        (out * 2).sum().backward()  # v unused: its gradient is None, a block of zeros
    torch.testing.assert_close(x.grad, twin.grad)
    assert x.grad[..., -sizes[2] :].eq(0).all()


def test_the_native_attention_s_gradients_become_the_projection_s_without_a_copy():
    built()
    sizes = (3 * D,) * 3
    x = torch.randn(B, T, sum(sizes), requires_grad=True)
    q, k, v = split_joined(x, sizes, D)
    gradients = joined_like(q, k, v)
    assert gradients is not None and side_by_side(gradients, sizes) is not None
    out = NativeAttention.apply(q, k, v, None, True, D**-0.5, 0.0)
    grad = torch.randn_like(out)
    with torch.profiler.profile() as profiler:
        out.backward(grad)
    assert not [event for event in profiler.events() if event.name in ("aten::cat", "aten::copy_")]
    twin = x.detach().clone().requires_grad_()
    expected = F.scaled_dot_product_attention(*plain_split(twin, sizes), is_causal=True)
    expected.backward(grad)
    torch.testing.assert_close(x.grad, twin.grad, rtol=1e-5, atol=1e-5)


def test_parts_not_side_by_side_are_told_apart():
    x = torch.randn(B, T, 3 * 2 * D)
    q, k, v = plain_split(x, (2 * D,) * 3)
    assert side_by_side((q, k, v), (2 * D,) * 3) is not None
    assert side_by_side((q, v, k), (2 * D,) * 3) is None  # out of order
    assert side_by_side((q, k, v.clone()), (2 * D,) * 3) is None  # another storage
    assert side_by_side((q, k, None), (2 * D,) * 3) is None
    assert side_by_side((q, k, v[:, :, :5]), (2 * D,) * 3) is None  # keys of another length
    assert joined_like(q.contiguous(), k, v) is None


def test_a_cross_attention_s_key_and_value_gradients_become_its_projection_s_without_a_copy():
    """Queries from their own projection, keys and values from the source's joined `key_value`."""
    built()
    source, sizes = 23, (3 * D, 3 * D)
    queries = torch.randn(B, T, 3 * D, requires_grad=True)
    memory = torch.randn(B, source, sum(sizes), requires_grad=True)
    q = queries.view(B, T, 3, D).transpose(1, 2)
    k, v = split_joined(memory, sizes, D)
    assert joined_like(q, k, v) is None and joined_like(k, v) is not None
    mask = torch.ones(B, 1, 1, source, dtype=torch.bool)
    mask[0, ..., 17:] = False  # the first row's source is shorter
    out = native_attention(q, k, v, mask, False, 0.0, None)
    assert out.grad_fn.name() == "NativeAttentionBackward"
    grad = torch.randn_like(out)
    with torch.profiler.profile() as profiler:
        out.backward(grad)
    assert not [event for event in profiler.events() if event.name in ("aten::cat", "aten::copy_")]
    twin_queries, twin_memory = (t.detach().clone().requires_grad_() for t in (queries, memory))
    twin_k, twin_v = (t.view(B, source, 3, D).transpose(1, 2) for t in twin_memory.split(sizes, dim=-1))
    twin_q = twin_queries.view(B, T, 3, D).transpose(1, 2)
    F.scaled_dot_product_attention(twin_q, twin_k, twin_v, attn_mask=mask).backward(grad)
    torch.testing.assert_close(memory.grad, twin_memory.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(queries.grad, twin_queries.grad, rtol=1e-5, atol=1e-5)
