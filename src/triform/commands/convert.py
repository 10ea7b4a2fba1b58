"""`triform convert --from-hf DIR --out DIR`, `triform convert --to-hf DIR --out DIR` and
`triform convert --to-onnx DIR --out DIR`."""

from __future__ import annotations

import sys
from typing import Literal, Optional

MODEL_TYPES = Literal[
    "bert", "roberta", "distilbert", "gpt2", "bart", "marian", "t5", "mt5", "llama", "mistral", "qwen2", "qwen3"
]


def add_arguments(parser) -> None:
    from jsonargparse import ActionYesNo

    parser.add_argument("--from-hf", type=Optional[str], default=None, help="a Hugging Face model folder to import")
    parser.add_argument("--to-hf", type=Optional[str], default=None, help="a triform model folder to export")
    parser.add_argument(
        "--to-onnx",
        type=Optional[str],
        default=None,
        help="a model folder (triform or Hugging Face) to export as ONNX graphs, the KV cache as inputs and outputs",
    )
    parser.add_argument("--out", "--output", type=str, required=True, help="the folder to write")
    parser.add_argument(
        "--model-type",
        type=Optional[MODEL_TYPES],
        default=None,
        help="with --to-hf: the Hugging Face family to write (default: the one imported from, else the first that fits)",  # noqa: E501
    )
    parser.add_argument(
        "--max-shard-size",
        type=str,
        default="5GB",
        help="with --to-hf: weights larger than this are written in shards of at most this size, as transformers "
        "shards them (5GB, 500MB, 2GiB)",
    )
    parser.add_argument(
        "--overwrite", action=ActionYesNo(no_prefix="no-"), default=False, help="replace --out if it exists"
    )
    parser.add_argument(
        "--tokenizer",
        action=ActionYesNo(no_prefix="no-"),
        default=True,
        help="with --from-hf: also convert the tokenizer (--no-tokenizer: the model only)",
    )


def run(args) -> int:
    import warnings

    from triform.convert import ConversionWarning, convert_from_hf, convert_to_hf, convert_to_onnx

    if sum(source is not None for source in (args.from_hf, args.to_hf, args.to_onnx)) != 1:
        raise ValueError("give exactly one of --from-hf DIR (import), --to-hf DIR or --to-onnx DIR (export)")
    if args.model_type is not None and args.to_hf is None:
        raise ValueError("--model-type chooses the family of an export; it goes with --to-hf")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConversionWarning)
        if args.from_hf is not None:
            pretrained = convert_from_hf(args.from_hf, args.out, overwrite=args.overwrite, tokenizer=args.tokenizer)
            origin = pretrained.extra["hf"]["model_type"]
            print(f"imported Hugging Face {origin} from {args.from_hf}: {describe(pretrained)}")
            print(f"wrote triform model folder {args.out}")
        elif args.to_onnx is not None:
            print(f"tracing {args.to_onnx} with torch.export (minutes for a large model) ...", file=sys.stderr)
            pretrained = convert_to_onnx(args.to_onnx, args.out, overwrite=args.overwrite)
            graphs = "model.onnx" if pretrained.config.arch == "stack" else "encoder_model.onnx and decoder_model.onnx"
            print(f"exported {args.to_onnx}: {describe(pretrained)}")
            print(f"wrote {graphs}, with the KV cache as inputs and outputs, and onnx.json to {args.out}")
        else:
            pretrained = convert_to_hf(
                args.to_hf,
                args.out,
                model_type=args.model_type,
                overwrite=args.overwrite,
                max_shard_size=args.max_shard_size,
            )
            print(f"exported {args.to_hf}: {describe(pretrained)}")
            print(f"wrote Hugging Face model folder {args.out}")
    for warning in caught:
        if issubclass(warning.category, ConversionWarning):
            print(f"triform convert: note: {warning.message}", file=sys.stderr)
    return 0


def describe(pretrained) -> str:
    config = pretrained.config
    n_parameters = sum(p.numel() for p in pretrained.model.parameters())
    tokenizer = pretrained.tokenizer
    tokens = "no tokenizer" if tokenizer is None else f"tokenizer of {tokenizer.get_vocab_size()} tokens"
    size = f"d_model {config.d_model}, {n_parameters / 1e6:.2f}M parameters"
    return f"{config.arch}, {config.n_layers} layers, {size}, {tokens}"
