"""Sentence embeddings: pooled final hidden states of any body, as a library call and `triform embed`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from task_data import BODIES, body_and_layout

from triform.checkpoint import save_model
from triform.cli import main
from triform.models.stack import StackInputs
from triform.objectives import Recipe
from triform.tasks.embed import Embedder, Pooling, pool

TEXTS = ["red hot k1", "where is mr e2 ?", "blue", "f1 f2 f3 f4 f5 f6 f7"]


def folder(tmp_path, body: str):
    model, framing, tok = body_and_layout(body)
    arch, pattern = BODIES[body]
    recipe = Recipe("clm" if pattern == "causal" and arch == "stack" else "mlm" if arch == "stack" else "seq2seq")
    save_model(model, tmp_path / body, specials=framing.specials, tokenizer=tok, extra={"recipe": recipe.to_dict()})
    return tmp_path / body, model, framing, tok


def test_pooling_by_hand():
    states = torch.arange(24.0).view(2, 3, 4)
    mask = torch.tensor([[True, True, False], [True, True, True]])
    torch.testing.assert_close(pool(states, mask, "mean")[0], states[0, :2].mean(0))
    torch.testing.assert_close(pool(states, mask, "last")[0], states[0, 1])
    torch.testing.assert_close(pool(states, mask, "cls"), states[:, 0])
    with pytest.raises(Exception, match="pooling: expected one of"):
        Pooling("max")


@pytest.mark.parametrize("body", list(BODIES))
def test_a_text_embeds_alone_as_in_a_batch_and_as_the_body_computes_it(tmp_path, body):
    path, model, framing, tok = folder(tmp_path, body)
    embedder = Embedder.load(path)
    expected_pooling = "last" if body == "causal-stack" else "mean"
    assert embedder.pooling == Pooling(expected_pooling)
    batched = embedder.embed(TEXTS, batch_size=3)
    alone = torch.cat([embedder.embed([text]) for text in TEXTS])
    torch.testing.assert_close(batched, alone, atol=1e-5, rtol=1e-5)  # padding never changes a vector
    ids = torch.tensor([framing.join(tok.encode(TEXTS[1], add_special_tokens=False).ids).ids])
    with torch.no_grad():
        model.eval()
        if framing.arch == "encoder-decoder":
            states = model.encode(ids)
        else:
            states = model.hidden_states(StackInputs(ids, framing.pattern))
    reference = states[0].mean(0) if expected_pooling == "mean" else states[0, -1]
    torch.testing.assert_close(batched[1], reference, atol=1e-5, rtol=1e-5)


def test_the_command_writes_npy_or_jsonl_and_normalises_on_request(tmp_path):
    path, *_ = folder(tmp_path, "bidirectional-stack")
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(TEXTS) + "\n")
    npy = tmp_path / "out" / "vectors.npy"
    assert (
        main(["embed", "--model", str(path), "--input", str(texts), "--output", str(npy), "--normalize", "true"]) == 0
    )
    vectors = np.load(npy)
    assert vectors.shape == (len(TEXTS), 64) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    jsonl = tmp_path / "vectors.jsonl"
    assert main(["embed", "--model", str(path), "--input", str(texts), "--output", str(jsonl), "--pooling", "cls"]) == 0
    rows = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert [r["text"] for r in rows] == TEXTS and len(rows[0]["embedding"]) == 64


def test_embedding_reports_the_texts_and_tokens_done_after_each_batch(tmp_path):
    path, *_ = folder(tmp_path, "bidirectional-stack")
    embedder = Embedder.load(path)
    calls = []
    embedder.embed(TEXTS, batch_size=3, progress=lambda done, tokens: calls.append((done, tokens)))
    tokens = sum(len(row) for row in embedder.token_ids(TEXTS))
    assert [done for done, _ in calls] == [3, 4] and calls[-1][1] == tokens and 0 < calls[0][1] < tokens
