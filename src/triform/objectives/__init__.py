"""Training objectives: each turns token ids into (inputs, pattern, targets), scores logits, and answers
everything the rest of triform asks about how it lays out text."""

from __future__ import annotations

from triform.objectives.base import PACKS, Objective, Windows
from triform.objectives.batch import IGNORE, Batch
from triform.objectives.compat import ALLOWED, check_pair
from triform.objectives.layout import PromptLayout
from triform.objectives.recipe import Recipe, default_recipe, read_recipe
from triform.objectives.registry import OBJECTIVE_CLASSES, make_objective, objective_class, option_names

__all__ = [
    "ALLOWED",
    "IGNORE",
    "OBJECTIVE_CLASSES",
    "PACKS",
    "Batch",
    "Objective",
    "PromptLayout",
    "Recipe",
    "Windows",
    "check_pair",
    "default_recipe",
    "make_objective",
    "objective_class",
    "option_names",
    "read_recipe",
]
