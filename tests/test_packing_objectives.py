"""What each objective makes of a packed window under `pack documents` and `pack stream`.

Every objective that reads text packs it; each document of a window becomes, in the row, what the
objective makes of a text alone, and the model's logits at its slots are those of that slice alone.
"""

import pytest
import torch
from conftest import FIRST_WORD, SPECIALS, VARIANTS, VOCAB_SIZE, tiny_config

from triform.models import build_model
from triform.objectives import IGNORE, Batch, make_objective
from triform.objectives.compat import allowed_triples
from triform.objectives.layout import source_target_batch
from triform.objectives.span import uncorrupt

ATOL = 2e-5
PACKED = [(a, o, p) for a, o, p in allowed_triples() if o != "seq2seq"]  # seq2seq reads pairs: never packed
DOCUMENTS = [[30, 31, 32, 33, 34, 35, 36], [40, 41, 42], [50, 51, 52, 53, 54, 55]]


def window_of(objective, documents=DOCUMENTS) -> list[int]:
    return objective.packed_window(documents)


def packed_objective(arch, name, pattern, pack="documents"):
    return make_objective(name, SPECIALS, VOCAB_SIZE, arch=arch, pattern=pattern, packed=True, pack=pack)


def slots(documents: torch.Tensor, row: int, number: int) -> torch.Tensor:
    return (documents[row] == number).nonzero()[:, 0]


def alone(model, batch, row: int, number: int):
    """The logits of document `number` of row `row`, computed as a row of its own."""
    at = slots(batch.documents, row, number)
    if batch.padding_mask is not None:
        at = at[batch.padding_mask[row, at]]
    ids = batch.ids[row, at][None]
    if batch.source_ids is not None:
        source_at = slots(batch.source_documents, row, number)
        source_at = (
            source_at[batch.source_padding_mask[row, source_at]] if batch.source_padding_mask is not None else source_at
        )
        return at, model(batch.source_ids[row, source_at][None], ids, batch.pattern)[0]
    types = batch.token_types[row, at][None] if batch.token_types is not None else None
    prefix = batch.prefix_lengths[row, number].reshape(1) if batch.pattern == "prefix" else None
    return at, model(ids, batch.pattern, token_types=types, prefix_lengths=prefix)[0]


@pytest.mark.parametrize("arch, name, pattern", PACKED)
def test_each_document_of_a_packed_row_gives_its_logits_alone(arch, name, pattern):
    variant = "bert-parts" if arch == "stack" else "relative-t5"
    model = build_model(tiny_config(arch, **VARIANTS[variant])).eval()
    objective = packed_objective(arch, name, pattern)
    windows = [window_of(objective), window_of(objective, DOCUMENTS[::-1][:2])]
    batch = objective.prepare(windows, torch.Generator().manual_seed(0))
    assert batch.documents is not None and int(batch.documents[0].max()) + 1 >= len(DOCUMENTS)
    inputs = Batch.model_inputs(batch)  # the model's own inputs (electra's batch holds more, for its generator)
    packed = model(**{k: v for k, v in inputs.items() if k != "logits_at"})
    for row in range(len(windows)):
        for number in range(int(batch.documents[row].max()) + 1):
            at, expected = alone(model, batch, row, number)
            torch.testing.assert_close(packed[row, at], expected, atol=ATOL, rtol=0)


@pytest.mark.parametrize("arch, name, pattern", PACKED)
def test_under_pack_stream_a_window_is_one_text_as_before(arch, name, pattern):
    objective = packed_objective(arch, name, pattern, pack="stream")
    batch = objective.prepare([window_of(objective)], torch.Generator().manual_seed(0))
    assert batch.documents is None and batch.source_documents is None
    assert batch.prefix_lengths is None or batch.prefix_lengths.dim() == 1


@pytest.mark.parametrize("arch, name, pattern", PACKED)
def test_a_window_of_one_document_needs_no_document_mask(arch, name, pattern):
    objective = packed_objective(arch, name, pattern)
    batch = objective.prepare([list(range(30, 45))], torch.Generator().manual_seed(0))
    assert batch.documents is None and batch.source_documents is None


def test_clm_begins_a_document_at_each_eos_as_bos_begins_a_text():
    objective = packed_objective("stack", "clm", "causal")
    batch = objective.prepare([[30, 31, 3, 40, 41, 3, 50]])
    assert batch.ids.tolist() == [[30, 31, 3, 40, 41, 3]] and batch.targets.tolist() == [[31, 3, 40, 41, 3, 50]]
    assert batch.documents.tolist() == [[0, 0, 1, 1, 1, 2]]
    starting = objective.prepare([[3, 30, 31, 3, 40]])  # a window that opens on a boundary
    assert starting.documents.tolist() == [[0, 0, 0, 1]]


def test_mlm_ends_a_document_at_each_separator_and_masks_the_window_as_one_text():
    objective = packed_objective("stack", "mlm", "bidirectional")
    sep = SPECIALS.sep
    window = [*range(30, 50), sep, *range(50, 70), sep, *range(70, 80)]
    batch = objective.prepare([window] * 50, torch.Generator().manual_seed(0))
    assert batch.documents[0].tolist() == [0] * 22 + [1] * 21 + [2] * 11
    chosen = batch.targets != IGNORE
    assert (chosen.sum(-1) == 8).all()  # round(0.15 * 50) of the window's 50 words, separators never
    assert not chosen[batch.ids == sep].any()
    per_document = [int(chosen[batch.documents == d].sum()) / (50 * n) for d, n in enumerate((20, 20, 10))]
    assert all(0.10 < share < 0.20 for share in per_document)  # each document gets its share


def test_mlm_under_the_prefix_pattern_draws_a_prefix_in_each_document():
    objective = packed_objective("stack", "mlm", "prefix")
    batch = objective.prepare([window_of(objective)] * 40, torch.Generator().manual_seed(1))
    lengths = torch.tensor([len(DOCUMENTS[0]) + 2, len(DOCUMENTS[1]) + 1, len(DOCUMENTS[2]) + 1])
    assert batch.prefix_lengths.shape == (40, 3)
    assert ((batch.prefix_lengths >= 1) & (batch.prefix_lengths <= lengths)).all()
    assert len({tuple(p) for p in batch.prefix_lengths.tolist()}) > 10  # drawn per row and document


@pytest.mark.parametrize("arch", ["stack", "encoder-decoder"])
def test_span_corrupts_each_document_as_a_text_of_its_own(arch):
    objective = packed_objective(arch, "span", None)
    batch = objective.prepare([window_of(objective)], torch.Generator().manual_seed(0))
    sentinels = SPECIALS.sentinels
    for number, document in enumerate(DOCUMENTS):
        if arch == "stack":
            at = slots(batch.documents, 0, number)
            ids, targets = batch.ids[0, at].tolist(), batch.targets[0, at].tolist()
            split = ids.index(SPECIALS.sep)
            source, target = ids[:split], [t for t in targets if t != IGNORE][:-1]
            assert batch.prefix_lengths[0, number] == split + 1
        else:
            source = batch.source_ids[0, slots(batch.source_documents, 0, number)].tolist()[:-1]
            target = batch.targets[0, slots(batch.documents, 0, number)].tolist()[:-1]
        assert source[-1] in sentinels and target[0] == sentinels[0]  # sentinels count from the first in each
        assert uncorrupt(source, target, sentinels) == document


def test_denoise_shuffles_sentences_within_a_document_never_across():
    objective = make_objective("denoise", SPECIALS, VOCAB_SIZE, arch="encoder-decoder", packed=True)
    objective.sentence_end_ids = frozenset({99})
    documents = [[30, 31, 99, 32, 33, 99], [40, 41, 99, 42, 99]]
    batch = objective.prepare([window_of(objective, documents)], torch.Generator().manual_seed(0))
    for number, document in enumerate(documents):
        target = batch.targets[0, slots(batch.documents, 0, number)].tolist()[:-1]
        assert target == document
        source = batch.source_ids[0, slots(batch.source_documents, 0, number)].tolist()
        assert set(source) - {SPECIALS.mask, SPECIALS.eos} <= set(document)


def test_prefix_lm_splits_each_document_at_a_point_of_its_own():
    objective = packed_objective("stack", "prefix-lm", "prefix")
    batch = objective.prepare([window_of(objective)] * 30, torch.Generator().manual_seed(0))
    seps = (batch.ids == SPECIALS.sep).sum(-1)
    assert (seps == len(DOCUMENTS)).all()
    assert len({tuple(p) for p in batch.prefix_lengths.tolist()}) > 5


def test_stream_packing_lays_a_window_out_as_one_text():
    objective = packed_objective("encoder-decoder", "span", None, pack="stream")
    window = window_of(objective)
    generator = torch.Generator().manual_seed(0)
    expected = source_target_batch(
        [objective.corrupt(window, torch.Generator().manual_seed(0))], "encoder-decoder", "causal", SPECIALS
    )
    batch = objective.prepare([window], generator)
    assert batch.source_ids.tolist() == expected.source_ids.tolist() and batch.ids.tolist() == expected.ids.tolist()


def test_a_packed_row_may_pass_max_len_but_no_position_does():
    """Short documents each take a span and a separator of their own, so a packed span row can run a
    few tokens past the window's layout; positions restart, so the model reads it all the same."""
    model = build_model(tiny_config(**VARIANTS["learned-pre-layernorm"], max_len=24)).eval()
    objective = packed_objective("stack", "span", "prefix")
    length = objective.windows(24).length
    documents = [[FIRST_WORD + (i % 50)] * 2 for i in range(length // 3 + 1)]
    window = objective.packed_window(documents)[:length]
    batch = objective.prepare([window], torch.Generator().manual_seed(0))
    assert batch.ids.shape[1] > 24
    logits = model(**batch.model_inputs())
    assert torch.isfinite(logits).all()


def test_pack_must_be_known():
    with pytest.raises(ValueError, match="pack: expected one of"):
        make_objective("clm", SPECIALS, VOCAB_SIZE, packed=True, pack="documnets")
