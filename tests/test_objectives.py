"""Objectives transform token ids as their papers say, within statistical bounds where random."""

from collections import Counter

import pytest
import torch
from conftest import FIRST_WORD, SPECIALS, VOCAB_SIZE

from triform.objectives import IGNORE, make_objective
from triform.objectives.span import uncorrupt

VOCAB = 1000


def texts(n, length, seed=0, low=FIRST_WORD, high=VOCAB):
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(low, high, (n, length), generator=generator).tolist()


def generator(seed=0):
    return torch.Generator().manual_seed(seed)


def binomial_bound(p, n, sigmas=4.5):
    return sigmas * (p * (1 - p) / n) ** 0.5


class TestMaskedLM:
    def corrupt_many(self, n=400, length=100, **options):
        objective = make_objective("mlm", SPECIALS, VOCAB, **options)
        originals = texts(n, length)
        batch = objective.prepare(originals, generator())
        return originals, batch

    def test_masks_fifteen_percent_of_each_text(self):
        _, batch = self.corrupt_many()
        assert ((batch.targets != IGNORE).sum(dim=1) == 15).all()

    def test_eighty_ten_ten(self):
        originals, batch = self.corrupt_many()
        original = torch.tensor(originals)
        chosen = batch.targets[:, 1:-1] != IGNORE  # drop [CLS] and [SEP]
        inputs = batch.ids[:, 1:-1][chosen]
        n = int(chosen.sum())
        masked = (inputs == SPECIALS.mask).float().mean().item()
        kept = (inputs == original[chosen]).float().mean().item()
        random = 1 - masked - kept
        assert abs(masked - 0.8) < binomial_bound(0.8, n)
        assert abs(kept - 0.1) < binomial_bound(0.1, n)
        assert abs(random - 0.1) < binomial_bound(0.1, n)
        assert (batch.targets[:, 1:-1][chosen] == original[chosen]).all()

    def test_random_replacements_are_never_special(self):
        originals, batch = self.corrupt_many(random_fraction=1.0, mask_fraction=0.0)
        replaced = batch.ids[batch.targets != IGNORE]
        assert not any(int(t) in SPECIALS.all_ids for t in replaced)

    def test_chosen_positions_are_uniform(self):
        _, batch = self.corrupt_many(n=2000, length=20)
        per_position = (batch.targets[:, 1:-1] != IGNORE).float().mean(0)
        assert torch.all((per_position - 0.15).abs() < binomial_bound(0.15, 2000))

    def test_special_tokens_are_never_chosen(self):
        objective = make_objective("mlm", SPECIALS, VOCAB)
        text = [SPECIALS.sep if i % 2 else FIRST_WORD + i for i in range(40)]
        batch = objective.prepare([text] * 50, generator())
        chosen_inputs = torch.tensor([text] * 50)[(batch.targets[:, 1:-1] != IGNORE)]
        assert (chosen_inputs != SPECIALS.sep).all()

    def test_whole_word_masking_takes_whole_words(self):
        objective = make_objective("mlm", SPECIALS, VOCAB, whole_word=True)
        text = texts(1, 60)[0]
        starts = [i % 3 == 0 for i in range(60)]  # words of three tokens
        for seed in range(20):
            chosen = objective.prepare([text], generator(seed), word_starts=[starts]).targets[0, 1:-1] != IGNORE
            words = chosen.view(20, 3)
            assert (words.all(1) | ~words.any(1)).all()
            assert int(chosen.sum()) == 9

    def test_same_seed_same_masks(self):
        objective = make_objective("mlm", SPECIALS, VOCAB)
        a, b = (objective.prepare(texts(4, 30), generator(7)) for _ in range(2))
        assert torch.equal(a.ids, b.ids) and torch.equal(a.targets, b.targets)

    def test_logits_are_computed_only_at_masked_positions(self):
        _, batch = self.corrupt_many(n=2, length=40)
        assert batch.sparse_logits and batch.model_inputs()["logits_at"].sum() == 12


class TestSpanCorruption:
    @pytest.mark.parametrize("length", [2, 3, 7, 20, 64, 128])
    def test_round_trip(self, length):
        objective = make_objective("span", SPECIALS, VOCAB, arch="encoder-decoder")
        for seed, text in enumerate(texts(30, length)):
            source, target = objective.corrupt(text, generator(seed))
            assert uncorrupt(source, target, SPECIALS.sentinels) == text
            assert source[0] == text[0]  # T5 never starts a span at the first token

    def test_noise_density_and_mean_span_length(self):
        objective = make_objective("span", SPECIALS, VOCAB, arch="encoder-decoder")
        noise, spans = 0, 0
        for seed, text in enumerate(texts(200, 100)):
            source, target = objective.corrupt(text, generator(seed))
            n_spans = sum(t in SPECIALS.sentinels for t in source)
            assert len(target) - n_spans == 15  # round(100 * 0.15) hidden tokens
            noise += len(target) - n_spans
            spans += n_spans
        assert noise / spans == pytest.approx(3.0, abs=0.1)

    def test_encoder_decoder_layout(self):
        objective = make_objective("span", SPECIALS, VOCAB, arch="encoder-decoder")
        batch = objective.prepare([list(range(30, 50))], generator())
        assert batch.source_ids[0, -1] == SPECIALS.eos and batch.ids[0, 0] == SPECIALS.bos
        assert torch.equal(batch.ids[0, 1:], batch.targets[0, :-1]) and batch.targets[0, -1] == SPECIALS.eos

    def test_too_few_sentinels_is_a_clear_error(self):
        objective = make_objective("span", SPECIALS, VOCAB, arch="encoder-decoder", mean_span_length=1)
        with pytest.raises(ValueError, match="sentinel tokens; the tokenizer has 20"):
            objective.corrupt(texts(1, 400)[0], generator())


def split_sentences(tokens):
    sentences, current = [], []
    for token in tokens:
        current.append(token)
        if token == FIRST_WORD:
            sentences.append(tuple(current))
            current = []
    return sorted(sentences + ([tuple(current)] if current else []))


class TestDenoise:
    ENDS = (FIRST_WORD,)  # pretend the first word is a full stop

    def sentences(self, seed):
        generator_ = torch.Generator().manual_seed(seed)
        text = []
        for _ in range(6):
            n = int(torch.randint(2, 8, (1,), generator=generator_))
            text += torch.randint(FIRST_WORD + 1, VOCAB, (n,), generator=generator_).tolist() + [FIRST_WORD]
        return text

    def test_permutation_keeps_the_multiset_and_the_sentences(self):
        objective = make_objective(
            "denoise", SPECIALS, VOCAB, arch="encoder-decoder", mask_ratio=0.0, sentence_end_ids=self.ENDS
        )
        moved = 0
        for seed in range(30):
            text = self.sentences(seed)
            source = objective.corrupt(text, generator(seed))
            assert Counter(source) == Counter(text)
            assert split_sentences(source) == split_sentences(text)
            moved += source != text
        assert moved > 20

    def test_infilling_hides_thirty_percent_in_poisson_spans(self):
        objective = make_objective("denoise", SPECIALS, VOCAB, arch="encoder-decoder", permute_sentences=False)
        hidden, masks = 0, 0
        for seed, text in enumerate(texts(300, 100)):
            source = objective.corrupt(text, generator(seed))
            kept = [t for t in source if t != SPECIALS.mask]
            iterator = iter(text)
            assert all(token in iterator for token in kept)  # kept tokens stay in order
            assert len(text) - len(kept) == 30
            hidden += len(text) - len(kept)
            masks += source.count(SPECIALS.mask)
        assert 2.5 < hidden / masks < 3.5  # Poisson(3) spans, a few truncated by the budget

    def test_target_is_the_original_text(self):
        objective = make_objective("denoise", SPECIALS, VOCAB, sentence_end_ids=self.ENDS)
        text = self.sentences(0)
        batch = objective.prepare([text], generator())
        predicted = batch.targets[0][batch.targets[0] != IGNORE].tolist()
        assert predicted == text + [SPECIALS.eos]


def test_clm_predicts_the_next_token():
    objective = make_objective("clm", SPECIALS, VOCAB_SIZE)
    batch = objective.prepare([[30, 31, 32], [40, 41]])
    assert batch.ids.tolist() == [[2, 30, 31, 32], [2, 40, 41, 0]]
    assert batch.targets.tolist() == [[30, 31, 32, 3], [40, 41, 3, IGNORE]]
    assert batch.padding_mask.tolist() == [[True] * 4, [True, True, True, False]]


def test_packed_clm_uses_windows_as_they_are():
    objective = make_objective("clm", SPECIALS, VOCAB_SIZE, packed=True)
    batch = objective.prepare(torch.tensor([[30, 31, 3, 40]]))
    assert batch.ids.tolist() == [[30, 31, 3]] and batch.targets.tolist() == [[31, 3, 40]]
    assert batch.padding_mask is None


def test_seq2seq_on_a_stack_predicts_only_the_target_after_the_separator():
    objective = make_objective("seq2seq", SPECIALS, VOCAB_SIZE, arch="stack")
    batch = objective.prepare([([30, 31], [50, 51, 52])])
    assert batch.ids.tolist() == [[30, 31, SPECIALS.sep, 50, 51, 52]]
    assert batch.targets.tolist() == [[IGNORE, IGNORE, 50, 51, 52, SPECIALS.eos]]
    assert batch.prefix_lengths.tolist() == [3] and batch.pattern == "prefix"


def test_prefix_lm_splits_inside_the_text():
    objective = make_objective("prefix-lm", SPECIALS, VOCAB_SIZE, arch="encoder-decoder")
    for seed in range(20):
        batch = objective.prepare([list(range(30, 40))], generator(seed))
        source = batch.source_ids[0, :-1].tolist()
        target = batch.targets[0, :-1].tolist()
        assert source + target == list(range(30, 40)) and source and target


def test_label_smoothing_spreads_probability():
    objective = make_objective("seq2seq", SPECIALS, VOCAB_SIZE, arch="encoder-decoder", label_smoothing=0.1)
    plain = make_objective("seq2seq", SPECIALS, VOCAB_SIZE, arch="encoder-decoder")
    batch = objective.prepare([([30], [31])])
    confident = torch.full((1, 2, VOCAB_SIZE), -20.0)
    confident[0, 0, 31] = confident[0, 1, SPECIALS.eos] = 20.0
    assert plain.loss(confident, batch) < 1e-6 < objective.loss(confident, batch)
