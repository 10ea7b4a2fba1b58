"""Cross-entropy over a large vocabulary, with the gradient computed in the same pass as the loss.

`F.cross_entropy(logits.float(), ...)` makes an fp32 copy of the logits, a log-softmax of the same
size kept for the backward pass, then in the backward pass a gradient in fp32 and its bf16 copy:
four full-size tensors, each written and read again from memory. Here the logits are read in
blocks of rows small enough to stay in cache; for each block the loss and its gradient,
softmax - target distribution (scaled by 1 / number of targets), are computed at once and the
gradient is written in the logits' dtype. The backward pass only multiplies it by the incoming
gradient. The same idea as Liger-Kernel's fused linear cross-entropy (Hsu et al. 2024), without
the fusion with the output projection.
"""

from __future__ import annotations

import torch
from torch import Tensor

BLOCK_BYTES = 2**21  # fp32 bytes of one block of logits: about one core's L2 cache


class _CrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits: Tensor, targets: Tensor, ignore_index: int, label_smoothing: float) -> Tensor:
        rows, vocab = logits.shape
        counted = targets != ignore_index
        n_targets = counted.sum().clamp(min=1).to(torch.float32)
        safe_targets = torch.where(counted, targets, 0)[:, None]  # (N, 1)
        weights = counted.to(torch.float32)[:, None] / n_targets  # (N, 1): 1 / n_targets or 0
        keep_gradient = ctx.needs_input_grad[0]
        gradient = torch.empty_like(logits) if keep_gradient else None
        total = torch.zeros((), dtype=torch.float32, device=logits.device)
        block = max(1, BLOCK_BYTES // (4 * vocab))
        for start in range(0, rows, block):
            span = slice(start, start + block)
            # fp32 logits with a gradient to keep: the block's log-softmax is written where its gradient goes.
            out = gradient[span] if keep_gradient and logits.dtype == torch.float32 else None
            log_probabilities = torch.log_softmax(logits[span].float(), dim=-1, out=out)  # (n, V)
            target_log_probability = log_probabilities.gather(1, safe_targets[span])  # (n, 1)
            # Label smoothing (Szegedy et al. 2016): a target distribution (1 - ε) · one-hot + ε / V.
            loss = -(1.0 - label_smoothing) * target_log_probability
            if label_smoothing:
                loss = loss - label_smoothing * log_probabilities.mean(dim=-1, keepdim=True)
            total += (loss * weights[span]).sum()
            if keep_gradient:
                probabilities = log_probabilities.exp_()
                probabilities.scatter_add_(1, safe_targets[span], torch.full_like(target_log_probability, label_smoothing - 1.0))
                if label_smoothing:
                    probabilities -= label_smoothing / vocab
                probabilities.mul_(weights[span])
                if out is None:
                    gradient[span] = probabilities
        ctx.save_for_backward(gradient)
        return total

    @staticmethod
    def backward(ctx, grad_output: Tensor):
        (gradient,) = ctx.saved_tensors
        # In place: the gradient is needed once (a second backward through the graph is refused).
        return gradient.mul_(grad_output.to(gradient.dtype)), None, None, None


def cross_entropy(logits: Tensor, targets: Tensor, *, ignore_index: int = -100, label_smoothing: float = 0.0) -> Tensor:
    """Mean cross-entropy of (N, V) logits against (N,) targets, over the targets that are not
    `ignore_index`; the same value and gradient as `F.cross_entropy` on the logits in fp32."""
    return _CrossEntropy.apply(logits, targets, ignore_index, label_smoothing)
