"""Text-to-text: any task as source text -> target text on a sequence-to-sequence model (T5,
Raffel et al. 2020 §2.4): a label, an answer or a translation is simply the text to write.

It trains the body's own output head with the `seq2seq` objective and its layouts: an
encoder-decoder reads the source and writes the target; a stack reads ``source [SEP]`` as a
bidirectional prefix (UniLM, pattern "prefix") or left to right (pattern "causal") and continues
with the target. Predictions are decoded greedily by the generation engine, with the KV cache.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from triform.generate import greedy
from triform.objectives import Recipe, make_objective
from triform.objectives.modes import with_mode_token
from triform.tasks.base import Feature, Task, TaskBatch, with_id
from triform.tasks.data import Record
from triform.tasks.framing import truncate_longest_first
from triform.tasks.metrics import normalize_answer
from triform.train.evaluate import bleu_chrf


class TextToText(Task):
    name = "text2text"
    writes = True
    inputs = ("source",)
    targets = ("target",)
    metric = "exact_match"
    patterns = ("bidirectional", "causal", "prefix")  # a stack reads the source as a prefix

    def __init__(self, framing, tokenizer, *, max_target_tokens: int | None = None, lm_weight: float = 0.0):
        if lm_weight:
            raise ValueError("lm_weight: text2text trains the language model itself; the auxiliary loss is for heads")
        super().__init__(framing, tokenizer)
        self.max_target_tokens = max_target_tokens or framing.max_len // 4  # until fit() reads the data
        pattern = None if framing.arch == "encoder-decoder" else framing.pattern
        vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)
        self.objective = make_objective("seq2seq", framing.specials, vocab_size, arch=framing.arch, pattern=pattern)

    def fit(self, records: list[Record]) -> None:
        """The longest target of the training data bounds what generation writes."""
        longest = max(len(self.tokens(self.text(r, "target"))) for r in records)
        self.max_target_tokens = min(longest + 1, self.framing.max_len - 2)

    def state(self) -> dict:
        return {**super().state(), "max_target_tokens": self.max_target_tokens}

    @property
    def mode(self) -> str | None:
        """The name of the mode token the body reads first (UL2), if any."""
        names = {token: name for name, token in self.framing.specials.modes}
        return None if self.framing.mode is None else names[self.framing.mode]

    def body_extra(self) -> dict:
        """How generation tools (`triform generate`, `translate`) should read the saved model."""
        return {"recipe": Recipe("seq2seq", self.objective.pattern, mode=self.mode).to_dict()}

    def build_model(self, body: nn.Module) -> nn.Module:
        return body  # the body's own output head writes the target

    def encode(self, record: Record, index: int, with_targets: bool) -> list[Feature]:
        """Truncated so the framing fits max_len: `source [EOS]` and `[BOS] target` on an
        encoder-decoder, `source [SEP] target [EOS]` on a stack (room left for generation)."""
        source = self.tokens(self.text(record, "source"))
        target = self.tokens(self.text(record, "target")) if with_targets else None
        max_len = self.framing.max_len
        if self.framing.arch == "encoder-decoder":
            source = source[: max_len - 1 - len(self.framing.lead)]
            target = None if target is None else target[: max_len - 1]
        elif target is not None:
            source, target = truncate_longest_first([source, target], max_len - 2 - len(self.framing.lead))
        else:
            source = source[: max(1, max_len - 2 - len(self.framing.lead) - self.max_target_tokens)]
        return [Feature(index, [], target, {"source": source})]

    def make_batch(self, features: list[Feature], generator=None) -> TaskBatch:
        if features[0].target is None:
            raise ValueError("text2text batches are for training; predict() generates")
        prepared = self.objective.prepare([(f.info["source"], f.target) for f in features], generator)
        if self.framing.mode is not None:
            prepared = with_mode_token(prepared, self.framing.mode, self.framing.specials.pad)
        token_types = prepared.token_types if prepared.token_types is not None else torch.zeros_like(prepared.ids)
        return TaskBatch(
            prepared.ids,
            prepared.padding_mask,
            token_types,
            features,
            body_batch=prepared,
            source_ids=prepared.source_ids,
        )

    def loss(self, outputs: Tensor, batch: TaskBatch) -> Tensor:
        return self.objective.loss(outputs, batch.body_batch)

    @torch.no_grad()
    def predict(self, model: nn.Module, records: list[Record], batch_size: int = 32, progress=None) -> list[dict]:
        features = self.encode_all(records, with_targets=False)
        written: list[list[int]] = []
        for start in range(0, len(features), batch_size):
            sources = [f.info["source"] for f in features[start : start + batch_size]]
            written += greedy(
                model,
                sources,
                self.framing.specials,
                max_new_tokens=self.max_target_tokens,
                objective="seq2seq",
                pattern=self.objective.pattern,
                mode=self.mode,
            )
            if progress is not None:
                progress(len(written), len(features))
        decoded = [{"target": self.tokenizer.decode(ids, skip_special_tokens=True)} for ids in written]
        return [with_id(record, prediction) for record, prediction in zip(records, decoded)]

    def metrics_of(self, predictions: list[dict], records: list[Record]) -> dict[str, float]:
        """Exact match after SQuAD's normalisation: for a task cast as text (a label, an answer), its
        accuracy; and corpus BLEU and chrF (sacrebleu) for free text."""
        predicted = [p["target"] for p in predictions]
        references = [self.text(r, "target") for r in records]
        same = [normalize_answer(p) == normalize_answer(r) for p, r in zip(predicted, references)]
        scores = bleu_chrf(predicted, references)
        return {"exact_match": 100.0 * sum(same) / len(same), "bleu": scores["bleu"], "chrf": scores["chrf"]}
