"""ONNX export with the KV cache as inputs and outputs: onnxruntime gives triform's logits (fp32, 1e-4)
at the first call and at every cached step, and greedy decoding through the graphs gives triform's
tokens, for a stack (GPT-2, a grouped-query Llama) and an encoder-decoder (BART, T5)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hf_models import single_thread, tiny, transformers  # noqa: F401

from triform.cli import main
from triform.convert import ConversionError, import_hf
from triform.convert.onnx import export_onnx
from triform.generate import GenerationConfig, generate_ids, resolve_layout

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

PROMPTS = [[9, 17, 33, 41, 8, 77], [12, 5, 90], [44, 45, 46, 47, 48, 49, 50, 51]]
NEW = 8


class Graphs:
    """Greedy decoding through the exported graphs with onnxruntime alone, reading onnx.json."""

    def __init__(self, folder):
        self.manifest = json.loads((folder / "onnx.json").read_text())
        self.sessions = {
            name: ort.InferenceSession(str(folder / graph["file"]), providers=["CPUExecutionProvider"])
            for name, graph in self.manifest["graphs"].items()
        }

    def empty(self, batch: int) -> np.ndarray:
        m = self.manifest
        return np.zeros((batch, m["n_kv_heads"], 0, m["d_head"]), np.float32)

    def run(self, name: str, feeds: dict) -> dict:
        outputs = self.manifest["graphs"][name]["outputs"]
        return dict(zip(outputs, self.sessions[name].run(None, feeds)))

    def greedy(self, prompt: list[int]) -> tuple[list[int], list[np.ndarray]]:
        """NEW tokens for one prompt, [EOS] banned (min_new_tokens = NEW), and the logits of every call."""
        m, eos = self.manifest, self.manifest["eos"]
        if m["arch"] == "stack":
            ids, name = m["prompt_prefix"] + prompt, "model"
            feeds = {n: self.empty(1) for n in m["graphs"]["model"]["inputs"][2:]}
        else:
            source = np.array([prompt + m["source_suffix"]], np.int64)
            encoded = self.run("encoder", {"input_ids": source, "attention_mask": np.ones_like(source)})
            ids, name = [m["decoder_start"]], "decoder"
            feeds = {"encoder_attention_mask": np.ones_like(source)}
            for n in m["graphs"]["decoder"]["inputs"][3:]:
                encoder = n.replace("past_key_values", "present")
                feeds[n] = encoded[encoder] if ".encoder." in n else self.empty(1)
        step, seen, new, all_logits = np.array([ids], np.int64), len(ids), [], []
        for _ in range(NEW):  # the last call's logits are those of the token after the NEW-th
            outputs = self.run(name, {**feeds, "input_ids": step, "attention_mask": np.ones((1, seen), np.int64)})
            all_logits.append(outputs["logits"])
            scores = outputs["logits"][0, -1].copy()
            scores[eos] = -np.inf
            token = int(scores.argmax())
            for n in list(feeds):
                if n.startswith("past_key_values") and ".encoder." not in n:
                    feeds[n] = outputs[n.replace("past_key_values", "present")]
            new.append(token)
            step, seen = np.array([[token]], np.int64), seen + 1
        return new, all_logits


@pytest.fixture(scope="module", params=["gpt2", "llama", "bart", "t5"])
def exported(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(request.param)
    tiny(request.param).save_pretrained(folder / "hf")
    pretrained = import_hf(folder / "hf", tokenizer=False)
    export_onnx(pretrained, folder / "onnx")
    return pretrained, Graphs(folder / "onnx")


def triform_logits(pretrained, prompt: list[int], tokens: list[int]) -> torch.Tensor:
    """triform's logits for the framed prompt and the tokens after it, in one full forward pass."""
    model, specials = pretrained.model, pretrained.specials
    with torch.no_grad():
        if pretrained.config.arch == "stack":
            return model(torch.tensor([[specials.bos, *prompt, *tokens]]), "causal")[0, len(prompt) :]
        source = torch.tensor([[*prompt, specials.eos]])
        return model(source, torch.tensor([[specials.decoder_start_id, *tokens]]))[0]


def test_onnxruntime_gives_the_logits_and_greedy_tokens_of_triform(exported):
    pretrained, graphs = exported
    layout = resolve_layout(pretrained.config.arch, pretrained.specials)
    ours = generate_ids(
        pretrained.model, layout, PROMPTS, GenerationConfig(max_new_tokens=NEW, min_new_tokens=NEW, precision="fp32")
    )
    for prompt, row in zip(PROMPTS, ours):
        tokens, logits = graphs.greedy(prompt)
        assert tokens == row.tokens and len(tokens) == NEW
        # The first call reads the whole framed prompt; each later one token, through the cache.
        expected = triform_logits(pretrained, prompt, tokens)
        got = np.concatenate([logits[0][0, -1:]] + [step[0] for step in logits[1:]])
        torch.testing.assert_close(torch.from_numpy(got), expected[: len(got)], atol=1e-4, rtol=0)


def test_the_graphs_name_their_cache_as_optimum_does(exported):
    pretrained, graphs = exported
    n_layers = len(
        pretrained.model.stack.blocks if pretrained.config.arch == "stack" else pretrained.model.decoder.blocks
    )
    name = "model" if pretrained.config.arch == "stack" else "decoder"
    session = graphs.sessions[name]
    inputs = {i.name: i.shape for i in session.get_inputs()}
    middle = "" if name == "model" else "decoder."
    key = inputs[f"past_key_values.{n_layers - 1}.{middle}key"]
    assert key == ["batch_size", pretrained.config.kv_heads, "past_sequence_length", pretrained.config.head_dim]
    assert inputs["attention_mask"] == ["batch_size", "past_sequence_length + sequence_length"]
    outputs = {o.name: o.shape for o in session.get_outputs()}
    assert outputs["logits"] == ["batch_size", "sequence_length", pretrained.config.vocab_size]
    assert outputs[f"present.0.{middle}key"][2] == "past_sequence_length + sequence_length"


def test_a_batch_of_left_padded_prompts_decodes_as_each_prompt_alone(tmp_path):
    tiny("qwen2").save_pretrained(tmp_path / "hf")
    pretrained = import_hf(tmp_path / "hf", tokenizer=False)
    assert main(["convert", "--to-onnx", str(tmp_path / "hf"), "--out", str(tmp_path / "onnx")]) == 0
    graphs = Graphs(tmp_path / "onnx")
    bos = graphs.manifest["prompt_prefix"]
    rows = [bos + prompt for prompt in PROMPTS]
    longest = max(map(len, rows))
    ids = np.array([[0] * (longest - len(r)) + r for r in rows], np.int64)
    mask = np.array([[0] * (longest - len(r)) + [1] * len(r) for r in rows], np.int64)
    feeds = {n: graphs.empty(len(rows)) for n in graphs.manifest["graphs"]["model"]["inputs"][2:]}
    logits = graphs.run("model", {**feeds, "input_ids": ids, "attention_mask": mask})["logits"]
    with torch.no_grad():
        for row, prompt in enumerate(PROMPTS):
            alone = pretrained.model(torch.tensor([bos + prompt]), "causal")[0, -1]
            torch.testing.assert_close(torch.from_numpy(logits[row, -1]), alone, atol=1e-4, rtol=0)


def test_a_model_that_fills_masks_has_no_cache_to_export(tmp_path, capsys):
    tiny("bert").save_pretrained(tmp_path / "hf")
    with pytest.raises(ConversionError, match="ONNX export with a KV cache is for models that generate text"):
        export_onnx(import_hf(tmp_path / "hf", tokenizer=False), tmp_path / "onnx")
    assert main(["convert", "--to-onnx", str(tmp_path / "hf"), "--out", str(tmp_path / "onnx")]) == 1
    assert "fills masks (mlm)" in capsys.readouterr().err and not (tmp_path / "onnx").exists()
