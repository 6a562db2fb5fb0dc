"""full: a full fine-tune. Every weight of the base trains with AdamW, embeddings and output head included.

The comparison point for the adapter methods: the same recipe, the same gates,
and what the adapter saved (optimizer state, size on disk, training time and
peak memory) is whatever this costs more. The candidate is stored as GaLore's
is, the tensors that changed as trained - base (adapter kind ``delta``).
AdamW keeps two moments per weight, so the optimizer holds twice the model in
float32 (about 1.1 GB for the 135M default) on top of its weights and gradients.
"""

from __future__ import annotations

import torch

from gatekeeper.training.methods.base import TrainingMethod, save_delta
from gatekeeper.training.methods.lora import load_for_training


def build(recipe, base, precision: str = "float32"):
    """The base itself, every parameter trainable, under AdamW.

    The trained weights are the base's own, so they load in float32 whatever ``precision``
    computes in: the optimizer's updates are too small for bfloat16's 8-bit mantissa.
    """
    model = load_for_training(recipe, base, "float32")
    # named_parameters lists a tied weight once (SmolLM2's output head is its embedding matrix),
    # so it trains, and is stored, once
    trainable = dict(model.named_parameters())
    for param in trainable.values():
        param.requires_grad_(True)
    settings = recipe.training
    # no weight decay on norms and biases: decaying a norm's gain towards zero is not regularisation
    matrices = [p for p in trainable.values() if p.dim() > 1]
    vectors = [p for p in trainable.values() if p.dim() <= 1]
    groups = [{"params": matrices}] + ([{"params": vectors, "weight_decay": 0.0}] if vectors else [])
    optimizer = torch.optim.AdamW(groups, lr=settings.learning_rate, weight_decay=settings.weight_decay,
                                  fused=model.device.type == "cuda")
    model.train()
    return model, trainable, optimizer


FULL = TrainingMethod("full", "delta", build, save_delta)
