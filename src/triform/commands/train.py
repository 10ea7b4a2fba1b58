"""`triform train --preset tiny-gpt --data.train corpus.txt --run_dir runs/gpt`.

Every field of the run can come from `--config run.toml` (or .yaml) and be overridden on the
command line; `--resume true` continues the run in `--run_dir` exactly where it stopped.
Several processes: `torchrun --nproc_per_node 2 -m triform train ...`.
"""

from __future__ import annotations


def add_arguments(parser) -> None:
    from triform.train.config import RunConfig

    add_config_arguments(parser, RunConfig)


def add_config_arguments(parser, config_class) -> None:
    """Every field of a configuration dataclass as an option, and --config FILE for them all."""
    from jsonargparse import ActionConfigFile

    from triform.train.config import CONFIG_MODE, register_config_loader

    register_config_loader()
    parser.parser_mode = CONFIG_MODE
    parser.allow_abbrev = False  # a misspelt field is an error, never a guess
    parser.add_argument("--config", action=ActionConfigFile, help="a TOML (.toml) or YAML file of the options below")
    parser.add_class_arguments(config_class, nested_key=None, as_group=False)


def parsed_config(args, config_class):
    from triform.train.config import from_namespace

    values = args.as_dict()
    values.pop("config", None)
    values.pop("__path__", None)
    return from_namespace(config_class, values)


def run(args) -> int:
    from pathlib import Path

    from triform.train.config import RunConfig, resolve
    from triform.train.run import train

    resolved = resolve(parsed_config(args, RunConfig))
    return until_stopped(lambda should_stop: train(resolved, Path(resolved.config.run_dir), should_stop))


def until_stopped(work) -> int:
    """Run `work(should_stop)`; the first Ctrl-C (or SIGTERM) asks it to stop after a checkpoint,
    a second one stops at once. Exit status 130 when it stopped on request."""
    import signal

    stop_requested = []

    def request_stop(signum, frame):
        if stop_requested:  # a second Ctrl-C stops at once
            raise KeyboardInterrupt
        stop_requested.append(signum)
        print("\nstopping after this step (checkpoint follows); press Ctrl-C again to stop now", flush=True)

    previous = {s: signal.signal(s, request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        outcome = work(lambda: bool(stop_requested))
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    return 130 if outcome == "stopped" and stop_requested else 0
