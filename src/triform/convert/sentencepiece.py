"""SentencePiece models (Kudo & Richardson 2018) as `tokenizers.Tokenizer`s: T5's `spiece.model`
and Marian's `source.spm` / `target.spm`.

The model file is a protocol buffer; reading it needs the `sentencepiece` and `protobuf` packages
(`pip install 'triform[sentencepiece]'`), and only at conversion time: the result is a plain
`tokenizers` pipeline, saved as tokenizer.json.

- T5 is rebuilt as `transformers` 5 builds it: the unigram pieces, then 100 sentinels
  <extra_id_99> ... <extra_id_0>, the model's precompiled normaliser, whitespace splitting and "▁".
- Marian encodes with SentencePiece but takes ids from `vocab.json`, a vocabulary shared with the
  target language. The unigram model is therefore laid out in vocab.json's order: the source
  model's pieces keep their scores; a token it does not have (a target-language piece) is stored
  behind a leading space, which normalised text never contains (spaces become "▁"), so that
  segmentation can never pick it, and the decoder drops the space again. One difference remains:
  a run of characters the source model does not know is one <unk> here, while Marian's tokenizer
  looks the run up in vocab.json and uses its id if the target language has that very piece.
"""

from __future__ import annotations

from pathlib import Path

from triform.convert.files import ConversionError, one_line, read_json
from triform.convert.specials import token_setting

UNIGRAM, NORMAL, USER_DEFINED = 1, 1, 4  # ModelProto.TrainerSpec.ModelType and SentencePiece.Type values
HIDDEN = " "  # put before a token the source model does not have: no normalised text contains a space
SPACE = "▁"


def read_model_proto(path: Path):
    try:
        from google.protobuf.message import DecodeError
        from sentencepiece import sentencepiece_model_pb2
    except ImportError:
        raise ConversionError(
            f"{path}: reading a SentencePiece model needs the sentencepiece and protobuf packages "
            "(pip install 'triform[sentencepiece]')"
        ) from None
    if not path.is_file():
        raise ConversionError(f"{path}: not found")
    proto = sentencepiece_model_pb2.ModelProto()
    try:
        proto.ParseFromString(path.read_bytes())
    except DecodeError as error:
        raise ConversionError(f"{path}: unreadable SentencePiece model ({one_line(error)})") from None
    if not proto.pieces:
        raise ConversionError(f"{path}: unreadable SentencePiece model (no pieces)")
    if proto.trainer_spec.model_type != UNIGRAM:
        raise ConversionError(f"{path}: only unigram SentencePiece models are supported (this one is not)")
    return proto


def t5_tokenizer(path: Path, settings: dict):
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers

    proto = read_model_proto(path)
    n_sentinels = settings.get("extra_ids", 100)
    vocabulary = [(piece.piece, piece.score) for piece in proto.pieces]
    vocabulary += [(f"<extra_id_{i}>", 0.0) for i in reversed(range(n_sentinels))]
    tokenizer = Tokenizer(models.Unigram(vocabulary, unk_id=proto.trainer_spec.unk_id, byte_fallback=False))
    if proto.normalizer_spec.precompiled_charsmap:
        tokenizer.normalizer = normalizers.Precompiled(proto.normalizer_spec.precompiled_charsmap)
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.WhitespaceSplit(),
            pre_tokenizers.Metaspace(replacement=SPACE, prepend_scheme="always", split=True),
        ]
    )
    tokenizer.decoder = decoders.Metaspace(replacement=SPACE, prepend_scheme="always", split=True)
    ids = {token: index for index, (token, _) in enumerate(vocabulary)}
    eos, unk, pad = (
        token_setting(settings, f"{role}_token", default)
        for role, default in (("eos", "</s>"), ("unk", "<unk>"), ("pad", "<pad>"))
    )
    specials = [eos, unk, pad] + [f"<extra_id_{i}>" for i in range(n_sentinels)]
    tokenizer.add_special_tokens([AddedToken(token, special=True, normalized=False) for token in specials])
    tokenizer.post_processor = eos_template(eos, ids, path)
    return tokenizer


def marian_tokenizer(directory: Path, settings: dict, side: str):
    from tokenizers import AddedToken, Tokenizer, models

    separate = settings.get("separate_vocabs", False)
    vocabulary_path = directory / ("target_vocab.json" if side == "target" and separate else "vocab.json")
    model_path = directory / ("target.spm" if side == "target" else "source.spm")
    vocabulary = read_json(vocabulary_path)
    if sorted(vocabulary.values()) != list(range(len(vocabulary))):
        raise ConversionError(f"{vocabulary_path}: ids must be 0, 1, ..., {len(vocabulary) - 1}, each once")
    proto = read_model_proto(model_path)
    scores = {piece.piece: piece.score for piece in proto.pieces if piece.type in (NORMAL, USER_DEFINED)}
    missing = [piece for piece in scores if piece not in vocabulary]
    if missing:
        raise ConversionError(
            f"{model_path}: piece {missing[0]!r} has no id in {vocabulary_path.name} ({len(missing)} missing in all); "
            "Marian maps such pieces to <unk>, which a tokenizers pipeline cannot reproduce"
        )
    tokens = sorted(vocabulary, key=vocabulary.get)
    unk = token_setting(settings, "unk_token", "<unk>")
    if unk not in vocabulary:
        raise ConversionError(f"{vocabulary_path}: the unknown token {unk!r} is missing")
    if not proto.normalizer_spec.escape_whitespaces:
        raise ConversionError(f"{model_path}: a SentencePiece model that keeps spaces as they are is not supported")
    eos, pad = token_setting(settings, "eos_token", "</s>"), token_setting(settings, "pad_token", "<pad>")
    specials = [t for t in (eos, unk, pad) if t in vocabulary]
    # A language code (>>fra<<) opens a multilingual model's input; Marian takes it whole.
    codes = [t for t in tokens if t.startswith(">>") and t.endswith("<<")]
    # Special tokens and codes are cut out of the text before segmentation, so they stay as they are.
    # Hidden tokens score 0, above every real piece, so that the unknown token's score (the lowest
    # score less 10, in SentencePiece as in tokenizers) stays what SentencePiece computes.
    visible = set(scores) | set(specials) | set(codes)
    pieces = [(t, scores.get(t, 0.0)) if t in visible else (HIDDEN + t, 0.0) for t in tokens]
    tokenizer = Tokenizer(models.Unigram(pieces, unk_id=vocabulary[unk], byte_fallback=False))
    spm_pipeline(tokenizer, proto.normalizer_spec, hidden=True)
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    tokenizer.add_tokens([AddedToken(code, normalized=False) for code in codes])
    tokenizer.post_processor = eos_template(eos, vocabulary, vocabulary_path)
    return tokenizer


def spm_pipeline(tokenizer, spec, *, hidden: bool = False) -> None:
    """SentencePiece's normaliser as `tokenizers` steps: the precompiled character map, leading,
    trailing and repeated spaces removed, spaces shown as "▁", and a "▁" before the text."""
    from tokenizers import Regex, decoders, normalizers, pre_tokenizers

    steps = [normalizers.Precompiled(spec.precompiled_charsmap)] if spec.precompiled_charsmap else []
    if spec.remove_extra_whitespaces:
        steps += [normalizers.Replace(Regex(r"\A +| +\z"), ""), normalizers.Replace(Regex(" {2,}"), " ")]
    if spec.escape_whitespaces:
        steps.append(normalizers.Replace(" ", SPACE))
    if spec.add_dummy_prefix:
        # Metaspace adds no prefix to a text that already starts with "▁"; SentencePiece always does.
        steps.append(normalizers.Replace(Regex(rf"\A{SPACE}"), SPACE * 2))
        tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement=SPACE, prepend_scheme="always", split=False)
    tokenizer.normalizer = normalizers.Sequence(steps)
    metaspace = decoders.Metaspace(replacement=SPACE, prepend_scheme="always", split=False)
    tokenizer.decoder = decoders.Sequence([decoders.Replace(HIDDEN, ""), metaspace]) if hidden else metaspace


def eos_template(eos: str, ids: dict, source: Path):
    from tokenizers import processors

    if eos not in ids:
        raise ConversionError(f"{source}: the end-of-sequence token {eos!r} is missing")
    return processors.TemplateProcessing(
        single=f"$A {eos}", pair=f"$A {eos} $B {eos}", special_tokens=[(eos, ids[eos])]
    )
