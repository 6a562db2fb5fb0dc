"""What a training method is: everything the trainer and the version writer ask of one, in one place.

A method builds the model to train with its trainable parameters and their
optimizer, says how the base answers during training (the adapter switched off),
writes its trained weights into a bundle's adapter directory, and checks a
recipe before any weights load. The names come from the recipe schema
(``gatekeeper.bundle.recipe``); ``gatekeeper.training.methods`` registers one
implementation per name, once.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal


@dataclass(frozen=True)
class Saved:
    """What ``save`` wrote: the weights file (its size is recorded) and counts for the training record."""

    weights: Path
    counts: dict


@dataclass(frozen=True)
class TrainingMethod:
    name: str
    adapter_kind: Literal["lora", "delta"]
    """What its candidates are: a peft adapter served on the base, or a delta of the base's own weights."""
    build: Callable
    """``build(recipe, base, precision) -> (model, trainable {name: parameter}, optimizer)``."""
    save: Callable
    """``save(result, adapter_dir) -> Saved``: the trained weights, safetensors only."""
    serving_quantization: str = "none"
    """How its candidates must be served: QLoRA over the same 4-bit base it trained on."""
    preflight: Callable | None = None
    """``preflight(recipe, root)``: refuse settings the base cannot take, before anything trains."""

    @staticmethod
    def base_side(model):
        """The base's own behaviour on the model being trained: the adapter off (a full-weight
        method has not moved a weight yet when the trainer asks)."""
        disable = getattr(model, "disable_adapter", None)
        return disable() if disable is not None else contextlib.nullcontext()


def save_delta(result, adapter_dir: Path) -> Saved:
    """A full-weight method's candidate (galore, full): only what changed, as trained - base, in
    ``delta.safetensors``; the base hash in its metadata pins what it applies to."""
    from gatekeeper.runtime.hf.delta import DELTA_FILE, write_delta

    counts = write_delta(result.model, result.trained, result.base.path, result.base.sha256, adapter_dir)
    return Saved(adapter_dir / DELTA_FILE, counts)


def optimizer_state_bytes(optimizer) -> int:
    """Bytes held in the optimizer's tensors (moments and GaLore projections)."""
    import torch

    total = 0
    for state in optimizer.state.values():
        for value in state.values():
            projection = getattr(value, "ortho_matrix", None)
            parts = [value] if isinstance(value, torch.Tensor) else (
                projection if isinstance(projection, list) else [projection])
            total += sum(t.numel() * t.element_size() for t in parts if isinstance(t, torch.Tensor))
    return total
