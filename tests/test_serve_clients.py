"""The official OpenAI client, unchanged, against `triform serve`; and the command itself: started
from the CLI, stopped by SIGTERM once the requests in flight are finished."""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import httpx
import numpy as np
import openai
import pytest
from serve_models import LiveServer, free_port, make_folders
from text_models import random_model, single_thread, word_setup  # noqa: F401  (a fixture)

from triform.checkpoint import save_model
from triform.generate import TextGenerator
from triform.serve import Limits, create_app, load_served
from triform.tasks.embed import Embedder

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    return make_folders(tmp_path_factory.mktemp("served"))


@pytest.fixture(scope="module")
def client(folders):
    models = {name: load_served(name, folders[name]) for name in ("gpt", "bert")}
    with LiveServer(create_app(models, Limits(max_tokens=40))) as server:
        yield openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)


def test_openai_completions_whole_and_streamed(client, folders):
    generator = TextGenerator.load(folders["gpt"])
    answer = client.completions.create(model="gpt", prompt="one two three", max_tokens=7, temperature=0)
    expected = generator.generate("one two three", max_new_tokens=7, precision="fp32")
    assert answer.choices[0].text == expected.text and answer.choices[0].finish_reason == "length"
    assert answer.usage.completion_tokens == 7 and answer.usage.prompt_tokens == 3
    stream = client.completions.create(
        model="gpt", prompt="the cat", max_tokens=9, seed=3, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    sampled = generator.generate("the cat", max_new_tokens=9, do_sample=True, seed=3, precision="fp32")
    assert "".join(c.choices[0].text for c in chunks if c.choices) == sampled.text
    assert chunks[-1].usage.completion_tokens == len(sampled.ids) + (sampled.finish_reason == "eos")
    extra = client.completions.create(
        model="gpt", prompt="red", max_tokens=6, temperature=0, extra_body={"num_beams": 3, "length_penalty": 0.0}
    )
    assert extra.choices[0].text == generator.generate("red", max_new_tokens=6, num_beams=3, length_penalty=0.0).text


def test_openai_embeddings(client, folders):
    answer = client.embeddings.create(model="bert", input=["the cat sat", "a dog ran"])  # base64 by default
    expected = Embedder.load(folders["bert"]).embed(["the cat sat", "a dog ran"]).numpy()
    assert np.allclose([d.embedding for d in answer.data], expected, atol=1e-5)
    assert [m.id for m in client.models.list().data] == ["gpt", "bert"]


def test_openai_errors_are_the_clients_own(client):
    with pytest.raises(openai.NotFoundError, match="no model named 'gpt-4'"):
        client.completions.create(model="gpt-4", prompt="hi")
    with pytest.raises(openai.BadRequestError, match="cannot do completions"):
        client.completions.create(model="bert", prompt="hi")
    with pytest.raises(openai.BadRequestError, match="max_tokens: at most 40"):
        client.completions.create(model="gpt", prompt="hi", max_tokens=41)


def test_the_command_serves_and_sigterm_finishes_the_requests_in_flight(folders, tmp_path):
    """SIGTERM mid-stream: the server stops listening at once, yet the stream goes on to its end."""
    tokenizer, specials = word_setup()
    big = random_model("stack", tokenizer, d_model=256, n_heads=4, d_ff=1024, n_layers=4, max_len=256)
    save_model(big, tmp_path / "gpt", specials=specials, tokenizer=tokenizer)  # 200 tokens take a while
    port = free_port()
    command = [sys.executable, "-m", "triform", "serve", "--model", str(tmp_path / "gpt")]
    command += ["--model", f"words={folders['bert']}", "--port", str(port), "--threads", "1"]
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    server = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=environment)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                if httpx.get(f"{url}/health").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        assert [m["id"] for m in httpx.get(f"{url}/v1/models").json()["data"]] == ["gpt", "words"]
        body = {"prompt": "one", "model": "gpt", "max_tokens": 200, "min_new_tokens": 200, "temperature": 0}
        pieces = []

        def stream():
            with httpx.stream("POST", f"{url}/v1/completions", json={**body, "stream": True}, timeout=60) as response:
                for line in response.iter_lines():
                    pieces.append(line)
                    if len(pieces) == 1:
                        server.send_signal(signal.SIGTERM)  # mid-stream

        reader = threading.Thread(target=stream)
        reader.start()
        while not pieces:
            time.sleep(0.001)
        while True:  # until the server takes no more connections
            try:
                httpx.get(f"{url}/health", timeout=5)
            except httpx.TransportError:
                break
        streamed_when_closed = len(pieces)
        reader.join(60)
        assert server.wait(60) == 0
    finally:
        server.kill()
    events = [json.loads(p[6:]) for p in pieces if p.startswith("data: {")]
    assert pieces[-2:] == ["data: [DONE]", ""] and events[-1]["choices"][0]["finish_reason"] == "length"
    assert len("".join(e["choices"][0]["text"] for e in events).split()) == 200  # all 200 tokens, a word each
    assert streamed_when_closed < len(pieces) // 2  # it had stopped listening long before the stream ended
    errors = server.stderr.read()
    assert "serve: gpt from" in errors and "serve: stopped" in errors
