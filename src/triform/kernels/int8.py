"""int8 weights for CPU inference: y = x · (s ⊙ Q)ᵀ + b, with Q int8 and one scale s per output feature.

Each weight row (output feature) n is stored as Q[n] = round(W[n] / s[n]) in [-127, 127] with
s[n] = max |W[n]| / 127: symmetric, per output channel, no zero point. A quarter of the fp32 bytes and
half of bf16's, which is what a decoding step, reading every weight once per token, is bound by.

The product runs on whichever of these kernels calibration (kernels/calibrate.py) measures fastest for
the layer's shape, rows (rounded up to a power of two) and threads, timed from memory where the weight
would sit in the last level cache between rounds but not in a step:
- fbgemm's int8 product ("fbgemm", any rows), which also quantizes the activations, per tensor and on
  the fly, to 8 bits (torch.ao's dynamic quantization, as CTranslate2's int8 does);
- up to NATIVE_MAX_ROWS rows and where triform's own kernels could be built (kernels/native.py),
  triform's int8 product ("native", native/int8.h: each row of activations rounded with its own
  scale, the products summed exactly in 32 bits);
- above FEW_ROWS rows (a prompt, a batch of fill-mask or classification texts), the weight
  dequantized for the call, to bf16 where the CPU has native bf16 (else fp32), and multiplied by
  oneDNN ("dequantized": no rounding of the activations);
- for a matrix of fewer than FBGEMM_MIN_WEIGHTS weights (a tiny model's), its int8 values dequantized
  once and kept in fp32 for MKL ("fp32"), which costs less per call than fbgemm at a few rows.
Neither wins everywhere, and the order changes with the CPU. On an AMD EPYC (Zen 4, AVX512-VNNI),
1 thread, from memory, triform's took 153 µs for one row of 8192 x 384 against fbgemm's 221 and 201
against 309 for 8 rows; at 50257 x 768 the two were level at one row (1.36 ms against 1.33); warm, at
8 rows of 384 x 1152, fbgemm's was faster (21 µs against 23). At 512 rows of 384 -> 1536 there fbgemm's
took 0.87 ms, the dequantized bf16 product 1.69 and fp32 6.0 (its fp32 products run at a third of
bf16's), and fbgemm's took 0.24 ms for 512 rows of 384 x 384 against 1.5 in the kept fp32.
On an Intel Xeon with AMX and AVX512-BF16 (1 thread, torch 2.13, d_model 384 and vocabulary 8192)
fbgemm's products took 0.25 ms for a GPT step at batch 1 against 1.5 ms in fp32 and 1.7 ms in bf16,
and 0.38 ms at batch 8 against 0.86 in bf16; torch's own weight-only kernel (_weight_int8pack_mm,
bf16 activations) took 0.51 ms at batch 1 and 1.1 ms at 8; at 512 x 1536 x 384 the dequantized bf16
product (oneDNN's AMX kernel) took 1.1 ms against fbgemm's 4.3.
fbgemm's 8-bit rounding of the activations makes a row's result depend slightly on the other rows of
its call (they share the scale; triform's kernel gives each row its own, and the dequantized and fp32
products round no activations); results are within quantization error of the fp32 model, not bit for
bit.
On a CPU without VNNI (AVX2 only: an AMD EPYC of the Zen 3 generation, for one), fbgemm adds each pair
of u8 · s8 products in 16 bits with saturation (vpmaddubsw): with 8-bit activations a pair can reach
2 · 255 · 127 and the sum is clipped, which put a randomly initialised layer's outputs 25-35 % of
their range off there (a trained GPT's weights pair up so large more rarely: its perplexity moved by
0.1 %, and with 7 bits by 0.02 %, on Brown in windows of 64 tokens, each product within fbgemm's rows). Whether
this CPU clips is tried once on a product that would (`activations_clip`); where it does, the
activations go in 7 bits instead (torch.ao's `reduce_range`), as torch's own default for fbgemm does.
Under torch.compile (`--compile`) each fbgemm product is one opaque operator (`triform::int8_linear`),
so that inductor fuses the work between products instead of breaking the graph at each of them.
"""

from __future__ import annotations

import warnings
from functools import cache

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from triform.errors import TriformError
from triform.kernels import native
from triform.kernels.calibrate import FIELDS, calibration, rows_class, timed_from_memory
from triform.kernels.linear import onednn_product
from triform.kernels.opaque import LayersByStorage
from triform.precision import native_bf16

SCHEMES = ("int8",)
# Up to this many rows a product is a few rows' (decoding steps, beams, small batches), for which
# dequantizing the whole weight at each call costs more than the product itself: no candidate there.
FEW_ROWS = 64
# Below this many weights fbgemm's cost per call (quantizing the activations, some 10 µs) can outweigh
# the bytes it saves: 384 x 384 took 16 µs a row against 10 in fp32 (MKL), 384 x 1152 22 against 36.
# Such a matrix also keeps its int8-rounded values, dequantized once, in fp32 (at most 1 MiB), as
# one more candidate.
FBGEMM_MIN_WEIGHTS = 2**18
# triform's int8 kernel is a candidate up to this many rows: its time grows with the rows (it reads the
# weight once for each four), fbgemm's far less; at 16 rows of 8192 x 384 it took 804 µs against 490.
NATIVE_MAX_ROWS = 16
FIELDS["int8 linear"] = ("rows≤", "in", "out", "bias", "threads")


def check_scheme(scheme: str) -> str:
    if scheme not in SCHEMES:
        raise TriformError(f"quantize: unknown scheme {scheme!r}; expected one of {', '.join(SCHEMES)}")
    return scheme


def quantize_rows(weight: Tensor) -> tuple[Tensor, Tensor]:
    """(Q int8 (N, K), s fp32 (N,)) with weight ≈ s[:, None] · Q, symmetric per output row."""
    weight = weight.detach().float()
    scales = weight.abs().amax(dim=1).clamp_min(1e-12) / 127  # a zero row keeps a finite scale
    quantized = torch.round(weight / scales[:, None]).clamp(-127, 127).to(torch.int8)
    return quantized, scales


def _prepack(quantized: Tensor, scales: Tensor, bias: Tensor | None):
    """fbgemm's packed form of the int8 weight (torch.ao's quantized tensors, which torch marks as
    deprecated; the packed kernel itself is what is used)."""
    zero_points = torch.zeros(quantized.shape[0], dtype=torch.long)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        weight = torch._make_per_channel_quantized_tensor(quantized, scales.double(), zero_points, 0)
        return torch.ops.quantized.linear_prepack(weight, bias)


@cache
def activations_clip() -> bool:
    """Whether fbgemm's int8 product clips here with 8-bit activations: ones (255 after quantizing)
    against weights of ones (127) sum to 63 exactly without clipping, to about half that with it."""
    quantized, scales = quantize_rows(torch.ones(8, 64))
    x = torch.ones(1, 64)
    x[0, 0] = 0.0  # the range starts at 0: the other activations quantize to 255
    y = torch.ops.quantized.linear_dynamic(x, _prepack(quantized, scales, None), False)
    return bool((y - 63.0).abs().max() > 0.5)


class Int8Linear(nn.Module):
    """An inference-only nn.Linear with int8 weights (`weight` int8, `scales` fp32, `bias` fp32)."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        if linear.weight.device.type != "cpu":
            raise TriformError(f"quantize: int8 runs on the CPU; this model is on {linear.weight.device}")
        self.in_features, self.out_features = linear.in_features, linear.out_features
        quantized, scales = quantize_rows(linear.weight)
        self.register_buffer("weight", quantized)  # (out, in) int8
        self.register_buffer("scales", scales)  # (out,)
        bias = None if linear.bias is None else linear.bias.detach().float().clone()
        self.register_buffer("bias", bias)
        self.packed = _prepack(quantized, scales, bias)
        self.reduce_range = activations_clip()  # 7-bit activations where 8 would clip (module docstring)
        self.bf16 = native_bf16(torch.device("cpu"))
        small = quantized.numel() < FBGEMM_MIN_WEIGHTS
        self.fp32_weight = self.dequantized(torch.float32) if small else None  # not in the state dict
        _LAYERS.add(self, quantized)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8"

    def dequantized(self, dtype: torch.dtype) -> Tensor:
        return (self.weight.to(dtype) * self.scales[:, None].to(dtype)).contiguous()  # (out, in)

    def forward(self, x: Tensor) -> Tensor:
        rows = x if x.dim() == 2 else x.reshape(-1, x.shape[-1])  # (M, in)
        if torch.compiler.is_compiling() and rows.shape[0]:
            # fbgemm's packed weight is no tensor that a graph can hold, nor is the kernel's choice
            # traceable: the product is one opaque operator, which takes the kernel eager would
            y = torch.ops.triform.int8_linear(fp32(rows), self.weight, self.scales, self.bias)
        else:
            y = self.product(rows)
        # Under autocast a product's result is bf16, as it would be for nn.Linear. Casts only where
        # needed: even a cast to the same dtype is a call through the dispatcher.
        dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else x.dtype
        if y.dtype != dtype:
            y = y.to(dtype)
        return y if x.dim() == 2 else y.view(*x.shape[:-1], self.out_features)  # (..., out)

    def product(self, rows: Tensor) -> Tensor:
        """rows (M, in) · (s ⊙ Q)ᵀ + b, (M, out), by the kernel chosen for M rows (module docstring):
        fp32, or bf16 from oneDNN's bf16 product, which the caller casts to its own dtype once."""
        return self.run(self.kernel(rows), rows)

    def run(self, name: str, rows: Tensor) -> Tensor:
        if name == "fp32":
            with torch.autocast("cpu", enabled=False):
                return F.linear(fp32(rows), self.fp32_weight, self.bias)
        if name == "native":
            return native.library().int8_linear(rows, self.weight, self.scales, self.bias)
        if name == "dequantized":
            dtype = torch.bfloat16 if self.bf16 else torch.float32
            bias = None if self.bias is None else self.bias.to(dtype)
            return onednn_product(rows.to(dtype), self.dequantized(dtype), bias)
        return torch.ops.quantized.linear_dynamic(fp32(rows), self.packed, self.reduce_range)

    def candidates(self, rows: int) -> tuple[str, ...]:
        """The kernels that may compute `rows` rows here, the one preferred on a tie first."""
        names = ("fp32",) if self.fp32_weight is not None else ()
        names += ("fbgemm",)
        if rows <= NATIVE_MAX_ROWS and native.library() is not None:
            names += ("native",)
        if rows > FEW_ROWS:
            names += ("dequantized",)
        return names

    def kernel(self, rows: Tensor) -> str:
        """The kernel for these rows, as calibration measured them; remembered by the layer for its
        rows' class and the threads, as a decoding step asks again at every token."""
        situation = (rows_class(rows.shape[0]), torch.get_num_threads(), calibration().serial)
        chosen = self.__dict__.setdefault("_chosen", {})
        name = chosen.get(situation)
        if name is None:
            names = self.candidates(rows.shape[0])
            key = ("int8 linear", rows_class(rows.shape[0]), self.in_features, self.out_features)
            key += (self.bias is not None, torch.get_num_threads())
            name = chosen[situation] = calibration().choose(key, names, lambda: self.timed_runs(names, rows))
        return name

    def timed_runs(self, names: tuple[str, ...], rows: Tensor) -> dict:
        """A call of each candidate, timed from memory where the weight could sit in the last level
        cache between rounds but would not in a step (as kernels/linear.py's `timed_runs`)."""
        runs = {name: (lambda name=name: self.run(name, rows)) for name in names}
        return timed_from_memory(self.weight.numel(), runs)


def fp32(rows: Tensor) -> Tensor:
    """`rows` as fbgemm takes them, fp32 and contiguous, copied only when they are not."""
    return rows if rows.dtype == torch.float32 and rows.is_contiguous() else rows.float().contiguous()


# Inside torch.compile an int8 product is one operator that finds its layer by the int8 weight's
# storage (kernels/opaque.py): dynamo cannot trace fbgemm's packed weight, and would break the graph
# at every product, leaving a compiled step slower than an eager one.
_LAYERS = LayersByStorage()
_LIBRARY = torch.library.Library("triform", "FRAGMENT")
_LIBRARY.define("int8_linear(Tensor x, Tensor weight, Tensor scales, Tensor? bias) -> Tensor")


def _int8_linear(x: Tensor, weight: Tensor, scales: Tensor, bias: Tensor | None) -> Tensor:
    layer = _LAYERS.find(weight)
    if layer is None:  # a layer gone: its values still serve
        return F.linear(x, weight.float() * scales[:, None], bias)
    return layer.product(x).float()  # the operator's declared result


_LIBRARY.impl("int8_linear", _int8_linear, "CPU")


@torch.library.register_fake("triform::int8_linear")
def _(x: Tensor, weight: Tensor, scales: Tensor, bias: Tensor | None) -> Tensor:
    return x.new_empty(x.shape[0], weight.shape[0], dtype=torch.float32)


def quantize(model: nn.Module, scheme: str = "int8") -> nn.Module:
    """Replace every nn.Linear of `model` (in place; returned too) by its int8 version, for inference
    on the CPU. Embeddings stay as they are: a head tied to the token embedding gets its own int8
    copy of the weight, and the embedding lookup keeps reading the float one."""
    check_scheme(scheme)
    _replace_linears(model)
    model.quantized = scheme
    return model


def _replace_linears(module: nn.Module) -> None:
    for name, child in list(module.named_children()):
        if isinstance(child, nn.Linear):
            setattr(module, name, Int8Linear(child).train(child.training))  # in the mode of the one replaced
        else:
            _replace_linears(child)


def cache_dtype(model: nn.Module, weight: Tensor) -> torch.dtype:
    """The KV cache's dtype for decoding with `model`, whose float weights are `weight`'s dtype: bf16
    under int8 weights with fp32 activations, else `weight`'s. A step of a few rows then reads half
    the bytes in attention, which at batch 8 read as many as the int8 weights (BART's source keys and
    values, GPT's past ones); keys and values rounded to bf16 move attention's result by about 2^-9 of
    its scale, below the activations' int8 rounding (2^-8 of their range). On an AMD EPYC (Zen 4),
    1 thread, 12 such attentions (8 rows of 6 heads over 65 keys, from memory) took 0.43 ms in bf16
    against 0.67 in fp32."""
    if quantized_scheme(model) == "int8" and weight.dtype == torch.float32:
        return torch.bfloat16
    return weight.dtype


def quantized_scheme(model: nn.Module) -> str | None:
    """The scheme `quantize` applied to `model`, or None."""
    return getattr(model, "quantized", None)
