"""The request bodies, as pydantic models: strict types (a number is not a string, a flag not a
number), unknown fields refused, and each field documented in the OpenAPI page (/docs). The OpenAI
fields keep their names and defaults; triform's decoding options are extra fields of the same name as
in GenerationConfig."""

from __future__ import annotations

from typing import Literal, Union

from pydantic import BaseModel, ConfigDict, Field

Texts = Union[str, list[str]]
Prompts = Union[str, list[str], list[int], list[list[int]]]
# What a field of a union type takes, for an error message that names the alternatives.
EXPECTED = {
    "prompt": "a string, a list of strings, a list of token ids or a list of lists of token ids",
    "input": "a string, a list of strings, a list of token ids or a list of lists of token ids",
    "text": "a string or a list of strings",
    "stop": "a string or a list of strings",
}


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    model: str | None = Field(None, description="a served model's name (GET /v1/models); optional with one model")


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    include_usage: bool = Field(False, description="a last chunk with the usage counts")


class Decoding(Body):
    """How to generate: OpenAI's options, and GenerationConfig's under their own names."""

    max_tokens: int = Field(16, ge=1, description="most new tokens per output")
    temperature: float | None = Field(
        None, ge=0, le=100, description="0: greedy; above 0: sampling at this temperature (default 1; beams: greedy)"
    )
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling (Holtzman et al. 2020)")
    n: int = Field(1, ge=1, description="outputs per prompt: samples, or the n best beams")
    stream: bool = Field(False, description="server-sent events, one per piece of text")
    stream_options: StreamOptions | None = None
    logprobs: int | None = Field(
        None, ge=0, le=20, description="log-probability of each new token and of this many best alternatives"
    )
    stop: Texts | None = Field(None, description="stop strings: the text ends before the first one")
    seed: int | None = Field(None, description="the same seed gives the same samples, alone or in any batch")
    user: str | None = Field(None, description="the end user, as OpenAI's field (not used)")
    top_k: int = Field(0, ge=0, description="sample among the k most likely tokens (0: all)")
    min_p: float = Field(0.0, ge=0, lt=1, description="drop tokens below min_p x the most likely one's probability")
    min_new_tokens: int = Field(0, ge=0, description="[EOS] is forbidden before this many tokens")
    repetition_penalty: float = Field(1.0, gt=0, le=100, description="CTRL's penalty on tokens already seen (1: off)")
    no_repeat_ngram_size: int = Field(0, ge=0, description="never repeat an n-gram of this size (0: off)")
    num_beams: int = Field(1, ge=1, description="beam search with this many beams (not streamed)")
    length_penalty: float = Field(0.6, ge=-10, le=10, description="beam search: alpha of Wu et al. 2016")
    early_stopping: bool = Field(True, description="beam search stops once num_beams hypotheses are finished")
    max_length_factor: float | None = Field(
        None, gt=0, le=1000, description="source -> target models: at most factor x source tokens + 10 (null: off)"
    )


class CompletionRequest(Decoding):
    prompt: Prompts = Field(description="text(s), or token ids, to continue (or to write a target for)")
    echo: bool = Field(False, description="the prompt's text before each output")
    presence_penalty: float = Field(0.0, description="OpenAI's; only 0 (use repetition_penalty)")
    frequency_penalty: float = Field(0.0, description="OpenAI's; only 0 (use repetition_penalty)")


class TranslateRequest(Decoding):
    text: Texts = Field(description="source text(s)")
    max_tokens: int = Field(256, ge=1, description="most new tokens per output")


class EmbeddingRequest(Body):
    input: Prompts = Field(description="text(s), or token ids, to embed")
    encoding_format: Literal["float", "base64"] = Field("float", description="base64: little-endian float32 bytes")
    dimensions: int | None = Field(None, ge=1, description="only the model's d_model")
    user: str | None = None
    pooling: Literal["mean", "cls", "last"] | None = Field(None, description="default: the model's own")
    normalize: bool | None = Field(None, description="L2-normalise (default: the model's own)")


class FillMaskRequest(Body):
    text: Texts = Field(description="text(s) with [MASK] in them")
    top_k: int = Field(5, ge=1, le=100, description="candidates per [MASK]")


class PredictRequest(Body):
    instances: list[dict] = Field(description="records with the task's columns (GET /v1/models lists them)")
