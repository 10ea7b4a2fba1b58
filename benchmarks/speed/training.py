"""Training steps, side by side: forward, loss, backward, gradient clipping and an AdamW step.

Both sides get the same batch (made by triform's objective: the same windows, the same masks),
the same optimizer (triform's: AdamW, fused where torch has the kernel) and the same clipping. The
triform side scores its logits with its objective's loss, as `triform train` does; the transformers
side with `F.cross_entropy` on float logits, as its models' own loss functions do.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from speed.models import SPECIALS, ModelSpec, build_twins, check_same_logits
from triform.kernels.loss import logits_released
from triform.objectives import IGNORE, make_objective
from triform.precision import native_bf16
from triform.train.config import OptimConfig
from triform.train.optim import build_optimizer


@dataclass(frozen=True)
class TrainingShape:
    batch: int
    length: int  # the stack's context, or the decoder's target length
    source: int = 0  # encoder-decoder: source length


SHAPES = {"gpt": TrainingShape(16, 256), "bert": TrainingShape(32, 128), "bart": TrainingShape(16, 64, source=128)}
TINY_SHAPES = {"gpt": TrainingShape(4, 32), "bert": TrainingShape(4, 32), "bart": TrainingShape(4, 16, source=32)}


def make_batch(spec: ModelSpec, shape: TrainingShape, seed: int = 0):
    """(objective, Batch) of random token ids, laid out by triform's objective for this family."""
    generator = torch.Generator().manual_seed(seed)
    vocab = spec.config.vocab_size

    def texts(n: int, length: int) -> list[list[int]]:
        return torch.randint(10, vocab, (n, length), generator=generator).tolist()

    arch = spec.config.arch
    if spec.name == "gpt":  # packed windows: inputs are the first `length` tokens, targets the last
        objective = make_objective("clm", SPECIALS, vocab, arch=arch, packed=True)
        return objective, objective.prepare(texts(shape.batch, shape.length + 1), generator)
    if spec.name == "bert":  # [CLS] text [SEP]
        objective = make_objective("mlm", SPECIALS, vocab, arch=arch)
        return objective, objective.prepare(texts(shape.batch, shape.length - 2), generator)
    objective = make_objective("seq2seq", SPECIALS, vocab, arch=arch)  # source [EOS] -> [BOS] target
    pairs = list(zip(texts(shape.batch, shape.source - 1), texts(shape.batch, shape.length - 1)))
    return objective, objective.prepare(pairs, generator)


def reference_inputs(batch) -> dict:
    if batch.source_ids is not None:
        return {"input_ids": batch.source_ids, "decoder_input_ids": batch.ids, "use_cache": False}
    return {"input_ids": batch.ids, "use_cache": False} if batch.pattern == "causal" else {"input_ids": batch.ids}


def reference_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1), ignore_index=IGNORE)


def step_function(model, optimizer, forward, loss, autocast):
    """One training step as a closure returning the loss; the loss is computed outside autocast,
    as `triform train` does."""

    def step() -> float:
        with autocast():
            logits = forward()
        value = loss(logits)
        value.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), OptimConfig.clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(value.detach())

    return step


def first_call_recorder(name: str, step, losses: dict, seconds: dict):
    """`step`, recording the loss and the time of its first call (with --compile: the compile time)."""

    def run():
        if name in losses:
            return step()
        start = time.perf_counter()
        losses[name] = step()
        seconds[name] = time.perf_counter() - start
        return losses[name]

    return run


def training_variants(spec: ModelSpec, shape: TrainingShape, compile_models: bool) -> tuple[dict, dict]:
    """The step closures of every variant, and what the report needs to know about the case."""
    model, reference = build_twins(spec)
    difference = check_same_logits(model, reference, spec)
    objective, batch = make_batch(spec, shape)
    device = torch.device("cpu")
    triform_optimizer = build_optimizer(model, OptimConfig(), device)
    hf_optimizer = build_optimizer(reference, OptimConfig(), device)
    ours, theirs = (torch.compile(model), torch.compile(reference)) if compile_models else (model, reference)
    inputs, hf_inputs = batch.model_inputs(), reference_inputs(batch)
    losses_agree = same_loss(model, reference, objective, batch)
    ours_forward = lambda: ours(**inputs)  # noqa: E731
    theirs_forward = lambda: theirs(**hf_inputs).logits  # noqa: E731

    def ours_loss(logits):  # as `triform train` computes it: the logits are not read again (kernels/loss.py)
        with logits_released():
            return objective.loss(logits, batch)

    theirs_loss = lambda logits: reference_loss(logits, batch.targets)  # noqa: E731
    bf16 = lambda: torch.autocast("cpu", dtype=torch.bfloat16)  # noqa: E731
    steps = {
        "triform fp32": step_function(model, triform_optimizer, ours_forward, ours_loss, nullcontext),
        "transformers fp32": step_function(reference, hf_optimizer, theirs_forward, theirs_loss, nullcontext),
    }
    # On a CPU without native bf16 (AVX2 only) bf16 products are emulated, several times slower than
    # fp32: no one trains so, and triform's default there is fp32, so those variants are not run.
    if native_bf16(device):
        steps["triform bf16"] = step_function(model, triform_optimizer, ours_forward, ours_loss, bf16)
        steps["transformers bf16"] = step_function(reference, hf_optimizer, theirs_forward, theirs_loss, bf16)
    losses, first_seconds = {}, {}  # of the first call of each variant
    variants = {name: first_call_recorder(name, step, losses, first_seconds) for name, step in steps.items()}
    info = {
        "model": spec.name,
        "logit_difference": difference,
        "batch": shape.batch,
        "length": shape.length,
        "source": shape.source,
        "tokens_per_step": tokens_per_step(batch),
        "n_predicted": batch.n_targets,
        "flops_per_step": training_flops(spec, shape, batch.n_targets),
        "eval_losses": losses_agree,
        "first_losses": losses,
        "first_call_seconds": first_seconds,
        "compiled": compile_models,
        "gemm_shapes": training_gemm_shapes(spec, shape, batch.n_targets),
    }
    return variants, info


@torch.no_grad()
def same_loss(model, reference, objective, batch, tolerance: float = 1e-4) -> dict:
    """Both sides' loss on the batch in eval mode (no dropout) and fp32: the same batch, masks and
    loss on both sides, or an error."""
    model.eval(), reference.eval()
    try:
        ours = float(objective.loss(model(**batch.model_inputs()), batch))
        theirs = float(reference_loss(reference(**reference_inputs(batch)).logits, batch.targets))
    finally:
        model.train(), reference.train()
    if not abs(ours - theirs) <= tolerance:
        raise SystemExit(f"the two losses on the same batch differ: triform {ours:.6f}, transformers {theirs:.6f}")
    return {"triform": ours, "transformers": theirs}


def tokens_per_step(batch) -> int:
    tokens = batch.ids.numel()
    return tokens + (batch.source_ids.numel() if batch.source_ids is not None else 0)


def training_flops(spec: ModelSpec, shape: TrainingShape, n_predicted: int) -> float:
    """Model FLOPs of one step: 6 per matmul weight per token it is applied to (the products of
    training_gemm_shapes), plus 12·H·Q·T_keys per token and layer for attention, forward and backward
    (PaLM, appendix B). The output projection counts only where the objective predicts (all
    positions for clm and seq2seq, the masked ones for mlm)."""
    config = spec.config
    products = 6 * sum(rows * k * n * count for rows, k, n, count in training_gemm_shapes(spec, shape, n_predicted))
    heads_dim = config.n_heads * config.head_dim
    if config.arch == "stack":
        attention = 12 * config.n_layers * heads_dim * shape.length * shape.batch * shape.length
    else:
        attention = 12 * config.n_layers * heads_dim * shape.source * shape.batch * shape.source
        attention += 12 * config.decoder_layers * heads_dim * (shape.length + shape.source) * shape.batch * shape.length
    return float(products + attention)


def training_gemm_shapes(spec: ModelSpec, shape: TrainingShape, n_predicted: int) -> list[tuple[int, int, int, int]]:
    """(rows, in, out, how many) of every linear layer the step runs: the shapes whose matmul speed
    is the ceiling of this case."""
    config = spec.config
    d, d_ff, inner = config.d_model, config.d_ff, config.n_heads * config.head_dim
    ff = [(d, 2 * d_ff), (d_ff, d)] if config.gated else [(d, d_ff), (d_ff, d)]  # gate and up: one product
    layer = [(d, 3 * inner), (inner, d), *ff]
    head = [(d, config.vocab_size)] + ([(d, d)] if config.output_transform else [])
    if config.arch == "stack":
        rows = shape.batch * shape.length
        return [(rows, k, n, config.n_layers) for k, n in layer] + [(n_predicted, k, n, 1) for k, n in head]
    source_rows, target_rows = shape.batch * shape.source, shape.batch * shape.length
    layers = config.decoder_layers
    shapes = [(source_rows, k, n, config.n_layers) for k, n in layer]
    shapes += [(target_rows, k, n, layers) for k, n in layer + [(d, inner), (inner, d)]]
    shapes += [(source_rows, d, 2 * inner, layers)] + [(n_predicted, k, n, 1) for k, n in head]
    return shapes
