"""The two core additions that imported models need: a decoder start token of their own, and
sinusoidal positions laid out in two halves."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from conftest import SPECIALS, random_ids, tiny_config

from triform.checkpoint import load_model, save_model
from triform.errors import TriformError
from triform.models import build_model
from triform.nn.position import SinusoidalPositions
from triform.objectives import make_objective
from triform.vocab import SpecialTokens


def test_halves_hold_the_same_sines_and_cosines_as_the_paper_layout():
    for d_model in (8, 7):
        interleaved = SinusoidalPositions(d_model, 50).table
        halves = SinusoidalPositions(d_model, 50, halves=True).table
        order = list(range(0, d_model, 2)) + list(range(1, d_model, 2))
        torch.testing.assert_close(halves, interleaved[:, order], atol=0, rtol=0)
        assert torch.all(halves[0, : (d_model + 1) // 2] == 0) and torch.all(halves[0, (d_model + 1) // 2 :] == 1)


def test_halves_are_a_position_choice_of_the_config():
    model = build_model(tiny_config("encoder-decoder", position="sinusoidal-halves"))
    assert torch.equal(model.encoder.embeddings.position.table, SinusoidalPositions(32, 64, halves=True).table)
    ids = random_ids(2, 5)
    assert model(ids, ids).shape == (2, 5, 100)


def t5_like_specials() -> SpecialTokens:
    """T5 has no [BOS]: its decoder starts from the padding token."""
    return dataclasses.replace(SPECIALS, bos=None, decoder_start=SPECIALS.pad)


def test_the_decoder_starts_from_the_decoder_start_token():
    objective = make_objective("seq2seq", t5_like_specials(), 100, arch="encoder-decoder")
    batch = objective.prepare([([30, 31], [40, 41, 42]), ([50], [60])])
    assert batch.ids[:, 0].tolist() == [SPECIALS.pad, SPECIALS.pad]
    assert batch.ids[0].tolist() == [SPECIALS.pad, 40, 41, 42]
    assert batch.padding_mask[1].tolist() == [True, True, False, False]  # the start token is not padding
    assert batch.targets[0].tolist() == [40, 41, 42, SPECIALS.eos]
    span = make_objective("span", t5_like_specials(), 100, arch="encoder-decoder")
    assert span.prepare([list(range(30, 50))], torch.Generator().manual_seed(0)).ids[0, 0] == SPECIALS.pad


def test_without_a_decoder_start_the_decoder_starts_from_bos():
    batch = make_objective("seq2seq", SPECIALS, 100, arch="encoder-decoder").prepare([([30], [40])])
    assert batch.ids[0].tolist() == [SPECIALS.bos, 40]


def test_layouts_that_need_bos_still_refuse_a_vocabulary_without_one():
    with pytest.raises(TriformError, match="the clm objective needs a bos token"):
        make_objective("clm", t5_like_specials(), 100)


def test_decoder_start_is_saved_with_the_model(tmp_path):
    specials = t5_like_specials()
    assert SpecialTokens.from_dict(specials.to_dict()) == specials
    assert "decoder_start" not in SPECIALS.to_dict()  # folders written before it existed read the same
    save_model(build_model(tiny_config("encoder-decoder")), tmp_path / "m", specials=specials)
    assert load_model(tmp_path / "m").specials.decoder_start_id == SPECIALS.pad
