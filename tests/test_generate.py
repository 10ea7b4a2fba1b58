"""The generation engine: the cache reads prompts exactly as training did, and the strategies agree."""

import pytest
import torch
from conftest import SPECIALS, VARIANTS, random_ids, tiny_config
from text_models import single_thread  # noqa: F401  (a fixture)

from triform.errors import ConfigError, TriformError
from triform.generate import GenerationConfig, generate_ids, greedy, resolve_layout
from triform.generate.engine import beam_ids
from triform.generate.session import start_session
from triform.models import build_model
from triform.objectives import make_objective

pytestmark = pytest.mark.usefixtures("single_thread")

ATOL = 1e-5
# (architecture, objective, pattern): every way a model can generate.
LAYOUTS = [
    ("stack", "clm", "causal"),
    ("stack", "seq2seq", "prefix"),
    ("stack", "seq2seq", "causal"),
    ("encoder-decoder", "seq2seq", "causal"),
]
PROMPTS = [[30, 31, 32], [40, 41, 42, 43, 44, 45, 46], [50], [60, 61, 62, 63]]


def build(arch, **changes):
    return build_model(tiny_config(arch, **changes)).eval()


def training_logits(model, arch, objective, pattern, prompt, continuation):
    """Logits of a full forward pass over the objective's own training layout, at the positions that
    predict the continuation (and the token after it)."""
    train = make_objective(objective, SPECIALS, 100, arch=arch, pattern=pattern)
    if objective == "clm":
        batch = train.prepare([prompt + continuation])  # [BOS] prompt continuation (+[EOS] target)
        first = len(prompt)  # position of the prompt's last token
    else:
        batch = train.prepare([(prompt, continuation)])
        first = 0 if arch == "encoder-decoder" else len(prompt)  # [BOS], or the [SEP] slot
    inputs = {k: v for k, v in batch.model_inputs().items() if k != "logits_at"}
    return model(**inputs)[0, first:]


@pytest.mark.parametrize("arch, objective, pattern", LAYOUTS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_cached_decoding_equals_the_training_forward_pass_step_by_step(arch, objective, pattern, variant):
    """Batched prompts of different lengths, padded, decoded through the KV cache one token at a
    time, give at every step the logits of one full forward pass over the training layout."""
    model = build(arch, **VARIANTS[variant])
    layout = resolve_layout(arch, SPECIALS, objective, pattern)
    continuations = random_ids(len(PROMPTS), 5, generator_seed=3)
    session = start_session(model, layout, [layout.frame(p) for p in PROMPTS], max_new_tokens=6)
    with torch.no_grad():
        steps = [session.start()]
        for t in range(continuations.shape[1]):
            steps.append(session.step(continuations[:, t]))
        cached = torch.stack(steps, dim=1)  # (B, 6, V)
        for row, prompt in enumerate(PROMPTS):
            expected = training_logits(model, arch, objective, pattern, prompt, continuations[row].tolist())
            torch.testing.assert_close(cached[row], expected[: cached.shape[1]], atol=ATOL, rtol=0)


@pytest.mark.parametrize("arch, objective, pattern", LAYOUTS)
def test_uncached_decoding_gives_the_same_tokens(arch, objective, pattern):
    model = build(arch, position="rotary")
    layout = resolve_layout(arch, SPECIALS, objective, pattern)
    config = GenerationConfig(max_new_tokens=8, precision="fp32", repetition_penalty=1.3)
    cached = generate_ids(model, layout, PROMPTS, config)
    uncached = generate_ids(model, layout, PROMPTS, config.replace(use_cache=False))
    assert [r.tokens for r in cached] == [r.tokens for r in uncached]


STRATEGIES = {
    "greedy": GenerationConfig(max_new_tokens=9),
    "sample": GenerationConfig(max_new_tokens=9, do_sample=True, temperature=0.8, top_k=20, top_p=0.9, seed=5),
    "sample-n": GenerationConfig(max_new_tokens=9, do_sample=True, min_p=0.05, num_return_sequences=2, seed=5),
    "beam": GenerationConfig(max_new_tokens=9, num_beams=3, num_return_sequences=2, no_repeat_ngram_size=2),
}
# Exact equalities hold in fp32; bf16 (the default where the CPU has it) rounds by the batch's shape.
STRATEGIES = {name: config.replace(precision="fp32") for name, config in STRATEGIES.items()}


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("arch, objective, pattern", LAYOUTS)
def test_batched_generation_equals_one_prompt_at_a_time(arch, objective, pattern, strategy):
    model = build(arch, position="relative", relative_buckets=8, relative_max_distance=16)
    layout = resolve_layout(arch, SPECIALS, objective, pattern)
    config = STRATEGIES[strategy]
    batched = generate_ids(model, layout, PROMPTS, config)
    alone = [row for prompt in PROMPTS for row in generate_ids(model, layout, [prompt], config)]
    assert [(r.tokens, r.finish_reason) for r in batched] == [(r.tokens, r.finish_reason) for r in alone]
    assert [r.prompt_index for r in batched] == [
        i for i in range(len(PROMPTS)) for _ in range(config.num_return_sequences)
    ]
    if strategy == "beam":
        for b, a in zip(batched, alone):
            assert b.score == pytest.approx(a.score, abs=1e-5)


@pytest.mark.parametrize("arch, objective, pattern", LAYOUTS)
def test_beam_search_with_one_beam_is_greedy(arch, objective, pattern):
    model = build(arch)
    layout = resolve_layout(arch, SPECIALS, objective, pattern)
    for options in ({}, {"repetition_penalty": 1.5, "no_repeat_ngram_size": 2, "min_new_tokens": 3}):
        config = GenerationConfig(max_new_tokens=10, precision="fp32", **options)
        greedy_rows = generate_ids(model, layout, PROMPTS, config)
        beam_rows = generate_ids(model, layout, PROMPTS, config.replace(num_beams=1))  # the greedy path
        one_beam = [best[0] for best in beam_ids(model, layout, PROMPTS, config)]  # beam search, one beam
        assert [r.tokens for r in greedy_rows] == [r.tokens for r in beam_rows] == [r.tokens for r in one_beam]
        assert [r.finish_reason for r in greedy_rows] == [r.finish_reason for r in one_beam]


def test_the_same_seed_gives_the_same_sample_and_another_seed_another():
    model = build("stack")
    layout = resolve_layout("stack", SPECIALS)
    config = GenerationConfig(max_new_tokens=12, do_sample=True, seed=11)
    first, again = (generate_ids(model, layout, PROMPTS, config) for _ in range(2))
    other = generate_ids(model, layout, PROMPTS, config.replace(seed=12))
    assert [r.tokens for r in first] == [r.tokens for r in again]
    assert [r.tokens for r in first] != [r.tokens for r in other]
    torch.manual_seed(1)
    unseeded = generate_ids(model, layout, [PROMPTS[0]] * 2, config.replace(seed=None))
    assert unseeded[0].tokens != unseeded[1].tokens  # without a seed, each row draws its own


@pytest.mark.parametrize("strategy", ["greedy", "beam"])
def test_penalties_act_on_the_generated_sequence(strategy):
    model = build("stack")  # an untrained model repeats itself
    layout = resolve_layout("stack", SPECIALS)
    config = GenerationConfig(max_new_tokens=12, num_beams=1 if strategy == "greedy" else 3)
    plain = generate_ids(model, layout, PROMPTS, config)
    assert any(len(set(r.tokens)) < len(r.tokens) for r in plain)
    for row, prompt in zip(generate_ids(model, layout, PROMPTS, config.replace(no_repeat_ngram_size=2)), PROMPTS):
        sequence = [SPECIALS.bos] + prompt + row.tokens
        bigrams = list(zip(sequence, sequence[1:]))
        assert len(bigrams) == len(set(bigrams))
    for row, prompt in zip(generate_ids(model, layout, PROMPTS, config.replace(repetition_penalty=1e9)), PROMPTS):
        assert len(set(row.tokens)) == len(row.tokens) and not set(row.tokens) & set(prompt)


def test_eos_ends_a_row_and_min_new_tokens_forbids_it():
    model = build("stack")
    with torch.no_grad():
        model.head.projection.weight[SPECIALS.eos] *= 0  # tied: also the [EOS] embedding; fine here
        model.head.bias = torch.nn.Parameter(torch.zeros(100))
        model.head.bias[SPECIALS.eos] = 50.0  # [EOS] is always the most likely token
    layout = resolve_layout("stack", SPECIALS)
    rows = generate_ids(model, layout, PROMPTS, GenerationConfig(max_new_tokens=6))
    assert all(r.tokens == [] and r.finish_reason == "eos" for r in rows)
    rows = generate_ids(model, layout, PROMPTS, GenerationConfig(max_new_tokens=6, min_new_tokens=4))
    assert all(len(r.tokens) == 4 and r.finish_reason == "eos" for r in rows)
    rows = generate_ids(model, layout, PROMPTS, GenerationConfig(max_new_tokens=4, min_new_tokens=4, num_beams=2))
    assert all(len(r.tokens) == 4 and r.finish_reason == "length" for r in rows)


def test_generation_stops_at_max_len_and_refuses_a_prompt_without_room():
    model = build("stack", max_len=12)
    layout = resolve_layout("stack", SPECIALS)
    rows = generate_ids(model, layout, [[30] * 6, [31]], GenerationConfig(max_new_tokens=50))
    assert [len(r.tokens) for r in rows] == [12 - 7, 12 - 2]  # [BOS] + prompt + new tokens = max_len
    with pytest.raises(TriformError, match="prompt 1: 11 tokens leave no room .* max_len 12"):
        generate_ids(model, layout, [[30], [31] * 11], GenerationConfig())
    assert layout.fit([31] * 11, 12) == [31] * 10  # a text to continue keeps its end


def test_greedy_function_returns_ids_and_restores_training_mode():
    model = build("encoder-decoder", dropout=0.1)
    model.train()
    out = greedy(model, PROMPTS, SPECIALS, max_new_tokens=5)
    assert model.training and len(out) == len(PROMPTS) and all(len(ids) <= 5 for ids in out)
    layout = resolve_layout("encoder-decoder", SPECIALS)
    assert out == [r.tokens for r in generate_ids(model.eval(), layout, PROMPTS, GenerationConfig(max_new_tokens=5))]


def test_a_masked_lm_stack_does_not_continue_text():
    with pytest.raises(TriformError, match="trained with mlm: it fills masks"):
        resolve_layout("stack", SPECIALS, "mlm")


@pytest.mark.parametrize(
    "options, message",
    [
        ({"num_beams": 2, "do_sample": True}, "generation.do_sample"),
        ({"num_beams": 2, "num_return_sequences": 3}, "generation.num_return_sequences: expected at most num_beams"),
        ({"num_return_sequences": 2}, "1 for greedy decoding"),
        ({"top_p": 0.0}, "generation.top_p"),
        ({"temperature": 0}, "generation.temperature"),
        ({"min_new_tokens": 10, "max_new_tokens": 5}, "generation.min_new_tokens"),
        ({"stop": ["ok", ""]}, "generation.stop"),
    ],
)
def test_bad_generation_options_name_the_field(options, message):
    with pytest.raises(ConfigError, match=message):
        GenerationConfig(**options)
