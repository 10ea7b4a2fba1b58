"""Activation checkpointing gives the loss and gradients of the plain forward, on every architecture
and with dropout on (the RNG state is replayed); loading a model folder memory-maps its weights onto
a model built on the meta device, drawing no random init."""

from __future__ import annotations

import pytest
import torch
from conftest import VARIANTS, random_ids, tiny_config

import triform.models.build as build
from triform.checkpoint import load_model, save_model, unique_state_dict
from triform.models import build_model
from triform.models.lora import LoraOptions, add_adapters
from triform.models.stack import checkpoint_activations


def loss_and_gradients(model, arch: str, seed: int = 1):
    torch.manual_seed(seed)  # the same dropout masks for both runs
    ids = random_ids(2, 12)
    outputs = model(ids, random_ids(2, 9, 1)) if arch == "encoder-decoder" else model(ids, "causal")
    loss = outputs.logsumexp(-1).mean()
    loss.backward()
    gradients = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return loss.detach(), gradients


CASES = [("stack", "learned-pre-layernorm"), ("stack", "rotary-rmsnorm-swiglu"), ("encoder-decoder", "relative-t5")]


@pytest.mark.parametrize("arch,variant", CASES)
@pytest.mark.parametrize("lora", [False, True])
def test_checkpointing_gives_the_same_loss_and_gradients(arch, variant, lora):
    model = build_model(tiny_config(arch, dropout=0.1, attention_dropout=0.1, **VARIANTS[variant])).train()
    if lora:
        add_adapters(model, LoraOptions(rank=2, dropout=0.1, targets="qkv,out,ffn"))
    plain_loss, plain_gradients = loss_and_gradients(model, arch)
    checkpoint_activations(model)
    stacks = [model.encoder, model.decoder] if arch == "encoder-decoder" else [model.stack]
    assert all(stack.checkpointing for stack in stacks)
    loss, gradients = loss_and_gradients(model, arch)
    torch.testing.assert_close(loss, plain_loss, rtol=0, atol=0)
    assert gradients.keys() == plain_gradients.keys() and gradients
    for name, gradient in gradients.items():
        torch.testing.assert_close(gradient, plain_gradients[name], rtol=1e-6, atol=1e-7, msg=name)


def test_checkpointing_keeps_fewer_activations():
    """What it is for: the tensors kept for the backward pass of a 4-block stack take less memory."""
    model = build_model(tiny_config(n_layers=4, d_model=64, max_len=128))
    ids = random_ids(4, 128)

    def saved_bytes() -> int:
        total = []

        def pack(tensor):
            total.append(tensor.numel() * tensor.element_size())
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model(ids, "causal").sum()
        return sum(total)

    plain = saved_bytes()
    checkpoint_activations(model)
    assert saved_bytes() < 0.5 * plain


@pytest.mark.parametrize("variant", ["sinusoidal-post", "grouped-query-qwen", "bert-parts"])
def test_loading_memory_maps_the_weights_onto_a_meta_model_without_a_random_init(tmp_path, monkeypatch, variant):
    arch = "encoder-decoder" if variant == "sinusoidal-post" else "stack"
    saved = build_model(tiny_config(arch, **VARIANTS[variant])).eval()
    save_model(saved, tmp_path / "model")

    def no_init(*args, **kwargs):
        raise AssertionError("loading drew a random init")

    def on_meta_only(function):  # torch's own default inits run too, on the meta device: no work
        def checked(tensor, *args, **kwargs):
            if not tensor.is_meta:
                raise AssertionError(f"loading drew a random init of a {list(tensor.shape)} tensor")
            return function(tensor, *args, **kwargs)

        return checked

    monkeypatch.setattr(build, "initialise_weights", no_init)
    for name in ("normal_", "uniform_", "kaiming_uniform_"):
        monkeypatch.setattr(torch.nn.init, name, on_meta_only(getattr(torch.nn.init, name)))
    loaded = load_model(tmp_path / "model").model
    state = unique_state_dict(loaded)
    assert state.keys() == unique_state_dict(saved).keys()
    for name, tensor in unique_state_dict(saved).items():
        assert torch.equal(state[name], tensor), name
    assert not any(t.is_meta for t in [*loaded.parameters(), *loaded.buffers()])
    ids = random_ids(2, 10)
    inputs = (ids, random_ids(2, 7, 1)) if arch == "encoder-decoder" else (ids, "causal")
    torch.testing.assert_close(loaded(*inputs), saved(*inputs), rtol=0, atol=0)
    if saved.config.tie_embeddings:
        last = loaded.decoder if arch == "encoder-decoder" else loaded.stack
        assert loaded.head.projection.weight is last.embeddings.token.weight


def test_loaded_weights_are_the_files_pages_not_a_copy(tmp_path):
    save_model(build_model(tiny_config()), tmp_path / "model")
    loaded = load_model(tmp_path / "model").model
    weight = loaded.stack.blocks[0].feedforward.up.weight
    path = str(tmp_path / "model" / "model.safetensors")
    mapped = []
    for line in open("/proc/self/maps"):
        if line.rstrip().endswith(path):
            start, end = (int(x, 16) for x in line.split()[0].split("-"))
            mapped.append((start, end))
    assert any(start <= weight.data_ptr() < end for start, end in mapped)
