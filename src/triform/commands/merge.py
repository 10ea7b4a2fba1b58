"""`triform merge --model BASE --adapter DIR --output OUT`: add LoRA adapters into the weights of the
model they were trained on. OUT is an ordinary model folder (a fine-tuned one when the adapters
came with a task head), written atomically, that runs as fast as the base: nothing is left of the
adapters but their sum in the weights (Hu et al. 2021, §4.1)."""

from __future__ import annotations


def add_arguments(parser) -> None:
    parser.add_argument("--model", type=str, required=True, help="the base model folder the adapters were trained on")
    parser.add_argument("--adapter", type=str, required=True, help="the adapter folder (adapter.json)")
    parser.add_argument("--output", type=str, required=True, help="the merged model folder to write")


def run(args) -> int:
    from triform.models.adapters import merge_folder, read_adapter
    from triform.progress import say
    from triform.tasks.checkpoint import merge_task_adapter

    if "task" in (read_adapter(args.adapter).get("extra") or {}):
        output = merge_task_adapter(args.adapter, args.output, base=args.model)
    else:
        output = merge_folder(args.model, args.adapter, args.output)
    say(f"merged {args.adapter} into {args.model}: {output}")
    return 0
