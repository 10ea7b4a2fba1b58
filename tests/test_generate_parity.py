"""Greedy decoding and beam search give the outputs of `transformers.generate` on imported models."""

from __future__ import annotations

import pytest
import torch
from hf_models import single_thread, tiny, transformers  # noqa: F401

from triform.convert import import_hf
from triform.generate import GenerationConfig, fill_mask, generate_ids, resolve_layout
from triform.objectives import read_recipe
from triform.vocab import SpecialTokens

PROMPTS = [[9, 17, 33, 41, 8, 77], [12, 5, 90], [44, 45, 46, 47, 48, 49, 50, 51]]
GENERATIVE = ["gpt2", "bart", "marian", "t5", "llama", "llama-biased", "mistral", "qwen2", "qwen3"]


@pytest.fixture(scope="module", params=GENERATIVE)
def imported(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(request.param) / "hf"
    reference = tiny(request.param)
    reference.save_pretrained(folder)
    return reference, import_hf(folder, tokenizer=False)


def reference_tokens(reference, pretrained, prompt: list[int], options: dict) -> list[int]:
    """What `transformers` generates for one prompt laid out as triform lays it out, with nothing
    forced or banned beyond `options`."""
    specials, arch = pretrained.specials, pretrained.config.arch
    ids = [specials.bos] + prompt if arch == "stack" else prompt + [specials.eos]
    output = reference.generate(
        torch.tensor([ids]),
        attention_mask=torch.ones(1, len(ids), dtype=torch.long),
        max_new_tokens=8,
        do_sample=False,
        early_stopping=True,
        forced_eos_token_id=None,
        forced_bos_token_id=None,
        bad_words_ids=None,
        eos_token_id=specials.eos,
        pad_token_id=specials.pad if specials.pad is not None else specials.eos,
        **options,
    )[0].tolist()
    new = output[len(ids) :] if arch == "stack" else output[1:]  # after the prompt, or the decoder's start token
    return new[: new.index(specials.eos)] if specials.eos in new else new


# fp32 on both sides: bf16, the default where the CPU has it, rounds differently from transformers.
# Both libraries apply these penalties to the logits in greedy decoding. In beam search they differ on
# purpose: triform penalises the logits and then normalises (so that one beam is greedy decoding), and
# its length penalty is Wu et al.'s; `transformers` penalises log-probabilities and divides by
# length^alpha. The two agree without penalties and with a length penalty of 0.
CASES = {
    "greedy": ({}, {"num_beams": 1}),
    "greedy-penalised": (
        {"min_new_tokens": 4, "repetition_penalty": 1.5, "no_repeat_ngram_size": 2},
        {"num_beams": 1, "min_new_tokens": 4, "repetition_penalty": 1.5, "no_repeat_ngram_size": 2},
    ),
    "beam": ({"num_beams": 3, "length_penalty": 0.0}, {"num_beams": 3, "length_penalty": 0.0}),
}


@pytest.mark.parametrize("case", CASES)
def test_outputs_match_transformers_generate(imported, case):
    reference, pretrained = imported
    ours_options, their_options = CASES[case]
    layout = resolve_layout(pretrained.config.arch, pretrained.specials)
    config = GenerationConfig(max_new_tokens=8, precision="fp32", **ours_options)
    ours = generate_ids(pretrained.model, layout, PROMPTS, config)
    with torch.no_grad():
        theirs = [reference_tokens(reference, pretrained, prompt, their_options) for prompt in PROMPTS]
    assert [row.tokens for row in ours] == theirs  # our rows are batched and padded; theirs one by one


def test_fill_mask_gives_the_probabilities_of_transformers_on_an_imported_bert(tmp_path):
    reference = tiny("bert")
    reference.save_pretrained(tmp_path / "hf")
    pretrained = import_hf(tmp_path / "hf", tokenizer=False)
    recipe = read_recipe(pretrained.extra, "stack")
    assert recipe.objective == "mlm"  # a folder imported from BERT fills masks
    specials = SpecialTokens(pad=0, unk=1, bos=2, eos=3, cls=2, sep=3, mask=4)
    texts = [[9, 4, 33, 41, 4, 77], [12, 4, 90]]
    objective = recipe.build("stack", specials, pretrained.config.vocab_size)
    ours = fill_mask(pretrained.model, objective, texts, top_k=3)
    with torch.no_grad():
        for text, per_mask in zip(texts, ours):
            ids = torch.tensor([[specials.cls, *text, specials.sep]])
            probabilities = reference(input_ids=ids).logits[0].softmax(-1)[ids[0] == specials.mask]
            top = probabilities.topk(3, dim=-1)
            assert [[c.id for c in mask] for mask in per_mask] == top.indices.tolist()
            got = torch.tensor([[c.probability for c in mask] for mask in per_mask])
            torch.testing.assert_close(got, top.values, atol=1e-5, rtol=0)
