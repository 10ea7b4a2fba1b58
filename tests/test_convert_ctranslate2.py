"""CTranslate2 through the Hugging Face export: a folder triform writes converts with CTranslate2's own
converter, and CTranslate2's greedy decoding gives triform's tokens.

Where CTranslate2 (4.8) computes what transformers computes, its logits match too. Two gaps are its
own: it takes Llama 3.1's rotary scaling with original_max_position_embeddings fixed at 8192 and
computes it to within 1e-3 only, and it has no YaRN; a Qwen2 with YaRN does not convert."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hf_models import single_thread, tiny, transformers  # noqa: F401
from hf_tokenizers import byte_level_folder, t5_folder

from triform.convert import export_hf, import_hf
from triform.generate import GenerationConfig, generate_ids, resolve_layout

ctranslate2 = pytest.importorskip("ctranslate2", reason="the ctranslate2 wheel is not installed for this platform")

PROMPTS = [[9, 17, 33, 41, 8, 77], [12, 5, 90], [44, 45, 46, 47, 48, 49, 50, 51]]
NEW = 8
SAME_LOGITS = ("gpt2", "llama-biased", "mistral", "qwen3")  # llama: CTranslate2's llama3 scaling, within 1e-3


@pytest.fixture(scope="module", params=["gpt2", "llama", "llama-biased", "mistral", "qwen3", "t5-v1.1"])
def converted(request, tmp_path_factory):
    family, folder = request.param, tmp_path_factory.mktemp(request.param)
    if family.startswith("t5"):
        t5_folder(folder / "vocabulary")
    else:
        byte_level_folder(folder / "vocabulary", "gpt2")
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder / "vocabulary")
    tokenizer.save_pretrained(folder / "hf")
    model = tiny(family)
    model.resize_token_embeddings(len(tokenizer))
    model.save_pretrained(folder / "hf")
    pretrained = import_hf(folder / "hf")
    export_hf(pretrained, folder / "exported")  # what CTranslate2 reads is triform's export
    ctranslate2.converters.TransformersConverter(str(folder / "exported")).convert(str(folder / "ct2"))
    return family, pretrained, folder / "ct2"


def test_ctranslate2_decodes_greedily_as_triform(converted):
    family, pretrained, ct2 = converted
    tokenizer, layout = pretrained.tokenizer, resolve_layout(pretrained.config.arch, pretrained.specials)
    config = GenerationConfig(max_new_tokens=NEW, min_new_tokens=NEW, precision="fp32")
    ours = [row.tokens for row in generate_ids(pretrained.model, layout, PROMPTS, config)]
    framed = [[tokenizer.id_to_token(i) for i in layout.frame(prompt)] for prompt in PROMPTS]
    if pretrained.config.arch == "stack":
        generator = ctranslate2.Generator(str(ct2))
        results = generator.generate_batch(
            framed, max_length=NEW, min_length=NEW, sampling_topk=1, include_prompt_in_result=False
        )
        theirs = [result.sequences_ids[0] for result in results]
    else:
        translator = ctranslate2.Translator(str(ct2))
        results = translator.translate_batch(framed, beam_size=1, max_decoding_length=NEW, min_decoding_length=NEW)
        theirs = [[tokenizer.token_to_id(token) for token in result.hypotheses[0]] for result in results]
    assert theirs == ours and all(len(tokens) == NEW for tokens in ours)
    if family in SAME_LOGITS:
        ids = layout.frame(PROMPTS[0]) + ours[0]
        their_logits = np.array(generator.forward_batch([[tokenizer.id_to_token(i) for i in ids]]))[0]
        with torch.no_grad():
            our_logits = pretrained.model(torch.tensor([ids]), "causal")[0]
        torch.testing.assert_close(torch.from_numpy(their_logits), our_logits, atol=1e-4, rtol=0)
