"""The `triform` command. Each subcommand lives in `triform/commands/<name>.py` and provides
`add_arguments(parser)` and `run(args)`; modules import torch lazily so `--help` stays fast."""

from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path

from jsonargparse import ArgumentError, ArgumentParser

from triform.devices import usable_device
from triform.errors import TriformError
from triform.io import make_room_for

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

FOLDER_OUTPUTS = {"average", "merge", "prepare"}  # whose --output is a folder; the others' is a file


def build_parser(exit_on_error: bool = True) -> ArgumentParser:
    """The `triform` parser; with `exit_on_error` False it raises ArgumentError where it would print
    its usage and exit (`main` says the error in one line instead)."""
    description = "Autoregressive, autoencoding and seq2seq Transformers."
    parser = ArgumentParser(prog="triform", description=description, exit_on_error=exit_on_error)
    subcommands = parser.add_subcommands(dest="command")
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(f"triform.commands.{module_name}")
        subparser = ArgumentParser(description=help_text, exit_on_error=exit_on_error)
        subcommands.add_subcommand(name, subparser, help=help_text)
        module.add_arguments(subparser)  # after joining the parent: a module may add subcommands of its own
        for flag, fields in section_fields(subparser).items():
            section = next(a for a in subparser._actions if flag in a.option_strings)
            section.help = f"a YAML or JSON file, or an inline mapping, of the {flag}.* fields ({', '.join(fields)})"
    return parser


def describe(error: OSError) -> str:
    """An OSError as `strerror: 'file'`, without the errno prefix."""
    return f"{error.strerror}: '{error.filename}'" if error.strerror and error.filename else str(error)


def section_fields(parser: ArgumentParser) -> dict[str, list[str]]:
    """Each section option of `parser` (`--data`, loading a mapping of the `--data.*` fields), with
    the names of its first few fields."""
    sections = {}
    for action in parser._actions:
        if type(action).__name__ not in ("_ActionConfigLoad", "ActionConfigFile"):
            continue
        for flag in action.option_strings:
            fields = [o for a in parser._actions for o in a.option_strings if o.startswith(flag + ".")]
            if fields:
                sections[flag] = fields[:3]
    return sections


def misread_section(parser: ArgumentParser, argv: list[str]) -> str | None:
    """Why a section option's value (`--data corpus.txt`) is not a mapping of its fields, in one line,
    or None. jsonargparse says 'Unable to load config' or, for bytes that are not UTF-8, raises."""
    if not argv or argv[0] not in COMMANDS:
        return None
    subparser = parser._subcommands_action._name_parser_map[argv[0]]
    sections = {**section_fields(subparser), "--config": []}
    for index, argument in enumerate(argv[1:], 1):
        flag, equals, value = argument.partition("=")
        if flag not in sections or not (equals or index + 1 < len(argv)):
            continue
        value = value if equals else argv[index + 1]
        problem = mapping_problem(value)
        if problem:
            fields = sections[flag]
            wanted = (
                f"a mapping of its fields ({', '.join(fields)}); to set one, pass {fields[0]} VALUE"
                if fields
                else "a TOML or YAML file of the command's options"
            )
            return f"{flag} {value}: {problem}; {flag} takes {wanted}"
    return None


def mapping_problem(value: str) -> str | None:
    """What keeps `value` (a file's path, or inline YAML/JSON) from being read as a mapping; None if
    nothing does, or if what does is jsonargparse's to say (a malformed file, an unknown field)."""
    import yaml

    path = Path(value)
    if path.is_file():
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError as error:
            return f"undecodable bytes at offset {error.start}; expected UTF-8 text"
        if path.suffix == ".toml":
            return None
    elif path.is_dir():
        return "a folder, not a YAML or JSON file"
    elif path.suffix in (".yaml", ".yml", ".json", ".toml"):
        return "no such file"
    else:
        text = value
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError:
        return None
    if isinstance(loaded, dict):
        return None
    return "not a YAML or JSON mapping" + ("" if path.is_file() else ", and no such file")


def one_line(error: ArgumentError) -> str:
    """jsonargparse's message (`Parser key "train.steps":`, then the expected type and the value on
    lines of their own) in one line: `train.steps: expected an integer, got 'abc'`."""
    text = re.sub(r'Parser key "([^"]+)":', r"\1:", str(error))
    text = re.sub(UNION, lambda m: expected(" or ".join(kinds(m[1])), m[2]), text, flags=re.DOTALL)
    text = re.sub(CLASS, lambda m: expected(" or ".join(kinds(m[1])), m[2]), text)
    text = re.sub(LITERAL, lambda m: expected(f"one of {m[1].replace(chr(39), '')}", m[2]), text)
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


# jsonargparse's wordings: an Optional field's (each subtype, then each subtype's error), a plain
# type's, a Literal's
UNION = r"Does not validate against any of the Union subtypes\s+Subtypes: \[(.*?)\].*Given value: (.*)"
CLASS = r"Expected a (<class '\w+'>)\. Got value: (.*)"
LITERAL = r"Expected a typing\.Literal\[(.*)\]\. Got value: (.*)"
KINDS = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "text", "NoneType": "null"}


def kinds(classes: str) -> list[str]:
    return [KINDS.get(name, name) for name in re.findall(r"<class '(\w+)'>", classes)]


def expected(what: str, value: str) -> str:
    return f"expected {what}, got {value!r}"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser(exit_on_error=False)
    argv = sys.argv[1:] if argv is None else argv
    command = argv[0] if argv and argv[0] in COMMANDS else None
    problem = misread_section(parser, argv)
    if problem:
        print(f"triform {command}: error: {problem}", file=sys.stderr)
        return 2
    try:
        args = parser.parse_args(argv)
    except ArgumentError as error:
        name = f"triform {command}" if command else "triform"
        print(f"{name}: error: {one_line(error)} (`{name} --help` lists the options)", file=sys.stderr)
        return 2
    name = args.command
    module = importlib.import_module(f"triform.commands.{COMMANDS[name][0]}")
    device = getattr(args[name], "device", None)
    if isinstance(device, str) and device != "auto":
        try:
            usable_device(device)
        except TriformError as error:
            print(f"triform {name}: error: {error}", file=sys.stderr)
            return 1
    chosen = args[name]
    nested = getattr(chosen, "action", None)  # a command of subcommands (tokenizer train): the chosen one's
    output = getattr(getattr(chosen, nested, chosen) if isinstance(nested, str) else chosen, "output", None)
    if isinstance(output, str) and output != "-":  # found out before the work, not after it
        try:
            make_room_for(output, is_folder=name in FOLDER_OUTPUTS)
        except OSError as error:
            print(f"triform {name}: error: --output {output}: cannot be written ({describe(error)})", file=sys.stderr)
            return 1
    try:
        return module.run(args[name]) or 0
    except (TriformError, ValueError) as error:
        print(f"triform {name}: error: {error}", file=sys.stderr)
        return 1
    except OSError as error:  # a file not found, a folder not writable, a disk full
        print(f"triform {name}: error: {describe(error)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"triform {name}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
