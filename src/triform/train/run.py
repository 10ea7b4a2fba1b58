"""Run a training from start to end: `triform train`, fine-tuning, the demo and `triform compare` all
come through here.

`run_training` refuses a folder that already holds a run unless asked to resume, joins the processes
torchrun started, has the caller build the job once they exist, writes the run's configuration,
and runs the trainer. `train` does that for a pretraining configuration (train/config.py).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
import yaml

from triform.checkpoint import CONFIG_FILE, WEIGHTS_FILE, load_built, read_config
from triform.data.tokenizers import save_tokenizer
from triform.errors import TriformError
from triform.io import atomic_write
from triform.kernels.host_memory import freed_memory_kept
from triform.models import build_model
from triform.models.adapters import is_adapter_folder, read_adapter
from triform.models.lora import LoraOptions, add_adapters
from triform.models.stack import checkpoint_activations
from triform.train import checkpoint as ckpt
from triform.train.config import LoopConfig, Resolved
from triform.train.distributed import Processes, start, stop
from triform.train.loop import Job, Saved, Trainer
from triform.train.reporting import Reporter, standard_reporters
from triform.train.session import TOKENIZER_FILE, Session, build_session

CONFIG_YAML = "config.yaml"


def run_training(
    run_dir: Path,
    *,
    resume: bool,
    device: str,
    build: Callable[[Processes], tuple[Job, dict]],
    should_stop: Callable[[], bool] = lambda: False,
    progress: Reporter | None = None,
    save_tokenizer_file: bool = False,
) -> str:
    """Build the job with `build(processes)` -> (job, configuration to save) and train it into
    `run_dir`; returns 'done' or 'stopped'. Progress goes to `progress` (log lines by default);
    metrics.jsonl, loss.png and, when train.tensorboard is set, TensorBoard's events are written too."""
    run_dir = Path(run_dir)
    existing = ckpt.checkpoints(run_dir)
    if existing and not resume:
        raise TriformError(
            f"run_dir: {run_dir} already holds a run (up to {existing[-1].name}); "
            "pass --resume true to continue it, or choose another --run_dir"
        )
    processes = start(device)
    try:
        job, saved_config = build(processes)
        if existing:
            check_same_model(existing[-1], job.model.config)
        if processes.is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
            atomic_write(run_dir / CONFIG_YAML, yaml.safe_dump(saved_config, sort_keys=False))
            if save_tokenizer_file:
                save_tokenizer(job.saved.tokenizer, run_dir / TOKENIZER_FILE)
        processes.barrier()
        reporter = standard_reporters(run_dir, tensorboard=job.loop.tensorboard, progress=progress)
        trainer = Trainer(job, processes, run_dir, reporter if processes.is_main else None)
        if resume:
            trainer.resume()
        with freed_memory_kept(job.loop.keep_freed_memory and processes.device.type == "cpu"):
            result = trainer.run(should_stop)
        # Every process done (the main one saves last) before any tears down its connections: a
        # process that left gloo's group while its peer still wrote its model was seen to abort
        # ("terminate called without an active exception") after a finished run.
        processes.barrier()
        return result
    finally:
        stop(processes)


def check_same_model(checkpoint: Path, model_config) -> None:
    """A resumed run must build the model its checkpoint holds; name the first field that differs."""
    if is_adapter_folder(checkpoint):
        saved = read_adapter(checkpoint)["base"]["model"]
    else:
        saved = read_config(checkpoint)["model"]
    for name, value in model_config.to_dict().items():
        if saved.get(name) != value:
            raise TriformError(
                f"model.{name}: {checkpoint / CONFIG_FILE} was trained with {saved.get(name)!r}, "
                f"this command asks for {value!r}; resume with the run's own settings"
            )


def adapt_for_training(model: torch.nn.Module, lora: LoraOptions, loop: LoopConfig, body=None) -> torch.nn.Module:
    """LoRA adapters on `body` (the model itself, or a task model's body), everything else of the body
    frozen; activation checkpointing in every stack. Returns `model`."""
    if lora.enabled:
        add_adapters(model if body is None else body, lora)
    if loop.activation_checkpointing:
        checkpoint_activations(model)
    return model


def pretraining_job(session: Session, init_from: Path | None = None) -> Job:
    """The job of a pretraining session: its objective on a new model (seeded by train.seed, the same
    weights on every process), or on the weights of the model folder `init_from` (or `--init`),
    memory-mapped, with LoRA adapters when `--lora.rank` is set."""
    config = session.resolved.config
    torch.manual_seed(config.train.seed)
    init_from = init_from or (Path(config.init) if config.init else None)
    if init_from is None:
        model = build_model(session.model_config)
    else:  # continued training from a trained model's weights, as they are
        model = load_built(session.model_config, Path(init_from) / WEIGHTS_FILE)
    torch.manual_seed(config.train.seed)  # the same adapters on every process
    model = adapt_for_training(model.train(), config.lora, config.train)
    extra = {**session.extra(), **({"init": str(init_from)} if init_from is not None else {})}
    resolved = session.resolved
    return Job(
        problem=session.objective,
        model=model,
        train_data=session.train_data,
        valid_data=session.valid_data,
        loop=config.train,
        optim=config.optim,
        saved=Saved(session.specials, session.tokenizer, extra),
        description=f"training {session.objective.describe()}, vocab {session.model_config.vocab_size}",
        title=f"{config.preset or resolved.model.arch} + {resolved.objective}",
        bucket=session.bucketed,
        data_name=str(config.data.train),
    )


def train(
    resolved: Resolved,
    run_dir: Path,
    should_stop: Callable[[], bool] = lambda: False,
    *,
    progress: Reporter | None = None,
    init_from: Path | None = None,
) -> str:
    """Run (or resume) the pretraining `resolved` describes; returns 'done' or 'stopped'."""
    run_dir = Path(run_dir)

    def build(processes: Processes):
        session = build_session(resolved, run_dir, processes)
        return pretraining_job(session, init_from), resolved.to_dict()

    config = resolved.config
    return run_training(
        run_dir,
        resume=config.resume,
        device=config.train.device,
        build=build,
        should_stop=should_stop,
        progress=progress,
        save_tokenizer_file=True,
    )
