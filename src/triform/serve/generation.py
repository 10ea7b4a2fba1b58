"""POST /v1/completions (OpenAI's completions API) and POST /v1/translate: one request's prompts go to
the model's worker, where they join the running batch; the answer is collected whole, or streamed as
server-sent events ("data: {chunk}" lines, then "data: [DONE]") as OpenAI streams it."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass, field

from fastapi import Request
from fastapi.responses import StreamingResponse

from triform.errors import TriformError
from triform.serve.decoding import check_room, generation_config, texts_or_ids
from triform.serve.errors import ApiError, error_body
from triform.serve.models import COMPLETIONS, TRANSLATE
from triform.serve.worker import Failed, Piece, Ticket

FINISH_REASONS = {"eos": "stop", "stop": "stop", "length": "length"}  # OpenAI's names


@dataclass
class Output:
    """One choice being assembled from pieces."""

    text: str = ""
    finish_reason: str | None = None
    n_tokens: int = 0
    tokens: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    top_logprobs: list[list[tuple[int, float]]] = field(default_factory=list)


@dataclass
class Call:
    """What one completions or translate request needs while it runs."""

    state: object  # the server (serve/app.py)
    served: object
    worker: object
    endpoint: str
    prompts: list[list[int]]
    texts: list[str]
    n: int
    logprobs: int | None
    echo: bool
    arrived: float
    ticket: Ticket | None = None
    first_token: float | None = None

    @property
    def deadline(self) -> float:
        return self.arrived + self.state.limits.request_timeout

    def choice_index(self, piece: Piece) -> int:
        return piece.prompt * self.n + piece.sample


async def completions(state, body, request: Request):
    return await run(state, body, request, COMPLETIONS, body.prompt, "prompt", echo=body.echo)


async def translate(state, body, request: Request):
    return await run(state, body, request, TRANSLATE, body.text, "text", echo=False)


async def run(state, body, request: Request, endpoint: str, value, field: str, *, echo: bool):
    arrived = time.monotonic()
    served, worker = state.resolve(body.model, endpoint)
    for name in ("presence_penalty", "frequency_penalty"):
        if getattr(body, name, 0.0):
            raise ApiError(400, f"{name}: only 0 is supported; use repetition_penalty", name)
    if echo and body.logprobs is not None:
        raise ApiError(400, "echo: not with logprobs (the prompt's log-probabilities are not computed)", "echo")
    prompts, texts = texts_or_ids(value, field, served, state.limits)
    check_room(prompts, field, served)
    config = generation_config(body, served, state.limits, len(prompts), state.precision)
    call = Call(state, served, worker, endpoint, prompts, texts, body.n, body.logprobs, echo, arrived)
    state.admit(worker)
    call.ticket = Ticket(asyncio.get_running_loop())
    worker.generate(call.ticket, prompts, config, body.logprobs)
    state.metrics.prompt_tokens.labels(served.name).inc(sum(len(p) for p in prompts))
    if body.stream:
        include_usage = body.stream_options is not None and body.stream_options.include_usage
        return StreamingResponse(stream(call, include_usage), media_type="text/event-stream")
    outputs = await collect(call, request)
    return response(call, outputs)


async def pieces(call: Call, request: Request | None):
    """The worker's pieces for this call, as lists of those that have arrived together, until every
    output has finished: when the client falls behind the model, one answer carries several tokens
    (as TGI and vLLM stream them) rather than one event per token. A failure, the time limit or
    (without streaming) the client's going away end it with an ApiError."""
    remaining = len(call.prompts) * call.n
    gone = asyncio.ensure_future(disconnected(request)) if request is not None else None
    try:
        while remaining:
            items = [await next_item(call, gone)]
            while not call.ticket.items.empty():
                items.append(call.ticket.items.get_nowait())
            for item in items:
                if isinstance(item, Failed):
                    raise failure(item.error)
                if item.text and call.first_token is None:
                    call.first_token = time.monotonic()
                    call.state.metrics.first_token.labels(call.served.name).observe(call.first_token - call.arrived)
                remaining -= item.finish_reason is not None
            yield items
    finally:
        if gone is not None:
            gone.cancel()


async def next_item(call: Call, gone):
    wait = asyncio.ensure_future(call.ticket.items.get())
    waiting = {wait} if gone is None else {wait, gone}
    try:
        done, _ = await asyncio.wait(
            waiting, timeout=max(0.0, call.deadline - time.monotonic()), return_when="FIRST_COMPLETED"
        )
    finally:
        wait.cancel()
    if wait in done:
        return wait.result()
    if gone is not None and gone in done:
        raise ApiError(499, "the client closed the connection")
    limit = call.state.limits.request_timeout
    raise ApiError(504, f"request_timeout: the request took longer than this server's limit of {limit:g} s")


async def disconnected(request: Request) -> None:
    """Returns when the client goes away (the body is read: the next message is the disconnect)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def failure(error: BaseException) -> ApiError:
    """An error inside the model's batch, as the answer to the one request it belongs to."""
    if isinstance(error, ApiError):
        return error
    if isinstance(error, (TriformError, ValueError)):  # a DataError naming a record, ...: the request's own input
        return ApiError(400, str(error))
    return ApiError(500, f"internal error: {type(error).__name__}: {error}")


async def collect(call: Call, request: Request) -> list[Output]:
    outputs = [Output() for _ in range(len(call.prompts) * call.n)]
    try:
        async for items in pieces(call, request):
            for piece in items:
                add(outputs[call.choice_index(piece)], piece)
    except ApiError as error:
        call.worker.cancel(call.ticket)
        call.state.metrics.answered(call.served.name, call.endpoint, error.status)
        raise
    tokens = sum(o.n_tokens for o in outputs)
    call.state.metrics.generated_tokens.labels(call.served.name).inc(tokens)
    call.state.metrics.answered(call.served.name, call.endpoint, 200, time.monotonic() - call.arrived)
    return outputs


def add(output: Output, piece: Piece) -> None:
    output.text += piece.text
    output.n_tokens = piece.n_tokens
    output.finish_reason = piece.finish_reason or output.finish_reason
    if piece.token is not None:
        output.tokens.append(piece.token)
        if piece.logprob is not None:
            output.logprobs.append(piece.logprob)
            output.top_logprobs.append(piece.top_logprobs or [])


def header(call: Call, identifier: str) -> dict:
    kind = "text_completion" if call.endpoint == COMPLETIONS else "translation"
    return {"id": identifier, "object": kind, "created": int(time.time()), "model": call.served.name}


def usage(call: Call, outputs_tokens: int) -> dict:
    prompt_tokens = sum(len(p) for p in call.prompts)
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": outputs_tokens,
        "total_tokens": prompt_tokens + outputs_tokens,
    }


def choices_key(call: Call) -> str:
    return "choices" if call.endpoint == COMPLETIONS else "translations"


def response(call: Call, outputs: list[Output]) -> dict:
    choices = []
    for index, output in enumerate(outputs):
        prefix = call.texts[index // call.n] if call.echo else ""
        choice = {
            "text": prefix + output.text,
            "index": index,
            "finish_reason": FINISH_REASONS.get(output.finish_reason),
        }
        if call.endpoint == COMPLETIONS:
            choice["logprobs"] = logprobs_of(call, output, len(prefix)) if call.logprobs is not None else None
        choices.append(choice)
    body = header(call, f"cmpl-{uuid.uuid4().hex}")
    return {**body, choices_key(call): choices, "usage": usage(call, sum(o.n_tokens for o in outputs))}


def logprobs_of(call: Call, output: Output, offset: int) -> dict:
    """OpenAI's legacy completions logprobs: each token's text, log-probability, the best alternatives."""

    def text(token: int) -> str:
        return call.served.tokenizer.decode([token], skip_special_tokens=False)

    offsets, position = [], offset
    for token in output.tokens:
        offsets.append(position)
        position += len(text(token))
    top = [{text(t): lp for t, lp in alternatives} for alternatives in output.top_logprobs] if call.logprobs else None
    return {
        "tokens": [text(t) for t in output.tokens[: len(output.logprobs)]],
        "token_logprobs": output.logprobs,
        "top_logprobs": top,
        "text_offset": offsets[: len(output.logprobs)],
    }


async def stream(call: Call, include_usage: bool):
    """Server-sent events: one chunk per arrival of pieces, the last of each output with its finish
    reason; the usage counts on request; then [DONE]. An error after the start is one last event."""
    identifier, finished, n_tokens = f"cmpl-{uuid.uuid4().hex}", False, {}
    key = choices_key(call)
    try:
        if call.echo:
            for index in range(len(call.prompts) * call.n):
                choice = {"text": call.texts[index // call.n], "index": index, "finish_reason": None, "logprobs": None}
                yield sse({**header(call, identifier), key: [choice]})
        async for items in pieces(call, None):
            merged: dict[int, Output] = {}  # per output, the pieces that came together
            for piece in items:
                add(merged.setdefault(call.choice_index(piece), Output()), piece)
            choices = []
            for index, output in merged.items():
                n_tokens[index] = output.n_tokens
                if not output.text and output.finish_reason is None:
                    continue
                reason = FINISH_REASONS.get(output.finish_reason)
                choice = {"text": output.text, "index": index, "finish_reason": reason}
                if call.endpoint == COMPLETIONS:
                    choice["logprobs"] = logprobs_of(call, output, 0) if call.logprobs is not None else None
                choices.append(choice)
            if choices:
                yield sse({**header(call, identifier), key: choices})
        finished = True
        tokens = sum(n_tokens.values())
        call.state.metrics.generated_tokens.labels(call.served.name).inc(tokens)
        call.state.metrics.answered(call.served.name, call.endpoint, 200, time.monotonic() - call.arrived)
        if include_usage:
            yield sse({**header(call, identifier), key: [], "usage": usage(call, tokens)})
        yield "data: [DONE]\n\n"
    except ApiError as error:
        call.state.metrics.answered(call.served.name, call.endpoint, error.status)
        yield sse(error_body(error.status, error.message, error.param))
    finally:
        if not finished:  # an error, the time limit, or the client went away: the rows leave the batch
            call.worker.cancel(call.ticket)


def sse(data: dict) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"
