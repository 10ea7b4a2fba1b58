"""What each attention pattern lets through, checked on the logits of real models."""

import pytest
import torch
from conftest import VARIANTS, random_ids, tiny_config

from triform.models import build_model

ATOL = 1e-5


def stack_model(variant):
    return build_model(tiny_config(**VARIANTS[variant])).eval()


@pytest.mark.parametrize("variant", VARIANTS)
def test_causal_future_tokens_never_change_past_logits(variant):
    model = stack_model(variant)
    ids = random_ids(2, 12)
    changed = ids.clone()
    changed[:, 7:] = random_ids(2, 5, generator_seed=1)
    before, after = model(ids, "causal"), model(changed, "causal")
    torch.testing.assert_close(before[:, :7], after[:, :7], atol=ATOL, rtol=0)
    assert not torch.allclose(before[:, 7], after[:, 7], atol=1e-3)  # the change is visible where allowed


@pytest.mark.parametrize("variant", VARIANTS)
def test_bidirectional_sees_the_future(variant):
    model = stack_model(variant)
    ids = random_ids(1, 10)
    changed = ids.clone()
    changed[0, -1] = (ids[0, -1] + 1 - 27) % 73 + 27
    assert not torch.allclose(model(ids, "bidirectional")[0, 0], model(changed, "bidirectional")[0, 0], atol=1e-4)


@pytest.mark.parametrize("variant", VARIANTS)
def test_prefix_is_bidirectional_exactly_inside_the_prefix(variant):
    model = stack_model(variant)
    prefix = torch.tensor([5])
    ids = random_ids(1, 10)

    def logits(x):
        return model(x, "prefix", prefix_lengths=prefix)[0]

    inside = ids.clone()
    inside[0, 4] = (ids[0, 4] + 1 - 27) % 73 + 27  # the last prefix token
    assert not torch.allclose(logits(ids)[0], logits(inside)[0], atol=1e-4)  # seen by the first token

    after = ids.clone()
    after[0, 6:] = random_ids(1, 4, generator_seed=2)
    torch.testing.assert_close(logits(ids)[:6], logits(after)[:6], atol=ATOL, rtol=0)
    assert not torch.allclose(logits(ids)[6], logits(after)[6], atol=1e-3)


@pytest.mark.parametrize("variant", VARIANTS)
def test_right_to_left_past_tokens_never_change_later_logits(variant):
    """The mirror of causal (UniLM's right-to-left LM): a token sees itself and what follows it."""
    model = stack_model(variant)
    ids = random_ids(2, 12)
    changed = ids.clone()
    changed[:, :5] = random_ids(2, 5, generator_seed=1)
    before, after = model(ids, "right-to-left"), model(changed, "right-to-left")
    torch.testing.assert_close(before[:, 5:], after[:, 5:], atol=ATOL, rtol=0)
    assert not torch.allclose(before[:, 4], after[:, 4], atol=1e-3)  # the change is visible where allowed
    last = ids.clone()
    last[:, -1] = other_tokens(ids[:, -1:], seed=2)[:, 0]
    assert not torch.allclose(model(ids, "right-to-left")[:, 0], model(last, "right-to-left")[:, 0], atol=1e-4)


@pytest.mark.parametrize("pattern", ["bidirectional", "causal", "prefix", "right-to-left"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_right_padding_never_changes_real_logits(variant, pattern):
    model = stack_model(variant)
    short, long = random_ids(1, 7), random_ids(1, 11, generator_seed=3)
    batch = torch.cat([torch.cat([short, torch.zeros(1, 4, dtype=torch.long)], 1), long])
    padding = torch.ones(2, 11, dtype=torch.bool)
    padding[0, 7:] = False
    prefix = torch.tensor([3, 3]) if pattern == "prefix" else None
    alone = model(short, pattern, prefix_lengths=None if prefix is None else prefix[:1])
    batched = model(batch, pattern, padding_mask=padding, prefix_lengths=prefix)
    torch.testing.assert_close(batched[0, :7], alone[0], atol=ATOL, rtol=0)


@pytest.mark.parametrize("variant", VARIANTS)
def test_left_padding_never_changes_real_logits(variant):
    model = stack_model(variant)
    short = random_ids(1, 6)
    batch = torch.cat([torch.zeros(1, 5, dtype=torch.long), short], 1)
    padding = torch.tensor([[False] * 5 + [True] * 6])
    torch.testing.assert_close(
        model(batch, "causal", padding_mask=padding)[0, 5:], model(short, "causal")[0], atol=ATOL, rtol=0
    )


@pytest.mark.parametrize("variant", VARIANTS)
def test_encoder_decoder_padding_never_changes_real_logits(variant):
    model = build_model(tiny_config("encoder-decoder", **VARIANTS[variant])).eval()
    source, target = random_ids(1, 6), random_ids(1, 5, generator_seed=4)
    sources = torch.cat([torch.cat([source, torch.zeros(1, 3, dtype=torch.long)], 1), random_ids(1, 9, 5)])
    targets = torch.cat([torch.cat([target, torch.zeros(1, 2, dtype=torch.long)], 1), random_ids(1, 7, 6)])
    source_padding = torch.ones(2, 9, dtype=torch.bool)
    source_padding[0, 6:] = False
    target_padding = torch.ones(2, 7, dtype=torch.bool)
    target_padding[0, 5:] = False
    batched = model(sources, targets, source_padding_mask=source_padding, padding_mask=target_padding)
    torch.testing.assert_close(batched[0, :5], model(source, target)[0], atol=ATOL, rtol=0)


def test_encoder_decoder_decoder_is_causal_and_reads_the_whole_source():
    model = build_model(tiny_config("encoder-decoder")).eval()
    source, target = random_ids(1, 6), random_ids(1, 6, generator_seed=7)
    changed_target = target.clone()
    changed_target[0, 4:] = random_ids(1, 2, generator_seed=8)
    torch.testing.assert_close(model(source, target)[0, :4], model(source, changed_target)[0, :4], atol=ATOL, rtol=0)
    changed_source = source.clone()
    changed_source[0, -1] = (source[0, -1] + 1 - 27) % 73 + 27
    assert not torch.allclose(model(source, target)[0, 0], model(changed_source, target)[0, 0], atol=1e-4)


def test_sparse_logits_equal_the_dense_ones_at_the_same_positions():
    model = stack_model("bert-parts")
    ids = random_ids(2, 9)
    at = torch.zeros(2, 9, dtype=torch.bool)
    at[0, 3] = at[1, 0] = at[1, 8] = True
    dense = model(ids, "bidirectional")
    torch.testing.assert_close(model(ids, "bidirectional", logits_at=at), dense[at], atol=ATOL, rtol=0)


def test_token_types_change_the_output():
    model = stack_model("bert-parts")
    ids = random_ids(1, 6)
    types = torch.tensor([[0, 0, 0, 1, 1, 1]])
    assert not torch.allclose(model(ids, "bidirectional"), model(ids, "bidirectional", token_types=types))


def test_positions_beyond_max_len_are_a_clear_error():
    model = stack_model("learned-pre-layernorm")
    with pytest.raises(ValueError, match="max_len 64"):
        model(random_ids(1, 65), "causal")


def other_tokens(ids: torch.Tensor, seed: int) -> torch.Tensor:
    """Different ordinary tokens at every slot of `ids`."""
    offsets = torch.randint(1, 73, ids.shape, generator=torch.Generator().manual_seed(seed))
    return (ids - 27 + offsets) % 73 + 27


@pytest.mark.parametrize("pattern", ["bidirectional", "causal", "prefix", "right-to-left"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_packed_documents_never_see_one_another(variant, pattern):
    """The document variant of each pattern: whatever one document holds, the other's logits stay."""
    model = stack_model(variant)
    ids, documents = random_ids(1, 12), torch.tensor([[0] * 5 + [1] * 7])
    prefix = torch.tensor([[3, 4]]) if pattern == "prefix" else None

    def logits(x):
        return model(x, pattern, documents=documents, prefix_lengths=prefix)[0]

    for first, second in ((slice(0, 5), slice(5, 12)), (slice(5, 12), slice(0, 5))):
        changed = ids.clone()
        changed[0, first] = other_tokens(ids[0, first], seed=9)
        torch.testing.assert_close(logits(changed)[second], logits(ids)[second], atol=ATOL, rtol=0)
        assert not torch.allclose(logits(changed)[first][-1], logits(ids)[first][-1], atol=1e-4)
        assert not torch.allclose(logits(changed)[first][0], logits(ids)[first][0], atol=1e-4)


@pytest.mark.parametrize("variant", VARIANTS)
def test_causal_within_a_document_the_future_never_changes_the_past(variant):
    model = stack_model(variant)
    ids, documents = random_ids(1, 12), torch.tensor([[0] * 4 + [1] * 8])
    changed = ids.clone()
    changed[0, 8:] = other_tokens(ids[0, 8:], seed=10)
    before, after = model(ids, "causal", documents=documents), model(changed, "causal", documents=documents)
    torch.testing.assert_close(before[0, :8], after[0, :8], atol=ATOL, rtol=0)
    assert not torch.allclose(before[0, 8], after[0, 8], atol=1e-3)


@pytest.mark.parametrize("variant", VARIANTS)
def test_right_to_left_within_a_document_the_past_never_changes_the_future(variant):
    model = stack_model(variant)
    ids, documents = random_ids(1, 12), torch.tensor([[0] * 4 + [1] * 8])
    changed = ids.clone()
    changed[0, 4:7] = other_tokens(ids[0, 4:7], seed=14)  # the start of document 1
    before = model(ids, "right-to-left", documents=documents)
    after = model(changed, "right-to-left", documents=documents)
    torch.testing.assert_close(before[0, 7:], after[0, 7:], atol=ATOL, rtol=0)
    torch.testing.assert_close(before[0, :4], after[0, :4], atol=ATOL, rtol=0)  # document 0 never sees it
    assert not torch.allclose(before[0, 6], after[0, 6], atol=1e-3)


@pytest.mark.parametrize("variant", VARIANTS)
def test_a_packed_prefix_is_bidirectional_exactly_inside_its_documents_prefix(variant):
    model = stack_model(variant)
    ids, documents, prefix = random_ids(1, 11), torch.tensor([[0] * 4 + [1] * 7]), torch.tensor([[2, 3]])

    def logits(x):
        return model(x, "prefix", documents=documents, prefix_lengths=prefix)[0]

    inside = ids.clone()
    inside[0, 6] = other_tokens(ids[0, 6:7], seed=11)[0]  # the last prefix token of document 1
    assert not torch.allclose(logits(ids)[4], logits(inside)[4], atol=1e-4)  # seen by its first token
    after = ids.clone()
    after[0, 8:] = other_tokens(ids[0, 8:], seed=12)  # past document 1's prefix (slots 4-6) and slot 7
    torch.testing.assert_close(logits(ids)[:8], logits(after)[:8], atol=ATOL, rtol=0)


@pytest.mark.parametrize("variant", VARIANTS)
def test_a_packed_target_reads_only_its_own_documents_source(variant):
    model = build_model(tiny_config("encoder-decoder", **VARIANTS[variant])).eval()
    source, target = random_ids(1, 9), random_ids(1, 8, generator_seed=4)
    source_documents, documents = torch.tensor([[0] * 4 + [1] * 5]), torch.tensor([[0] * 3 + [1] * 5])

    def logits(s):
        return model(s, target, source_documents=source_documents, documents=documents)[0]

    changed = source.clone()
    changed[0, :4] = other_tokens(source[0, :4], seed=13)
    torch.testing.assert_close(logits(changed)[3:], logits(source)[3:], atol=ATOL, rtol=0)
    assert not torch.allclose(logits(changed)[0], logits(source)[0], atol=1e-4)
