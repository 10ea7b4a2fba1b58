"""Generation, side by side: triform's `generate_ids` against `transformers`' `generate`.

Every output has exactly `new_tokens` tokens on both sides ([EOS] is forbidden until then, with
`min_new_tokens`), so that both do the same number of steps; nothing else is forced or banned.
Greedy outputs must be identical in fp32; beam outputs are compared and reported.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from speed.models import SPECIALS, ModelSpec, build_twins, check_same_logits, matmul_parameters
from triform.generate import GenerationConfig, generate_ids, resolve_layout
from triform.generate.precision import auto_is_measured, decoding_precision
from triform.precision import resolved_name


@dataclass(frozen=True)
class DecodingShape:
    prompt: int  # prompt tokens (a stack) or source tokens (an encoder-decoder)
    new_tokens: int


SHAPES = {"gpt": DecodingShape(16, 128), "bart": DecodingShape(64, 64)}
TINY_SHAPES = {"gpt": DecodingShape(8, 16), "bart": DecodingShape(8, 8)}
COMPILED = "triform fp32 compiled"
STRATEGIES = {"greedy-b1": (1, 1), "greedy-b8": (8, 1), "beam4-b1": (1, 4)}  # (batch, beams)


def random_prompts(spec: ModelSpec, shape: DecodingShape, batch: int, seed: int = 2) -> list[list[int]]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(10, spec.config.vocab_size, (batch, shape.prompt), generator=generator).tolist()


def reference_generate(
    reference, spec: ModelSpec, prompts: list[list[int]], new_tokens: int, beams: int
) -> list[list[int]]:
    """transformers' generate on the prompts laid out as triform lays them out."""
    stack = spec.config.arch == "stack"
    framed = [[SPECIALS.bos, *p] if stack else [*p, SPECIALS.eos] for p in prompts]
    ids = torch.tensor(framed)
    beam_options = {"num_beams": beams, "length_penalty": 0.0, "early_stopping": True} if beams > 1 else {}
    output = reference.generate(
        ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,
        do_sample=False,
        forced_eos_token_id=None,
        forced_bos_token_id=None,
        eos_token_id=SPECIALS.eos,
        pad_token_id=SPECIALS.pad,
        decoder_start_token_id=None if stack else SPECIALS.decoder_start_id,
        **beam_options,
    )
    return output[:, ids.shape[1] if stack else 1 :].tolist()


def decoding_variants(
    spec: ModelSpec, shape: DecodingShape, strategy: str, compiled: bool = False
) -> tuple[dict, dict]:
    """The variants of a case, and what is known of it. `compiled` adds triform's fp32 steps compiled
    (`GenerationConfig.compile`); transformers' stay eager (its compiled generation needs its static
    cache, another code path than the one measured)."""
    batch, beams = STRATEGIES[strategy]
    model, reference = build_twins(spec)
    model.eval(), reference.eval()
    difference = check_same_logits(model, reference, spec)
    prompts = random_prompts(spec, shape, batch)
    layout = resolve_layout(spec.config.arch, SPECIALS)
    config = GenerationConfig(
        max_new_tokens=shape.new_tokens,
        min_new_tokens=shape.new_tokens,
        num_beams=beams,
        length_penalty=0.0,
        precision="fp32",
    )
    outputs: dict[str, list[list[int]]] = {}

    first_call: dict[str, float] = {}

    def ours(precision: str, name: str, compile_step: bool = False):
        def run():
            start = time.perf_counter()
            rows = generate_ids(model, layout, prompts, config.replace(precision=precision, compile=compile_step))
            first_call.setdefault(name, time.perf_counter() - start)
            outputs[name] = [row.tokens for row in rows]

        return run

    def theirs():
        with torch.inference_mode():
            outputs["transformers fp32"] = reference_generate(reference, spec, prompts, shape.new_tokens, beams)

    # What `auto` decodes in here, measured for this model and row count (generate/precision.py)
    default = resolved_name(decoding_precision(model, "auto", len(prompts) * max(beams, 1)), torch.device("cpu"))
    variants = {
        "triform fp32": ours("fp32", "triform fp32"),
        "transformers fp32": theirs,
        f"triform default ({default})": ours("auto", "triform default"),
    }
    if auto_is_measured(torch.device("cpu")):  # both precisions auto chooses between, whichever it chose
        variants["triform bf16"] = ours("bf16", "triform bf16")
    if compiled:
        variants[COMPILED] = ours("fp32", COMPILED, compile_step=True)
    info = {
        "model": spec.name,
        "strategy": strategy,
        "batch": batch,
        "beams": beams,
        "prompt": shape.prompt,
        "new_tokens": shape.new_tokens,
        "logit_difference": difference,
        "default_precision": default,
        "outputs": outputs,
        "weights_per_step": decoding_weights(spec),
        "compiled": compiled,
        "first_call_seconds": first_call,  # the compiled variant's: its compile included
    }
    return variants, info


def agreement(outputs: dict) -> dict:
    """Whether triform's fp32 output equals transformers', and the share of the default-precision
    output's tokens that equal the fp32 ones."""
    ours, theirs, default = outputs["triform fp32"], outputs["transformers fp32"], outputs["triform default"]
    compiled = outputs.get(COMPILED)
    same_tokens = sum(a == b for x, y in zip(ours, default) for a, b in zip(x, y))
    total = sum(len(x) for x in ours)
    return {
        "identical_to_transformers": ours == theirs,
        "default_precision_token_agreement": same_tokens / max(total, 1),
        **({} if compiled is None else {"compiled_identical_to_eager": compiled == ours}),
    }


def decoding_weights(spec: ModelSpec) -> int:
    """Matmul weights read at every decoding step: the stack (or the decoder; cross-attention keys
    and values are computed once per source) and the output projection."""
    counts = matmul_parameters(spec.config)
    if spec.config.arch == "stack":
        return spec.config.n_layers * counts["per_layer"] + counts["head"]
    return spec.config.decoder_layers * counts["decoder_per_layer"] + counts["head"]
