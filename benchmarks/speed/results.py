"""benchmarks/results.json (every timing, merged case by case across runs) and results.md (tables)."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from speed.report import decoding_table, ratio_table, training_table, utilisation_lines
from triform.io import atomic_write
from triform.kernels.machine import machine_name

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
from results_sections import replace_section  # noqa: E402


def commit() -> str:
    try:
        found = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True, text=True
        )
    except OSError:
        return "unknown"
    return found.stdout.strip() + (" (with uncommitted changes)" if dirty.stdout.strip() else "")


def machine_key(machine: dict) -> str:
    """The heading of a machine's table: its CPU model, with its family and instruction sets where recorded."""
    return machine_name(machine["cpu"], machine.get("isa"), machine.get("family"))


def read_stored(path: Path) -> dict[str, dict]:
    """machine -> case -> result, from PREFIX.json; a file from before one table per machine (all
    cases at the top) is read case by case under the machine each case's run names."""
    stored = json.loads(path.read_text()) if path.exists() else {}
    machines = {key: dict(value["cases"]) for key, value in stored.get("machines", {}).items()}
    for case, result in stored.get("cases", {}).items():
        machines.setdefault(machine_key(result["run"]["machine"]), {})[case] = result
    return machines


def write_results(output: Path, run: dict, results: dict, docs: Path | None = None) -> tuple[str, list[str]]:
    """Merge `results` into PREFIX.json under this run's machine, rewrite PREFIX.md from all of it,
    and with `docs` the speed section of that results page; returns (markdown, failures)."""
    run = {**run, "date": time.strftime("%Y-%m-%d %H:%M"), "commit": commit()}
    path = output.with_suffix(".json")
    machines = read_stored(path)
    if results:
        cases = machines.setdefault(machine_key(run["machine"]), {})
        for case, result in results.items():
            cases[case] = {**result, "run": run}
    for key, cases in machines.items():
        order = [c for c in ORDER if c in cases] + [c for c in cases if c not in ORDER]
        machines[key] = {case: cases[case] for case in order}
    text = markdown(machines)
    stored = {"machines": {key: {"cases": cases} for key, cases in machines.items()}}
    atomic_write(path, json.dumps(stored, indent=1, default=float) + "\n")
    atomic_write(output.with_suffix(".md"), text + "\n")
    if docs is not None:
        replace_section("speed", docs_section(machines, output), docs)
    return text, failures(results)


def docs_section(machines: dict, output: Path) -> str:
    """The ratios and the runs they come from, one table per machine, for docs/results.md; the full
    tables stay in PREFIX.md."""
    where = output.with_suffix(".md").resolve().relative_to(ROOT) if output.resolve().is_relative_to(ROOT) else output
    lines = [
        "## Speed: triform and transformers side by side",
        "",
        f"Written by `benchmarks/run.py` (all tables, tokens/s, MFU, bandwidth bound and peak RSS in `{where}`). "
        "Ratios are transformers' time divided by triform's, the median over alternating rounds on the same "
        "weights: above 1, triform is faster. One table per machine: a speed claim holds on the CPU it was "
        "measured on.",
    ]
    for key, cases in machines.items():
        lines += ["", f"### {key}", "", *runs_text(cases), *kernel_lines(cases), "", *ratio_table(cases)]
        lines += ["", *utilisation_lines(cases)]
    return "\n".join(lines).rstrip()


def kernel_lines(cases: dict) -> list[str]:
    """How many shape classes chose each kernel, per operation, in each run that recorded its choices."""
    lines = []
    for names, run in runs_of(cases):
        kernels = run.get("kernels")
        if not kernels:
            continue
        counts: dict[str, dict[str, int]] = {}
        for key, kernel in kernels.items():
            operation = " ".join(key.split()[:2]) if key.startswith("linear") else key.split()[0]
            counts.setdefault(operation, {}).setdefault(kernel, 0)
            counts[operation][kernel] += 1
        shown = "; ".join(
            f"{operation}: " + ", ".join(f"{kernel} {n}" for kernel, n in sorted(chosen.items(), key=lambda x: -x[1]))
            for operation, chosen in counts.items()
        )
        lines.append(
            f"- Kernels calibration chose for {', '.join(names)} ({len(kernels)} shape classes; "
            f"`triform calibrate` shows them): {shown}."
        )
    return lines


def runs_of(cases: dict) -> list[tuple[list[str], dict]]:
    """The distinct runs the cases come from, each with its cases."""
    runs: dict[str, list[str]] = {}
    for case, result in cases.items():
        runs.setdefault(json.dumps(result["run"], sort_keys=True, default=float), []).append(case)
    return [(names, json.loads(key)) for key, names in runs.items()]


ORDER = [
    "gpt-train",
    "bert-train",
    "bart-train",
    "gpt-greedy-b1",
    "gpt-greedy-b8",
    "gpt-beam4-b1",
    "bart-greedy-b1",
    "bart-greedy-b8",
    "bart-beam4-b1",
]


def failures(results: dict) -> list[str]:
    found = []
    for case, result in results.items():
        agreement = result["info"].get("agreement")
        if agreement is not None and result["info"]["beams"] == 1 and not agreement["identical_to_transformers"]:
            found.append(f"{case}: triform's greedy output (fp32) differs from transformers'")
    return found


def runs_text(cases: dict) -> list[str]:
    lines = []
    for names, run in runs_of(cases):
        m = run["machine"]
        loads = [x for c in names for x in cases[c]["timing"]["load"]]
        bandwidth = run["limits"]["bandwidth"]
        about = [m["vendor"]] if m.get("vendor") else []  # runs before vendor and ISA flags were recorded
        about += [f"{m['cores']} cores", f"{m['torch_threads']} torch threads"]
        about += [", ".join(m["isa"]) if m.get("isa") else m["cpu_capability"]]
        if m.get("native_kernels", "built") != "built":  # recorded since; a build that went without something
            about.append(f"triform's native kernels: {m['native_kernels']}")
        lines.append(
            f"- {', '.join(names)}: {run['date']}, triform {run['commit']}, {m['cpu']} ({', '.join(about)}, native "
            f"bf16: {'yes' if m['native_bf16'] else 'no'}), "
            f"Python {m['python']}, torch {m['torch']}, transformers {m['transformers']}; load average during the "
            f"rounds {min(loads):.1f} to {max(loads):.1f} (median {statistics.median(loads):.1f}); memory bandwidth "
            f"read {bandwidth['read_gb_s']:.1f} GB/s, copy {bandwidth['copy_gb_s']:.1f} GB/s; {run['warmup']} "
            "warm-up and "
            f"{run['repeats']} timed rounds per "
            f"case{' (fewer than 5: a quick look, not a measurement to quote)' if run['repeats'] < 5 else ''}"
            f"{COMPILED_RUN if run['compiled'] else ''}"
            f"{'; times in CPU seconds of the process' if run.get('clock') == 'cpu' else ''}; "
            f"`python benchmarks/run.py {' '.join(run['argv'])}`".rstrip()
            + "."
        )
    return lines


def markdown(machines: dict) -> str:
    lines = ["# Speed: triform and transformers side by side", "", HOW]
    for key, cases in machines.items():
        lines += ["", f"## {key}", "", *machine_markdown(cases)]
    return "\n".join(lines)


def machine_markdown(cases: dict) -> list[str]:
    trained = {c: r for c, r in cases.items() if r["kind"] == "training"}
    decoded = {c: r for c, r in cases.items() if r["kind"] == "decoding"}
    lines = [*runs_text(cases), "", "### Ratios", ""]
    lines += ratio_table(cases) + [""] + utilisation_lines(cases)
    if trained:
        lines += ["", "### Training steps", "", TRAINING_NOTE, ""] + training_table(trained) + [""]
        for case, result in trained.items():
            gemm, info = result["figures"]["gemm_gflop_s"], result["info"]
            losses = info["eval_losses"]
            rates = ", ".join(f"{rate:.0f} GFLOP/s in {dtype}" for dtype, rate in gemm.items())
            if "bf16" not in gemm:
                rates += " (no bf16 variants: this CPU has no native bf16)"
            lines.append(
                f"- {case}: {info['tokens_per_step']:,} tokens and {info['flops_per_step'] / 1e9:,.1f} GFLOP "
                f"per step ({info['n_predicted']:,} predicted tokens); matrix products at the step's shapes "
                f"{rates}; largest logit "
                f"difference {info['logit_difference']:.1e}; loss on the batch (eval mode, fp32) "
                f"{losses['triform']:.5f} in triform, {losses['transformers']:.5f} in transformers"
                f"{compile_note(info)}"
                f"{'; freed host memory kept for reuse on both sides' if info.get('freed_memory_kept') else ''}."
            )
    if decoded:
        lines += ["", "### Generation", "", DECODING_NOTE, ""] + decoding_table(decoded) + [""]
        for case, result in decoded.items():
            info, agreement = result["info"], result["info"]["agreement"]
            same = "identical to" if agreement["identical_to_transformers"] else "**different from**"
            lines.append(
                f"- {case}: batch {info['batch']}, {info['beams']} beam(s), {info['prompt']}-token "
                f"{'prompt' if info['model'] == 'gpt' else 'source'}, {info['new_tokens']} new tokens; triform's "
                f"fp32 tokens {same} transformers'; {100 * agreement['default_precision_token_agreement']:.0f} % of "
                f"the default-precision tokens equal the fp32 ones{compiled_decoding_note(info)}."
            )
    return lines + kernel_table_lines(cases)


def kernel_table_lines(cases: dict) -> list[str]:
    """Every shape class's chosen kernel, per run that recorded them."""
    lines = []
    for names, run in runs_of(cases):
        if run.get("kernels"):
            lines += ["", f"### Kernels calibration chose ({', '.join(names)})", "", "| shape class | kernel |"]
            lines += ["|---|---|"] + [f"| {key} | {kernel} |" for key, kernel in run["kernels"].items()]
    return lines


COMPILED_RUN = "; torch.compile: training steps on both sides, triform's decoding steps"


def compiled_decoding_note(info: dict) -> str:
    if not info.get("compiled"):
        return ""
    same = "identical to" if info["agreement"].get("compiled_identical_to_eager") else "**different from**"
    first = info["first_call_seconds"].get("triform fp32 compiled")
    return f"; compiled fp32 tokens {same} eager ones, first call (compile included) {first:.1f} s"


def compile_note(info: dict) -> str:
    if not info["compiled"]:
        return ""
    first = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in info["first_call_seconds"].items())
    return f"; first step, compilation included: {first}"


HOW = (
    "Written by `benchmarks/run.py`. Each case builds the model in triform and the same configuration in "
    "`transformers` (GPT2LMHeadModel, BertForMaskedLM, BartForConditionalGeneration) with the same weights, copied "
    "through triform's converter; checks that the logits agree; then runs the variants in turn (A B C, A B C, ...) "
    "so that all share the machine's load. Figures are medians over the timed rounds; a ratio is the median over "
    "rounds of transformers' time divided by triform's, so above 1 means triform is faster. Peak RSS is the "
    "process's peak while a variant ran its first (warm-up) call, with both models of the case loaded."
)
TRAINING_NOTE = (
    "A step is forward, loss, backward, gradient clipping and an AdamW step (the same optimizer code on both "
    "sides). Model FLOPs per step are 6 per matmul weight per token it applies to, plus 12 · n_heads · d_head · "
    "keys per token and layer for attention (PaLM, appendix B), with the output projection counted at predicted "
    "positions only (for the masked LM, the masked ones). MFU divides the achieved model FLOP/s by the speed this "
    "machine reached, in the same run, on the step's own matrix products (forward and both backward products of "
    "every linear layer, at their shapes), in the variant's dtype. Where a case's line says so "
    "(`--keep-freed-memory`), both sides' steps kept freed host memory in the process for the next step, "
    "as `--train.keep_freed_memory true` does (kernels/host_memory.py: glibc's mallopt; transformers' "
    "users get the same with MALLOC_MMAP_MAX_=0)."
)
DECODING_NOTE = (
    "A step is one new token for every row. The bound is the time to read the matmul weights once from memory at "
    "the measured read bandwidth (fp32: 4 bytes per weight; bf16: 2 bytes); a share of 100 % would mean decoding "
    "at memory speed. triform bf16 decodes on a CPU with the weights in bf16 (a twin of the model, no autocast); "
    "triform's default precision is what one step measured faster on this machine, for the model and row count, "
    "where the CPU computes in bf16 natively or triform's native bf16 kernel was built, fp32 otherwise."
)
