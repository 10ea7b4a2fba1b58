"""triform's own C kernels (kernels/native/*.c), built on first use by this machine's C compiler, for
this CPU, and loaded with ctypes.

A product of a few rows reads its whole weight to do two multiply-adds per weight read: it is as fast
as that read. The library kernels torch calls there ran at half of the read's speed or less (measured
on an AMD EPYC, 2 threads: 24 products of a 6-layer 384-wide GPT in 3.6 ms by MKL, 3.1 by oneDNN,
against 1.3-1.7 ms to read their weights), so `gemv`, in fp32 and in bf16, is one more candidate of
`kernels/linear.py`: calibration times it beside the others and keeps it only where it is faster.

The build is `$CC` (default `cc`) with -O3 -march=native -fopenmp and the rest of FLAGS, into
$TRIFORM_CACHE/native (default ~/.cache/triform/native), named by a digest of the source, the flags,
the compiler's version and the machine's fingerprint: a new CPU, compiler or source builds anew, and a
file that fails to load is built again once. Compiled after torch is loaded, the library's OpenMP
runtime is torch's own (the same libgomp.so.1), so its threads are torch's threads. Where no compiler
or no OpenMP is found, the kernels are absent (`unavailable()` says why) and calibration chooses
among the library kernels; TRIFORM_NATIVE=0 leaves them out on purpose.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import shutil
import subprocess
from functools import cache
from pathlib import Path

import torch
from torch import Tensor
from torch.profiler import record_function

from triform.io import atomic_write
from triform.kernels.machine import fingerprint

SOURCE = Path(__file__).with_name("native") / "gemv.c"
# -ffp-contract=fast: multiply-adds as FMA instructions, which -std=c99 alone turns off
FLAGS = ("-O3", "-march=native", "-ffp-contract=fast", "-fopenmp", "-shared", "-fPIC", "-std=c99")
BUILD_SECONDS = 120
GEMV_DTYPES = {torch.float32: "f32", torch.bfloat16: "bf16"}  # the kernel for each (x, weight, bias) dtype
_why_unavailable = ""


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


def compiler() -> str | None:
    name = os.environ.get("CC") or "cc"
    return shutil.which(name)


def build_folder() -> Path:
    return Path(os.environ.get("TRIFORM_CACHE") or Path.home() / ".cache" / "triform") / "native"


def library_path(cc: str) -> Path:
    """Where the library built by `cc` for this source and machine lives."""
    version = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout
    identity = json.dumps([SOURCE.read_text(), FLAGS, version, fingerprint()], sort_keys=True)
    return build_folder() / f"gemv-{hashlib.sha256(identity.encode()).hexdigest()[:16]}.so"


def build(cc: str, path: Path) -> None:
    """Compile SOURCE into `path`, atomically: a failed or interrupted build leaves nothing there."""

    def compile_to(temporary: Path) -> None:
        command = [cc, *FLAGS, str(SOURCE), "-o", str(temporary)]
        done = subprocess.run(command, capture_output=True, text=True, timeout=BUILD_SECONDS)
        if done.returncode != 0:
            first = next((line for line in done.stderr.splitlines() if line.strip()), "no message")
            raise RuntimeError(f"{' '.join(command[:-2])} failed: {first}")

    atomic_write(path, compile_to)


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
        path = library_path(cc)
        for attempt in range(2):  # a file that does not load (cut short, another machine's) is built again
            if not path.exists() or attempt:
                build(cc, path)
            try:
                return NativeKernels(ctypes.CDLL(str(path)), path)
            except (OSError, AttributeError) as error:
                if attempt:
                    raise RuntimeError(f"{path} does not load: {error}") from error
    except (OSError, RuntimeError, subprocess.SubprocessError) as error:
        _why_unavailable = str(error).splitlines()[0]
    return None


def unavailable() -> str:
    """Why `library()` is None: empty where it loaded or was not asked for yet."""
    return _why_unavailable
