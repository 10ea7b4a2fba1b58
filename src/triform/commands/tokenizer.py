"""`triform tokenizer train --input corpus.txt --kind bpe --vocab_size 8000 --output tokenizer.json`
and `triform tokenizer encode --tokenizer tokenizer.json --text "..."`."""

from __future__ import annotations

from typing import Literal, Optional

from jsonargparse import ArgumentParser

from triform.commands._data import add_source_arguments, source_from


def add_arguments(parser) -> None:
    subcommands = parser.add_subcommands(dest="action")
    train = ArgumentParser(description="train a tokenizer on text files")
    train.add_argument("--input", type=str, required=True, help="file, folder or glob of training text")
    train.add_argument("--output", type=str, required=True, help="where to write tokenizer.json")
    train.add_argument(
        "--kind",
        type=Literal["bpe", "wordpiece", "unigram"],
        default="bpe",
        help="byte-level BPE (GPT-2), WordPiece (BERT) or Unigram (T5)",
    )
    train.add_argument("--vocab_size", type=int, default=8192, help="tokens in the vocabulary, special tokens included")
    train.add_argument("--min_frequency", type=int, default=2, help="BPE/WordPiece: least count of a merged pair")
    train.add_argument("--sentinels", type=int, default=100, help="span-corruption sentinels <extra_id_N> to reserve")
    train.add_argument("--parallel", type=bool, default=False, help="the input is parallel data: learn from both sides")
    add_source_arguments(train)
    subcommands.add_subcommand("train", train, help="train a tokenizer on text files")
    encode = ArgumentParser(description="show how a tokenizer splits a text")
    encode.add_argument("--tokenizer", type=str, required=True, help="tokenizer.json, or a model folder")
    encode.add_argument("text", nargs="?", type=Optional[str], default=None, help="the text (or use --text)")
    encode.add_argument("--text", dest="text_option", type=Optional[str], default=None, help="the text to split")
    subcommands.add_subcommand("encode", encode, help="show how a tokenizer splits a text")


def run(args) -> int:
    if args.action == "train":
        return train(args.train)
    return encode(args.encode)


def train(args) -> int:
    from triform.data.tokenizers import save_tokenizer, train_tokenizer
    from triform.progress import say
    from triform.train.session import texts_for_tokenizer

    texts = texts_for_tokenizer(source_from(args, args.input), args.parallel)
    tokenizer = train_tokenizer(
        texts, args.kind, args.vocab_size, min_frequency=args.min_frequency, n_sentinels=args.sentinels
    )
    path = save_tokenizer(tokenizer, args.output)
    say(f"tokenizer: {args.kind}, {tokenizer.get_vocab_size()} tokens, written to {path}")
    return 0


def encode(args) -> int:
    from triform.data.tokenizers import load_tokenizer
    from triform.errors import TriformError

    if (args.text is None) == (args.text_option is None):
        raise TriformError("give the text to split as an argument or with --text, once")
    tokenizer = load_tokenizer(args.tokenizer)
    encoding = tokenizer.encode(args.text if args.text is not None else args.text_option, add_special_tokens=False)
    print("tokens:", " ".join(encoding.tokens))
    print("ids:   ", " ".join(map(str, encoding.ids)))
    print("decoded:", tokenizer.decode(encoding.ids))
    return 0
