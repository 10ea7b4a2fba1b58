"""A compiled decoding step (`GenerationConfig.compile`) decodes what the eager one decodes, and keeps
this machine's kernel choices for its products."""

import os
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import SPECIALS, tiny_config
from text_models import single_thread  # noqa: F401  (a fixture)

from triform.generate import GenerationConfig, generate_ids, resolve_layout
from triform.kernels.calibrate import Calibration, calibration, set_calibration
from triform.kernels.linear import Linear, register_layers
from triform.models import build_model

# torch.compile's inductor writes C++ for the CPU: the condition README states for --compile.
needs_compiler = pytest.mark.skipif(
    not any(shutil.which(name) for name in ("g++", "c++", "clang++")), reason="no C++ compiler for inductor"
)
pytestmark = [pytest.mark.usefixtures("single_thread"), needs_compiler]

PROMPTS = [[30, 31, 32], [40, 41, 42, 43, 44, 45, 46], [50]]


def build(arch, seed=0, **changes):
    torch.manual_seed(seed)
    return build_model(tiny_config(arch, **changes)).eval()


@pytest.mark.parametrize("arch", ["stack", "encoder-decoder"])
def test_compiled_steps_decode_the_same_tokens_greedy_and_beam(arch):
    """Prompts of different lengths (a stack's padded on the left: a padding mask at every step),
    rows finishing early and leaving the batch, beams reordered: the same tokens as eager."""
    model = build(arch, position="rotary")
    layout = resolve_layout(arch, SPECIALS)
    for config in (
        GenerationConfig(max_new_tokens=7, precision="fp32", repetition_penalty=1.3),
        GenerationConfig(max_new_tokens=5, precision="fp32", num_beams=3, num_return_sequences=2),
    ):
        eager = generate_ids(model, layout, PROMPTS, config)
        compiled = generate_ids(model, layout, PROMPTS, config.replace(compile=True))
        assert [(r.tokens, r.finish_reason) for r in compiled] == [(r.tokens, r.finish_reason) for r in eager]
        assert [r.score for r in compiled] == pytest.approx([r.score for r in eager], abs=1e-4)


def test_another_model_of_the_class_reuses_the_compiled_step():
    """The weights are inputs of the compiled graph: a second model of the same shape compiles
    nothing new and decodes its own tokens, not the first model's."""
    layout = resolve_layout("stack", SPECIALS)
    config = GenerationConfig(max_new_tokens=6, precision="fp32", compile=True)
    first, second = build("stack", seed=1, n_layers=1), build("stack", seed=2, n_layers=1)
    generate_ids(first, layout, PROMPTS, config)
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    compiled = generate_ids(second, layout, PROMPTS, config)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == graphs
    eager = generate_ids(second, layout, PROMPTS, config.replace(compile=False))
    assert [r.tokens for r in compiled] == [r.tokens for r in eager]


def test_a_compiled_layer_keeps_its_measured_kernel():
    """Inside torch.compile a no-grad product is the layer's own measured product (one opaque
    operator), not inductor's choice: its shape class is timed and recorded as eager's would be."""
    layer = Linear(48, 80)
    register_layers(layer)
    x = torch.randn(3, 48)
    with torch.no_grad():
        expected = torch.nn.functional.linear(x, layer.weight, layer.bias)
        got = torch.compile(layer, dynamic=False)(x)
    torch.testing.assert_close(got, expected)
    recorded = [key for key in calibration().choices if key[:2] == ("linear", "x·Wᵀ no-grad") and key[4:6] == (48, 80)]
    assert recorded, "the compiled layer did not run its measured product"


def test_an_int8_model_decodes_the_same_tokens_compiled():
    """With the kernels eager takes for the tiny model's products (each the one calibration chooses,
    here its fp32 copy, and its blocks' own modules, not the fused step, which rounds activations to
    int8), the compiled steps decode the same tokens."""
    from triform.kernels.int8 import quantize

    model = quantize(build("stack", seed=3), "int8")
    layout = resolve_layout("stack", SPECIALS)
    config = GenerationConfig(max_new_tokens=6, precision="fp32")
    preferred = {"fp32", "modules"}
    old = set_calibration(Calibration(timer=lambda name, run: 0.0 if name in preferred else 1.0, read_disk=False))
    try:
        eager = generate_ids(model, layout, PROMPTS, config)
        compiled = generate_ids(model, layout, PROMPTS, config.replace(compile=True))
    finally:
        set_calibration(old)
    assert [r.tokens for r in compiled] == [r.tokens for r in eager]


def test_an_int8_product_compiles_into_one_graph_without_breaks():
    """fbgemm's packed weight is no tensor: without its own operator dynamo breaks the graph at every
    product, and a compiled step ran slower than an eager one."""
    from triform.kernels.int8 import FBGEMM_MIN_WEIGHTS, Int8Linear

    torch.manual_seed(0)
    layer = Int8Linear(torch.nn.Linear(512, FBGEMM_MIN_WEIGHTS // 512 * 2))
    assert layer.fp32_weight is None, "the layer must be large enough for fbgemm's kernel"
    norm = torch.nn.LayerNorm(512)

    def step(x):
        return torch.relu(layer(norm(x)))

    x = torch.randn(3, 512)
    with torch.no_grad():
        expected = step(x)
        got = torch.compile(step, fullgraph=True, dynamic=False)(x)  # fullgraph: a break raises
    torch.testing.assert_close(got, expected)


def test_without_a_working_compiler_the_first_step_fails_with_one_line(tmp_path):
    """In a process of its own (this one may hold the step compiled already), with inductor's cache empty."""
    script = textwrap.dedent(
        """
        import sys
        import torch
        sys.path.insert(0, sys.argv[1])
        from conftest import SPECIALS, tiny_config
        from triform.errors import TriformError
        from triform.generate import GenerationConfig, generate_ids, resolve_layout
        from triform.models import build_model

        torch.manual_seed(0)
        model = build_model(tiny_config("stack")).eval()
        # at least one cached step, the compiled one, even where the first token drawn ends the output
        config = GenerationConfig(compile=True, min_new_tokens=2, max_new_tokens=2)
        try:
            generate_ids(model, resolve_layout("stack", SPECIALS), [[30, 31]], config)
        except TriformError as error:
            print(error)
        """
    )
    env = {**os.environ, "CXX": str(tmp_path / "no-such-g++"), "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "cache")}
    done = subprocess.run(
        [sys.executable, "-c", script, os.path.dirname(__file__)], env=env, capture_output=True, text=True, timeout=600
    )
    message = done.stdout.strip()
    said = f"rc {done.returncode}, stdout {message!r}, stderr {done.stderr[-2000:]}"
    assert message.startswith("generation.compile: torch.compile could not compile the decoding step"), said
    assert "C++ compiler" in message and "\n" not in message, said


@pytest.mark.parametrize("arch", ["stack", "encoder-decoder"])
def test_a_compiled_continuous_batch_gives_each_request_what_it_gets_alone(arch):
    """Rows joining mid-flight, waiting for a slot, leaving, the cache shifting: compiled steps
    through the slot cache, the same tokens as each request alone and eager."""
    from triform.generate.continuous import ContinuousBatch

    model = build(arch, position="rotary")
    layout = resolve_layout(arch, SPECIALS)
    prompts = [[30, 31, 32], [50], [40, 41, 42, 43, 44, 45, 46], [60, 61, 62, 63], [70] * 12]
    configs = [
        GenerationConfig(max_new_tokens=8, precision="fp32"),
        GenerationConfig(max_new_tokens=8, precision="fp32", do_sample=True, top_k=20, seed=5),
    ]
    batch = ContinuousBatch(model, layout, slots=3, precision="fp32", compile=True)
    requests = []
    for t in range(40):
        if t % 2 == 0 and t // 2 < len(prompts):
            requests.append(batch.submit(prompts[t // 2], configs[t // 2 % 2]))
        if not batch.busy and len(requests) == len(prompts):
            break
        batch.step()
    for i, (prompt, request) in enumerate(zip(prompts, requests)):
        assert request.done and request.error is None
        expected = generate_ids(model, layout, [prompt], configs[i % 2])
        assert [(r.tokens, r.finish_reason) for r in request.rows] == [(r.tokens, r.finish_reason) for r in expected]


@pytest.mark.parametrize("arch", ["stack", "encoder-decoder"])
def test_speculative_decoding_with_compiled_draft_steps_gives_the_models_own_tokens(arch):
    from triform.generate.speculative import speculative_ids

    model, draft = build(arch, seed=0), build(arch, seed=1, d_model=16, n_heads=2, d_ff=32, n_layers=1)
    layout = resolve_layout(arch, SPECIALS)
    config = GenerationConfig(max_new_tokens=12, min_new_tokens=4, precision="fp32")
    plain = [row.tokens for row in generate_ids(model, layout, PROMPTS, config)]
    rows, acceptance = speculative_ids(model, draft, layout, PROMPTS, config.replace(compile=True), k=3)
    assert [row.tokens for row in rows] == plain and acceptance.proposed > 0
