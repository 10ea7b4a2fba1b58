"""Generation: the decoding strategies, on the KV cache of `triform.nn.cache`.

- `TextGenerator`: text in, text out (generate, stream, fill_mask, mask_predict) for a model folder.
- `generate_ids` / `greedy`: token ids in, token ids out, for any model and layout.
- `GenerationConfig`: every decoding option, validated.
- `speculative.speculative_ids`: greedy decoding or sampling with a draft model (`TextGenerator.with_draft`).
"""

from triform.generate.api import Generation, TextGenerator
from triform.generate.beam import length_penalty
from triform.generate.config import GenerationConfig
from triform.generate.engine import PromptTooLong, generate_ids, greedy, resolve_layout
from triform.generate.fill_mask import Candidate, fill_mask
from triform.generate.mask_predict import mask_predict

__all__ = [
    "Candidate",
    "Generation",
    "GenerationConfig",
    "PromptTooLong",
    "TextGenerator",
    "fill_mask",
    "generate_ids",
    "greedy",
    "length_penalty",
    "mask_predict",
    "resolve_layout",
]
