"""The language-model head: its bias is added in the logits' dtype, as a linear layer's own bias is."""

import torch
import torch.nn.functional as F

from triform.models.heads import LanguageModelHead


def head_with_bias() -> LanguageModelHead:
    torch.manual_seed(0)
    head = LanguageModelHead(torch.nn.Linear(16, 50, bias=False), bias=True)
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


def test_in_fp32_the_bias_is_added_as_it_is():
    head, hidden = head_with_bias(), torch.randn(7, 16)
    torch.testing.assert_close(head(hidden), F.linear(hidden, head.projection.weight, head.bias))
