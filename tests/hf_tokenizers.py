"""Tokenizer folders as Hugging Face ships them, built from tiny vocabularies trained here (tests only),
and a few hundred varied strings to compare tokenizers on."""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

WORDS = (
    "the quick brown fox jumps over lazy dog translation model token unbelievable internationalization "
    "Hello World it's don't U.S.A. e-mail 3.14 1,000,000 #hashtag @user co-operate naïve café résumé "
    "Übermäßig straße Ärger Öl œuvre façade jalapeño São Paulo Москва Київ Ελλάδα 中文字符 東京 "
    "日本語の文章 한국어 문장 مرحبا بالعالم שלום हिन्दी ภาษาไทย 😀 🎉👍🏽 ½ ² ﬁ Ⅻ ｆｕｌｌｗｉｄｔｈ"
).split()
SPACES = [" ", "  ", "   ", "\t", "\n", " \n ", "\u3000", "\xa0", "\u2009", "\r\n"]
PUNCTUATION = list(".,;:!?()[]{}\"'-–—…/\\*&%$€£¥")
BERT_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
ROBERTA_SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]


def corpus(seed: int = 0, n: int = 1500) -> list[str]:
    rng = random.Random(seed)

    def word() -> str:
        return rng.choice(WORDS) + (rng.choice(PUNCTUATION) if rng.random() < 0.2 else "")

    return [" ".join(word() for _ in range(rng.randint(3, 14))) for _ in range(n)]


def varied_strings(specials: tuple[str, ...] = (), n: int = 300, seed: int = 1) -> list[str]:
    """Words of many scripts, emoji, combining marks, runs of every kind of whitespace, very long
    words, numbers, special tokens inside the text, and the empty string."""
    rng = random.Random(seed)
    strings = [
        "",
        " ",
        "a",
        "\n\n",
        "   leading and trailing   ",
        "ALLCAPS lower MiXeD",
        "x" * 250,
        "supercalifragilisticexpialidocious" * 5,
        "e\u0301 combining",
        "\u200b zero width \ufeff bom",
    ]
    while len(strings) < n:
        parts = []
        for _ in range(rng.randint(1, 10)):
            draw = rng.random()
            if draw < 0.55:
                parts.append(rng.choice(WORDS))
            elif draw < 0.7:
                parts.append(rng.choice(PUNCTUATION))
            elif draw < 0.8:
                length = rng.randint(20, 150)  # a very long word
                parts.append("".join(rng.choice("abcdefghijklmnopqrstuvwxyzé中😀") for _ in range(length)))
            elif draw < 0.9:
                parts.append(str(rng.randint(0, 10**9)))
            else:
                parts.append(rng.choice(specials) if specials else rng.choice(WORDS).upper())
            parts.append(rng.choice(SPACES) if rng.random() < 0.4 else " ")
        text = "".join(parts)
        text = rng.choice(SPACES) + text if rng.random() < 0.3 else text
        strings.append(text.rstrip() if rng.random() < 0.5 else text)
    return strings


def write_config(folder: Path, model_type: str, tokenizer_config: dict | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"model_type": model_type}))
    if tokenizer_config:
        (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    return folder


def wordpiece_folder(folder: Path, tokenizer_config: dict | None = None) -> Path:
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.train_from_iterator(corpus(), trainers.WordPieceTrainer(vocab_size=400, special_tokens=BERT_SPECIALS))
    write_config(folder, "bert", tokenizer_config)
    vocabulary = sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])
    (folder / "vocab.txt").write_text("".join(token + "\n" for token, _ in vocabulary), encoding="utf-8")
    return folder


def byte_level_folder(folder: Path, model_type: str, tokenizer_config: dict | None = None) -> Path:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    specials = ["<|endoftext|>"] if model_type == "gpt2" else ROBERTA_SPECIALS
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=specials, initial_alphabet=alphabet)
    tokenizer.train_from_iterator(corpus(), trainer)
    write_config(folder, model_type, tokenizer_config)
    tokenizer.model.save(str(folder))  # vocab.json and merges.txt
    return folder


def train_sentencepiece(lines: list[str], path: Path, **options) -> None:
    import sentencepiece

    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_writer=model,
        model_type="unigram",
        vocab_size=options.pop("vocab_size"),
        hard_vocab_limit=False,
        minloglevel=2,
        **options,
    )
    path.write_bytes(model.getvalue())


def t5_folder(folder: Path) -> Path:
    write_config(folder, "t5")
    train_sentencepiece(corpus(), folder / "spiece.model", vocab_size=300, pad_id=0, eos_id=1, unk_id=2, bos_id=-1)
    return folder


def marian_folder(folder: Path) -> Path:
    """Source and target models trained on different text, and one vocabulary over both, as OPUS-MT:
    </s> first, then <unk>, a language code, the pieces, and <pad> last."""
    import sentencepiece

    write_config(folder, "marian")
    target_text = [" ".join(line.split()[::-1]) for line in corpus(seed=5)]
    for name, lines in (("source.spm", corpus()), ("target.spm", target_text)):
        train_sentencepiece(
            lines, folder / name, vocab_size=250, character_coverage=1.0, bos_id=-1, eos_id=0, unk_id=1, pad_id=-1
        )
    vocabulary = {"</s>": 0, "<unk>": 1, ">>fra<<": 2}
    for name in ("source.spm", "target.spm"):
        processor = sentencepiece.SentencePieceProcessor(model_file=str(folder / name))
        for index in range(processor.get_piece_size()):
            vocabulary.setdefault(processor.id_to_piece(index), len(vocabulary))
    vocabulary["<pad>"] = len(vocabulary)
    (folder / "vocab.json").write_text(json.dumps(vocabulary, ensure_ascii=False), encoding="utf-8")
    return folder
