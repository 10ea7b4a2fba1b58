"""`triform serve --model runs/gpt/model [--model name=DIR ...] --port 8000`: every model behind one
HTTP server (FastAPI on uvicorn): OpenAI-compatible completions and embeddings, fill-mask, translate,
predict, and a playground at /. What each model serves is decided by its folder. SIGTERM or Ctrl-C
stops taking requests, finishes those in flight, then exits."""

from __future__ import annotations

from typing import Optional

from triform.precision import Precision


def add_arguments(parser) -> None:
    from triform.serve.limits import Limits

    defaults = Limits()
    parser.add_argument(
        "--model",
        type=str,
        action="append",
        required=True,
        help="a model folder, DIR or NAME=DIR; repeat for several. The name defaults to the folder's "
        "(a run's model/ or best/ takes the run's)",
    )
    parser.add_argument("--host", type=str, default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on")
    parser.add_argument("--device", type=str, default="cpu", help="torch device, e.g. cpu or cuda")
    parser.add_argument(
        "--precision",
        type=Precision,
        default="fp32",
        help="fp32: a request gets exactly what it gets alone in any batch; auto or bf16 run faster where the "
        "hardware has bf16, rounding by the batch's shape",
    )
    parser.add_argument(
        "--compile",
        type=bool,
        default=False,
        help="torch.compile the decoding steps: faster steps after a compile on each model's first requests",
    )
    parser.add_argument("--threads", type=Optional[int], default=None, help="torch threads (default: torch's)")
    help_of = {
        "max_tokens": "most new tokens of one output",
        "max_request_tokens": "most n x max_tokens x prompts of one request",
        "max_prompt_tokens": "most tokens of one prompt or text (default: what the model's max_len leaves)",
        "max_inputs": "most prompts, texts or records in one request",
        "max_body_bytes": "largest request body",
        "request_timeout": "seconds from a request's arrival to its last token",
        "queue_size": "requests waiting for a model; beyond it the server answers 429 with Retry-After",
        "slots": "rows decoded together (continuous batching), and inputs per batch elsewhere",
        "max_length_factor": "source -> target models: a target of at most this x its source's tokens + 10 (null: off)",
    }
    for name, help_text in help_of.items():
        default = getattr(defaults, name)
        kind = {int: int, float: float}[type(default)] if default is not None else Optional[int]
        if name == "max_length_factor":
            kind = Optional[float]
        parser.add_argument(
            f"--{name.replace('_', '-')}", f"--{name}", dest=name, type=kind, default=default, help=help_text
        )


def parse_models(values: list[str]) -> dict[str, str]:
    from triform.checkpoint import CONFIG_FILE, model_folder
    from triform.errors import TriformError
    from triform.serve import model_name

    folders: dict[str, str] = {}
    for value in values:
        name, _, folder = value.rpartition("=") if "=" in value else ("", "", value)
        name = name or model_name(folder)
        if not (model_folder(folder) / CONFIG_FILE).is_file():
            raise TriformError(f"--model {value}: {folder}/config.json not found; expected a model folder")
        if name in folders:
            raise TriformError(f"--model {value}: a second model named {name!r}; name them: --model NAME=DIR")
        folders[name] = folder
    return folders


def check_address(host: str, port: int) -> None:
    """Refuse, before any model loads, an address this process cannot listen on (a port out of range
    or taken, a host not of this machine), in one line; uvicorn would say so after the loading."""
    import socket

    from triform.errors import TriformError

    if not 0 <= port <= 65535:
        raise TriformError(f"--port {port}: expected a port from 0 to 65535")
    try:
        family, kind, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as error:
        raise TriformError(f"--host {host}: {error.strerror}") from None
    with socket.socket(family, kind) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind(address)
        except OSError as error:
            raise TriformError(f"--host {host} --port {port}: cannot listen there ({error.strerror})") from None


def run(args) -> int:
    import signal

    import torch
    import uvicorn

    from triform.progress import say
    from triform.serve import Limits, create_app, load_served

    limits = Limits(**{name: getattr(args, name) for name in Limits.__dataclass_fields__})
    check_address(args.host, args.port)
    if args.threads:
        torch.set_num_threads(args.threads)
    models = {}
    for name, folder in parse_models(args.model).items():
        served = load_served(name, folder, device=args.device)
        say(f"serve: {name} from {folder}: {served.arch} + {served.recipe.objective}; {', '.join(served.tasks)}")
        models[name] = served
    app = create_app(models, limits, precision=args.precision, compile=args.compile)
    say(f"serve: http://{args.host}:{args.port}/ (playground), /v1/models, /docs; {limits.slots} slots per model")
    # uvicorn stops on SIGTERM once the requests in flight are answered, then raises the signal again
    # for the handler it found: a graceful stop asked for by a process manager is a normal exit here.
    previous = signal.signal(signal.SIGTERM, lambda *_: None)
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    finally:
        signal.signal(signal.SIGTERM, previous)
    say("serve: stopped")
    return 0
