"""The `triform` command. Each subcommand lives in `triform/commands/<name>.py` and provides
`add_arguments(parser)` and `run(args)`; modules import torch lazily so `--help` stays fast."""

from __future__ import annotations

import importlib
import sys

from jsonargparse import ArgumentParser

from triform.errors import TriformError

# subcommand -> (module under triform.commands, one-line help)
COMMANDS = {
    "compare": (
        "compare",
        "pretrain every architecture x objective pair with the same compute and score them on held-out tasks",
    ),
    "demo": ("demo", "train a tiny GPT, BERT and encoder-decoder from the same parts in two minutes; an HTML report"),
    "inspect": ("inspect", "show what an objective makes of a text: input, target and attention pattern"),
    "presets": ("presets", "list the named model presets"),
    "pairs": ("pairs", "print which objective trains on which architecture and attention pattern"),
    "generate": ("generate", "continue text with a model folder: greedy, sampling or beam search"),
    "translate": ("translate", "translate lines of a file or stdin with a source -> target model (beam search)"),
    "fill-mask": ("fill_mask", "the most likely tokens for each [MASK] of a text, with probabilities"),
    "convert": ("convert", "import a Hugging Face model folder (--from-hf) or export one (--to-hf)"),
    "tokenizer": ("tokenizer", "train a tokenizer (byte-level BPE, WordPiece, Unigram) or show how one splits a text"),
    "prepare": ("prepare", "tokenize a corpus once into memory-mapped token shards"),
    "train": ("train", "train a model on text: any preset or architecture x objective pair, resumable, multi-process"),
    "average": ("average", "average the parameters of a run's last checkpoints into one model folder"),
    "eval": ("evaluate", "evaluate a trained model: perplexity, masked-token accuracy, BLEU and chrF"),
    "finetune": ("finetune", "fine-tune a model for a task: classify, pair, choice, qa, tag, text2text or embed"),
    "merge": ("merge", "add LoRA adapters into the weights of their base model: a plain model folder"),
    "embed": ("embed", "one vector per text: the pooled final hidden states of a model (mean, first or last token)"),
    "predict": ("predict", "predict with a fine-tuned model: one JSON line per record, and metrics when labelled"),
    "serve": ("serve", "serve models over HTTP: OpenAI-compatible completions and embeddings, batched, streamed"),
    "calibrate": ("calibrate", "time the candidate kernels of a model's products and attention here; show, --save"),
}


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="triform", description="Autoregressive, autoencoding and seq2seq Transformers.")
    subcommands = parser.add_subcommands(dest="command")
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(f"triform.commands.{module_name}")
        subparser = ArgumentParser(description=help_text)
        subcommands.add_subcommand(name, subparser, help=help_text)
        module.add_arguments(subparser)  # after joining the parent: a module may add subcommands of its own
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    name = args.command
    module = importlib.import_module(f"triform.commands.{COMMANDS[name][0]}")
    try:
        return module.run(args[name]) or 0
    except (TriformError, ValueError, FileNotFoundError) as error:
        print(f"triform {name}: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"triform {name}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
