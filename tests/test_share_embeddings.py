"""model.share_embeddings = false: an encoder-decoder with a token table for each side, end to end."""

import pytest
import torch
from conftest import SPECIALS, random_ids, tiny_config
from training_helpers import train_args, write_parallel

from triform.checkpoint import Pretrained, load_model, save_model
from triform.cli import main
from triform.convert import ConversionError, export_hf
from triform.models import build_model
from triform.models.presets import get_preset
from triform.objectives import make_objective


def tables(model):
    return model.encoder.embeddings.token.weight, model.decoder.embeddings.token.weight


@pytest.mark.parametrize("share", [True, False])
def test_one_table_or_two_and_the_output_tied_to_the_decoders(share):
    model = build_model(tiny_config("encoder-decoder", share_embeddings=share, tie_embeddings=True))
    encoder, decoder = tables(model)
    assert (encoder is decoder) == share and model.head.projection.weight is decoder
    assert share or not torch.equal(encoder, decoder)  # initialised apart
    n_tables = sum(1 for p in model.parameters() if p.shape == encoder.shape)
    assert n_tables == (1 if share else 2)


def test_separate_tables_train_and_round_trip_through_a_model_folder(tmp_path):
    torch.manual_seed(0)
    model = build_model(tiny_config("encoder-decoder", share_embeddings=False))
    objective = make_objective("seq2seq", SPECIALS, vocab_size=100, arch="encoder-decoder")
    source, target = random_ids(4, 9).tolist(), random_ids(4, 7, generator_seed=1).tolist()
    batch = objective.prepare(list(zip(source, target)), generator=torch.Generator().manual_seed(0))
    before = [t.detach().clone() for t in tables(model)]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    loss = objective.loss(model(**batch.model_inputs()), batch)
    loss.backward()
    assert all(t.grad is not None and t.grad.abs().sum() > 0 for t in tables(model))  # each side learns its own
    optimizer.step()
    assert all(not torch.equal(b, t) for b, t in zip(before, tables(model)))
    with torch.no_grad():
        assert float(objective.loss(model(**batch.model_inputs()), batch)) < loss.item()

    save_model(model.eval(), tmp_path / "m", specials=SPECIALS)
    loaded = load_model(tmp_path / "m").model
    assert not loaded.config.share_embeddings
    assert all(torch.equal(a, b) for a, b in zip(tables(loaded), tables(model)))
    assert loaded.head.projection.weight is tables(loaded)[1]  # still tied, to the decoder's table
    torch.testing.assert_close(loaded(**batch.model_inputs()), model(**batch.model_inputs()), atol=0, rtol=0)


def test_the_command_line_trains_with_separate_tables(tmp_path):
    pairs = write_parallel(tmp_path / "pairs.tsv", 40)
    spec = ("--preset", "tiny-vaswani", "--model.share_embeddings", "false", "--model.max_len", "128")
    argv = train_args(tmp_path / "run", pairs, None, 2, *spec)
    assert main(argv) == 0
    loaded = load_model(tmp_path / "run" / "model")
    encoder, decoder = tables(loaded.model)
    assert not loaded.config.share_embeddings and encoder is not decoder and not torch.equal(encoder, decoder)


def test_hugging_face_export_refuses_separate_tables_by_name(tmp_path):
    config = get_preset("tiny-bart").model.replace(vocab_size=100, share_embeddings=False)
    pretrained = Pretrained(build_model(config), config, SPECIALS)
    with pytest.raises(ConversionError, match=r"model.share_embeddings = False \(Hugging Face bart needs True\)"):
        export_hf(pretrained, tmp_path / "hf", model_type="bart")
    assert not (tmp_path / "hf").exists()
