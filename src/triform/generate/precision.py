"""Which precision decodes faster on this machine, when the configuration leaves it to `auto`.

bf16 autocast halves the bytes a product reads, but a decoding step of a few rows is mostly not
products: norms, attention over the cache, casts and per-operation dispatch. On some CPUs with native
bf16 that makes a bf16 step slower than an fp32 one (the benchmark's GPT decodes one row in 0.37 s a
round in fp32 and 0.51 s in bf16 on an Intel Xeon with AMX; on an AMD EPYC bf16 was the faster), so
`auto` is decided as the kernels are (kernels/calibrate.py): one step of each, timed on first use for
the model's shape and row count, the faster kept for the process (and on disk with `triform calibrate
--save`).

On a CPU, decoding in bf16 means the weights in bf16, not autocast (`decoding_model`): a twin of the
model with every floating weight cast once, run without autocast. Autocast keeps the residual stream
in fp32 and runs norms and softmax in fp32, so each step casts the activations to and fro around
every product; with the weights themselves in bf16 a step reads half the bytes and casts nothing.
On an Intel Xeon with AVX512-BF16 and no AMX (benchmarks/results.md) that made GPT beam search 1.27
times faster than fp32 and left greedy decoding level with it, which is why `auto` still measures.
The twin is kept beside the model (half its memory again) until the model's weights change.

A CPU without native bf16 (AVX2 alone) emulates bf16 matrix products, but a decoding step's products
of a few rows are reads of the weights, and triform's own kernel (kernels/native.py) reads bf16
weights as fast as any: there too `auto` measures, where that kernel could be built. On an AMD EPYC
the benchmark's GPT decoded one row in 5.2 ms a step in bf16 against 6.5 in fp32, and eight rows in
12.5 against 10.2, so the choice differs by row count; a prompt's products of many rows run in fp32
against the widened bf16 weight there (kernels/linear.py's `widened`).
"""

from __future__ import annotations

import copy
import weakref
from functools import partial

import torch
from torch import nn

from triform.kernels import native
from triform.kernels.calibrate import calibration, rows_class
from triform.kernels.int8 import quantized_scheme
from triform.models.modes import evaluation
from triform.precision import autocast, autocast_dtype

_TWINS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> (its weights' versions, bf16 twin)

CANDIDATES = ("bf16", "fp32")  # in order of preference on a tie: what `auto` meant before


def decoding_precision(model, precision: str, rows: int) -> str:
    """`precision`, with `auto` made `bf16` or `fp32` by measurement on a CPU that has native bf16 or
    triform's native kernels."""
    if precision != "auto":
        return precision
    if quantized_scheme(model) is not None:
        return "fp32"  # int8 products compute in fp32 anyway; bf16 casts around them only cost time
    if not auto_is_measured(next(model.parameters()).device):
        return precision  # a GPU's bf16, or fp32 on a CPU where bf16 products are emulated
    config = model.config
    key = ("decoding", "precision", config.arch, config.d_model, config.n_layers, config.vocab_size)
    key += (rows_class(rows), torch.get_num_threads())
    table = calibration()
    if key in table.choices:  # every generation call asks: the answer is a lookup once measured
        return table.choose(key, CANDIDATES, dict)
    runs = {name: partial(one_step, model, name, rows_class(rows)) for name in CANDIDATES}
    for run in runs.values():  # the products' own choices are made first, outside the table's lock
        run()
    chosen = table.choose(key, CANDIDATES, lambda: runs)
    if chosen == "fp32":
        _TWINS.pop(model, None)  # the probe's bf16 twin is not needed: its memory goes back
    return chosen


def auto_is_measured(device: torch.device) -> bool:
    """Whether `auto` decoding is chosen between bf16 and fp32 by measurement on `device`: on a CPU
    with native bf16, or with triform's bf16 kernel of a few rows (elsewhere bf16 is emulated)."""
    return device.type == "cpu" and (autocast_dtype("auto", device) is not None or native.library() is not None)


def decoding_model(model: nn.Module, precision: str, rows: int) -> tuple[nn.Module, str]:
    """The model a generation of `rows` rows runs and the precision to run it at: on a CPU, where
    the precision comes out bf16, the model's bf16 twin at "fp32" (its weights are bf16 already:
    no autocast); otherwise the model itself at the precision `decoding_precision` gives."""
    return run_as(model, decoding_precision(model, precision, rows))


def run_as(model: nn.Module, precision: str) -> tuple[nn.Module, str]:
    """(model, precision) to run for a decided `precision`: the bf16 twin at "fp32" (no autocast)
    where its weights go to bf16, else the pair as given."""
    return (bf16_twin(model), "fp32") if bf16_weights(model, precision) else (model, precision)


def bf16_weights(model: nn.Module, precision: str) -> bool:
    """Whether `precision` decodes `model` with its weights in bf16: bf16 on a CPU, fp32 weights
    (a model loaded in bf16 already runs as it is), no int8 products (they compute in fp32)."""
    parameter = next(model.parameters())
    device = parameter.device
    return (
        device.type == "cpu"
        and autocast_dtype(precision, device) is not None
        and parameter.dtype == torch.float32
        and quantized_scheme(model) is None
    )


def bf16_twin(model: nn.Module) -> nn.Module:
    """`model` with every floating parameter and buffer in bf16, made once and remade when a weight
    changes (an optimizer step or a loaded state dict counts in the tensor's version); tied weights
    stay tied, and no kernel's prepared copy of the fp32 weights is carried over."""
    tensors = [*model.parameters(), *model.buffers()]
    versions = tuple((id(t), t._version) for t in tensors)
    found = _TWINS.get(model)
    if found is not None and found[0] == versions:
        return found[1]
    _TWINS.pop(model, None)  # the stale twin's memory is freed before the new one is made
    memo: dict[int, object] = {}
    with torch.no_grad():
        for tensor in tensors:
            if id(tensor) in memo or not tensor.is_floating_point():
                continue
            cast = tensor.detach().to(torch.bfloat16)
            memo[id(tensor)] = nn.Parameter(cast, requires_grad=False) if isinstance(tensor, nn.Parameter) else cast
    for module in model.modules():
        if "_prepared" in module.__dict__:  # kernels/linear.py's reordered weights: remade for the twin
            memo[id(module.__dict__["_prepared"])] = {}
    twin = copy.deepcopy(model, memo).eval()
    _TWINS[model] = (versions, twin)
    return twin


def one_step(model, precision: str, rows: int) -> None:
    """A forward pass of one token per row at `precision`: a decoding step's products and per-token
    work, without a cache (an encoder-decoder also encodes one token); bf16 on a CPU runs the bf16
    twin, as generation would."""
    model, precision = run_as(model, precision)
    device = next(model.parameters()).device
    ids = torch.full((rows, 1), model.config.vocab_size - 1, dtype=torch.long, device=device)
    bf16 = autocast_dtype(precision, device) is not None
    with evaluation(model), torch.no_grad() if bf16 else torch.inference_mode(), autocast(precision, device):
        if model.config.arch == "encoder-decoder":
            model(ids, ids, "causal")
        else:
            model(ids, "causal")
