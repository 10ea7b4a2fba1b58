import pytest
import torch

from triform.nn.masks import positions_from_padding, visibility


def as_lists(mask):
    return mask[0, 0].int().tolist()


def test_causal_is_lower_triangular():
    assert as_lists(visibility("causal", 3, 3)) == [[1, 0, 0], [1, 1, 0], [1, 1, 1]]


def test_bidirectional_without_padding_needs_no_mask():
    assert visibility("bidirectional", 4, 4) is None


def test_prefix_is_bidirectional_inside_and_causal_after():
    mask = visibility("prefix", 4, 4, prefix_lengths=torch.tensor([2]))
    assert as_lists(mask) == [[1, 1, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1]]


def test_prefix_lengths_are_per_example():
    mask = visibility("prefix", 3, 3, prefix_lengths=torch.tensor([0, 3]))
    assert mask[0, 0].int().tolist() == [[1, 0, 0], [1, 1, 0], [1, 1, 1]]
    assert mask[1, 0].all()


def test_padding_hides_padded_keys_from_real_queries():
    padding = torch.tensor([[True, True, False]])
    mask = visibility("bidirectional", 3, 3, padding_mask=padding)
    assert as_lists(mask)[:2] == [[1, 1, 0], [1, 1, 0]]
    assert as_lists(mask)[2][2] == 1  # a padding query sees itself only where it has nothing else


def test_left_padding_under_causal_never_leaves_a_row_empty():
    padding = torch.tensor([[False, False, True, True]])
    mask = visibility("causal", 4, 4, padding_mask=padding)
    assert mask[0, 0].any(dim=-1).all()
    assert as_lists(mask)[2] == [0, 0, 1, 0] and as_lists(mask)[3] == [0, 0, 1, 1]


def test_queries_after_a_cache_are_the_last_slots():
    assert as_lists(visibility("causal", 2, 5)) == [[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]]


def test_prefix_pattern_without_lengths_is_an_error():
    with pytest.raises(ValueError, match="prefix_lengths"):
        visibility("prefix", 2, 2)


def test_positions_count_real_tokens_on_either_side():
    left = torch.tensor([[False, False, True, True, True]])
    assert positions_from_padding(left, 5).tolist() == [[0, 0, 0, 1, 2]]
    assert positions_from_padding(left, 2).tolist() == [[1, 2]]
