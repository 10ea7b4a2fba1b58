"""`triform serve` under load, side by side with the same requests sent one at a time and with the
FastAPI wrapper around `transformers.pipeline` that people write by hand (benchmarks/serving/
pipeline_server.py), on the same weights (exported through triform's own converter).

    python benchmarks/serve.py                 # 1, 8 and 32 concurrent clients; a few minutes on 2 cores
    python benchmarks/serve.py --tiny          # a quick check of the benchmark itself
    nice -n 10 python benchmarks/serve.py --write   # and the figures into docs/results.md

Each server runs in its own process on 127.0.0.1. A level of C clients sends C x --requests requests,
each client one after the other (a closed loop), of mixed prompt lengths (Brown sentences) and output
lengths (16 to 128 tokens); every output is exactly its length (min_tokens = max_tokens, greedy), so
that all three answer the same amount of work. Figures: generated tokens per second over the level's
wall time, latency p50/p99, and time to the first token. Throughput is compared on whole answers, as
the pipeline wrapper gives them (the clients run on the same two cores, and reading a stream costs a
client more than one answer); each level is run again streamed, for triform's time to first token.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from triform.kernels.machine import cpu_model

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
BROWN = ROOT.parent / "shared" / "data" / "brown" / "train.txt"  # the shared data beside the checkout
OUTPUT_LENGTHS = (16, 32, 64, 128)
SIZES = {  # the GPT of benchmarks/run.py, and a tiny twin
    "bench": dict(n_layers=6, d_model=384, n_heads=6, d_ff=1536, max_len=512),
    "tiny": dict(n_layers=2, d_model=64, n_heads=4, d_ff=256, max_len=256),
}


@dataclass
class Request:
    prompt: str
    max_tokens: int


@dataclass
class Answer:
    latency: float
    first_token: float
    tokens: int


def sentences(path: Path, n: int) -> list[str]:
    """n sentences of many lengths, read in order (5 to 60 words)."""
    chosen = []
    for line in path.read_text().splitlines():
        if 5 <= len(line.split()) <= 60:
            chosen.append(line.strip())
        if len(chosen) == n:
            return chosen
    raise SystemExit(f"{path}: fewer than {n} sentences of 5 to 60 words")


def build_folders(root: Path, size: str, corpus: list[str]) -> tuple[Path, Path]:
    """A GPT-2-shaped triform model (random weights) with a BPE tokenizer of the corpus, and the same
    weights exported as a Hugging Face folder."""
    import torch

    from triform.checkpoint import load_model, save_model
    from triform.convert import export_hf
    from triform.data.tokenizers import train_tokenizer
    from triform.models import build_model
    from triform.models.presets import get_preset
    from triform.vocab import SpecialTokens

    tokenizer = train_tokenizer(corpus, "bpe", vocab_size=8192 if size == "bench" else 1024)
    config = get_preset("gpt2-small").model.replace(
        **SIZES[size], vocab_size=tokenizer.get_vocab_size(), dropout=0.0, attention_dropout=0.0
    )
    torch.manual_seed(0)
    model = build_model(config).eval()
    save_model(model, root / "triform", specials=SpecialTokens.from_tokenizer(tokenizer), tokenizer=tokenizer)
    export_hf(load_model(root / "triform"), root / "hf")
    # GPT-2's "gelu_new" is written out in Python in transformers; "gelu_pytorch_tanh" is the same
    # function as one kernel, its fastest spelling and the fair one to compare against.
    hf_config = json.loads((root / "hf" / "config.json").read_text())
    hf_config["activation_function"] = "gelu_pytorch_tanh"
    (root / "hf" / "config.json").write_text(json.dumps(hf_config, indent=2))
    return root / "triform", root / "hf"


class Process:
    """A server in its own process, for the duration."""

    def __init__(self, command: list[str], port: int, log: Path):
        self.command, self.url, self.log = command, f"http://127.0.0.1:{port}", log

    def __enter__(self):
        environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
        self.handle = open(self.log, "w")
        self.process = subprocess.Popen(self.command, stdout=self.handle, stderr=subprocess.STDOUT, env=environment)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"{self.command[:4]} exited: see {self.log}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                time.sleep(0.2)
        raise SystemExit(f"{self.command[:4]} did not start in 5 minutes: see {self.log}")

    def __exit__(self, *exc):
        self.process.terminate()
        self.process.wait(60)
        self.handle.close()


async def ask_triform(client: httpx.AsyncClient, url: str, request: Request) -> Answer:
    body = {"prompt": request.prompt, "max_tokens": request.max_tokens, "min_new_tokens": request.max_tokens}
    body.update(temperature=0, stream=True, stream_options={"include_usage": True})
    started, first, tokens = time.perf_counter(), None, 0
    async with client.stream("POST", f"{url}/v1/completions", json=body) as response:
        async for line in response.aiter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line[6:])
            if "error" in chunk:
                raise RuntimeError(chunk["error"]["message"])
            if first is None and chunk["choices"] and chunk["choices"][0]["text"]:
                first = time.perf_counter()
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
    ended = time.perf_counter()
    return Answer(ended - started, (first or ended) - started, tokens)


async def ask_whole(client: httpx.AsyncClient, url: str, request: Request) -> Answer:
    """triform without streaming: what the client's own cost of reading a stream adds."""
    body = {"prompt": request.prompt, "max_tokens": request.max_tokens, "min_new_tokens": request.max_tokens}
    started = time.perf_counter()
    response = await client.post(f"{url}/v1/completions", json={**body, "temperature": 0})
    response.raise_for_status()
    latency = time.perf_counter() - started
    return Answer(latency, latency, response.json()["usage"]["completion_tokens"])


async def ask_pipeline(client: httpx.AsyncClient, url: str, request: Request) -> Answer:
    body = {"prompt": request.prompt, "max_tokens": request.max_tokens, "min_tokens": request.max_tokens}
    started = time.perf_counter()
    response = await client.post(f"{url}/v1/completions", json=body)
    response.raise_for_status()
    latency = time.perf_counter() - started
    return Answer(latency, latency, request.max_tokens)


async def load(ask, url: str, per_client: list[list[Request]]) -> tuple[float, list[Answer]]:
    """Every client sends its requests one after the other, all clients at once; (wall s, answers)."""
    limits = httpx.Limits(max_connections=len(per_client) + 4, max_keepalive_connections=len(per_client) + 4)
    async with httpx.AsyncClient(timeout=httpx.Timeout(1800), limits=limits) as client:

        async def client_loop(requests):
            return [await ask(client, url, request) for request in requests]

        started = time.perf_counter()
        answers = await asyncio.gather(*(client_loop(r) for r in per_client))
        return time.perf_counter() - started, [a for client in answers for a in client]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def figures(system: str, clients: int, wall: float, answers: list[Answer]) -> dict:
    tokens = sum(a.tokens for a in answers)
    latency = [a.latency for a in answers]
    first = [a.first_token for a in answers]
    return {
        "system": system,
        "clients": clients,
        "requests": len(answers),
        "tokens": tokens,
        "wall_s": round(wall, 2),
        "tokens_per_s": round(tokens / wall, 1),
        "latency_p50_s": round(statistics.median(latency), 3),
        "latency_p99_s": round(percentile(latency, 0.99), 3),
        "first_token_p50_s": round(statistics.median(first), 3),
        "first_token_p99_s": round(percentile(first, 0.99), 3),
    }


def workload(prompts: list[str], clients: int, per_client: int, offset: int = 0) -> list[list[Request]]:
    """Client c's requests: prompts and output lengths in turn, different for every client."""
    plan = []
    for c in range(clients):
        mine = []
        for r in range(per_client):
            i = offset + c * per_client + r
            mine.append(Request(prompts[i % len(prompts)], OUTPUT_LENGTHS[(i * 7 + c) % len(OUTPUT_LENGTHS)]))
        plan.append(mine)
    return plan


def table(rows: list[dict]) -> str:
    lines = [
        "| system | clients | requests | tokens | wall s | tokens/s | latency p50 / p99 s | first token p50 / p99 s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['system']} | {r['clients']} | {r['requests']} | {r['tokens']} | {r['wall_s']} | "
            f"{r['tokens_per_s']} | {r['latency_p50_s']} / {r['latency_p99_s']} | "
            f"{r['first_token_p50_s']} / {r['first_token_p99_s']} |"
        )
    return "\n".join(lines)


def section(rows: list[dict], ratios: dict, args, machine: dict) -> str:
    command = "python benchmarks/serve.py " + " ".join(sys.argv[1:])
    niced = " under `nice -n 10`" if os.nice(0) > 0 else ""
    return f"""## Serving: `triform serve` under load

`{command}`{niced}, on {machine["cpu"]} ({machine["cores"]} cores, load average {machine["load"]} at the
start; the machine is shared, so the ratios are the claim), torch threads {args.threads} per server,
fp32. The model: the GPT of benchmarks/run.py ({machine["model"]}), random weights, a byte-level BPE of
Brown; the pipeline wrapper runs the same weights exported by `triform.convert.export_hf`. Each level
sends clients x {args.requests} requests (Brown sentences of 5 to 60 words, outputs of 16 to 128 tokens,
greedy, every output its full length) and takes whole answers; "streamed" sends the same requests with
`stream: true` (server-sent events read by the clients, on the same cores); "one at a time" sends the
biggest level's requests to `triform serve` one after the other.

{table(rows)}

- `triform serve` at 32 clients: **{ratios["vs_sequential"]:.1f}x** the throughput of the same requests
  one at a time (target 4x), and **{ratios["vs_pipeline"]:.1f}x** the pipeline wrapper's at 32 clients
  (target 3x; {ratios["vs_pipeline_best"]:.1f}x its best level).
- At 1 client `triform serve` runs at {ratios["single_vs_pipeline"]:.2f}x the wrapper's (two requests: the
  noisiest row); batching pays that back from 8 clients on.
- Time to first token comes from the streamed rows; the pipeline wrapper answers whole, so its first
  token comes with its last.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 8, 32], help="concurrent clients")
    parser.add_argument("--requests", type=int, default=2, help="requests per client at every level")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of each server")
    parser.add_argument("--tiny", action="store_true", help="a tiny model: a quick check of the benchmark")
    parser.add_argument("--no-pipeline", action="store_true", help="leave out the transformers.pipeline wrapper")
    parser.add_argument("--no-sequential", action="store_true", help="leave out the requests one at a time")
    parser.add_argument("--write", action="store_true", help="write the figures to docs/results.md")
    parser.add_argument("--corpus", type=Path, default=BROWN, help="text to draw prompts from, one per line")
    args = parser.parse_args()

    size = "tiny" if args.tiny else "bench"
    corpus = sentences(args.corpus, 4000)
    prompts = corpus[-500:]
    machine = {"cpu": cpu_model(), "cores": os.cpu_count(), "load": " ".join(f"{x:.1f}" for x in os.getloadavg())}
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        ours, theirs = build_folders(root, size, corpus)
        config = json.loads((ours / "config.json").read_text())["model"]
        machine["model"] = f"{config['n_layers']} layers, d_model {config['d_model']}, max_len {config['max_len']}"
        biggest = max(args.levels)
        serve = [sys.executable, "-m", "triform", "serve", "--model", f"gpt={ours}", "--port", "8731"]
        serve += ["--threads", str(args.threads), "--slots", str(biggest), "--queue_size", "4096"]
        serve += ["--max_tokens", "256", "--max_request_tokens", "4096", "--request_timeout", "3600"]
        with Process(serve, 8731, root / "triform.log") as server:
            for clients in args.levels:
                plan = workload(prompts, clients, args.requests)
                for system, ask in (("triform serve", ask_whole), ("triform serve, streamed", ask_triform)):
                    wall, answers = asyncio.run(load(ask, server.url, plan))
                    rows.append(figures(system, clients, wall, answers))
                    print(table(rows[-1:]).splitlines()[-1], flush=True)
            if not args.no_sequential:
                alone = [[r for client in workload(prompts, biggest, args.requests) for r in client]]
                wall, answers = asyncio.run(load(ask_whole, server.url, alone))
                rows.append(figures("triform serve, one at a time", 1, wall, answers))
                print(table(rows[-1:]).splitlines()[-1], flush=True)
        if not args.no_pipeline:
            command = [sys.executable, str(ROOT / "benchmarks/serving/pipeline_server.py"), "--model", str(theirs)]
            command += ["--port", "8732", "--threads", str(args.threads)]
            with Process(command, 8732, root / "pipeline.log") as server:
                for clients in args.levels:
                    plan = workload(prompts, clients, args.requests)
                    wall, answers = asyncio.run(load(ask_pipeline, server.url, plan))
                    rows.append(figures("transformers.pipeline in FastAPI", clients, wall, answers))
                    print(table(rows[-1:]).splitlines()[-1], flush=True)
    by = {(r["system"], r["clients"]): r["tokens_per_s"] for r in rows}
    ours_top = by[("triform serve", biggest)]
    pipeline = [r["tokens_per_s"] for r in rows if r["system"].startswith("transformers")]
    ratios = {
        "vs_sequential": ours_top / by.get(("triform serve, one at a time", 1), float("nan")),
        "vs_pipeline": ours_top / by.get(("transformers.pipeline in FastAPI", biggest), float("nan")),
        "vs_pipeline_best": ours_top / max(pipeline) if pipeline else float("nan"),
        "single_vs_pipeline": by[("triform serve", min(args.levels))]
        / by.get(("transformers.pipeline in FastAPI", min(args.levels)), float("nan")),
    }
    print(table(rows))
    print(json.dumps({k: round(v, 2) for k, v in ratios.items()}))
    if args.write:
        from results_sections import replace_section

        path = replace_section("serve", section(rows, ratios, args, machine))
        (ROOT / "benchmarks" / "serve.json").write_text(
            json.dumps({"rows": rows, "ratios": ratios, **machine}, indent=2) + "\n"
        )
        print(f"written to {path}")


if __name__ == "__main__":
    main()
