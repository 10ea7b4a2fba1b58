"""`auto` precision for decoding is decided by measurement (generate/precision.py), as kernels are."""

import copy

import pytest
import torch
from conftest import SPECIALS, tiny_config

import triform.generate.precision as precision_module
from triform.generate import GenerationConfig, resolve_layout
from triform.generate.engine import generate_ids, steps
from triform.generate.precision import bf16_twin, decoding_model, decoding_precision
from triform.kernels import native
from triform.kernels.calibrate import Calibration, calibration, set_calibration
from triform.models import build_model
from triform.precision import native_bf16


def measured_here() -> bool:
    """Whether `auto` is decided by measurement on this CPU (native bf16, or triform's bf16 kernel)."""
    return native_bf16(torch.device("cpu")) or native.library() is not None


def faster(winner: str):
    """A timer under which `winner` is the faster precision (and every product kernel ties)."""

    def timer(name, run):
        run()
        return {winner: 1.0}.get(name, 2.0)

    return timer


@pytest.fixture
def calibrated():
    installed = []

    def install(winner: str):
        installed.append(set_calibration(Calibration(timer=faster(winner), read_disk=False)))

    yield install
    if installed:
        set_calibration(installed[0])


@pytest.mark.parametrize("winner", ["fp32", "bf16"])
@pytest.mark.parametrize("arch", ["stack", "encoder-decoder"])
def test_auto_is_the_precision_measured_faster_and_a_given_one_is_kept(calibrated, winner, arch):
    calibrated(winner)
    model = build_model(tiny_config(arch)).eval()
    expected = winner if measured_here() else "auto"  # without either, auto is fp32
    assert decoding_precision(model, "auto", 1) == expected
    assert decoding_precision(model, "bf16", 1) == "bf16" and decoding_precision(model, "fp32", 3) == "fp32"


@pytest.mark.parametrize("kernels", [True, False])
def test_without_native_bf16_auto_is_measured_only_where_triform_s_bf16_kernel_is(calibrated, monkeypatch, kernels):
    if kernels and native.library() is None:
        pytest.skip(f"triform's native kernels are not built here: {native.unavailable()}")
    if not kernels:
        monkeypatch.setattr(native, "library", lambda: None)
    # a CPU without native bf16: `auto` autocasts nothing, `bf16` still means bf16
    monkeypatch.setattr(precision_module, "autocast_dtype", lambda p, d: torch.bfloat16 if p == "bf16" else None)
    calibrated("bf16")
    model = build_model(tiny_config("stack")).eval()
    assert decoding_precision(model, "auto", 1) == ("bf16" if kernels else "auto")


def test_generation_under_auto_decodes_in_the_chosen_precision(calibrated):
    calibrated("fp32")
    model = build_model(tiny_config("stack")).eval()
    layout = resolve_layout("stack", SPECIALS)
    prompts = [[30, 31, 32], [40, 41]]

    def tokens(precision: str) -> list[list[int]]:
        config = GenerationConfig(max_new_tokens=6, min_new_tokens=6, precision=precision)
        return [row.tokens for row in generate_ids(model, layout, prompts, config)]

    assert tokens("auto") == tokens("fp32")
    if measured_here():  # generation asked the table, and the table measured fp32 faster
        decided = {key[-2]: choice.kernel for key, choice in calibration().choices.items() if key[0] == "decoding"}
        assert decided == {2: "fp32"}  # one class: the two prompts' rows


def tokens_of(model, layout, prompts, precision: str, **options) -> list[list[int]]:
    config = GenerationConfig(max_new_tokens=6, min_new_tokens=6, precision=precision, **options)
    return [row.tokens for row in generate_ids(model, layout, prompts, config)]


@pytest.mark.parametrize("arch", ["stack", "encoder-decoder"])
@pytest.mark.parametrize("beams", [1, 3])
def test_bf16_decoding_on_a_cpu_runs_the_weights_in_bf16_and_leaves_the_model_alone(arch, beams):
    model = build_model(tiny_config(arch)).eval()
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    layout = resolve_layout(arch, SPECIALS)
    prompts = [[30, 31, 32], [40, 41]]
    by_hand = copy.deepcopy(model).to(torch.bfloat16)  # what the twin must be: the model cast, no autocast
    expected = tokens_of(by_hand, layout, prompts, "fp32", num_beams=beams)
    assert tokens_of(model, layout, prompts, "bf16", num_beams=beams) == expected
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert all(torch.equal(before[name], tensor) for name, tensor in model.state_dict().items())


def test_streamed_bf16_tokens_are_the_generated_ones():
    model = build_model(tiny_config("stack")).eval()
    layout = resolve_layout("stack", SPECIALS)
    config = GenerationConfig(max_new_tokens=6, min_new_tokens=6, precision="bf16")
    rows, iterator = steps(model, layout, [[30, 31, 32]], config)
    for _ in iterator:
        pass
    assert [row.tokens for row in rows] == tokens_of(model, layout, [[30, 31, 32]], "bf16")


def test_the_bf16_twin_is_made_once_remade_when_a_weight_changes_and_keeps_ties():
    model = build_model(tiny_config("stack", tie_embeddings=True)).eval()
    twin = bf16_twin(model)
    assert bf16_twin(model) is twin  # reused while the weights stand
    assert all(p.dtype == torch.bfloat16 and not p.requires_grad for p in twin.parameters())
    tied = [p for p in model.parameters() if p.shape == (model.config.vocab_size, model.config.d_model)]
    assert len(list(twin.parameters())) == len(list(model.parameters()))  # a tied weight is still one tensor
    with torch.no_grad():
        tied[0].mul_(2.0)  # an in-place change (an optimizer step) counts in the tensor's version
    again = bf16_twin(model)
    assert again is not twin
    assert torch.equal(next(again.parameters()), next(model.parameters()).detach().to(torch.bfloat16))


def test_fp32_precision_and_a_model_in_bf16_already_decode_as_they_are():
    model = build_model(tiny_config("stack")).eval()
    assert decoding_model(model, "fp32", 1) == (model, "fp32")
    native = build_model(tiny_config("stack")).eval().to(torch.bfloat16)
    assert decoding_model(native, "bf16", 1) == (native, "bf16")  # weights in bf16 already


def test_a_probe_that_measures_fp32_faster_drops_its_bf16_twin(calibrated):
    if not measured_here():
        pytest.skip("auto is fp32 without a choice on a CPU without native bf16 or a C compiler")
    calibrated("fp32")
    model = build_model(tiny_config("stack")).eval()
    assert decoding_precision(model, "auto", 1) == "fp32"
    assert model not in precision_module._TWINS
