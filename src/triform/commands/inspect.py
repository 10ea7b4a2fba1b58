"""`triform inspect --arch stack --objective mlm --text "I am going home"`; with `--then "She reads"`,
the two texts packed in one window as training packs documents (`--pack documents` or `stream`)."""

from __future__ import annotations

from typing import Literal, Optional

ARCHS = Literal["stack", "encoder-decoder"]
OBJECTIVES = Literal["clm", "mlm", "span", "denoise", "prefix-lm", "seq2seq", "electra", "mixture", "ul2", "unilm"]
PATTERNS = Literal["bidirectional", "causal", "prefix", "right-to-left"]
PACKS = Literal["documents", "stream"]


def add_arguments(parser) -> None:
    parser.add_argument("--arch", type=ARCHS, default="stack", help="architecture")
    parser.add_argument("--objective", type=OBJECTIVES, required=True, help="training objective")
    parser.add_argument(
        "--pattern", type=Optional[PATTERNS], default=None, help="attention pattern (default: the pair's)"
    )
    parser.add_argument("--text", type=str, required=True, help="the text to transform (the source, for seq2seq)")
    parser.add_argument("--target", type=Optional[str], default=None, help="target text, for seq2seq")
    parser.add_argument(
        "--then",
        type=Optional[str],
        default=None,
        help="a second text packed after --text in one window, as training packs documents",
    )
    parser.add_argument(
        "--pack",
        type=PACKS,
        default="documents",
        help="with --then: each document attended alone (documents) or both as one stream (stream)",
    )
    parser.add_argument(
        "--mix",
        type=Optional[str],
        default=None,
        help='--objective mixture: its parts as JSON, as for train: \'{"clm": 0.5, "mlm@causal": 0.5}\'',
    )
    parser.add_argument(
        "--mode_tokens", type=Optional[bool], default=None, help="a mixture: put each part's mode token first"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the objective's random choices (and the draw)")
    parser.add_argument(
        "--png",
        type=Optional[str],
        default=None,
        help="also draw the input/target tokens and the attention pattern into this PNG file",
    )


def run(args) -> int:
    from triform.explain import explain_pair

    print(
        explain_pair(
            args.arch,
            args.objective,
            args.text,
            pattern=args.pattern,
            target=args.target,
            seed=args.seed,
            then=args.then,
            pack=args.pack,
            options=mixture_options(args),
        )
    )
    if args.png:
        draw_png(args)
    return 0


def mixture_options(args) -> dict | None:
    """A mixture's options from --mix and --mode_tokens (None for a single objective)."""
    import json

    from triform.errors import TriformError

    options = {}
    if args.mix is not None:
        try:
            options["mix"] = json.loads(args.mix)
        except json.JSONDecodeError as error:
            raise TriformError(f"--mix: expected JSON, {error}") from None
    if args.mode_tokens is not None:
        options["mode_tokens"] = args.mode_tokens
    return options or None


def draw_png(args) -> None:
    from pathlib import Path

    from triform.errors import TriformError
    from triform.explain import prepared_example
    from triform.objectives.compat import ALLOWED
    from triform.pictures import draw_batch

    path = Path(args.png)
    if path.suffix.lower() != ".png":
        raise TriformError(f"--png: {path} should end in .png")
    if not path.parent.is_dir():
        raise TriformError(f"--png: {path.parent} is not a folder")
    batch, tokenizer = prepared_example(
        args.arch,
        args.objective,
        args.text,
        pattern=args.pattern,
        target=args.target,
        seed=args.seed,
        then=args.then,
        pack=args.pack,
        options=mixture_options(args),
    )
    packed = "" if args.then is None else f", packed ({args.pack})"
    what = ALLOWED.get((args.arch, args.objective), {}).get(batch.pattern, f"drew {batch.part}")
    title = f"{args.arch} + {args.objective} + {batch.pattern}{packed}: {what}"
    draw_batch(batch, lambda ids: [tokenizer.id_to_token(int(i)) for i in ids], path, title=title)
    print(f"picture: {path}")
