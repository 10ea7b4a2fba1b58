"""Hugging Face folders in and out: `import_hf`, `export_hf`, `from_pretrained` and the two
folder-to-folder conversions behind `triform convert`.

Nothing here imports `transformers`: a Hugging Face folder is JSON and tensors, read and written
directly. The original `config.json` (and `generation_config.json`) of an imported model travel
in the triform folder's "extra", so that exporting it again keeps every field triform does not use.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch

from triform.checkpoint import Pretrained, load_model, save_model
from triform.config import ModelConfig
from triform.convert.bart import BartFamily, MarianFamily
from triform.convert.bert import BertFamily
from triform.convert.family import Family, check_copies
from triform.convert.files import (
    CONFIG,
    DEFAULT_SHARD_SIZE,
    GENERATION_CONFIG,
    ConversionError,
    ConversionWarning,
    check_destination,
    is_hf_folder,
    read_hf_config,
    read_hf_weights,
    read_json,
    to_json,
    write_folder,
)
from triform.convert.gpt2 import GPT2Family
from triform.convert.hf_config import HFConfig
from triform.convert.llama import LlamaFamily, MistralFamily, Qwen2Family, Qwen3Family
from triform.convert.mapping import consumed_names, export_state, import_state
from triform.convert.pooling import sentence_transformers_pooling
from triform.convert.specials import special_tokens, tokenizer_files
from triform.convert.t5 import T5Family
from triform.convert.tokenizer import file_settings, has_tokenizer_files, load_hf_tokenizer, with_settings
from triform.errors import ConfigError
from triform.models import build_model
from triform.objectives import Recipe

FAMILIES: dict[str, Family] = {
    "bert": BertFamily("bert"),
    "roberta": BertFamily("roberta"),
    "distilbert": BertFamily("distilbert"),
    "gpt2": GPT2Family(),
    "bart": BartFamily(),
    "marian": MarianFamily(),
    "t5": T5Family(),
    "mt5": T5Family(),
    "llama": LlamaFamily(),
    "mistral": MistralFamily(),
    "qwen2": Qwen2Family(),
    "qwen3": Qwen3Family(),
}
# The family a triform model that was never imported is exported as: the first that can express it.
EXPORT_ORDER = ("gpt2", "bert", "distilbert", "t5", "bart", "marian", "llama", "qwen2", "qwen3")


def family_for(model_type: str, source: str) -> Family:
    if model_type not in FAMILIES:
        raise ConversionError(
            f"{source}: model_type {model_type!r} is not supported; supported: {', '.join(sorted(FAMILIES))}"
        )
    return FAMILIES[model_type]


def import_hf(directory: str | os.PathLike, *, tokenizer: bool = True) -> Pretrained:
    """Read a local Hugging Face model folder into a triform model, with its tokenizer when there is one."""
    directory = Path(directory)
    raw = read_hf_config(directory)
    hf = HFConfig(raw, str(directory / CONFIG))
    family = family_for(hf.model_type, hf.source)
    tensors, weights_name = read_hf_weights(directory)
    weights = str(directory / weights_name)
    tensors = family.canonical_names(tensors)
    check_copies(tensors, family.copies, weights)
    try:
        config = family.read_config(hf, tensors)
    except ConfigError as error:
        raise ConversionError(f"{hf.source}: {error}") from None
    model = build_model(config)
    rules = family.rules(config, raw)
    import_state(rules, model, tensors, weights)
    consumed = consumed_names(rules) | set(family.copies)
    unused = sorted(name for name in tensors if name not in consumed and not family.is_ignored(name))
    if unused:
        shown = ", ".join(unused[:3]) + (", ..." if len(unused) > 3 else "")
        warnings.warn(
            f"{weights}: {len(unused)} tensor(s) have no place in triform's model and were left out: {shown}",
            ConversionWarning,
            stacklevel=2,
        )
    loaded_tokenizer = load_hf_tokenizer(directory) if tokenizer and has_tokenizer_files(directory) else None
    if tokenizer and loaded_tokenizer is None and (directory / "tokenizer.model").is_file():
        warnings.warn(
            f"{directory / 'tokenizer.model'}: a SentencePiece model without tokenizer.json is not converted; "
            "save the tokenizer with transformers (it writes tokenizer.json) and import again",
            ConversionWarning,
            stacklevel=2,
        )
    specials = special_tokens(family, hf, loaded_tokenizer, directory)
    extra = {
        "recipe": Recipe(family.objective).to_dict(),
        "hf": {"model_type": hf.model_type, "config": raw, "unused_tensors": unused},
    }
    if loaded_tokenizer is not None and file_settings(directory):  # switched off here, written back on export
        extra["hf"]["tokenizer_settings"] = file_settings(directory)
    pooling = sentence_transformers_pooling(directory)
    if pooling is not None:  # a sentence encoder: embed as sentence-transformers does (tasks/embed.py)
        extra["pooling"] = pooling
    if (directory / GENERATION_CONFIG).is_file():
        extra["hf"]["generation_config"] = read_json(directory / GENERATION_CONFIG)
    return Pretrained(model.eval(), config, specials, loaded_tokenizer, extra)


def from_pretrained(directory: str | os.PathLike, *, device: str | torch.device = "cpu") -> Pretrained:
    """A triform model folder, or a Hugging Face one (imported on the fly), ready to use."""
    if not is_hf_folder(directory):
        return load_model(directory, device=device)
    pretrained = import_hf(directory)
    pretrained.model.to(device)
    return pretrained


def infer_model_type(config: ModelConfig) -> str:
    """The first Hugging Face family that can express `config`, or an error saying why none can."""
    reasons = []
    for model_type in EXPORT_ORDER:
        problems = FAMILIES[model_type].problems(config, model_type)
        if not problems:
            return model_type
        reasons.append(f"{model_type}: {problems[0]}")
    raise ConversionError("no Hugging Face family can express this model (" + "; ".join(reasons) + ")")


def export_hf(
    pretrained: Pretrained,
    directory: str | os.PathLike,
    *,
    model_type: str | None = None,
    overwrite: bool = False,
    max_shard_size: int | str = DEFAULT_SHARD_SIZE,
) -> Path:
    """Write `pretrained` as a Hugging Face folder that `transformers` loads with the same outputs;
    weights larger than `max_shard_size` ("5GB", "500MB", bytes) are sharded as transformers shards them."""
    directory = Path(directory)
    if directory.exists() and not overwrite:
        raise ConversionError(f"{directory}: already exists; pass overwrite (--overwrite) to replace it")
    config, original = pretrained.config, pretrained.extra.get("hf", {})
    model_type = model_type or original.get("model_type") or infer_model_type(config)
    family = family_for(model_type, "--model-type")
    problems = family.problems(config, model_type)
    if problems:
        raise ConversionError(f"cannot export as Hugging Face {model_type}: " + "; ".join(problems))
    same_family = original.get("model_type") == model_type
    stale = ("transformers_version", "dtype", "torch_dtype")
    base = {key: value for key, value in original.get("config", {}).items() if key not in stale}
    specials = pretrained.specials
    token_ids = {} if specials is None else {**specials.to_dict(), "decoder_start": specials.decoder_start_id}
    missing = [role for role in family.needs_tokens if token_ids.get(role) is None]
    if missing:
        raise ConversionError(
            f"Hugging Face {model_type} needs a {missing[0]} token id, and the model has none "
            "(save it with its special tokens)"
        )
    hf = family.write_config(config, model_type, token_ids, base if same_family else {})
    # A token the model has no id for is left to transformers' default rather than written as null.
    hf = {key: value for key, value in hf.items() if value is not None or key in base}
    tensors = export_state(family.rules(config, hf), pretrained.model)
    family.complete_export(config, tensors)
    hf["torch_dtype"] = str(next(iter(tensors.values())).dtype).removeprefix("torch.")
    files = {CONFIG: to_json(hf)}
    if same_family and "generation_config" in original:
        files[GENERATION_CONFIG] = to_json(original["generation_config"])
    if pretrained.tokenizer is not None:
        files.update(tokenizer_files(pretrained.tokenizer, specials, config))
        if original.get("tokenizer_settings"):  # the user's own padding and truncation, as imported
            files["tokenizer.json"] = with_settings(pretrained.tokenizer, original["tokenizer_settings"])
    return write_folder(directory, tensors, files, max_shard_size=max_shard_size)


def convert_from_hf(
    source: str | os.PathLike, out: str | os.PathLike, *, overwrite: bool = False, tokenizer: bool = True
) -> Pretrained:
    """Hugging Face folder -> triform model folder; nothing is written unless all of it converts."""
    source, out = Path(source), Path(out)
    check_destination(source, out, overwrite)
    pretrained = import_hf(source, tokenizer=tokenizer)
    save_model(
        pretrained.model, out, specials=pretrained.specials, tokenizer=pretrained.tokenizer, extra=pretrained.extra
    )
    return pretrained


def convert_to_onnx(source: str | os.PathLike, out: str | os.PathLike, *, overwrite: bool = False) -> Pretrained:
    """triform model folder, or a Hugging Face one imported on the fly -> ONNX graphs with the KV cache
    as inputs and outputs (triform.convert.onnx)."""
    from triform.convert.onnx import export_onnx

    source, out = Path(source), Path(out)
    check_destination(source, out, overwrite)
    pretrained = from_pretrained(source)
    export_onnx(pretrained, out, overwrite=overwrite)
    return pretrained


def convert_to_hf(
    source: str | os.PathLike,
    out: str | os.PathLike,
    *,
    model_type: str | None = None,
    overwrite: bool = False,
    max_shard_size: int | str = DEFAULT_SHARD_SIZE,
) -> Pretrained:
    """triform model folder -> Hugging Face folder."""
    source, out = Path(source), Path(out)
    check_destination(source, out, overwrite)
    pretrained = load_model(source)
    export_hf(pretrained, out, model_type=model_type, overwrite=overwrite, max_shard_size=max_shard_size)
    return pretrained
