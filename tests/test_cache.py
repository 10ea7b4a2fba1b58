"""Decoding step by step through the KV cache gives the logits of one full forward pass."""

import pytest
import torch
from conftest import VARIANTS, random_ids, tiny_config

from triform.models import build_model

ATOL = 1e-5


def step_by_step(model, ids, n_prompt, **prompt_kwargs):
    """Run the first n_prompt tokens in one call, then one token a call; return all logits."""
    cache = model.new_cache(ids.shape[0])
    pieces = [model(ids[:, :n_prompt], cache=cache, **prompt_kwargs)]
    pattern = prompt_kwargs.get("pattern", "causal")
    extra = {k: v for k, v in prompt_kwargs.items() if k == "prefix_lengths"}
    for t in range(n_prompt, ids.shape[1]):
        pieces.append(model(ids[:, t : t + 1], pattern, cache=cache, **extra))
    return torch.cat(pieces, dim=1)


@pytest.mark.parametrize("variant", VARIANTS)
def test_causal_stack_cache_matches_full_forward(variant):
    model = build_model(tiny_config(**VARIANTS[variant])).eval()
    ids = random_ids(2, 14)
    torch.testing.assert_close(step_by_step(model, ids, 5, pattern="causal"), model(ids, "causal"), atol=ATOL, rtol=0)


@pytest.mark.parametrize("variant", VARIANTS)
def test_prefix_stack_cache_matches_full_forward(variant):
    model = build_model(tiny_config(**VARIANTS[variant])).eval()
    ids, prefix = random_ids(2, 12), torch.tensor([6, 6])
    full = model(ids, "prefix", prefix_lengths=prefix)
    cached = step_by_step(model, ids, 6, pattern="prefix", prefix_lengths=prefix)
    torch.testing.assert_close(cached, full, atol=ATOL, rtol=0)


@pytest.mark.parametrize("variant", VARIANTS)
def test_encoder_decoder_cache_matches_full_forward(variant):
    model = build_model(tiny_config("encoder-decoder", **VARIANTS[variant])).eval()
    source, target = random_ids(2, 9), random_ids(2, 8, generator_seed=1)
    memory = model.encode(source)
    cache = model.new_cache(2)
    steps = [model.decode(target[:, t : t + 1], memory, cache=cache) for t in range(target.shape[1])]
    torch.testing.assert_close(torch.cat(steps, 1), model(source, target), atol=ATOL, rtol=0)
    assert cache[0].cross is not None  # cross-attention keys were computed once and kept


@pytest.mark.parametrize("arch", ["stack", "encoder-decoder"])
@pytest.mark.parametrize("variant", ["learned-pre-layernorm", "relative-t5"])
def test_single_row_steps_under_bf16_autocast_match_the_fp32_forward(arch, variant):
    """Batch 1, one token a call under bf16 autocast: the single-row products and the fp32
    single-query attention that decoding takes there, against one plain fp32 pass."""
    model = build_model(tiny_config(arch, **VARIANTS[variant])).eval()
    ids = random_ids(1, 10)
    with torch.no_grad():
        if arch == "stack":
            full = model(ids, "causal")
            with torch.autocast("cpu", dtype=torch.bfloat16):
                cached = step_by_step(model, ids, 1, pattern="causal")
        else:
            source = random_ids(1, 7, generator_seed=1)
            full = model(source, ids)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                memory, cache = model.encode(source), model.new_cache(1)
                cached = torch.cat([model.decode(ids[:, t : t + 1], memory, cache=cache) for t in range(10)], 1)
    assert cache_dtype_is_fp32(model)
    torch.testing.assert_close(cached.float(), full, atol=0.1, rtol=0.05)  # bf16 products: ~3 significant digits


def cache_dtype_is_fp32(model) -> bool:
    with torch.autocast("cpu", dtype=torch.bfloat16):
        return model.new_cache(1)[0].keys.dtype == torch.float32


@pytest.mark.parametrize("variant", VARIANTS)
def test_left_padded_batch_through_the_cache_matches_each_prompt_alone(variant):
    model = build_model(tiny_config(**VARIANTS[variant])).eval()
    prompts = [random_ids(1, 3), random_ids(1, 6, generator_seed=1)]
    continuation = random_ids(2, 4, generator_seed=2)
    width = 6
    ids = torch.stack([torch.cat([torch.zeros(width - p.shape[1], dtype=torch.long), p[0]]) for p in prompts])
    padding = torch.stack([torch.arange(width) >= width - p.shape[1] for p in prompts])
    cache = model.new_cache(2)
    batched = [model(ids, "causal", padding_mask=padding, cache=cache)[:, -1:]]
    for t in range(continuation.shape[1]):
        padding = torch.cat([padding, torch.ones(2, 1, dtype=torch.bool)], dim=1)
        batched.append(model(continuation[:, t : t + 1], "causal", padding_mask=padding, cache=cache))
    batched = torch.cat(batched, 1)
    for row, prompt in enumerate(prompts):
        alone = model(torch.cat([prompt, continuation[row : row + 1]], 1), "causal")[:, prompt.shape[1] - 1 :]
        torch.testing.assert_close(batched[row : row + 1], alone, atol=ATOL, rtol=0)


def test_reorder_keeps_the_chosen_rows():
    model = build_model(tiny_config()).eval()
    ids = random_ids(3, 5)
    cache = model.new_cache(3)
    model(ids, "causal", cache=cache)
    cache.reorder(torch.tensor([2, 2, 0]))
    step = model(ids[[2, 2, 0], :1], "causal", cache=cache)
    expected = model(torch.cat([ids[[2, 2, 0]], ids[[2, 2, 0], :1]], 1), "causal")[:, -1:]
    torch.testing.assert_close(step, expected, atol=ATOL, rtol=0)


def test_cache_overflow_is_a_clear_error():
    model = build_model(tiny_config()).eval()
    cache = model.new_cache(1, capacity=4)
    with pytest.raises(ValueError, match="KV cache holds 4"):
        model(random_ids(1, 5), "causal", cache=cache)
