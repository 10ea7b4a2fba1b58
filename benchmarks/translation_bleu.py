"""BLEU of greedy decoding and of beam search (4 beams, length penalty 0.6) on lohelp-en-de, for a model
folder trained by `triform train`; writes its section of docs/results.md.

    .venv/bin/python benchmarks/translation_bleu.py --model runs/results/lohelp-vaswani [--write]

The test split is translated with `TextGenerator` (the same engine as `triform translate`); pairs whose
source does not fit the model's max_len are left out, as `triform eval` does, and counted. BLEU and chrF
come from sacrebleu's corpus scores with their default settings (signatures printed).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from generation import write_section

from triform.generate import GenerationConfig, TextGenerator

ROOT = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- results:generation-bleu -->", "<!-- /results:generation-bleu -->"
DECODINGS = {
    "greedy": GenerationConfig(max_new_tokens=1024),
    "beam 4, α 0.6": GenerationConfig(max_new_tokens=1024, num_beams=4, length_penalty=0.6),
}


def read_pairs(path: Path, limit: int | None) -> list[tuple[str, str]]:
    pairs = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        fields = line.split("\t")
        if len(fields) != 2:
            sys.exit(f"{path}: line {number}: expected source<TAB>reference, got {len(fields)} fields")
        pairs.append((fields[0], fields[1]))
    return pairs[:limit] if limit else pairs


def pairs_text(kept, index: int, generator: TextGenerator) -> str:
    return generator.decode(kept[index][0])


def translate(generator: TextGenerator, sources: list[list[int]], config: GenerationConfig, batch_size: int):
    def progress(done: int, tokens: int) -> None:
        elapsed = time.perf_counter() - start
        print(
            f"\r  {done}/{len(sources)} sources, {tokens / elapsed:.0f} tokens/s", end="", file=sys.stderr, flush=True
        )

    start = time.perf_counter()
    results = generator.generate_from_ids(sources, config, batch_size=batch_size, progress=progress)
    print(file=sys.stderr)
    return [r.text for r in results], time.perf_counter() - start


def main() -> None:
    from sacrebleu.metrics import BLEU, CHRF

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="model folder written by triform train")
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "lohelp-en-de" / "test.tsv"))
    parser.add_argument("--limit", type=int, default=None, help="only the first N pairs")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--trained_by", default=None, help="the command that trained the model, quoted in the section")
    parser.add_argument("--write", action="store_true", help="write the table into docs/results.md")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    generator = TextGenerator.load(args.model)
    layout, max_len = generator.layout, generator.model.config.max_len
    pairs = read_pairs(Path(args.data), args.limit)
    kept = [(generator.encode(s), r) for s, r in pairs]
    kept = [(ids, r) for ids, r in kept if layout.room(ids, max_len) >= 1]
    sources, references = [ids for ids, _ in kept], [r for _, r in kept]
    rows = []
    bleu_metric, chrf_metric = BLEU(), CHRF()
    for name, config in DECODINGS.items():
        print(f"{name}:", file=sys.stderr)
        hypotheses, seconds = translate(generator, sources, config, args.batch_size)
        bleu = bleu_metric.corpus_score(hypotheses, [references])
        chrf = chrf_metric.corpus_score(hypotheses, [references])
        rows.append((name, bleu.score, chrf.score, seconds, hypotheses))
        print(f"  BLEU {bleu.score:.2f}  chrF {chrf.score:.2f}  ({seconds:.0f} s)", file=sys.stderr)

    example = min(range(len(sources)), key=lambda i: abs(len(references[i]) - 60))  # a short, typical line
    text = "\n".join(
        [
            f"Translation of the lohelp-en-de file `{Path(args.data).name}` by the model in `{args.model}` "
            f"({generator.model.config.arch}, trained with {generator.objective or 'seq2seq'}): "
            f"{len(sources)} of {len(pairs)} pairs (sources longer than max_len {max_len} left out, as `triform "
            "eval` does). "
            "Timings are wall-clock on a machine shared with other work. "
            f"Measured by `python benchmarks/translation_bleu.py --model {args.model} --write`.",
            *(["", f"The model was trained by `{args.trained_by}`."] if args.trained_by else []),
            "",
            "| decoding | BLEU | chrF | seconds |",
            "|---|---:|---:|---:|",
            *[f"| {name} | {bleu:.2f} | {chrf:.2f} | {seconds:.0f} |" for name, bleu, chrf, seconds, _ in rows],
            "",
            f"sacrebleu signatures: `{bleu_metric.get_signature()}`, `{chrf_metric.get_signature()}`.",
            "",
            f"Example, source: “{pairs_text(kept, example, generator)}”; reference: “{references[example]}”; "
            + "; ".join(f"{name}: “{hypotheses[example]}”" for name, _, _, _, hypotheses in rows)
            + ".",
        ]
    )
    print(text)
    if args.write:
        write_section(text, heading="Generation: BLEU of greedy decoding and beam search", begin=BEGIN, end=END)


if __name__ == "__main__":
    main()
