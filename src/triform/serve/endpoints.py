"""POST /v1/embeddings (OpenAI's embeddings API), /v1/fill-mask and /v1/predict: each request's inputs
are checked here, then computed by the model's worker in one batch with whatever requests of the same
kind and options are waiting."""

from __future__ import annotations

import asyncio
import base64
import time

from fastapi import Request

from triform.data.records import Record
from triform.generate.fill_mask import fill_mask
from triform.serve.decoding import texts_or_ids
from triform.serve.errors import ApiError
from triform.serve.generation import disconnected, failure
from triform.serve.models import EMBEDDINGS, FILL_MASK, PREDICT
from triform.serve.worker import Failed, Job, Ticket
from triform.tasks.embed import Embedder, Pooling
from triform.vocab import MASK


async def compute(state, request: Request, served, worker, endpoint: str, key: tuple, run, inputs: list) -> list:
    """The outputs of `inputs`, run by the worker in a batch of jobs with the same key."""
    arrived = time.monotonic()
    state.admit(worker)
    ticket = Ticket(asyncio.get_running_loop())
    worker.submit(Job(key, run, inputs, ticket))
    result = asyncio.ensure_future(ticket.items.get())
    gone = asyncio.ensure_future(disconnected(request))
    try:
        timeout = state.limits.request_timeout
        done, _ = await asyncio.wait({result, gone}, timeout=timeout, return_when="FIRST_COMPLETED")
        if result not in done:
            worker.cancel(ticket)
            if gone in done:
                raise ApiError(499, "the client closed the connection")
            raise ApiError(504, f"request_timeout: the request took longer than this server's limit of {timeout:g} s")
        item = result.result()
        if isinstance(item, Failed):
            raise failure(item.error)
    except ApiError as error:
        state.metrics.answered(served.name, endpoint, error.status)
        raise
    finally:
        result.cancel()
        gone.cancel()
    state.metrics.answered(served.name, endpoint, 200, time.monotonic() - arrived)
    return item.value


async def embeddings(state, body, request: Request):
    served, worker = state.resolve(body.model, EMBEDDINGS)
    if body.dimensions is not None and body.dimensions != served.config.d_model:
        raise ApiError(
            400,
            f"dimensions: this model's embeddings have {served.config.d_model}, got {body.dimensions}",
            "dimensions",
        )
    ids, _ = texts_or_ids(body.input, "input", served, state.limits)
    base = served.embedder
    room = base.framing.room(1)
    for index, row in enumerate(ids):
        if len(row) > room:
            raise ApiError(400, f"input[{index}]: {len(row)} tokens; the model reads at most {room} a text", "input")
    pooling = Pooling(
        body.pooling or base.pooling.how, base.pooling.normalize if body.normalize is None else body.normalize
    )
    embedder = Embedder(base.body, base.tokenizer, base.framing, pooling)
    framed = [base.framing.join(row).ids for row in ids]
    state.metrics.prompt_tokens.labels(served.name).inc(sum(len(r) for r in ids))

    def run(rows):
        return list(embedder.embed_ids(rows, batch_size=state.limits.slots).numpy())

    vectors = await compute(state, request, served, worker, EMBEDDINGS, ("embed", pooling), run, framed)
    data = []
    for index, vector in enumerate(vectors):
        values = vector.astype("<f4")
        encoded = base64.b64encode(values.tobytes()).decode() if body.encoding_format == "base64" else values.tolist()
        data.append({"object": "embedding", "embedding": encoded, "index": index})
    n_tokens = sum(len(r) for r in ids)
    return {
        "object": "list",
        "data": data,
        "model": served.name,
        "usage": {"prompt_tokens": n_tokens, "total_tokens": n_tokens},
    }


async def fill_masks(state, body, request: Request):
    served, worker = state.resolve(body.model, FILL_MASK)
    texts = [body.text] if isinstance(body.text, str) else list(body.text)
    if not texts or len(texts) > state.limits.max_inputs:
        raise ApiError(400, f"text: expected 1 to {state.limits.max_inputs} texts, got {len(texts)}", "text")
    generator, max_len = served.generator, served.config.max_len
    sequences = []
    for index, text in enumerate(texts):
        if MASK not in text:
            raise ApiError(400, f"text[{index}]: no {MASK} to fill", "text")
        ids = generator.with_masks(text)
        if len(ids) + 2 > max_len:  # [CLS] text [SEP]
            raise ApiError(400, f"text[{index}]: {len(ids)} tokens; the model reads at most {max_len - 2}", "text")
        sequences.append(ids)
    state.metrics.prompt_tokens.labels(served.name).inc(sum(len(s) for s in sequences))

    def run(rows):
        return fill_mask(served.model, generator.objective, rows, top_k=body.top_k)

    results = await compute(state, request, served, worker, FILL_MASK, ("fill-mask", body.top_k), run, sequences)
    named = [
        {
            "text": text,
            "masks": [
                [{"token": served.tokenizer.id_to_token(c.id), "id": c.id, "probability": c.probability} for c in mask]
                for mask in masks
            ],
        }
        for text, masks in zip(texts, results)
    ]
    return {"object": "fill-mask", "model": served.name, "results": named}


async def predict(state, body, request: Request):
    served, worker = state.resolve(body.model, PREDICT)
    task = served.task
    if not body.instances or len(body.instances) > state.limits.max_inputs:
        count = len(body.instances)
        raise ApiError(400, f"instances: expected 1 to {state.limits.max_inputs} records, got {count}", "instances")
    records = []
    for index, values in enumerate(body.instances):
        for column in task.inputs:
            if values.get(column) is None:
                raise ApiError(
                    400,
                    f"instances[{index}]: no {column!r} column; the {task.name} task reads {list(task.inputs)}",
                    "instances",
                )
        records.append(Record(values, "instances", index, has_lists=True))

    def run(rows):
        return task.predict(served.model, rows, batch_size=state.limits.slots)

    predictions = await compute(state, request, served, worker, PREDICT, ("predict",), run, records)
    return {"object": "predictions", "model": served.name, "task": task.name, "predictions": predictions}
