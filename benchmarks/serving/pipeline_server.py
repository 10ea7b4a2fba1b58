"""The baseline `triform serve` is compared with: the FastAPI wrapper around `transformers.pipeline`
that people write by hand, one pipeline call per request in FastAPI's thread pool.

    python benchmarks/serving/pipeline_server.py --model HF_FOLDER --port 8001
"""

from __future__ import annotations

import argparse

import torch
import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel
from transformers import pipeline


class Completion(BaseModel):
    prompt: str
    max_tokens: int = 16
    min_tokens: int = 0


def create_app(folder: str) -> FastAPI:
    generator = pipeline("text-generation", model=folder, tokenizer=folder, device="cpu")
    app = FastAPI()

    @app.get("/health")
    def health():
        return {"status": "ok"}

    @app.post("/v1/completions")
    def complete(body: Completion):  # a plain `def`: FastAPI runs it in its thread pool
        output = generator(
            body.prompt,
            max_new_tokens=body.max_tokens,
            min_new_tokens=body.min_tokens,
            do_sample=False,
            return_full_text=False,
        )
        return {"choices": [{"text": output[0]["generated_text"], "index": 0}]}

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", required=True)
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    uvicorn.run(create_app(args.model), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
