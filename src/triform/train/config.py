"""The training configuration: typed dataclasses, read from TOML or YAML and the command line.

`--preset tiny-gpt` picks a model and its objective; every model field can be overridden
(`--model.n_layers 4`), as can the objective (`--objective.name mlm --objective.pattern causal`)
and its own options, one section per objective (`--objective.mlm.rate 0.2`).
Model fields left unset come from the preset, or from ModelConfig's defaults without one, which is
why they are optional here. `resolve` turns the parsed values into a checked `Resolved` run.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal, Optional, Union, get_type_hints

from triform.checkpoint import CONFIG_FILE, TOKENIZER_FILE, model_folder, read_config
from triform.config import ModelConfig
from triform.data.batches import TooLong
from triform.data.readers import DataSource, Field, Format
from triform.errors import ConfigError
from triform.models.lora import LoraOptions
from triform.models.presets import get_preset
from triform.objectives import OBJECTIVE_CLASSES, PACKS, Recipe, objective_class, read_recipe
from triform.objectives.mixture import Mixture
from triform.precision import Precision

Pattern = Literal["bidirectional", "causal", "prefix", "right-to-left"]
Schedule = Literal["cosine", "linear", "inverse-sqrt", "constant"]
Pack = Literal[PACKS]  # type: ignore[valid-type]
ObjectiveName = Literal[tuple(OBJECTIVE_CLASSES)]  # type: ignore[valid-type]


def optional_fields(cls: type, name: str, doc: str) -> type:
    """A dataclass with every field of `cls`, optional: None means "not set here"."""
    hints = get_type_hints(cls)
    made = dataclasses.make_dataclass(name, [(f.name, Optional[hints[f.name]], None) for f in dataclasses.fields(cls)])
    made.__doc__, made.__module__ = doc, __name__
    return made


ModelOverrides = optional_fields(
    ModelConfig, "ModelOverrides", "Model fields to set; unset fields come from the preset."
)


def section_name(objective: str) -> str:
    """The configuration section of an objective's own options: `objective.mlm`, `objective.prefix_lm`."""
    return objective.replace("-", "_")


# One section per objective that has options of its own, made from the objective's Options: the
# objective owns them, and setting another objective's section is refused by name (resolve). A
# mixture's options are `objective.mix` and `objective.mode_tokens` instead.
SECTIONS = {
    section_name(name): optional_fields(cls.Options, f"{cls.__name__}Options", f"Options of the {name} objective.")
    for name, cls in OBJECTIVE_CLASSES.items()
    if dataclasses.fields(cls.Options) and not issubclass(cls, Mixture)
}
MIXTURE_OPTIONS = ("mix", "mode_tokens")
ObjectiveConfig = dataclasses.make_dataclass(
    "ObjectiveConfig",
    [
        ("name", Optional[ObjectiveName], None),
        ("pattern", Optional[Pattern], None),
        ("label_smoothing", Optional[float], None),
        # A mixture: {"clm": 0.5, "mlm@causal": 0.5}, or a list of parts (objectives/mixture.py).
        ("mix", Optional[Union[dict[str, Any], list[Any]]], None),
        ("mode_tokens", Optional[bool], None),  # a mixture's mode tokens (UL2's [NLU], [NLG], [S2S])
        *((section, options, field(default_factory=options)) for section, options in SECTIONS.items()),
    ],
)
ObjectiveConfig.__module__ = __name__
ObjectiveConfig.__doc__ = (
    "The objective, its attention pattern and its options (`objective.mlm.rate`); None takes the "
    "preset's (or clm) and the pair's default."
)


@dataclass
class DataConfig:
    """Training and validation data: prepared shard folders, or files read and tokenized at start."""

    train: str = ""
    valid: Optional[str] = None
    format: Format = "auto"
    document: Literal["line", "paragraph"] = "line"
    text_field: Field = None
    source_field: Field = None
    target_field: Field = None
    header: Optional[bool] = None
    target_path: Optional[str] = None  # parallel data as two aligned files: the training target side
    valid_target_path: Optional[str] = None
    too_long: TooLong = "error"  # a seq2seq pair longer than model.max_len: error, skip or truncate
    # seq2seq pairs: batches of similar lengths (less padding, Vaswani et al. §5.1); false: plain
    # shuffled batches, for data whose length goes with its content (a long number is a large one),
    # where batches of one length each would show the model one kind of example at a time.
    # Language-model windows all have one length, so it changes nothing for them.
    bucket: bool = True
    # Language-model windows pack several documents: `documents` attends and places each as if it
    # stood alone (the objective's pattern within each document, positions from each one's start);
    # `stream` lets them attend across the [EOS] between them, as GPT-2 packs its text.
    pack: Pack = "documents"

    def source(self, which: str = "train") -> DataSource:
        path = self.train if which == "train" else self.valid
        target = self.target_path if which == "train" else self.valid_target_path
        return DataSource(
            path, self.format, self.document, self.text_field, self.source_field, self.target_field, self.header, target
        )


@dataclass
class TokenizerConfig:
    """An existing tokenizer.json, or how to train one on the training data."""

    path: Optional[str] = None
    kind: Literal["auto", "bpe", "wordpiece", "unigram"] = "auto"  # auto: as the objective's reference model
    vocab_size: Optional[int] = None  # None: model.vocab_size
    min_frequency: int = 2
    sentinels: int = 100


@dataclass
class OptimConfig:
    """AdamW (Loshchilov & Hutter 2019) with a warmup and a decay schedule."""

    lr: float = 1e-3
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.98
    eps: float = 1e-8
    schedule: Schedule = "cosine"
    warmup_steps: int = 100
    final_lr_ratio: float = 0.1  # cosine and linear end at lr * final_lr_ratio
    clip: float = 1.0  # gradient norm clipping; 0 turns it off


@dataclass
class LoopConfig:
    """How long to train and how often to log, evaluate and checkpoint."""

    steps: int = 1000
    batch_size: int = 32  # examples per optimizer step, over all processes and accumulation steps
    grad_accum: int = 1
    seed: int = 0
    precision: Precision = "auto"  # auto: bf16 autocast on CUDA and on CPUs with AVX512-BF16 or AMX
    compile: bool = False
    # torch.compile each block on its own (nn/block.py compile_blocks) rather than the whole model.
    # Off by default: on an Intel Xeon with AMX (benchmarks/run.py's GPT, one thread) its steps were
    # 8 % slower than eager ones in bf16 and 6 % in fp32, where eager runs the kernels calibration chose.
    compile_blocks: bool = False
    device: Literal["auto", "cpu", "cuda"] = "auto"
    strategy: Literal["ddp", "fsdp"] = "ddp"  # with several processes
    log_every: int = 10
    eval_every: int = 200
    eval_batches: int = 20  # 0: the whole validation set
    checkpoint_every: int = 200
    keep_last: int = 2
    time_limit: Optional[float] = None  # minutes; stops with a checkpoint when reached
    tensorboard: bool = False  # also write TensorBoard events under run_dir/tensorboard
    # Recompute each block in the backward pass instead of keeping its activations (Chen et al. 2016).
    activation_checkpointing: bool = False
    # On a CPU, keep freed host memory in the process for the next step instead of handing it back to
    # the OS (glibc only; kernels/host_memory.py): GPT-2 small's steps at 8 x 512 tokens 25-52 % faster,
    # but its peak RSS up to 2.2 times as high (LoRA), so off.
    keep_freed_memory: bool = False


@dataclass
class RunConfig:
    run_dir: str = "runs/triform"
    preset: Optional[str] = None
    init: Optional[str] = None  # a model folder to start from: its config, tokenizer, recipe and weights
    resume: bool = False
    model: ModelOverrides = field(default_factory=ModelOverrides)  # type: ignore[valid-type]
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: LoopConfig = field(default_factory=LoopConfig)
    lora: LoraOptions = field(default_factory=LoraOptions)


@dataclass
class Resolved:
    """A run with every choice made: the model, and the recipe (objective, pattern, options)."""

    config: RunConfig
    model: ModelConfig
    recipe: Recipe

    @property
    def objective(self) -> str:
        return self.recipe.objective

    @property
    def pattern(self) -> str:
        return self.recipe.pattern

    def to_dict(self) -> dict:
        """The configuration to save with the run; loading it back gives the same run."""
        values = dataclasses.asdict(self.config)
        values["model"] = self.model.to_dict()
        objective = {"name": self.recipe.objective, "pattern": self.recipe.pattern}
        objective["label_smoothing"] = self.recipe.label_smoothing
        if section_name(self.recipe.objective) in SECTIONS:
            objective[section_name(self.recipe.objective)] = dataclasses.asdict(self.recipe.options)
        for name in MIXTURE_OPTIONS:
            if hasattr(self.recipe.options, name):
                value = getattr(self.recipe.options, name)
                objective[name] = [dict(part) for part in value] if name == "mix" else value
        values["objective"] = objective
        values["resume"] = False
        return values


def resolve(config: RunConfig) -> Resolved:
    preset = get_preset(config.preset) if config.preset else None
    base = preset.model if preset else ModelConfig()
    chosen = config.objective
    if config.init:
        base, chosen = from_init(config)
    overrides = {k: v for k, v in dataclasses.asdict(config.model).items() if v is not None}
    model = base.replace(**overrides)  # validates, naming the field
    recipe = dataclasses.replace(resolve_recipe(chosen, model.arch, preset), pack=config.data.pack)
    check_loop(config)
    check_lora(config)
    if not config.data.train:
        raise ConfigError("data.train: expected a file, folder, glob or prepared corpus to train on")
    return Resolved(config, model, recipe)


def from_init(config: RunConfig):
    """Training from a model folder (`--init`): its model config, its tokenizer unless another is
    given, and its objective and pattern unless the configuration names them."""
    if config.preset:
        raise ConfigError("preset: --init takes the model from its folder; drop --preset")
    config.init = str(model_folder(config.init))  # a run folder: the model it holds
    document = read_config(config.init)
    base = ModelConfig.from_dict(document.get("model", {}), source=f"{config.init}/{CONFIG_FILE}")
    if not config.tokenizer.path:
        config.tokenizer.path = f"{config.init}/{TOKENIZER_FILE}"
    chosen = config.objective
    if chosen.name is None:
        recipe = read_recipe(document.get("extra") or {}, base.arch, f"{config.init}/{CONFIG_FILE}")
        chosen = dataclasses.replace(chosen, name=recipe.objective, pattern=chosen.pattern or recipe.pattern)
    return base, chosen


def check_lora(config) -> None:
    """LoRA options, for `triform train` and `triform finetune` alike."""
    config.lora.check()
    if config.lora.enabled and config.train.strategy == "fsdp":
        raise ConfigError("lora.rank: adapters train on ddp; fsdp shards whole stacks")
    if config.lora.enabled and not getattr(config, "init", None):
        raise ConfigError("lora.rank: adapters need a trained model to adapt; give it with --init MODEL_FOLDER")


def resolve_recipe(chosen, arch: str, preset=None) -> Recipe:
    """The objective, its pattern and options: the preset's where the configuration sets none."""
    name = chosen.name or ("mixture" if chosen.mix is not None else preset.objective if preset else "clm")
    values = dict(preset.objective_options) if preset and preset.objective == name else {}
    own = {f.name for f in dataclasses.fields(objective_class(name).Options)}
    for option in MIXTURE_OPTIONS:
        given = getattr(chosen, option)
        if given is not None and option not in own:
            raise ConfigError(f"objective.{option}: applies to a mixture (objective.mix, ul2, unilm), not {name}")
        if given is not None:
            values[option] = given
    for section in SECTIONS:
        given = {k: v for k, v in dataclasses.asdict(getattr(chosen, section)).items() if v is not None}
        if given and section != section_name(name):
            owner = next(n for n in OBJECTIVE_CLASSES if section_name(n) == section)
            raise ConfigError(f"objective.{section}.{next(iter(given))}: applies to the {owner} objective, not {name}")
        values.update(given)
    smoothing = values.pop("label_smoothing", 0.0)
    if chosen.label_smoothing is not None:
        smoothing = chosen.label_smoothing
    if not 0.0 <= smoothing < 1.0:
        raise ConfigError(f"objective.label_smoothing: expected a value in [0, 1), got {smoothing}")
    options = objective_class(name).options_from(values, "objective")
    pattern = objective_class(name).pattern_on(arch, chosen.pattern, options)  # a refused part is named now
    return Recipe(name, pattern, options, smoothing)


def check_loop(config: RunConfig) -> None:
    loop, optim = config.train, config.optim
    for name in ("steps", "batch_size", "grad_accum", "log_every", "eval_every", "checkpoint_every", "keep_last"):
        if getattr(loop, name) < 1:
            raise ConfigError(f"train.{name}: expected a positive integer, got {getattr(loop, name)}")
    if loop.batch_size % loop.grad_accum:
        raise ConfigError(f"train.batch_size: {loop.batch_size} is not divisible by train.grad_accum {loop.grad_accum}")
    if loop.eval_batches < 0:
        raise ConfigError(f"train.eval_batches: expected 0 or more, got {loop.eval_batches}")
    if loop.time_limit is not None and loop.time_limit <= 0:
        raise ConfigError(f"train.time_limit: expected a positive number of minutes, got {loop.time_limit}")
    if optim.lr <= 0:
        raise ConfigError(f"optim.lr: expected a positive learning rate, got {optim.lr}")
    if optim.warmup_steps < 0:
        raise ConfigError(f"optim.warmup_steps: expected 0 or more, got {optim.warmup_steps}")
    if not 0 <= optim.final_lr_ratio <= 1:
        raise ConfigError(f"optim.final_lr_ratio: expected a value in [0, 1], got {optim.final_lr_ratio}")
    if optim.clip < 0:
        raise ConfigError(f"optim.clip: expected 0 (off) or a positive norm, got {optim.clip}")
    for name in ("beta1", "beta2"):
        if not 0 <= getattr(optim, name) < 1:
            raise ConfigError(f"optim.{name}: expected a value in [0, 1), got {getattr(optim, name)}")


CONFIG_MODE = "triform"  # jsonargparse parser mode: TOML for *.toml files, YAML (and JSON) otherwise


def load_config_text(value: str, path: str | None = None):
    """Parse a configuration file's text (or a command-line value) as TOML or YAML."""
    if path is not None and str(path).endswith(".toml"):
        try:
            import tomllib
        except ModuleNotFoundError:  # Python 3.10
            import tomli as tomllib
        try:
            return tomllib.loads(value)
        except tomllib.TOMLDecodeError as error:
            raise ConfigError(f"{path}: invalid TOML ({error})") from None
    import yaml

    return yaml.safe_load(value)


def register_config_loader() -> None:
    import yaml
    from jsonargparse import set_loader

    set_loader(CONFIG_MODE, load_config_text, exceptions=(yaml.YAMLError, ConfigError))


def from_namespace(cls, values: dict, prefix: str = ""):
    """Nested dataclasses from the plain dict jsonargparse produced (its keys are already checked)."""
    hints = get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        value = values.get(f.name, f.default if f.default is not dataclasses.MISSING else None)
        if dataclasses.is_dataclass(hints[f.name]) and isinstance(value, dict):
            value = from_namespace(hints[f.name], value, f"{prefix}{f.name}.")
        elif dataclasses.is_dataclass(hints[f.name]) and value is None:
            value = hints[f.name]()
        kwargs[f.name] = value
    return cls(**kwargs)
