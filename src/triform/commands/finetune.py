"""`triform finetune --task classify --init runs/bert/model --data.train train.jsonl --data.valid valid.jsonl`.

Fine-tunes a model folder for a task on the same trainer as `triform train`: every `--train.*` and
`--optim.*` option works here too, as do `--config run.toml` and `--resume true`. The columns each
task reads are listed in the README (section "Fine-tuning and prediction").
"""

from __future__ import annotations


def add_arguments(parser) -> None:
    from jsonargparse import ActionConfigFile

    from triform.tasks.options import FinetuneConfig
    from triform.train.config import CONFIG_MODE, register_config_loader

    register_config_loader()
    parser.parser_mode = CONFIG_MODE
    parser.allow_abbrev = False  # a misspelt option is an error, never a guess
    parser.add_argument("--config", action=ActionConfigFile, help="a TOML (.toml) or YAML file of the options below")
    parser.add_class_arguments(FinetuneConfig, nested_key=None, as_group=False)


def run(args) -> int:
    import signal

    from triform.tasks.finetune import finetune
    from triform.tasks.options import FinetuneConfig
    from triform.train.config import from_namespace

    values = args.as_dict()
    values.pop("config", None)
    values.pop("__path__", None)
    config = from_namespace(FinetuneConfig, values)
    stop_requested = []

    def request_stop(signum, frame):
        if stop_requested:  # a second Ctrl-C stops at once
            raise KeyboardInterrupt
        stop_requested.append(signum)
        print("\nstopping after this step (checkpoint follows); press Ctrl-C again to stop now", flush=True)

    previous = {s: signal.signal(s, request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        outcome = finetune(config, lambda: bool(stop_requested))
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    return 130 if outcome == "stopped" and stop_requested else 0
