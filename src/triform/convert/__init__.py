"""Hugging Face interoperability: import and export checkpoints of BERT, RoBERTa, DistilBERT,
GPT-2, BART, T5 (v1.0, v1.1, mT5), Marian, Llama, Mistral, Qwen2 and Qwen3, with their tokenizers,
without `transformers`; and ONNX export with the KV cache as inputs and outputs (convert/onnx.py).

All mapping between Hugging Face's names and triform's lives in this package, one module per family.
"""

from triform.convert.api import (
    FAMILIES,
    ConversionWarning,
    convert_from_hf,
    convert_to_hf,
    convert_to_onnx,
    export_hf,
    from_pretrained,
    import_hf,
    infer_model_type,
)
from triform.convert.files import ConversionError
from triform.convert.tokenizer import load_hf_tokenizer

__all__ = [
    "FAMILIES",
    "ConversionError",
    "ConversionWarning",
    "convert_from_hf",
    "convert_to_hf",
    "convert_to_onnx",
    "export_hf",
    "from_pretrained",
    "import_hf",
    "infer_model_type",
    "load_hf_tokenizer",
]
