"""Text-to-text: any task as source text -> target text on a sequence-to-sequence model (T5,
Raffel et al. 2020 §2.4): a label, an answer or a translation is simply the text to write.

It trains with the `seq2seq` objective and its layouts: an encoder-decoder reads the source and
writes the target; a stack reads ``source [SEP]`` as a bidirectional prefix (UniLM, pattern
"prefix") or left to right (pattern "causal") and continues with the target. Predictions are
decoded greedily with the KV cache.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from triform.objectives import make_objective
from triform.objectives.batch import pad
from triform.tasks.base import Feature, Task, TaskBatch
from triform.tasks.data import Record
from triform.tasks.layout import truncate_longest_first
from triform.tasks.metrics import normalize_answer


class TextToText(Task):
    name = "text2text"
    inputs = ("source",)
    targets = ("target",)

    def __init__(self, layout, tokenizer, *, max_target_tokens: int | None = None, lm_weight: float = 0.0):
        if lm_weight:
            raise ValueError("lm_weight: text2text already trains a language model; the auxiliary loss is for heads")
        super().__init__(layout, tokenizer)
        self.objective = None
        self.max_target_tokens = max_target_tokens or layout.max_len // 4  # until fit() reads the data

    def fit(self, records: list[Record]) -> None:
        """The longest target of the training data bounds what generation writes."""
        longest = max(len(self.tokens(self.text(r, "target"))) for r in records)
        self.max_target_tokens = min(longest + 1, self.layout.max_len - 2)

    def state(self) -> dict:
        return {**super().state(), "max_target_tokens": self.max_target_tokens}

    def build_model(self, body: nn.Module) -> nn.Module:
        return body  # the body's own output head writes the target

    def text(self, record: Record, column: str) -> str:
        value = record.require(column)
        if not isinstance(value, str):
            raise record.error(f"{column!r} must be text, got {value!r}")
        return value

    def fit_lengths(self, source: list[int], target: list[int]) -> tuple[list[int], list[int]]:
        """Truncate so the layout fits max_len: `source [EOS]` and `[BOS] target` on an encoder-decoder,
        `source [SEP] target [EOS]` on a stack."""
        if self.layout.arch == "encoder-decoder":
            room = self.layout.max_len - 1
            return source[:room], target[:room]
        source, target = truncate_longest_first([source, target], self.layout.max_len - 2)
        return source, target

    def encode(self, record: Record, index: int, with_targets: bool) -> list[Feature]:
        source = self.tokens(self.text(record, "source"))
        target = self.tokens(self.text(record, "target")) if with_targets else []
        if not with_targets:  # leave room for what generation will write
            source = source[: self.layout.max_len - 2 - (0 if self.layout.arch == "encoder-decoder" else self.max_target_tokens)]
        source, target = self.fit_lengths(source, target)
        return [Feature(index, [], target if with_targets else None, {"source": source})]

    def seq2seq(self, vocab_size: int):
        if self.objective is None:
            pattern = None if self.layout.arch == "encoder-decoder" else self.layout.pattern
            self.objective = make_objective("seq2seq", self.layout.specials, vocab_size, arch=self.layout.arch, pattern=pattern)
        return self.objective

    def collate(self, features: list[Feature]) -> TaskBatch:
        sources = [f.info["source"] for f in features]
        ids, padding_mask = pad(sources, self.layout.specials.pad)
        batch = TaskBatch(ids, padding_mask, torch.zeros_like(ids), features)
        if features[0].target is not None:
            batch.targets = [(f.info["source"], f.target) for f in features]
        return batch

    def loss(self, model: nn.Module, batch: TaskBatch) -> Tensor:
        objective = self.seq2seq(model.config.vocab_size)
        prepared = objective.prepare(batch.targets).to(batch.ids.device)
        return objective.loss(model(**prepared.model_inputs()), prepared)

    @torch.no_grad()
    def predict(self, model: nn.Module, records: list[Record], batch_size: int = 32) -> list[dict]:
        features = self.encode_all(records, with_targets=False)
        was_training = model.training
        model.eval()
        try:
            written: list[list[int]] = []
            for start in range(0, len(features), batch_size):
                sources = [f.info["source"] for f in features[start : start + batch_size]]
                written += greedy(model, sources, self.layout, self.max_target_tokens)
        finally:
            model.train(was_training)
        predictions = []
        for record, ids in zip(records, written):
            prediction = {"target": self.tokenizer.decode(ids, skip_special_tokens=True)}
            predictions.append({"id": record.get("id"), **prediction} if record.get("id") is not None else prediction)
        return predictions

    def evaluate(self, predictions: list[dict], records: list[Record]) -> dict[str, float]:
        """Exact match after SQuAD's normalisation: for a task cast as text (a label, an answer),
        this is its accuracy."""
        same = [
            normalize_answer(p["target"]) == normalize_answer(self.text(r, "target")) for p, r in zip(predictions, records)
        ]
        return {"exact_match": 100.0 * sum(same) / len(same)}


def greedy(model: nn.Module, sources: list[list[int]], layout, max_new_tokens: int) -> list[list[int]]:
    """The most likely next token at each step until [EOS], for a batch of sources."""
    specials, batch_size = layout.specials, len(sources)
    if layout.arch == "encoder-decoder":
        source_ids, source_mask = pad([s + [specials.eos] for s in sources], specials.pad)
        device = next(model.parameters()).device
        source_ids = source_ids.to(device)
        source_mask = None if source_mask is None else source_mask.to(device)
        memory = model.encode(source_ids, source_mask)
        cache = model.new_cache(batch_size, capacity=max_new_tokens + 1)
        ids = torch.full((batch_size, 1), specials.bos, dtype=torch.long, device=device)

        def step(ids: Tensor, first: bool) -> Tensor:
            return model.decode(ids, memory, memory_padding_mask=source_mask, cache=cache)[:, -1]

    else:
        prompt, padding_mask = pad([s + [specials.sep] for s in sources], specials.pad, side="left")
        device = next(model.parameters()).device
        ids = prompt.to(device)
        padding_mask = (torch.ones_like(ids, dtype=torch.bool) if padding_mask is None else padding_mask).to(device)
        cache = model.new_cache(batch_size, capacity=ids.shape[1] + max_new_tokens)
        prefix = torch.full((batch_size,), ids.shape[1], device=device) if layout.pattern == "prefix" else None

        def step(ids: Tensor, first: bool) -> Tensor:
            nonlocal padding_mask
            if not first:
                padding_mask = torch.cat([padding_mask, padding_mask.new_ones(batch_size, 1)], dim=1)
            token_types = torch.full_like(ids, 0 if first else 1)  # the seq2seq layout: source 0, target 1
            pattern = layout.pattern if first else "causal"  # one new token sees everything cached either way
            logits = model(ids, pattern, padding_mask=padding_mask, prefix_lengths=prefix if first else None,
                           token_types=token_types, cache=cache)  # fmt: skip
            return logits[:, -1]

    written = [[] for _ in range(batch_size)]
    finished = torch.zeros(batch_size, dtype=torch.bool, device=device)
    logits = step(ids, True)
    for _ in range(max_new_tokens):
        token = logits.argmax(-1)  # (B,)
        for row in (~finished).nonzero().flatten().tolist():
            if int(token[row]) != specials.eos:
                written[row].append(int(token[row]))
        finished |= token == specials.eos
        if bool(finished.all()):
            break
        logits = step(token[:, None], False)
    return written
