"""Request bodies made up by hypothesis, well-formed or not: the server answers each with a JSON body
and a status below 500, and goes on serving."""

import json

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from serve_models import make_folders
from text_models import single_thread  # noqa: F401  (a fixture)

from triform.serve import Limits, create_app, load_served
from triform.serve.schemas import CompletionRequest, EmbeddingRequest, FillMaskRequest, PredictRequest, TranslateRequest

pytestmark = pytest.mark.usefixtures("single_thread")

ENDPOINTS = {
    "/v1/completions": CompletionRequest,
    "/v1/translate": TranslateRequest,
    "/v1/embeddings": EmbeddingRequest,
    "/v1/fill-mask": FillMaskRequest,
    "/v1/predict": PredictRequest,
}
MODELS = ["gpt", "translator", "bert", "classifier"]
CAN = {
    "/v1/completions": ["gpt", "translator"],
    "/v1/translate": ["translator"],
    "/v1/embeddings": ["gpt", "translator", "bert"],
    "/v1/fill-mask": ["bert"],
    "/v1/predict": ["classifier"],
}
WORDS = ["one", "two", "the", "cat", "[MASK]", "red", "", " ", "é", "\u0000", "🙂", "\n"]

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
    | st.lists(st.sampled_from(WORDS), max_size=8).map(" ".join)
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
words = st.lists(st.sampled_from(WORDS), max_size=8).map(" ".join)
masked = st.tuples(words, words).map(lambda pair: f"{pair[0]} [MASK] {pair[1]}")
# Values that look right for a field, so that many bodies get past the schema to the model.
plausible = {
    "model": st.sampled_from([*MODELS, "nope", ""]),
    "prompt": st.sampled_from(WORDS) | st.lists(st.sampled_from(WORDS), max_size=3) | st.lists(st.integers(-2, 80)),
    "text": st.sampled_from(WORDS) | st.lists(st.sampled_from(WORDS), max_size=3),
    "input": st.sampled_from(WORDS) | st.lists(st.integers(-2, 80), max_size=3),
    "instances": st.lists(
        st.fixed_dictionaries({"text": words}, optional={"id": scalars, "x": values})
        | st.dictionaries(st.text(), values),
        max_size=3,
    ),
    "max_tokens": st.integers(0, 12),
    "n": st.integers(0, 4),
    "num_beams": st.integers(1, 3),
    "temperature": st.floats(0, 3) | st.none(),
    "top_k": st.integers(0, 200),
    "top_p": st.floats(0.01, 1),
    "min_p": st.floats(0, 0.99),
    "logprobs": st.integers(-1, 25) | st.none(),
    "stop": st.sampled_from(WORDS) | st.lists(st.sampled_from(WORDS), max_size=3),
    "stream": st.booleans(),
    "seed": st.integers(-(2**70), 2**70),
    "length_penalty": st.floats(-10, 10),
    "repetition_penalty": st.floats(0.01, 100),
    "min_new_tokens": st.integers(-1, 20),
    "no_repeat_ngram_size": st.integers(-1, 5),
    "max_length_factor": st.floats(0.01, 1000) | st.none(),
    "echo": st.booleans(),
    "encoding_format": st.sampled_from(["float", "base64", "hex"]),
    "pooling": st.sampled_from(["mean", "cls", "last", None]),
    "normalize": st.booleans(),
}


def body_for(path: str):
    """Three in four bodies of the endpoint's own fields with plausible values (many valid, to reach the
    models), one in four with any field holding any value."""
    schema = ENDPOINTS[path].model_fields
    required = {name: plausible.get(name, values) for name, info in schema.items() if info.is_required()}
    if path == "/v1/fill-mask":
        required["text"] = masked | st.lists(masked, max_size=3) | required["text"]
    required["model"] = st.sampled_from(CAN[path]) | st.sampled_from(MODELS)
    optional = sorted(name for name, info in schema.items() if not info.is_required() and name in plausible)
    some = st.lists(st.sampled_from(optional), max_size=3, unique=True)
    fitting = st.tuples(
        st.fixed_dictionaries(required),
        some.flatmap(lambda names: st.fixed_dictionaries({n: plausible[n] for n in names})),
    ).map(lambda pair: {**pair[0], **pair[1]})
    entry = st.sampled_from([*schema, "surprise"]).flatmap(lambda name: st.tuples(st.just(name), values))
    anything = st.tuples(fitting, st.lists(entry, max_size=3)).map(lambda pair: {**pair[0], **dict(pair[1])})
    return st.one_of(fitting, fitting, fitting, anything)


LIMITS = Limits(max_tokens=10, max_request_tokens=60, max_inputs=4, max_body_bytes=4096, request_timeout=30)


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    folders = make_folders(tmp_path_factory.mktemp("served"))
    models = {name: load_served(name, folder) for name, folder in folders.items()}
    with TestClient(create_app(models, LIMITS)) as client:
        yield client


def check(response) -> None:
    assert response.status_code < 500, response.text
    if response.headers["content-type"].startswith("text/event-stream"):
        events = [line for line in response.text.splitlines() if line.startswith("data: ")]
        assert events and all(e == "data: [DONE]" or json.loads(e[6:]) for e in events)
        assert events[-1] == "data: [DONE]" or "error" in json.loads(events[-1][6:])
        assert "error" not in events[-1] or json.loads(events[-1][6:])["error"]["code"] < 500, events[-1]
    else:
        answer = response.json()
        assert ("error" in answer) == (response.status_code >= 400)


@pytest.mark.parametrize("path", ENDPOINTS)
def test_made_up_bodies_never_get_a_500(client, path):
    @settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    @given(body=body_for(path))
    def fuzz(body):
        # json.dumps writes NaN and Infinity as Python reads them: bodies no strict client would send
        check(client.post(path, content=json.dumps(body), headers={"content-type": "application/json"}))

    fuzz()
    assert client.get("/health").status_code == 200


@settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(raw=st.binary(max_size=300) | values.map(json.dumps).map(str.encode), path=st.sampled_from(list(ENDPOINTS)))
def test_made_up_bytes_never_get_a_500(client, raw, path):
    check(client.post(path, content=raw, headers={"content-type": "application/json"}))
