"""Sentence embeddings from any body: its final hidden states pooled into one vector per text (the
mean over real tokens, the first token, or the last real token), optionally L2-normalised, as
sentence-transformers' Pooling and Normalize modules compute them (Reimers & Gurevych 2019).

A text is framed as the tasks frame one text (tasks/framing.py): ``[CLS] text [SEP]`` on a stack read
bidirectionally, ``[BOS] text [EOS]`` on a causal stack. An encoder-decoder is embedded by its
encoder, which reads the text bidirectionally, as Sentence-T5 does (Ni et al. 2022).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from triform.checkpoint import Pretrained, load_model
from triform.errors import TriformError
from triform.models.modes import evaluation
from triform.objectives import read_recipe
from triform.objectives.batch import pad
from triform.tasks.framing import Framing
from triform.tasks.model import body_states
from triform.vocab import SpecialTokens, unpadded

POOLINGS = ("mean", "cls", "last")
Progress = Callable[[int, int], None]  # (texts embedded, their tokens), after each batch


@dataclass(frozen=True)
class Pooling:
    how: str = "mean"  # mean, cls (the first token) or last (the last real token)
    normalize: bool = False  # L2-normalise each vector (cosine similarity becomes a dot product)

    def __post_init__(self):
        if self.how not in POOLINGS:
            raise TriformError(f"pooling: expected one of {list(POOLINGS)}, got {self.how!r}")

    @classmethod
    def default_for(cls, arch: str, pattern: str) -> Pooling:
        """Mean pooling where every token sees the whole text (a bidirectional stack, an encoder);
        the last token on a causal stack, the only one that has read everything."""
        return cls("last" if arch == "stack" and pattern == "causal" else "mean")


def pool(states: Tensor, padding_mask: Tensor | None, how: str) -> Tensor:
    """(N, T, d) hidden states of right-padded rows -> (N, d)."""
    if how == "cls":
        return states[:, 0]
    if padding_mask is None:
        return states.mean(1) if how == "mean" else states[:, -1]
    if how == "mean":
        weights = padding_mask.to(states.dtype)[..., None]  # (N, T, 1)
        return (states * weights).sum(1) / weights.sum(1).clamp(min=1)
    last = padding_mask.long().sum(-1) - 1  # (N,)
    return states[torch.arange(states.shape[0], device=states.device), last]


def embed_states(body: nn.Module, framing: Framing, ids: Tensor, padding_mask: Tensor | None) -> Tensor:
    """The hidden states embeddings are pooled from: the encoder's for an encoder-decoder."""
    if framing.arch == "encoder-decoder":
        return body.encode(ids, padding_mask)
    return body_states(body, framing, ids, padding_mask)


class EmbeddingModel(nn.Module):
    """A body whose forward gives one pooled vector per row, what contrastive fine-tuning trains
    (tasks/contrastive.py). It holds the body's own modules under their own names and no tensors of
    its own, so its state dict is the body's: the folder it is saved as is a plain model folder, which
    `triform embed`, `Embedder.load`, `triform serve` and `triform convert` read as the body."""

    # The vectors never reach the output head (nor, on an encoder-decoder, the decoder): those
    # parameters get no gradient, which DistributedDataParallel must be told (train/distributed.py).
    has_unused_parameters = True

    def __init__(self, body: nn.Module, framing: Framing, pooling: Pooling):
        super().__init__()
        if (
            next(body.parameters(recurse=False), None) is not None
            or next(body.buffers(recurse=False), None) is not None
        ):
            raise ValueError("an EmbeddingModel takes over a body's modules; this body holds tensors of its own")
        for name, module in body.named_children():
            self.add_module(name, module)
        self.__dict__["body"] = body  # not a submodule: its modules are already this model's
        self.config, self.arch, self.framing, self.pooling = body.config, body.arch, framing, pooling

    def train(self, mode: bool = True) -> EmbeddingModel:
        super().train(mode)
        self.body.training = mode  # the body's own flag, which its modules' flags do not set
        return self

    def forward(
        self, ids: Tensor, padding_mask: Tensor | None = None, token_types: Tensor | None = None, **_
    ) -> Tensor:
        """(N, T) framed rows -> (N, d_model) pooled vectors, not normalised (the loss takes cosines).
        Rows are single texts, so segment ids (`token_types`, all 0) are not read."""
        return pool(embed_states(self.body, self.framing, ids, padding_mask), padding_mask, self.pooling.how)


class Embedder:
    """Text in, vectors out, for one body."""

    def __init__(self, body: nn.Module, tokenizer, framing: Framing, pooling: Pooling):
        self.body, self.tokenizer, self.framing, self.pooling = body, unpadded(tokenizer), framing, pooling

    @classmethod
    def load(
        cls,
        directory: str | os.PathLike,
        *,
        pooling: str | None = None,
        normalize: bool | None = None,
        device: str = "cpu",
        max_len: int | None = None,
    ) -> Embedder:
        """A model folder, read as its recipe says it was trained; its pooling is the one it was
        imported with (a sentence-transformers folder's 1_Pooling) or the default for its body,
        unless `pooling` / `normalize` say otherwise."""
        loaded = load_model(directory, device=device)
        if loaded.tokenizer is None:
            raise TriformError(f"{directory}: no tokenizer.json; embedding text needs the model's tokenizer")
        return cls.of(loaded, pooling=pooling, normalize=normalize, max_len=max_len)

    @classmethod
    def of(
        cls,
        loaded: Pretrained,
        *,
        pooling: str | None = None,
        normalize: bool | None = None,
        max_len: int | None = None,
    ) -> Embedder:
        """The Embedder of a model already loaded (`triform.checkpoint.load_model`), as `load` makes it."""
        specials = loaded.specials or SpecialTokens.from_tokenizer(loaded.tokenizer)
        arch = loaded.config.arch
        recipe = read_recipe(loaded.extra, arch)
        part = recipe.part(arch, need="read")
        mode = None if part.mode is None else specials.mode(part.mode, "embeddings of this model")  # as pretrained
        saved = loaded.extra.get("pooling") or {}
        # Read as the embeddings were fine-tuned (`finetune --task embed --pattern ...`), else as the recipe says.
        pattern = saved.get("pattern") or recipe.body_pattern(arch, writes=False)
        framing = Framing(arch, pattern, specials, max_len or loaded.config.max_len, mode)
        chosen = Pooling.default_for(arch, pattern)
        chosen = Pooling(
            pooling or saved.get("how", chosen.how),
            normalize if normalize is not None else saved.get("normalize", False),
        )
        return cls(loaded.model, loaded.tokenizer, framing, chosen)

    @property
    def dimension(self) -> int:
        return self.body.config.d_model

    def token_ids(self, texts: list[str]) -> list[list[int]]:
        return [self.framing.join(self.tokenizer.encode(text, add_special_tokens=False).ids).ids for text in texts]

    def embed(self, texts: list[str], *, batch_size: int = 32, progress: Progress | None = None) -> Tensor:
        """(len(texts), d_model) float32 vectors, in the order of `texts`."""
        return self.embed_ids(self.token_ids(list(texts)), batch_size=batch_size, progress=progress)

    @torch.no_grad()
    def embed_ids(self, rows: list[list[int]], *, batch_size: int = 32, progress: Progress | None = None) -> Tensor:
        """(len(rows), d_model) float32 vectors of texts already framed (`token_ids`), in order;
        `progress(texts done, tokens done)` after each batch, where given."""
        device = next(self.body.parameters()).device
        order = sorted(range(len(rows)), key=lambda i: -len(rows[i]))  # similar lengths: little padding
        vectors, tokens = torch.empty(len(rows), self.dimension), 0
        with evaluation(self.body):
            for start in range(0, len(order), batch_size):
                chunk = order[start : start + batch_size]
                ids, mask = pad([rows[i] for i in chunk], self.framing.specials.pad)
                ids, mask = ids.to(device), None if mask is None else mask.to(device)
                pooled = pool(embed_states(self.body, self.framing, ids, mask).float(), mask, self.pooling.how)
                if self.pooling.normalize:
                    pooled = F.normalize(pooled, dim=-1)
                vectors[chunk] = pooled.cpu()
                tokens += sum(len(rows[i]) for i in chunk)
                if progress is not None:
                    progress(start + len(chunk), tokens)
        return vectors
