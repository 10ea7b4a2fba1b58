"""triform's own C kernels: built by this machine's compiler, equal to torch's product to within
rounding, chosen by calibration like any other candidate, and absent, with the reason, where they
cannot be built."""

import json
import math
import os
import re
import shutil
import subprocess
import time

import pytest
import torch
import torch.nn.functional as F

from triform.kernels import attention, native
from triform.kernels import linear as linear_module
from triform.kernels.calibrate import Calibration, set_calibration
from triform.kernels.linear import Linear, rows_of


@pytest.fixture
def fresh_library(monkeypatch, tmp_path):
    """library() built anew under this test's environment, and again for the tests after it."""
    monkeypatch.setenv("TRIFORM_CACHE", str(tmp_path))
    native.library.cache_clear()
    yield tmp_path
    native.library.cache_clear()


def built():
    """The library, which must build wherever a C compiler is on PATH."""
    if native.compiler() is None:
        pytest.skip("no C compiler on PATH: the native kernels are left out and calibration does without")
    kernels = native.library()
    assert kernels is not None, native.unavailable()
    return kernels


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("rows", [1, 2, 3, 5, 8, 16])
@pytest.mark.parametrize(("out", "inner"), [(4, 1), (7, 5), (1154, 384), (96, 1541)])
def test_gemv_computes_torch_s_product(rows, out, inner, threads, dtype):
    kernels = built()
    generator = torch.Generator().manual_seed(rows * out + inner)
    wide = torch.randn(rows, inner + 3, generator=generator).to(dtype)
    x = wide[:, 2 : 2 + inner]  # rows with a stride of their own, as a slice of a fused projection is
    weight = torch.randn(out, inner, generator=generator).to(dtype)
    bias = torch.randn(out, generator=generator).to(dtype)
    exact = F.linear(x.double(), weight.double(), bias.double())  # of the very numbers given
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with_bias, without = kernels.gemv(x, weight, bias), kernels.gemv(x, weight, None)
    finally:
        torch.set_num_threads(before)
    # fp32: the sums' rounding; bf16: summed in fp32, then one rounding to bf16 (8 significant bits)
    tolerance = dict(rtol=1e-5, atol=1e-5 * inner**0.5) if dtype == torch.float32 else dict(rtol=2**-8, atol=1e-4)
    torch.testing.assert_close(with_bias.double(), exact, **tolerance)
    torch.testing.assert_close(without.double(), exact - bias.double(), **tolerance)
    assert with_bias.shape == (rows, out) and with_bias.dtype == dtype


def test_a_layer_runs_gemv_where_calibration_finds_it_fastest(monkeypatch):
    built()
    old = set_calibration(Calibration(timer=lambda name, run: 1.0 if name == "gemv" else 3.0, read_disk=False))
    ran = []
    gemv = native.NativeKernels.gemv
    monkeypatch.setattr(native.NativeKernels, "gemv", lambda self, *args: ran.append(1) or gemv(self, *args))
    try:
        layer, x = Linear(64, 40), torch.randn(2, 3, 64)
        with torch.no_grad():
            expected = F.linear(x, layer.weight, layer.bias)
            torch.testing.assert_close(layer(x), expected)
            torch.testing.assert_close(layer(x), expected)
        assert len(ran) == 3  # timed once, then computed by it at each call
        x.requires_grad_()
        layer(x).sum().backward()  # with autograd the product is torch's (gemv has no backward)
        assert len(ran) == 3 and x.grad is not None
    finally:
        set_calibration(old)


def test_a_build_that_fails_leaves_the_kernels_out_with_the_compiler_s_error(fresh_library, monkeypatch):
    failing = fresh_library / "cc"
    failing.write_text("#!/bin/sh\necho 'cc: error: unrecognized option' >&2\nexit 1\n")
    failing.chmod(0o755)
    monkeypatch.setenv("CC", str(failing))
    assert native.library() is None
    assert "failed: cc: error: unrecognized option" in native.unavailable()
    assert not list((fresh_library / "native").glob("*"))  # nothing half-written
    with torch.no_grad():
        names = Linear(8, 8).inference_kernels(torch.randn(1, 8), torch.float32, False)
    assert "gemv" not in names


def test_without_a_compiler_or_when_switched_off_the_kernels_are_absent(fresh_library, monkeypatch):
    monkeypatch.setenv("CC", "no-such-compiler")
    assert native.library() is None and "no C compiler (no-such-compiler)" in native.unavailable()
    native.library.cache_clear()
    monkeypatch.delenv("CC")
    monkeypatch.setenv("TRIFORM_NATIVE", "0")
    assert native.library() is None and native.unavailable() == "TRIFORM_NATIVE=0"


def test_a_library_file_that_does_not_load_is_built_again(fresh_library):
    if native.compiler() is None:
        pytest.skip("no C compiler on PATH")
    path = native.library_path(native.compiler())
    path.parent.mkdir(parents=True)
    path.write_bytes(b"cut short")  # an interrupted copy, a file from another machine
    kernels = native.library()
    assert kernels is not None, native.unavailable()
    assert path.read_bytes()[:4] == b"\x7fELF" or os.uname().sysname != "Linux"
    x, weight = torch.randn(1, 6), torch.randn(5, 6)
    torch.testing.assert_close(kernels.gemv(x, weight, None), F.linear(x, weight))


def test_under_bf16_autocast_gemv_computes_in_fp32_and_rounds_as_autocast_would():
    built()
    old = set_calibration(Calibration(timer=lambda name, run: 1.0 if name == "gemv" else 3.0, read_disk=False))
    try:
        layer, x = Linear(64, 40), torch.randn(3, 64)
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            y = layer(x)
        assert y.dtype == torch.bfloat16
        exact = F.linear(x.double(), layer.weight.double(), layer.bias.double())
        torch.testing.assert_close(y.double(), exact.bfloat16().double(), rtol=0, atol=0.02)
        assert {choice.kernel for _, choice in set_calibration(old).table()} == {"gemv"}
    finally:
        set_calibration(old)


def test_a_bf16_layer_runs_gemv_in_bf16():
    built()
    old = set_calibration(Calibration(timer=lambda name, run: 1.0 if name == "gemv" else 3.0, read_disk=False))
    try:
        layer, x = Linear(64, 40).to(torch.bfloat16), torch.randn(4, 64).bfloat16()
        with torch.no_grad():
            y = layer(x)
        exact = F.linear(x.double(), layer.weight.double(), layer.bias.double())
        assert y.dtype == torch.bfloat16
        torch.testing.assert_close(y.double(), exact, rtol=2**-8, atol=1e-4)
        assert {choice.kernel for _, choice in set_calibration(old).table()} == {"gemv"}
    finally:
        set_calibration(old)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize(("batch", "heads", "keys", "d"), [(1, 1, 1, 8), (3, 2, 5, 20), (8, 6, 130, 64), (1, 4, 99, 8)])
def test_decode_attention_computes_torch_s_attention(batch, heads, keys, d, threads, dtype):
    kernels = built()
    generator = torch.Generator().manual_seed(keys * d + batch)
    q = torch.randn(batch, heads, 1, d, generator=generator).to(dtype)
    k = torch.randn(batch, heads, keys + 3, d, generator=generator).to(dtype)[:, :, :keys]  # a cache's view
    v = torch.randn(batch, heads, keys, d, generator=generator).to(dtype)
    allowed = torch.rand(batch, 1, 1, keys, generator=generator) > 0.4
    allowed[..., -1] = True
    bias = torch.randn(1, heads, 1, keys, generator=generator)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for mask in (None, allowed, bias):
            additive = None if mask is None else mask.double().log() if mask.dtype == torch.bool else mask.double()
            exact = F.scaled_dot_product_attention(q.double(), k.double(), v.double(), attn_mask=additive)
            ours = kernels.decode_attention(q, k, v, mask, None)
            assert ours.shape == q.shape and ours.dtype == dtype
            tolerance = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=2**-8, atol=1e-3)
            torch.testing.assert_close(ours.double(), exact, **tolerance)
    finally:
        torch.set_num_threads(before)


def test_decode_attention_gives_zeros_where_every_key_is_masked_and_scales_as_asked():
    kernels = built()
    q, k, v = torch.randn(2, 1, 1, 8), torch.randn(2, 1, 3, 8), torch.randn(2, 1, 3, 8)
    mask = torch.tensor([[True, False, True], [False, False, False]]).view(2, 1, 1, 3)
    ours = kernels.decode_attention(q, k, v, mask, 0.5)
    expected = F.scaled_dot_product_attention(q[:1], k[:1], v[:1], attn_mask=mask[:1], scale=0.5)
    torch.testing.assert_close(ours[:1], expected)
    assert torch.equal(ours[1], torch.zeros(1, 1, 8))


def row_quantized_product(x, weight, scales, bias):
    """The int8 product written out: each row rounded to int8 with scale max |x| / 127, the integer
    products summed exactly (float64 holds these sums exactly), then the scales and the bias."""
    top = x.abs().amax(-1, keepdim=True)
    q = torch.round(x * torch.where(top > 0, 127 / top, 0))
    return (q.double() @ weight.double().T).float() * (top / 127) * scales + bias


def built_without(flags: tuple, monkeypatch):
    """The library built with x86 instruction sets switched off (-mno-...), under fresh_library."""
    if native.compiler() is None:
        pytest.skip("no C compiler on PATH")
    if flags:
        probe = os.popen(f"{native.compiler()} {' '.join(flags)} -x c -c -o /dev/null /dev/null 2>&1").read()
        if probe.strip():
            pytest.skip(f"the compiler takes no x86 instruction-set flags here: {probe.strip()[:80]}")
        monkeypatch.setattr(native, "FLAGS", native.FLAGS + flags)
    return built()


BF16_INSTRUCTION_SETS = {"native": (), "without-avx512-bf16": ("-mno-avx512bf16",)}


@pytest.mark.parametrize("instructions", BF16_INSTRUCTION_SETS)
def test_bf16_gemv_computes_torch_s_product_with_and_without_avx512_bf16(instructions, fresh_library, monkeypatch):
    """bf16 pairs multiplied by vdpbf16ps where the CPU has it (bf16.h), widened to fp32 otherwise."""
    kernels = built_without(BF16_INSTRUCTION_SETS[instructions], monkeypatch)
    generator = torch.Generator().manual_seed(0)
    for rows, inner, out in [(1, 1541, 96), (3, 384, 70), (6, 100, 9), (1, 5, 4)]:
        wide = torch.randn(rows, inner + 3, generator=generator).bfloat16()
        x = wide[:, 2 : 2 + inner]
        weight = torch.randn(out, inner, generator=generator).bfloat16()
        bias = torch.randn(out, generator=generator).bfloat16()
        exact = F.linear(x.double(), weight.double(), bias.double())
        torch.testing.assert_close(kernels.gemv(x, weight, bias).double(), exact, rtol=2**-8, atol=1e-4)


def test_bf16_training_attention_is_offered_exactly_where_the_cpu_has_bf16_pairs(fresh_library, monkeypatch):
    """Built without AVX512-BF16 the library has the fp32 training attention alone (its bf16 functions
    say so), and kernels/attention.py offers no native candidate for bf16 operands."""
    kernels = built_without(("-mno-avx512bf16",), monkeypatch)
    assert kernels.training_attention_dtypes == (torch.float32,)
    q = torch.randn(1, 2, 8, 16).bfloat16()
    assert "native" not in attention.candidates(q, q, q, None, 0.0)
    assert "native" in attention.candidates(q.float(), q.float(), q.float(), None, 0.0)


# The instruction sets int8.h chooses between, by what the compiler may use: this CPU's best (VNNI where
# it has it), AVX2's 16-bit products, plain C.
INSTRUCTION_SETS = {"native": (), "without-vnni": ("-mno-avx512vnni", "-mno-avxvnni"), "without-avx2": ("-mno-avx2",)}


@pytest.mark.parametrize("instructions", INSTRUCTION_SETS)
def test_int8_linear_sums_the_int8_products_exactly_on_every_instruction_set(instructions, fresh_library, monkeypatch):
    """The same results, to fp32 rounding of the final scaling, whichever instructions sum the products:
    lengths of whole vector steps and with remainders, 1 to 8 rows (groups of four and the rest), outputs
    in fours (int8.h's tiles) and the rest."""
    kernels = built_without(INSTRUCTION_SETS[instructions], monkeypatch)
    generator = torch.Generator().manual_seed(0)
    shapes = [(1, 64, 5), (1, 100, 7), (3, 96, 6), (4, 32, 9), (5, 200, 3), (6, 1541, 11), (8, 384, 12), (1, 33, 4)]
    for rows, inner, out in shapes:
        x = torch.randn(rows, inner, generator=generator)
        weight = torch.randint(-127, 128, (out, inner), dtype=torch.int8, generator=generator)
        scales, bias = torch.rand(out, generator=generator), torch.randn(out, generator=generator)
        expected = row_quantized_product(x, weight, scales, bias)
        got = kernels.int8_linear(x, weight, scales, bias)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5 * expected.abs().max().item())


def test_int8_linear_gives_the_bias_for_a_row_of_zeros_and_nan_for_a_row_with_an_infinity_or_a_nan():
    kernels = built()
    x = torch.zeros(5, 43)  # 43: five whole vectors of eight and a tail of three
    x[1, 7] = float("-inf")
    x[2] = torch.linspace(-1, 1, 43)
    x[3, 41], x[4, 3] = float("nan"), float("nan")  # in the tail, in a vector
    weight = torch.ones(2, 43, dtype=torch.int8)
    got = kernels.int8_linear(x, weight, torch.ones(2), torch.tensor([0.5, -0.5]))
    assert got[0].tolist() == [0.5, -0.5]
    assert got[[1, 3, 4]].isnan().all()
    assert got[2].isfinite().all()


# transpose.c's whole tiles: in 512-bit registers, in 256-bit ones (32-bit values only), element by element.
TRANSPOSE_SETS = {
    "native": (),
    "without-avx512": ("-mno-avx512f",),
    "without-avx": ("-mno-avx", "-mno-avx2", "-mno-avx512f"),
}


@pytest.mark.parametrize("instructions", TRANSPOSE_SETS)
def test_transpose_writes_every_element_on_every_instruction_set(instructions, fresh_library, monkeypatch):
    """Whole 16 x 16 tiles and partial ones at the edges, rows of a wider stride, 1 and 2 threads,
    4- and 2-byte values, every bit pattern kept (NaNs' too: the values are moved, not computed)."""
    kernels = built_without(TRANSPOSE_SETS[instructions], monkeypatch)
    generator = torch.Generator().manual_seed(0)
    for rows, columns in [(16, 16), (37, 53), (256, 48), (33, 16), (16, 33), (1, 1), (5, 300)]:
        for dtype in (torch.int32, torch.int16):
            wide = torch.randint(-(2**15), 2**15, (rows, columns + 3), generator=generator).to(dtype)
            x = wide[:, 1 : 1 + columns]
            for threads in (1, 2):
                monkeypatch.setattr(torch, "get_num_threads", lambda threads=threads: threads)  # what it passes
                out = kernels.transpose_into(x, torch.full((columns, rows), -1, dtype=dtype))
                assert torch.equal(out, x.t())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_transposed_operand_is_laid_out_in_rows_in_a_buffer_kept_for_the_next_call(dtype, monkeypatch):
    built()
    x = torch.randn(37, 70).to(dtype)
    first = rows_of(x.t())
    assert first.is_contiguous() and torch.equal(first, x.t())
    again = rows_of(torch.randn(20, 50).to(dtype).t())  # smaller: the same memory
    assert again.data_ptr() == first.data_ptr() and again.shape == (50, 20)
    for untouched in (x, x[:, ::2], x.t()[::2]):  # rows already, or not a transposed matrix
        assert rows_of(untouched) is untouched
    monkeypatch.setattr(linear_module, "SCRATCH_BYTES", x.numel() * x.element_size())
    large = torch.randn(60, 50).to(dtype)
    alone = rows_of(large.t())  # over the limit: its own memory, the kept buffer left as it was
    assert torch.equal(alone, large.t()) and alone.data_ptr() != first.data_ptr()
    assert rows_of(x.t()).data_ptr() == first.data_ptr()


@pytest.mark.parametrize("instructions", ["native", "without-avx512"])
def test_the_training_kernels_compute_the_same_with_and_without_avx512(instructions, fresh_library, monkeypatch):
    """16 fp32 lanes with AVX512, 8 without (simd.h's `wide`): attention forward and backward, the
    one-pass cross-entropy, against torch's."""
    assert_training_kernels_compute_torch_s(
        built_without(() if instructions == "native" else ("-mno-avx512f",), monkeypatch)
    )


# Compilers the C is checked with, where they are installed: this machine's, Clang (Apple's compiler's
# family), and GCC for 64-bit Arm (Graviton, Ampere, a Raspberry Pi), whose build uses the vector code
# simd.h writes for any CPU. Arm's build is compiled, not run: no test here runs on an Arm CPU.
CHECKED_COMPILERS = {
    "this machine's": (None, "-march=native"),
    "clang": ("clang", "-march=native"),
    "gcc for aarch64": ("aarch64-linux-gnu-gcc", "-march=armv8.2-a+bf16"),
}


@pytest.mark.parametrize("compiler", CHECKED_COMPILERS)
def test_the_kernels_compile_without_a_warning(compiler, tmp_path):
    name, tuning = CHECKED_COMPILERS[compiler]
    found = native.compiler() if name is None else shutil.which(name)
    if found is None:
        pytest.skip(f"{name or 'no C compiler'} is not installed here")
    flags = [tuning if flag == "-march=native" else flag for flag in native.FLAGS]
    command = [found, *flags, "-Wall", "-Wextra", *map(str, native.SOURCES), "-o", str(tmp_path / "k.so"), "-lm"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=native.BUILD_SECONDS)
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr[:2000]


def compiler_refusing(folder, refused: tuple[str, ...]) -> str:
    """A compiler that refuses the flags `refused`, as Apple's Clang refuses -fopenmp, and is this
    machine's own otherwise."""
    real = native.compiler()
    if real is None or os.name != "posix":
        pytest.skip("no C compiler on PATH, or no POSIX shell for the stand-in")
    script = folder / "cc-refusing"
    cases = "|".join(refused)
    script.write_text(
        "#!/bin/sh\n"
        f'for a in "$@"; do case "$a" in {cases})\n'
        """  echo "clang: error: unsupported option '$a'" >&2; exit 1;;\n"""
        "esac; done\n"
        f'exec {real} "$@"\n'
    )
    script.chmod(0o755)
    return str(script)


@pytest.mark.parametrize(
    "refused", [("-fopenmp",), ("-march=native",), ("-march=native", "-mcpu=native", "-fopenmp")], ids="+".join
)
def test_a_compiler_that_refuses_openmp_or_native_tuning_builds_the_kernels_without_them(
    refused, fresh_library, monkeypatch
):
    """Apple's Clang has no -fopenmp, and some Clangs on Arm refuse -march=native: the kernels are
    built with what stands in (STAND_INS), say so, and compute what they compute with it."""
    monkeypatch.setenv("CC", compiler_refusing(fresh_library, refused))
    kernels = built()
    notes = native.build_notes()
    said = [re.match(r"cc-refusing does not take (\S+): ", note) for note in notes]
    assert [flag for flag in native.STAND_INS if flag in refused] == [match and match[1] for match in said]
    assert ("each kernel on one thread" in " ".join(notes)) == ("-fopenmp" in refused)
    if os.uname().sysname == "Linux":  # an ELF library names the OpenMP runtime's entry points it calls
        assert (b"GOMP_parallel" in kernels.path.read_bytes()) == ("-fopenmp" not in refused)
    assert_training_kernels_compute_torch_s(kernels)
    x, weight, bias = torch.randn(3, 70), torch.randn(9, 70), torch.randn(9)
    torch.testing.assert_close(kernels.gemv(x, weight, bias), F.linear(x, weight, bias), rtol=1e-5, atol=1e-5)
    wide = torch.randn(37, 45)
    assert torch.equal(kernels.transpose_into(wide, torch.empty(45, 37)), wide.t())
    torch.testing.assert_close(kernels.activation_forward("gelu", wide), F.gelu(wide), rtol=1e-6, atol=1e-6)
    native.library.cache_clear()  # another process: finds the library built with the stand-ins
    monkeypatch.setattr(native, "takes", lambda *_: pytest.fail("the compiler was probed again"))
    again = native.library()
    assert again is not None and again.path == kernels.path and native.build_notes() == notes


def test_flags_kept_from_a_probe_that_was_cut_short_are_probed_again(fresh_library, monkeypatch):
    monkeypatch.setenv("CC", compiler_refusing(fresh_library, ("-fopenmp",)))
    cc = native.compiler()
    kept = native.library_path(cc).with_suffix(".flags.json")
    kept.parent.mkdir(parents=True)
    kept.write_text('{"flags": ["-O3"')  # a write cut short
    probes = []
    monkeypatch.setattr(native, "takes", lambda cc, flag, real=native.takes: probes.append(flag) or real(cc, flag))
    kernels = built()
    assert "-fopenmp" in probes and b"GOMP_parallel" not in kernels.path.read_bytes()
    assert json.loads(kept.read_text())["flags"] == [flag for flag in native.FLAGS if flag != "-fopenmp"]


def assert_training_kernels_compute_torch_s(kernels) -> None:
    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 21, 32, generator=generator, requires_grad=True) for _ in range(3))
    grad = torch.randn(2, 3, 21, 32, generator=generator)
    out, lse = kernels.attention_forward(q, k, v, None, True, 32**-0.5)
    gradients = kernels.attention_backward(q, k, v, None, out, lse, grad, True, 32**-0.5)
    expected = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    for got, want in zip(gradients, torch.autograd.grad(expected, (q, k, v), grad)):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    logits, targets = torch.randn(5, 1003, generator=generator), torch.randint(0, 1003, (5,), generator=generator)
    gradient = torch.empty_like(logits)
    total = kernels.cross_entropy(logits, targets, torch.full((5,), 0.2), 0.0, gradient)
    assert total == pytest.approx(float(F.cross_entropy(logits, targets)), rel=1e-5)


def exact_activation(kind: str, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(act(x), act'(x)) in fp64, the textbook forms."""
    x = x.double().requires_grad_()
    if kind == "gelu":
        y = 0.5 * x * torch.erfc(-x / math.sqrt(2))
    elif kind == "gelu_tanh":
        y = 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
    elif kind == "silu":
        y = x * torch.sigmoid(x)
    else:
        y = torch.relu(x)
    (slope,) = torch.autograd.grad(y, x, torch.ones_like(y))
    return y.detach(), slope


@pytest.mark.parametrize("instructions", TRANSPOSE_SETS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_activations_compute_the_textbook_functions_on_every_instruction_set(
    dtype, instructions, fresh_library, monkeypatch
):
    """AVX512's written-out kernels (16 lanes: vscalefps, vrcp14ps, masked tails, bf16 rounded in the
    registers) and the vectorized loops of other CPUs, against the exact functions of the same inputs:
    rows of 16 values and of 1 to 15 more, a gate's stride, the tails, ±0 and NaN."""
    kernels = built_without(TRANSPOSE_SETS[instructions], monkeypatch)
    generator = torch.Generator().manual_seed(3)
    for n in (16, 7, 37, 1541):
        wide = torch.randn(5, 2 * n, generator=generator) * 4
        wide[0, :8] = torch.tensor([0.0, -0.0, 1e-8, -1e-8, 12.0, -12.0, 40.0, -40.0])  # some in the gate's half
        wide[1, :4] = torch.tensor([1e4, -1e4, 1e-30, -1e-30])
        x = wide.to(dtype)[:, :n]  # rows of stride 2n
        grad = torch.randn(5, n, generator=generator).to(dtype)
        for kind in ("gelu", "gelu_tanh", "silu", "relu"):
            values, slope = exact_activation(kind, x)
            forward, backward = kernels.activation_forward(kind, x), kernels.activation_backward(kind, x, grad)
            expected_backward = grad.double() * slope
            if dtype == torch.float32:  # A&S's erf is within 1.5e-7, the rest within a few ulps
                torch.testing.assert_close(forward.double(), values, rtol=4e-6, atol=1e-6)
                torch.testing.assert_close(backward.double(), expected_backward, rtol=4e-6, atol=1e-6)
            else:  # the fp32 result rounded to bf16: within one of its steps of the exact one, rounded
                torch.testing.assert_close(forward.double(), values.bfloat16().double(), rtol=2**-7, atol=1e-6)
                torch.testing.assert_close(
                    backward.double(), expected_backward.bfloat16().double(), rtol=2**-7, atol=1e-6
                )
    nan = torch.full((1, 19), float("nan")).to(dtype)
    for kind in ("gelu", "gelu_tanh", "silu", "relu"):
        assert kernels.activation_forward(kind, nan).isnan().all(), kind  # a NaN is not hidden
    assert kernels.activation_backward("gelu", nan, torch.ones_like(nan)).isnan().all()


def test_a_new_build_removes_the_builds_no_process_loaded_for_a_month(fresh_library):
    if native.compiler() is None:
        pytest.skip("no C compiler on PATH")
    folder = fresh_library / "native"
    folder.mkdir()
    month = native.UNUSED_DAYS * 86400
    stale, recent, other = folder / "kernels-0000.so", folder / "kernels-1111.so", folder / "notes.txt"
    stale_flags = folder / "kernels-2222.flags.json"
    for path, age in ((stale, month + 3600), (recent, month - 3600), (other, 2 * month), (stale_flags, month + 1)):
        path.write_bytes(b"an old build")
        os.utime(path, (time.time() - age, time.time() - age))
    kernels = built()
    assert not stale.exists() and not stale_flags.exists() and recent.exists() and other.exists()
    assert kernels.path.exists()
    os.utime(kernels.path, (time.time() - 2 * month, time.time() - 2 * month))
    native.library.cache_clear()
    again = built()  # loaded, not built: its use is recorded, nothing is removed
    assert again.path == kernels.path and time.time() - again.path.stat().st_mtime < 60 and recent.exists()
