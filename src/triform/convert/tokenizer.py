"""The tokenizer of a Hugging Face model folder, as a `tokenizers.Tokenizer`.

`tokenizer.json` is read as it is, less its padding and truncation, which triform does by itself
(`triform.vocab.unpadded`); `file_settings` keeps them so that an export writes them back. Older
folders keep only vocabulary files; from those, the same pipeline that `transformers` builds is
assembled here: BERT's WordPiece from `vocab.txt`, GPT-2's
(and RoBERTa's, BART's) byte-level BPE from `vocab.json` + `merges.txt`, T5's and Marian's
SentencePiece models (see `triform.convert.sentencepiece`). Settings come from
`tokenizer_config.json` (do_lower_case, add_prefix_space, ...), with the classes' defaults.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from triform.convert.files import CONFIG, ConversionError, one_line, read_json
from triform.convert.sentencepiece import marian_tokenizer, t5_tokenizer
from triform.convert.specials import TOKENIZER_CONFIG, declared_tokens, token_setting
from triform.vocab import unpadded

TOKENIZER_JSON, VOCAB_TXT, VOCAB_JSON, MERGES = "tokenizer.json", "vocab.txt", "vocab.json", "merges.txt"
SPIECE, SOURCE_SPM, TARGET_SPM = "spiece.model", "source.spm", "target.spm"
ROBERTA_STYLE = ("roberta", "bart")  # byte-level BPE wrapped as <s> ... </s>
ADDED_TOKEN_FLAGS = ("single_word", "lstrip", "rstrip", "normalized", "special")
SETTINGS = ("padding", "truncation")  # what tokenizer.json may switch on that triform leaves to itself


def has_tokenizer_files(directory: str | os.PathLike) -> bool:
    d = Path(directory)
    return any((d / name).is_file() for name in (TOKENIZER_JSON, VOCAB_TXT, SPIECE, SOURCE_SPM)) or (
        (d / VOCAB_JSON).is_file() and (d / MERGES).is_file()
    )


def load_hf_tokenizer(directory: str | os.PathLike, *, side: str = "source"):
    """The folder's tokenizer. `side="target"` reads Marian's target-language model (target.spm);
    every other folder has one tokenizer for both sides."""
    from tokenizers import Tokenizer

    directory = Path(directory)
    if side not in ("source", "target"):
        raise ValueError(f"side: expected 'source' or 'target', got {side!r}")
    settings = read_json(directory / TOKENIZER_CONFIG) if (directory / TOKENIZER_CONFIG).is_file() else {}
    kind = tokenizer_kind(directory, settings)
    if (directory / SOURCE_SPM).is_file() and (directory / VOCAB_JSON).is_file() and not (directory / MERGES).is_file():
        return marian_tokenizer(directory, settings, side)
    if (directory / TOKENIZER_JSON).is_file():
        try:
            return unpadded(Tokenizer.from_file(str(directory / TOKENIZER_JSON)))
        except Exception as error:  # tokenizers raises a bare Exception for malformed files
            raise ConversionError(
                f"{directory / TOKENIZER_JSON}: unreadable tokenizer file ({one_line(error)})"
            ) from None
    if (directory / VOCAB_TXT).is_file():
        tokenizer = wordpiece(directory / VOCAB_TXT, settings)
    elif (directory / VOCAB_JSON).is_file() and (directory / MERGES).is_file():
        tokenizer = byte_level_bpe(directory, settings, roberta_style=kind in ROBERTA_STYLE)
    elif (directory / SPIECE).is_file():
        return t5_tokenizer(directory / SPIECE, settings)
    else:
        raise ConversionError(
            f"{directory}: no tokenizer; expected {TOKENIZER_JSON}, {VOCAB_TXT}, {VOCAB_JSON} + {MERGES}, {SPIECE} "
            f"or {SOURCE_SPM} + {VOCAB_JSON}"
        )
    add_special_tokens(tokenizer, directory, settings, default_tokens(kind))
    return tokenizer


def file_settings(directory: str | os.PathLike) -> dict:
    """The padding and truncation tokenizer.json switches on, as the file writes them; empty when off."""
    path = Path(directory) / TOKENIZER_JSON
    if not path.is_file():
        return {}
    document = read_json(path)
    return {name: document[name] for name in SETTINGS if document.get(name) is not None}


def with_settings(tokenizer, settings: dict) -> str:
    """tokenizer.json of `tokenizer` with the padding and truncation of the file it was imported from."""
    document = json.loads(tokenizer.to_str())
    document.update({name: value for name, value in settings.items() if name in SETTINGS})
    return json.dumps(document, ensure_ascii=False)


def tokenizer_kind(directory: Path, settings: dict) -> str:
    """ "bert", "roberta", "gpt2", ...: from tokenizer_config.json's class, else config.json's model_type."""
    name = settings.get("tokenizer_class")
    if isinstance(name, str):
        return name.removesuffix("Fast").removesuffix("Tokenizer").lower()
    try:
        return str(json.loads((directory / CONFIG).read_text(encoding="utf-8")).get("model_type", ""))
    except (OSError, ValueError, AttributeError):
        return ""


def default_tokens(kind: str) -> dict[str, str]:
    if kind in ROBERTA_STYLE:
        return {
            "bos": "<s>",
            "eos": "</s>",
            "sep": "</s>",
            "cls": "<s>",
            "unk": "<unk>",
            "pad": "<pad>",
            "mask": "<mask>",
        }
    if kind in ("gpt2", ""):
        return {"bos": "<|endoftext|>", "eos": "<|endoftext|>", "unk": "<|endoftext|>"}
    return {"unk": "[UNK]", "sep": "[SEP]", "pad": "[PAD]", "cls": "[CLS]", "mask": "[MASK]"}


def wordpiece(path: Path, settings: dict):
    """BERT's tokenizer (Devlin et al. 2019): basic cleanup and splitting, then greedy WordPiece."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers

    vocabulary = {}
    with open(path, encoding="utf-8") as lines:
        for index, line in enumerate(lines):
            vocabulary[line.rstrip("\n")] = index  # as transformers: a repeated token keeps its last line
    unk = token_setting(settings, "unk_token", "[UNK]")
    if unk not in vocabulary:
        raise ConversionError(f"{path}: the unknown token {unk!r} is not in the vocabulary")
    tokenizer = Tokenizer(models.WordPiece(vocabulary, unk_token=unk, max_input_chars_per_word=100))
    tokenizer.normalizer = normalizers.BertNormalizer(
        clean_text=True,
        handle_chinese_chars=settings.get("tokenize_chinese_chars", True),
        strip_accents=settings.get("strip_accents"),
        lowercase=settings.get("do_lower_case", True),
    )
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece(prefix="##")
    cls, sep = token_setting(settings, "cls_token", "[CLS]"), token_setting(settings, "sep_token", "[SEP]")
    tokenizer.post_processor = template(f"{cls} $A:0 {sep}", f"{cls} $A:0 {sep} $B:1 {sep}:1", vocabulary, cls, sep)
    return tokenizer


def byte_level_bpe(directory: Path, settings: dict, *, roberta_style: bool):
    """GPT-2's byte-level BPE (Radford et al. 2019); RoBERTa and BART wrap it in <s> ... </s>."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

    try:
        vocabulary, merges = models.BPE.read_file(str(directory / VOCAB_JSON), str(directory / MERGES))
    except Exception as error:
        raise ConversionError(f"{directory}: unreadable {VOCAB_JSON} or {MERGES} ({one_line(error)})") from None
    add_prefix_space = settings.get("add_prefix_space", False)
    tokenizer = Tokenizer(
        models.BPE(
            vocabulary, merges, dropout=None, continuing_subword_prefix="", end_of_word_suffix="", fuse_unk=False
        )
    )
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=add_prefix_space)
    tokenizer.decoder = decoders.ByteLevel()
    if roberta_style:
        cls, sep = token_setting(settings, "cls_token", "<s>"), token_setting(settings, "sep_token", "</s>")
        for token in (cls, sep):
            if token not in vocabulary:
                raise ConversionError(f"{directory / VOCAB_JSON}: special token {token!r} is missing")
        tokenizer.post_processor = processors.RobertaProcessing(
            (sep, vocabulary[sep]),
            (cls, vocabulary[cls]),
            trim_offsets=settings.get("trim_offsets", True),
            add_prefix_space=add_prefix_space,
        )
    return tokenizer


def template(single: str, pair: str, vocabulary: dict, *tokens: str):
    from tokenizers import processors

    missing = [token for token in tokens if token not in vocabulary]
    if missing:
        raise ConversionError(f"special token {missing[0]!r} is not in the vocabulary")
    return processors.TemplateProcessing(single=single, pair=pair, special_tokens=[(t, vocabulary[t]) for t in tokens])


def add_special_tokens(tokenizer, directory: Path, settings: dict, defaults: dict[str, str]) -> None:
    """Added tokens as tokenizer_config.json lists them (with their flags), then the special tokens,
    so that each is matched whole in raw text, before normalisation, as `transformers` does."""
    from tokenizers import AddedToken

    listed = settings.get("added_tokens_decoder") or {}
    known = set()
    for _, entry in sorted(listed.items(), key=lambda item: int(item[0])):
        flags = {flag: entry[flag] for flag in ADDED_TOKEN_FLAGS if flag in entry}
        token = AddedToken(entry["content"], **flags)
        (tokenizer.add_special_tokens if flags.get("special") else tokenizer.add_tokens)([token])
        known.add(entry["content"])
    names = {**defaults, **declared_tokens(directory)}
    extra = settings.get("additional_special_tokens") or settings.get("extra_special_tokens") or []
    for token in [*names.values(), *(t.get("content") if isinstance(t, dict) else t for t in extra)]:
        if isinstance(token, str) and token not in known:
            tokenizer.add_special_tokens([AddedToken(token, special=True, normalized=False)])
            known.add(token)
