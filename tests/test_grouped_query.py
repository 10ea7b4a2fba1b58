"""Grouped-query attention (Ainslie et al. 2023): a key/value head serves a group of query heads, the
KV cache holds only the key/value heads, and the model is the multi-head one whose key and value
heads are copies within each group."""

import pytest
import torch
from conftest import random_ids, tiny_config

from triform.cli import build_parser
from triform.errors import ConfigError
from triform.models import build_model
from triform.train.config import RunConfig, from_namespace, resolve

GQA = dict(d_model=32, n_heads=4, n_kv_heads=2, position="rotary", norm="rmsnorm", gated=True, activation="silu")


def repeated_heads(weight: torch.Tensor, n_heads: int, n_kv_heads: int, d_head: int) -> torch.Tensor:
    """A fused q/k/v matrix (or bias) of a grouped model, as the multi-head one with each key and value
    head copied to every query head of its group."""
    q, k, v = weight.split([n_heads * d_head, n_kv_heads * d_head, n_kv_heads * d_head], dim=0)

    def repeat(t):
        return t.unflatten(0, (n_kv_heads, d_head)).repeat_interleave(n_heads // n_kv_heads, dim=0).flatten(0, 1)

    return torch.cat([q, repeat(k), repeat(v)], dim=0)


@pytest.mark.parametrize("arch", ["stack", "encoder-decoder"])
def test_grouped_heads_equal_multi_head_attention_with_copied_key_value_heads(arch):
    grouped = build_model(tiny_config(arch, **GQA, qkv_bias=True)).eval()
    full = build_model(tiny_config(arch, **{**GQA, "n_kv_heads": None}, qkv_bias=True)).eval()
    state = full.state_dict()
    d_head = 32 // 4
    for name, tensor in grouped.state_dict().items():
        if "self_attention.query_key_value" in name:
            tensor = repeated_heads(tensor, 4, 2, d_head)
        elif "cross_attention.key_value" in name:
            key, value = tensor.chunk(2, dim=0)
            repeat = [t.unflatten(0, (2, d_head)).repeat_interleave(2, dim=0).flatten(0, 1) for t in (key, value)]
            tensor = torch.cat(repeat, dim=0)
        state[name] = tensor
    full.load_state_dict(state)
    ids = random_ids(2, 9)
    if arch == "stack":
        torch.testing.assert_close(grouped(ids, "causal"), full(ids, "causal"), atol=1e-5, rtol=0)
    else:
        source = random_ids(2, 7, generator_seed=1)
        torch.testing.assert_close(grouped(source, ids), full(source, ids), atol=1e-5, rtol=0)


@pytest.mark.parametrize("n_kv_heads", [1, 2, 4])
def test_the_cache_holds_only_the_key_value_heads(n_kv_heads):
    model = build_model(tiny_config(**{**GQA, "n_kv_heads": n_kv_heads})).eval()
    cache = model.new_cache(3, capacity=20)
    assert cache[0].keys.shape == (3, n_kv_heads, 20, 8) and cache[0].values.shape == (3, n_kv_heads, 20, 8)
    ids = random_ids(3, 6)
    model(ids, "causal", cache=cache)  # the cache takes the keys of a real forward pass
    assert cache.length == 6
    bytes_per_layer = cache[0].keys.numel() + cache[0].values.numel()
    assert bytes_per_layer == 2 * 3 * 20 * 8 * n_kv_heads  # 4 / n_kv_heads times smaller than multi-head


@pytest.mark.parametrize("n_kv_heads", [0, 3, 8])
def test_key_value_heads_must_divide_the_query_heads(n_kv_heads):
    with pytest.raises(ConfigError, match=f"model.n_kv_heads: expected a divisor of n_heads 4.*got {n_kv_heads}"):
        tiny_config(**{**GQA, "n_kv_heads": n_kv_heads})


def resolved(*argv):
    args = build_parser().parse_args(["train", "--data.train", "x.txt", *argv])["train"].as_dict()
    args.pop("config", None)
    return resolve(from_namespace(RunConfig, args))


def test_grouped_heads_and_the_other_llama_parts_are_set_from_the_command_line():
    run = resolved("--preset", "tiny-llama", "--model.n_kv_heads", "1")
    assert run.model.n_kv_heads == 1 and run.model.n_heads == 4
    assert build_model(run.model).stack.blocks[0].self_attention.query_key_value.out_features == (4 + 2) * 16
    changes = ["--model.qkv_bias", "true", "--model.qk_norm", "true", "--model.rotary_scaling", "llama3"]
    changes += ["--model.rotary_factor", "8", "--model.rotary_original_max_len", "64"]
    changes += ["--model.rotary_low_frequency_factor", "2", "--model.rotary_high_frequency_factor", "8"]
    model = resolved("--preset", "tiny-llama", *changes).model
    assert (model.qkv_bias, model.qk_norm, model.rotary_scaling, model.rotary_factor) == (True, True, "llama3", 8.0)
    assert (model.rotary_original_max_len, model.rotary_low_frequency_factor, model.rotary_high_frequency_factor) == (
        64,
        2.0,
        8.0,
    )
    attention = build_model(model).stack.blocks[0].self_attention
    assert attention.query_key_value.bias is not None and attention.out.bias is None
    assert attention.query_norm.weight.shape == (16,)
