"""`triform serve`: every model behind one HTTP server (FastAPI on uvicorn), batched and streamed.

- `create_app(models, limits)`: the app; `load_served(name, folder)`: a model folder and what it can do;
- `Limits`: what the server accepts and how much it takes on at once.

OpenAI-compatible completions and embeddings, fill-mask, translate, predict, models, health, metrics
and a playground page; decoding by continuous batching (triform.generate.continuous).
"""

from triform.serve.app import create_app
from triform.serve.limits import Limits
from triform.serve.models import ServedModel, load_served, model_name

__all__ = ["Limits", "ServedModel", "create_app", "load_served", "model_name"]
