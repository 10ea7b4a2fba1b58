"""From timings to figures (medians, paired ratios, utilisation) and from figures to the tables of
benchmarks/results.md."""

from __future__ import annotations

import math
from collections.abc import Callable

from speed.timing import median, paired_ratio

# Targets on a bf16-capable CPU (ratios of triform over transformers).
TRAINING_TARGETS = {"gpt": 1.05, "bert": 1.8, "bart": 1.1}
DEFAULT_OVER_FP32_TARGETS = {"gpt-train": 1.6, "greedy": 2.0}
DECODING_TARGETS = {"greedy": 1.3, "beam": 1.5}
GEMM_SHARE_TARGET = {"fp32": 0.8, "bf16": 0.6}  # of the measured matmul rate, GPT training


def training_figures(case: str, timing: dict, info: dict, gemm: dict) -> dict:
    """tokens/s, MFU against the measured matmul rate, comparisons, for one training case."""
    seconds = timing["seconds"]
    variants = {}
    for name, values in seconds.items():
        dtype = name.split()[-1]
        step = median(values)
        achieved = info["flops_per_step"] / step / 1e9
        variants[name] = {
            "step_s": step,
            "tokens_per_s": info["tokens_per_step"] / step,
            "model_gflop_s": achieved,
            "mfu": achieved / gemm[dtype],
            "peak_rss_mib": timing["peak_rss_mib"].get(name),
        }
    target = TRAINING_TARGETS[info["model"]]
    comparisons = [("same dtype, fp32", "triform fp32", "transformers fp32", target)]
    if "triform bf16" in seconds:  # run only on a CPU with native bf16
        comparisons.append(("same dtype, bf16", "triform bf16", "transformers bf16", target))
    default = f"triform {info['default_precision']}"
    comparisons.append(
        (
            f"triform default ({info['default_precision']}) vs transformers fp32",
            default,
            "transformers fp32",
            DEFAULT_OVER_FP32_TARGETS.get(case),
        )
    )
    return {"variants": variants, "comparisons": compare(seconds, comparisons), "gemm_gflop_s": gemm}


def bound_ms(weights: int, precision: str, read_gb_s: float) -> float:
    """ms to read `weights` weights once at the measured bandwidth: a decoding step's floor."""
    return weights * (2 if precision == "bf16" else 4) / (read_gb_s * 1e9) * 1e3


def decoding_figures(timing: dict, info: dict, read_gb_s: float) -> dict:
    """ms per step, tokens/s, the share of the weight-bytes / bandwidth bound, comparisons."""
    seconds = timing["seconds"]
    n_tokens = info["batch"] * info["new_tokens"]
    variants = {}
    for name, values in seconds.items():
        precision = info["default_precision"] if "default" in name else "bf16" if "bf16" in name else "fp32"
        bound = bound_ms(info["weights_per_step"], precision, read_gb_s) / 1e3
        per_step = median(values) / info["new_tokens"]
        variants[name] = {
            "ms_per_step": per_step * 1e3,
            "tokens_per_s": n_tokens / median(values),
            "bound_ms_per_step": bound * 1e3,
            "share_of_bound": bound / per_step,
            "peak_rss_mib": timing["peak_rss_mib"].get(name),
        }
    kind = "beam" if info["beams"] > 1 else "greedy"
    default = next(name for name in seconds if "default" in name)
    comparisons = [
        ("same dtype, fp32", "triform fp32", "transformers fp32", DECODING_TARGETS[kind]),
        (f"{default} vs transformers fp32", default, "transformers fp32", DEFAULT_OVER_FP32_TARGETS.get(kind)),
    ]
    if "triform bf16" in seconds:  # the precision auto did not choose, where it had the choice
        comparisons.append(("triform bf16 vs transformers fp32", "triform bf16", "transformers fp32", None))
    if "triform fp32 compiled" in seconds:  # --compile: triform's steps compiled, transformers' eager
        comparisons.append(
            ("fp32 compiled vs transformers fp32 (eager)", "triform fp32 compiled", "transformers fp32", None)
        )
        comparisons.append(("fp32 compiled vs triform fp32 (eager)", "triform fp32 compiled", "triform fp32", None))
    return {"variants": variants, "comparisons": compare(seconds, comparisons)}


def compare(seconds: dict, comparisons: list) -> list[dict]:
    rows = []
    for label, ours, theirs, target in comparisons:
        ratio = paired_ratio(seconds[theirs], seconds[ours])
        rows.append(
            {
                "label": label,
                "ours": ours,
                "theirs": theirs,
                "ratio": ratio,
                "target": target,
                "met": None if target is None else ratio >= target,
            }
        )
    return rows


def verdict(row: dict) -> str:
    if row["target"] is None:
        return ""
    return f"≥ {row['target']:.2f}× {'met' if row['met'] else '**not met**'}"


def rss(value) -> str:
    return "" if value is None else f"{value:,.0f}"


def variant_table(results: dict, columns: list[tuple[str, Callable[[dict], str]]]) -> list[str]:
    """One row per case and variant; `columns` are (heading, the cell from the variant's figures)."""
    lines = ["| case | variant | " + " | ".join(h for h, _ in columns) + " |", "|---|---|" + "---:|" * len(columns)]
    for case, result in results.items():
        for name, v in result["figures"]["variants"].items():
            lines.append(f"| {case} | {name} | " + " | ".join(cell(v) for _, cell in columns) + " |")
    return lines


def training_table(results: dict) -> list[str]:
    return variant_table(
        results,
        [
            ("tokens/s", lambda v: f"{v['tokens_per_s']:,.0f}"),
            ("step (s)", lambda v: f"{v['step_s']:.3f}"),
            ("model GFLOP/s", lambda v: f"{v['model_gflop_s']:.1f}"),
            ("MFU (of measured matmul rate)", lambda v: f"{100 * v['mfu']:.0f} %"),
            ("peak RSS (MiB)", lambda v: rss(v["peak_rss_mib"])),
        ],
    )


def decoding_table(results: dict) -> list[str]:
    return variant_table(
        results,
        [
            ("ms per step", lambda v: f"{v['ms_per_step']:.2f}"),
            ("tokens/s", lambda v: f"{v['tokens_per_s']:,.0f}"),
            ("bound (ms per step)", lambda v: f"{v['bound_ms_per_step']:.2f}"),
            ("share of bound", lambda v: f"{100 * v['share_of_bound']:.0f} %"),
            ("peak RSS (MiB)", lambda v: rss(v["peak_rss_mib"])),
        ],
    )


def ratio_table(results: dict) -> list[str]:
    lines = ["| case | comparison | triform ÷ transformers (median of paired ratios) | target |", "|---|---|---:|---|"]
    for case, result in results.items():
        for row in result["figures"]["comparisons"]:
            shown = math.floor(row["ratio"] * 100) / 100  # rounded down: never shown above a target it misses
            lines.append(f"| {case} | {row['label']} | {shown:.2f}× | {verdict(row)} |")
    return lines


def utilisation_lines(results: dict) -> list[str]:
    """GPT training's model FLOPs utilisation against the matmul rate measured in the same run."""
    if "gpt-train" not in results:
        return []
    variants = results["gpt-train"]["figures"]["variants"]
    lines = []
    dtypes = [dtype for dtype in ("fp32", "bf16") if f"triform {dtype}" in variants]
    for dtype in dtypes:
        share = variants[f"triform {dtype}"]["mfu"]
        met = "met" if share >= GEMM_SHARE_TARGET[dtype] else "**not met**"
        lines.append(
            f"- gpt-train, triform {dtype}: {100 * share:.0f} % of the matrix-product rate measured at the "
            f"step's own shapes (target ≥ {100 * GEMM_SHARE_TARGET[dtype]:.0f} %: {met})."
        )
    if any(variants[f"triform {dtype}"]["mfu"] < GEMM_SHARE_TARGET[dtype] for dtype in dtypes):
        lines.append(
            "- What bounds it: `python benchmarks/profile_training.py` shows the share of a step's operator time "
            "in matrix products; the rest is attention (the kernel calibration chose), element-wise work "
            "(GELU, layer norm, dropout, the loss's softmax) and copies (bf16 casts, transposes), which run at "
            "memory speed."
        )
    return lines
