"""A decoding step of a block as one native call (kernels/fused_step.py): it computes what the block's
modules compute, for every kind of block it serves, in fp32 and bf16, with padding, beams reordered
and a source to attend; blocks it does not serve, and steps calibration found slower, are left to the
modules."""

import copy

import pytest
import torch
from conftest import VARIANTS, random_ids, tiny_config

from triform.kernels import calibrate as calibrate_module
from triform.kernels import native
from triform.kernels.calibrate import Calibration, set_calibration
from triform.kernels.fused_step import stack_step
from triform.kernels.int8 import Int8Linear, quantize
from triform.kernels.linear import Linear
from triform.models import build_model
from triform.models.stack import Stack
from triform.nn.block import Block

# The kinds of block the fused step serves.
SERVED = {
    "rotary-rmsnorm-swiglu": VARIANTS["rotary-rmsnorm-swiglu"],
    "grouped-query-qwen": VARIANTS["grouped-query-qwen"],  # per-head norms, YaRN-scaled rotary tables
    "gpt": dict(position="learned", activation="gelu_tanh"),
    "post-norm-relu": dict(position="learned", norm_placement="post", activation="relu"),
    "rmsnorm-swiglu-grouped": dict(
        position="learned", norm="rmsnorm", activation="silu", gated=True, bias=False, n_kv_heads=1
    ),
    "sinusoidal-gelu-qkv-biases": dict(position="sinusoidal", activation="gelu", bias=False, qkv_bias=True),
    # BART's embeddings: scaled by √d_model, then a LayerNorm
    "bart-embeddings": dict(position="learned", norm_placement="post", scale_embeddings=True, embedding_norm=True),
}


@pytest.fixture
def force():
    """force(kernel): calibration measures `kernel` fastest wherever it is a candidate."""
    old = []

    def choose(kernel: str) -> None:
        timer = lambda name, run: 0.0 if name == kernel else 1.0  # noqa: E731
        old.append(set_calibration(Calibration(timer=timer, read_disk=False)))

    yield choose
    if old:
        set_calibration(old[0])


@pytest.fixture
def fused_calls(monkeypatch):
    """[the number of fused block steps run so far, of the stack calls among them that ran all of a
    stack's blocks at once]."""
    if native.library() is None:
        pytest.skip(f"the native kernels are not built here: {native.unavailable()}")
    calls = [0, 0]
    step, steps = native.NativeKernels.block_step, native.NativeKernels.stack_step

    def counted(self, *args):
        calls[0] += 1
        return step(self, *args)

    def counted_stack(self, ends, ids, positions, blocks, *args):
        calls[0] += len(blocks)
        calls[1] += 1
        return steps(self, ends, ids, positions, blocks, *args)

    monkeypatch.setattr(native.NativeKernels, "block_step", counted)
    monkeypatch.setattr(native.NativeKernels, "stack_step", counted_stack)
    return calls


def decode(model, arch: str, steps: int = 6, reorder: bool = False) -> torch.Tensor:
    """Logits of `steps` cached one-token steps for 3 rows, the first left-padded by two slots; with
    `reorder`, the rows swapped in the cache half way, as beam search swaps them."""
    ids = random_ids(3, steps)
    padding = torch.ones(3, steps, dtype=torch.bool)
    padding[0, :2] = False
    cache = model.new_cache(3)
    memory, memory_padding = None, None
    if arch == "encoder-decoder":
        source = random_ids(3, 5, generator_seed=1)
        memory_padding = torch.ones(3, 5, dtype=torch.bool)
        memory_padding[2, 3:] = False
        memory = model.encode(source, memory_padding)
    logits = []
    with torch.inference_mode():
        for t in range(steps):
            if reorder and t == steps // 2:
                order = torch.tensor([2, 0, 1])
                cache.reorder(order)
                ids, padding = ids[order], padding[order]
                memory, memory_padding = (
                    memory if memory is None else memory[order],
                    (memory_padding if memory_padding is None else memory_padding[order]),
                )
            step, seen = ids[:, t : t + 1], padding[:, : t + 1]
            if arch == "stack":
                logits.append(model(step, "causal", padding_mask=seen, cache=cache))
            else:
                out = model.decode(step, memory, memory_padding_mask=memory_padding, padding_mask=seen, cache=cache)
                logits.append(out)
    return torch.cat(logits, 1).float()


def modules_alone(model, run):
    """What `run` computes with every block of `model` computed by its modules."""
    blocks = [module for module in model.modules() if isinstance(module, Block)]
    steps = [block.step for block in blocks]
    for block in blocks:
        block.step = None
    try:
        return run()
    finally:
        for block, step in zip(blocks, steps):
            block.step = step


def built(arch: str, dtype: torch.dtype, **changes):
    torch.manual_seed(0)
    return build_model(tiny_config(arch, **changes)).eval().to(dtype)


# Cross-attention with per-head norms is left to the modules (no such model is known).
CASES = [
    (v, a)
    for v in sorted(SERVED)
    for a in ("stack", "encoder-decoder")
    if (v, a) != ("grouped-query-qwen", "encoder-decoder")
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(("variant", "arch"), CASES)
def test_a_fused_step_computes_what_the_block_s_modules_compute(variant, arch, dtype, force, fused_calls):
    model = built(arch, dtype, **SERVED[variant])
    expected = modules_alone(model, lambda: decode(model, arch, reorder=True))
    assert fused_calls[0] == 0
    force("fused")
    got = decode(model, arch, reorder=True)
    # the first step of each class (keys rounded up to powers of two) by the modules, the rest fused
    assert fused_calls[0] >= 2 * 3
    # fp32: sums in another order; bf16: the same roundings, a norm's or activation's last bit apart
    tolerance = dict(rtol=1e-4, atol=1e-4) if dtype == torch.float32 else dict(rtol=0.05, atol=0.05)
    torch.testing.assert_close(got, expected, **tolerance)


def test_blocks_and_steps_it_does_not_serve_are_computed_by_the_modules(force, fused_calls):
    force("fused")
    relative = built("stack", torch.float32, **VARIANTS["relative-t5"])  # a bias added to the scores
    decode(relative, "stack")
    assert fused_calls[0] == 0
    normed_cross = built("encoder-decoder", torch.float32, **VARIANTS["grouped-query-qwen"])
    decode(normed_cross, "encoder-decoder")
    assert fused_calls[0] == 0
    model = built("stack", torch.float32, position="learned")
    with torch.no_grad():
        cache = model.new_cache(1)
        model(random_ids(1, 4), "causal", cache=cache)  # a prompt: several tokens at once
    assert fused_calls[0] == 0
    with torch.enable_grad():
        cache = model.new_cache(1)
        model(random_ids(1, 1), "causal", cache=cache)  # autograd on
    assert fused_calls[0] == 0


def test_calibration_keeps_the_modules_where_they_measured_faster(force, fused_calls):
    force("modules")
    model = built("encoder-decoder", torch.float32, position="learned")
    decode(model, "encoder-decoder")  # every class measured: both candidates run while timed
    timed = fused_calls[0]
    decode(model, "encoder-decoder")
    assert fused_calls[0] == timed


def test_a_projection_replaced_after_a_fused_step_is_the_one_computed(force, fused_calls):
    force("fused")
    model = built("stack", torch.float32, position="learned")
    decode(model, "stack")
    assert fused_calls[0] > 0
    blocks = [module for module in model.modules() if isinstance(module, Block)]
    for block in blocks:  # new weights in a new layer, as LoRA's merge or a loaded adapter gives
        old = block.feedforward.down
        block.feedforward.down = Linear(old.in_features, old.out_features)
    calls = fused_calls[0]
    got = decode(model, "stack")
    assert fused_calls[0] > calls
    torch.testing.assert_close(got, modules_alone(model, lambda: decode(model, "stack")), rtol=1e-4, atol=1e-4)


def test_a_model_copied_after_fused_steps_makes_its_own_plans(force, fused_calls):
    force("fused")
    model = built("encoder-decoder", torch.float32, position="learned")
    expected = decode(model, "encoder-decoder")
    twin = copy.deepcopy(model)  # as the bf16 twin and a server's copies are made
    calls = fused_calls[0]
    torch.testing.assert_close(decode(twin, "encoder-decoder"), expected)
    assert fused_calls[0] > calls


def test_a_position_past_the_rotary_tables_is_a_clear_error(force, fused_calls):
    force("fused")
    model = built("stack", torch.float32, **VARIANTS["rotary-rmsnorm-swiglu"])  # max_len 64
    cache = model.new_cache(1, capacity=80)
    with torch.inference_mode(), pytest.raises(ValueError, match="beyond the model's max_len 64"):
        for token in random_ids(1, 70)[0]:
            model(token.view(1, 1), "causal", cache=cache)
    assert fused_calls[0] > 0


@pytest.mark.parametrize(("variant", "arch"), [("gpt", "stack"), ("post-norm-relu", "encoder-decoder"), *CASES[:1]])
def test_an_int8_model_s_fused_step_rounds_each_row_of_activations_to_int8(variant, arch, force, fused_calls):
    """int8 weights against activations rounded to int8 row by row (test_native.py checks that product
    against its written-out form, exactly): the float model with the int8 weights, and fbgemm's modules
    (which round the activations with one scale per call), to within the activations' rounding. A
    written-out model is no closer here: an ulp of difference in a norm's result can move one activation
    to the next int8 step, and the step's outputs by as much as the rounding itself."""
    model = built(arch, torch.float32, **SERVED[variant])
    quantized = quantize(copy.deepcopy(model), "int8")
    int8_layers = dict(quantized.named_modules())
    float_layers = dict(model.named_modules())
    with torch.no_grad():
        for name, layer in int8_layers.items():
            if isinstance(layer, Int8Linear) and ".blocks." in f".{name}":
                float_layers[name].weight.copy_(layer.dequantized(torch.float32))
            elif isinstance(layer, Int8Linear):  # the output projection: float on both sides
                parent, _, child = name.rpartition(".")
                setattr(int8_layers[parent], child, copy.deepcopy(float_layers[name]))
    by_float_weights = modules_alone(model, lambda: decode(model, arch, reorder=True))
    by_fbgemm = modules_alone(quantized, lambda: decode(quantized, arch, reorder=True))
    force("fused")
    got = decode(quantized, arch, reorder=True)
    assert fused_calls[0] >= 2 * 3
    torch.testing.assert_close(got, by_float_weights, rtol=0.05, atol=0.05)
    torch.testing.assert_close(got, by_fbgemm, rtol=0.05, atol=0.05)


def test_a_block_of_more_than_a_mebibyte_of_weights_is_timed_from_memory(monkeypatch):
    """A step meets each block's weights after the other blocks pushed them out of the caches: such
    a block's two candidates are timed with the caches emptied first, a small block's warm."""
    from triform.kernels import fused_step
    from triform.kernels.calibrate import FromMemory

    monkeypatch.setattr(calibrate_module, "last_level_cache_bytes", lambda: 32 * 2**20)  # any machine's
    runs = {"modules": lambda: None, "fused": lambda: None}
    large = build_model(tiny_config("stack", d_model=256, d_ff=1024, n_heads=4)).stack.blocks[0]  # 3 MB fp32
    small = build_model(tiny_config("stack")).stack.blocks[0]
    assert all(isinstance(run, FromMemory) for run in fused_step.from_memory(large, runs).values())
    assert fused_step.from_memory(small, runs) is runs
    assert fused_step.from_memory(quantize(copy.deepcopy(large)), runs) is runs  # 0.8 MB in int8


def test_a_plan_is_checked_once_a_cache_and_again_for_the_next(force, fused_calls, monkeypatch):
    """Within one cache's steps (a generation) a block's modules and tensors stay where they are: the
    plan is checked and pointed once; a new cache checks again, and sees a changed model."""
    from triform.kernels.fused_step import Plan

    points = [0]
    point = Plan.point

    def counted(self, dtype):
        points[0] += 1
        return point(self, dtype)

    monkeypatch.setattr(Plan, "point", counted)
    force("fused")
    model = built("stack", torch.float32, **SERVED["gpt"])
    blocks = len(model.stack.blocks)
    decode(model, "stack", steps=6)
    assert fused_calls[0] > blocks and points[0] == blocks
    model.bfloat16()  # a new place and dtype for every tensor: the next cache's steps point again
    expected = modules_alone(model, lambda: decode(model, "stack"))
    torch.testing.assert_close(decode(model, "stack"), expected, rtol=0.05, atol=0.05)
    assert points[0] > blocks


@pytest.mark.parametrize("variant", ["gpt", "rotary-rmsnorm-swiglu"])
def test_a_steps_places_are_kept_while_the_caches_tensors_are_and_made_anew_after_a_reorder(
    variant, force, fused_calls, monkeypatch
):
    """The places of the KV cache and masks are found once for a generation's steps (only the position
    moves), and again when the cache's tensors change (beam search's reorder): the logits stay the
    modules' either way."""
    from triform.kernels import fused_step

    made = [0]
    step_places = fused_step.step_places

    def counted(*args):
        made[0] += 1
        return step_places(*args)

    monkeypatch.setattr(fused_step, "step_places", counted)
    force("fused")
    model = built("stack", torch.float32, **SERVED[variant])
    blocks = len(model.stack.blocks)
    ids = random_ids(2, 8)

    def run(reorder: bool) -> torch.Tensor:
        cache, logits, rows = model.new_cache(2), [], ids
        with torch.inference_mode():
            for t in range(ids.shape[1]):
                if reorder and t == 4:
                    cache.reorder(torch.tensor([1, 0]))
                    rows = rows[[1, 0]]
                logits.append(model(rows[:, t : t + 1], "causal", cache=cache))
        return torch.cat(logits, 1)

    expected = modules_alone(model, lambda: run(reorder=True))
    made[0] = 0
    run(reorder=False)
    assert fused_calls[0] > 2 * blocks and made[0] == blocks
    made[0] = 0
    got = run(reorder=True)
    assert made[0] == 2 * blocks
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("precision", ["fp32", "bf16", "int8"])
@pytest.mark.parametrize(
    ("variant", "arch"),
    [("gpt", "stack"), ("rotary-rmsnorm-swiglu", "stack"), ("sinusoidal-gelu-qkv-biases", "stack")]
    + [("post-norm-relu", "encoder-decoder"), ("bart-embeddings", "encoder-decoder")],
)
def test_a_stack_s_fused_steps_run_in_one_call_as_they_run_one_by_one(variant, arch, precision, force, fused_calls):
    """Where every block of a stack takes its fused step, one call runs the stack's whole step
    (kernels/native/block.c's stack step: embeddings, blocks, final norm): the blocks' same kernels
    and the modules' roundings around them, with padding, a source and beams reordered (which prepares
    the call again). The logits are the blocks' one by one but for the final norm's sums, taken in
    another order than torch's (the last bit of fp32; bf16's rounding hides it)."""
    model = built(arch, torch.bfloat16 if precision == "bf16" else torch.float32, **SERVED[variant])
    if precision == "int8":
        model = quantize(model, "int8")
    stacks = [module for module in model.modules() if isinstance(module, Stack) and module.stack_step]
    assert stacks and all(len(stack.blocks) >= 2 for stack in stacks)
    force("fused")
    for stack in stacks:
        stack.stack_step = None
    decode(model, arch, reorder=True)  # the first step of each class calibrates
    one_by_one = decode(model, arch, reorder=True)
    assert fused_calls == [fused_calls[0], 0] and fused_calls[0] > 0
    for stack in stacks:
        stack.stack_step = stack_step
    got = decode(model, arch, reorder=True)
    assert fused_calls[1] > 0
    torch.testing.assert_close(got, one_by_one, rtol=1e-5, atol=1e-6)


def test_a_block_with_a_forward_hook_takes_its_own_step_so_that_the_hook_sees_each(force, fused_calls):
    force("fused")
    model = built("stack", torch.float32, **SERVED["gpt"])
    decode(model, "stack")  # calibrated
    seen = []
    handle = model.stack.blocks[1].register_forward_hook(lambda module, inputs, out: seen.append(out.shape))
    calls = list(fused_calls)
    decode(model, "stack", steps=6)
    assert len(seen) == 6 and fused_calls[1] == calls[1] and fused_calls[0] > calls[0]
    handle.remove()
    decode(model, "stack", steps=6)
    assert len(seen) == 6 and fused_calls[1] > calls[1]


def test_a_full_cache_is_the_modules_clear_error_with_every_block_fused(force, fused_calls):
    force("fused")
    model = built("stack", torch.float32, **SERVED["gpt"])
    # keys 9 to 16 one class: its first step calibrates, the second decides, the next are one call
    cache = model.new_cache(1, capacity=12)
    with torch.inference_mode(), pytest.raises(ValueError, match="KV cache holds 12 positions"):
        for token in random_ids(1, 13)[0]:
            model(token.view(1, 1), "causal", cache=cache)
    assert fused_calls[1] > 0


def test_a_source_cached_before_the_first_step_makes_that_step_one_the_fused_step_serves(force, fused_calls):
    """`cache_source` (what a generation's session calls after encoding) computes the cross-attention
    keys and values the first step would; that step, left to the modules where it has to compute them,
    is then fused, with the modules' logits."""
    force("fused")
    model = built("encoder-decoder", torch.float32, **SERVED["post-norm-relu"])
    start = torch.full((2, 1), 2)

    def first_step(cached: bool) -> torch.Tensor:
        cache = model.new_cache(2)
        if cached:
            model.cache_source(memory, cache)
            assert all(layer.cross is not None for layer in cache.layers)
        return model.decode(start, memory, cache=cache)

    with torch.inference_mode():
        memory = model.encode(random_ids(2, 5, generator_seed=1))
        expected = modules_alone(model, lambda: first_step(cached=False))
        first_step(cached=False)
        assert fused_calls[0] == 0  # the source's keys and values to compute: the modules
        first_step(cached=True)  # the first step of its class: calibration
        got = first_step(cached=True)
    assert fused_calls[0] > 0
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("variant", ["gpt", "rotary-rmsnorm-swiglu"])
def test_a_position_or_token_outside_the_tables_is_a_clear_error_in_one_call(variant, force, fused_calls):
    force("fused")
    model = built("stack", torch.float32, **SERVED[variant])  # max_len 64
    cache = model.new_cache(1, capacity=80)
    with torch.inference_mode(), pytest.raises(ValueError, match="beyond the model's max_len 64"):
        for token in random_ids(1, 70)[0]:
            model(token.view(1, 1), "causal", cache=cache)
    assert fused_calls[1] > 0
    cache.rollback(cache.length - 40)  # back where a step of its class is one call
    calls = fused_calls[1]
    with torch.inference_mode(), pytest.raises(ValueError, match="beyond the model's max_len 64"):
        model(torch.tensor([[5]]), "causal", positions=torch.tensor([[70]]), cache=cache)
    with torch.inference_mode(), pytest.raises(IndexError, match="outside the vocabulary"):
        model(torch.tensor([[model.config.vocab_size]]), "causal", cache=cache)
    assert fused_calls[1] == calls + 2  # both refused by the one call
