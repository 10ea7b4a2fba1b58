"""The HTTP server: FastAPI routes over the models' workers.

    app = create_app({"gpt": load_served("gpt", "runs/gpt/model")}, Limits())
    uvicorn.run(app, host="127.0.0.1", port=8000)

Every model gets one worker thread (serve/worker.py) that batches what its requests compute. The
routes check each request (serve/schemas.py, serve/decoding.py) and answer 4xx with the field at
fault before anything reaches a model; a full queue is 429 with Retry-After; a body over the limit
413. On shutdown (uvicorn's SIGTERM handling: it stops accepting connections and waits for those in
flight) the workers finish what they hold and stop.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import asynccontextmanager
from importlib.resources import files

from fastapi import FastAPI, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from triform.serve import endpoints, errors, generation
from triform.serve.errors import ApiError
from triform.serve.limits import Limits
from triform.serve.metrics import Metrics
from triform.serve.models import ServedModel
from triform.serve.picture import EXAMPLE, pattern_png
from triform.serve.schemas import CompletionRequest, EmbeddingRequest, FillMaskRequest, PredictRequest, TranslateRequest
from triform.serve.worker import ModelWorker

STATIC = files("triform.serve") / "static"


class Server:
    """The served models, their workers, the limits and the metrics: what every route reads."""

    def __init__(self, models: dict[str, ServedModel], limits: Limits, precision: str = "fp32", compile: bool = False):
        if not models:
            raise ValueError("serve: no model to serve")
        self.models, self.limits, self.precision = models, limits, precision
        self.metrics = Metrics()
        self.started = int(time.time())
        self.workers = {
            name: ModelWorker(
                m,
                slots=limits.slots,
                queue_size=limits.queue_size,
                precision=precision,
                compile=compile,
                metrics=self.metrics,
            )
            for name, m in models.items()
        }
        self.draining = False

    def resolve(self, name: str | None, task: str) -> tuple[ServedModel, ModelWorker]:
        """The model a request names (the only one when it names none) and its worker, if it does `task`."""
        if name is None:
            if len(self.models) > 1:
                raise ApiError(
                    400, f"model: required with several models; expected one of {sorted(self.models)}", "model"
                )
            name = next(iter(self.models))
        if name not in self.models:
            raise ApiError(404, f"model: no model named {name!r}; this server has {sorted(self.models)}", "model")
        served = self.models[name]
        if not served.can(task):
            raise ApiError(400, f"model: {name!r} cannot do {task}; it does {', '.join(served.tasks)}", "model")
        return served, self.workers[name]

    def admit(self, worker: ModelWorker) -> None:
        """Count one more request in the worker's queue, or answer 429 when it is full."""
        if self.draining:
            raise ApiError(503, "the server is shutting down")
        if not worker.accept():
            self.metrics.answered(worker.served.name, "queue", 429)
            seconds = worker.retry_after()
            name, size = worker.served.name, self.limits.queue_size
            message = f"the queue of model {name!r} is full ({size} requests); retry in {seconds} s"
            raise ApiError(429, message, headers={"Retry-After": str(seconds)})

    def model_card(self, served: ServedModel) -> dict:
        return {
            "id": served.name,
            "object": "model",
            "created": self.started,
            "owned_by": "triform",
            **served.describe(),
        }


class BodyLimit:
    """413 for a body over `limit` bytes, by its Content-Length or as it arrives (chunked)."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            return await self.refuse(scope, send)
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise TooLarge
            return message

        try:
            await self.app(scope, counted, send)
        except TooLarge:
            await self.refuse(scope, send)

    async def refuse(self, scope, send):
        message = f"body: over this server's limit of {self.limit} bytes"
        await JSONResponse(errors.error_body(413, message, "body"), 413)(scope, None, send)


class TooLarge(Exception):
    pass


def create_app(
    models: dict[str, ServedModel], limits: Limits | None = None, *, precision: str = "fp32", compile: bool = False
) -> FastAPI:
    """`compile`: decoding steps compiled with torch.compile (generate/compiled.py), after a compile
    on each model's first steps."""
    server = Server(models, limits or Limits(), precision, compile)

    @asynccontextmanager
    async def lifespan(_):
        for worker in server.workers.values():
            worker.start()
        yield
        server.draining = True
        await asyncio.get_running_loop().run_in_executor(None, stop_all, server)

    app = FastAPI(title="triform serve", version="1", lifespan=lifespan)
    app.state.server = server
    errors.install(app)
    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")
    app.add_middleware(BodyLimit, limit=server.limits.max_body_bytes)
    routes(app, server)
    return app


def stop_all(server: Server) -> None:
    for worker in server.workers.values():
        worker.stop()


def routes(app: FastAPI, server: Server) -> None:
    @app.post("/v1/completions", summary="OpenAI completions: continue text, streamed or whole")
    async def completions(body: CompletionRequest, request: Request):
        return await generation.completions(server, body, request)

    @app.post("/v1/translate", summary="source -> target text, as long as its source allows")
    async def translate(body: TranslateRequest, request: Request):
        return await generation.translate(server, body, request)

    @app.post("/v1/embeddings", summary="OpenAI embeddings: pooled final hidden states")
    async def embeddings(body: EmbeddingRequest, request: Request):
        return await endpoints.embeddings(server, body, request)

    @app.post("/v1/fill-mask", summary="the most likely tokens at each [MASK]")
    async def fill_mask(body: FillMaskRequest, request: Request):
        return await endpoints.fill_masks(server, body, request)

    @app.post("/v1/predict", summary="a fine-tuned head's predictions for records")
    async def predict(body: PredictRequest, request: Request):
        return await endpoints.predict(server, body, request)

    @app.get("/v1/models", summary="the served models and what each can do")
    async def models():
        return {"object": "list", "data": [server.model_card(m) for m in server.models.values()]}

    @app.get("/v1/models/{name}", summary="one served model")
    async def model(name: str):
        if name not in server.models:
            raise ApiError(404, f"model: no model named {name!r}; this server has {sorted(server.models)}", "model")
        return server.model_card(server.models[name])

    @app.get("/v1/models/{name}/pattern.png", summary="the attention pattern of the model's objective, for a text")
    async def pattern(name: str, text: str = Query(EXAMPLE, max_length=2000), target: str = Query("", max_length=2000)):
        if name not in server.models:
            raise ApiError(404, f"model: no model named {name!r}; this server has {sorted(server.models)}", "model")
        recipe, arch = server.models[name].recipe, server.models[name].arch
        resolved = recipe.resolved(arch)
        png = await asyncio.get_running_loop().run_in_executor(
            None, pattern_png, arch, recipe.objective, resolved.pattern, text, target or text, recipe.reads_pairs
        )
        return Response(png, media_type="image/png")

    @app.get("/health", summary="200 while serving, 503 while shutting down")
    async def health():
        status = 503 if server.draining else 200
        return JSONResponse(
            {"status": "draining" if server.draining else "ok", "models": sorted(server.models)}, status
        )

    @app.get("/metrics", summary="Prometheus metrics")
    async def metrics():
        return Response(server.metrics.text(), media_type=server.metrics.content_type)

    @app.get("/", response_class=HTMLResponse, summary="the playground")
    async def playground():
        return HTMLResponse((STATIC / "index.html").read_text())
