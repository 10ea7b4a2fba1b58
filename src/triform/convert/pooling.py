"""A sentence-transformers folder's pooling (its `1_Pooling/config.json`, and a Normalize module in
`modules.json`), read at import so that the triform folder embeds text as sentence-transformers would."""

from __future__ import annotations

from pathlib import Path

from triform.convert.files import ConversionError, read_json

POOLING_TYPE, NORMALIZE_TYPE = "sentence_transformers.models.Pooling", "sentence_transformers.models.Normalize"
# sentence-transformers' pooling modes that triform computes, and their names in triform (tasks/embed.py)
MODES = {"pooling_mode_mean_tokens": "mean", "pooling_mode_cls_token": "cls", "pooling_mode_lasttoken": "last"}
OTHER_MODES = ("pooling_mode_max_tokens", "pooling_mode_mean_sqrt_len_tokens", "pooling_mode_weightedmean_tokens")


def sentence_transformers_pooling(directory: Path) -> dict | None:
    """{"how": "mean" | "cls" | "last", "normalize": bool} of a sentence-transformers folder; None for
    a plain model folder. A pooling triform cannot compute is an error naming it."""
    modules_path = directory / "modules.json"
    modules = read_json(modules_path) if modules_path.is_file() else []
    if not isinstance(modules, list):
        raise ConversionError(f"{modules_path}: expected a list of modules")
    paths = {m.get("type"): m.get("path", "") for m in modules if isinstance(m, dict)}
    folder = directory / paths.get(POOLING_TYPE, "1_Pooling")
    config_path = folder / "config.json"
    if not config_path.is_file():
        return None
    config = read_json(config_path)
    chosen = [name for key, name in MODES.items() if config.get(key)]
    unsupported = [key for key in OTHER_MODES if config.get(key)]
    if unsupported or len(chosen) != 1:
        asked = [key for key in (*MODES, *OTHER_MODES) if config.get(key)]
        raise ConversionError(
            f"{config_path}: pooling {asked or 'none'} is not one triform computes; expected exactly one of "
            f"{list(MODES)}"
        )
    return {"how": chosen[0], "normalize": NORMALIZE_TYPE in paths}
