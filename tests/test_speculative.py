"""Speculative decoding (generate/speculative.py): greedy outputs are the model's own, the acceptance
rule reproduces the model's distribution, rejected tokens leave the KV cache, and the CLI flag works."""

import pytest
import torch
from conftest import SPECIALS, tiny_config
from text_models import random_model, single_thread, word_setup  # noqa: F401

from triform.checkpoint import save_model
from triform.cli import main
from triform.errors import TriformError
from triform.generate import GenerationConfig, TextGenerator, generate_ids, resolve_layout
from triform.generate.precision import run_as
from triform.generate.session import start_session
from triform.generate.speculative import speculative_ids, verify
from triform.models import build_model

pytestmark = pytest.mark.usefixtures("single_thread")

LAYOUTS = [("stack", None, None), ("stack", "seq2seq", "prefix"), ("encoder-decoder", None, None)]
PROMPTS = [[30, 31, 32], [40, 41, 42, 43, 44, 45, 46], [50]]


def models(arch):
    torch.manual_seed(0)
    model = build_model(tiny_config(arch)).eval()
    torch.manual_seed(1)
    draft = build_model(tiny_config(arch, d_model=16, n_heads=2, d_ff=32, n_layers=1)).eval()
    return model, draft


@pytest.mark.parametrize("arch, objective, pattern", LAYOUTS)
@pytest.mark.parametrize("k", [1, 3])
def test_greedy_outputs_with_a_draft_are_the_models_own(arch, objective, pattern, k):
    model, draft = models(arch)
    layout = resolve_layout(arch, SPECIALS, objective, pattern)
    config = GenerationConfig(max_new_tokens=16, min_new_tokens=4, precision="fp32")
    plain = [row.tokens for row in generate_ids(model, layout, PROMPTS, config)]
    rows, acceptance = speculative_ids(model, draft, layout, PROMPTS, config, k=k)
    assert [row.tokens for row in rows] == plain
    # A random draft is sometimes right and (on the stacks; the random encoder-decoder repeats itself,
    # and so does its draft) sometimes wrong: both paths ran.
    assert 0 < acceptance.rate and (acceptance.rate < 1 or arch == "encoder-decoder")
    rows, acceptance = speculative_ids(model, model, layout, PROMPTS, config, k=k)
    assert [row.tokens for row in rows] == plain and acceptance.rate == 1.0


def test_the_acceptance_rule_gives_the_models_distribution():
    """Leviathan et al. 2023, Theorem 1 on a 6-token vocabulary: the first two tokens a round emits are
    distributed as p[0] and p[1], whatever the draft's q (20,000 rounds of k = 2)."""
    generator = torch.Generator().manual_seed(0)
    p, q = torch.rand(3, 6, generator=generator), torch.rand(2, 6, generator=generator).pow(4)
    p, q = p / p.sum(-1, keepdim=True), q / q.sum(-1, keepdim=True)
    counts = torch.zeros(2, 6)
    trials = 20_000
    for _ in range(trials):
        proposals = [int(torch.multinomial(q[j], 1, generator=generator)) for j in range(2)]
        kept, token = verify(p, q, proposals, True, generator)
        emitted = [*proposals[:kept], token]
        counts[0, emitted[0]] += 1
        if len(emitted) > 1:
            counts[1, emitted[1]] += 1
    first = counts[0] / trials
    second = counts[1] / counts[1].sum()
    assert (first - p[0]).abs().sum() / 2 < 0.02  # total variation; its standard error here is ~0.005
    assert (second - p[1]).abs().sum() / 2 < 0.03
    assert (q[0] - p[0]).abs().sum() / 2 > 0.2  # the draft alone would be far off


def test_sampling_with_a_draft_is_seeded_and_a_perfect_draft_is_always_accepted():
    model, draft = models("stack")
    layout = resolve_layout("stack", SPECIALS)
    config = GenerationConfig(max_new_tokens=12, do_sample=True, top_k=20, seed=3, precision="fp32")
    first, _ = speculative_ids(model, draft, layout, PROMPTS, config, k=3)
    again, _ = speculative_ids(model, draft, layout, PROMPTS, config, k=3)
    assert [r.tokens for r in first] == [r.tokens for r in again]
    _, acceptance = speculative_ids(model, model, layout, PROMPTS, config, k=3)
    assert acceptance.rate > 0.95


@pytest.mark.parametrize("arch", ["stack", "encoder-decoder"])
def test_rolled_back_tokens_leave_no_trace_in_the_cache(arch):
    model, _ = models(arch)
    layout = resolve_layout(arch, SPECIALS)
    framed = [layout.frame([30, 31, 32])]
    with torch.no_grad():
        fresh = start_session(model, layout, framed, 8)
        fresh.start()
        expected = fresh.extend(torch.tensor([[40, 41]]))
        session = start_session(model, layout, framed, 8)
        session.start()
        session.extend(torch.tensor([[40, 60, 61, 62]]))
        session.rollback(3)
        torch.testing.assert_close(session.extend(torch.tensor([[41]]))[0, -1], expected[0, -1])


def test_a_draft_that_does_not_fit_is_refused_by_name():
    model, draft = models("stack")
    layout = resolve_layout("stack", SPECIALS)
    with pytest.raises(TriformError, match="not beam search"):
        speculative_ids(model, draft, layout, PROMPTS, GenerationConfig(num_beams=2))
    with pytest.raises(TriformError, match="the draft needs the same tokenizer"):
        speculative_ids(model, build_model(tiny_config(vocab_size=90)), layout, PROMPTS, GenerationConfig())
    with pytest.raises(TriformError, match="draft_k: expected an integer >= 1"):
        speculative_ids(model, draft, layout, PROMPTS, GenerationConfig(), k=0)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("speculative")
    tokenizer, specials = word_setup()
    for name, changes in (("model", {}), ("draft", dict(d_model=16, n_layers=1, d_ff=32))):
        save_model(random_model("stack", tokenizer, **changes), root / name, specials=specials, tokenizer=tokenizer)
    return root


def test_the_cli_decodes_with_a_draft_as_without(folders, capsys):
    argv = ["generate", "--model", str(folders / "model"), "one two three", "--max_new_tokens", "8"]
    assert main(argv) == 0
    plain = capsys.readouterr().out
    assert main([*argv, "--draft", str(folders / "draft"), "--draft_k", "3"]) == 0
    captured = capsys.readouterr()
    assert captured.out == plain and "the draft's proposals kept" in captured.err
    generator = TextGenerator.load(folders / "model", draft=folders / "draft", draft_k=3)
    assert generator.generate("one two three", max_new_tokens=8).text + "\n" == plain
    assert generator.acceptance.proposed > 0
    assert main([*argv, "--draft", str(folders / "draft"), "--stream"]) != 0
    assert "drop --stream" in capsys.readouterr().err


def test_sampling_with_a_draft_draws_from_the_models_distribution():
    """End to end, on the 4 most likely tokens (top_k 4): the first two sampled tokens are distributed as
    the model's p(x1) p(x2 | x1), 1500 samples, with a draft whose own distribution is far from it."""
    model, draft = models("stack")
    layout = resolve_layout("stack", SPECIALS)
    prompt = [30, 31, 32]
    config = GenerationConfig(
        max_new_tokens=2, min_new_tokens=2, do_sample=True, top_k=4, seed=0, num_return_sequences=1500, precision="fp32"
    )
    rows, _ = speculative_ids(model, draft, layout, [prompt], config, k=2)

    def top4(m, ids):
        with torch.no_grad():
            logits = m(torch.tensor([layout.frame(prompt) + ids]), "causal")[0, -1]
        logits[SPECIALS.eos] = float("-inf")  # min_new_tokens
        top = logits.topk(4)
        return dict(zip(top.indices.tolist(), top.values.softmax(-1).tolist()))

    def joint(m):
        return {(a, b): pa * pb for a, pa in top4(m, []).items() for b, pb in top4(m, [a]).items()}

    exact, drafts = joint(model), joint(draft)
    counts = {}
    for row in rows:
        counts[tuple(row.tokens)] = counts.get(tuple(row.tokens), 0) + 1
    assert set(counts) <= set(exact)
    distance = sum(abs(counts.get(pair, 0) / len(rows) - p) for pair, p in exact.items()) / 2
    draft_distance = sum(abs(drafts.get(pair, 0) - p) for pair, p in exact.items()) / 2
    assert distance < 0.08 and draft_distance > 0.3  # total variation; about 0.04 expected from sampling alone


@pytest.mark.parametrize("arch", ["stack", "encoder-decoder"])
def test_bf16_on_a_cpu_runs_both_models_bf16_twins_with_the_plain_greedy_output(arch, monkeypatch):
    """As plain decoding does (generate/precision.py): the weights in bf16, no autocast; the callers'
    models stay fp32."""
    import triform.generate.speculative as speculative

    model, draft = models(arch)
    layout = resolve_layout(arch, SPECIALS)
    config = GenerationConfig(max_new_tokens=12, min_new_tokens=4, precision="bf16")
    ran = []

    def recording(which, precision):
        chosen = run_as(which, precision)
        ran.append((next(chosen[0].parameters()).dtype, chosen[1]))
        return chosen

    monkeypatch.setattr(speculative, "run_as", recording)
    rows, _ = speculative_ids(model, draft, layout, PROMPTS, config, k=2)
    assert ran == [(torch.bfloat16, "fp32")] * 2  # model and draft: bf16 weights, no autocast
    plain = [row.tokens for row in generate_ids(model, layout, PROMPTS, config)]
    assert [row.tokens for row in rows] == plain
    assert all(p.dtype == torch.float32 for p in [*model.parameters(), *draft.parameters()])
