"""`triform demo`: the same parts trained into an autoregressive, an autoencoding and a
sequence-to-sequence model (and one cross-over), in about two minutes on a CPU, with no download.

    run_demo(Path("runs/demo"))  # -> the outcomes; writes report.html, the pictures and demo.json
"""

from __future__ import annotations

import platform
import shutil
import time
from pathlib import Path

import torch

from triform.checkpoint import CONFIG_FILE, read_config
from triform.config import ModelConfig
from triform.demo.data import prepare_numbers, prepare_text
from triform.demo.plan import SIZES, demo_models, model_fields
from triform.demo.report import plot_outcomes, terminal_summary, write_html, write_json
from triform.demo.showcase import Outcome, showcase
from triform.errors import TriformError
from triform.models import build_model
from triform.objectives import objective_class
from triform.train.spec import RunSpec, train_spec

MARKER = "demo.json"  # a folder holding it is a demo's own, which a new demo may replace


def check_folder(out: Path) -> None:
    """A new demo replaces an earlier demo's folder, and refuses any other folder that is not empty."""
    if out.exists() and not out.is_dir():
        raise TriformError(f"--out: {out} is a file; expected a folder for the demo's report and models")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).is_file() and not (out / ".demo").is_file():
        raise TriformError(f"--out: {out} holds files that are not a demo's; choose another folder")


def run_specs(size_name: str, crossover: str, text, numbers, seed: int):
    size = SIZES[size_name]
    fields = model_fields(size)
    for model in demo_models(crossover):
        data = text if model.data == "text" else numbers
        steps, batch = (
            (size.text_steps, size.text_batch) if model.data == "text" else (size.number_steps, size.number_batch)
        )
        # A model that learns to fill masks is taught at 15 % of the tokens: it gets more steps.
        steps *= size.mlm_steps_factor if objective_class(model.objective).fills_masks_on(model.arch) else 1
        vocab = size.text_vocab if model.data == "text" else None
        # Plain shuffled batches for the numbers, not length buckets: there a long input is a large
        # number, and batches of one length each slowed the learning of the task tenfold.
        spec = RunSpec(
            model.arch,
            model.objective,
            model.pattern,
            str(data.train),
            str(data.valid),
            str(data.tokenizer),
            steps,
            batch,
            model=fields | ({"vocab_size": vocab} if vocab else {}),
            lr=size.lr,
            seed=seed,
            bucket=model.data != "numbers",
        )
        yield model, spec


def run_demo(
    out: Path,
    *,
    size: str = "default",
    data: str | None = None,
    crossover: str = "mlm-causal",
    seed: int = 0,
    show=None,
    progress: bool = True,
) -> list[Outcome]:
    if size not in SIZES:
        raise TriformError(f"--size: expected one of {', '.join(SIZES)}, got {size!r}")
    show = show or (lambda line: print(line, flush=True))
    out = Path(out)
    check_folder(out)
    demo_models(crossover)  # an unknown cross-over is refused before any work
    started = time.monotonic()
    if out.is_dir():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / ".demo").touch()  # claims the folder until demo.json is written
    show(
        "reading the text" + (f" of {data}" if data else " of Python's docstrings") + " and making the number pairs ..."
    )
    text = prepare_text(out / "data", SIZES[size], data, seed)
    numbers = prepare_numbers(out / "data", SIZES[size], seed)
    show(f"text: {text.origin}; {text.n_train:,} for training, {len(text.valid_texts):,} held out")
    show(
        f"numbers: {numbers.n_train:,} pairs below {numbers.limit:,} for training, {len(numbers.valid_pairs)} held out"
    )
    outcomes, parameters, steps = [], {}, {}
    specs = list(run_specs(size, crossover, text, numbers, seed))
    for index, (model, spec) in enumerate(specs, 1):
        show(f"\n[{index}/{len(specs)}] {model.family}: {model.triple}")
        show(f"  {model.what}")
        run_dir = out / "runs" / model.key
        records = train_spec(spec, run_dir, f"  training {model.key}", show=progress)
        outcome = showcase(Outcome(model, run_dir, records), spec, text, numbers, out, from_docstrings=data is None)
        parameters[model.key] = n_parameters(run_dir / "model")
        steps[model.key] = spec.steps
        show(terminal_summary(outcome))
        outcomes.append(outcome)
    loss_picture = plot_outcomes(outcomes, out / "losses.png")
    context = {
        "size": size,
        "seed": seed,
        "text_origin": text.origin,
        "numbers": numbers_description(numbers),
        "model": model_description(SIZES[size]),
        "parameters": parameters,
        "steps": steps,
        "minutes": (time.monotonic() - started) / 60,
        "machine": machine(),
        "commands": commands(out, outcomes),
    }
    report = write_html(out / "report.html", outcomes, loss_picture, context)
    write_json(out / MARKER, outcomes, context)
    (out / ".demo").unlink(missing_ok=True)
    show(f"\ndone in {context['minutes']:.1f} minutes; report: {report}")
    return outcomes


def n_parameters(folder: Path) -> int:
    config = ModelConfig.from_dict(read_config(folder)["model"], source=str(folder / CONFIG_FILE))
    with torch.device("meta"):
        return sum(p.numel() for p in build_model(config).parameters())


def numbers_description(numbers) -> str:
    return (
        f"numbers below {numbers.limit:,} spelled in English, to be written in German "
        f"({numbers.n_train:,} training pairs, {len(numbers.valid_pairs)} held-out numbers)"
    )


def model_description(size) -> str:
    fields = model_fields(size)
    return (
        f"d_model {fields['d_model']}, {fields['n_heads']} heads, d_ff {fields['d_ff']}, {fields['n_layers']} layers "
        f"per stack, max_len {fields['max_len']}, {fields['position']} positions"
    )


def machine() -> str:
    return f"{platform.machine()} CPU, {torch.get_num_threads()} torch thread(s), torch {torch.__version__}"


def commands(out: Path, outcomes: list[Outcome]) -> list[str]:
    """Commands that use the trained models, as a user would type them."""
    lines = []
    for outcome in outcomes:
        folder = outcome.run_dir / "model"
        if outcome.use == "generate":
            lines.append(
                f'triform generate --model {folder} "Return the" --max_new_tokens 20 --do_sample true --top_p 0.9'
            )
        elif outcome.use == "fill-mask":
            lines.append(f'triform fill-mask --model {folder} "Return the [MASK] of the file." --top_k 5')
        else:
            lines.append(f'echo "four thousand two hundred seventeen" | triform translate --model {folder}')
    lines.append(f"triform eval --model {outcomes[0].run_dir} --data {out / 'data' / 'text-valid.txt'}")
    return lines
