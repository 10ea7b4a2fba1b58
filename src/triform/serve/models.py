"""A model folder behind the server: what it can do is decided by the folder (its recipe: objective and
pattern; its task head), never by the user.

- a model that continues text (a stack trained with clm): completions, embeddings;
- a source -> target model (an encoder-decoder, a stack trained with seq2seq, span, denoise or
  prefix-lm): completions (the source's target), translate, embeddings;
- a model that fills masks (a stack trained with mlm): fill-mask, embeddings;
- a fine-tuned task head: predict (text2text heads also write: completions and translate; a body
  fine-tuned for embeddings also embeds).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from triform.checkpoint import load_model, model_folder, read_config
from triform.errors import TriformError
from triform.generate import TextGenerator
from triform.objectives import Recipe, read_recipe
from triform.tasks.checkpoint import load_task_model
from triform.tasks.embed import Embedder, EmbeddingModel
from triform.vocab import SpecialTokens

COMPLETIONS, TRANSLATE, FILL_MASK, EMBEDDINGS, PREDICT = (
    "completions",
    "translate",
    "fill-mask",
    "embeddings",
    "predict",
)


@dataclass
class ServedModel:
    name: str
    folder: Path
    model: object  # the nn.Module every endpoint of this model runs
    tokenizer: object
    specials: SpecialTokens
    recipe: Recipe
    generator: TextGenerator | None = None  # writes text, or fills masks
    embedder: Embedder | None = None
    task: object | None = None  # a fine-tuned head's Task
    tasks: list[str] = field(default_factory=list)

    @property
    def config(self):
        return self.model.config

    @property
    def arch(self) -> str:
        return self.config.arch

    def can(self, task: str) -> bool:
        return task in self.tasks

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def describe(self) -> dict:
        """What GET /v1/models says of the model, beyond OpenAI's fields."""
        config = self.config
        info = {
            "tasks": list(self.tasks),
            "arch": self.arch,
            "objective": self.recipe.objective,
            "pattern": self.recipe.resolved(self.arch).pattern,
            "max_len": config.max_len,
            "d_model": config.d_model,
            "n_layers": config.n_layers,
            "vocab_size": config.vocab_size,
            "parameters": sum(p.numel() for p in self.model.parameters()),
        }
        if self.task is not None:
            state = self.task.state()
            info["task"] = {"name": state["name"], "inputs": list(self.task.inputs)}
            if state.get("labels") is not None:
                info["task"]["labels"] = list(state["labels"])
        return info


def model_name(folder: str | os.PathLike) -> str:
    """runs/gpt/model -> "gpt" (a run's model/ or best/ takes the run's name); other folders their own."""
    path = Path(folder).resolve()
    return path.parent.name if path.name in ("model", "best") and path.parent.name else path.name


def load_served(name: str, folder: str | os.PathLike, device: str = "cpu") -> ServedModel:
    folder = model_folder(folder)  # a run folder: the model it holds
    extra = read_config(folder).get("extra") or {}
    if "task" in extra:
        return load_task_head(name, folder, device)
    loaded = load_model(folder, device=device)
    if loaded.tokenizer is None:
        raise TriformError(f"{folder}: no tokenizer.json; serving a model needs its tokenizer")
    specials = loaded.specials or SpecialTokens.from_tokenizer(loaded.tokenizer, source=f"{folder}/tokenizer.json")
    recipe = read_recipe(loaded.extra, loaded.config.arch, f"{folder}/config.json")
    model = loaded.model.eval()
    generator = TextGenerator(model, loaded.tokenizer, specials, recipe=recipe)
    served = ServedModel(name, folder, model, loaded.tokenizer, specials, recipe, generator, Embedder.of(loaded))
    # A model that writes no text (electra's discriminator) is served for embeddings; a mixture-trained
    # model may both fill masks and generate.
    writes = recipe.writes(loaded.config.arch)
    served.tasks = [FILL_MASK] if writes and generator.fills_masks else []
    if writes and generator.generates:
        served.tasks += [COMPLETIONS, TRANSLATE] if generator.layout.writes_target else [COMPLETIONS]
    served.tasks.append(EMBEDDINGS)
    return served


def load_task_head(name: str, folder: Path, device: str) -> ServedModel:
    model, task, extra = load_task_model(folder, device)
    specials = task.framing.specials
    recipe = read_recipe(extra, model.config.arch, f"{folder}/config.json")
    served = ServedModel(name, folder, model, task.tokenizer, specials, recipe, task=task, tasks=[PREDICT])
    if task.writes:  # text2text: the body's own head writes the target, as `triform translate` reads it
        served.generator = TextGenerator(model, task.tokenizer, specials, recipe=recipe)
        served.tasks += [COMPLETIONS, TRANSLATE]
    if isinstance(model, EmbeddingModel):  # `finetune --task embed`: the body's vectors, pooled as trained
        served.embedder = Embedder(model.body, task.tokenizer, task.framing, model.pooling)
        served.tasks += [EMBEDDINGS]
    return served
