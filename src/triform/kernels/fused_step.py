"""A decoding step of a block in one native call (kernels/native/block.c) instead of its modules'
hundred operators.

At a few rows a decoding step's products read their weights at memory speed (kernels/native.py's
`gemv`), and what is left is everything else: some hundred operators per block (norms, activations,
residual sums, heads split and joined, the KV cache written, attention dispatched) and the Python
around them. On an AMD EPYC (2 threads) that took longer than the products: a bf16 step of the
benchmark's 6-layer GPT took 7.4 ms where reading its weights takes 1.6. Five calls per block (one
per product, each with its norm, activation and residual sum, and one per attention) cut the
modules' step by a quarter only: the Python between the calls ran from caches that the weights
streaming through had just emptied. One call per block, its parameters described once (`Plan`),
only the cache's and masks' places filled in at each step, made a step 1.7-2.8 times faster than the
modules' (`python benchmarks/fused_step.py`, batch 1, AMD EPYC with AVX2, 2 threads: the benchmark's
GPT 5.23 -> 3.06 ms in fp32, BART's decoder 7.23 -> 3.50, a Llama-like stack 6.55 -> 2.67).

Whether that runs is measured, as every kernel here is: the first step of each class (dtype, rows,
keys rounded up to a power of two, the block's sizes, threads) runs the modules, then calibration
times the modules against the fused calls and keeps the faster for the class.

It serves a pre-norm or post-norm block of LayerNorm or RMSNorm, self-attention with or without
rotary positions (any scaling: the module's cos and sin tables are read) and per-head query and key
norms, grouped-query attention, cross-attention whose keys and values are cached (without per-head
norms), a plain or gated feed-forward (relu, gelu, gelu_tanh, silu), every projection a plain
`Linear` with an fp32 or bf16 weight, or every one int8 (kernels/int8.py: there each row of
activations is rounded to int8 with its own scale and the integer products summed exactly,
native/int8.h, where the modules' fbgemm rounds them with one scale per call), the KV cache then fp32
or bf16 (kernels/int8.py's `cache_dtype`); at a step of one new
token for each of at most FUSED_ROWS rows, without autograd, autocast, relative position bias or
torch.compile. For any other block or step `block_step` returns None and the modules run.

Where every block of a stack takes its fused step, `stack_step` runs the stack's whole step in one
native call (block.c's stack step: the embeddings, every block, the final norm), with the call's
arrays prepared once a generation: the same kernels without the Python between the blocks, which was
some 15 µs a block (`Module.__call__`, the checks above, the call's arguments). The figures below are
of the blocks alone in one call; with the embeddings and final norm too, GPT int8 at batch 1 took
1.26 times as long a call per block (an in-process A/B on a busier machine: 0.617 against 0.469 ms).
In-process A/B, AMD EPYC (Zen 4), the benchmark's models: int8, 1 thread, GPT
0.380 -> 0.328 ms a token at batch 1 and 1.09 -> 1.02 at batch 8, BART 0.568 -> 0.514 and 1.86 ->
1.81; bf16, 2 threads, GPT 0.460 -> 0.427 and BART 0.690 -> 0.643 at batch 1.
"""

from __future__ import annotations

import ctypes
import weakref
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from triform.kernels import native
from triform.kernels.activation import ACTIVATIONS as MEASURED_ACTIVATIONS
from triform.kernels.calibrate import FIELDS, calibration, rows_class, timed_from_memory
from triform.kernels.int8 import Int8Linear
from triform.kernels.linear import Linear
from triform.nn.block import AttentionContext, Block, PostNormBlock, PreNormBlock
from triform.nn.feedforward import ACTIVATIONS, FeedForward, GatedFeedForward
from triform.nn.position import Rotary

if TYPE_CHECKING:
    from triform.nn.cache import KVCache, LayerCache

FUSED_ROWS = 16  # rows (batch · beams) up to which a step's products are a few rows' (gemv's)
FIELDS["block step"] = ("dtype", "rows≤", "keys≤", "d_model", "d_ff", "heads", "attention", "threads")
ACTIVATION_CODES = {
    id(function): native.ACTIVATIONS[name]
    for table in (ACTIVATIONS, MEASURED_ACTIVATIONS)
    for name, function in table.items()
}
PLAIN_LINEAR = (Linear, nn.Linear)
CANDIDATES = ("modules", "fused")  # the block's own forward first: it wins a tie


class Plan:
    """A block's fused step: its structure, found once, and its parameters as block.c reads them,
    pointed to again whenever a tensor moves. `valid` says whether the block is still the one planned
    for (no module or parameter replaced, as LoRA, int8 quantization or tying weights replace them)."""

    def __init__(self, block: Block, norm_kinds: list[int], activation: int, head_norm_kind: int):
        attention, cross, feedforward = block.self_attention, block.cross_attention, block.feedforward
        gated = isinstance(feedforward, GatedFeedForward)
        projections = [attention.query_key_value, attention.out]
        projections += [cross.query, cross.out] if cross is not None else [None, None]
        projections += [feedforward.gate_up if gated else feedforward.up, feedforward.down]
        # every (dict, name, object) the plan was made from: the block is unchanged while each is there
        owners = [(block._modules, "self_attention"), (block._modules, "cross_attention")]
        owners += [(block._modules, "feedforward"), *((block.norms._modules, str(i)) for i in range(len(block.norms)))]
        owners += [(attention._modules, "query_key_value"), (attention._modules, "out")]
        if cross is not None:
            owners += [(cross._modules, "query"), (cross._modules, "out")]
        owners += [(feedforward._modules, "gate_up" if gated else "up"), (feedforward._modules, "down")]
        owners += [(attention._modules, name) for name in ("query_norm", "key_norm")]
        owners += [(attention.__dict__, "rotary")] if attention.rotary is None else [(attention._modules, "rotary")]
        self.int8 = isinstance(attention.out, Int8Linear)  # int8 weights and scales in buffers
        self.tensors: list[Tensor] = []  # every parameter the kernel reads, in `slots` order
        self.slots: list[tuple[str, int]] = []  # (descriptor field, index) of each
        self.dtypes: list[torch.dtype | None] = []  # each one's dtype (None: the model's)
        for index, module in enumerate(projections):
            where = None if module is None else module._buffers if self.int8 else module._parameters
            for kind in ("weight", "bias", "scales"):
                tensor = None if where is None else where.get(kind)
                if tensor is not None:
                    owners.append((where, kind))
                    self.tensors.append(tensor)
                    self.slots.append((kind[0], index))
                    self.dtypes.append(torch.int8 if self.int8 and kind == "weight" else None)
        head_norms = [attention.query_norm, attention.key_norm] if head_norm_kind else []
        for field, norms in (("norm_", block.norms), ("head_norm_", head_norms)):
            for index, norm in enumerate(norms):
                for kind in ("weight", "bias"):
                    tensor = norm._parameters.get(kind)
                    if tensor is not None:
                        owners.append((norm._parameters, kind))
                        self.tensors.append(tensor)
                        self.slots.append((field + kind[0], index))
                        self.dtypes.append(None)
        # rotary's cos and sin (max_len, d_head): buffers, fp32 or in the model's dtype
        self.rotary = attention.rotary
        if self.rotary is not None:
            owners += [(self.rotary._buffers, "cos"), (self.rotary._buffers, "sin")]
        self.owners = [(where, name, where.get(name)) for where, name in owners]
        self.pointers: tuple[int, ...] = ()
        self.dtype: torch.dtype | None = None
        self.checked: weakref.ref | None = None  # the cache whose steps found the plan valid and pointed
        # whether the fused step runs, by (rows, keys' class, the cache's dtype, threads, calibration):
        # remembered, as the table's key took some 5 µs a block to build and look up at every step
        self.decisions: dict[tuple, bool] = {}
        self.eps = [norm.eps for norm in block.norms]  # None: the dtype's own, for RMSNorm
        self.head_eps = [norm.eps for norm in head_norms]
        self.heads = attention.n_heads
        self.descriptor = native.BlockParameters(
            d_model=attention.out.out_features,
            inner=attention.inner,
            kv_inner=attention.kv_inner,
            d_ff=feedforward.down.in_features,
            heads=attention.n_heads,
            kv_heads=attention.n_kv_heads,
            d_head=attention.d_head,
            post_norm=isinstance(block, PostNormBlock),
            activation=activation,
            gated=gated,
            cross=cross is not None,
            scale=attention.d_head**-0.5 if attention.scale is None else attention.scale,
            cross_scale=attention.d_head**-0.5 if cross is None or cross.scale is None else cross.scale,
        )
        for index, kind in enumerate(norm_kinds):
            self.descriptor.norm_kind[index] = kind
        self.descriptor.head_norm_kind = head_norm_kind
        self.descriptor.rotary = self.rotary is not None
        if self.rotary is not None:
            self.descriptor.max_len = self.rotary.max_len

    def valid(self) -> bool:
        return all(where.get(name) is thing for where, name, thing in self.owners)

    def point(self, dtype: torch.dtype) -> bool:
        """Point the descriptor at the parameters where they are now; False where one is not in
        `dtype`, not contiguous or not on the CPU (the modules compute that step)."""
        tables = () if self.rotary is None else (self.rotary.cos, self.rotary.sin)
        pointers = tuple(tensor.data_ptr() for tensor in self.tensors) + tuple(t.data_ptr() for t in tables)
        if pointers == self.pointers and dtype == self.dtype:
            return True
        self.pointers, self.dtype = (), None
        if self.int8 and dtype != torch.float32:
            return False
        for tensor, expected in zip(self.tensors, self.dtypes):
            if tensor.dtype != (expected or dtype) or not tensor.is_contiguous() or tensor.device.type != "cpu":
                return False
        for table in tables:
            if table.dtype not in (torch.float32, dtype) or not table.is_contiguous() or table.device.type != "cpu":
                return False
        descriptor = self.descriptor
        for pointer, (field, index) in zip(pointers, self.slots):
            getattr(descriptor, field)[index] = pointer
        for index, eps in enumerate(self.eps):  # a block's norm i is block.c's norm i
            descriptor.norm_eps[index] = eps if eps is not None else torch.finfo(dtype).eps
        for index, eps in enumerate(self.head_eps):
            descriptor.head_norm_eps[index] = eps if eps is not None else torch.finfo(dtype).eps
        if tables:
            descriptor.cos, descriptor.sin = tables[0].data_ptr(), tables[1].data_ptr()
            descriptor.tables_f32 = tables[0].dtype == torch.float32
        self.pointers, self.dtype = pointers, dtype
        return True


def plan_for(block: Block) -> Plan | None:
    """The block's plan, or None where its structure has no fused step."""
    if type(block) not in (PreNormBlock, PostNormBlock):
        return None
    attention, cross, feedforward = block.self_attention, block.cross_attention, block.feedforward
    if type(feedforward) not in (FeedForward, GatedFeedForward) or id(feedforward.activation) not in ACTIVATION_CODES:
        return None
    if attention.rotary is not None and type(attention.rotary) is not Rotary:
        return None
    head_norm_kind = 0
    if attention.query_norm is not None or attention.key_norm is not None:
        kinds = {norm_kind(norm) for norm in (attention.query_norm, attention.key_norm)}
        if len(kinds) != 1 or None in kinds:
            return None
        head_norm_kind = kinds.pop()
    if cross is not None and (cross.query_norm is not None or cross.key_norm is not None):
        return None
    norm_kinds = [norm_kind(norm) for norm in block.norms]
    if None in norm_kinds:
        return None
    projections = [attention.query_key_value, attention.out, feedforward.down]
    projections += [feedforward.gate_up if isinstance(feedforward, GatedFeedForward) else feedforward.up]
    projections += [cross.query, cross.out] if cross is not None else []
    kinds = {Int8Linear if type(part) is Int8Linear else type(part) in PLAIN_LINEAR for part in projections}
    if len(kinds) != 1 or False in kinds:  # LoRA, a mix of int8 and float layers: their own forward
        return None
    return Plan(block, norm_kinds, ACTIVATION_CODES[id(feedforward.activation)], head_norm_kind)


def norm_kind(norm: nn.Module | None) -> int | None:
    """block.c's kind of a norm over the last dimension, or None for any other module."""
    if type(norm) is nn.LayerNorm and len(norm.normalized_shape) == 1:
        return native.NORMS["layernorm"]
    if type(norm) is nn.RMSNorm and len(norm.normalized_shape) == 1:
        return native.NORMS["rmsnorm"]
    return None


# Each block's plan, beside the block rather than in it: a model copied (deepcopy: the bf16 twin, a
# server's copies) makes its own plans, and the descriptor's C pointers are never copied or pickled.
_plans: weakref.WeakKeyDictionary[Block, Plan | None] = weakref.WeakKeyDictionary()


def current_plan(block: Block) -> Plan | None:
    plan = _plans.get(block, False)
    if plan is False or (plan is not None and not plan.valid()):
        plan = _plans[block] = plan_for(block)
    return plan


def checked_plan(block: Block, dtype: torch.dtype, owner: object) -> Plan | None:
    """The block's plan, pointed at its parameters in `dtype`, or None: checked (`valid`, `point`) once
    for each cache, the steps of one generation, in which neither the block's modules nor its
    tensors' places change. Checked at every step, its thirty-odd lookups took some 15 µs a block,
    a fifth of a step of the benchmark's int8 GPT at batch 1."""
    plan = _plans.get(block)
    if plan and plan.checked is not None and plan.checked() is owner and plan.dtype == dtype:
        return plan
    plan = current_plan(block)
    if plan is None or not plan.point(dtype):
        return None
    plan.checked = weakref.ref(owner)
    return plan


def step_allowed(rows: int, length: int, dtype: torch.dtype, on_cpu: bool, context: AttentionContext) -> bool:
    """Whether a fused step may compute this step of any block: one new token for each of at most
    FUSED_ROWS rows, on the CPU, without autograd, autocast, torch.compile or a relative position bias."""
    if length != 1 or rows > FUSED_ROWS or dtype not in native.GEMV_DTYPES or not on_cpu:
        return False
    if torch.is_grad_enabled() or torch.compiler.is_compiling() or torch.is_autocast_enabled("cpu"):
        return False
    return context.bias is None and native.library() is not None


def ready_plan(block: Block, dtype: torch.dtype, context: AttentionContext, cache: LayerCache) -> Plan | None:
    """The block's plan where its fused step can compute this step of rows in `dtype` (`step_allowed`
    given), else None."""
    if block.training:
        return None
    kv = cache.keys.dtype  # the rows', or, under int8 weights, bf16 (kernels/int8.py's `cache_dtype`)
    if kv != dtype and not (kv == torch.bfloat16 and dtype == torch.float32):
        return None
    keys = cache.owner.length + 1
    if (context.is_causal and keys > 1) or keys > cache.keys.shape[2]:
        return None  # the modules give the causal flag its meaning, and the full cache its error
    if block.cross_attention is not None and (cache.cross is None or cache.cross[0].dtype != kv):
        return None  # the first step computes the source's keys and values
    plan = checked_plan(block, dtype, cache.owner)
    if plan is None or (kv != dtype and not plan.int8):
        return None
    if plan.rotary is not None and (context.positions is None or context.positions.dtype != torch.int64):
        return None
    return plan


def situation(rows: int, cache: LayerCache) -> tuple:
    """The class of a step that a plan's decision is remembered by."""
    keys = cache.owner.length + 1
    return (rows, rows_class(keys), cache.keys.dtype, torch.get_num_threads(), calibration().serial)


def block_step(block: Block, x: Tensor, context: AttentionContext, cache: LayerCache) -> Tensor | None:
    """The block's output for a decoding step x (B, 1, d_model), by one native call where it applies
    and was measured faster here; None where the block's modules are to compute it."""
    if not step_allowed(x.shape[0], x.shape[1], x.dtype, x.is_cpu, context) or not x.is_contiguous():
        return None
    plan = ready_plan(block, x.dtype, context, cache)
    if plan is None:
        return None
    now = situation(x.shape[0], cache)
    decision = plan.decisions.get(now)  # a step of this class measured before: its answer
    if decision is not None:
        return fused(plan, x, context, cache) if decision else None
    descriptor, table, kv = plan.descriptor, calibration(), cache.keys.dtype
    dtype = "int8" if plan.int8 else str(x.dtype).removeprefix("torch.")
    if kv != x.dtype:
        dtype += " bf16-cache"
    key = ("block step", dtype, rows_class(x.shape[0]), rows_class(cache.owner.length + 1))
    key += (descriptor.d_model, descriptor.d_ff, plan.heads, "self+cross" if block.cross_attention else "self")
    key += (torch.get_num_threads(),)
    if not table.decided(key, CANDIDATES):  # the modules' own kernels are chosen first, outside its lock
        y = block.forward_modules(x, context, cache)
        runs = {
            "modules": lambda: block.forward_modules(x, context, cache),
            "fused": lambda: fused(plan, x, context, cache),
        }  # both write the same keys and values into the same cache slot: timing them changes nothing
        table.choose(key, CANDIDATES, lambda: from_memory(block, runs))
        return y
    decision = plan.decisions[now] = table.choose(key, CANDIDATES, dict) == "fused"
    return fused(plan, x, context, cache) if decision else None


def stack_step(
    blocks: nn.ModuleList,
    ids: Tensor,
    positions: Tensor,
    context: AttentionContext,
    cache: KVCache,
    embedding: tuple | None,
    final_norm: nn.Module | None,
) -> Tensor | None:
    """A stack's hidden states (B, 1, d_model) for a decoding step of tokens `ids` (B, 1) at
    `positions` (B, 1), in one native call: the embeddings (`embedding`: the token table, the
    position table or None, the scale and the norm after them, as models/stack.py's `Embeddings.step_parts`
    gives them; None where they are more than that), every block, and `final_norm`. Only where every
    block would take its fused step (`block_step`, already measured faster than its modules for this
    step's class), so that the kernels are the same, called once rather than once a block. None
    where any block would not, has a forward hook, or has not been measured for this class yet: the
    stack then runs its modules, and each block its own step (the first steps calibrate them)."""
    if embedding is None or len(blocks) < 2 or context.is_causal or cache.length >= cache.capacity:
        return None  # (a full cache: the modules give its error)
    token, table, scale, norm = embedding
    rows, dtype = ids.shape[0], token.dtype
    if not step_allowed(rows, ids.shape[1], dtype, ids.is_cpu and token.is_cpu, context):
        return None
    if _each_block_must_run(blocks) or positions.dtype != torch.int64 or ids.dtype != torch.int64:
        return None
    now = (*situation(rows, cache[0]), dtype)
    # What the held call was prepared for: the step's class, the masks, every layer's cache tensors,
    # the tables and norms around the blocks
    sources = (context.mask, context.memory_mask, token, table, norm, final_norm)
    sources += tuple(layer.keys for layer in cache.layers) + tuple(layer.cross for layer in cache.layers)
    held = cache.fused_blocks
    copies: list[Tensor] = []  # alive until the call returns
    if held is None or held[0] != now or any(a is not b for a, b in zip(held[1], sources)):
        held = prepared_stack(blocks, dtype, context, cache, now[:-1], embedding, final_norm, copies)
        if held is None:
            return None
        cache.fused_blocks = None if copies else (now, sources, *held)
    else:
        held = held[2:]
    ends, descriptors, places, where, int8, rotary = held
    step_positions = positions[:, -1]  # (B,): one new token a row, alive until the call returns
    position = cache.length
    if rotary:
        address, stride = step_positions.data_ptr(), step_positions.stride(0)
        for place in places:
            place.position, place.positions, place.ps = position, address, stride
    else:
        for place in places:
            place.position = position
    tokens = ids[:, -1].contiguous()  # (B,), as block.c reads them
    out = native.library().stack_step(
        ends, tokens, step_positions, descriptors, where, dtype, int8, cache[0].keys.dtype
    )
    return out.view(rows, 1, out.shape[1])


def prepared_stack(
    blocks: nn.ModuleList,
    dtype: torch.dtype,
    context: AttentionContext,
    cache: KVCache,
    now: tuple,
    embedding: tuple,
    final_norm: nn.Module | None,
    copies: list,
) -> tuple | None:
    """(what the stack computes around its blocks as block.c reads it, the blocks' descriptors as a C
    array, each layer's places, their C array, int8, rotary) where every block would take its fused
    step in this step's class `now` and the rest is in `dtype` on the CPU, else None."""
    ends = stack_ends(embedding, final_norm, dtype)
    plans, places = [], []
    for index, block in enumerate(blocks):
        layer = cache[index]
        plan = ready_plan(block, dtype, context, layer) if ends is not None and block.step is block_step else None
        if plan is None or not plan.decisions.get(now) or (plans and plan.int8 != plans[0].int8):
            return None
        plans.append(plan)
        places.append(layer_places(plan, now[0], context, layer, copies))
    if any(plan.descriptor.d_model != ends.width for plan in plans):
        return None
    descriptors = (ctypes.c_void_p * len(plans))(*(ctypes.addressof(plan.descriptor) for plan in plans))
    where = (ctypes.c_void_p * len(places))(*(ctypes.addressof(place) for place in places))
    return ends.parameters, descriptors, places, where, plans[0].int8, any(p.rotary is not None for p in plans)


class StackEnds:
    """block.c's description of the embeddings and the final norm around a stack's blocks, and the
    width they have (`parameters` points at the tensors, which the caller keeps)."""

    def __init__(self, parameters: native.StackParameters, width: int):
        self.parameters, self.width = parameters, width


def stack_ends(embedding: tuple, final_norm: nn.Module | None, dtype: torch.dtype) -> StackEnds | None:
    """The embeddings (token table, position table or None, scale, norm or None) and the final norm as
    block.c reads them, or None where a table or norm is of another kind, dtype or place."""
    token, table, scale, norm = embedding
    tensors = [token] + ([table] if table is not None else [])
    parameters = native.StackParameters(vocab=token.shape[0], scale=scale)
    for field, module in (("norm", norm), ("final", final_norm)):
        if module is None:
            continue
        kind = norm_kind(module)
        weight, bias = module._parameters.get("weight"), module._parameters.get("bias")
        if kind is None:
            return None
        tensors += [t for t in (weight, bias) if t is not None]
        setattr(parameters, f"{field}_kind", kind)
        setattr(parameters, f"{field}_w", native.address(weight))
        setattr(parameters, f"{field}_b", native.address(bias))
        setattr(parameters, f"{field}_eps", module.eps if module.eps is not None else torch.finfo(dtype).eps)
    if any(t.dtype != dtype or not t.is_contiguous() or t.device.type != "cpu" for t in tensors):
        return None
    if token.dim() != 2 or (table is not None and (table.dim() != 2 or table.shape[1] != token.shape[1])):
        return None
    parameters.token = token.data_ptr()
    if table is not None:
        parameters.position, parameters.max_len = table.data_ptr(), table.shape[0]
    return StackEnds(parameters, token.shape[1])


def _each_block_must_run(blocks: nn.ModuleList) -> bool:
    """Whether a block must run its own forward: it is training, or a forward hook would run for it (its
    own, or one registered for every module)."""
    if torch.nn.modules.module._global_forward_hooks or torch.nn.modules.module._global_forward_pre_hooks:
        return True
    return any(block._forward_hooks or block._forward_pre_hooks or block.training for block in blocks)


def from_memory(block: Block, runs: dict) -> dict:
    """The candidates timed with the caches emptied first where the block's weights are more than
    WARM_BYTES that the last level cache could hold (calibrate.timed_from_memory), as a step meets them
    after the other blocks. Timed warm, the modules' int8 products (fbgemm's,
    on a block's 1.8 MB of weights, within the L2 cache between rounds) looked 4-7 % faster than the
    fused step at 8 rows of the benchmark's GPT on an AMD EPYC (Zen 4), 1 thread, while decoding with
    the fused step took 3.1 ms a token against 3.65 with the modules."""
    return timed_from_memory(sum(t.numel() * t.element_size() for t in block.state_dict().values()), runs)


def fused(plan: Plan, x: Tensor, context: AttentionContext, cache: LayerCache) -> Tensor:
    batch, _, width = x.shape
    copies: list[Tensor] = []  # alive until the call returns
    places = layer_places(plan, batch, context, cache, copies)
    if plan.rotary is not None:
        positions = context.positions[:, -1]  # (B,): one new token a row, alive until the call returns
        places.positions, places.ps = positions.data_ptr(), positions.stride(0)
    out = native.library().block_step(plan.descriptor, places, x.view(batch, width), plan.int8, cache.keys.dtype)
    return out.view(batch, 1, width)


def layer_places(
    plan: Plan, batch: int, context: AttentionContext, cache: LayerCache, copies: list
) -> native.StepPlaces:
    """The step's places for the layer, at this step's position (each row's position, for rotary
    tables, the caller's to fill in); copies made for the kernel are added to `copies`, for the caller
    to keep until its call returns."""
    # The places of the cache and the masks stay while these tensors do (a generation's steps; beam
    # search's reordering makes new ones): held with the layer's cache, only the position then changes.
    sources = (plan, cache.keys, cache.values, context.mask, cache.cross, context.memory_mask)
    held = cache.fused_places
    if held is None or any(a is not b for a, b in zip(held[0], sources)):
        places, made = step_places(plan, batch, context, cache)
        held = (sources, places)
        cache.fused_places = None if made else held
        copies += made
    places = held[1]
    places.position = cache.owner.length
    return places


def step_places(plan: Plan, batch: int, context: AttentionContext, cache: LayerCache) -> tuple[native.StepPlaces, list]:
    """Where block.c finds the step's KV cache, the source's keys and values and the masks; and the
    copies made for the kernel (a mask cast to fp32, keys made contiguous), which the caller keeps alive
    for its call. Without copies the places last while their tensors do."""
    k, v = cache.keys, cache.values
    position = cache.owner.length
    copies = []
    mask, kind, (mb, mh, mt) = native.mask_places(context.mask, batch, plan.heads, position + 1)
    if mask is not None and context.mask.dtype not in (torch.bool, torch.float32):
        copies.append(mask)
    places = native.StepPlaces(k.data_ptr(), v.data_ptr(), *k.stride()[:3], *v.stride()[:3], position)
    places.mask, places.kind, places.mb, places.mh, places.mt = native.address(mask), kind, mb, mh, mt
    if cache.cross is not None and plan.descriptor.cross:
        ck, cv = cache.cross
        if ck.stride(-1) != 1 or cv.stride(-1) != 1:
            ck, cv = ck.contiguous(), cv.contiguous()
            copies += [ck, cv]
        source = ck.shape[2]
        memory_mask, ckind, (cmb, cmh, cmt) = native.mask_places(context.memory_mask, batch, plan.heads, source)
        if memory_mask is not None and context.memory_mask.dtype not in (torch.bool, torch.float32):
            copies.append(memory_mask)
        places.ck, places.cv, places.source = ck.data_ptr(), cv.data_ptr(), source
        places.ckb, places.ckh, places.ckt = ck.stride()[:3]
        places.cvb, places.cvh, places.cvt = cv.stride()[:3]
        places.cmask, places.ckind = native.address(memory_mask), ckind
        places.cmb, places.cmh, places.cmt = cmb, cmh, cmt
    return places, copies
