"""`triform calibrate`: measure which kernels compute a model's products and attention fastest on this
machine, show the table, and with `--save` keep it in $TRIFORM_CACHE/kernels.json (default
~/.cache/triform/kernels.json) for later runs on the same machine (same CPU, instruction sets, torch,
and triform's kernels).

    triform calibrate                                  # gpt2-small's training step, batch 8 × 256
    triform calibrate --preset bart-base --batch 8 --length 128 --precision fp32 --save
    triform calibrate --model runs/my-gpt/model        # a model folder's shapes
    triform calibrate --quantize int8 --threads 1 --decode_steps 8  # int8 inference's products

It runs what training and generation run: a forward and backward pass at --batch × --length (under
--precision), a forward pass without autograd (a prompt), then --decode_steps cached steps at batch 1;
with --quantize int8 those two with int8 weights, as `generate --quantize int8` runs them.
Every run of triform calibrates the shapes it meets on first use anyway; this command only does it
up front, shows the choices, and saves them."""

from __future__ import annotations

from typing import Literal, Optional

from triform.commands.textio import add_quantize_argument


def add_arguments(parser) -> None:
    parser.add_argument("--preset", type=str, default="gpt2-small", help="the model preset whose shapes to time")
    parser.add_argument("--model", type=Optional[str], default=None, help="a model folder instead of a preset")
    parser.add_argument("--batch", type=int, default=8, help="training rows")
    parser.add_argument("--length", type=int, default=256, help="tokens per row (a source as long for seq2seq)")
    parser.add_argument("--precision", type=Literal["auto", "bf16", "fp32"], default="auto", help="as train's")
    parser.add_argument("--pattern", type=Literal["causal", "bidirectional"], default="causal", help="stack models")
    parser.add_argument("--decode_steps", type=int, default=4, help="cached decoding steps at batch 1 (0: none)")
    parser.add_argument("--threads", type=Optional[int], default=None, help="torch threads (default: torch's choice)")
    add_quantize_argument(parser)
    parser.add_argument("--save", action="store_true", help="write the choices to the cache file")


def run(args) -> int:
    import torch

    from triform.errors import TriformError
    from triform.generate.precision import decoding_precision
    from triform.kernels import native
    from triform.kernels.calibrate import cache_path, calibration
    from triform.kernels.int8 import check_scheme, quantize
    from triform.kernels.machine import this_machine
    from triform.precision import autocast

    if args.quantize:
        check_scheme(args.quantize)
    if args.threads is not None:
        if args.threads < 1:
            raise TriformError(f"--threads: expected a positive integer, got {args.threads}")
        torch.set_num_threads(args.threads)
    model, config = build(args)
    device = torch.device("cpu")
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, config.vocab_size, (args.batch, min(args.length, config.max_len)), generator=generator)
    with autocast(args.precision, device):
        logits = forward(model, config, ids, args.pattern)
    logits.float().square().mean().backward()
    model.eval()
    if args.quantize:
        quantize(model, args.quantize)
    with torch.no_grad(), autocast(args.precision, device):
        forward(model, config, ids[:1], args.pattern)
        decode(model, config, ids[:1], args.decode_steps)
    if args.decode_steps:
        decoding_precision(model, args.precision, 1)  # what `auto` decodes one row in (generate/precision.py)
    print(f"{this_machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    kernels = native.library()
    print(f"triform's native kernels: {kernels.path if kernels else 'left out, ' + native.unavailable()}")
    for note in native.build_notes() if kernels else []:
        print(f"  {note}")
    print(table(calibration().table()))
    if args.save:
        print(f"saved to {calibration().save(cache_path())}")
    return 0


def build(args):
    from triform.checkpoint import load_model
    from triform.models import build_model
    from triform.models.presets import get_preset

    if args.model:
        pretrained = load_model(args.model)
        return pretrained.model.train(), pretrained.config
    config = get_preset(args.preset).model
    config = config.replace(max_len=max(config.max_len, args.length))
    return build_model(config).train(), config


def forward(model, config, ids, pattern: str):
    if config.arch == "encoder-decoder":
        return model(ids, ids)
    return model(ids, pattern)


def decode(model, config, ids, steps: int) -> None:
    if steps <= 0:
        return
    cache = model.new_cache(1)
    memory = model.encode(ids) if config.arch == "encoder-decoder" else None
    for t in range(min(steps, ids.shape[1])):
        step = ids[:, t : t + 1]
        model.decode(step, memory, cache=cache) if memory is not None else model(step, "causal", cache=cache)


def table(rows) -> str:
    lines = [f"{'shape class':<72} {'kernel':<14} {'how':<15} timings (ms, fastest round)"]
    for key, choice in rows:
        timings = "  ".join(f"{name} {1e3 * seconds:.3f}" for name, seconds in choice.seconds.items())
        timings += "".join(f"  {name} cannot run here" for name in choice.failed)
        lines.append(f"{key:<72} {choice.kernel:<14} {choice.source:<15} {timings}")
    return "\n".join(lines)
