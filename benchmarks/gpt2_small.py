"""A GPT-2 small-sized checkpoint (124M parameters) with random weights, made here, nothing downloaded:

    .venv/bin/python benchmarks/gpt2_small.py --out /tmp/gpt2-small

writes `OUT/hf`, a Hugging Face GPT-2 folder (GPT2Config's defaults: 12 layers, d_model 768, 12
heads, 1024 positions; weights as GPT2LMHeadModel initialises them, seeded) with a byte-level BPE
tokenizer of GPT-2's size (50,257 tokens, `<|endoftext|>` its one special token) trained on Brown's
training sentences (../shared/data/brown beside the checkout), and `OUT/triform`, the same model imported through
triform's converter (`triform convert --from-hf`). Both are kept: a second run reuses them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BROWN = ROOT.parent / "shared" / "data" / "brown" / "train.txt"  # the shared data beside the checkout
VOCAB_SIZE = 50257  # GPT-2's (Radford et al. 2019, §2.2)


def train_tokenizer(folder: Path, corpus: Path) -> int:
    """GPT-2's kind of tokenizer (byte-level BPE), trained on `corpus`; vocab.json and merges.txt."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=1,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    with open(corpus) as lines:
        tokenizer.train_from_iterator(lines, trainer)
    tokenizer.model.save(str(folder))
    return tokenizer.get_vocab_size()


def make_hf(folder: Path, corpus: Path, seed: int = 0) -> Path:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    folder.mkdir(parents=True, exist_ok=True)
    vocab_size = train_tokenizer(folder, corpus)
    config = GPT2Config(vocab_size=vocab_size, bos_token_id=0, eos_token_id=0)
    torch.manual_seed(seed)
    GPT2LMHeadModel(config).save_pretrained(folder, safe_serialization=True)
    return folder


def prepare(out: Path, corpus: Path = BROWN) -> tuple[Path, Path]:
    """(Hugging Face folder, triform folder), made if missing."""
    from triform.convert import convert_from_hf

    hf, imported = out / "hf", out / "triform"
    if not (hf / "model.safetensors").is_file():
        print(f"making {hf}: a tokenizer trained on {corpus}, GPT-2 small with random weights", file=sys.stderr)
        make_hf(hf, corpus)
    if not (imported / "model.safetensors").is_file():
        convert_from_hf(hf, imported)
    return hf, imported


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--corpus", type=Path, default=BROWN, help="text the tokenizer is trained on")
    args = parser.parse_args()
    hf, imported = prepare(args.out, args.corpus)
    print(f"{hf}\n{imported}")


if __name__ == "__main__":
    main()
