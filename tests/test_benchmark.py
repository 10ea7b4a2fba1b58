"""benchmarks/run.py at its --tiny size: the side-by-side code runs, checks parity, writes its tables.

No timing is asserted: speed claims live in benchmarks/results.md as ratios.
"""

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
import torch

from triform.kernels import native

pytest.importorskip("transformers")
ROOT = Path(__file__).resolve().parents[1]


def load_benchmark():
    spec = importlib.util.spec_from_file_location("speed_benchmark", ROOT / "benchmarks" / "run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("native_bf16", [True, False], ids=["native-bf16", "no-native-bf16"])
def test_tiny_benchmark_writes_tables_for_a_training_and_a_decoding_case(tmp_path, capsys, monkeypatch, native_bf16):
    """Both kinds of CPU, whichever this one is: bf16 variants where bf16 is native, none where it is
    emulated (an AVX2-only CPU, where oneDNN's bf16 inner product cannot even run)."""
    benchmark = load_benchmark()
    monkeypatch.setattr(benchmark.training, "native_bf16", lambda device: native_bf16)
    if not native_bf16:  # the library's default precision (fp32 then) follows; it is never forced onto bf16,
        # which a CPU without native bf16 would run in emulated kernels
        monkeypatch.setattr("triform.precision.native_bf16", lambda device: False)
    threads = torch.get_num_threads()
    try:
        status = benchmark.main(
            [
                "--tiny",
                "--threads",
                "1",
                "--repeats",
                "1",
                "--only",
                "gpt-train",
                "bart-greedy-b1",
                "--output",
                str(tmp_path / "speed"),
            ]
        )
    finally:
        torch.set_num_threads(threads)
    assert status == 0
    (machine, stored), *others = json.loads((tmp_path / "speed.json").read_text())["machines"].items()
    assert not others and list(stored["cases"]) == ["gpt-train", "bart-greedy-b1"]
    run = stored["cases"]["gpt-train"]["run"]
    assert machine.startswith(run["machine"]["cpu"]) and run["machine"]["vendor"] and "isa" in run["machine"]
    built = "; ".join(native.build_notes()) or "built"
    assert run["machine"]["native_kernels"] == (built if native.library() else f"left out: {native.unavailable()}")
    assert any(key.startswith("linear x·Wᵀ") for key in run["kernels"])  # the kernels calibration chose
    training, decoding = stored["cases"]["gpt-train"], stored["cases"]["bart-greedy-b1"]
    assert training["info"]["logit_difference"] < 1e-4
    bf16 = {"triform bf16", "transformers bf16"} if native_bf16 else set()
    assert set(training["figures"]["variants"]) == {"triform fp32", "transformers fp32", *bf16}
    assert set(training["figures"]["gemm_gflop_s"]) == ({"fp32", "bf16"} if native_bf16 else {"fp32"})
    assert all(v["mfu"] > 0 and v["tokens_per_s"] > 0 for v in training["figures"]["variants"].values())
    assert decoding["info"]["agreement"]["identical_to_transformers"]
    assert all(row["ratio"] > 0 for row in decoding["figures"]["comparisons"])
    text = (tmp_path / "speed.md").read_text()
    assert ("| gpt-train | triform bf16 |" in text) == native_bf16 and "| bart-greedy-b1 | same dtype, fp32 |" in text
    assert ("no native bf16" in text) != native_bf16

    assert benchmark.main(["--rewrite", "--output", str(tmp_path / "speed")]) == 0  # the tables again, from the JSON
    assert (tmp_path / "speed.md").read_text() == text

    from speed.results import docs_section, replace_section  # importable once run.py has run

    page = tmp_path / "results.md"
    page.write_text("# Results\n\n<!-- results:other -->\nkept\n<!-- /results:other -->\n")
    replace_section("speed", docs_section({machine: stored["cases"]}, tmp_path / "speed"), page)
    written = page.read_text()
    assert "kept" in written and "<!-- results:speed -->" in written
    assert ("| gpt-train | same dtype, bf16 |" in written) == native_bf16
    assert f"### {machine}" in written and "Kernels calibration chose for gpt-train, bart-greedy-b1" in written


@pytest.mark.skipif(not any(shutil.which(n) for n in ("g++", "c++", "clang++")), reason="no C++ compiler for inductor")
def test_with_compile_a_decoding_case_adds_triforms_compiled_steps(tmp_path):
    benchmark = load_benchmark()
    threads = torch.get_num_threads()
    try:
        argv = ["--tiny", "--compile", "--threads", "1", "--repeats", "1", "--only", "gpt-greedy-b1"]
        status = benchmark.main([*argv, "--output", str(tmp_path / "speed")])
    finally:
        torch.set_num_threads(threads)
    assert status == 0
    (_, stored), *_ = json.loads((tmp_path / "speed.json").read_text())["machines"].items()
    decoding = stored["cases"]["gpt-greedy-b1"]
    assert "triform fp32 compiled" in decoding["figures"]["variants"]
    assert decoding["info"]["agreement"]["compiled_identical_to_eager"]
    labels = {row["label"] for row in decoding["figures"]["comparisons"]}
    assert {"fp32 compiled vs transformers fp32 (eager)", "fp32 compiled vs triform fp32 (eager)"} <= labels
    text = (tmp_path / "speed.md").read_text()
    assert "compiled fp32 tokens identical to eager ones, first call (compile included)" in text


def test_each_machine_keeps_its_own_table(tmp_path):
    """A run on one CPU replaces that CPU's cases only: another machine's figures, from a file
    written before tables were kept per machine, stay under their own heading."""
    load_benchmark()
    from speed.results import write_results

    result = json.loads((ROOT / "benchmarks" / "results.json").read_text())
    amd = next((cases for key, cases in result["machines"].items() if key.startswith("AMD EPYC")), None)
    if amd is None:
        pytest.skip("no AMD EPYC figures in benchmarks/results.json")
    old_layout = tmp_path / "speed.json"
    old_layout.write_text(json.dumps({"cases": {"gpt-train": amd["cases"]["gpt-train"]}}))
    page = tmp_path / "results.md"
    here = dict(amd["cases"]["gpt-train"]["run"])
    here["machine"] = {**here["machine"], "cpu": "Intel(R) Xeon(R) Processor", "vendor": "GenuineIntel"}
    here["machine"]["isa"] = ["AVX512", "AVX512-BF16", "AMX"]
    here["machine"]["native_kernels"] = "clang does not take -fopenmp: built without OpenMP, each kernel on one thread"
    ours = {**amd["cases"]["gpt-train"], "figures": json.loads(json.dumps(amd["cases"]["gpt-train"]["figures"]))}
    ours["figures"]["comparisons"][0]["ratio"] = 1.234
    write_results(tmp_path / "speed", here, {"gpt-train": ours}, page)
    written = page.read_text()
    intel = "### Intel(R) Xeon(R) Processor (AVX512, AVX512-BF16, AMX)"
    assert "### AMD EPYC\n" in written and intel in written
    amd_part, intel_part = written.split(intel)
    assert "| gpt-train | same dtype, fp32 | 1.23× |" in intel_part and "1.23×" not in amd_part
    assert "native kernels: clang does not take -fopenmp" in intel_part and "native kernels:" not in amd_part
    stored = json.loads(old_layout.read_text())["machines"]
    assert list(stored) == ["AMD EPYC", intel[4:]]


def test_cases_are_chosen_by_name_or_word():
    benchmark = load_benchmark()
    assert benchmark.selected(["gpt-train"]) == ["gpt-train"]
    assert benchmark.selected(["greedy"]) == ["gpt-greedy-b1", "gpt-greedy-b8", "bart-greedy-b1", "bart-greedy-b8"]
    with pytest.raises(SystemExit, match="no case matches 'llama'"):
        benchmark.selected(["llama"])


def test_the_gpu_benchmark_runs_its_cases_on_a_cpu_at_its_tiny_size(tmp_path, capsys):
    """benchmarks/gpu.py, prepared for a GPU, is the same code on any device: training eager and
    compiled, both sides' greedy decoding, identical fp32 outputs, the report."""
    spec = importlib.util.spec_from_file_location("gpu_benchmark", ROOT / "benchmarks" / "gpu.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(["--device", "cpu", "--tiny", "--rounds", "1", "--out", str(tmp_path / "gpu.json")])
    report = json.loads((tmp_path / "gpu.json").read_text())
    steps = report["training"]["steps"]
    assert set(steps) == {"triform", "transformers", "triform compiled"}
    assert all(0 < step["mfu_at_step_shapes"] for step in steps.values())
    assert report["training"]["attention"] == {"flash": True}
    assert set(report["decoding"]) == {"greedy-b1", "greedy-b2"}
    for case in report["decoding"].values():
        assert case["fp32_identical_to_transformers"]
        sides = {"triform fp32", "transformers fp32", "triform default", "transformers bf16"}
        assert set(case["tokens_per_s"]) == sides
    assert "MFU" in capsys.readouterr().out


def test_the_packing_benchmark_times_both_packs_and_writes_its_section(tmp_path):
    spec = importlib.util.spec_from_file_location("packing_benchmark", ROOT / "benchmarks" / "packing.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    threads = torch.get_num_threads()
    try:
        module.main(["--tiny", "--threads", "1", "--repeats", "2", "--warmup", "0", "--json", str(tmp_path / "p.json")])
    finally:
        torch.set_num_threads(threads)
    stored = json.loads((tmp_path / "p.json").read_text())
    assert [case["model"] for case in stored["cases"]] == ["gpt", "bert"]
    assert all(case["documents_per_row"] > 1 for case in stored["cases"])  # the windows do pack documents
    text = module.section(stored, stored["command"])
    assert "| gpt | 4 × 32" in text and "| bert | 4 × 32" in text and "bf16" in text and "fp32" in text


def test_the_int8_table_says_what_bounds_triform_against_ctranslate2_and_the_load_only_when_loaded(monkeypatch):
    pytest.importorskip("ctranslate2")
    spec = importlib.util.spec_from_file_location("int8_benchmark", ROOT / "benchmarks" / "int8.py")
    int8 = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(int8)
    steps = {"triform int8": 3.0, "triform int8 compiled": 2.4, "ctranslate2 int8": 1.8, "triform default": 3.8}
    steps["triform fp32"] = 5.8
    row = {
        "model": "gpt",
        "batch": 1,
        "ms_per_step": {**steps, "transformers fp32": 6.4},
        "int8_products_ms": 1.0,
        "int8_operators_per_step": 700.0,
        "compiled_products_ms": 1.0,
        "compiled_operators_per_step": 300.0,
        **{key: 1.0 for key in ("int8_over_ct2", "compiled_over_ct2", "int8_over_default", "int8_over_transformers")},
        "int8_vs_fp32_tokens": 1.0,
        "compiled_vs_int8_tokens": 1.0,
        "ct2_vs_int8_tokens": 1.0,
        "fp32_identical_to_transformers": True,
        "weights": 10**6,
        "default_precision": "fp32",
    }
    fast = {**row, "batch": 8, "compiled_products_ms": 1.9}  # compiled, 0.5 ms outside: under 1.8 / 1.5
    args = type("Args", (), {"threads": 1, "repeats": 5})
    monkeypatch.setattr(int8.os, "cpu_count", lambda: 2)
    quiet = int8.table([{**row, "load": [0.9, 1.0]}, {**fast, "load": [1.0]}], args, 30.0)
    slow = "- gpt batch 1: compiled, 1.00 ms in products and 1.40 ms outside them (300 operators per step; "
    assert slow + "eager 2.00 ms, 700); the outside part alone is more than the 1.20 ms" in quiet
    assert "- gpt batch 8: compiled, 1.90 ms in products and 0.50 ms outside them" in quiet
    assert "the outside part alone is less than the 1.20 ms" in quiet
    assert "| 3.00 | 2.40 | 1.80 |" in quiet  # eager, compiled, CTranslate2
    assert "loaded by other work" not in quiet
    assert "| triform default (fp32) |" in quiet and "int8 ÷ default" in quiet and "bf16" not in quiet
    reading = "a step at 1.5× CTranslate2's speed would take 1.20 ms; reading the int8 weights once from memory takes"
    assert f"- gpt batch 1: {reading} 0.03 ms at the measured bandwidth." in quiet
    loaded = int8.table([{**row, "load": [5.0, 6.0], "weights": 10**8}], args, 30.0)
    assert "loaded by other work (median load average 5.5 on 2 cores)" in loaded
    assert f"{reading} 3.33 ms at the measured bandwidth (more: the target is beyond memory speed" in loaded
