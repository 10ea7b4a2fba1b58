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

# inductor's C++ wrapper: the compiled graph calls its kernels from generated C++ rather than from a
# generated Python function, whose calls took some 5 % of a compiled step (AMD EPYC, 1 thread, the
# GPT and BART of benchmarks/run.py at batch 1: eager ÷ compiled 1.08 → 1.13 and 1.14 → 1.18). A
# torch whose C++ wrapper cannot build a graph gets the Python wrapper instead.
WRAPPERS: tuple[dict, ...] = ({"cpp_wrapper": True}, {})

# (model class, method) → (the compiled function, the index in WRAPPERS of its options)
_COMPILED: dict[tuple[type, str], tuple[Callable, int]] = {}


def compiled_method(model, method: str) -> Callable:
    """`getattr(model, method)`, compiled: a function of the method's arguments."""
    register_layers(model)
    return partial(_guarded, (type(model), method), model)


def _compiled(key: tuple[type, str], wrapper: int) -> tuple[Callable, int]:
    found = _COMPILED.get(key)
    if found is None or found[1] < wrapper:
        cls, method = key
        function = torch.compile(getattr(cls, method), dynamic=True, options=WRAPPERS[wrapper] or None)
        found = _COMPILED[key] = (function, wrapper)
    return found


def _guarded(key: tuple[type, str], model, *args, **kwargs):
    function, wrapper = _compiled(key, 0)
    while True:
        try:
            return function(model, *args, **kwargs)
        except torch._dynamo.exc.BackendCompilerFailed as error:  # the first call compiles
            if wrapper + 1 < len(WRAPPERS):
                function, wrapper = _compiled(key, wrapper + 1)
                continue
            inner = getattr(error, "inner_exception", None) or error  # no C++ compiler, for one
            lines = [line.strip() for line in str(inner).splitlines() if line.strip()]
            cause = f"{type(inner).__name__}: {lines[0]}" if lines else type(inner).__name__
            message = f"generation.compile: torch.compile could not compile the decoding step ({cause})"
            raise TriformError(message) from error
