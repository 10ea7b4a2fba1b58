"""`triform generate --model DIR "Once upon a time"`: continue text (or, with an `mlm`-trained
model, write it by mask-predict). Prompts come from the argument, `--input FILE` or stdin; each
output is one line, or one JSON object with `--jsonl`; `--stream` prints tokens as they come;
`--draft DIR --draft_k 4` decodes speculatively with a smaller model of the same tokenizer."""

from __future__ import annotations

import sys
from typing import Optional

from triform.commands.textio import (
    Progress,
    add_decoding_arguments,
    add_model_arguments,
    decoding_config,
    output_line,
    read_texts,
    where,
    write_output,
)
from triform.errors import TriformError


def add_arguments(parser) -> None:
    from triform.generate.config import GenerationConfig

    add_model_arguments(parser, "prompt")
    add_decoding_arguments(parser, GenerationConfig())
    parser.add_argument(
        "--stream", action="store_true", help="print each output as it is generated (greedy or sampling)"
    )
    parser.add_argument(
        "--length", type=Optional[int], default=None, help="mlm-trained models: tokens to write after the prompt"
    )
    parser.add_argument("--iterations", type=int, default=10, help="mlm-trained models: mask-predict iterations")
    add_use_argument(parser)
    parser.add_argument(
        "--draft",
        type=Optional[str],
        default=None,
        help="speculative decoding: a smaller model folder with the same tokenizer proposes tokens to verify",
    )
    parser.add_argument("--draft_k", type=int, default=4, help="speculative decoding: proposals per round")


def add_use_argument(parser) -> None:
    parser.add_argument(
        "--use",
        type=Optional[str],
        default=None,
        help="a model trained with a mixture: the part to use (its label, objective or mode: clm, s2s, ...); "
        "by default the part best at the command",
    )


def tokenize(
    generator, texts: list[str], source: str, truncate: bool, command: str, use: str | None = None
) -> list[list[int]]:
    from triform.generate import PromptTooLong

    try:
        ids, truncated = generator.tokenize(texts, truncate=truncate, use=use)
    except PromptTooLong as error:
        raise TriformError(f"{where(source, error.index)}: {error.reason}") from None
    if truncated:
        print(f"{command}: shortened {len(truncated)} input(s) to fit the model", file=sys.stderr)
    return ids


def run(args) -> int:
    from triform.generate import TextGenerator

    texts, source = read_texts(args, "prompt")
    if args.draft is not None and args.stream:
        raise TriformError("--draft decodes whole outputs; drop --stream (or --draft)")
    generator = TextGenerator.load(
        args.model,
        device=args.device,
        adapter=args.adapter,
        quantize=args.quantize,
        draft=args.draft,
        draft_k=args.draft_k,
    )
    if generator.fills_masks and (args.length is not None or not generator.generates):
        return run_mask_predict(generator, texts, args)
    if args.length is not None:
        raise TriformError("--length is for models trained with mlm (mask-predict); this model continues text")
    config = decoding_config(args)
    ids = tokenize(generator, texts, source, args.truncate, "generate", args.use)
    if args.stream:
        if args.jsonl or args.output:
            raise TriformError("--stream prints plain text to stdout; drop --jsonl and --output")
        for prompt in ids:
            for piece in generator.stream_ids(prompt, config, use=args.use):
                sys.stdout.write(piece)
                sys.stdout.flush()
            sys.stdout.write("\n")
        return 0
    progress = Progress("generate", len(texts), args.quiet)
    results = generator.generate_from_ids(ids, config, batch_size=args.batch_size, progress=progress, use=args.use)
    lines = []
    for result in results:
        record = {
            "prompt": texts[result.prompt_index],
            "text": result.text,
            "finish_reason": result.finish_reason,
            "n_tokens": len(result.ids),
        }
        if result.score is not None:
            record["score"] = round(result.score, 6)
        lines.append(output_line(record, args.jsonl))
    write_output(lines, args.output)
    if generator.acceptance is not None and not args.quiet:
        acceptance = generator.acceptance
        print(
            f"generate: the draft's proposals kept {100 * acceptance.rate:.0f} %, "
            f"{acceptance.tokens_per_pass:.2f} tokens per pass of the model",
            file=sys.stderr,
        )
    return 0


def run_mask_predict(generator, texts: list[str], args) -> int:
    from triform.generate.config import GenerationConfig

    if decoding_config(args) != GenerationConfig() or args.stream:
        raise TriformError(
            "this model was trained with mlm: it writes by mask-predict (--length, --iterations); "
            "decoding options and --stream do not apply"
        )
    lines = []
    for text in texts:
        output = generator.mask_predict(text, length=args.length, iterations=args.iterations, use=args.use)
        lines.append(output_line({"prompt": text, "text": output}, args.jsonl))
    write_output(lines, args.output)
    return 0
