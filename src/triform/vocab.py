"""The special tokens objectives need, their ids in a tokenizer's vocabulary, the other facts
objectives read from a vocabulary (which tokens begin a word, which end a sentence), and the one
rule every tokenizer triform encodes with follows: no padding or truncation of its own."""

from __future__ import annotations

from dataclasses import dataclass

from triform.errors import TriformError

PAD, UNK, BOS, EOS, MASK, SEP, CLS = "[PAD]", "[UNK]", "[BOS]", "[EOS]", "[MASK]", "[SEP]", "[CLS]"
BASE_SPECIALS = [PAD, UNK, BOS, EOS, MASK, SEP, CLS]
DEFAULT_SENTINELS = 100  # as T5
# UL2's mode tokens (Tay et al. 2022, §3.1.3 "mode switching"), named as its released checkpoints
# name them: [NLU] for the regular span denoisers, [NLG] for the extreme ones, [S2S] for prefix LM.
MODE_TOKENS = {"nlu": "[NLU]", "nlg": "[NLG]", "s2s": "[S2S]"}


def unpadded(tokenizer):
    """`tokenizer` without padding or truncation of its own; the same object when it has neither.

    A tokenizer.json may have them switched on (sentence-embedding exports pad every text to a
    fixed 128 ids). triform pads batches and fits texts to max_len itself; a tokenizer that pads
    would turn a five-word text into 128 ids, most of them padding read as text. The caller's
    tokenizer is left as it is: a copy is switched off.
    """
    if tokenizer is None or (tokenizer.padding is None and tokenizer.truncation is None):
        return tokenizer
    from tokenizers import Tokenizer

    copy = Tokenizer.from_str(tokenizer.to_str())
    copy.no_padding()
    copy.no_truncation()
    return copy


def sentinel(index: int) -> str:
    """T5's name for the index-th span placeholder."""
    return f"<extra_id_{index}>"


def special_token_strings(n_sentinels: int = DEFAULT_SENTINELS, modes: bool = True) -> list[str]:
    """Every special token, in the order a new tokenizer gives them ids 0, 1, 2, ...; the mode tokens
    come last, so that the ids of the others are those of tokenizers made before them (`modes=False`:
    the special tokens of those)."""
    return BASE_SPECIALS + [sentinel(i) for i in range(n_sentinels)] + (list(MODE_TOKENS.values()) if modes else [])


ROLES = ("pad", "unk", "bos", "eos", "mask", "sep", "cls")


@dataclass(frozen=True)
class SpecialTokens:
    """Ids of the special tokens; None where a vocabulary has no such token (GPT-2 has no [MASK]).

    `decoder_start` is the token an encoder-decoder's decoder reads first when that is not [BOS]:
    T5 and Marian start from their padding token, BART from its end-of-sequence token.
    """

    pad: int | None = None
    unk: int | None = None
    bos: int | None = None
    eos: int | None = None
    mask: int | None = None
    sep: int | None = None
    cls: int | None = None
    sentinels: tuple[int, ...] = ()
    decoder_start: int | None = None
    # (mode, id) of each mode token the vocabulary has (MODE_TOKENS); () in vocabularies made before them.
    modes: tuple[tuple[str, int], ...] = ()

    @property
    def decoder_start_id(self) -> int | None:
        """The first token of a decoder's input: `decoder_start` when set, else [BOS]."""
        return self.decoder_start if self.decoder_start is not None else self.bos

    @property
    def all_ids(self) -> frozenset[int]:
        ids = (getattr(self, role) for role in ROLES)
        return frozenset([i for i in ids if i is not None] + list(self.sentinels) + [i for _, i in self.modes])

    def mode(self, name: str, user: str) -> int:
        """The id of mode token `name` ("nlu", "nlg", "s2s"); an error naming `user` when it has none."""
        found = dict(self.modes)
        if name not in found:
            token = MODE_TOKENS.get(name, name)
            raise TriformError(
                f"{user} needs the mode token {token}, and the tokenizer has none "
                "(tokenizers trained before mode tokens existed lack them: train a new one)"
            )
        return found[name]

    def require(self, roles: tuple[str, ...], user: str) -> None:
        """Raise a clear error if any of `roles` has no token; `user` names who needs it."""
        for role in roles:
            if getattr(self, role) is None:
                raise TriformError(f"{user} needs a {role} token, and the tokenizer has none")

    def to_dict(self) -> dict:
        values = {**{role: getattr(self, role) for role in ROLES}, "sentinels": list(self.sentinels)}
        if self.decoder_start is not None:
            values["decoder_start"] = self.decoder_start
        if self.modes:
            values["modes"] = dict(self.modes)
        return values

    @classmethod
    def from_dict(cls, values: dict, source: str = "special_tokens") -> SpecialTokens:
        unknown = sorted(set(values) - set(ROLES) - {"sentinels", "decoder_start", "modes"})
        if unknown:
            raise TriformError(f"{source}: unknown special token role {unknown[0]!r}; expected {list(ROLES)}")
        modes = tuple(sorted((values.get("modes") or {}).items()))
        return cls(**{**values, "sentinels": tuple(values.get("sentinels", ())), "modes": modes})

    @classmethod
    def from_vocabulary(cls, vocabulary: dict[str, int], source: str = "tokenizer") -> SpecialTokens:
        """Look the special tokens up in a token -> id mapping; missing ones are an error naming them."""
        missing = [token for token in BASE_SPECIALS if token not in vocabulary]
        if missing:
            raise TriformError(f"{source}: special token {missing[0]} is missing; expected all of {BASE_SPECIALS}")
        sentinels = []
        while sentinel(len(sentinels)) in vocabulary:
            sentinels.append(vocabulary[sentinel(len(sentinels))])
        ids = [vocabulary[token] for token in BASE_SPECIALS]
        modes = tuple(sorted((mode, vocabulary[token]) for mode, token in MODE_TOKENS.items() if token in vocabulary))
        return cls(*ids, sentinels=tuple(sentinels), modes=modes)

    @classmethod
    def from_tokenizer(cls, tokenizer, source: str = "tokenizer") -> SpecialTokens:
        """From a `tokenizers.Tokenizer`."""
        return cls.from_vocabulary(tokenizer.get_vocab(with_added_tokens=True), source)


# How each tokenizer model marks the first piece of a word, or a piece that continues one.
WORD_START_PREFIX = {"bpe": "Ġ", "unigram": "▁"}
CONTINUATION_PREFIX = "##"  # WordPiece
SENTENCE_FINAL = set(".!?")


def tokenizer_kind(tokenizer) -> str:
    """'bpe', 'wordpiece', 'unigram' or 'wordlevel', from a tokenizers.Tokenizer's model."""
    names = {"BPE": "bpe", "WordPiece": "wordpiece", "Unigram": "unigram"}
    return names.get(type(tokenizer.model).__name__, "wordlevel")


def word_start_table(tokenizer) -> list[bool]:
    """For each id, whether that token begins a word (whole-word masking, Devlin et al. 2019 §A.1).

    Special tokens count as word starts. A word-level tokenizer's tokens all start words."""
    kind = tokenizer_kind(tokenizer)
    vocabulary = tokenizer.get_vocab(with_added_tokens=True)
    specials = SpecialTokens.from_tokenizer(tokenizer).all_ids
    table = [True] * tokenizer.get_vocab_size(with_added_tokens=True)
    for token, index in vocabulary.items():
        if index in specials or kind == "wordlevel":
            continue
        if kind == "wordpiece":
            table[index] = not token.startswith(CONTINUATION_PREFIX)
        else:
            table[index] = token.startswith(WORD_START_PREFIX[kind])
    return table


def sentence_end_ids(tokenizer) -> tuple[int, ...]:
    """Ids of tokens made only of sentence-final punctuation (and quotes), for BART's permutation."""
    ends = []
    for token, index in tokenizer.get_vocab(with_added_tokens=True).items():
        text = token.lstrip("Ġ▁").removeprefix(CONTINUATION_PREFIX)
        if text and SENTENCE_FINAL & set(text) and set(text) <= SENTENCE_FINAL | set("\"'"):
            ends.append(index)
    return tuple(sorted(ends))
