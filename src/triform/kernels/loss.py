"""Cross-entropy over a large vocabulary, with the gradient computed in the same pass as the loss.

`F.cross_entropy(logits.float(), ...)` makes an fp32 copy of the logits, a log-softmax of the same
size kept for the backward pass, then in the backward pass a gradient in fp32 and its bf16 copy:
four full-size tensors, each written and read again from memory. Here the logits are read in
blocks of rows small enough to stay in cache; for each block the loss and its gradient,
softmax - target distribution (scaled by 1 / number of targets), are computed at once and the
gradient is written in the logits' dtype. The backward pass only multiplies it by the incoming
gradient. The same idea as Liger-Kernel's fused linear cross-entropy (Hsu et al. 2024), without
the fusion with the output projection. Chosen by measuring the training steps of benchmarks/run.py
on an AMD EPYC, where the logits of one step are large: 4,096 tokens by a vocabulary of 8,192 are
128 MiB in fp32.

Two kernels compute it, chosen by calibration (`kernels/calibrate.py`) for each class of rows,
vocabulary, dtype and smoothing: `blocks`, torch's log-softmax, exponential and scatter over those
blocks, and `native` (fp32 or bf16 logits on a CPU, where triform's kernels are built:
native/cross_entropy.c), which reads each row once and takes one exponential per logit. On an AMD
EPYC (Zen 5, 2 threads), 4,096 rows of 8,192 fp32 logits (the benchmark's GPT step) into a gradient
whose memory was already the process's took 9 ms natively, 30 ms by blocks; a gradient in fresh
memory costs some 25 ms more, the kernel faulting in and zeroing its pages.

A caller that reads the logits no more once the loss is computed (the training step) says so with
`logits_released()`: the gradient is then written over the logits, which saves memory the size of
the logits and its page faults. The logits' version counter is bumped, so an operation that saved
them for its own backward pass fails loudly there instead of reading the gradient.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from functools import partial

import torch
from torch import Tensor

from triform.kernels import native
from triform.kernels.calibrate import FIELDS, calibration, rows_class

BLOCK_BYTES = 2**21  # fp32 bytes of one block of logits: about one core's L2 cache
FIELDS["cross-entropy"] = ("dtype", "rows≤", "vocab", "smoothing", "grad", "threads")
_released: ContextVar[bool] = ContextVar("logits_released", default=False)


@contextmanager
def logits_released() -> Iterator[None]:
    """Inside, `cross_entropy` may write its gradient over the logits it is given: for a caller that
    drops them once the loss is computed (train/loop.py). A tensor the size of the logits is saved:
    0.8 GB for GPT-2 small's 8 x 512 tokens in fp32."""
    token = _released.set(True)
    try:
        yield
    finally:
        _released.reset(token)


def overwritable(logits: Tensor) -> bool:
    """Whether the gradient may take the logits' memory: released by the caller, laid out as the
    gradient is, and made by an operation (a leaf tensor is the caller's own data)."""
    return _released.get() and logits.grad_fn is not None and logits.is_contiguous()


class _CrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits: Tensor, targets: Tensor, ignore_index: int, label_smoothing: float) -> Tensor:
        rows, vocab = logits.shape
        counted = targets != ignore_index
        outside = counted & ((targets < 0) | (targets >= vocab))
        if bool(outside.any()):
            raise IndexError(f"target id {int(targets[outside][0])} is outside the vocabulary of {vocab} ids")
        weights = counted.to(torch.float32) / counted.sum().clamp(min=1)  # (N,): 1 / n_targets or 0
        safe_targets = torch.where(counted, targets, 0)
        arguments = (logits, safe_targets, weights, label_smoothing)
        want_gradient = ctx.needs_input_grad[0]
        names = kernels(logits)
        key = ("cross-entropy", str(logits.dtype).removeprefix("torch."), rows_class(rows), vocab)
        key += (label_smoothing > 0, "grad" if want_gradient else "no-grad", torch.get_num_threads())
        timing = partial(timed_runs, names, arguments, want_gradient)
        name = names[0] if len(names) == 1 else calibration().choose(key, names, timing)
        over_logits = want_gradient and overwritable(logits)
        gradient = logits if over_logits else torch.empty_like(logits) if want_gradient else None
        total = KERNELS[name](*arguments, gradient)  # `gradient` made after timing's own is gone
        if over_logits:  # an operation that saved the logits now refuses its backward pass
            torch.autograd.graph.increment_version(logits)
        ctx.save_for_backward(gradient)
        return total

    @staticmethod
    def backward(ctx, grad_output: Tensor):
        (gradient,) = ctx.saved_tensors
        if grad_output.device.type == "cpu" and float(grad_output) == 1.0:  # loss.backward(): a pass saved
            return gradient, None, None, None
        # In place: the gradient is needed once (a second backward through the graph is refused).
        return gradient.mul_(grad_output.to(gradient.dtype)), None, None, None


def kernels(logits: Tensor) -> tuple[str, ...]:
    """The candidates for these logits: `native` where triform's kernel reads them as they are."""
    plain = logits.device.type == "cpu" and logits.dtype in native.GEMV_DTYPES and logits.stride(-1) == 1
    return ("blocks", "native") if plain and native.library() is not None else ("blocks",)


def timed_runs(names: tuple[str, ...], arguments: tuple, want_gradient: bool) -> dict:
    """A call of each candidate, all writing their gradient into one buffer: timing them takes no more
    memory than the call that follows (a gradient is as large as the logits, 0.8 GB for GPT-2 small's
    8 x 512 tokens in fp32), and the buffer is gone before that call's own is made."""
    gradient = torch.empty_like(arguments[0]) if want_gradient else None
    return {name: partial(KERNELS[name], *arguments, gradient) for name in names}


def in_blocks(
    logits: Tensor, targets: Tensor, weights: Tensor, label_smoothing: float, gradient: Tensor | None
) -> Tensor:
    """The weighted loss by torch's operations over blocks of rows; its gradient into `gradient`."""
    vocab = logits.shape[1]
    total = torch.zeros((), dtype=torch.float32, device=logits.device)
    weights, targets = weights[:, None], targets[:, None]
    blocks = _Blocks(logits, gradient)
    for span, log_probabilities in blocks:
        target_log_probability = log_probabilities.gather(1, targets[span])  # (n, 1)
        # Label smoothing (Szegedy et al. 2016): a target distribution (1 - ε) · one-hot + ε / V.
        loss = -(1.0 - label_smoothing) * target_log_probability
        if label_smoothing:
            loss = loss - label_smoothing * log_probabilities.mean(dim=-1, keepdim=True)
        total += (loss * weights[span]).sum()
        if gradient is not None:  # softmax - target distribution, over the number of targets
            probabilities = log_probabilities.exp_()
            probabilities.scatter_add_(1, targets[span], torch.full_like(loss, label_smoothing - 1.0))
            if label_smoothing:
                probabilities -= label_smoothing / vocab
            blocks.write_gradient(span, probabilities.mul_(weights[span]))
    return total


def natively(
    logits: Tensor, targets: Tensor, weights: Tensor, label_smoothing: float, gradient: Tensor | None
) -> Tensor:
    """The same by triform's kernel (native/cross_entropy.c), one pass over each row."""
    total = native.library().cross_entropy(logits, targets, weights, label_smoothing, gradient)
    return torch.tensor(total, dtype=torch.float32)


KERNELS = {"blocks": in_blocks, "native": natively}


class _Blocks:
    """The logits in blocks of rows, each block's log-softmax in fp32 in memory reused from block to
    block (fresh memory costs a page fault per 4 KiB): for fp32 logits whose gradient is kept, the
    gradient's own rows; otherwise scratch buffers allocated once."""

    def __init__(self, logits: Tensor, gradient: Tensor | None):
        self.logits, self.gradient = logits, gradient
        rows, vocab = logits.shape
        self.block = max(1, BLOCK_BYTES // (4 * vocab))
        self.in_place = gradient is not None and logits.dtype == torch.float32
        shape = (min(self.block, rows), vocab)
        self.source = None if logits.dtype == torch.float32 else logits.new_empty(shape, dtype=torch.float32)
        self.scratch = None if self.in_place else logits.new_empty(shape, dtype=torch.float32)

    def __iter__(self):
        for start in range(0, self.logits.shape[0], self.block):
            span = slice(start, start + self.block)
            block = self.logits[span]
            if self.source is not None:
                block = self.source[: block.shape[0]].copy_(block)
            out = self.gradient[span] if self.in_place else self.scratch[: block.shape[0]]
            yield span, torch.log_softmax(block, dim=-1, out=out)  # (n, V)

    def write_gradient(self, span: slice, values: Tensor) -> None:
        if not self.in_place:
            self.gradient[span].copy_(values)


def cross_entropy(logits: Tensor, targets: Tensor, *, ignore_index: int = -100, label_smoothing: float = 0.0) -> Tensor:
    """Mean cross-entropy of (N, V) logits against (N,) targets, over the targets that are not
    `ignore_index`; the same value and gradient as `F.cross_entropy` on the logits in fp32."""
    return _CrossEntropy.apply(logits, targets, ignore_index, label_smoothing)
