"""`triform prepare --input corpus/ --tokenizer tokenizer.json --output data/train`: token shards."""

from __future__ import annotations

from triform.commands._data import add_source_arguments, source_from


def add_arguments(parser) -> None:
    parser.add_argument("--input", type=str, required=True, help="file, folder or glob to tokenize")
    parser.add_argument("--tokenizer", type=str, required=True, help="tokenizer.json (or a model folder holding one)")
    parser.add_argument("--output", type=str, required=True, help="folder to write the shards into")
    parser.add_argument(
        "--parallel", type=bool, default=False, help="(source, target) pairs, for the seq2seq objective"
    )
    parser.add_argument("--shard_tokens", type=int, default=2**26, help="token ids per shard file")
    parser.add_argument("--overwrite", type=bool, default=False, help="replace a folder prepared from other input")
    add_source_arguments(parser)


def run(args) -> int:
    import json
    from pathlib import Path

    from triform.data.shards import META, prepare
    from triform.data.tokenizers import load_tokenizer
    from triform.errors import TriformError
    from triform.progress import say

    if args.shard_tokens < 1:
        raise TriformError(f"--shard_tokens: expected a positive integer, got {args.shard_tokens}")
    tokenizer = load_tokenizer(args.tokenizer)
    output = prepare(
        source_from(args, args.input),
        tokenizer,
        args.output,
        parallel=args.parallel,
        shard_tokens=args.shard_tokens,
        overwrite=args.overwrite,
    )
    meta = json.loads((Path(output) / META).read_text())
    say(
        f"prepared {meta['documents']} documents, {meta['tokens']} tokens ({meta['dtype']}) in {len(meta['shards'])} "
        f"shard(s): {output}"
    )
    return 0
