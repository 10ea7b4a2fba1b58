"""y = x · Wᵀ + b, each matrix product by the kernel measured fastest here for its shape class.

Which kernel wins depends on the CPU (`kernels/calibrate.py`): on an AMD EPYC oneDNN's fp32
products ran 1.3 to 2.4 times faster than MKL's, on an Intel Xeon with AMX MKL's matched or beat
them, and oneDNN's weight-gradient products (a long inner dimension, both operands transposed) ran at
half MKL's speed there. So each product is timed once per shape class and the fastest kernel kept.
The candidates, every one a per-call path:
- `torch`: F.linear, which is MKL in fp32, oneDNN's matmul in bf16 above 16³ multiply-adds and
  torch's own kernel below (aten/src/ATen/native/mkldnn/Matmul.cpp); under autocast, autocast's cast;
- `onednn`: oneDNN's inner product on the weight as it is (torch.ops.mkldnn._linear_pointwise);
- `onednn-packed`, `mkl-packed` (no autograd, the weight unchanging): oneDNN's product on a weight
  reordered once into its blocked layout (torch.ops.mkldnn._reorder_linear_weight), MKL's packed
  sgemm (torch.ops.mkl._mkl_linear, fp32 only), kept until the weight changes;
- `fp32` (a few rows under bf16 autocast, no autograd): the product in fp32 against the fp32 weight,
  by MKL's matrix-vector kernel, rounded to bf16, as autocast's result would be: a oneDNN call costs
  some 25 µs however small the product;
- `gemv` (a few rows, fp32 or bf16, no autograd; under bf16 autocast on the fp32 weight, as `fp32`):
  triform's own kernel (`kernels/native.py`), which reads the weight once, on all threads, and costs
  a few µs a call, where it could be built;
- `widened` (a bf16 weight, no autocast, no autograd): the product in fp32 against the weight widened
  for the call, rounded to bf16: where bf16 products are emulated (AVX2 alone), many rows ran 6 to 9
  times slower in bf16 than this (measured on an AMD EPYC), which a bf16 model's prompt pays.
With autograd, the forward product and both of the backward pass (the input's gradient g · W and the
weight's gᵀ · x) each choose between `torch` and `onednn`; the weight's gradient also between the two
computing xᵀ · g and handing back its transpose (`torch-swapped`, `onednn-swapped`). Left out:
torch's own bf16 matrix-vector kernel, reached only with oneDNN switched off for the whole process
(a flag every thread would see).
`Linear` is `nn.Linear` with those choices made: the same parameters, the same state dict, the same
results to within rounding.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from triform.kernels import native
from triform.kernels.calibrate import FIELDS, calibration, rows_class, timed_from_memory
from triform.kernels.opaque import LayersByStorage

ONEDNN = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
ONEDNN_PACKED = ONEDNN and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")
MKL_PACKED = hasattr(torch.ops.mkl, "_mkl_linear") and hasattr(torch.ops.mkl, "_mkl_reorder_linear_weight")
FP32_ROWS = 16  # rows up to which a product under bf16 autocast may be computed in fp32 instead
DTYPES = {torch.float32: "fp32", torch.bfloat16: "bf16"}

Product = Callable[[Tensor, Tensor, Tensor | None], Tensor]
FIELDS["linear"] = ("role", "dtype", "rows≤", "in", "out", "bias", "threads")


def onednn_product(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """x (M, K) · weight (N, K)ᵀ + bias, by oneDNN; any strides."""
    return torch.ops.mkldnn._linear_pointwise(rows_of(x), weight, bias, "none", [], "")


_scratch = threading.local()  # each thread's buffer for a transposed operand, by dtype
# The largest operand whose buffer a thread keeps: a layer's activations (50 MB for GPT-2 small's 8 x 512
# tokens in fp32), not an output projection's gradient, which kept raised that fine-tuning's peak by 0.4 GB.
SCRATCH_BYTES = 64 * 2**20


def transposer(x: Tensor) -> native.NativeKernels | None:
    """The native kernels, where x is a transposed view of a contiguous 2-D CPU tensor their transpose
    can lay out in rows (2- or 4-byte values); else None."""
    if x.dim() != 2 or x.is_contiguous() or not x.t().is_contiguous() or x.element_size() not in (2, 4):
        return None
    return native.library() if x.device.type == "cpu" else None


def rows_of(x: Tensor) -> Tensor:
    """x itself, or, for a transposed view (a weight gradient's operand xᵀ), the same values laid out
    in rows by triform's transpose (kernels/native.py), in a buffer this thread keeps from call to call
    up to SCRATCH_BYTES.
    oneDNN copies such an operand itself, and into fresh memory each time, whose pages the kernel
    faults in and zeroes: 25 copies of 4,096 × 384 fp32 values took 43 ms of a 1.2 s fp32 step of
    benchmarks/run.py's GPT (AMD EPYC Zen 5, 2 threads), against some 8 this way."""
    kernels = transposer(x)
    if kernels is None:
        return x
    if x.numel() * x.element_size() > SCRATCH_BYTES:  # a head's gradient, 0.4 GB for GPT-2 small: not kept
        return kernels.transpose_into(x.t(), torch.empty(x.shape, dtype=x.dtype))
    buffers = _scratch.__dict__.setdefault("by_dtype", {})
    buffer = buffers.get(x.dtype)
    if buffer is None or buffer.numel() < x.numel():
        buffer = buffers[x.dtype] = torch.empty(x.numel(), dtype=x.dtype)
    return kernels.transpose_into(x.t(), buffer[: x.numel()].view(x.shape))


def swapped(kernel: Product) -> Product:
    """a · bᵀ computed as (b · aᵀ)ᵀ: the other operand's layout first, the result a transposed view."""
    return lambda a, b, bias: kernel(b, a, bias).t()


def in_rows(kernel: Product) -> Product:
    """`kernel`, its result laid out in rows where it is a transposed view (by triform's transpose
    where the kernels are built)."""

    def run(a: Tensor, b: Tensor, bias: Tensor | None) -> Tensor:
        result = kernel(a, b, bias)
        kernels = transposer(result)
        if kernels is None:
            return result.contiguous()  # itself where it is in rows already
        return kernels.transpose_into(result.t(), torch.empty(result.shape, dtype=result.dtype))

    return run


PRODUCTS: dict[str, Product] = {"torch": F.linear, "onednn": onednn_product}
# The weight's gradient gᵀ · x (both operands transposed, the inner dimension the rows) may run faster
# as xᵀ · g; its result only accumulates into the weight's gradient, so a transposed view costs little.
SWAPPED: dict[str, Product] = {"torch-swapped": swapped(F.linear), "onednn-swapped": swapped(onednn_product)}
# ... except where a second gradient of the same weight comes in the same backward pass (a tied output
# projection's, and the token embedding's): torch adds it into the first in place only where the first
# is contiguous, and otherwise writes the sum into fresh memory, which AccumulateGrad then copies into
# rows again. There the swapped products are timed and run with their result laid out in rows (role
# `gᵀ·x rows`): a step of the benchmark's BERT (a 30,522-token tied projection) took 1,025 ms against
# 1,050 in fp32, its GPT's 1,007 against 1,020 (alternating, AMD EPYC Zen 5, 2 threads).
SWAPPED_IN_ROWS: dict[str, Product] = {name: in_rows(kernel) for name, kernel in SWAPPED.items()}


def measured(x: Tensor) -> bool:
    """Whether this product's kernel is chosen here: fp32 or bf16 on a CPU, outside torch.compile
    (which makes its own choice)."""
    return x.device.type == "cpu" and x.dtype in DTYPES and not torch.compiler.is_compiling()


def onednn_enabled() -> bool:
    return ONEDNN and torch.backends.mkldnn.enabled


def product(role: str, a: Tensor, b: Tensor, bias: Tensor | None, shape: tuple[int, int, int]) -> Tensor:
    """a · bᵀ + bias, one of a linear layer's products (`role`), by the kernel chosen for its class:
    `shape` is the layer's (rows, in, out), the rows rounded up to a power of two."""
    if not (onednn_enabled() and measured(a)):
        return F.linear(a, b, bias)
    rows, n_in, n_out = shape
    key = ("linear", role, DTYPES[a.dtype], rows_class(rows), n_in, n_out, bias is not None, torch.get_num_threads())
    kernels = {"gᵀ·x": {**PRODUCTS, **SWAPPED}, "gᵀ·x rows": {**PRODUCTS, **SWAPPED_IN_ROWS}}.get(role, PRODUCTS)
    names = tuple(kernels)
    name = calibration().choose(key, names, lambda: {n: partial(kernels[n], a, b, bias) for n in names})
    return kernels[name](a, b, bias)


class _Linear(torch.autograd.Function):
    """x (M, K) · weight (N, K)ᵀ + bias with each of the three products chosen by measurement."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None, gradient_in_rows: bool) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias, ctx.gradient_in_rows = bias is not None, gradient_in_rows
        ctx.shape = (x.shape[0], x.shape[1], weight.shape[0])
        return product("x·Wᵀ", x, weight, bias, ctx.shape)

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, weight = ctx.saved_tensors
        wanted = ctx.needs_input_grad
        grad_x = product("g·W", grad, weight.t(), None, ctx.shape) if wanted[0] else None  # (M, K)
        role = "gᵀ·x rows" if ctx.gradient_in_rows else "gᵀ·x"
        grad_weight = product(role, grad.t(), x.t(), None, ctx.shape) if wanted[1] else None  # (N, K)
        grad_bias = grad.sum(0) if ctx.has_bias and wanted[2] else None
        return grad_x, grad_weight, grad_bias, None


def autocast_bf16(x: Tensor) -> bool:
    return (
        x.device.type == "cpu"
        and torch.is_autocast_enabled("cpu")
        and torch.get_autocast_dtype("cpu") == torch.bfloat16
    )


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None, gradient_in_rows: bool = False) -> Tensor:
    """F.linear with autograd, each product by its measured kernel (under bf16 autocast, in bf16).
    `gradient_in_rows`: the weight's gradient laid out as the weight, never a transposed view (for a
    weight that gets another gradient in the same backward pass: SWAPPED_IN_ROWS)."""
    if autocast_bf16(x):
        x, weight = x.to(torch.bfloat16), weight.to(torch.bfloat16)  # as autocast casts them
        bias = None if bias is None else bias.to(torch.bfloat16)
    elif torch.is_autocast_enabled(x.device.type) or not measured(x) or x.dtype != weight.dtype:
        return F.linear(x, weight, bias)
    rows = x.reshape(-1, x.shape[-1])  # (M, in)
    y = _Linear.apply(rows, weight, bias, gradient_in_rows)
    return y.view(*x.shape[:-1], weight.shape[0])  # (..., out)


def fp32_rows(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """F.linear outside autocast, in fp32, its result in bf16 as autocast's would be."""
    with torch.autocast("cpu", enabled=False):
        return F.linear(x.float(), weight, bias).to(torch.bfloat16)


# The layers whose no-grad product a compiled graph calls as one opaque operator (kernels/opaque.py).
_LAYERS = LayersByStorage()

# Defined with torch.library's Library rather than custom_op, whose Python wrapper costs some 14 µs a
# call here, a tenth of a decoding step's product; a plain CPU kernel costs 2.
_LIBRARY = torch.library.Library("triform", "DEF")
_LIBRARY.define("linear_inference(Tensor x, Tensor weight, Tensor? bias) -> Tensor")


def _linear_inference(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """x (M, in) · weightᵀ + bias by its layer's measured kernel (`Linear.inference`): inside
    torch.compile, inductor fuses the work around it and keeps this machine's kernel choice."""
    layer = _LAYERS.find(weight, bias)
    if layer is None:  # a layer gone or its weight replaced
        return F.linear(x, weight, bias)
    return layer.inference(x)


_LIBRARY.impl("linear_inference", _linear_inference, "CPU")


@torch.library.register_fake("triform::linear_inference")
def _(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    return x.new_empty(x.shape[0], weight.shape[0])


def register_layers(model: nn.Module) -> None:
    """Let every CPU `Linear` of `model` run its measured no-grad product inside torch.compile
    (`linear_inference`); called again after a weight is replaced, it finds the new one."""
    for module in model.modules():
        if isinstance(module, Linear) and module.weight.device.type == "cpu":
            _LAYERS.add(module, module.weight, module.bias)
            module.__dict__["_compiled_inference"] = True


class Linear(nn.Linear):
    """nn.Linear, each product computed by the kernel measured fastest for its shape class."""

    # True for a layer whose weight is also used elsewhere in the model (a tied output projection):
    # its weight's gradient is then laid out in rows (`linear`'s gradient_in_rows)
    gradient_in_rows = False

    def forward(self, x: Tensor) -> Tensor:
        weight = self.weight
        if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad):
            return linear(x, weight, self.bias, self.gradient_in_rows)
        if torch.compiler.is_compiling():
            return self.compiled_forward(x)
        if not (x.is_cpu and x.dtype in DTYPES) or x.numel() == 0:
            return linear(x, weight, self.bias)
        if x.dim() == 2:
            return self.inference(x)
        rows = x.reshape(-1, x.shape[-1])  # (M, in)
        return self.inference(rows).view(*x.shape[:-1], self.out_features)  # (..., out)

    def compiled_forward(self, x: Tensor) -> Tensor:
        """Inside torch.compile: a registered layer's product is one opaque operator of the graph
        (`linear_inference`, this machine's kernel); any other is traced as F.linear."""
        registered = self.__dict__.get("_compiled_inference", False)
        if registered and x.dtype in DTYPES and not torch.is_autocast_enabled("cpu"):
            if x.dtype == self.weight.dtype and x.numel():
                rows = x.reshape(-1, x.shape[-1])
                y = torch.ops.triform.linear_inference(rows, self.weight, self.bias)
                return y.view(*x.shape[:-1], self.out_features)
        return linear(x, self.weight, self.bias)

    def inference(self, x: Tensor) -> Tensor:
        """The forward product alone (x: (M, in) on a CPU), choosing among the kernels that need no
        autograd too. A decoding step runs a layer's product with the same rows, dtype and autocast
        at every step: the choice is remembered by the layer for those, so that its Python, some
        10 µs against a few µs for a small product, runs once and not at every step."""
        autocast = torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu")
        weight = self.weight
        # rows by their class, as the table keys them: a server's many prompt lengths add few entries
        situation = (rows_class(x.shape[0]), x.dtype, weight.dtype, autocast, torch.get_num_threads())
        situation += (torch.backends.mkldnn.enabled, calibration().serial)
        chosen = self.__dict__.setdefault("_chosen", {})
        name = chosen.get(situation)
        if name is None:
            name = chosen[situation] = self.choose_kernel(x)
        if name == "torch":
            return F.linear(x, weight, self.bias)
        if name == "gemv" and not autocast:
            return native.library().gemv(x, weight, self.bias)
        return self.run_kernel(name, x, torch.bfloat16 if autocast == torch.bfloat16 else x.dtype)

    def choose_kernel(self, x: Tensor) -> str:
        bf16 = autocast_bf16(x)
        dtype = torch.bfloat16 if bf16 else x.dtype
        names = self.inference_kernels(x, dtype, bf16)
        if len(names) == 1:
            return names[0]
        key = ("linear", "x·Wᵀ no-grad", DTYPES[dtype] + (" autocast" if bf16 else ""), rows_class(x.shape[0]))
        key += (self.in_features, self.out_features, self.bias is not None, torch.get_num_threads())
        name = calibration().choose(key, names, lambda: self.timed_runs(names, x, dtype))
        prepared = self.__dict__.get("_prepared")
        if prepared and len(prepared) > 1:  # timing prepared a weight for each candidate: keep the chosen one's
            self._prepared = {k: v for k, v in prepared.items() if k[0] == name}
        return name

    def timed_runs(self, names: tuple[str, ...], x: Tensor, dtype: torch.dtype) -> dict[str, Callable[[], object]]:
        """A call of each candidate; for a decoding step's few rows, against a weight of more than
        WARM_BYTES that the last level cache could hold, timed from memory (`FromMemory`)."""
        runs = {name: partial(self.run_kernel, name, x, dtype) for name in names}
        weight_bytes = self.weight.numel() * self.weight.element_size()
        return timed_from_memory(weight_bytes, runs) if x.shape[0] <= FP32_ROWS else runs

    def inference_kernels(self, x: Tensor, dtype: torch.dtype, bf16: bool) -> tuple[str, ...]:
        if not (bf16 or x.dtype == self.weight.dtype):
            return ("torch",)
        names = ["torch"]
        if onednn_enabled():
            names += ["onednn", "onednn-packed"] if ONEDNN_PACKED else ["onednn"]
        if MKL_PACKED and dtype == torch.float32 and x.shape[0] <= FP32_ROWS:
            names.append("mkl-packed")  # packed for one row count: decoding's, not a prompt's
        alike = self.bias is None or self.bias.dtype == self.weight.dtype
        if self.weight.dtype in native.GEMV_DTYPES and alike and x.shape[0] <= FP32_ROWS and native.library():
            names.append("gemv")  # under bf16 autocast too (the fp32 weight's), as `fp32` is
        if bf16 and self.weight.dtype == torch.float32 and x.shape[0] <= FP32_ROWS:
            names.append("fp32")
        if not bf16 and self.weight.dtype == torch.bfloat16 and alike:
            names.append("widened")
        return tuple(names)

    def run_kernel(self, name: str, x: Tensor, dtype: torch.dtype) -> Tensor:
        if name == "torch":
            return F.linear(x, self.weight, self.bias)
        if name == "fp32":
            return fp32_rows(x, self.weight, self.bias)
        if name == "gemv":  # an fp32 weight's in fp32, rounded to bf16 under autocast as `fp32` is
            x = x.to(self.weight.dtype)
            return native.library().gemv(x, self.weight, self.bias).to(dtype)
        if name == "widened":  # a copy for the call: keeping one would double a bf16 model's memory
            bias = None if self.bias is None else self.bias.float()
            return F.linear(x.float(), self.weight.float(), bias).to(dtype)
        bias = None if self.bias is None else self.bias.to(dtype)
        x = x.to(dtype)
        if name == "mkl-packed":  # MKL's packed weight serves products of the row count it was packed for
            packed = self.prepared(name, dtype, x.shape[0])
            return torch.ops.mkl._mkl_linear(x, packed, self.weight, bias, x.shape[0])
        return onednn_product(x, self.prepared(name, dtype), bias)

    def prepared(self, name: str, dtype: torch.dtype, rows: int = 0) -> Tensor:
        """The weight in `dtype`, reordered for kernel `name` where it packs: made once, again when
        the weight changes (an optimizer step, a loaded state dict) or is replaced (tied)."""
        cache = self.__dict__.setdefault("_prepared", {})
        found = cache.get((name, dtype, rows))
        # The same tensor (a weak reference: a freed weight's id may be reused, as FSDP's unsharded
        # copies are), at the same version (every in-place change counts one).
        if found is not None and found[0]() is self.weight and found[1] == self.weight._version:
            return found[2]
        with torch.no_grad():
            weight = self.weight.detach().to(dtype)
            if name == "onednn-packed":
                weight = torch.ops.mkldnn._reorder_linear_weight(weight.contiguous(), None)
            elif name == "mkl-packed":
                weight = torch.ops.mkl._mkl_reorder_linear_weight(weight.contiguous(), rows)
        cache[(name, dtype, rows)] = (weakref.ref(self.weight), self.weight._version, weight)
        return weight
