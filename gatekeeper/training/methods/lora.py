"""lora, dora and qlora: a peft adapter on a frozen base (qlora's base in 4-bit NF4), trained with AdamW."""

from __future__ import annotations

from pathlib import Path

import torch

from gatekeeper.bundle.base import ResolvedBase
from gatekeeper.bundle.recipe import Recipe
from gatekeeper.errors import RecipeError
from gatekeeper.runtime.hf.modeling import (
    keep_4bit_layers_differentiable,
    load_base_model,
)
from gatekeeper.training.methods.base import Saved, TrainingMethod


def load_for_training(recipe: Recipe, base: ResolvedBase, dtype: str, quantization: str = "none"):
    """The base to train on, attention and activation checkpointing set up for training."""
    model = load_base_model(base.path, dtype=dtype, quantization=quantization, device=recipe.serving.device)
    if model.device.type == "cpu":
        # PyTorch's CPU flash-attention backward is slow at these short lengths: a LoRA step of
        # 8 tickets took 1.7-1.9 s with eager attention against 2.2-2.6 s with sdpa (bf16, 2 cores).
        model.set_attn_implementation("eager")
    if recipe.training.gradient_checkpointing:
        # non-reentrant: gradients reach the LoRA weights without the embeddings' output requiring grad
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model


def build_peft_model(base_model, recipe: Recipe):
    from peft import LoraConfig, get_peft_model

    settings = recipe.adapter
    config = LoraConfig(
        use_dora=recipe.method == "dora",
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=settings.target_modules,
        use_rslora=settings.use_rslora,
        layers_to_transform=settings.layers_to_transform,
        task_type="CAUSAL_LM",
    )
    try:
        return get_peft_model(base_model, config)
    except ValueError as exc:
        if "not found" not in str(exc) and "match" not in str(exc):
            raise
        linear = sorted({n.rsplit(".", 1)[-1] for n, m in base_model.named_modules() if isinstance(m, torch.nn.Linear)})
        raise RecipeError(
            f"target_modules {settings.target_modules!r} match no layer of the base; its linear modules are: {', '.join(linear)}"
        ) from None


def build(recipe: Recipe, base: ResolvedBase, precision: str = "float32"):
    """The peft model, its trainable (adapter) parameters by name, and their AdamW optimizer.

    ``precision`` is the compute dtype. The frozen base is loaded in it (half the
    memory in bfloat16); the adapter's weights stay float32, as the optimizer's
    updates are too small for bfloat16's 8-bit mantissa.
    """
    quantization = "nf4" if recipe.method == "qlora" else "none"
    model = load_for_training(recipe, base, precision, quantization)  # qlora: the 4-bit layers' compute dtype
    if quantization == "nf4":
        # Not peft's prepare_model_for_kbit_training: it casts every layer that is not
        # 4-bit (embeddings, output layer, norms) to float32, which on a 1.5B model with
        # a 152k vocabulary adds about 1 GB and undoes much of what 4-bit saved. These
        # stay frozen in the compute dtype; the LoRA weights train in float32 as always.
        for param in model.parameters():
            param.requires_grad_(False)
        keep_4bit_layers_differentiable(model)
    model = build_peft_model(model, recipe)
    model.train()
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    settings = recipe.training
    # fused: one kernel for all parameters instead of several per tensor (CUDA only)
    optimizer = torch.optim.AdamW(list(trainable.values()), lr=settings.learning_rate, weight_decay=settings.weight_decay,
                                  fused=model.device.type == "cuda")
    return model, trainable, optimizer


def save(result, adapter_dir: Path) -> Saved:
    # peft records the directory the base was loaded from: for the embedded base, this machine's
    # cache. A bundle travels, so its adapter names the base as the recipe does (bundle.yaml pins the hashes).
    for config in result.model.peft_config.values():
        config.base_model_name_or_path = result.base.ref
    result.model.save_pretrained(adapter_dir, safe_serialization=True)
    return Saved(adapter_dir / "adapter_model.safetensors", {})


def preflight(recipe: Recipe, root: Path) -> None:
    """Refuse adapted layers the base does not have, from its config alone (no weights load)."""
    from transformers import AutoConfig

    from gatekeeper.bundle.base import resolve_base

    wanted = (recipe.adapter.layers_to_transform or []) if recipe.adapter else []
    if not wanted:
        return
    layers = getattr(AutoConfig.from_pretrained(resolve_base(recipe.base, relative_to=root).path),
                     "num_hidden_layers", None)
    if layers is not None and max(wanted) >= layers:
        raise RecipeError(f"adapter.layers_to_transform names layer {max(wanted)}; "
                          f"the base has {layers} (0 to {layers - 1})")


LORA = TrainingMethod("lora", "lora", build, save, preflight=preflight)
DORA = TrainingMethod("dora", "lora", build, save, preflight=preflight)
QLORA = TrainingMethod("qlora", "lora", build, save, serving_quantization="nf4", preflight=preflight)
