"""What trains under which optimizer, per method.

lora, dora and qlora wrap the base with a peft adapter (qlora over a frozen
4-bit base) and train the adapter with AdamW; galore trains the base's own
linear weights with GaLoreAdamW (see ``galore.py``).
"""

from __future__ import annotations

from gatekeeper.bundle.base import ResolvedBase
from gatekeeper.errors import RecipeError
from gatekeeper.bundle.recipe import Recipe


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
        task_type="CAUSAL_LM",
    )
    try:
        return get_peft_model(base_model, config)
    except ValueError as exc:
        if "not found" not in str(exc) and "match" not in str(exc):
            raise
        import torch

        linear = sorted({n.rsplit(".", 1)[-1] for n, m in base_model.named_modules() if isinstance(m, torch.nn.Linear)})
        raise RecipeError(
            f"target_modules {settings.target_modules!r} match no layer of the base; its linear modules are: {', '.join(linear)}"
        ) from None


def build_trainable(recipe: Recipe, base: ResolvedBase, precision: str = "float32"):
    """The model to train, its trainable parameters by name, and their optimizer.

    ``precision`` is the compute dtype. A frozen base is loaded in it (half the
    memory in bfloat16); weights that train stay float32, as the optimizer's
    updates are too small for bfloat16's 8-bit mantissa.
    """
    import torch

    from gatekeeper.runtime.hf.modeling import keep_4bit_layers_differentiable, load_base_model

    settings = recipe.training
    quantization = "nf4" if recipe.method == "qlora" else "none"
    frozen_dtype = "float32" if recipe.method == "galore" else precision  # qlora: the 4-bit layers' compute dtype
    model = load_base_model(base.path, dtype=frozen_dtype, quantization=quantization, device=recipe.serving.device)
    if model.device.type == "cpu":
        # PyTorch's CPU flash-attention backward is slow at these short lengths: a LoRA step of
        # 8 tickets took 1.7-1.9 s with eager attention against 2.2-2.6 s with sdpa (bf16, 2 cores).
        model.set_attn_implementation("eager")
    if settings.gradient_checkpointing:
        # non-reentrant: gradients reach the LoRA weights without the embeddings' output requiring grad
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if recipe.method == "galore":
        from gatekeeper.training.galore import build_optimizer, split_parameters

        projected, plain = split_parameters(model, recipe.galore)
        model.train()
        return model, projected | plain, build_optimizer(projected, plain, recipe.galore, settings)
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
    # fused: one kernel for all parameters instead of several per tensor (CUDA only)
    optimizer = torch.optim.AdamW(list(trainable.values()), lr=settings.learning_rate, weight_decay=settings.weight_decay,
                                  fused=model.device.type == "cuda")
    return model, trainable, optimizer
