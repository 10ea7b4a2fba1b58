"""int8 decoding side by side: triform's int8 weights against CTranslate2's int8 on the same weights.

    .venv/bin/python benchmarks/int8.py                  # prints the table
    .venv/bin/python benchmarks/int8.py --write          # also writes it into docs/results.md
    .venv/bin/python benchmarks/int8.py --tiny           # small models: a check of the benchmark itself

The GPT and BART of benchmarks/run.py (6 layers, d_model 384, vocabulary 8192), random weights, greedy
decoding at batch 1 and 8 with every output its full length. triform's model is quantized by
`triform.kernels.quantize(model, "int8")`; CTranslate2 reads triform's own Hugging Face export
(`export_hf`), converted by its `TransformersConverter` with quantization int8 and run with compute
type int8. triform at its default precision (bf16 where the CPU has native bf16, else fp32) and
transformers fp32 run alongside. Variants alternate
(A B C D, A B C D, ...) in one process, with the same number of threads; the ratios are medians of
paired ratios. Outputs are compared token by token: int8 against fp32, and CTranslate2 against triform.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from generation import write_section
from speed.decoding import SHAPES, TINY_SHAPES, decoding_weights, random_prompts, reference_generate
from speed.machine import bandwidth, cpu_name
from speed.models import SPECIALS, build_twins, model_specs
from speed.profiling import product_seconds
from speed.timing import alternate, load, paired_ratio

from triform.checkpoint import Pretrained
from triform.convert import export_hf
from triform.generate import GenerationConfig, generate_ids, resolve_layout
from triform.generate.precision import decoding_precision
from triform.kernels import quantize
from triform.kernels.machine import this_machine
from triform.precision import resolved_name

HEADING = "Decoding with int8 weights: triform and CTranslate2"
COMPILED = "triform int8 compiled"  # the cached steps under torch.compile (`--compile`)
SPECIAL_NAMES = {0: "[PAD]", 1: "[UNK]", 2: "[BOS]", 3: "[EOS]", 4: "[MASK]", 5: "[SEP]", 6: "[CLS]"}


def word_tokenizer(vocab_size: int):
    """A word-level tokenizer whose token i is named `w{i}` (the specials by their names): what
    CTranslate2 needs to read a vocabulary, and what maps ids to its token strings."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import WhitespaceSplit

    vocab = {SPECIAL_NAMES.get(i, f"w{i}"): i for i in range(vocab_size)}
    tokenizer = Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = WhitespaceSplit()
    tokenizer.add_special_tokens(list(SPECIAL_NAMES.values()))
    return tokenizer


def ctranslate2_model(model, spec, folder: Path, threads: int):
    import ctranslate2

    tokenizer = word_tokenizer(spec.config.vocab_size)
    export_hf(Pretrained(model, spec.config, SPECIALS, tokenizer), folder / "hf")
    if spec.config.arch == "encoder-decoder":
        # CTranslate2 4.8 reads BART's `normalize_before`, which transformers 5 no longer writes (BART is post-norm).
        config_file = folder / "hf" / "config.json"
        config_file.write_text(json.dumps({**json.loads(config_file.read_text()), "normalize_before": False}))
    converter = ctranslate2.converters.TransformersConverter(str(folder / "hf"))
    converter.convert(str(folder / "ct2"), quantization="int8", force=True)
    kind = ctranslate2.Generator if spec.config.arch == "stack" else ctranslate2.Translator
    return kind(str(folder / "ct2"), device="cpu", compute_type="int8", intra_threads=threads), tokenizer


def ctranslate2_generate(engine, tokenizer, spec, layout, prompts, new_tokens: int) -> list[list[int]]:
    framed = [[tokenizer.id_to_token(i) for i in layout.frame(p)] for p in prompts]
    if spec.config.arch == "stack":
        results = engine.generate_batch(
            framed, max_length=new_tokens, min_length=new_tokens, sampling_topk=1, include_prompt_in_result=False
        )
        return [r.sequences_ids[0] for r in results]
    results = engine.translate_batch(
        framed, beam_size=1, max_decoding_length=new_tokens, min_decoding_length=new_tokens
    )
    return [[tokenizer.token_to_id(t) for t in r.hypotheses[0]] for r in results]


def agreement(a: list[list[int]], b: list[list[int]]) -> float:
    same = sum(x == y for row_a, row_b in zip(a, b) for x, y in zip(row_a, row_b))
    return same / max(sum(len(row) for row in a), 1)


def measure(name: str, batch: int, args, folder: Path) -> dict:
    spec = model_specs(tiny=args.tiny)[name]
    shape = (TINY_SHAPES if args.tiny else SHAPES)[name]
    model, reference = build_twins(spec)
    model.eval(), reference.eval()
    int8 = quantize(copy.deepcopy(model), "int8")
    engine, tokenizer = ctranslate2_model(model, spec, folder / f"{name}-{batch}", args.threads)
    layout = resolve_layout(spec.config.arch, SPECIALS)
    prompts = random_prompts(spec, shape, batch)
    config = GenerationConfig(max_new_tokens=shape.new_tokens, min_new_tokens=shape.new_tokens)
    outputs: dict[str, list[list[int]]] = {}

    def ours(label, which, precision, compile=False):
        def run():
            rows = generate_ids(which, layout, prompts, config.replace(precision=precision, compile=compile))
            outputs[label] = [r.tokens for r in rows]

        return run

    def ct2():
        outputs["ctranslate2 int8"] = ctranslate2_generate(engine, tokenizer, spec, layout, prompts, shape.new_tokens)

    def theirs():
        with torch.inference_mode():
            outputs["transformers fp32"] = reference_generate(reference, spec, prompts, shape.new_tokens, 1)

    variants = {
        "triform int8": ours("triform int8", int8, "auto"),
        COMPILED: ours(COMPILED, int8, "auto", compile=True),
        "ctranslate2 int8": ct2,
        "triform default": ours("triform default", model, "auto"),
        "triform fp32": ours("triform fp32", model, "fp32"),
        "transformers fp32": theirs,
    }
    timing = alternate(variants, warmup=args.warmup, repeats=args.repeats, label=f"{name} b{batch}")
    seconds = timing["seconds"]
    # what bounds triform int8: its products' time under the profiler, against its unprofiled median step
    products, operators = product_seconds(variants["triform int8"])
    compiled_products, compiled_operators = product_seconds(variants[COMPILED])
    return {
        "int8_products_ms": 1e3 * products / shape.new_tokens,
        "int8_operators_per_step": operators / shape.new_tokens,
        "compiled_products_ms": 1e3 * compiled_products / shape.new_tokens,
        "compiled_operators_per_step": compiled_operators / shape.new_tokens,
        "model": name,
        "batch": batch,
        "new_tokens": shape.new_tokens,
        "ms_per_step": {k: 1e3 * statistics.median(v) / shape.new_tokens for k, v in seconds.items()},
        # what "auto" decodes in here: measured on a CPU with native bf16, fp32 on one without
        "default_precision": resolved_name(decoding_precision(model, "auto", batch), torch.device("cpu")),
        "int8_over_ct2": paired_ratio(seconds["ctranslate2 int8"], seconds["triform int8"]),
        "compiled_over_ct2": paired_ratio(seconds["ctranslate2 int8"], seconds[COMPILED]),
        "int8_over_default": paired_ratio(seconds["triform default"], seconds["triform int8"]),
        "int8_over_transformers": paired_ratio(seconds["transformers fp32"], seconds["triform int8"]),
        "default_over_transformers": paired_ratio(seconds["transformers fp32"], seconds["triform default"]),
        "int8_vs_fp32_tokens": agreement(outputs["triform int8"], outputs["triform fp32"]),
        "compiled_vs_int8_tokens": agreement(outputs[COMPILED], outputs["triform int8"]),
        "ct2_vs_int8_tokens": agreement(outputs["ctranslate2 int8"], outputs["triform int8"]),
        "fp32_identical_to_transformers": outputs["triform fp32"] == outputs["transformers fp32"],
        "weights": decoding_weights(spec),
        "load": timing["load"],
    }


def table(results: list[dict], args, read_gb_s: float) -> str:
    loads = [x for r in results for x in r["load"]]
    default = "/".join(sorted({r["default_precision"] for r in results}))
    lines = [
        f"Greedy decoding, every output its full length, of the GPT and BART of `benchmarks/run.py` (random "
        f"weights; GPT 16 prompt + 128 new tokens, BART 64 source + 64 new tokens); {cpu_name()}, "
        f"{args.threads} thread(s) on each side, torch {torch.__version__}, CTranslate2 "
        f"{__import__('ctranslate2').__version__}; load average {min(loads):.1f} to {max(loads):.1f}; memory read "
        f"bandwidth {read_gb_s:.1f} GB/s; median of {args.repeats} alternating rounds. "
        'Written by `python benchmarks/int8.py --write`. ms per token step; "bound" is the time to read the '
        "int8 weights once at that bandwidth.",
        "",
        f"| model | batch | triform int8 | triform int8 compiled | CTranslate2 int8 | triform default ({default}) | "
        f"triform fp32 | transformers fp32 | int8 ÷ CT2 int8 | compiled int8 ÷ CT2 int8 | int8 ÷ default | "
        "int8 ÷ transformers | share of the int8 bound (compiled) | outside products (compiled) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        ms = r["ms_per_step"]
        bound = r["weights"] / (read_gb_s * 1e9) * 1e3
        lines.append(
            f"| {r['model']} | {r['batch']} | {ms['triform int8']:.2f} | {ms[COMPILED]:.2f} | "
            f"{ms['ctranslate2 int8']:.2f} | {ms['triform default']:.2f} | {ms['triform fp32']:.2f} | "
            f"{ms['transformers fp32']:.2f} | {r['int8_over_ct2']:.2f}× | {r['compiled_over_ct2']:.2f}× | "
            f"{r['int8_over_default']:.2f}× | {r['int8_over_transformers']:.2f}× | "
            f"{100 * bound / ms['triform int8']:.0f} % ({100 * bound / ms[COMPILED]:.0f} %) | "
            f"{outside_products(r):.2f} ({outside_products(r, compiled=True):.2f}) |"
        )
    lines += ["", "Outputs (share of tokens equal, position by position):", ""]
    for r in results:
        lines.append(
            f"- {r['model']} batch {r['batch']}: triform int8 = triform fp32 on {100 * r['int8_vs_fp32_tokens']:.0f} %"
            f" of tokens, compiled int8 = triform int8 on {100 * r['compiled_vs_int8_tokens']:.0f} %, "
            "CTranslate2 int8 = "
            f"triform int8 on {100 * r['ct2_vs_int8_tokens']:.0f} %; triform fp32 "
            f"{'identical to' if r['fp32_identical_to_transformers'] else '**differs from**'} transformers fp32."
        )
    lines += [
        "",
        "Random weights give near-uniform next-token scores, where int8 rounding can flip a greedy choice and the "
        "sequences part after it; scripts/results_quantize.py measures the quality of int8 on trained models.",
        "",
        *bound_lines(results, read_gb_s),
    ]
    if statistics.median(loads) > os.cpu_count():
        lines += [
            "",
            f"The machine was loaded by other work (median load average {statistics.median(loads):.1f} on "
            f"{os.cpu_count()} cores): the absolute figures are above a quiet machine's (and the measured bandwidth, "
            "hence the bound, below it); the paired ratios are the claim.",
        ]
    return "\n".join(lines)


def markers(machine: str) -> tuple[str, str]:
    return f"<!-- results:int8 {machine} -->", f"<!-- /results:int8 {machine} -->"


def outside_products(result: dict, compiled: bool = False) -> float:
    """ms of triform int8's median step (eager or compiled) not spent in matrix products (their time
    from the profiler)."""
    if compiled:
        return result["ms_per_step"][COMPILED] - result["compiled_products_ms"]
    return result["ms_per_step"]["triform int8"] - result["int8_products_ms"]


def bound_lines(results: list[dict], read_gb_s: float) -> list[str]:
    """What bounds triform int8 against CTranslate2: reading the int8 weights once a step, and the part
    of its step outside the products."""
    lines = []
    for r in results:
        target = r["ms_per_step"]["ctranslate2 int8"] / 1.5
        bound = r["weights"] / (read_gb_s * 1e9) * 1e3
        lines.append(
            f"- {r['model']} batch {r['batch']}: a step at 1.5× CTranslate2's speed would take {target:.2f} ms; "
            f"reading the int8 weights once from memory takes {bound:.2f} ms at the measured bandwidth"
            + (
                " (more: the target is beyond memory speed, unless the weights stay in the last level cache)."
                if bound > target
                else "."
            )
        )
    lines += [
        "",
        '"Outside products" is triform int8\'s median step less the time its matrix products took under '
        "torch.profiler: the Python of the model's forward, the dispatch of its operators (norms, residual adds, "
        "attention, the KV cache, views), and the choice of the next token; compiled, inductor's fused kernels "
        "and the guards of the compiled step.",
        "",
    ]
    for r in results:
        target = r["ms_per_step"]["ctranslate2 int8"] / 1.5
        outside = outside_products(r, compiled=True)
        products = r["ms_per_step"][COMPILED] - outside
        verdict = "more than" if outside > target else "less than"
        lines.append(
            f"- {r['model']} batch {r['batch']}: compiled, {products:.2f} ms in products and {outside:.2f} ms outside "
            f"them ({r['compiled_operators_per_step']:.0f} operators per step; eager {outside_products(r):.2f} ms, "
            f"{r['int8_operators_per_step']:.0f}); the outside part alone is {verdict} the {target:.2f} ms a whole "
            "step would take at 1.5× CTranslate2's speed."
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["gpt", "bart"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1, help="threads on each side (1: steadier on a shared machine)")
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--write", action="store_true", help="write the table into docs/results.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    read_gb_s = bandwidth(64 if args.tiny else 512)["read_gb_s"]
    with tempfile.TemporaryDirectory() as folder:
        results = [measure(m, b, args, Path(folder)) for m in args.models for b in args.batches]
    text = table(results, args, read_gb_s)
    print(text)
    if args.write and not args.tiny:  # one section per machine, as benchmarks/run.py keeps one table per machine
        machine = this_machine()
        write_section(text, f"{HEADING}: {machine}", *markers(machine))
    print(f"load now {load():.1f}", file=sys.stderr)


if __name__ == "__main__":
    main()
