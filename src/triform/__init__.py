"""triform: autoregressive, autoencoding and sequence-to-sequence Transformers from one set of parts.

The family of a Transformer is decided by its objective and task, not its architecture: a
ModelConfig picks the weights, an objective picks the attention pattern and the targets.
"""

from triform.checkpoint import load_model, save_model
from triform.config import ModelConfig
from triform.convert import from_pretrained
from triform.models import EncoderDecoderModel, StackModel, build_model
from triform.models.presets import PRESETS, get_preset
from triform.objectives import Batch, make_objective
from triform.vocab import SpecialTokens

__version__ = "0.1.0"
__all__ = [
    "Batch",
    "EncoderDecoderModel",
    "ModelConfig",
    "PRESETS",
    "SpecialTokens",
    "StackModel",
    "build_model",
    "from_pretrained",
    "get_preset",
    "load_model",
    "make_objective",
    "save_model",
]
