"""From a request body to what the decoding engine takes: token ids of each prompt, checked against
the model and the server's limits, and a GenerationConfig. Every refusal names the field."""

from __future__ import annotations

from triform.errors import ConfigError
from triform.generate import GenerationConfig
from triform.serve.errors import ApiError
from triform.serve.limits import Limits
from triform.serve.schemas import Decoding

# GenerationConfig's name of a field -> the API's, for error messages.
API_NAMES = {"max_new_tokens": "max_tokens", "num_return_sequences": "n", "do_sample": "temperature"}


def texts_or_ids(value, field: str, served, limits: Limits) -> tuple[list[list[int]], list[str]]:
    """(token ids, texts) of each input of a field that takes text(s) or token ids."""
    if isinstance(value, str):
        value = [value]
    if not value:
        raise ApiError(400, f"{field}: expected at least one input, got an empty list", field)
    if isinstance(value[0], int):
        value = [value]
    if len(value) > limits.max_inputs:
        raise ApiError(400, f"{field}: at most {limits.max_inputs} inputs a request, got {len(value)}", field)
    ids, texts = [], []
    for index, item in enumerate(value):
        if isinstance(item, str):
            ids.append(served.encode(item))
            texts.append(item)
            continue
        bad = [t for t in item if not 0 <= t < served.config.vocab_size]
        if bad:
            raise ApiError(
                400, f"{field}[{index}]: token ids are 0 to {served.config.vocab_size - 1}, got {bad[0]}", field
            )
        ids.append(list(item))
        texts.append(served.decode(item))
    for index, prompt in enumerate(ids):
        if limits.max_prompt_tokens is not None and len(prompt) > limits.max_prompt_tokens:
            raise ApiError(
                400,
                f"{field}[{index}]: {len(prompt)} tokens, over this server's limit of {limits.max_prompt_tokens}",
                field,
            )
    return ids, texts


def check_room(prompts: list[list[int]], field: str, served) -> None:
    layout, max_len = served.generator.layout, served.config.max_len
    for index, prompt in enumerate(prompts):
        if layout.room(prompt, max_len) < 1:
            raise ApiError(
                400, f"{field}[{index}]: {len(prompt)} tokens leave no room to generate within max_len {max_len}", field
            )


def generation_config(body: Decoding, served, limits: Limits, n_prompts: int, precision: str) -> GenerationConfig:
    if "max_tokens" not in body.model_fields_set:  # the API's default, within this server's limit
        body = body.model_copy(update={"max_tokens": min(body.max_tokens, limits.max_tokens)})
    if body.max_tokens > limits.max_tokens:
        raise ApiError(
            400, f"max_tokens: at most {limits.max_tokens} on this server, got {body.max_tokens}", "max_tokens"
        )
    total = body.n * body.max_tokens * n_prompts
    if total > limits.max_request_tokens:
        raise ApiError(
            400,
            f"n: n x max_tokens x prompts = {body.n} x {body.max_tokens} x {n_prompts} = {total} tokens, over this "
            f"server's limit of {limits.max_request_tokens} a request",
            "n",
        )
    beams = body.num_beams > 1
    if beams and body.temperature not in (None, 0):
        raise ApiError(400, "temperature: beam search is deterministic; leave temperature unset or 0", "temperature")
    if beams and body.stream:
        raise ApiError(400, "stream: beam search decides only at the end; stream greedy decoding or sampling", "stream")
    writes_target = served.generator.layout.writes_target
    factor = limits.max_length_factor if writes_target else None
    if "max_length_factor" in body.model_fields_set:
        factor = body.max_length_factor
        if factor is not None and not writes_target:
            raise ApiError(
                400,
                f"max_length_factor: bounds a target by its source; model {served.name!r} continues text",
                "max_length_factor",
            )
    stop = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
    if any(not s for s in stop) or len(stop) > 16:
        raise ApiError(400, "stop: expected at most 16 non-empty strings", "stop")
    sampling = not beams and (body.temperature is None or body.temperature > 0)
    try:
        return GenerationConfig(
            max_new_tokens=body.max_tokens,
            min_new_tokens=body.min_new_tokens,
            do_sample=sampling,
            temperature=body.temperature if sampling and body.temperature else 1.0,
            top_k=body.top_k,
            top_p=body.top_p,
            min_p=body.min_p,
            num_beams=body.num_beams,
            length_penalty=body.length_penalty,
            early_stopping=body.early_stopping,
            num_return_sequences=body.n,
            repetition_penalty=body.repetition_penalty,
            no_repeat_ngram_size=body.no_repeat_ngram_size,
            stop=tuple(stop),
            seed=body.seed,
            precision=precision,
            max_length_factor=factor,
        )
    except ConfigError as error:
        name = str(error).split(":", 1)[0].removeprefix("generation.")
        field = API_NAMES.get(name, name)
        raise ApiError(400, f"{field}:{str(error).split(':', 1)[1]}", field) from None
