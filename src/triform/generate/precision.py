"""Which precision decodes faster on this machine, when the configuration leaves it to `auto`.

bf16 autocast halves the bytes a product reads, but a decoding step of a few rows is mostly not
products: norms, attention over the cache, casts and per-operation dispatch. On some CPUs with native
bf16 that makes a bf16 step slower than an fp32 one (the benchmark's GPT decodes one row in 0.37 s a
round in fp32 and 0.51 s in bf16 on an Intel Xeon with AMX; on an AMD EPYC bf16 was the faster), so
`auto` is decided as the kernels are (kernels/calibrate.py): one step of each, timed on first use for
the model's shape and row count, the faster kept for the process (and on disk with `triform calibrate
--save`).
"""

from __future__ import annotations

from functools import partial

import torch

from triform.kernels.calibrate import calibration, rows_class
from triform.kernels.int8 import quantized_scheme
from triform.models.modes import evaluation
from triform.precision import autocast, autocast_dtype

CANDIDATES = ("bf16", "fp32")  # in order of preference on a tie: what `auto` meant before


def decoding_precision(model, precision: str, rows: int) -> str:
    """`precision`, with `auto` made `bf16` or `fp32` by measurement on a CPU that has native bf16."""
    if precision != "auto":
        return precision
    if quantized_scheme(model) is not None:
        return "fp32"  # int8 products compute in fp32 anyway; bf16 casts around them only cost time
    device = next(model.parameters()).device
    if device.type != "cpu" or autocast_dtype("auto", device) is None:
        return precision  # a GPU's bf16, or a CPU without native bf16 (fp32): nothing to choose
    config = model.config
    key = ("decoding", "precision", config.arch, config.d_model, config.n_layers, config.vocab_size)
    key += (rows_class(rows), torch.get_num_threads())
    table = calibration()
    if key in table.choices:  # every generation call asks: the answer is a lookup once measured
        return table.choose(key, CANDIDATES, dict)
    runs = {name: partial(one_step, model, name, rows_class(rows)) for name in CANDIDATES}
    for run in runs.values():  # the products' own choices are made first, outside the table's lock
        run()
    return table.choose(key, CANDIDATES, lambda: runs)


def one_step(model, precision: str, rows: int) -> None:
    """A forward pass of one token per row at `precision`: a decoding step's products and per-token
    work, without a cache (an encoder-decoder also encodes one token)."""
    device = next(model.parameters()).device
    ids = torch.full((rows, 1), model.config.vocab_size - 1, dtype=torch.long, device=device)
    bf16 = autocast_dtype(precision, device) is not None
    with evaluation(model), torch.no_grad() if bf16 else torch.inference_mode(), autocast(precision, device):
        if model.config.arch == "encoder-decoder":
            model(ids, ids, "causal")
        else:
            model(ids, "causal")
