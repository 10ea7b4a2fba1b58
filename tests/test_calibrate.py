"""Kernel choice by measurement: the fastest candidate by the timings given, a single candidate
without timing, choices cached for the process and on disk for this machine only."""

import json

import pytest
import torch

from triform.cli import main
from triform.kernels import calibrate as calibrate_module
from triform.kernels import int8 as int8_module
from triform.kernels import linear as linear_module
from triform.kernels import native
from triform.kernels.calibrate import (
    Caches,
    Calibration,
    FromMemory,
    best_seconds,
    calibration,
    kernels_identity,
    key_text,
    read_choices,
    set_calibration,
)
from triform.kernels.linear import Linear
from triform.kernels.machine import fingerprint

KEY = ("linear", "x·Wᵀ", "fp32", 64, 32, 48, True, 2)
NAMES = ("torch", "onednn", "onednn-packed")


def fake_timer(seconds: dict[str, float], calls: list[str] | None = None):
    def timer(name, run):
        if calls is not None:
            calls.append(name)
        return seconds[name]

    return timer


def runs(names=NAMES, counts: dict | None = None):
    def make():
        def run(name):
            if counts is not None:
                counts[name] = counts.get(name, 0) + 1

        return {name: (lambda name=name: run(name)) for name in names}

    return make


def test_the_fastest_candidate_is_chosen_in_alternating_rounds_and_kept():
    calls, counts = [], {}
    calibration = Calibration(timer=fake_timer({"torch": 3.0, "onednn": 1.0, "onednn-packed": 2.0}, calls))
    calibration.read_disk = False
    assert calibration.choose(KEY, NAMES, runs(counts=counts)) == "onednn"
    assert calls[:6] == list(NAMES) * 2  # A B C, A B C: all see the same load
    assert counts == dict.fromkeys(NAMES, 1)  # each warmed up once; the fake timer runs nothing
    assert calibration.choose(KEY, NAMES, runs()) == "onednn"  # kept: measured once
    assert len(calls) % 3 == 0 and calls == list(NAMES) * (len(calls) // 3)
    (text, choice), *_ = calibration.table()
    assert text == "linear x·Wᵀ fp32 rows≤64 in=32 out=48 bias=True threads=2" == key_text(KEY)
    assert choice.seconds == {"torch": 3.0, "onednn": 1.0, "onednn-packed": 2.0} and choice.source == "measured"


def test_the_choice_is_deterministic_given_the_timings_and_ties_go_to_the_first():
    for _ in range(3):
        tied = Calibration(timer=fake_timer({"torch": 1.0, "onednn": 1.0, "onednn-packed": 1.0}), read_disk=False)
        assert tied.choose(KEY, NAMES, runs()) == "torch"
        fastest_last = Calibration(timer=fake_timer({"torch": 2, "onednn": 2, "onednn-packed": 1}), read_disk=False)
        assert fastest_last.choose(KEY, NAMES, runs()) == "onednn-packed"


def test_a_single_candidate_is_chosen_without_timing(monkeypatch):
    def no_timer(name, run):
        raise AssertionError("nothing to compare: no timing")

    calibration = Calibration(timer=no_timer, read_disk=False)
    assert calibration.choose(KEY, ("torch",), runs(("torch",))) == "torch"
    assert calibration.table()[0][1].source == "only candidate"
    # a machine without oneDNN or MKL's packed products has torch's kernel alone: nothing is timed
    for name in ("ONEDNN", "ONEDNN_PACKED", "MKL_PACKED"):
        monkeypatch.setattr(linear_module, name, False)
    monkeypatch.setattr(native, "library", lambda: None)  # nor triform's own kernels
    alone = Calibration(timer=no_timer, read_disk=False)
    old = set_calibration(alone)
    try:
        layer = Linear(32, 48)
        x = torch.randn(5, 32, requires_grad=True)
        layer(x).sum().backward()
        with torch.no_grad():
            torch.testing.assert_close(layer(x), torch.nn.functional.linear(x, layer.weight, layer.bias))
        assert alone.table() == []  # torch's kernel called directly, no choice to record
    finally:
        set_calibration(old)


def write_cache(path, machine: dict, choices: dict, kernels: dict | None = None):
    stored = {"machine": machine, "kernels": kernels or kernels_identity(), "choices": choices}
    path.write_text(json.dumps(stored))


def test_choices_saved_on_this_machine_are_read_back(tmp_path):
    path = tmp_path / "kernels.json"
    first = Calibration(timer=fake_timer({"torch": 2.0, "onednn": 1.0, "onednn-packed": 3.0}), path=path)
    assert first.choose(KEY, NAMES, runs()) == "onednn"
    first.save()
    assert read_choices(path) == {key_text(KEY): "onednn"}

    def no_timer(name, run):
        raise AssertionError("the stored choice needs no timing")

    again = Calibration(timer=no_timer, path=path)
    assert again.choose(KEY, NAMES, runs()) == "onednn"
    assert again.table()[0][1].source == "disk"


@pytest.mark.parametrize(
    "foreign", ["none", "cpu", "family", "isa", "torch", "native kernels", "triform", "unknown kernel", "not json"]
)
def test_a_stale_or_foreign_cache_entry_is_ignored_and_measured_again(tmp_path, foreign):
    path = tmp_path / "kernels.json"
    machine, kernel, kernels = dict(fingerprint()), "onednn", dict(kernels_identity())
    if foreign == "cpu":  # another model than this machine's, whichever this one is
        machine["cpu"] = "AMD EPYC 7B13 64-Core Processor" if "7B13" not in machine["cpu"] else "Intel Xeon"
    elif foreign == "family":  # the same model name, another generation (a bare `AMD EPYC` in a VM)
        machine["family"] = "family 25 model 17" if machine["family"] != "family 25 model 17" else "family 26 model 2"
    elif foreign == "isa":  # one instruction set more than this machine has (an AVX2-only one has just ["AVX2"])
        machine["isa"] = [*machine["isa"], "AMX-FP16"] if "AMX-FP16" not in machine["isa"] else ["AVX2"]
    elif foreign == "torch":
        machine["torch"] = "2.1.0"
    elif foreign == "native kernels":  # stored before triform's C kernels changed
        kernels["native"] = "0" * len(kernels["native"])
    elif foreign == "triform":
        kernels["triform"] = "0.0.1"
    elif foreign != "none":
        kernel = "a kernel this torch lacks"
    write_cache(path, machine, {key_text(KEY): kernel}, kernels)
    if foreign == "not json":
        path.write_text("{truncated")
    calibration = Calibration(timer=fake_timer({"torch": 1.0, "onednn": 2.0, "onednn-packed": 3.0}), path=path)
    # measured, torch is the faster; as stored (the one case nothing is stale), onednn
    assert calibration.choose(KEY, NAMES, runs()) == ("onednn" if foreign == "none" else "torch")
    assert calibration.table()[0][1].source == ("disk" if foreign == "none" else "measured")


def test_triform_calibrate_shows_the_table_and_saves_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TRIFORM_CACHE", str(tmp_path / "cache"))
    timings = {
        "torch": 1.0,
        "onednn": 0.5,
        "onednn-packed": 2.0,
        "mkl-packed": 2.0,
        "fp32": 2.0,
        "gemv": 2.0,
        "native": 2.0,
        "widened": 2.0,
        "modules": 1.0,
        "fused": 2.0,
    }
    timings |= {"sdpa": 1.0, "written-out": 2.0, "torch-swapped": 2.0, "onednn-swapped": 2.0}
    old = set_calibration(Calibration(timer=fake_timer(timings), read_disk=False))
    try:
        argv = ["calibrate", "--preset", "tiny-gpt", "--batch", "2", "--length", "16", "--decode_steps", "2"]
        assert main(argv + ["--precision", "fp32", "--save"]) == 0
        table = calibration().table()
    finally:
        set_calibration(old)
    out = capsys.readouterr().out
    assert "shape class" in out and "linear gᵀ·x fp32 rows≤32 in=64" in out and "attention float32" in out
    assert f"native kernels: {native.library().path if native.library() else 'left out'}" in out
    stored = json.loads((tmp_path / "cache" / "kernels.json").read_text())
    assert stored["machine"] == fingerprint()
    assert stored["choices"] == {key: choice.kernel for key, choice in table}
    expected = "onednn" if linear_module.ONEDNN else "torch"
    assert {kernel for key, kernel in stored["choices"].items() if key.startswith("linear")} == {expected}


def test_kernels_first_met_inside_a_checkpointed_block_are_timed_without_recomputing_it():
    """Activation checkpointing packs a block's saved tensors to recompute them in the backward pass;
    a candidate's timed backward pass inside the block must not trigger that recomputation (which
    asked the locked table again and hung the first training step of a new machine)."""
    import threading

    from triform.config import ModelConfig
    from triform.models import build_model
    from triform.models.stack import checkpoint_activations

    torch.manual_seed(0)
    model = build_model(ModelConfig(d_model=32, n_heads=2, d_ff=64, n_layers=2, vocab_size=50, max_len=16))
    checkpoint_activations(model.train())
    fresh = Calibration(timer=lambda name, run: 1.0, read_disk=False)  # every candidate still runs once
    old = set_calibration(fresh)
    finished = []

    def step():
        model(torch.randint(0, 50, (2, 12)), "causal").sum().backward()
        finished.append(True)

    try:
        worker = threading.Thread(target=step, daemon=True)  # a hang fails the test instead of the run
        worker.start()
        worker.join(timeout=60)
        assert finished, "the checkpointed step did not finish"
        assert any(key[0] == "attention" for key in fresh.choices)
    finally:
        set_calibration(old)


def test_a_candidate_this_cpu_cannot_run_is_left_out_and_only_a_total_failure_raises():
    def make(failing):
        def run(name):
            if name in failing:
                raise RuntimeError(f"could not create a primitive descriptor for {name}\ndetails")

        return lambda: {name: (lambda name=name: run(name)) for name in NAMES}

    # oneDNN fastest by the timer, but it raises here (its bf16 inner product on a CPU without AVX512)
    calibration = Calibration(timer=fake_timer({"torch": 3.0, "onednn": 1.0, "onednn-packed": 2.0}), read_disk=False)
    assert calibration.choose(KEY, NAMES, make({"onednn"})) == "onednn-packed"
    (_, choice), *_ = calibration.table()
    assert set(choice.seconds) == {"torch", "onednn-packed"}
    assert choice.failed == {"onednn": "could not create a primitive descriptor for onednn"}
    with pytest.raises(RuntimeError, match="descriptor for torch"):
        Calibration(timer=fake_timer({}), read_disk=False).choose(KEY, NAMES, make(set(NAMES)))


def test_bf16_products_train_where_onednn_cannot_compute_them(monkeypatch):
    """On a CPU whose oneDNN has no bf16 inner product, a bf16 training step still runs, by torch's kernel."""

    def no_bf16(x, weight, bias):
        if x.dtype == torch.bfloat16:
            raise RuntimeError("could not create a primitive descriptor for the inner product forward propagation")
        return torch.nn.functional.linear(x, weight, bias)

    monkeypatch.setitem(linear_module.PRODUCTS, "onednn", no_bf16)
    old = set_calibration(Calibration(read_disk=False))
    try:
        layer = Linear(32, 48)
        x = torch.randn(64, 32, requires_grad=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = layer(x)
        y.float().sum().backward()
        chosen = {text: choice for text, choice in calibration().table()}
        assert chosen and all(choice.kernel != "onednn" for choice in chosen.values())
        assert any("onednn" in choice.failed for choice in chosen.values())
        assert x.grad is not None and layer.weight.grad is not None
    finally:
        set_calibration(old)


@pytest.mark.skipif(not linear_module.ONEDNN, reason="needs oneDNN's products as a second candidate")
def test_a_layer_remembers_its_no_grad_choice_and_chooses_again_under_a_new_table(monkeypatch):
    """A decoding step asks a layer for the same product at every step: the layer keeps the kernel
    chosen for its rows, dtype and autocast, and asks again only when the process's table changes."""
    ran = []
    run_kernel = Linear.run_kernel

    def recorded(self, name, *args):
        ran.append(name)
        return run_kernel(self, name, *args)

    monkeypatch.setattr(Linear, "run_kernel", recorded)
    layer, x = Linear(32, 48), torch.randn(3, 32)
    onednn_fastest = {"torch": 3.0, "onednn": 1.0, "onednn-packed": 2.0, "mkl-packed": 2.0, "gemv": 2.0}
    first = Calibration(timer=fake_timer(onednn_fastest), read_disk=False)
    asked = []
    choose = first.choose
    monkeypatch.setattr(first, "choose", lambda *args: asked.append(args[0]) or choose(*args))
    old = set_calibration(first)
    try:
        with torch.no_grad():
            expected = torch.nn.functional.linear(x, layer.weight, layer.bias)
            torch.testing.assert_close(layer(x), expected)
            ran.clear()
            for _ in range(3):
                torch.testing.assert_close(layer(x), expected)
            assert ran == ["onednn"] * 3 and len(asked) == 1  # chosen once, not at every call
            packed_fastest = {**onednn_fastest, "onednn": 3.0, "onednn-packed": 1.0}
            set_calibration(Calibration(timer=fake_timer(packed_fastest), read_disk=False))
            layer(x)
            ran.clear()
            torch.testing.assert_close(layer(x), expected)
            assert ran == ["onednn-packed"]  # the new table's choice, not the remembered one
    finally:
        set_calibration(old)


def test_a_decoding_product_against_a_large_weight_is_timed_from_memory(monkeypatch):
    """At a few rows a step meets each weight after the rest of the model pushed it out of the caches:
    such a product's candidates are timed with the caches emptied first, a small weight's warm."""
    emptied = []
    monkeypatch.setattr(Caches, "empty", lambda self: emptied.append(self))
    monkeypatch.setattr(calibrate_module, "last_level_cache_bytes", lambda: 32 * 2**20)  # any machine's
    seen: dict[int, list] = {}

    def timer(name, run):
        seen.setdefault(layer.out_features, []).append(run)
        return best_seconds(name, run)

    old = set_calibration(Calibration(timer=timer, read_disk=False))
    try:
        with torch.no_grad():
            for layer in (Linear(384, 8192), Linear(64, 64)):  # 12.6 MB; 16 kB
                layer(torch.randn(1, layer.in_features))
    finally:
        set_calibration(old)
    large, small = seen.get(8192, []), seen.get(64, [])
    assert large and all(isinstance(run, FromMemory) for run in large)
    assert len(emptied) == len(large) and len({id(caches) for caches in emptied}) == 1
    assert not any(isinstance(run, FromMemory) for run in small)


def test_triform_calibrate_times_int8_products_with_the_quantize_flag(capsys, monkeypatch):
    monkeypatch.setattr(int8_module, "FBGEMM_MIN_WEIGHTS", 0)  # the tiny model's matrices take fbgemm's path
    old, threads = set_calibration(Calibration(timer=lambda name, run: 1.0, read_disk=False)), torch.get_num_threads()
    try:
        argv = ["calibrate", "--preset", "tiny-gpt", "--batch", "1", "--length", "8", "--decode_steps", "2"]
        assert main(argv + ["--precision", "fp32", "--quantize", "int8", "--threads", "1"]) == 0
    finally:
        set_calibration(old)
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    assert "1 threads" in out and "int8 linear rows≤1 in=" in out
    assert main(argv + ["--quantize", "int3"]) != 0
    assert "quantize: unknown scheme 'int3'" in capsys.readouterr().err


def test_a_candidate_may_ask_for_a_kernel_of_a_class_not_timed_yet():
    """The written-out attention calls dropout, whose class may be new: it is timed then, inside."""
    calibration = Calibration(timer=lambda name, run: (run(), {"a": 2.0, "b": 1.0}[name])[1], read_disk=False)
    inner = ("linear", "x·Wᵀ", "fp32", 2, 1, 1, True, 1)

    def outer_run():
        return calibration.choose(inner, ("a", "b"), lambda: {"a": lambda: None, "b": lambda: None})

    assert calibration.choose(KEY, ("a", "b"), lambda: {"a": outer_run, "b": outer_run}) == "b"
    assert calibration.choices[inner].kernel == "b"
