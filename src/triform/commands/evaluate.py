"""`triform eval --model runs/gpt --data valid.txt`: the metrics of the objective a model was
trained with: loss and perplexity always, masked-token accuracy and pseudo-perplexity for mlm,
BLEU and chrF for seq2seq (greedy, or beam search with --num_beams)."""

from __future__ import annotations

from typing import Literal, Optional

from triform.commands._data import add_source_arguments, source_from


def add_arguments(parser) -> None:
    parser.add_argument(
        "--model",
        type=str,
        required=True,
        help="a model folder, a checkpoint, or a run folder (its final model, else best, else newest checkpoint)",
    )
    parser.add_argument("--data", type=str, required=True, help="file, folder, glob or prepared corpus to evaluate on")
    parser.add_argument(
        "--tokenizer", type=Optional[str], default=None, help="tokenizer.json, when the model folder has none"
    )
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--max_examples", type=int, default=0, help="evaluate on this many examples (0: all)")
    parser.add_argument(
        "--pseudo_perplexity_tokens",
        type=int,
        default=4096,
        help="mlm: tokens scored one at a time for pseudo-perplexity (0: all)",
    )
    parser.add_argument(
        "--too_long",
        type=Literal["error", "skip", "truncate"],
        default="error",
        help="seq2seq: a pair longer than the model's max_len",
    )
    parser.add_argument("--num_beams", type=int, default=1, help="seq2seq: 1 decodes greedily, more runs beam search")
    parser.add_argument("--precision", type=Literal["auto", "bf16", "fp32"], default="auto")
    parser.add_argument("--device", type=Literal["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--output", type=Optional[str], default=None, help="also write the metrics to this JSON file")
    add_source_arguments(parser)


def run(args) -> int:
    import json

    from triform.io import atomic_write
    from triform.progress import say
    from triform.train.evaluate import evaluate_model

    metrics = evaluate_model(
        args.model,
        source_from(args, args.data),
        tokenizer_path=args.tokenizer,
        batch_size=args.batch_size,
        max_examples=args.max_examples,
        pppl_tokens=args.pseudo_perplexity_tokens,
        too_long=args.too_long,
        precision=args.precision,
        device=args.device,
        num_beams=args.num_beams,
    )
    for name, value in metrics.items():
        print(f"{name:<22} {value:.4f}" if isinstance(value, float) else f"{name:<22} {value}")
    if args.output:
        atomic_write(args.output, json.dumps(metrics, indent=2) + "\n")
        say(f"metrics written to {args.output}")
    return 0
