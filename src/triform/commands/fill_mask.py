"""`triform fill-mask --model DIR "the cat sat on the [MASK] ."`: the most likely tokens for each
[MASK] of a text, with their probabilities, from a model trained with mlm. Plain output is one line
per text: `token probability` pairs, best first, masks separated by ` | `."""

from __future__ import annotations

from triform.commands.generate import add_use_argument
from triform.commands.textio import add_model_arguments, output_line, read_texts, where, write_output
from triform.errors import TriformError


def add_arguments(parser) -> None:
    add_model_arguments(parser, "text with [MASK]")
    parser.add_argument("--top_k", type=int, default=5, help="candidates per [MASK]")
    add_use_argument(parser)


def run(args) -> int:
    from triform.generate import TextGenerator

    texts, source = read_texts(args, "text with [MASK]")
    generator = TextGenerator.load(args.model, device=args.device, adapter=args.adapter, quantize=args.quantize)
    missing = [i for i, text in enumerate(texts) if "[MASK]" not in text]
    if missing:
        raise TriformError(f"{where(source, missing[0])}: no [MASK] to fill")
    lines = []
    for start in range(0, len(texts), args.batch_size):
        chunk = texts[start : start + args.batch_size]
        for text, masks in zip(chunk, generator.fill_mask(chunk, top_k=args.top_k, use=args.use)):
            record = {
                "text": text,
                "masks": [
                    [{"token": c.token, "id": c.id, "probability": round(c.probability, 6)} for c in m] for m in masks
                ],
                "plain": " | ".join(" ".join(f"{c.token} {c.probability:.4f}" for c in m) for m in masks),
            }
            if args.jsonl:
                del record["plain"]
            lines.append(output_line(record, args.jsonl, text_key="plain"))
    write_output(lines, args.output)
    return 0
