"""`triform inspect --arch stack --objective mlm --text "I am going home"`."""

from __future__ import annotations

from typing import Literal, Optional

ARCHS = Literal["stack", "encoder-decoder"]
OBJECTIVES = Literal["clm", "mlm", "span", "denoise", "prefix-lm", "seq2seq"]
PATTERNS = Literal["bidirectional", "causal", "prefix"]


def add_arguments(parser) -> None:
    parser.add_argument("--arch", type=ARCHS, default="stack", help="architecture")
    parser.add_argument("--objective", type=OBJECTIVES, required=True, help="training objective")
    parser.add_argument("--pattern", type=Optional[PATTERNS], default=None, help="attention pattern (default: the pair's)")
    parser.add_argument("--text", type=str, required=True, help="the text to transform (the source, for seq2seq)")
    parser.add_argument("--target", type=Optional[str], default=None, help="target text, for seq2seq")
    parser.add_argument("--seed", type=int, default=0, help="seed of the objective's random choices")


def run(args) -> int:
    from triform.explain import explain_pair

    print(explain_pair(args.arch, args.objective, args.text, pattern=args.pattern, target=args.target, seed=args.seed))
    return 0
