"""triform's own C kernels (kernels/native/*.c), built on first use by this machine's C compiler, for
this CPU, and loaded with ctypes.

A product of a few rows reads its whole weight to do two multiply-adds per weight read: it is as fast
as that read. The library kernels torch calls there ran at half of the read's speed or less (measured
on an AMD EPYC, 2 threads: 24 products of a 6-layer 384-wide GPT in 3.6 ms by MKL, 3.1 by oneDNN,
against 1.3-1.7 ms to read their weights), so `gemv`, in fp32 and in bf16, is one more candidate of
`kernels/linear.py`: calibration times it beside the others and keeps it only where it is faster.
A decoding step's attention reads its KV cache the same way; `decode_attention` (attention.c) is a
candidate of `kernels/attention.py` for one query, which matters most where bf16 is emulated (a bf16
cache attended 3 to 4 times faster than by torch's fused kernel on that EPYC). `block_step`
(block.c) computes a decoding step of a whole block in one call, for kernels/fused_step.py: its
products fused with their norms, activations and residual sums (gemv.c) and its attention steps
(attention.c), so that a step pays one call per block rather than its modules' hundred operators.

The build is `$CC` (default `cc`) with -O3 -march=native -fopenmp and the rest of FLAGS, into
$TRIFORM_CACHE/native (default ~/.cache/triform/native), named by a digest of the source, the flags,
the compiler's version and the machine's fingerprint: a new CPU, compiler or source builds anew, and a
file that fails to load is built again once. Compiled after torch is loaded, the library's OpenMP
runtime is torch's own (the same libgomp.so.1), so its threads are torch's threads. A flag the
compiler does not take is replaced by its stand-in (STAND_INS; `build_notes()` says which; the probe's
answer is kept for the next process): without OpenMP, as with Apple's Clang, each kernel runs on one
thread. Where no compiler is found or the build fails, the kernels are absent (`unavailable()` says
why) and calibration chooses among the library kernels; TRIFORM_NATIVE=0 leaves them out on purpose.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from functools import cache
from pathlib import Path

import torch
from torch import Tensor
from torch.profiler import record_function

from triform.io import atomic_write
from triform.kernels.machine import fingerprint
from triform.nn.joined import joined_like

FOLDER = Path(__file__).with_name("native")
SOURCES = tuple(sorted(FOLDER.glob("*.c")))  # compiled together into one library
# -ffp-contract=fast: multiply-adds as FMA instructions, which -std=c99 alone turns off
FLAGS = ("-O3", "-march=native", "-ffp-contract=fast", "-fopenmp", "-shared", "-fPIC", "-std=c99")
# What stands in, in order, for a flag of FLAGS the compiler does not take (None: going without it).
# Clang on Arm took -mcpu=native where some versions refused -march=native; Apple's Clang has no
# OpenMP, and without it the pragmas are ignored: the same kernels, each on one thread, which
# calibration then times against torch's like any other.
STAND_INS = {"-march=native": ("-mcpu=native", None), "-fopenmp": (None,)}
LIBRARIES = ("-lm",)  # expf
MASKS = {None: 0, torch.bool: 1, torch.float32: 2}  # attention.c's mask kinds
OUTSIDE_TABLES = -2  # block.c: a row's position is past the rotary or position tables
OUTSIDE_VOCABULARY = -3  # block.c: a token id past the embedding table
NORMS = {"layernorm": 1, "rmsnorm": 2}  # gemv.c's norm kinds (0: none)
ACTIVATIONS = {"relu": 1, "gelu": 2, "gelu_tanh": 3, "silu": 4}  # gemv.c's activations (0: none)
BUILD_SECONDS = 120
GEMV_DTYPES = {torch.float32: "f32", torch.bfloat16: "bf16"}  # the kernel for each (x, weight, bias) dtype
_why_unavailable = ""
_build_notes: list[str] = []


_I64, _POINTER = ctypes.c_int64, ctypes.c_void_p


class BlockParameters(ctypes.Structure):
    """block.c's triform_block: a block's sizes and parameters, as kernels/fused_step.py records them."""

    _fields_ = [(name, _I64) for name in ("d_model", "inner", "kv_inner", "d_ff", "heads", "kv_heads", "d_head")]
    _fields_ += [(name, ctypes.c_int) for name in ("post_norm", "activation", "gated", "cross")]
    _fields_ += [("scale", ctypes.c_float), ("cross_scale", ctypes.c_float), ("norm_kind", ctypes.c_int * 3)]
    _fields_ += [("norm_w", _POINTER * 3), ("norm_b", _POINTER * 3), ("norm_eps", ctypes.c_float * 3)]
    _fields_ += [("w", _POINTER * 6), ("b", _POINTER * 6), ("s", _POINTER * 6)]
    _fields_ += [("head_norm_kind", ctypes.c_int), ("head_norm_w", _POINTER * 2), ("head_norm_b", _POINTER * 2)]
    _fields_ += [("head_norm_eps", ctypes.c_float * 2), ("rotary", ctypes.c_int), ("tables_f32", ctypes.c_int)]
    _fields_ += [("cos", _POINTER), ("sin", _POINTER), ("max_len", _I64)]


class StepPlaces(ctypes.Structure):
    """block.c's triform_step: where a step's KV cache and masks are."""

    _fields_ = [("k", _POINTER), ("v", _POINTER)]
    _fields_ += [(name, _I64) for name in ("kb", "kh", "kt", "vb", "vh", "vt", "position")]
    _fields_ += [("mask", _POINTER), ("kind", ctypes.c_int), ("mb", _I64), ("mh", _I64), ("mt", _I64)]
    _fields_ += [("ck", _POINTER), ("cv", _POINTER)]
    _fields_ += [(name, _I64) for name in ("ckb", "ckh", "ckt", "cvb", "cvh", "cvt", "source")]
    _fields_ += [("cmask", _POINTER), ("ckind", ctypes.c_int), ("cmb", _I64), ("cmh", _I64), ("cmt", _I64)]
    _fields_ += [("positions", _POINTER), ("ps", _I64)]


class StackParameters(ctypes.Structure):
    """block.c's triform_stack: what a stack computes around its blocks, as kernels/fused_step.py records it."""

    _fields_ = [("token", _POINTER), ("position", _POINTER), ("vocab", _I64), ("max_len", _I64)]
    _fields_ += [("scale", ctypes.c_float), ("norm_kind", ctypes.c_int), ("final_kind", ctypes.c_int)]
    _fields_ += [(name, _POINTER) for name in ("norm_w", "norm_b", "final_w", "final_b")]
    _fields_ += [("norm_eps", ctypes.c_float), ("final_eps", ctypes.c_float)]


class Place(ctypes.Structure):
    """training_attention.c's place: a (B, H, T, d) operand's address and strides (d contiguous)."""

    _fields_ = [("p", _POINTER), ("b", _I64), ("h", _I64), ("t", _I64)]

    @classmethod
    def of(cls, tensor: Tensor) -> Place:
        return cls(tensor.data_ptr(), tensor.stride(0), tensor.stride(1), tensor.stride(2))


class MaskPlace(ctypes.Structure):
    """training_attention.c's mask_place: a mask's address, kind and strides over (B, H, T, T_keys)."""

    _fields_ = [("p", _POINTER), ("kind", ctypes.c_int), ("b", _I64), ("h", _I64), ("q", _I64), ("k", _I64)]

    @classmethod
    def of(cls, mask: Tensor | None, shape: tuple[int, int, int, int]):
        """A pointer to the place of `mask` (bool or fp32, expanded to `shape`, (B, H, T, T_keys), as
        kernels/attention.py's `native_mask` lays it out), or None. A mask of another shape would be
        read past its end: refused."""
        if mask is None:
            return None
        if tuple(mask.shape) != tuple(shape):
            raise ValueError(f"attention mask of shape {tuple(mask.shape)}: expected it expanded to {tuple(shape)}")
        return ctypes.byref(cls(mask.data_ptr(), MASKS[mask.dtype], *mask.stride()))


class DropoutPlace(ctypes.Structure):
    """training_attention.h's dropout_place: dropout on the attention's probabilities, keep decisions as
    `dropout`'s (native/dropout.h) over the (B, H, T, T_keys) elements."""

    _fields_ = [("dropped", ctypes.c_uint32), ("kept_scale", ctypes.c_float), ("seed", ctypes.c_uint64)]

    @classmethod
    def of(cls, dropout: tuple[int, float, int] | None):
        """A pointer to (dropped of 2¹⁵, the kept values' scale, seed < 2⁶⁴), or None for no dropout."""
        if dropout is None:
            return None
        dropped, scale, seed = dropout
        return ctypes.byref(cls(dropped, scale, seed))


class NativeKernels:
    """The loaded library's kernels, each taking and returning tensors."""

    def __init__(self, library: ctypes.CDLL, path: Path):
        self.path = path
        i64, pointer = ctypes.c_int64, ctypes.c_void_p
        self._gemv = {}
        for dtype, name in GEMV_DTYPES.items():
            function = getattr(library, f"triform_gemv_{name}")
            function.argtypes = [pointer, i64, pointer, pointer, pointer, i64, i64, i64, i64, ctypes.c_int]
            function.restype = None if dtype == torch.float32 else ctypes.c_int  # bf16's: -1 out of memory
            self._gemv[dtype] = function
        self._attention = {}
        for dtype, name in GEMV_DTYPES.items():
            function = getattr(library, f"triform_decode_attention_{name}")
            function.argtypes = [pointer, pointer, i64, i64, i64, pointer, i64, i64, i64, pointer, ctypes.c_int]
            function.argtypes += [i64, i64, i64, pointer, i64, i64, i64, i64, ctypes.c_float, ctypes.c_int]
            function.restype = ctypes.c_int  # -1: out of memory
            self._attention[dtype] = function
        places, mask = [ctypes.POINTER(Place)] * 4, [ctypes.POINTER(MaskPlace), ctypes.POINTER(DropoutPlace)]
        self._attention_forward, self._attention_backward = {}, {}  # by dtype (bf16: where the CPU has its pairs)
        self.training_attention_dtypes = (torch.float32,)
        if library.triform_attention_bf16_available():
            self.training_attention_dtypes += (torch.bfloat16,)
        for dtype in self.training_attention_dtypes:
            name = GEMV_DTYPES[dtype]
            forward = getattr(library, f"triform_attention_forward_{name}")
            forward.argtypes = [*places[:3], *mask, places[0], pointer, i64, i64, i64, i64, i64]
            forward.argtypes += [ctypes.c_int, ctypes.c_float, ctypes.c_int]
            backward = getattr(library, f"triform_attention_backward_{name}")
            backward.argtypes = [*places[:3], *mask, places[0], places[0], pointer, *places[:3]]
            backward.argtypes += [i64, i64, i64, i64, i64, ctypes.c_int, ctypes.c_float, ctypes.c_int]
            forward.restype = backward.restype = ctypes.c_int
            self._attention_forward[dtype], self._attention_backward[dtype] = forward, backward
        self._cross_entropy = {}
        for dtype, name in GEMV_DTYPES.items():
            function = getattr(library, f"triform_cross_entropy_{name}")
            function.argtypes = [pointer, i64, pointer, pointer, ctypes.c_float, pointer, i64, i64, i64, pointer]
            function.argtypes += [ctypes.c_int]
            function.restype = ctypes.c_int
            self._cross_entropy[dtype] = function
        self._activation = {}  # by dtype: (forward, backward)
        for dtype, name in GEMV_DTYPES.items():
            forward = getattr(library, f"triform_activation_forward_{name}")
            forward.argtypes = [ctypes.c_int, pointer, i64, pointer, i64, i64, ctypes.c_int]
            backward = getattr(library, f"triform_activation_backward_{name}")
            backward.argtypes = [ctypes.c_int, pointer, i64, pointer, pointer, i64, i64, ctypes.c_int]
            forward.restype = backward.restype = None
            self._activation[dtype] = (forward, backward)
        self._transpose = {}  # by the elements' size in bytes
        for size in (4, 2):
            function = getattr(library, f"triform_transpose_{8 * size}")
            function.argtypes = [pointer, i64, pointer, i64, i64, i64, ctypes.c_int]
            function.restype = None
            self._transpose[size] = function
        self._dropout = {}  # by dtype: (forward, backward)
        for dtype, name in GEMV_DTYPES.items():
            forward = getattr(library, f"triform_dropout_{name}")
            forward.argtypes = [pointer, pointer, pointer, i64, ctypes.c_uint32, ctypes.c_float, ctypes.c_uint64]
            forward.argtypes += [ctypes.c_int]
            backward = getattr(library, f"triform_dropout_backward_{name}")
            backward.argtypes = [pointer, pointer, pointer, i64, ctypes.c_float, ctypes.c_int]
            forward.restype = backward.restype = None
            self._dropout[dtype] = (forward, backward)
        self._int8_linear = library.triform_fused_linear_q8  # the block step's int8 product (gemv.c)
        self._int8_linear.argtypes = [pointer, i64, ctypes.c_int, pointer, pointer, ctypes.c_float, pointer, pointer]
        self._int8_linear.argtypes += [pointer, ctypes.c_int, ctypes.c_int, pointer, i64, ctypes.c_int, pointer]
        self._int8_linear.argtypes += [pointer, ctypes.c_float, pointer, i64, i64, i64, i64, ctypes.c_int]
        self._int8_linear.restype = ctypes.c_int
        self._block = {}
        # by (the weights' dtype, the KV cache's): int8 weights have fp32 activations, the cache fp32 or bf16
        kinds = {(dtype, dtype): name for dtype, name in GEMV_DTYPES.items()}
        kinds |= {(torch.int8, torch.float32): "q8", (torch.int8, torch.bfloat16): "q8_bf16"}
        for kind, name in kinds.items():
            function = getattr(library, f"triform_block_step_{name}")
            function.argtypes = [ctypes.c_void_p, ctypes.c_void_p, pointer, pointer, i64, ctypes.c_int]
            function.restype = ctypes.c_int
            self._block[kind] = function
        self._stack = {}  # a stack's step: its embeddings, its n blocks one after another, its final norm
        for kind, name in kinds.items():
            function = getattr(library, f"triform_stack_step_{name}")
            function.argtypes = [ctypes.c_void_p, pointer, pointer, i64, i64, ctypes.c_void_p, ctypes.c_void_p]
            function.argtypes += [pointer, i64, ctypes.c_int]
            function.restype = ctypes.c_int
            self._stack[kind] = function

    def gemv(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        """x (M, K) · weight (N, K)ᵀ + bias on the CPU, all fp32 or all bf16 (GEMV_DTYPES); any row
        stride of x. bf16 products are summed in fp32 and the result rounded once."""
        function = self._gemv[x.dtype]
        if x.stride(-1) != 1:
            x = x.contiguous()
        if not weight.is_contiguous():
            weight = weight.contiguous()
        rows, inner = x.shape
        out = torch.empty(rows, weight.shape[0], dtype=x.dtype)
        bias_pointer = None if bias is None else bias.contiguous().data_ptr()
        arguments = (x.data_ptr(), x.stride(0), weight.data_ptr(), bias_pointer, out.data_ptr(), out.stride(0))
        arguments += (rows, weight.shape[0], inner, torch.get_num_threads())
        if torch.autograd._profiler_enabled():  # seen by torch.profiler as an operator of its own
            with record_function("triform::gemv"):
                failed = function(*arguments)
        else:
            failed = function(*arguments)
        if failed:
            raise MemoryError(f"gemv: no memory for a copy of {rows} x {inner} rows in fp32")
        return out

    def decode_attention(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, scale: float | None) -> Tensor:
        """softmax(q · kᵀ · scale + mask) · v for one query: q (B, H, 1, d), k and v (B, H, T, d), both
        fp32 or both bf16, any strides but the last; mask boolean (True: attended) or added to the
        scores, broadcastable to (B, H, 1, T). Summed in fp32; the result in q's dtype. A query with
        every key masked gets zeros (torch's kernels give NaN)."""
        batch, heads, _, d = q.shape
        keys = k.shape[2]
        function = self._attention[k.dtype]
        query = q.reshape(batch * heads, d)  # a view: one query per head
        if query.dtype != torch.float32 or not query.is_contiguous():
            query = query.float().contiguous()
        if k.stride(-1) != 1:
            k = k.contiguous()
        if v.stride(-1) != 1:
            v = v.contiguous()
        out = torch.empty(batch, heads, 1, d)
        mask, kind, strides = mask_places(mask, batch, heads, keys)
        scale = d**-0.5 if scale is None else scale
        arguments = (query.data_ptr(), k.data_ptr(), k.stride(0), k.stride(1), k.stride(2))
        arguments += (v.data_ptr(), v.stride(0), v.stride(1), v.stride(2))
        arguments += (None if mask is None else mask.data_ptr(), kind, *strides, out.data_ptr())
        arguments += (batch, heads, keys, d, scale, torch.get_num_threads())
        if torch.autograd._profiler_enabled():
            with record_function("triform::decode_attention"):
                failed = function(*arguments)
        else:
            failed = function(*arguments)
        if failed:
            raise MemoryError(f"decode_attention: no memory for {keys} scores")
        return out if q.dtype == torch.float32 else out.to(q.dtype)

    def attention_forward(
        self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        mask: Tensor | None,
        causal: bool,
        scale: float,
        dropout: tuple[int, float, int] | None = None,
    ) -> tuple[Tensor, Tensor]:
        """(softmax(q · kᵀ · scale + mask) · v, each query's log-sum-exp of its masked scaled scores)
        for q (B, H, T, d) and k, v (B, H, T_keys, d) of one dtype of `training_attention_dtypes`,
        any strides but the last, d a multiple of 16; mask None, or bool (True: attended) or fp32
        (added) expanded to (B, H, T, T_keys), any strides; causal: query i attends keys 0 to i
        (torch's alignment); dropout (dropped of 2¹⁵, scale, seed) on the probabilities, each kept
        where `dropout` would keep element (b, h, i, j) of a (B, H, T, T_keys) tensor. A query that
        attends no key gets zeros. The result (B, H, T, d), in q's dtype, is laid out as (B, T, H, d),
        the heads' join a view; the log-sum-exp is fp32."""
        batch, heads, queries, d = q.shape
        out = torch.empty(batch, queries, heads, d, dtype=q.dtype).transpose(1, 2)
        lse = torch.empty(batch, heads, queries)
        places = tuple(ctypes.byref(Place.of(t)) for t in (q, k, v))
        mask_place = MaskPlace.of(mask, (batch, heads, queries, k.shape[2]))
        arguments = (*places, mask_place, DropoutPlace.of(dropout), ctypes.byref(Place.of(out)), lse.data_ptr())
        arguments += (batch, heads)
        arguments += (queries, k.shape[2], d, int(causal), scale, torch.get_num_threads())
        self._call(self._attention_forward[q.dtype], arguments, "triform::attention_forward", "a head's scores")
        return out, lse

    def attention_backward(
        self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        mask: Tensor | None,
        out: Tensor,
        lse: Tensor,
        grad: Tensor,
        causal: bool,
        scale: float,
        dropout: tuple[int, float, int] | None = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """The gradients of q, k and v from `attention_forward`'s inputs (the same dropout), results and
        the gradient of its out, each laid out as (B, T, H, d)."""
        batch, heads, queries, d = q.shape
        keys = k.shape[2]
        # Side by side as q, k and v (or a cross-attention's k and v) are when split from one
        # projection: the split's backward then takes them as they are, where it would otherwise
        # concatenate them (nn/joined.py).
        gradients = joined_like(q, k, v)
        if gradients is None:
            dq = torch.empty(batch, queries, heads, d, dtype=q.dtype).transpose(1, 2)
            pair = joined_like(k, v)
            if pair is None:
                pair = tuple(torch.empty(batch, keys, heads, d, dtype=q.dtype).transpose(1, 2) for _ in range(2))
            gradients = (dq, *pair)
        dq, dk, dv = gradients
        places = [ctypes.byref(Place.of(t)) for t in (q, k, v, out, grad)]
        mask_place = MaskPlace.of(mask, (batch, heads, queries, keys))
        arguments = (*places[:3], mask_place, DropoutPlace.of(dropout), *places[3:], lse.data_ptr())
        arguments += tuple(ctypes.byref(Place.of(t)) for t in (dq, dk, dv))
        arguments += (batch, heads, queries, keys, d, int(causal), scale, torch.get_num_threads())
        self._call(self._attention_backward[q.dtype], arguments, "triform::attention_backward", "a head's scores")
        return dq, dk, dv

    def activation_forward(self, kind: str, x: Tensor) -> Tensor:
        """ACTIVATIONS[kind] of x (rows, n), fp32 or bf16, rows of any stride, the last dimension
        contiguous, computed in fp32; (rows, n) contiguous in x's dtype."""
        out = torch.empty(x.shape, dtype=x.dtype)
        arguments = (ACTIVATIONS[kind], x.data_ptr(), x.stride(0), out.data_ptr(), *x.shape, torch.get_num_threads())
        self._timed(self._activation[x.dtype][0], arguments, "triform::activation")
        return out

    def activation_backward(self, kind: str, x: Tensor, grad: Tensor) -> Tensor:
        """grad · ACTIVATIONS[kind]'(x): x as for `activation_forward`, grad (rows, n) contiguous."""
        out = torch.empty(x.shape, dtype=x.dtype)
        arguments = (ACTIVATIONS[kind], x.data_ptr(), x.stride(0), grad.data_ptr(), out.data_ptr(), *x.shape)
        self._timed(self._activation[x.dtype][1], (*arguments, torch.get_num_threads()), "triform::activation_backward")
        return out

    def transpose_into(self, x: Tensor, out: Tensor) -> Tensor:
        """out (C, R), contiguous, = x (R, C) transposed: x of 4- or 2-byte elements, its rows of any
        stride, its last dimension contiguous."""
        arguments = (x.data_ptr(), x.stride(0), out.data_ptr(), out.stride(0), *x.shape, torch.get_num_threads())
        self._timed(self._transpose[x.element_size()], arguments, "triform::transpose")
        return out

    def dropout(self, x: Tensor, dropped: int, scale: float, seed: int) -> tuple[Tensor, Tensor]:
        """(x · keep · scale, keep as uint8) for x contiguous, fp32 or bf16: an element kept where 15 bits
        hashed from its index and `seed` (< 2⁶⁴) are at least `dropped` (of 2¹⁵)."""
        out, keep = torch.empty_like(x), torch.empty(x.shape, dtype=torch.uint8)
        arguments = (x.data_ptr(), out.data_ptr(), keep.data_ptr(), x.numel(), dropped, scale, seed)
        self._timed(self._dropout[x.dtype][0], (*arguments, torch.get_num_threads()), "triform::dropout")
        return out, keep

    def dropout_backward(self, grad: Tensor, keep: Tensor, scale: float) -> Tensor:
        """grad · keep · scale, grad contiguous in the dtype `dropout` took."""
        out = torch.empty_like(grad)
        arguments = (grad.data_ptr(), keep.data_ptr(), out.data_ptr(), grad.numel(), scale, torch.get_num_threads())
        self._timed(self._dropout[grad.dtype][1], arguments, "triform::dropout_backward")
        return out

    def cross_entropy(
        self, logits: Tensor, targets: Tensor, weights: Tensor, smoothing: float, gradient: Tensor | None
    ) -> float:
        """Σ_r weights[r] · (the cross-entropy of row r of logits (N, V), fp32 or bf16, the last
        dimension contiguous, against targets[r] (int64, within the vocabulary where weights[r] is not
        0), its target distribution smoothed by `smoothing`); into `gradient` (N, V) of the logits'
        dtype, when given, its gradient: (softmax - target distribution) · weights[r]."""
        targets, weights = targets.long().contiguous(), weights.float().contiguous()
        total = ctypes.c_double()
        arguments = (logits.data_ptr(), logits.stride(0), targets.data_ptr(), weights.data_ptr(), smoothing)
        arguments += (address(gradient), 0 if gradient is None else gradient.stride(0), *logits.shape)
        arguments += (ctypes.byref(total), torch.get_num_threads())
        self._call(self._cross_entropy[logits.dtype], arguments, "triform::cross_entropy", "a row of logits")
        return total.value

    def int8_linear(self, x: Tensor, weight: Tensor, scales: Tensor, bias: Tensor | None) -> Tensor:
        """The block step's int8 product alone: x (M, K) fp32, each row rounded to int8 with its own scale
        (max |x| / 127), times weight (N, K) int8, the products summed exactly, then scaled by the row's
        scale and scales (N) and bias (N, fp32) added; (M, N) fp32."""
        x, weight, scales = x.float().contiguous(), weight.contiguous(), scales.float().contiguous()
        bias = None if bias is None else bias.float().contiguous()
        rows, inner = x.shape
        out = torch.empty(rows, weight.shape[0])
        arguments = (x.data_ptr(), inner, 0, None, None, 0.0, weight.data_ptr(), address(bias), scales.data_ptr())
        arguments += (0, 0, None, 0, 0, None, None, 0.0, out.data_ptr(), out.shape[1], rows, out.shape[1], inner)
        self._call(self._int8_linear, (*arguments, torch.get_num_threads()), "triform::native_int8_linear", "its rows")
        return out

    def block_step(
        self,
        block: BlockParameters,
        places: StepPlaces,
        x: Tensor,
        int8: bool = False,
        cache_dtype: torch.dtype | None = None,
    ) -> Tensor:
        """A decoding step of one block (block.c) for x (M, d_model), contiguous, in the block's dtype
        (`int8`: the block's weights are int8 with scales, x and everything else fp32), the KV cache in
        x's dtype or, for int8 weights, `cache_dtype` (bf16)."""
        out = torch.empty_like(x)
        arguments = (ctypes.addressof(block), ctypes.addressof(places), x.data_ptr(), out.data_ptr(), x.shape[0])
        arguments += (torch.get_num_threads(),)
        function = self._block[(torch.int8 if int8 else x.dtype, cache_dtype or x.dtype)]
        if self._call(function, arguments, "triform::block_step", "a step") == OUTSIDE_TABLES:
            raise ValueError(
                f"a position is beyond the model's max_len {block.max_len}; "
                "shorten the input or build the model with a larger max_len"
            )
        return out

    def stack_step(
        self,
        stack: StackParameters,
        ids: Tensor,
        positions: Tensor,
        blocks: ctypes.Array,
        places: ctypes.Array,
        dtype: torch.dtype,
        int8: bool = False,
        cache_dtype: torch.dtype | None = None,
    ) -> Tensor:
        """A stack's decoding step (block.c): the tokens `ids` (M,) int64 embedded at `positions` (M,)
        int64 (any stride), then n blocks one after another (`blocks` and `places` hold the addresses
        of each block's BlockParameters and StepPlaces), then the final norm; (M, d_model) in `dtype`,
        the blocks' as for `block_step`."""
        width = BlockParameters.from_address(blocks[0]).d_model
        out = torch.empty(ids.shape[0], width, dtype=dtype)
        arguments = (ctypes.addressof(stack), ids.data_ptr(), positions.data_ptr(), positions.stride(0))
        arguments += (len(blocks), ctypes.addressof(blocks), ctypes.addressof(places), out.data_ptr())
        arguments += (ids.shape[0], torch.get_num_threads())
        function = self._stack[(torch.int8 if int8 else dtype, cache_dtype or dtype)]
        failed = self._call(function, arguments, "triform::stack_step", "a step")
        if failed == OUTSIDE_TABLES:
            max_len = stack.max_len if stack.position else blocks_max_len(blocks)
            raise ValueError(
                f"a position is beyond the model's max_len {max_len}; "
                "shorten the input or build the model with a larger max_len"
            )
        if failed == OUTSIDE_VOCABULARY:
            raise IndexError(f"a token id is outside the vocabulary of {stack.vocab} ids")
        return out

    @staticmethod
    def _timed(function, arguments: tuple, name: str) -> None:
        """A kernel that cannot fail, seen by torch.profiler as an operator of its own."""
        if torch.autograd._profiler_enabled():
            with record_function(name):
                function(*arguments)
        else:
            function(*arguments)

    @staticmethod
    def _call(function, arguments: tuple, name: str, what: str) -> int:
        """The kernel's answer: 0, or OUTSIDE_TABLES; MemoryError for -1 (out of memory)."""
        if torch.autograd._profiler_enabled():  # seen by torch.profiler as an operator of its own
            with record_function(name):
                failed = function(*arguments)
        else:
            failed = function(*arguments)
        if failed == -1:
            raise MemoryError(f"{name.removeprefix('triform::')}: no memory for {what}")
        return failed


def blocks_max_len(blocks: ctypes.Array) -> int:
    """The rotary tables' length of the first block of `blocks` (addresses of BlockParameters) that has them."""
    lengths = [BlockParameters.from_address(a).max_len for a in blocks if BlockParameters.from_address(a).rotary]
    return lengths[0] if lengths else 0


def mask_places(mask: Tensor | None, batch: int, heads: int, keys: int) -> tuple[Tensor | None, int, tuple]:
    """(the mask as the kernels read it, its kind, its strides over batch, heads and keys): boolean
    (True: attended) or fp32 added to the scores, broadcast to (batch, heads, 1, keys)."""
    if mask is None:
        return None, MASKS[None], (0, 0, 0)
    mask = mask if mask.dtype == torch.bool else mask.float()
    if mask.dim() < 4:
        mask = mask.view((1,) * (4 - mask.dim()) + tuple(mask.shape))
    mask = mask.expand(batch, heads, 1, keys)  # broadcast dimensions: stride 0
    return mask, MASKS[mask.dtype], (mask.stride(0), mask.stride(1), mask.stride(3))


def address(tensor: Tensor | None) -> int | None:
    return None if tensor is None else tensor.data_ptr()


def compiler() -> str | None:
    name = os.environ.get("CC") or "cc"
    return shutil.which(name)


def build_folder() -> Path:
    return Path(os.environ.get("TRIFORM_CACHE") or Path.home() / ".cache" / "triform") / "native"


@cache
def source_digest() -> str:
    """A digest of the kernels' C sources (every .c and .h of FOLDER)."""
    texts = {path.name: path.read_text() for path in sorted(FOLDER.iterdir()) if path.suffix in (".c", ".h")}
    return hashlib.sha256(json.dumps(texts, sort_keys=True).encode()).hexdigest()


def library_path(cc: str, flags: tuple[str, ...] | None = None) -> Path:
    """Where the library built by `cc` with `flags` (default FLAGS) for this source and machine lives."""
    version = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout
    identity = json.dumps([source_digest(), flags or FLAGS, LIBRARIES, version, fingerprint()], sort_keys=True)
    return build_folder() / f"kernels-{hashlib.sha256(identity.encode()).hexdigest()[:16]}.so"


def takes(cc: str, flag: str) -> bool:
    """Whether `cc` compiles and links a shared library with `flag` (OpenMP's runtime included)."""
    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / "probe.c"
        source.write_text("int triform_probe(void) { return 0; }\n")
        command = [cc, flag, "-shared", "-fPIC", str(source), "-o", str(Path(folder) / "probe.so")]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=BUILD_SECONDS)
        except (OSError, subprocess.SubprocessError):
            return False
        return done.returncode == 0 and "warning" not in done.stderr


def usable_flags(cc: str) -> tuple[tuple[str, ...], list[str]]:
    """FLAGS with each flag `cc` does not take replaced by its first stand-in it takes (STAND_INS),
    and a note for each replaced."""
    flags, notes = [], []
    for flag in FLAGS:
        options = STAND_INS.get(flag)
        if options is None or takes(cc, flag):
            flags.append(flag)
            continue
        taken = next((option for option in options if option is None or takes(cc, option)), None)
        if taken is not None:
            flags.append(taken)
        said = f"built with {taken}" if taken else STAND_IN_NOTES[flag]
        notes.append(f"{Path(cc).name} does not take {flag}: {said}")
    return tuple(flags), notes


def probed_flags(cc: str, default: Path) -> tuple[tuple[str, ...], list[str]]:
    """`usable_flags(cc)`, or what `keep_probed` kept of it beside the default build's path
    (`default`, named by the compiler's version, the source and the machine): where the stand-ins
    are needed, as on a Mac, each process would otherwise link two probes before its first kernel."""
    try:
        said = json.loads(default.with_suffix(".flags.json").read_text())
        return tuple(said["flags"]), list(said["notes"])
    except (OSError, ValueError, KeyError, TypeError):  # not probed yet, or cut short: asked again
        return usable_flags(cc)


def keep_probed(default: Path, flags: tuple[str, ...], notes: list[str]) -> None:
    """Keep the stand-in flags a library was built and loaded with, for `probed_flags`; only then,
    so that a compiler that fails everything (not installed right) is asked again next time."""
    kept, said = default.with_suffix(".flags.json"), json.dumps({"flags": flags, "notes": notes})
    try:
        if not kept.is_file() or kept.read_text() != said:  # kept already: each process reads it, none writes
            atomic_write(kept, said)
    except OSError:  # a folder it cannot write: the probes are asked again next time
        pass


STAND_IN_NOTES = {
    "-march=native": "built for the compiler's default CPU",
    "-fopenmp": "built without OpenMP, each kernel on one thread",
}


def build(cc: str, path: Path, flags: tuple[str, ...] = FLAGS) -> None:
    """Compile SOURCES into `path`, atomically: a failed or interrupted build leaves nothing there."""

    def compile_to(temporary: Path) -> None:
        command = [cc, *flags, *map(str, SOURCES), "-o", str(temporary), *LIBRARIES]
        done = subprocess.run(command, capture_output=True, text=True, timeout=BUILD_SECONDS)
        if done.returncode != 0:
            first = next((line for line in done.stderr.splitlines() if line.strip()), "no message")
            raise RuntimeError(f"{' '.join(command[: -2 - len(LIBRARIES)])} failed: {first}")

    atomic_write(path, compile_to)


UNUSED_DAYS = 30  # a build no process has loaded for this long is removed when another is made


def prune_builds(kept: Path) -> None:
    """Remove the libraries of the build folder that no process has loaded for UNUSED_DAYS (other
    sources, compilers or flags: every change of the C makes a build of its own), but `kept`. A process
    that still has one loaded keeps its copy: removing a file leaves its open mappings be. The flags
    probed for a compiler (`probed_flags`) go by the same age: probed again, they are the same."""
    limit = time.time() - UNUSED_DAYS * 86400
    for old in [*kept.parent.glob("kernels-*.so"), *kept.parent.glob("kernels-*.flags.json")]:
        try:
            if old != kept and old.stat().st_mtime < limit:
                old.unlink()
        except OSError:  # gone already, or another user's
            pass


@cache
def library() -> NativeKernels | None:
    """The native kernels, built if need be; None where they cannot be (see `unavailable`)."""
    global _why_unavailable
    if os.environ.get("TRIFORM_NATIVE", "1") == "0":
        _why_unavailable = "TRIFORM_NATIVE=0"
        return None
    cc = compiler()
    if cc is None:
        _why_unavailable = f"no C compiler ({os.environ.get('CC') or 'cc'}) on PATH"
        return None
    try:
        default = path = library_path(cc)
        flags = FLAGS
        if not path.exists():  # built before, it was built with FLAGS; else the compiler is asked first
            flags, notes = probed_flags(cc, default)
            path = library_path(cc, flags)
            _build_notes[:] = notes
        for attempt in range(2):  # a file that does not load (cut short, another machine's) is built again
            if not path.exists() or attempt:
                build(cc, path, flags)
                prune_builds(path)
            try:
                kernels = NativeKernels(ctypes.CDLL(str(path)), path)
                os.utime(path)  # its last use, which prune_builds goes by
                if flags != FLAGS:
                    keep_probed(default, flags, _build_notes)
                return kernels
            except (OSError, AttributeError) as error:
                if attempt:
                    raise RuntimeError(f"{path} does not load: {error}") from error
    except (OSError, RuntimeError, subprocess.SubprocessError) as error:
        _why_unavailable = str(error).splitlines()[0]
    return None


def unavailable() -> str:
    """Why `library()` is None: empty where it loaded or was not asked for yet."""
    return _why_unavailable


def build_notes() -> list[str]:
    """What the library was built without, of FLAGS, because the compiler did not take it."""
    return list(_build_notes)
