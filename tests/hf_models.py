"""Tiny, randomly initialised Hugging Face models of every family triform converts (tests only).

Every weight, norms and biases included, is perturbed away from its initial value, so that a
swapped or transposed tensor changes the outputs and cannot pass a parity test by luck.
"""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

VOCAB = 120
PAD, EOS, BOS = 1, 2, 0  # ids used by the BART-like vocabularies below


@pytest.fixture(autouse=True)
def single_thread():
    """Tiny models run fastest on one thread, and a shared machine does not slow them down."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def perturb(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        # Frozen tables (Marian's sinusoids) and buffers that are not saved (rotary frequencies) are
        # functions of the config: left alone.
        trainable = [p for p in model.parameters() if p.requires_grad]
        saved = set(model.state_dict())
        buffers = [tensor for name, tensor in model.named_buffers() if name in saved]
        for tensor in [*trainable, *buffers]:
            if tensor.is_floating_point() and tensor.numel() > 1:
                tensor.add_(torch.randn(tensor.shape, generator=generator) * 0.1)
    return model.eval()


def tiny(family: str, seed: int = 0) -> torch.nn.Module:
    """A tiny model of `family` (see FAMILIES), seeded and perturbed."""
    torch.manual_seed(seed)
    model = BUILDERS[family]()
    return perturb(model, seed)


def _bert():
    config = transformers.BertConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=48,
        max_position_embeddings=64,
        pad_token_id=0,
    )
    return transformers.BertForMaskedLM(config)


def _roberta():
    config = transformers.RobertaConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=48,
        max_position_embeddings=66,
        type_vocab_size=1,
        pad_token_id=PAD,
        bos_token_id=BOS,
        eos_token_id=EOS,
    )
    return transformers.RobertaForMaskedLM(config)


def _distilbert():
    config = transformers.DistilBertConfig(
        vocab_size=VOCAB, dim=32, n_layers=2, n_heads=4, hidden_dim=48, max_position_embeddings=64, activation="gelu"
    )
    return transformers.DistilBertForMaskedLM(config)


def _gpt2():
    config = transformers.GPT2Config(
        vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=64, bos_token_id=VOCAB - 1, eos_token_id=VOCAB - 1
    )
    return transformers.GPT2LMHeadModel(config)


def _bart():
    config = transformers.BartConfig(
        vocab_size=VOCAB,
        d_model=32,
        encoder_layers=2,
        decoder_layers=1,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=48,
        decoder_ffn_dim=48,
        max_position_embeddings=64,
        pad_token_id=PAD,
        bos_token_id=BOS,
        eos_token_id=EOS,
        decoder_start_token_id=EOS,
        forced_eos_token_id=EOS,
    )
    return transformers.BartForConditionalGeneration(config)


def _marian():
    # As the OPUS-MT models: swish, scaled embeddings, eos 0, and the padding token starts the decoder.
    config = transformers.MarianConfig(
        vocab_size=VOCAB,
        d_model=32,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=48,
        decoder_ffn_dim=48,
        max_position_embeddings=64,
        activation_function="swish",
        scale_embedding=True,
        pad_token_id=VOCAB - 1,
        eos_token_id=0,
        decoder_start_token_id=VOCAB - 1,
        forced_eos_token_id=0,
    )
    return transformers.MarianMTModel(config)


def _t5_config(**changes):
    values = dict(
        vocab_size=VOCAB,
        d_model=32,
        d_kv=8,
        d_ff=48,
        num_layers=2,
        num_decoder_layers=1,
        num_heads=4,
        relative_attention_num_buckets=8,
        relative_attention_max_distance=20,
        decoder_start_token_id=0,
    )
    values.update(changes)
    return values


def _t5():
    return transformers.T5ForConditionalGeneration(transformers.T5Config(**_t5_config()))


def _untie(model):
    """A separate output matrix, as T5 v1.1 and mT5 checkpoints have."""
    model.lm_head.weight = torch.nn.Parameter(model.shared.weight.detach().clone())
    return model


def _t5_v1_1():
    config = transformers.T5Config(**_t5_config(feed_forward_proj="gated-gelu", tie_word_embeddings=False))
    return _untie(transformers.T5ForConditionalGeneration(config))


def _mt5():
    config = transformers.MT5Config(**_t5_config(feed_forward_proj="gated-gelu"))
    return _untie(transformers.MT5ForConditionalGeneration(config))


def _llama_sizes(**changes):
    """Four query heads over two key/value heads: grouped-query attention."""
    values = dict(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        bos_token_id=BOS,
        eos_token_id=EOS,
    )
    values.update(changes)
    return values


def _llama():
    # Llama 3.1's rotary scaling as its config has it: at this head size one frequency is divided by
    # the factor, one blended and two kept.
    rope = dict(rope_type="llama3", rope_theta=500000.0, factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0)
    config = transformers.LlamaConfig(
        **_llama_sizes(rope_parameters={**rope, "original_max_position_embeddings": 8192})
    )
    return transformers.LlamaForCausalLM(config)


def _llama_biased():
    # Biases on every projection, one key/value head (multi-query), tied embeddings, position interpolation.
    config = transformers.LlamaConfig(
        **_llama_sizes(
            num_key_value_heads=1,
            attention_bias=True,
            mlp_bias=True,
            tie_word_embeddings=True,
            rope_parameters=dict(rope_type="linear", rope_theta=10000.0, factor=2.0),
        )
    )
    return transformers.LlamaForCausalLM(config)


def _mistral():
    # A sliding window shorter than the context: triform holds the model to the window.
    config = transformers.MistralConfig(**_llama_sizes(sliding_window=32))
    return transformers.MistralForCausalLM(config)


def _qwen2():
    # Biases on q, k and v only; tied embeddings, as the small Qwen2 models; YaRN.
    rope = dict(rope_type="yarn", rope_theta=1000000.0, factor=4.0, original_max_position_embeddings=16)
    config = transformers.Qwen2Config(**_llama_sizes(tie_word_embeddings=True, rope_parameters=rope))
    return transformers.Qwen2ForCausalLM(config)


def _qwen3():
    # q/k norms, and a head size of its own (16, where hidden_size / heads is 8).
    config = transformers.Qwen3Config(**_llama_sizes(head_dim=16, rope_parameters=dict(rope_theta=1000000.0)))
    return transformers.Qwen3ForCausalLM(config)


BUILDERS = {
    "bert": _bert,
    "roberta": _roberta,
    "distilbert": _distilbert,
    "gpt2": _gpt2,
    "bart": _bart,
    "marian": _marian,
    "t5": _t5,
    "t5-v1.1": _t5_v1_1,
    "mt5": _mt5,
    "llama": _llama,
    "llama-biased": _llama_biased,
    "mistral": _mistral,
    "qwen2": _qwen2,
    "qwen3": _qwen3,
}
FAMILIES = list(BUILDERS)
ENCODER_ONLY = ("bert", "roberta", "distilbert")
LLAMA_LIKE = ("llama", "llama-biased", "mistral", "qwen2", "qwen3")
