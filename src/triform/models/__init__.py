"""Architectures: one stack, or an encoder and a decoder."""

from triform.models.build import Model, build_model
from triform.models.encoder_decoder import EncoderDecoderModel
from triform.models.stack import StackInputs
from triform.models.stack_model import StackModel

__all__ = ["Model", "build_model", "EncoderDecoderModel", "StackInputs", "StackModel"]
