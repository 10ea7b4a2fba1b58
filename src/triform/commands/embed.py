"""`triform embed --model DIR --input texts.txt --output vectors.npy`: one vector per line of text,
the pooled final hidden states of the model (mean, first token or last token; L2-normalised on
request). `--output` ending in .npy writes a (lines, d_model) float32 array; otherwise each line gets
a JSON object {"text", "embedding"} (to stdout without --output)."""

from __future__ import annotations

from typing import Literal, Optional

from triform.commands.textio import Progress, add_model_arguments, read_texts


def add_arguments(parser) -> None:
    add_model_arguments(parser, "text")
    parser.add_argument(
        "--pooling",
        type=Optional[Literal["mean", "cls", "last"]],
        default=None,
        help="how a text's hidden states become one vector (default: the model's own, else mean; "
        "last on a causal stack)",
    )
    parser.add_argument("--normalize", type=Optional[bool], default=None, help="L2-normalise every vector")
    parser.add_argument("--max_len", type=Optional[int], default=None, help="tokens per text (default: the model's)")


def run(args) -> int:
    import json

    import numpy as np

    from triform.io import atomic_write, write_lines
    from triform.progress import say
    from triform.tasks.embed import Embedder

    texts, _ = read_texts(args, "text")
    embedder = Embedder.load(
        args.model, pooling=args.pooling, normalize=args.normalize, device=args.device, max_len=args.max_len
    )
    progress = Progress("embed", len(texts), args.quiet)
    vectors = embedder.embed(texts, batch_size=args.batch_size, progress=progress).numpy()
    if args.output and args.output.endswith(".npy"):
        atomic_write(args.output, lambda path: np.save(path, vectors.astype(np.float32), allow_pickle=False))
    else:
        lines = [json.dumps({"text": t, "embedding": [round(float(x), 7) for x in v]}) for t, v in zip(texts, vectors)]
        if args.output:
            write_lines(args.output, lines)
        else:
            print("\n".join(lines))
    if not args.quiet:
        pooling = embedder.pooling
        say(
            f"embed: {len(texts)} texts, {vectors.shape[1]} dimensions, {pooling.how} pooling"
            + (", normalised" if pooling.normalize else "")
        )
    return 0
