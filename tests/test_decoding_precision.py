"""`auto` precision for decoding is decided by measurement (generate/precision.py), as kernels are."""

import pytest
import torch
from conftest import SPECIALS, tiny_config

from triform.generate import GenerationConfig, resolve_layout
from triform.generate.engine import generate_ids
from triform.generate.precision import decoding_precision
from triform.kernels.calibrate import Calibration, calibration, set_calibration
from triform.models import build_model
from triform.precision import native_bf16


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
    expected = winner if native_bf16(torch.device("cpu")) else "auto"  # without native bf16, auto is fp32
    assert decoding_precision(model, "auto", 1) == expected
    assert decoding_precision(model, "bf16", 1) == "bf16" and decoding_precision(model, "fp32", 3) == "fp32"


def test_generation_under_auto_decodes_in_the_chosen_precision(calibrated):
    calibrated("fp32")
    model = build_model(tiny_config("stack")).eval()
    layout = resolve_layout("stack", SPECIALS)
    prompts = [[30, 31, 32], [40, 41]]

    def tokens(precision: str) -> list[list[int]]:
        config = GenerationConfig(max_new_tokens=6, min_new_tokens=6, precision=precision)
        return [row.tokens for row in generate_ids(model, layout, prompts, config)]

    assert tokens("auto") == tokens("fp32")
    if native_bf16(torch.device("cpu")):  # generation asked the table, and the table measured fp32 faster
        decided = {key[-2]: choice.kernel for key, choice in calibration().choices.items() if key[0] == "decoding"}
        assert decided == {2: "fp32"}  # one class: the two prompts' rows
