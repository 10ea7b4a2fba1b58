"""`triform finetune --task classify --init runs/bert/model --data.train train.jsonl --data.valid valid.jsonl`.

Fine-tunes a model folder for a task on the same trainer as `triform train`: every `--train.*` and
`--optim.*` option works here too, as do `--config run.toml` and `--resume true`. The columns each
task reads are listed in the README (section "Fine-tuning and prediction").
"""

from __future__ import annotations


def add_arguments(parser) -> None:
    from triform.commands.train import add_config_arguments
    from triform.tasks.options import FinetuneConfig

    add_config_arguments(parser, FinetuneConfig)


def run(args) -> int:
    from triform.commands.train import parsed_config, until_stopped
    from triform.tasks.finetune import finetune
    from triform.tasks.options import FinetuneConfig

    config = parsed_config(args, FinetuneConfig)
    return until_stopped(lambda should_stop: finetune(config, should_stop))
