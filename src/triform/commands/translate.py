"""`triform translate --model DIR --input source.txt > target.txt`: source -> target, batched, with
beam search by default (4 beams, length penalty 0.6, as Vaswani et al. 2017 §6.1), a translation at
most 1.5 x its source's tokens + 10 (Marian's --max-length-factor). One line in, one line out; an empty
line gives an empty line."""

from __future__ import annotations

from triform.commands.generate import add_use_argument, tokenize
from triform.commands.textio import (
    Progress,
    add_decoding_arguments,
    add_model_arguments,
    decoding_config,
    output_line,
    read_texts,
    write_output,
)
from triform.errors import TriformError


def add_arguments(parser) -> None:
    from triform.generate.config import GenerationConfig

    add_model_arguments(parser, "source text")
    add_decoding_arguments(parser, GenerationConfig(num_beams=4, max_new_tokens=256, max_length_factor=1.5))
    add_use_argument(parser)


def run(args) -> int:
    from triform.generate import TextGenerator

    texts, source = read_texts(args, "source text")
    generator = TextGenerator.load(args.model, device=args.device, adapter=args.adapter, quantize=args.quantize)
    # A mixture translates as its part that writes a target for a source (prefix LM, say).
    part = generator.recipe.part(generator.model.config.arch, use=args.use, need="write")
    use = args.use or (part.objective if part is not generator.recipe else None)
    if not generator.generates or not generator.layout_for(use).writes_target:
        trained = generator.recipe.objective
        raise TriformError(
            f"translate needs a source -> target model (an encoder-decoder, or a stack trained with seq2seq, "
            f"prefix-lm, span or denoise); this is a stack trained with {trained}: use triform generate"
        )
    config = decoding_config(args)
    todo = [i for i, text in enumerate(texts) if text.strip()]
    ids = tokenize(generator, [texts[i] for i in todo], source, args.truncate, "translate", use)
    progress = Progress("translate", len(todo), args.quiet)
    results = generator.generate_from_ids(ids, config, batch_size=args.batch_size, progress=progress, use=use)
    per_line = {i: [] for i in range(len(texts))}
    for result in results:
        per_line[todo[result.prompt_index]].append(result)
    lines = []
    for index, text in enumerate(texts):
        for result in per_line[index] or [None]:
            record = {"source": text, "text": "", "finish_reason": None, "n_tokens": 0}
            if result is not None:
                record.update(text=result.text, finish_reason=result.finish_reason, n_tokens=len(result.ids))
                if result.score is not None:
                    record["score"] = round(result.score, 6)
            lines.append(output_line(record, args.jsonl))
    write_output(lines, args.output)
    return 0
