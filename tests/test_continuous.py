"""Continuous batching: requests that join and leave a running batch get what they get alone."""

import pytest
import torch
from conftest import SPECIALS, VARIANTS, tiny_config
from text_models import single_thread  # noqa: F401  (a fixture)

from triform.errors import TriformError
from triform.generate import GenerationConfig, generate_ids, resolve_layout
from triform.generate.continuous import ContinuousBatch
from triform.models import build_model

pytestmark = pytest.mark.usefixtures("single_thread")

LAYOUTS = [
    ("stack", "clm", "causal"),
    ("stack", "seq2seq", "prefix"),
    ("stack", "seq2seq", "causal"),
    ("encoder-decoder", "seq2seq", "causal"),
]
# Prompts of many lengths, the long ones arriving late, so that rows must be shifted to make room.
PROMPTS = [[30, 31, 32], [50], [40, 41, 42, 43, 44, 45, 46], [60, 61, 62, 63], [70] * 20, [80, 81], [90] * 30]
CONFIGS = {
    "greedy": GenerationConfig(max_new_tokens=12),
    "penalties": GenerationConfig(max_new_tokens=12, repetition_penalty=1.5, no_repeat_ngram_size=2, min_new_tokens=4),
    "sample": GenerationConfig(max_new_tokens=12, do_sample=True, temperature=0.8, top_k=20, top_p=0.9, seed=5),
    "sample-n": GenerationConfig(max_new_tokens=10, do_sample=True, min_p=0.05, num_return_sequences=2, seed=7),
}
CONFIGS = {name: config.replace(precision="fp32") for name, config in CONFIGS.items()}


def build(arch, **changes):
    torch.manual_seed(0)
    return build_model(tiny_config(arch, **changes)).eval()


def run(batch, arrivals):
    """Step the batch, submitting arrivals[t] (a list of (prompt, config)) before step t; returns the
    requests in submission order and the largest number of rows that ran together."""
    requests, widest, t = [], 0, 0
    while t < len(arrivals) or batch.busy:
        for prompt, config in arrivals[t] if t < len(arrivals) else []:
            requests.append(batch.submit(prompt, config))
        batch.step()
        widest = max(widest, batch.n_running)
        t += 1
    return requests, widest


def alone(model, layout, prompt, config):
    return [(r.tokens, r.finish_reason) for r in generate_ids(model, layout, [prompt], config)]


@pytest.mark.parametrize("strategy", CONFIGS)
@pytest.mark.parametrize("arch, objective, pattern", LAYOUTS)
def test_requests_joining_a_running_batch_get_what_they_get_alone(arch, objective, pattern, strategy):
    model = build(arch, position="relative", relative_buckets=8, relative_max_distance=16)
    layout = resolve_layout(arch, SPECIALS, objective, pattern)
    config = CONFIGS[strategy]
    batch = ContinuousBatch(model, layout, slots=4, precision="fp32")
    # Two at once, then one every other step: rows join mid-flight, wait for a slot, reuse freed ones.
    arrivals = [[(PROMPTS[0], config), (PROMPTS[1], config)]]
    for prompt in PROMPTS[2:]:
        arrivals += [[], [(prompt, config)]]
    requests, widest = run(batch, arrivals)
    assert widest == 4  # the batch was full at some point
    for prompt, request in zip(PROMPTS, requests):
        assert request.done and request.error is None
        assert [(r.tokens, r.finish_reason) for r in request.rows] == alone(model, layout, prompt, config)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("arch", ["stack", "encoder-decoder"])
def test_every_set_of_parts_batches_continuously(arch, variant):
    model = build(arch, **VARIANTS[variant])
    layout = resolve_layout(arch, SPECIALS, "seq2seq" if arch == "encoder-decoder" else "clm")
    configs = [CONFIGS["greedy"], CONFIGS["sample"], CONFIGS["penalties"]]
    batch = ContinuousBatch(model, layout, slots=3, precision="fp32")
    arrivals = [[(p, configs[i % 3])] for i, p in enumerate(PROMPTS)]  # mixed options in one batch
    requests, _ = run(batch, arrivals)
    for i, (prompt, request) in enumerate(zip(PROMPTS, requests)):
        assert [(r.tokens, r.finish_reason) for r in request.rows] == alone(model, layout, prompt, configs[i % 3])


def test_a_small_cache_drops_the_padding_rows_share_and_still_gives_the_same_tokens():
    """Capacity = max_len: the write position reaches the end while long rows run and must be
    brought back by dropping the left padding every row shares."""
    model = build("stack", max_len=40)
    layout = resolve_layout("stack", SPECIALS)
    config = GenerationConfig(max_new_tokens=30, precision="fp32", min_new_tokens=30)
    batch = ContinuousBatch(model, layout, slots=2, capacity=40, precision="fp32")
    prompts = [[30, 31], [40] * 8, [50] * 3, [60] * 5]
    arrivals = [[(prompts[0], config)], *[[] for _ in range(9)], [(prompts[1], config)], [(prompts[2], config)]]
    arrivals += [[(prompts[3], config)]]
    requests, _ = run(batch, arrivals)
    for prompt, request in zip(prompts, requests):
        assert [(r.tokens, r.finish_reason) for r in request.rows] == alone(model, layout, prompt, config)


def test_a_cancelled_request_frees_its_slot_at_the_next_step():
    model = build("stack")
    layout = resolve_layout("stack", SPECIALS)
    config = GenerationConfig(max_new_tokens=40, min_new_tokens=40, precision="fp32")
    batch = ContinuousBatch(model, layout, slots=1, precision="fp32")
    first = batch.submit([30, 31], config)
    batch.step()
    second = batch.submit([40, 41], config)
    for _ in range(3):
        batch.step()
    assert batch.n_running == 1 and batch.n_waiting == 1 and len(first.rows[0].tokens) == 4
    batch.cancel(first)
    events = batch.step()
    assert {e.request for e in events} == {second}  # the freed slot went to the waiting request
    assert len(first.rows[0].tokens) == 4 and first.done
    while batch.busy:
        batch.step()
    assert [(r.tokens, r.finish_reason) for r in second.rows] == alone(model, layout, [40, 41], config)


def test_an_exception_in_a_batch_fails_only_the_request_it_belongs_to():
    """A model that fails on one token: the batch is retried row by row, and only the request whose
    row fails alone gets the error; the others finish as they would alone."""
    model = build("stack")
    layout = resolve_layout("stack", SPECIALS)
    config = GenerationConfig(max_new_tokens=6, min_new_tokens=6, precision="fp32")
    poison = 99
    forward = model.forward

    def failing(ids, *args, **kwargs):
        if (ids == poison).any():
            raise RuntimeError("a kernel failed")
        return forward(ids, *args, **kwargs)

    model.forward = failing
    batch = ContinuousBatch(model, layout, slots=4, precision="fp32")
    good, bad = batch.submit([30, 31], config), batch.submit([poison, 31], config)
    late = batch.submit([40], config)
    while batch.busy:
        batch.step()
    model.forward = forward
    assert isinstance(bad.error, RuntimeError) and good.error is None and late.error is None
    assert [(r.tokens, r.finish_reason) for r in good.rows] == alone(model, layout, [30, 31], config)
    assert [(r.tokens, r.finish_reason) for r in late.rows] == alone(model, layout, [40], config)


def test_log_probabilities_are_the_models_own():
    model = build("stack")
    layout = resolve_layout("stack", SPECIALS)
    config = GenerationConfig(max_new_tokens=5, precision="fp32")
    batch = ContinuousBatch(model, layout, slots=2, precision="fp32")
    request = batch.submit([30, 31, 32], config, logprobs=3)
    events = []
    while batch.busy:
        events += batch.step()
    ids = torch.tensor([[SPECIALS.bos, 30, 31, 32, *request.rows[0].tokens]])
    with torch.no_grad():
        expected = model(ids).log_softmax(-1)[0, 3:]
    for step, event in enumerate(events):
        assert event.logprob == pytest.approx(float(expected[step, event.token]), abs=1e-5)
        assert [token for token, _ in event.top_logprobs] == expected[step].topk(3).indices.tolist()


def test_beam_search_is_refused_with_the_reason():
    batch = ContinuousBatch(build("stack"), resolve_layout("stack", SPECIALS), slots=2)
    with pytest.raises(TriformError, match="beam search runs as a static batch"):
        batch.submit([30], GenerationConfig(num_beams=2))


def test_an_encoder_decoder_encodes_each_source_once_when_it_joins():
    model = build("encoder-decoder")
    layout = resolve_layout("encoder-decoder", SPECIALS, "seq2seq")
    config = GenerationConfig(max_new_tokens=10, min_new_tokens=10, precision="fp32")
    encoded, encode = [], model.encode

    def counted(source_ids, *args, **kwargs):
        encoded.append(source_ids.shape[0])
        return encode(source_ids, *args, **kwargs)

    model.encode = counted
    batch = ContinuousBatch(model, layout, slots=2, precision="fp32")
    arrivals = [[(PROMPTS[0], config), (PROMPTS[1], config)], [], [(PROMPTS[2], config)]]
    requests, _ = run(batch, arrivals)
    assert all(len(r.rows[0].tokens) == 10 for r in requests)
    assert encoded == [2, 1]  # the first two together on arrival, the third when a slot freed; never again


@pytest.mark.parametrize("arch", ["stack", "encoder-decoder"])
def test_a_bf16_batch_runs_the_bf16_twin_of_the_model_and_a_lone_request_matches_it(arch):
    model = build(arch)
    layout = resolve_layout(arch, SPECIALS)
    config = GenerationConfig(max_new_tokens=8, min_new_tokens=8, precision="bf16")
    batch = ContinuousBatch(model, layout, slots=1, precision="bf16")
    assert all(p.dtype == torch.bfloat16 for p in batch.model.parameters())
    assert all(p.dtype == torch.float32 for p in model.parameters())  # the caller's model is not cast
    (request,), _ = run(batch, [[(PROMPTS[0], config)]])
    assert request.done and request.error is None
    # One row alone rounds as generation's one row does: the same bf16 weights, no autocast.
    assert [(r.tokens, r.finish_reason) for r in request.rows] == alone(model, layout, PROMPTS[0], config)
