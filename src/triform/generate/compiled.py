"""A decoding step compiled with torch.compile (`GenerationConfig.compile`, `--compile`).

At batch 1 an eager decoding step of a small model is mostly not products: the benchmark's GPT runs
some 750 operators a step, each with its dispatch and Python around it. Compiled (inductor, dynamic
shapes, so that the growing KV cache and a shrinking batch do not compile again), the norms,
residual sums, activations and head splits fuse, and the step runs half as many operators. The
products stay this machine's measured kernels: a layer's no-grad product is one opaque operator in
the graph (kernels/linear.py `linear_inference`).

The compiled function is made once per model class and method and reused by every model of that
class (torch.compile inlines the module: its weights are inputs of the graph, not constants), so a
process pays the compile (tens of seconds on a small CPU) once per architecture and shape family,
not once per model. Only the cached steps are compiled: the prompt's pass, run once, stays eager.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch

from triform.errors import TriformError
from triform.kernels.linear import register_layers

_COMPILED: dict[tuple[type, str], Callable] = {}


def compiled_method(model, method: str) -> Callable:
    """`getattr(model, method)`, compiled: a function of the method's arguments."""
    register_layers(model)
    key = (type(model), method)
    function = _COMPILED.get(key)
    if function is None:
        function = _COMPILED[key] = torch.compile(getattr(type(model), method), dynamic=True)
    return partial(_guarded, function, model)


def _guarded(function: Callable, model, *args, **kwargs):
    try:
        return function(model, *args, **kwargs)
    except torch._dynamo.exc.BackendCompilerFailed as error:  # no C++ compiler, for one
        inner = getattr(error, "inner_exception", None) or error
        lines = [line.strip() for line in str(inner).splitlines() if line.strip()]
        cause = f"{type(inner).__name__}: {lines[0]}" if lines else type(inner).__name__
        message = f"generation.compile: torch.compile could not compile the decoding step ({cause})"
        raise TriformError(message) from error
