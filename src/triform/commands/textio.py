"""What `triform generate`, `translate` and `fill-mask` share: decoding options, reading texts from an
argument, a file or stdin, progress on stderr, and writing one output per line or JSONL."""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Optional, Union

from triform.errors import TriformError
from triform.io import write_lines
from triform.precision import Precision

DECODING_HELP = {
    "max_new_tokens": "most tokens to generate per output",
    "min_new_tokens": "[EOS] is forbidden before this many tokens",
    "do_sample": "sample instead of taking the most likely token",
    "temperature": "sampling temperature (below 1 sharpens, above 1 flattens)",
    "top_k": "sample among the k most likely tokens (0: all)",
    "top_p": "nucleus sampling: the smallest set of tokens with this much probability (1: all)",
    "min_p": "drop tokens less likely than min_p times the most likely one (0: off)",
    "num_beams": "beam search with this many beams (1: no beam search)",
    "length_penalty": "alpha of the length penalty ((5 + length) / 6) ** alpha (Wu et al. 2016)",
    "early_stopping": "beam search stops once num_beams hypotheses have finished",
    "num_return_sequences": "outputs per prompt: samples, or the n best beams",
    "repetition_penalty": "penalty on tokens already in the sequence (1: off)",
    "no_repeat_ngram_size": "never repeat an n-gram of this size (0: off)",
    "stop": 'stop string(s): a string, or a JSON list such as \'["\\\\n", "."]\'; \\n and \\t are understood',
    "seed": "seed of the sampler: the same seed gives the same samples",
    "use_cache": "use the KV cache (false re-runs the whole sequence at every step, for comparison)",
    "compile": "torch.compile the decoding step: faster steps after a compile of tens of seconds (once per process)",
    "precision": "auto: bf16 autocast where the hardware computes in bf16 natively, fp32 elsewhere; or bf16, fp32",
    "max_length_factor": "source -> target models: at most this many times the source's tokens, plus 10 (null: off)",
}


def add_model_arguments(parser, what: str) -> None:
    parser.add_argument(
        "text", nargs="?", type=Optional[str], default=None, help=f"the {what} (or use --input, or stdin)"
    )
    parser.add_argument(
        "--model", type=str, required=True, help="model folder (config.json, model.safetensors, tokenizer.json)"
    )
    parser.add_argument(
        "--adapter", type=Optional[str], default=None, help="an adapter folder (adapter.json) to put on --model"
    )
    parser.add_argument("--input", type=Optional[str], default=None, help=f"file with one {what} per line ('-': stdin)")
    parser.add_argument(
        "--output",
        type=Optional[str],
        default=None,
        help="write here (atomically; a missing folder is made) instead of stdout",
    )
    parser.add_argument("--jsonl", action="store_true", help="one JSON object per output instead of plain text")
    parser.add_argument("--batch_size", type=int, default=32, help="inputs run together")
    parser.add_argument("--device", type=str, default="cpu", help="torch device, e.g. cpu or cuda")
    add_quantize_argument(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")


def add_quantize_argument(parser) -> None:
    parser.add_argument(
        "--quantize",
        type=Optional[str],
        default=None,
        help="int8: int8 weights per output channel, for faster CPU inference (default: as trained)",
    )


def add_decoding_arguments(parser, defaults) -> None:
    """One flag per GenerationConfig field, with `defaults` (a GenerationConfig) as defaults."""
    from triform.generate.config import GenerationConfig

    for field in dataclasses.fields(GenerationConfig):
        default = getattr(defaults, field.name)
        kind = {int: int, float: float, bool: bool}.get(type(default), None)
        if field.name == "seed":
            kind = Optional[int]
        elif field.name == "max_length_factor":
            kind = Optional[float]
        elif field.name == "stop":
            kind, default = Union[str, list[str]], list(default)
        elif field.name == "precision":
            kind = Precision
        parser.add_argument(f"--{field.name}", type=kind, default=default, help=DECODING_HELP[field.name])
    parser.add_argument(
        "--truncate", action="store_true", help="shorten inputs too long for the model instead of failing"
    )


def decoding_config(args):
    from triform.generate.config import GenerationConfig

    values = {field.name: getattr(args, field.name) for field in dataclasses.fields(GenerationConfig)}
    stops = [values["stop"]] if isinstance(values["stop"], str) else values["stop"]
    values["stop"] = tuple(unescape(s) for s in stops)
    return GenerationConfig(**values)


def unescape(text: str) -> str:
    """\\n, \\t and \\\\ as typed on a command line."""
    return text.replace("\\\\", "\0").replace("\\n", "\n").replace("\\t", "\t").replace("\0", "\\")


def read_texts(args, what: str) -> tuple[list[str], str]:
    """The inputs and what to call their source in messages: the argument, a file, or stdin."""
    if args.text is not None and args.input is not None:
        raise TriformError(f"give the {what} as an argument or with --input, not both")
    if args.text is not None:
        return [args.text], "the text argument"
    if args.input is None and sys.stdin.isatty():
        raise TriformError(f"no {what}: give it as an argument, with --input FILE, or on stdin")
    if args.input in (None, "-"):
        return split_lines(
            sys.stdin.buffer.read() if hasattr(sys.stdin, "buffer") else sys.stdin.read().encode(), "<stdin>"
        ), "<stdin>"
    path = Path(args.input)
    if not path.is_file():
        raise TriformError(f"{path}: not found; expected a text file with one {what} per line")
    return split_lines(path.read_bytes(), str(path)), str(path)


def split_lines(data: bytes, source: str) -> list[str]:
    lines = []
    for number, raw in enumerate(data.splitlines(), start=1):
        try:
            lines.append(raw.decode("utf-8").rstrip("\r"))
        except UnicodeDecodeError as error:
            raise TriformError(
                f"{source}: line {number}: not UTF-8 text ({error.reason} at byte {error.start})"
            ) from None
    if not lines:
        raise TriformError(f"{source}: empty; expected one input per line")
    return lines


def where(source: str, index: int) -> str:
    return source if source == "the text argument" else f"{source}: line {index + 1}"


class Progress:
    """Inputs done, tokens per second and time left, on stderr, at most once a second."""

    def __init__(self, command: str, total: int, quiet: bool):
        self.command, self.total, self.quiet = command, total, quiet
        self.start = self.last = time.monotonic()

    def __call__(self, done: int, tokens: int) -> None:
        now = time.monotonic()
        if self.quiet or (now - self.last < 1.0 and done < self.total):
            return
        self.last = now
        elapsed = max(now - self.start, 1e-9)
        eta = elapsed / done * (self.total - done) if done else 0.0
        print(
            f"{self.command}: {done}/{self.total} inputs, {tokens / elapsed:.0f} tokens/s, "
            f"elapsed {elapsed:.0f}s, ETA {eta:.0f}s",
            file=sys.stderr,
            flush=True,
        )


def output_line(record: dict, jsonl: bool, text_key: str = "text") -> str:
    if jsonl:
        return json.dumps(record, ensure_ascii=False)
    return str(record[text_key]).replace("\r", " ").replace("\n", " ")  # one output per line


def write_output(lines: list[str], output: str | None) -> None:
    """To stdout, or to the file `output`, written whole or not at all (triform.io.write_lines: a
    missing folder is created, as for every output triform writes)."""
    if output is None:
        for line in lines:
            print(line)
        return
    write_lines(output, lines)
