"""Training methods, one module each, registered once here (as peft registers its tuners).

``lora`` holds lora, dora and qlora (a peft adapter on a frozen base); ``galore``
trains the base's own weights with low-rank optimizer state and stores the
delta; ``full`` trains every weight with AdamW and stores the delta the same
way; ``dpo`` continues a LoRA parent's adapter on preference pairs. Adding a method: a module with a ``TrainingMethod``, its name in the
recipe schema (``gatekeeper.bundle.recipe.MethodName``), and a line below;
``tests/test_methods.py`` fails until all three agree.
"""

from __future__ import annotations

from gatekeeper.errors import RecipeError
from gatekeeper.training.methods import dpo, full, galore, lora
from gatekeeper.training.methods.base import (
    Saved,
    TrainingMethod,
    optimizer_state_bytes,
)

METHODS: dict[str, TrainingMethod] = {
    m.name: m for m in (lora.LORA, lora.DORA, lora.QLORA, galore.GALORE, full.FULL, dpo.DPO)
}


def get_method(name: str) -> TrainingMethod:
    if name not in METHODS:
        raise RecipeError(f"unknown training method {name!r}; known: {', '.join(sorted(METHODS))}")
    return METHODS[name]


__all__ = ["METHODS", "Saved", "TrainingMethod", "get_method", "optimizer_state_bytes"]
