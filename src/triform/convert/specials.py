"""Special tokens between Hugging Face folders and triform's `SpecialTokens` roles.

Each family names its tokens (BERT's [CLS] and [SEP] also serve as [BOS] and [EOS] of triform's
layouts; GPT-2's <|endoftext|> is every role it has); a folder's `tokenizer_config.json` or
`special_tokens_map.json` may rename them; the tokenizer gives their ids. Where there is no
tokenizer, config.json's `*_token_id` fields do.
"""

from __future__ import annotations

from pathlib import Path

from triform.config import ModelConfig
from triform.convert.family import Family
from triform.convert.files import read_json, to_json
from triform.convert.hf_config import HFConfig
from triform.vocab import ROLES, SpecialTokens, sentinel

TOKENIZER_CONFIG, SPECIAL_TOKENS_MAP = "tokenizer_config.json", "special_tokens_map.json"


def declared_tokens(directory: Path) -> dict[str, str]:
    """role -> token string, as the folder's tokenizer files declare them (tokenizer_config.json wins)."""
    declared: dict[str, str] = {}
    for name in (SPECIAL_TOKENS_MAP, TOKENIZER_CONFIG):
        if not (directory / name).is_file():
            continue
        document = read_json(directory / name)
        for role in ROLES:
            value = document.get(f"{role}_token")
            value = value.get("content") if isinstance(value, dict) else value
            if isinstance(value, str):
                declared[role] = value
    return declared


def special_tokens(family: Family, hf: HFConfig, tokenizer, directory: Path) -> SpecialTokens:
    strings = {**family.special_tokens.get(hf.model_type, {}), **declared_tokens(directory)}
    vocabulary = tokenizer.get_vocab(with_added_tokens=True) if tokenizer is not None else {}
    ids = {role: vocabulary.get(token) for role, token in strings.items()}
    vocab_size = hf.values.get("vocab_size")
    for role in ("pad", "bos", "eos"):
        value = hf.values.get(f"{role}_token_id")
        if ids.get(role) is None and role in strings and isinstance(value, int) and 0 <= value < vocab_size:
            ids[role] = value
    sentinels = []
    while sentinel(len(sentinels)) in vocabulary:
        sentinels.append(vocabulary[sentinel(len(sentinels))])
    decoder_start = hf.values.get("decoder_start_token_id")
    if not isinstance(decoder_start, int) and family.decoder_start_role is not None:
        decoder_start = ids.get(family.decoder_start_role)
    return SpecialTokens(
        **{role: ids.get(role) for role in ROLES},
        sentinels=tuple(sentinels),
        decoder_start=decoder_start if isinstance(decoder_start, int) else None,
    )


def tokenizer_files(tokenizer, specials: SpecialTokens | None, config: ModelConfig) -> dict[str, str]:
    """tokenizer.json as it is, and a tokenizer_config.json that makes `transformers` load it unchanged."""
    settings: dict = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": config.max_len,
        "clean_up_tokenization_spaces": False,
    }
    if specials is not None:
        for role in ROLES:
            if getattr(specials, role) is not None:
                settings[f"{role}_token"] = tokenizer.id_to_token(getattr(specials, role))
        if specials.sentinels:
            settings["additional_special_tokens"] = [tokenizer.id_to_token(i) for i in specials.sentinels]
    return {"tokenizer.json": tokenizer.to_str(), TOKENIZER_CONFIG: to_json(settings)}


def token_setting(settings: dict, name: str, default: str) -> str:
    """A special token's text as tokenizer_config.json gives it: a string, or {"content": ...}."""
    value = settings.get(name, default)
    value = value.get("content") if isinstance(value, dict) else value
    return value if isinstance(value, str) else default
