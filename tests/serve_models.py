"""Model folders of every kind a server holds (a GPT, a translator, a BERT, a fine-tuned classifier),
tiny and made in a second, and a server on a loopback port for tests that need real HTTP."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

from text_models import random_model, trained_masked_lm, word_setup

from triform.checkpoint import save_model
from triform.data.records import Record
from triform.tasks import Framing, make_task
from triform.tasks.checkpoint import save_task_model


def make_folders(root: Path) -> dict[str, Path]:
    tokenizer, specials = word_setup()
    save_model(random_model("stack", tokenizer), root / "gpt", specials=specials, tokenizer=tokenizer)
    translator = random_model("encoder-decoder", tokenizer)
    save_model(translator, root / "translator", specials=specials, tokenizer=tokenizer)
    model, bert_tokenizer, bert_specials = trained_masked_lm()
    save_model(model, root / "bert", specials=bert_specials, tokenizer=bert_tokenizer, extra={"objective": "mlm"})
    task = make_task("classify", Framing("stack", "bidirectional", bert_specials, max_len=64), bert_tokenizer)
    task.fit([Record({"text": "a", "label": label}, "train", i) for i, label in enumerate(["animal", "thing"])])
    save_task_model(task.build_model(model), task, root / "classifier", extra={"objective": "mlm"})
    return {name: root / name for name in ("gpt", "translator", "bert", "classifier")}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class LiveServer:
    """uvicorn serving `app` on 127.0.0.1 in a thread, for as long as the context lasts."""

    def __init__(self, app):
        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(30)


class Slowed:
    """The model's forward pass made to take `seconds` more, and counted: a stand-in for a model large
    enough that a request runs for a while."""

    def __init__(self, model, seconds: float):
        self.model, self.seconds, self.calls = model, seconds, 0

    def __enter__(self):
        forward = self.model.forward

        def slow(*args, **kwargs):
            self.calls += 1
            time.sleep(self.seconds)
            return forward(*args, **kwargs)

        self.model.forward = slow
        return self

    def __exit__(self, *exc):
        del self.model.forward  # the class's own again
