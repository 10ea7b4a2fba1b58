"""How much of a run's time its matrix products take, by torch.profiler: what bounds a step that is
not at the matmul rate or at memory speed."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch.profiler import profile

# The operators that compute matrix products: torch's and oneDNN's, and the int8 ones (fbgemm's
# dynamic quantized linear, torch's weight-only int8 kernel), and triform's own (kernels/native.py)
PRODUCTS = (
    "aten::mm",
    "aten::addmm",
    "aten::bmm",
    "mkldnn::_linear_pointwise",
    "quantized::linear_dynamic",
    "aten::_weight_int8pack_mm",
    "triform::gemv",
    "triform::block_step",  # a decoding step of a whole block: its products, and the little work around them
    "triform::stack_step",  # ... of a whole stack at once: its blocks, embeddings and final norm
    # an int8 product of a few rows (a decoding step's output projection), by triform's kernel: not the opaque
    # operator triform::int8_linear of a compiled step, whose own time is the Python that dispatches it
    "triform::native_int8_linear",
)


@dataclass
class Profiled:
    events: object  # torch.profiler's key averages, for their table
    products_s: float  # operator time in matrix products
    operators_s: float  # operator time in all operators (self time: nothing counted twice)
    count: int  # operators called


def profiled(run: Callable[[], object]) -> Profiled:
    """One call of `run` under torch.profiler, summed by whether each operator is a product."""
    with profile() as profiler:
        run()
    events = profiler.key_averages()
    products = sum(e.self_cpu_time_total for e in events if e.key in PRODUCTS)
    total = sum(e.self_cpu_time_total for e in events)
    return Profiled(events, products / 1e6, total / 1e6, sum(e.count for e in events))


def product_seconds(run: Callable[[], object]) -> tuple[float, int]:
    """(operator seconds in matrix products, operators called) of one call of `run`, profiled."""
    summary = profiled(run)
    return summary.products_s, summary.count
