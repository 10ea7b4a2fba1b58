"""ONNX export with the KV cache as inputs and outputs, laid out as optimum's decoder exports are, so
that onnxruntime (or any ONNX runtime) decodes without triform.

A stack that continues text becomes `model.onnx`:
    inputs   input_ids (B, T) int64; attention_mask (B, P + T) int64, 1 at real tokens (left padding
             allowed); past_key_values.{i}.key and .value (B, n_kv_heads, P, d_head) float32 for each
             layer i, with P = 0 (empty tensors) at the first call
    outputs  logits (B, T, vocab_size); present.{i}.key and .value (B, n_kv_heads, P + T, d_head)
An encoder-decoder becomes two graphs, the encoder and the decoder with past:
    encoder_model.onnx  input_ids, attention_mask (B, S) -> encoder_hidden_states (B, S, d_model) and,
                        computed once per source, present.{i}.encoder.key / .value of every decoder
                        layer's cross-attention (B, n_kv_heads, S, d_head)
    decoder_model.onnx  input_ids (B, T), attention_mask (B, P + T), encoder_attention_mask (B, S),
                        past_key_values.{i}.decoder.key / .value (P may be 0) and
                        past_key_values.{i}.encoder.key / .value -> logits, present.{i}.decoder.key / .value
Positions are counted from attention_mask inside the graph, as triform counts them. The graphs are
traced from the textbook parts (models/build.py's TEXTBOOK) by torch.export; `onnx.json` beside them
names the inputs and outputs, the special tokens and how a prompt is framed, and tokenizer.json is
copied when the model has one. Needs the `onnx` extra (`pip install 'triform[onnx]'`).
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from triform.checkpoint import Pretrained
from triform.convert.files import ConversionError, to_json
from triform.io import atomic_dir
from triform.models.build import TEXTBOOK, build_model
from triform.models.stack import StackInputs
from triform.objectives import read_recipe
from triform.objectives.layout import CONTINUE

OPSET = 18
STACK, ENCODER, DECODER = "model.onnx", "encoder_model.onnx", "decoder_model.onnx"
MANIFEST = "onnx.json"


class GraphLayer:
    """One layer's cache as the graph sees it: past keys and values in, present ones out (the
    functional twin of nn/cache.py's LayerCache, which writes into preallocated buffers)."""

    def __init__(self, keys: Tensor, values: Tensor, cross: tuple[Tensor, Tensor] | None = None):
        self.keys, self.values, self.cross = keys, values, cross

    def update(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        self.keys, self.values = torch.cat([self.keys, k], dim=2), torch.cat([self.values, v], dim=2)
        return self.keys, self.values


class GraphCache:
    """The KV cache of one call: what `Stack.forward` reads of a cache (length, a layer each, advance)."""

    def __init__(self, layers: list[GraphLayer]):
        self.layers = layers
        self.length = layers[0].keys.shape[2]  # symbolic under torch.export: the past length P

    def __getitem__(self, index: int) -> GraphLayer:
        return self.layers[index]

    def advance(self, n: int) -> None:
        """The graph returns the present keys and values; nothing is kept between calls."""


def pairs(flat: tuple[Tensor, ...]) -> list[tuple[Tensor, Tensor]]:
    return [(flat[i], flat[i + 1]) for i in range(0, len(flat), 2)]


class StackGraph(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: Tensor, attention_mask: Tensor, *past: Tensor) -> tuple[Tensor, ...]:
        cache = GraphCache([GraphLayer(k, v) for k, v in pairs(past)])
        logits = self.model(input_ids, "causal", padding_mask=attention_mask.bool(), cache=cache)
        return (logits, *[t for layer in cache.layers for t in (layer.keys, layer.values)])


class EncoderGraph(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> tuple[Tensor, ...]:
        memory = self.model.encode(input_ids, attention_mask.bool())
        cross = []
        for block in self.model.decoder.blocks:
            attention = block.cross_attention
            k, v = (attention.split_heads(t) for t in attention.key_value(memory).split(attention.kv_inner, dim=-1))
            if attention.key_norm is not None:
                k = attention.key_norm(k)
            cross += [k, v]
        return (memory, *cross)


class DecoderGraph(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(
        self, input_ids: Tensor, attention_mask: Tensor, encoder_attention_mask: Tensor, *past: Tensor
    ) -> tuple[Tensor, ...]:
        n_layers = len(self.model.decoder.blocks)
        own, cross = pairs(past[: 2 * n_layers]), pairs(past[2 * n_layers :])
        cache = GraphCache([GraphLayer(k, v, cross=c) for (k, v), c in zip(own, cross)])
        # No memory: every layer's cross keys and values come from the cache, computed by the encoder graph.
        inputs = StackInputs(input_ids, "causal", attention_mask.bool())
        hidden = self.model.decoder(inputs, memory=None, memory_padding_mask=encoder_attention_mask.bool(), cache=cache)
        return (self.model.head(hidden), *[t for layer in cache.layers for t in (layer.keys, layer.values)])


def past_names(n_layers: int, prefix: str, stacks: tuple[str, ...] = ("",)) -> list[str]:
    """past_key_values.{i}.key, or past_key_values.{i}.decoder.key ...: optimum's names, layer by layer."""
    return [
        f"{prefix}.{i}.{stack + '.' if stack else ''}{kind}"
        for stack in stacks
        for i in range(n_layers)
        for kind in ("key", "value")
    ]


def export_onnx(pretrained: Pretrained, directory: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write `pretrained` as ONNX graphs with the KV cache as inputs and outputs (see the module's doc)."""
    directory = Path(directory)
    if directory.exists() and not overwrite:
        raise ConversionError(f"{directory}: already exists; pass overwrite (--overwrite) to replace it")
    require_onnx()
    config = pretrained.config
    layout = prompt_layout(pretrained)
    model = build_model(config, TEXTBOOK).eval()  # plain torch: what torch.export traces into ONNX
    model.load_state_dict({name: t.float() for name, t in pretrained.model.state_dict().items()})
    with atomic_dir(directory) as staging, torch.no_grad():
        if config.arch == "stack":
            graphs = {"model": export_stack(model, staging / STACK)}
        else:
            graphs = {
                "encoder": export_encoder(model, staging / ENCODER),
                "decoder": export_decoder(model, staging / DECODER),
            }
        (staging / MANIFEST).write_text(to_json(manifest(pretrained, layout, graphs)), encoding="utf-8")
        if pretrained.tokenizer is not None:
            pretrained.tokenizer.save(str(staging / "tokenizer.json"))
    return directory


def require_onnx() -> None:
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError:
        raise ConversionError(
            "ONNX export needs the onnx and onnxscript packages (pip install 'triform[onnx]')"
        ) from None


def prompt_layout(pretrained: Pretrained):
    """How the model reads a prompt; only models that generate text left to right have a cache to export."""
    config, specials = pretrained.config, pretrained.specials
    if specials is None:
        raise ConversionError("ONNX export needs the model's special tokens (save it with them)")
    recipe = read_recipe(pretrained.extra, config.arch)
    if recipe.fills_masks(config.arch):
        raise ConversionError(
            f"ONNX export with a KV cache is for models that generate text; this one fills masks ({recipe.objective})"
        )
    layout = recipe.prompt_layout(config.arch, specials)
    if config.arch == "stack" and (layout.kind != CONTINUE or layout.pattern != "causal"):
        raise ConversionError(
            f"ONNX export of a stack needs one that continues text causally; this one ({recipe.objective}) "
            f"reads a prompt as a {layout.pattern} source before its target"
        )
    return layout


def dims():
    from torch.export import Dim

    return dict(
        batch=Dim("batch_size"),
        length=Dim("sequence_length"),
        past=Dim("past_sequence_length", min=0),
        source=Dim("encoder_sequence_length"),
        auto=Dim.AUTO,
    )


def trace(graph: nn.Module, args: tuple, path: Path, inputs: list[str], outputs: list[str], shapes: tuple) -> dict:
    """torch.export the graph into `path`; the names of its inputs and outputs, for onnx.json."""
    # torch's exporter warns, at every export, that torchvision's operators are not installed, and
    # that an axis name it was given shares its constraints with itself: nothing to act on.
    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registration.level
    registration.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="# The axis name", category=UserWarning)
            export_graph(graph, args, path, inputs, outputs, shapes)
    finally:
        registration.setLevel(level)
    name_mask_length(path)
    return {"file": path.name, "inputs": inputs, "outputs": outputs}


def export_graph(graph: nn.Module, args: tuple, path: Path, inputs: list[str], outputs: list[str], shapes) -> None:
    torch.onnx.export(
        graph,
        args,
        str(path),
        input_names=inputs,
        output_names=outputs,
        dynamic_shapes=shapes,
        opset_version=OPSET,
        external_data=sum(t.numel() for t in graph.state_dict().values()) * 4 > 2**30,  # protobuf's 2 GiB limit
        verbose=False,
    )


def name_mask_length(path: Path) -> None:
    """attention_mask covers the past and the new tokens: say so where torch.export names it s53."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    for value in model.graph.input:
        if value.name == "attention_mask":
            value.type.tensor_type.shape.dim[1].dim_param = "past_sequence_length + sequence_length"
    onnx.save(model, str(path))


def example_ids(model: nn.Module, batch: int, length: int) -> Tensor:
    return torch.arange(batch * length).reshape(batch, length) % model.config.vocab_size


def cache_example(model: nn.Module, n_layers: int, batch: int, length: int) -> list[Tensor]:
    config = model.config
    return [torch.zeros(batch, config.kv_heads, length, config.head_dim) for _ in range(2 * n_layers)]


def export_stack(model: nn.Module, path: Path) -> dict:
    n_layers, d = len(model.stack.blocks), dims()
    batch, length, past = 2, 3, 4
    args = (example_ids(model, batch, length), torch.ones(batch, past + length, dtype=torch.long))
    args += tuple(cache_example(model, n_layers, batch, past))
    per_layer = {0: d["batch"], 2: d["past"]}
    # As the signature reads them: input_ids, attention_mask, then *past as one tuple.
    shapes = ({0: d["batch"], 1: d["length"]}, {0: d["batch"], 1: d["auto"]}, (per_layer,) * (2 * n_layers))
    inputs = ["input_ids", "attention_mask", *past_names(n_layers, "past_key_values")]
    return trace(StackGraph(model), args, path, inputs, ["logits", *past_names(n_layers, "present")], shapes)


def export_encoder(model: nn.Module, path: Path) -> dict:
    n_layers, d = len(model.decoder.blocks), dims()
    args = (example_ids(model, 2, 5), torch.ones(2, 5, dtype=torch.long))
    shapes = ({0: d["batch"], 1: d["source"]}, {0: d["batch"], 1: d["source"]})
    outputs = ["last_hidden_state", *past_names(n_layers, "present", ("encoder",))]
    return trace(EncoderGraph(model), args, path, ["input_ids", "attention_mask"], outputs, shapes)


def export_decoder(model: nn.Module, path: Path) -> dict:
    n_layers, d = len(model.decoder.blocks), dims()
    batch, length, past, source = 2, 3, 4, 5
    args = (example_ids(model, batch, length), torch.ones(batch, past + length, dtype=torch.long))
    args += (torch.ones(batch, source, dtype=torch.long),)
    args += tuple(cache_example(model, n_layers, batch, past) + cache_example(model, n_layers, batch, source))
    own, cross = {0: d["batch"], 2: d["past"]}, {0: d["batch"], 2: d["source"]}
    shapes = (
        {0: d["batch"], 1: d["length"]},
        {0: d["batch"], 1: d["auto"]},
        {0: d["batch"], 1: d["source"]},
        (own,) * (2 * n_layers) + (cross,) * (2 * n_layers),
    )
    inputs = ["input_ids", "attention_mask", "encoder_attention_mask"]
    inputs += past_names(n_layers, "past_key_values", ("decoder", "encoder"))
    outputs = ["logits", *past_names(n_layers, "present", ("decoder",))]
    return trace(DecoderGraph(model), args, path, inputs, outputs, shapes)


def manifest(pretrained: Pretrained, layout, graphs: dict) -> dict:
    """What a runtime needs beside the graphs: the cache's shape, the special tokens, how a prompt is framed."""
    config, specials = pretrained.config, pretrained.specials
    document = {
        "format": "triform-onnx",
        "version": 1,
        "arch": config.arch,
        "graphs": graphs,
        "n_layers": config.n_layers if config.arch == "stack" else config.decoder_layers,
        "n_kv_heads": config.kv_heads,
        "d_head": config.head_dim,
        "vocab_size": config.vocab_size,
        "max_len": config.max_len,
        "special_tokens": specials.to_dict(),
        "eos": specials.eos,
    }
    if config.arch == "stack":
        document["prompt_prefix"] = layout.frame([])  # the tokens before a prompt: [BOS]
    else:
        document["source_suffix"] = layout.frame([])  # after the source: [EOS]
        document["decoder_start"] = specials.decoder_start_id
    return document
