"""GaLore: full-parameter training with gradient low-rank projection (Zhao et al., 2024).

Every targeted weight matrix moves, but Adam's two moments are kept for the
gradient projected onto a rank-r subspace, refreshed every
``update_proj_gap`` steps from an SVD of the gradient. For an (m, n) matrix
the optimizer holds 2 * max(m, n) * r floats instead of 2 * m * n.
galore-torch's ``GaLoreAdamW`` projects the parameter group that carries
``rank``; its other group is plain AdamW.

What trains, and why:

- the 2-D weights of the targeted attention and MLP linear layers: GaLore;
- norms and biases: plain AdamW, without weight decay (a few thousand floats,
  so their full optimizer state costs nothing, and decaying a norm's gain
  towards zero is not regularisation);
- embeddings and the output head (tied to them in SmolLM2): frozen. They are
  a fifth of the model's weights, a few hundred examples touch a sliver of
  the vocabulary, and full AdamW state for them would cost more than GaLore
  saves everywhere else. Frozen, they also stay out of the stored delta;
- linear layers left out of ``target_modules``: frozen, as with LoRA.
"""

from __future__ import annotations

import torch

from gatekeeper.bundle.base import resolve_base
from gatekeeper.bundle.recipe import GaloreSettings, TrainingSettings
from gatekeeper.errors import RecipeError
from gatekeeper.training.methods.base import TrainingMethod, save_delta
from gatekeeper.training.methods.lora import load_for_training


def _targeted(module_name: str, targets: str | list[str]) -> bool:
    if targets == "all-linear":
        return True
    names = [targets] if isinstance(targets, str) else targets
    return any(module_name == t or module_name.endswith("." + t) for t in names)


def split_parameters(model, settings: GaloreSettings) -> tuple[dict, dict]:
    """(GaLore, plain AdamW) parameters by name; every other parameter is frozen."""
    head = model.get_output_embeddings()
    frozen = {id(model.get_input_embeddings().weight)} | ({id(head.weight)} if head is not None else set())
    linear = {name: m for name, m in model.named_modules() if isinstance(m, torch.nn.Linear) and m is not head}
    projected = {f"{name}.weight": m.weight for name, m in linear.items()
                 if _targeted(name, settings.target_modules) and id(m.weight) not in frozen}
    if not projected:
        names = sorted({n.rsplit(".", 1)[-1] for n in linear})
        raise RecipeError(
            f"galore.target_modules {settings.target_modules!r} match no layer of the base; "
            f"its linear modules are: {', '.join(names)}"
        )
    smallest = min(projected.items(), key=lambda kv: min(kv[1].shape))
    if settings.rank > min(smallest[1].shape):
        raise RecipeError(
            f"galore.rank {settings.rank} exceeds the smaller side of {smallest[0]} {tuple(smallest[1].shape)}: "
            f"the projection would not be low-rank"
        )
    plain = {}
    for name, param in model.named_parameters():
        keep = name in projected or (param.dim() == 1 and id(param) not in frozen)
        param.requires_grad_(keep)
        if keep and name not in projected:
            plain[name] = param
    return projected, plain


def build_optimizer(projected: dict, plain: dict, settings: GaloreSettings, training: TrainingSettings):
    """GaLoreAdamW: the projected group carries rank and friends, the plain group is ordinary AdamW."""
    from galore_torch import GaLoreAdamW

    groups = [{
        "params": list(projected.values()),
        "rank": settings.rank,
        "update_proj_gap": settings.update_proj_gap,
        "scale": settings.scale,
        "proj_type": settings.proj_type,
    }]
    if plain:
        groups.append({"params": list(plain.values()), "weight_decay": 0.0})
    return GaLoreAdamW(groups, lr=training.learning_rate, weight_decay=training.weight_decay,
                       no_deprecation_warning=True)


def preflight(recipe, root) -> None:
    """Apply the recipe's GaLore settings to a weightless copy of the base (meta device).

    A sweep calls this with its largest rank before training anything, so a rank
    the smallest matrix cannot take costs seconds instead of the ranks before it.
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(resolve_base(recipe.base, relative_to=root).path)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    split_parameters(model, recipe.galore)


def build(recipe, base, precision: str = "float32"):
    """The base itself, its targeted weights, norms and biases trainable, under GaLoreAdamW.

    The weights that train are the base's own, so they load in float32 whatever ``precision``
    computes in: the optimizer's updates are too small for bfloat16's 8-bit mantissa.
    """
    model = load_for_training(recipe, base, "float32")
    projected, plain = split_parameters(model, recipe.galore)
    model.train()
    return model, projected | plain, build_optimizer(projected, plain, recipe.galore, recipe.training)


GALORE = TrainingMethod("galore", "delta", build, save_delta, preflight=preflight)
