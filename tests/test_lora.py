"""LoRA adapters (models/lora.py, models/adapters.py): on every architecture and part, fused q/k/v
included; merged weights compute what base + adapters compute; only adapters train; adapter
folders round-trip and refuse a base they were not trained on, naming the field."""

from __future__ import annotations

import pytest
import torch
from conftest import VARIANTS, random_ids, tiny_config

from triform.checkpoint import save_model
from triform.errors import ConfigError, TriformError
from triform.models import build_model
from triform.models.adapters import load_adapted, put_adapters, save_adapter
from triform.models.build import TEXTBOOK
from triform.models.lora import LoraLinear, LoraOptions, add_adapters, merge_adapters, trainable_state
from triform.train.config import OptimConfig
from triform.train.optim import build_optimizer


def logits(model, arch: str) -> torch.Tensor:
    ids = random_ids(2, 12)
    if arch == "encoder-decoder":
        return model(ids, random_ids(2, 9, 1))
    return model(ids, "causal")


def randomise_adapters(model) -> None:
    """B starts at zero (the update starts at zero); give it values so that the tests test something."""
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if ".lora_b." in name:
                parameter.normal_(std=0.2)


CASES = [("stack", "learned-pre-layernorm"), ("stack", "grouped-query-qwen"), ("encoder-decoder", "relative-t5")]


@pytest.mark.parametrize("arch,variant", CASES)
@pytest.mark.parametrize("targets", ["qkv,out", "q,v", "k,ffn"])
def test_merged_weights_give_the_logits_of_base_plus_adapters(arch, variant, targets):
    model = build_model(tiny_config(arch, **VARIANTS[variant])).eval()
    add_adapters(model, LoraOptions(rank=4, alpha=8.0, targets=targets))
    randomise_adapters(model)
    adapted = logits(model, arch)
    merged = logits(merge_adapters(model), arch)
    assert not any(isinstance(m, LoraLinear) for m in model.modules())
    torch.testing.assert_close(merged, adapted, rtol=1e-5, atol=1e-5)


def test_fresh_adapters_change_nothing_and_a_fused_projection_adapts_only_its_named_parts():
    model = build_model(tiny_config()).eval()
    before = logits(model, "stack")
    add_adapters(model, LoraOptions(rank=2, targets="q,v"))
    torch.testing.assert_close(logits(model, "stack"), before)  # B = 0 (Hu et al. §4.1)
    fused = model.stack.blocks[0].self_attention.query_key_value
    assert sorted(fused.lora_a) == ["q", "v"] and fused.lora_b["v"].shape == (32, 2)
    randomise_adapters(model)
    delta = fused.delta()  # rows of q, k, v
    assert delta[32:64].abs().max() == 0 and delta[:32].abs().max() > 0 and delta[64:].abs().max() > 0
    assert not isinstance(model.stack.blocks[0].self_attention.out, LoraLinear)


def test_the_adapted_layers_keep_the_kernel_of_the_layer_they_replace():
    kernels_model, textbook_model = build_model(tiny_config()), build_model(tiny_config(), TEXTBOOK)
    for model in (kernels_model, textbook_model):
        add_adapters(model, LoraOptions(rank=2))
    from triform.kernels.linear import linear

    assert kernels_model.stack.blocks[0].self_attention.out.product is linear
    assert textbook_model.stack.blocks[0].self_attention.out.product is torch.nn.functional.linear
    merge_adapters(kernels_model)
    assert type(kernels_model.stack.blocks[0].self_attention.out).__name__ == "Linear"


def test_only_the_adapters_change_when_training():
    model = build_model(tiny_config("encoder-decoder"))
    add_adapters(model, LoraOptions(rank=2, targets="qkv,out,ffn"))
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    optimizer = build_optimizer(model, OptimConfig(lr=1e-2), torch.device("cpu"))
    for _ in range(3):
        logits(model, "encoder-decoder").logsumexp(-1).mean().backward()
        optimizer.step()
        optimizer.zero_grad()
    after = model.state_dict()
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    adapters = {name for name in before if ".lora_" in name}
    assert changed and changed <= adapters
    assert set(trainable_state(model)) == adapters
    assert any(".lora_a." in name for name in changed) and any(".lora_b." in name for name in changed)


def test_adapters_round_trip_through_their_folder_and_onto_the_base(tmp_path):
    base = build_model(tiny_config()).eval()
    save_model(base, tmp_path / "base")
    add_adapters(base, LoraOptions(rank=3, alpha=6.0, targets="qkv,ffn"))
    randomise_adapters(base)
    save_adapter(base, tmp_path / "adapter", base=str(tmp_path / "base"))
    loaded = load_adapted(tmp_path / "base", tmp_path / "adapter").model
    torch.testing.assert_close(logits(loaded, "stack"), logits(base, "stack"), rtol=0, atol=0)
    assert trainable_state(loaded).keys() == trainable_state(base).keys()


def test_adapters_refuse_a_base_of_another_configuration_naming_the_field(tmp_path):
    trained_on = build_model(tiny_config())
    add_adapters(trained_on, LoraOptions(rank=2))
    save_adapter(trained_on, tmp_path / "adapter", base="runs/base")
    other = build_model(tiny_config(d_ff=96))
    with pytest.raises(TriformError, match=r"adapter\.json: base model\.d_ff is 64, but .* has 96; .*runs/base"):
        put_adapters(other, tmp_path / "adapter")
    same_shapes = build_model(tiny_config())  # other weights
    with pytest.raises(TriformError, match="base digest"):
        put_adapters(same_shapes, tmp_path / "adapter")


@pytest.mark.parametrize(
    "options,message",
    [
        (LoraOptions(rank=-1), "lora.rank"),
        (LoraOptions(rank=2, alpha=0), "lora.alpha"),
        (LoraOptions(rank=2, dropout=1.0), "lora.dropout"),
        (LoraOptions(rank=2, targets="q,gate"), "lora.targets: unknown target 'gate'"),
    ],
)
def test_bad_options_are_refused_by_field(options, message):
    with pytest.raises(ConfigError, match=message):
        add_adapters(build_model(tiny_config()), options)


def test_adapters_are_not_stacked_on_adapters():
    model = build_model(tiny_config())
    add_adapters(model, LoraOptions(rank=2))
    with pytest.raises(ConfigError, match="has adapters already"):
        add_adapters(model, LoraOptions(rank=2))
