"""Mixtures of objectives (objectives/mixture.py, objectives/ul2.py): what they draw, how often, how
their mode tokens are laid out, and that each UL2 denoiser corrupts as the paper says."""

import math
from dataclasses import replace

import pytest
import torch
from conftest import SPECIALS, VOCAB_SIZE, tiny_config

from triform.errors import IncompatiblePair, TriformError
from triform.models import build_model
from triform.objectives import IGNORE, Recipe, make_objective, read_recipe
from triform.objectives.modes import with_mode_token
from triform.objectives.ul2 import DENOISERS
from triform.vocab import SpecialTokens

MODES = {"nlu": 97, "nlg": 98, "s2s": 99}
WITH_MODES = replace(SPECIALS, modes=tuple(sorted(MODES.items())))
EXAMPLE = {"clm": 0.25, "mlm": 0.25, "span": 0.25, "prefix-lm": 0.25}


def words(batch: int, length: int, seed: int = 0) -> list[list[int]]:
    """Ordinary tokens only (27..96), so that no mode token is mistaken for text."""
    return torch.randint(27, 97, (batch, length), generator=torch.Generator().manual_seed(seed)).tolist()


def spans_of(target: list[int]) -> list[int]:
    """Lengths of the spans a span-corruption target lists, sentinel by sentinel."""
    lengths = []
    for token in target:
        if token >= 1000:
            lengths.append(0)
        elif lengths:
            lengths[-1] += 1
    return lengths


def test_ul2_has_the_papers_seven_denoisers_with_their_mode_tokens():
    configured = [
        (p.objective, p.options.get("mean_span_length"), p.options.get("noise_density"), p.mode) for p in DENOISERS
    ]
    assert configured == [
        ("span", 3.0, 0.15, "nlu"),
        ("span", 8.0, 0.15, "nlu"),
        ("prefix-lm", None, None, "s2s"),
        ("span", 3.0, 0.50, "nlg"),
        ("span", 8.0, 0.50, "nlg"),
        ("span", 64.0, 0.15, "nlg"),
        ("span", 64.0, 0.50, "nlg"),
    ]


@pytest.mark.parametrize("label", [p.label for p in DENOISERS if p.objective == "span"])
def test_each_ul2_span_denoiser_corrupts_its_rate_in_spans_of_its_mean_length(label):
    many = replace(WITH_MODES, sentinels=tuple(range(1000, 1400)))  # 2048 tokens at 50 %, mean 3: 341 spans
    ul2 = make_objective("ul2", many, VOCAB_SIZE, mode_tokens=False)
    part = ul2.by_label[label]
    mean, density = part.options.mean_span_length, part.options.noise_density
    text, generator = words(1, 2048)[0], torch.Generator().manual_seed(1)
    rates, means = [], []
    for _ in range(5):
        source, target = part.objective.corrupt(text, generator)
        lengths = spans_of(target)
        assert sum(lengths) + len(source) - len(lengths) == len(text)  # every token kept or hidden once
        rates.append(sum(lengths) / len(text))
        means.append(sum(lengths) / len(lengths))
        assert min(lengths) >= 1
    # The count of corrupted tokens is round(rate * n), of spans round(that / mean): within rounding.
    assert all(abs(rate - density) <= 1 / len(text) for rate in rates)
    assert all(abs(m - mean) / mean < 0.1 for m in means)


def test_the_s_denoiser_splits_at_a_uniform_point():
    ul2 = make_objective("ul2", WITH_MODES, VOCAB_SIZE)
    s = ul2.by_label["s-prefix"]
    generator, text = torch.Generator().manual_seed(2), words(1, 40)[0]
    fractions = []
    for _ in range(400):
        batch = s.prepare([text], generator)
        fractions.append(int((batch.targets != IGNORE).sum()) / (len(text) + 1))
    mean = sum(fractions) / len(fractions)
    assert abs(mean - 0.5) < 4 * math.sqrt(1 / 12 / len(fractions))  # uniform: mean 1/2, variance 1/12


@pytest.mark.parametrize("name", ["unilm", "example"])
def test_draw_frequencies_are_within_binomial_bounds(name):
    options = {"mix": EXAMPLE} if name == "example" else {}
    mixture = make_objective("mixture" if name == "example" else name, WITH_MODES, VOCAB_SIZE, **options)
    generator, n = torch.Generator().manual_seed(3), 3000
    counts = {part.label: 0 for part in mixture.parts}
    for _ in range(n):
        counts[mixture.draw(generator).label] += 1
    for part, weight in zip(mixture.parts, mixture.weights.tolist()):
        assert abs(counts[part.label] - n * weight) < 4 * math.sqrt(n * weight * (1 - weight)), counts
    if name == "unilm":  # Dong et al. 2019, §2.3: 1/3, 1/3, 1/6, 1/6
        assert mixture.weights.tolist() == pytest.approx([1 / 3, 1 / 3, 1 / 6, 1 / 6])


def test_the_draw_depends_on_the_generator_alone():
    mixture = make_objective("mixture", WITH_MODES, VOCAB_SIZE, mix=EXAMPLE)
    texts = words(2, 20)

    def parts(seed):
        generator = torch.Generator().manual_seed(seed)
        return [mixture.collate(texts, generator).part for _ in range(12)]

    assert parts(5) == parts(5) and len(set(parts(5))) > 1


def test_a_refused_part_is_named():
    refused = r"mixture part 'clm@bidirectional': stack \+ clm \+ bidirectional is refused"
    with pytest.raises(IncompatiblePair, match=refused):
        make_objective("mixture", WITH_MODES, VOCAB_SIZE, mix={"mlm": 1, "clm@bidirectional": 1})
    with pytest.raises(IncompatiblePair, match="unilm part 'bidirectional': encoder-decoder"):
        make_objective("unilm", WITH_MODES, VOCAB_SIZE, arch="encoder-decoder")
    with pytest.raises(TriformError, match="seq2seq reads .source, target. pairs"):
        make_objective("mixture", WITH_MODES, VOCAB_SIZE, mix={"seq2seq": 1})
    with pytest.raises(TriformError, match="unknown objective 'gpt'"):
        make_objective("mixture", WITH_MODES, VOCAB_SIZE, mix={"gpt": 1})


def test_mode_tokens_need_vocabulary_entries_and_old_vocabularies_still_load():
    old = SpecialTokens.from_dict({k: v for k, v in SPECIALS.to_dict().items()})
    assert old.modes == () and SpecialTokens.from_dict(WITH_MODES.to_dict()) == WITH_MODES
    make_objective("ul2", old, VOCAB_SIZE, mode_tokens=False)  # without mode tokens, nothing is needed
    with pytest.raises(TriformError, match=r"needs the mode token \[NLU\], and the tokenizer has none"):
        make_objective("ul2", old, VOCAB_SIZE)


@pytest.mark.parametrize("label", ["clm", "mlm", "span", "prefix-lm"])
def test_the_mode_token_starts_every_document_of_a_packed_row(label):
    mixture = make_objective("mixture", WITH_MODES, VOCAB_SIZE, mix=EXAMPLE, mode_tokens=True, packed=True)
    part = mixture.by_label[label]
    window = mixture.packed_window([words(1, 9, 1)[0], words(1, 6, 2)[0], words(1, 7, 3)[0]])
    batch = part.prepare([window], torch.Generator().manual_seed(0))
    mode = MODES["nlu" if label in ("mlm", "span") else "s2s"]
    documents = batch.documents[0].tolist()
    starts = [i for i in range(len(documents)) if i == 0 or documents[i] != documents[i - 1]]
    assert len(starts) == 3 and all(int(batch.ids[0, i]) == mode for i in starts)
    assert all(int(batch.targets[0, i]) == IGNORE for i in starts)  # a mode token predicts nothing
    assert int((batch.ids == mode).sum()) == 3 and batch.part == label


def test_a_mode_token_joins_its_documents_prefix_and_the_encoders_source():
    prefix_lm = make_objective("prefix-lm", WITH_MODES, VOCAB_SIZE, packed=True)
    batch = prefix_lm.prepare([prefix_lm.packed_window([words(1, 5)[0], words(1, 4, 1)[0]])], torch.Generator())
    moded = with_mode_token(batch, 99, SPECIALS.pad)
    assert (moded.prefix_lengths - batch.prefix_lengths).tolist() == [[1, 1]]
    assert moded.ids.shape[1] == batch.ids.shape[1] + 2 and moded.n_targets == batch.n_targets
    span = make_objective("span", WITH_MODES, VOCAB_SIZE, arch="encoder-decoder")
    batch = span.prepare(words(2, 12), torch.Generator())
    moded = with_mode_token(batch, 97, SPECIALS.pad)
    assert moded.source_ids[:, 0].tolist() == [97, 97] and torch.equal(moded.ids, batch.ids)


def test_a_row_without_room_keeps_its_text_and_leaves_the_later_mode_tokens_out():
    clm = make_objective("clm", WITH_MODES, VOCAB_SIZE, packed=True)
    window = clm.packed_window([words(1, 3, seed)[0] for seed in range(5)])
    batch = clm.prepare([window])
    moded = with_mode_token(batch, 99, SPECIALS.pad, max_len=batch.ids.shape[1] + 2)
    assert moded.ids.shape[1] == batch.ids.shape[1] + 2 and int((moded.ids == 99).sum()) == 2
    assert moded.n_targets == batch.n_targets


def test_windows_leave_room_for_every_part_and_its_mode_tokens():
    mixture = make_objective("ul2", WITH_MODES, VOCAB_SIZE, packed=True)
    windows = mixture.windows(64)
    texts = words(4, windows.length, seed=4)
    for part in mixture.parts:
        assert part.prepare(texts, torch.Generator().manual_seed(1)).ids.shape[1] <= 64


def test_a_mixture_recipe_round_trips_and_answers_for_its_parts():
    options = make_objective("mixture", WITH_MODES, VOCAB_SIZE, mix=EXAMPLE, mode_tokens=True).options
    recipe = Recipe("mixture", None, options)
    again = read_recipe({"recipe": recipe.to_dict()}, "stack")
    assert again == recipe
    assert again.part("stack", need="generate").objective == "clm"  # continues text, [S2S]
    assert again.part("stack", need="fill") == Recipe("mlm", "bidirectional", mode="nlu")
    assert again.part("stack", need="write").objective == "prefix-lm"
    assert again.part("stack", use="span").mode == "nlu"
    assert again.body_pattern("stack", writes=False) == "bidirectional" and again.fills_masks("stack")
    layout = again.prompt_layout("stack", WITH_MODES, use="prefix-lm")
    assert layout.frame([40, 41]) == [99, 40, 41, SPECIALS.sep] and layout.pattern == "prefix"
    assert again.prompt_layout("stack", WITH_MODES).frame([40]) == [99, SPECIALS.bos, 40]
    with pytest.raises(TriformError, match="no part 'denoise'"):
        again.part("stack", use="denoise")
    ul2 = Recipe("ul2")
    assert ul2.part("encoder-decoder", need="generate").mode == "s2s"
    assert ul2.prompt_layout("encoder-decoder", WITH_MODES).frame([40]) == [99, 40, SPECIALS.eos]


def test_the_drawn_part_scores_its_own_batch():
    mixture = make_objective("mixture", WITH_MODES, VOCAB_SIZE, mix=EXAMPLE, mode_tokens=True, packed=True)
    model = build_model(tiny_config())
    batch = mixture.collate(words(2, 20), torch.Generator().manual_seed(0))
    assert mixture.loss(model(**batch.model_inputs()), batch).item() > 0
    assert mixture.n_targets(batch) == batch.n_targets


@pytest.mark.parametrize("label", ["clm", "mlm", "prefix-lm"])
def test_a_packed_row_with_mode_tokens_gives_each_documents_logits_alone(label):
    """Each document, its mode token first, is read in a packed row as it would be alone."""
    mixture = make_objective("mixture", WITH_MODES, VOCAB_SIZE, mix=EXAMPLE, mode_tokens=True, packed=True)
    part = mixture.by_label[label]
    window = mixture.packed_window([words(1, 7, 1)[0], words(1, 5, 2)[0]])
    batch = part.prepare([window], torch.Generator().manual_seed(0))
    model = build_model(tiny_config(token_types=2)).eval()
    packed = model(**replace(batch, sparse_logits=False).model_inputs())[0]
    documents = batch.documents[0]
    for number in range(2):
        slots = (documents == number).nonzero()[:, 0]
        alone = {"ids": batch.ids[:, slots], "pattern": batch.pattern}
        if batch.token_types is not None:
            alone["token_types"] = batch.token_types[:, slots]
        if batch.prefix_lengths is not None:
            alone["prefix_lengths"] = batch.prefix_lengths[:, number]
        torch.testing.assert_close(packed[slots], model(**alone)[0], atol=2e-5, rtol=0)
        assert int(batch.ids[0, slots[0]]) == part.mode


def test_any_registered_objective_is_a_possible_part(monkeypatch):
    """A mixture knows no objective by name: one registered later (here a clm under another name, with
    a loss of its own) is drawn, laid out and scored as itself."""
    from triform.objectives import compat, registry
    from triform.objectives.clm import CausalLM

    class Doubled(CausalLM):
        name = "doubled"

        def loss(self, logits, batch):
            return 2 * super().loss(logits, batch)

    monkeypatch.setitem(registry.OBJECTIVE_CLASSES, "doubled", Doubled)
    monkeypatch.setattr(compat, "OBJECTIVES", (*compat.OBJECTIVES, "doubled"))
    monkeypatch.setitem(compat.ALLOWED, ("stack", "doubled"), {"causal": "clm, counted twice"})
    mixture = make_objective("mixture", WITH_MODES, VOCAB_SIZE, mix={"doubled": 1, "clm": 1}, mode_tokens=True)
    model = build_model(tiny_config()).eval()
    batch = mixture.by_label["doubled"].prepare(words(2, 10), torch.Generator().manual_seed(0))
    logits = model(**batch.model_inputs())
    assert batch.part == "doubled" and mixture.n_targets(batch) == batch.n_targets
    clm = mixture.by_label["clm"].objective
    assert mixture.loss(logits, batch).item() == pytest.approx(2 * clm.loss(logits, batch).item(), rel=1e-6)
    assert int(batch.ids[0, 0]) == MODES["nlu"]  # an objective of no known paradigm reads [NLU]


def test_an_objectives_own_per_slot_tensors_stay_aligned_with_the_mode_tokens():
    """A batch class of an objective's own (ELECTRA's keeps the text before masking and its draws)."""
    from dataclasses import dataclass, fields

    from triform.objectives import Batch

    @dataclass
    class Own(Batch):
        originals: torch.Tensor | None = None
        draws: torch.Tensor | None = None

    clm = make_objective("clm", WITH_MODES, VOCAB_SIZE, packed=True)
    plain = clm.prepare([clm.packed_window([words(1, 5)[0], words(1, 4, 1)[0]]), words(1, 6, 2)[0]])
    own = Own(**{f.name: getattr(plain, f.name) for f in fields(plain)}, originals=plain.ids.clone())
    own.draws = torch.rand(plain.ids.shape)
    moded = with_mode_token(own, 99, SPECIALS.pad)
    real = moded.padding_mask if moded.padding_mask is not None else torch.ones_like(moded.ids, dtype=torch.bool)
    assert moded.originals.shape == moded.ids.shape == moded.draws.shape
    assert torch.equal(moded.originals[real], moded.ids[real]) and bool((moded.draws[moded.ids == 99] == 0).all())
