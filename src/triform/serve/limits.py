"""What the server accepts and how much it takes on at once: every limit in one place, each one
reachable from `triform serve`."""

from __future__ import annotations

from dataclasses import dataclass, fields

from triform.errors import ConfigError


@dataclass(frozen=True)
class Limits:
    max_tokens: int = 512  # most new tokens of one output
    max_request_tokens: int = 4096  # n x max_tokens x prompts of one request
    max_prompt_tokens: int | None = None  # tokens of one prompt or text; None: what the model's max_len leaves
    max_inputs: int = 64  # prompts, texts or records in one request
    max_body_bytes: int = 1 << 20  # a request's body
    request_timeout: float = 120.0  # seconds from arrival to the last token
    queue_size: int = 256  # requests waiting for the model (beyond it: 429 with Retry-After)
    slots: int = 32  # rows decoded together (continuous batching), and inputs per batch elsewhere
    max_length_factor: float | None = 1.5  # a target's tokens at most this x its source's + 10; None: off

    def __post_init__(self):
        for field in fields(self):
            value = getattr(self, field.name)
            optional = field.name in ("max_prompt_tokens", "max_length_factor")
            if optional and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ConfigError(f"{field.name}: expected a positive number, got {value!r}")
