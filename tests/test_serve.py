"""triform serve: what each model folder serves, answers equal to the Python API's (alone or batched
with concurrent requests), and every bad request refused with a 4xx naming its field."""

import base64
import json
import shutil
import threading
import time

import httpx
import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from serve_models import LiveServer, Slowed, make_folders
from text_models import single_thread  # noqa: F401  (a fixture)

from triform.data.records import Record
from triform.generate import TextGenerator
from triform.serve import Limits, create_app, load_served
from triform.tasks.checkpoint import load_task_model
from triform.tasks.embed import Embedder

pytestmark = pytest.mark.usefixtures("single_thread")
LIMITS = Limits(
    max_tokens=40,
    max_request_tokens=200,
    max_prompt_tokens=100,
    max_inputs=8,
    max_body_bytes=4096,
    queue_size=64,
    slots=4,
)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    return make_folders(tmp_path_factory.mktemp("served"))


@pytest.fixture(scope="module")
def served(folders):
    return {name: load_served(name, folder) for name, folder in folders.items()}


@pytest.fixture(scope="module")
def client(served):
    with TestClient(create_app(served, LIMITS)) as client:
        yield client


def completion(client, **body):
    response = client.post("/v1/completions", json={"model": "gpt", "max_tokens": 8, **body})
    assert response.status_code == 200, response.text
    return response.json()


def test_each_model_serves_what_its_folder_says_it_can_do(client):
    cards = {card["id"]: card for card in client.get("/v1/models").json()["data"]}
    assert cards["gpt"]["tasks"] == ["completions", "embeddings"]
    assert cards["translator"]["tasks"] == ["completions", "translate", "embeddings"]
    assert cards["bert"]["tasks"] == ["fill-mask", "embeddings"]
    assert cards["classifier"]["tasks"] == ["predict"]
    assert cards["classifier"]["task"] == {"name": "classify", "inputs": ["text"], "labels": ["animal", "thing"]}
    assert (cards["bert"]["objective"], cards["bert"]["pattern"]) == ("mlm", "bidirectional")
    assert client.get("/v1/models/gpt").json()["id"] == "gpt"
    assert client.get("/health").json() == {"status": "ok", "models": sorted(cards)}


def test_completions_equal_the_python_api(client, folders):
    generator = TextGenerator.load(folders["gpt"])
    prompts = ["one two three", "red", "the cat sat on"]
    greedy = completion(client, prompt=prompts, temperature=0)
    expected = generator.generate(prompts, max_new_tokens=8, precision="fp32")
    assert [c["text"] for c in greedy["choices"]] == [g.text for g in expected]
    assert [c["index"] for c in greedy["choices"]] == [0, 1, 2]
    assert greedy["usage"]["completion_tokens"] == sum(len(g.ids) + (g.finish_reason == "eos") for g in expected)
    sampled = completion(client, prompt="one two", temperature=0.8, top_p=0.9, n=3, seed=4)
    expected = generator.generate(
        "one two", max_new_tokens=8, do_sample=True, temperature=0.8, top_p=0.9, num_return_sequences=3, seed=4
    )
    assert [c["text"] for c in sampled["choices"]] == [g.text for g in expected]
    beams = completion(client, prompt="one two", num_beams=3, n=2, temperature=0)
    expected = generator.generate("one two", max_new_tokens=8, num_beams=3, num_return_sequences=2)
    assert [c["text"] for c in beams["choices"]] == [g.text for g in expected]


@pytest.mark.skipif(not any(shutil.which(n) for n in ("g++", "c++", "clang++")), reason="no C++ compiler for inductor")
def test_a_compiling_server_answers_what_the_python_api_gives(served, folders):
    """`triform serve --compile`: continuous batching and beam search on compiled steps."""
    generator = TextGenerator.load(folders["gpt"])
    with TestClient(create_app({"gpt": served["gpt"]}, LIMITS, compile=True)) as compiling:
        prompts = ["one two three", "red"]
        greedy = completion(compiling, prompt=prompts, temperature=0)
        beams = completion(compiling, prompt="one two", num_beams=3, n=2, temperature=0)
    expected = generator.generate(prompts, max_new_tokens=8, precision="fp32")
    assert [c["text"] for c in greedy["choices"]] == [g.text for g in expected]
    expected = generator.generate("one two", max_new_tokens=8, num_beams=3, num_return_sequences=2)
    assert [c["text"] for c in beams["choices"]] == [g.text for g in expected]


def test_streamed_pieces_join_into_the_whole_answer_and_stop_strings_cut_it(client):
    whole = completion(client, prompt="one two", seed=3, max_tokens=12)["choices"][0]["text"]
    stop = whole.split()[2]
    with client.stream(
        "POST",
        "/v1/completions",
        json={"model": "gpt", "prompt": "one two", "seed": 3, "max_tokens": 12, "stream": True, "stop": stop},
    ) as response:
        events = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert "".join(c["choices"][0]["text"] for c in chunks) == whole[: whole.find(stop)]
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_logprobs_are_the_models_log_probabilities(client, folders):
    answer = completion(client, prompt="one two", temperature=0, logprobs=2, max_tokens=3)["choices"][0]["logprobs"]
    generator = TextGenerator.load(folders["gpt"])
    prompt = generator.encode("one two")
    tokens = generator.encode(completion(client, prompt="one two", temperature=0, max_tokens=3)["choices"][0]["text"])
    ids = torch.tensor([[generator.specials.bos, *prompt, *tokens]])
    with torch.no_grad():
        expected = generator.model(ids).log_softmax(-1)[0, len(prompt) :]
    assert answer["token_logprobs"] == pytest.approx([float(expected[i, t]) for i, t in enumerate(tokens)], abs=1e-5)
    assert all(len(top) == 2 for top in answer["top_logprobs"])


def test_translate_is_bounded_by_the_sources_length(client, folders):
    body = {"model": "translator", "text": ["red", "one two three four"], "max_tokens": 40, "min_new_tokens": 40}
    answer = client.post("/v1/translate", json={**body, "temperature": 0}).json()
    assert [t["finish_reason"] for t in answer["translations"]] == ["length", "length"]
    assert answer["usage"]["completion_tokens"] == (2 + 10) + (6 + 10)  # ceil(1.5 x source) + 10 each
    unbounded = client.post("/v1/translate", json={**body, "temperature": 0, "max_length_factor": None}).json()
    assert unbounded["usage"]["completion_tokens"] == 80
    expected = TextGenerator.load(folders["translator"]).generate(
        "red", max_new_tokens=40, min_new_tokens=40, max_length_factor=1.5, precision="fp32"
    )
    assert answer["translations"][0]["text"] == expected.text


def test_embeddings_equal_the_embedder_and_come_as_floats_or_base64(client, folders):
    texts = ["the cat sat on the mat", "a dog"]
    floats = client.post("/v1/embeddings", json={"model": "bert", "input": texts, "normalize": True}).json()
    expected = Embedder.load(folders["bert"], normalize=True).embed(texts).numpy()
    assert np.allclose([d["embedding"] for d in floats["data"]], expected, atol=1e-5)
    packed = client.post("/v1/embeddings", json={"model": "bert", "input": texts, "encoding_format": "base64"}).json()
    vector = np.frombuffer(base64.b64decode(packed["data"][1]["embedding"]), dtype="<f4")
    assert np.allclose(vector, Embedder.load(folders["bert"]).embed(texts).numpy()[1], atol=1e-5)
    assert floats["usage"]["prompt_tokens"] == 8


def test_fill_mask_and_predict_equal_the_python_api(client, folders):
    answer = client.post(
        "/v1/fill-mask", json={"model": "bert", "text": "a [MASK] ran in the [MASK]", "top_k": 3}
    ).json()
    masks = answer["results"][0]["masks"]
    assert [m[0]["token"] for m in masks] == ["dog", "park"] and len(masks[0]) == 3
    records = [{"text": "the cat sat on the mat", "id": 7}, {"text": "a dog ran"}]
    predicted = client.post("/v1/predict", json={"model": "classifier", "instances": records}).json()["predictions"]
    model, task, _ = load_task_model(folders["classifier"])
    expected = task.predict(model, [Record(r, "x", i, has_lists=True) for i, r in enumerate(records)])
    assert [p["label"] for p in predicted] == [e["label"] for e in expected] and predicted[0]["id"] == 7
    for mine, theirs in zip(predicted, expected):
        assert mine["probabilities"] == pytest.approx(theirs["probabilities"], abs=1e-6)


def test_concurrent_requests_are_batched_and_get_what_they_get_alone(served, folders):
    """Twelve clients at once against a real server with 4 slots: requests join the running batch,
    wait for slots and take freed ones, and every answer equals the Python API's for it alone."""
    generator = TextGenerator.load(folders["gpt"])
    bodies = []
    for i in range(12):
        body = {
            "model": "gpt",
            "prompt": ["one two three", "red", "the cat sat on", "a dog"][i % 4],
            "max_tokens": 6 + i,
        }
        body.update({"temperature": 0} if i % 2 else {"temperature": 0.9, "seed": i, "top_k": 10})
        bodies.append(body)
    answers = [None] * len(bodies)
    with LiveServer(create_app(served, LIMITS)) as server:

        def ask(i):
            answers[i] = httpx.post(f"{server.url}/v1/completions", json=bodies[i], timeout=60).json()

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(bodies))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        metrics = httpx.get(f"{server.url}/metrics").text
    for body, answer in zip(bodies, answers):
        options = {"max_new_tokens": body["max_tokens"], "precision": "fp32"}
        if body["temperature"]:
            options.update(do_sample=True, temperature=0.9, seed=body["seed"], top_k=10)
        assert answer["choices"][0]["text"] == generator.generate(body["prompt"], **options).text
    buckets = {
        line.split('le="')[1].split('"')[0]: float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("triform_decoding_batch_size_bucket")
    }
    assert buckets["+Inf"] - buckets["1.0"] > 0  # some steps decoded several rows together
    assert 'triform_requests_total{endpoint="completions",model="gpt",status="200"} 12.0' in metrics


@pytest.mark.parametrize(
    "path, body, status, field, message",
    [
        ("/v1/completions", {"model": "gpt", "prompt": "hi", "max_tokens": "5"}, 400, "max_tokens", "valid integer"),
        ("/v1/completions", {"model": "gpt", "prompt": "hi", "max_tokens": True}, 400, "max_tokens", "valid integer"),
        ("/v1/completions", {"model": "gpt", "prompt": 5}, 400, "prompt", "expected a string, a list"),
        ("/v1/completions", {"model": "gpt", "prompt": "hi", "tempreature": 0}, 400, "tempreature", "unknown field"),
        ("/v1/completions", {"model": "gpt"}, 400, "prompt", "prompt: required"),
        ("/v1/completions", {"model": "gpt", "prompt": "red " * 70}, 400, "prompt", "leave no room"),
        ("/v1/completions", {"model": "gpt", "prompt": "red " * 101}, 400, "prompt", "over this server's limit of 100"),
        ("/v1/completions", {"model": "gpt", "prompt": "hi", "max_tokens": 41}, 400, "max_tokens", "at most 40"),
        ("/v1/completions", {"model": "gpt", "prompt": "hi", "n": 6, "max_tokens": 40}, 400, "n", "limit of 200"),
        ("/v1/completions", {"model": "gpt", "prompt": "hi", "n": 2, "temperature": 0}, 400, "n", "greedy"),
        ("/v1/completions", {"model": "gpt", "prompt": "hi", "num_beams": 2, "stream": True}, 400, "stream", "beam"),
        ("/v1/completions", {"model": "gpt", "prompt": "hi", "top_p": 0}, 400, "top_p", "greater than 0"),
        ("/v1/completions", {"model": "gpt", "prompt": [[1, 999]]}, 400, "prompt", "token ids are 0 to"),
        ("/v1/completions", {"model": "gpt", "prompt": []}, 400, "prompt", "at least one"),
        ("/v1/completions", {"model": "gpt", "prompt": "hi", "stop": [""]}, 400, "stop", "non-empty"),
        ("/v1/completions", {"model": "gpt", "prompt": "hi", "presence_penalty": 1}, 400, "presence_penalty", "only 0"),
        ("/v1/completions", {"model": "gpt", "prompt": "a", "max_length_factor": 2}, 400, "max_length_factor", "text"),
        ("/v1/completions", {"model": "bert", "prompt": "hi"}, 400, "model", "cannot do completions"),
        ("/v1/completions", {"model": "gpt-5", "prompt": "hi"}, 404, "model", "no model named 'gpt-5'"),
        ("/v1/completions", {"prompt": "hi"}, 400, "model", "required with several models"),
        ("/v1/completions", [1, 2], 400, "body", "valid dictionary"),
        ("/v1/translate", {"model": "gpt", "text": "hi"}, 400, "model", "cannot do translate"),
        ("/v1/fill-mask", {"model": "gpt", "text": "a [MASK]"}, 400, "model", "cannot do fill-mask"),
        ("/v1/fill-mask", {"model": "bert", "text": "no mask"}, 400, "text", "no [MASK] to fill"),
        ("/v1/embeddings", {"model": "bert", "input": "a", "dimensions": 3}, 400, "dimensions", "have 32"),
        ("/v1/embeddings", {"model": "bert", "input": ["a"] * 9}, 400, "input", "at most 8 inputs"),
        ("/v1/embeddings", {"model": "classifier", "input": "a"}, 400, "model", "cannot do embeddings"),
        ("/v1/predict", {"model": "classifier", "instances": [{"txt": "a"}]}, 400, "instances", "no 'text' column"),
        ("/v1/predict", {"model": "classifier", "instances": [{"text": 3}]}, 400, None, "'text' must be text"),
    ],
)
def test_bad_requests_get_a_4xx_naming_the_field(client, path, body, status, field, message):
    response = client.post(path, json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert message in error["message"] and error["param"] == field
    assert client.get("/health").status_code == 200  # and the server goes on


def test_malformed_json_and_a_body_over_the_limit(client):
    response = client.post("/v1/completions", content=b'{"prompt": ', headers={"content-type": "application/json"})
    assert response.status_code == 400 and "not valid JSON" in response.json()["error"]["message"]
    response = client.post("/v1/completions", json={"model": "gpt", "prompt": "red " * 2000})
    assert response.status_code == 413 and "limit of 4096 bytes" in response.json()["error"]["message"]


def test_a_full_queue_answers_429_with_retry_after(served):
    """A queue of one request and one slot: while a long request runs and another waits, a third is
    refused with Retry-After; once they are done the server takes requests again."""
    limits = Limits(max_tokens=60, queue_size=1, slots=1)
    app = create_app({"gpt": served["gpt"]}, limits)
    worker = app.state.server.workers["gpt"]
    with Slowed(served["gpt"].model, 0.02), LiveServer(app) as server:
        url = f"{server.url}/v1/completions"
        long = {"prompt": "one", "max_tokens": 60, "min_new_tokens": 60, "temperature": 0}
        with httpx.Client(timeout=60) as first, httpx.Client(timeout=60) as second:
            with first.stream("POST", url, json={**long, "stream": True}) as running:
                lines = running.iter_lines()
                next(lines)  # it runs: the slot is taken
                waiting = threading.Thread(target=lambda: second.post(url, json=long))
                waiting.start()
                while worker.queued < 1:  # the second waits for the slot
                    time.sleep(0.005)
                refused = httpx.post(url, json={"prompt": "two", "max_tokens": 2})
                assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
                assert "queue of model 'gpt' is full" in refused.json()["error"]["message"]
                assert [line for line in lines if line][-1] == "data: [DONE]"
            waiting.join()
        assert httpx.post(url, json={"prompt": "two", "max_tokens": 2}).status_code == 200


def test_an_error_inside_a_batch_fails_only_its_own_request(served):
    """Embeddings of several requests run as one batch; an input that makes the model fail fails its
    own request (500, once alone), and the others of the same batch are answered."""
    bert = served["bert"]
    original = bert.embedder.body.hidden_states
    poison = bert.tokenizer.token_to_id("park")
    batches = []  # rows of each call

    def failing(inputs, *args, **kwargs):
        batches.append(inputs.ids.shape[0])
        if len(batches) == 1:
            time.sleep(0.5)  # the first request runs alone while the others queue up behind it
        if (inputs.ids == poison).any():
            raise RuntimeError("a kernel failed")
        return original(inputs, *args, **kwargs)

    bert.embedder.body.hidden_states = failing
    try:
        with LiveServer(create_app({"bert": bert}, LIMITS)) as server:
            answers = {}

            def ask(text):
                answers[text] = httpx.post(f"{server.url}/v1/embeddings", json={"input": text}, timeout=60)

            texts = ["the cat", "a dog ran in the park", "my bird", "his fish"]
            threads = [threading.Thread(target=ask, args=(t,)) for t in texts]
            for thread in threads:
                thread.start()
                time.sleep(0.05)
            for thread in threads:
                thread.join()
    finally:
        del bert.embedder.body.hidden_states
    assert answers["a dog ran in the park"].status_code == 500
    assert "a kernel failed" in answers["a dog ran in the park"].json()["error"]["message"]
    assert all(answers[t].status_code == 200 for t in texts if t != "a dog ran in the park")
    assert batches[:2] == [1, 3]  # the three that queued ran as one batch, which failed, then alone


def test_a_client_that_goes_away_mid_stream_frees_its_slot(served):
    limits = Limits(max_tokens=60, slots=1)
    app = create_app({"gpt": served["gpt"]}, limits)
    with Slowed(served["gpt"].model, 0.05) as slowed, LiveServer(app) as server:
        url = f"{server.url}/v1/completions"
        body = {"prompt": "one", "max_tokens": 60, "min_new_tokens": 60, "temperature": 0, "stream": True}
        with httpx.Client(timeout=60) as client, client.stream("POST", url, json=body) as response:
            lines = response.iter_lines()
            next(lines)
        # The connection is closed with most of the 60 tokens to go.
        # The only slot is free again: a new request runs at once, not after the 60 tokens (3 s).
        answer = httpx.post(url, json={"prompt": "two", "max_tokens": 2, "temperature": 0}, timeout=60).json()
        assert answer["choices"][0]["finish_reason"] == "length"
        worker = app.state.server.workers["gpt"]
        assert worker.batch.n_running == 0 and worker.queued == 0
        assert slowed.calls < 30  # the first request's row left the batch long before its 60 steps


def test_a_request_over_the_time_limit_gets_504_and_leaves_the_batch(served):
    app = create_app({"gpt": served["gpt"]}, Limits(max_tokens=60, request_timeout=0.3, slots=1))
    with Slowed(served["gpt"].model, 0.02), LiveServer(app) as server:
        url = f"{server.url}/v1/completions"
        body = {"prompt": "one", "max_tokens": 60, "min_new_tokens": 60, "temperature": 0}
        late = httpx.post(url, json=body, timeout=60)
        assert late.status_code == 504 and "limit of 0.3 s" in late.json()["error"]["message"]
        with httpx.stream("POST", url, json={**body, "stream": True}, timeout=60) as response:
            events = [line for line in response.iter_lines() if line.startswith("data: ")]
        assert "request_timeout" in events[-1]  # a stream ends with the error as its last event
        quick = httpx.post(url, json={"prompt": "two", "max_tokens": 2}, timeout=60)
        assert quick.status_code == 200  # the slot was freed
        assert app.state.server.workers["gpt"].batch.n_running == 0


def test_metrics_playground_and_the_pattern_picture(client):
    completion(client, prompt="one two", temperature=0)
    metrics = client.get("/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    for name in (
        "triform_requests_total",
        "triform_request_seconds_bucket",
        "triform_time_to_first_token_seconds",
        "triform_generated_tokens_total",
        "triform_queue_depth",
        "triform_decoding_batch_size",
    ):
        assert name in metrics.text
    page = client.get("/")
    assert (
        page.status_code == 200
        and '<script src="/static/app.js">' in page.text
        and "http" not in page.text.split("<body>")[1]
    )
    assert client.get("/static/app.js").status_code == 200
    picture = client.get("/v1/models/translator/pattern.png", params={"text": "one two", "target": "drei"})
    assert picture.status_code == 200 and picture.content[:8] == b"\x89PNG\r\n\x1a\n"
    assert client.get("/v1/models/nope/pattern.png").status_code == 404
    schema = client.get("/openapi.json").json()
    assert "CompletionRequest" in schema["components"]["schemas"]
