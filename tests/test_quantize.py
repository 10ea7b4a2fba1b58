"""int8 weights (kernels/int8.py): the int8 product is the float one within quantization error on every
architecture, tied embeddings stay float, every strategy generates, and the flag reaches the CLI."""

import pytest
import torch
import torch.nn.functional as F
from conftest import SPECIALS, VARIANTS, random_ids, tiny_config
from text_models import random_model, single_thread, word_setup  # noqa: F401

from triform.checkpoint import save_model
from triform.cli import main
from triform.errors import TriformError
from triform.generate import GenerationConfig, TextGenerator, generate_ids, resolve_layout
from triform.kernels import calibrate as calibrate_module
from triform.kernels import int8 as int8_kernels
from triform.kernels import native
from triform.kernels.calibrate import Caches, Calibration, FromMemory, set_calibration
from triform.kernels.int8 import FEW_ROWS, NATIVE_MAX_ROWS, Int8Linear, quantize, quantize_rows
from triform.models import build_model

pytestmark = pytest.mark.usefixtures("single_thread")


KERNELS = ("fp32", "fbgemm", "native", "dequantized")


@pytest.fixture(params=KERNELS)
def kernels(request, monkeypatch):
    """Calibration whose timer makes this kernel the fastest. The tiny test matrices keep a fp32 copy
    ("fp32"); for the others the size limit is 0, so that they take fbgemm's, triform's or the
    dequantized product."""
    if request.param == "native" and native.library() is None:
        pytest.skip(f"triform's kernels are not built here: {native.unavailable()}")
    if request.param != "fp32":
        monkeypatch.setattr(int8_kernels, "FBGEMM_MIN_WEIGHTS", 0)
    fastest = request.param
    old = set_calibration(Calibration(timer=lambda name, run: 0.0 if name == fastest else 1.0, read_disk=False))
    yield request.param
    set_calibration(old)


# Largest logit difference allowed, as a share of the largest fp32 logit's magnitude: 8-bit weights
# and 8-bit activations each round to 1/254 of their row's (tensor's) range.
LOGIT_TOLERANCE = 0.05


def test_rows_are_quantized_symmetrically_within_half_a_step():
    weight = torch.randn(48, 32)
    weight[3] = 0.0  # a zero row keeps a finite scale
    quantized, scales = quantize_rows(weight)
    assert quantized.dtype == torch.int8 and quantized.abs().max() <= 127
    assert torch.all(quantized.abs().amax(1)[torch.arange(48) != 3] == 127)
    error = (quantized.float() * scales[:, None] - weight).abs()
    assert torch.all(error <= scales[:, None] / 2 + 1e-7)


@pytest.mark.parametrize("rows", [1, 8, FEW_ROWS + 1, 300])
def test_the_int8_linear_computes_the_float_product_on_every_kernel(rows, kernels):
    linear = torch.nn.Linear(64, 96)
    int8 = Int8Linear(linear)
    x = torch.randn(rows, 64)
    if kernels not in int8.candidates(rows):
        pytest.skip(f"{kernels} is no candidate for {rows} rows")
    with torch.no_grad():
        expected = F.linear(x, int8.dequantized(torch.float32), linear.bias)
        exact = linear(x)
        y = int8(x)
    assert int8.kernel(x) == kernels
    scale = exact.abs().max()
    assert y.shape == (rows, 96) and y.dtype == torch.float32
    assert (y - exact).abs().max() <= 0.03 * scale
    if kernels in ("fp32", "dequantized"):  # no activation rounding: the int8 weights' product
        assert (y - expected).abs().max() <= 0.01 * scale


def test_each_kernel_is_a_candidate_exactly_where_it_applies(monkeypatch):
    small = Int8Linear(torch.nn.Linear(64, 96))
    monkeypatch.setattr(int8_kernels, "FBGEMM_MIN_WEIGHTS", 0)
    large = Int8Linear(torch.nn.Linear(64, 96))
    native_kernel = ("native",) if native.library() is not None else ()
    assert small.candidates(1) == ("fp32", "fbgemm", *native_kernel)
    assert large.candidates(NATIVE_MAX_ROWS) == ("fbgemm", *native_kernel)
    assert large.candidates(FEW_ROWS) == ("fbgemm",)
    assert large.candidates(FEW_ROWS + 1) == ("fbgemm", "dequantized")
    assert small.candidates(FEW_ROWS + 1) == ("fp32", "fbgemm", "dequantized")


def choices(layer: Int8Linear, timings: dict[str, float], rows: int = 1, timed: list | None = None) -> str:
    """The kernel `layer` takes for `rows` rows under a new calibration with these timings; a second
    call, as the next decoding step's, times nothing."""
    timed = [] if timed is None else timed

    def timer(name, run):
        timed.append((name, run))
        return timings[name]

    old = set_calibration(Calibration(timer=timer, read_disk=False))
    try:
        with torch.no_grad():
            layer(torch.randn(rows, layer.in_features))
            count = len(timed)
            layer(torch.randn(rows, layer.in_features))
        assert len(timed) == count
        return layer.kernel(torch.randn(rows, layer.in_features))
    finally:
        set_calibration(old)


def test_a_few_rows_take_the_int8_kernel_measured_fastest(monkeypatch):
    if native.library() is None:
        pytest.skip(f"triform's kernels are not built here: {native.unavailable()}")
    monkeypatch.setattr(int8_kernels, "FBGEMM_MIN_WEIGHTS", 0)
    layer = Int8Linear(torch.nn.Linear(64, 96))
    timed: list = []
    assert choices(layer, {"fbgemm": 2.0, "native": 1.0}, timed=timed) == "native"
    assert {name for name, _ in timed} == {"fbgemm", "native"}
    assert choices(Int8Linear(torch.nn.Linear(64, 96)), {"fbgemm": 1.0, "native": 2.0}) == "fbgemm"
    # above NATIVE_MAX_ROWS only fbgemm is a candidate: chosen without timing
    many: list = []
    assert choices(layer, {"fbgemm": 2.0, "native": 1.0}, rows=NATIVE_MAX_ROWS + 1, timed=many) == "fbgemm"
    assert many == []


def test_many_rows_take_the_product_measured_fastest_fbgemms_or_the_dequantized_one(monkeypatch):
    monkeypatch.setattr(int8_kernels, "FBGEMM_MIN_WEIGHTS", 0)
    rows = FEW_ROWS + 1
    timed: list = []
    layer = Int8Linear(torch.nn.Linear(64, 96))
    assert choices(layer, {"fbgemm": 2.0, "dequantized": 1.0}, rows=rows, timed=timed) == "dequantized"
    assert {name for name, _ in timed} == {"fbgemm", "dequantized"}
    assert choices(Int8Linear(torch.nn.Linear(64, 96)), {"fbgemm": 1.0, "dequantized": 2.0}, rows=rows) == "fbgemm"


def test_where_triforms_kernels_are_absent_fbgemm_is_the_only_candidate(monkeypatch):
    monkeypatch.setattr(int8_kernels, "FBGEMM_MIN_WEIGHTS", 0)
    monkeypatch.setattr(native, "library", lambda: None)
    timed: list = []
    assert choices(Int8Linear(torch.nn.Linear(64, 96)), {"fbgemm": 2.0, "native": 1.0}, timed=timed) == "fbgemm"
    assert timed == []


def test_a_large_int8_weight_is_timed_from_memory(monkeypatch):
    if native.library() is None:
        pytest.skip(f"triform's kernels are not built here: {native.unavailable()}")
    monkeypatch.setattr(Caches, "empty", lambda self: None)
    monkeypatch.setattr(calibrate_module, "last_level_cache_bytes", lambda: 32 * 2**20)  # any machine's
    timed: list = []
    choices(Int8Linear(torch.nn.Linear(384, 8192)), {"fbgemm": 2.0, "native": 1.0}, timed=timed)  # 3 MB
    assert timed and all(isinstance(run, FromMemory) for _, run in timed)


def test_triforms_int8_kernel_gives_each_row_the_result_it_has_alone(monkeypatch):
    """Each row's activations get their own scale and the integer sums are exact: a row's result does
    not depend on the other rows of its call, unlike fbgemm's, which share one scale."""
    if native.library() is None:
        pytest.skip(f"triform's kernels are not built here: {native.unavailable()}")
    linear = torch.nn.Linear(200, 96)
    x = torch.randn(7, 200)
    x[0] *= 100  # a row of large activations beside small ones
    layer = Int8Linear(linear)
    with torch.no_grad():
        together = layer.run("native", x)
        alone = torch.cat([layer.run("native", x[i : i + 1]) for i in range(7)])
        exact = linear(x)
    assert torch.equal(together, alone)
    error = (together - exact).abs().amax(1) / exact.abs().amax(1)
    assert error.max() <= 0.03


def test_activations_go_in_7_bits_exactly_where_8_would_clip_and_both_compute_the_product(monkeypatch):
    """fbgemm without VNNI clips pairs of 8-bit products in 16 bits; the probe finds out, and the
    7-bit path it then takes is tried here on every CPU."""
    linear = torch.nn.Linear(64, 96)
    x = torch.randn(8, 64)
    with torch.no_grad():
        exact = linear(x)
        int8 = Int8Linear(linear)
        assert int8.reduce_range == int8_kernels.activations_clip()
        y = torch.ops.quantized.linear_dynamic(x, int8.packed, False)
        clipped = (y - exact).abs().max() > 0.1 * exact.abs().max()
        assert clipped == int8.reduce_range  # 7 bits only where 8 give a wrong product
        monkeypatch.setattr(int8_kernels, "activations_clip", lambda: True)
        monkeypatch.setattr(int8_kernels, "FBGEMM_MIN_WEIGHTS", 0)  # fbgemm's path even for this small matrix
        reduced = Int8Linear(linear)
        assert reduced.fp32_weight is None
        assert reduced.reduce_range and (reduced(x) - exact).abs().max() <= 0.03 * exact.abs().max()


def test_under_autocast_the_result_is_bf16_as_for_a_linear_layer():
    int8 = Int8Linear(torch.nn.Linear(16, 8))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert int8(torch.randn(2, 3, 16)).dtype == torch.bfloat16


def logits(model, arch, ids):
    if arch == "encoder-decoder":
        return model(ids, ids[:, :5])
    return model(ids, "causal")


@pytest.mark.parametrize("arch", ["stack", "encoder-decoder"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_int8_logits_are_within_tolerance_of_fp32(arch, variant, kernels):
    torch.manual_seed(0)
    model = build_model(tiny_config(arch, **VARIANTS[variant])).eval()
    ids = random_ids(2, 12)
    with torch.no_grad():
        reference = logits(model, arch, ids)
        int8 = logits(quantize(model), arch, ids)
    assert (int8 - reference).abs().max() <= LOGIT_TOLERANCE * reference.abs().max()


@pytest.mark.parametrize("arch", ["stack", "encoder-decoder"])
@pytest.mark.parametrize("variant", ["learned-pre-layernorm", "sinusoidal-post", "grouped-query-qwen"])
def test_an_int8_models_kv_cache_is_bf16_and_its_steps_match_its_full_forward(arch, variant, kernels):
    """int8 weights keep the KV cache in bf16 (kernels/int8.py's `cache_dtype`): one token a call
    through it, whichever kernels run, gives the logits of the int8 model's own full pass within
    bf16's rounding of the keys and values; a float model's cache stays in its dtype."""
    model = build_model(tiny_config(arch, **VARIANTS[variant])).eval()
    assert model.new_cache(1)[0].keys.dtype == torch.float32
    quantize(model)
    ids = random_ids(2, 10)
    with torch.no_grad():
        if arch == "stack":
            full = model(ids, "causal")
            cache = model.new_cache(2)
            steps = [model(ids[:, t : t + 1], "causal", cache=cache) for t in range(ids.shape[1])]
        else:
            source = random_ids(2, 7, generator_seed=1)
            full, memory, cache = model(source, ids), model.encode(source), model.new_cache(2)
            steps = [model.decode(ids[:, t : t + 1], memory, cache=cache) for t in range(ids.shape[1])]
    assert cache[0].keys.dtype == torch.bfloat16
    assert arch == "stack" or cache[0].cross[0].dtype == torch.bfloat16
    assert (torch.cat(steps, 1) - full).abs().max() <= LOGIT_TOLERANCE * full.abs().max()


def test_a_tied_head_gets_its_own_int8_copy_and_the_embedding_stays_float():
    model = build_model(tiny_config("stack", tie_embeddings=True)).eval()
    embedding = model.stack.embeddings.token.weight
    before = embedding.detach().clone()
    quantize(model)
    assert isinstance(model.head.projection, Int8Linear)
    assert model.stack.embeddings.token.weight is embedding and torch.equal(embedding, before)
    assert embedding.dtype == torch.float32
    assert not any(isinstance(m, torch.nn.Linear) for m in model.modules())


@pytest.mark.parametrize("training", [False, True])
def test_each_int8_layer_takes_the_mode_of_the_layer_it_replaces(training):
    model = quantize(build_model(tiny_config("stack")).train(training))
    assert all(module.training is training for module in model.modules())


STRATEGIES = {
    "greedy": GenerationConfig(max_new_tokens=6),
    "sample": GenerationConfig(max_new_tokens=6, do_sample=True, seed=1, num_return_sequences=2),
    "beam": GenerationConfig(max_new_tokens=6, num_beams=3),
}


@pytest.mark.parametrize("arch, pattern", [("stack", "causal"), ("stack", "prefix"), ("encoder-decoder", None)])
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_quantized_model_generates_with_every_strategy(arch, pattern, strategy, kernels):
    model = quantize(build_model(tiny_config(arch)).eval())
    objective = "seq2seq" if pattern == "prefix" else None
    layout = resolve_layout(arch, SPECIALS, objective, pattern)
    rows = generate_ids(model, layout, [[30, 31, 32], [40, 41]], STRATEGIES[strategy])
    assert rows and all(0 < len(r.tokens) <= 6 or r.finish_reason == "eos" for r in rows)


def test_an_unknown_scheme_is_refused_by_name():
    with pytest.raises(TriformError, match="quantize: unknown scheme 'int3'; expected one of int8"):
        quantize(build_model(tiny_config()), "int3")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("quantized")
    tokenizer, specials = word_setup()
    save_model(random_model("stack", tokenizer), root / "gpt", specials=specials, tokenizer=tokenizer)
    save_model(random_model("encoder-decoder", tokenizer), root / "mt", specials=specials, tokenizer=tokenizer)
    bert = random_model("stack", tokenizer)
    save_model(bert, root / "bert", specials=specials, tokenizer=tokenizer, extra={"objective": "mlm"})
    return root / "gpt"


def test_the_cli_flag_gives_the_python_apis_int8_output(folder, capsys):
    argv = ["generate", "--model", str(folder), "one two three", "--max_new_tokens", "5", "--quantize", "int8"]
    assert main(argv) == 0
    expected = TextGenerator.load(folder, quantize="int8").generate("one two three", max_new_tokens=5).text
    assert capsys.readouterr().out == expected + "\n"
    assert isinstance(TextGenerator.load(folder, quantize="int8").model.head.projection, Int8Linear)


def test_the_cli_names_an_unknown_scheme(folder, capsys):
    assert main(["generate", "--model", str(folder), "one", "--quantize", "int2"]) != 0
    assert "quantize: unknown scheme 'int2'" in capsys.readouterr().err


def test_translate_and_fill_mask_take_the_flag_too(folder, capsys):
    mt, bert = str(folder.parent / "mt"), str(folder.parent / "bert")
    assert main(["translate", "--model", mt, "one two", "--max_new_tokens", "4", "--quantize", "int8"]) == 0
    expected = TextGenerator.load(mt, quantize="int8").generate("one two", max_new_tokens=4, num_beams=4)
    assert capsys.readouterr().out == expected.text + "\n"
    assert main(["fill-mask", "--model", bert, "one [MASK] three", "--quantize", "int8", "--jsonl"]) == 0
    assert '"probability"' in capsys.readouterr().out
