"""Documents packed in one row: each is attended and placed as if it stood alone (nn/masks.py).

The claim is exact: a packed row's logits at each document's slots equal that document's logits
computed alone, for every architecture, pattern and kind of position, in fp32.
"""

import pytest
import torch
from conftest import VARIANTS, random_ids, tiny_config

from triform.models import build_model
from triform.nn.masks import document_positions, in_prefix, visibility

ATOL = 2e-5
LENGTHS = [(5, 1, 7, 3), (2, 9, 4)]  # two rows of packed documents, one of them a single token
PREFIXES = [(2, 1, 7, 1), (1, 4, 3)]  # per document, for the prefix pattern


def packed_rows(lengths, seed=0):
    """(ids (B, T), documents (B, T), padding_mask (B, T) or None, the documents' ids one by one).

    Padding slots carry the row's last document, as the objectives' layouts give them."""
    width = max(sum(row) for row in lengths)
    ids = torch.zeros(len(lengths), width, dtype=torch.long)
    documents = torch.zeros(len(lengths), width, dtype=torch.long)
    padding = torch.zeros(len(lengths), width, dtype=torch.bool)
    alone = []
    for row, row_lengths in enumerate(lengths):
        start = 0
        for number, length in enumerate(row_lengths):
            text = random_ids(1, length, generator_seed=seed + 10 * row + number)
            ids[row, start : start + length] = text[0]
            documents[row, start:] = number
            padding[row, start : start + length] = True
            alone.append((row, start, text))
            start += length
    return ids, documents, None if bool(padding.all()) else padding, alone


def prefixes(lengths, values):
    return torch.tensor([list(v) + [0] * (max(map(len, lengths)) - len(v)) for v in values])


@pytest.mark.parametrize("pattern", ["bidirectional", "causal", "prefix", "right-to-left"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_a_packed_row_gives_each_documents_logits_alone(variant, pattern):
    model = build_model(tiny_config(**VARIANTS[variant])).eval()
    ids, documents, padding, alone = packed_rows(LENGTHS)
    prefix = prefixes(LENGTHS, PREFIXES) if pattern == "prefix" else None
    packed = model(ids, pattern, padding_mask=padding, documents=documents, prefix_lengths=prefix)
    for row, start, text in alone:
        own_prefix = None
        if prefix is not None:
            own_prefix = prefix[row, int(documents[row, start])].reshape(1)
        expected = model(text, pattern, prefix_lengths=own_prefix)
        torch.testing.assert_close(packed[row, start : start + text.shape[1]], expected[0], atol=ATOL, rtol=0)


@pytest.mark.parametrize("variant", VARIANTS)
def test_a_packed_encoder_decoder_row_gives_each_pairs_logits_alone(variant):
    model = build_model(tiny_config("encoder-decoder", **VARIANTS[variant])).eval()
    source_lengths, target_lengths = [(4, 6, 2), (7, 3)], [(3, 1, 5), (2, 6)]
    sources, source_documents, source_padding, source_alone = packed_rows(source_lengths, seed=0)
    targets, documents, padding, target_alone = packed_rows(target_lengths, seed=50)
    packed = model(
        sources,
        targets,
        source_padding_mask=source_padding,
        padding_mask=padding,
        source_documents=source_documents,
        documents=documents,
    )
    for (_, _, source), (row, start, target) in zip(source_alone, target_alone):
        expected = model(source, target)[0]
        torch.testing.assert_close(packed[row, start : start + target.shape[1]], expected, atol=ATOL, rtol=0)


def test_without_documents_the_boundary_leaks():
    """The reason for the document variant: with [EOS]-separated packing alone, the second document's
    logits depend on the first."""
    model = build_model(tiny_config(**VARIANTS["learned-pre-layernorm"])).eval()
    ids, documents, _, alone = packed_rows([(5, 6)])
    row, start, text = alone[1]
    expected = model(text, "causal")[0]
    stream = model(ids, "causal")[0, start:]
    assert not torch.allclose(stream, expected, atol=1e-3)
    torch.testing.assert_close(model(ids, "causal", documents=documents)[0, start:], expected, atol=ATOL, rtol=0)


def test_document_positions_restart_at_each_document_and_skip_padding():
    documents = torch.tensor([[0, 0, 0, 1, 1, 2, 2, 2], [0, 1, 1, 1, 1, 1, 1, 1]])
    padding = torch.tensor([[True] * 8, [True] * 4 + [False] * 4])
    assert document_positions(documents, padding).tolist() == [[0, 1, 2, 0, 1, 0, 1, 2], [0, 0, 1, 2, 2, 2, 2, 2]]


def test_document_variant_of_each_pattern_as_a_matrix():
    documents = torch.tensor([[0, 0, 0, 1, 1]])
    causal = visibility("causal", 5, 5, documents=documents)[0, 0].int().tolist()
    assert causal == [[1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0], [0, 0, 0, 1, 0], [0, 0, 0, 1, 1]]
    both = visibility("bidirectional", 5, 5, documents=documents)[0, 0].int().tolist()
    assert both == [[1, 1, 1, 0, 0]] * 3 + [[0, 0, 0, 1, 1]] * 2
    prefix = visibility("prefix", 5, 5, documents=documents, prefix_lengths=torch.tensor([[2, 1]]))[0, 0]
    assert prefix.int().tolist() == [
        [1, 1, 0, 0, 0],
        [1, 1, 0, 0, 0],
        [1, 1, 1, 0, 0],
        [0, 0, 0, 1, 0],
        [0, 0, 0, 1, 1],
    ]
    assert in_prefix(documents, torch.tensor([[2, 1]])).tolist() == [[True, True, False, True, False]]
    right_to_left = visibility("right-to-left", 5, 5, documents=documents)[0, 0].int().tolist()
    assert right_to_left == [[1, 1, 1, 0, 0], [0, 1, 1, 0, 0], [0, 0, 1, 0, 0], [0, 0, 0, 1, 1], [0, 0, 0, 0, 1]]


def test_prefix_lengths_must_match_the_rows_layout():
    with pytest.raises(ValueError, match="one per document"):
        visibility("prefix", 3, 3, documents=torch.zeros(1, 3, dtype=torch.long), prefix_lengths=torch.tensor([2]))
    with pytest.raises(ValueError, match="documents cover 2 slots"):
        visibility("causal", 3, 3, documents=torch.zeros(1, 2, dtype=torch.long))
