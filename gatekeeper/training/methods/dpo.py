"""dpo: a LoRA parent's adapter trained further on preference pairs (the loss: ``gatekeeper.training.preference``).

The parent is a signed bundle named by the recipe. Before anything loads it is
verified as a check verifies a candidate (every hash, the signature), and it must
be a LoRA adapter on the recipe's base: a child that starts from weights nobody
can vouch for would be signed as if someone had. The child keeps the parent's
rank, alpha and target modules; it is the same adapter, moved.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gatekeeper._util.documents import read_json
from gatekeeper.bundle.loading import LoadedBundle, load_bundle
from gatekeeper.bundle.recipe import Recipe
from gatekeeper.bundle.signing import verify_signature
from gatekeeper.errors import BundleError, GatekeeperError, RecipeError
from gatekeeper.training.methods.base import TrainingMethod
from gatekeeper.training.methods.lora import load_for_training
from gatekeeper.training.methods.lora import save as save_lora

PARENT_METHODS = ("lora", "dora", "dpo")
"""Adapters a child can continue in full precision; a qlora parent trained over a 4-bit base."""
# recipe adapter field -> the peft adapter_config.json key that holds it
CONFIG_KEYS = {"r": "r", "alpha": "lora_alpha", "dropout": "lora_dropout", "target_modules": "target_modules",
               "use_rslora": "use_rslora", "layers_to_transform": "layers_to_transform"}


@dataclass(frozen=True)
class Parent:
    bundle: LoadedBundle
    signature: str

    @property
    def adapter_dir(self) -> Path:
        return self.bundle.adapter_dir

    def lineage(self, written: str) -> dict:
        """What the child's training record says of its parent: which version, exactly which bundle."""
        manifest = self.bundle.manifest
        lineage = {"name": manifest.name, "version": manifest.version, "method": manifest.adapter.method,
                   "manifest_sha256": self.bundle.manifest_sha256, "signature": self.signature, "path": written}
        recipe = self.bundle.recipe
        if recipe is not None and recipe.adapter is not None:
            # the adapter settings the child inherits, as the parent's recipe wrote them: a diff of the two
            # then reads them side by side instead of "—" for the child
            lineage["adapter"] = recipe.adapter.model_dump(mode="json", exclude_unset=True)
        return lineage


def load_parent(recipe: Recipe, root: Path, base_sha256: str | None = None) -> Parent:
    """The verified parent bundle, or one line (RecipeError) saying why it cannot be one."""
    path = root / recipe.parent
    try:
        bundle = load_bundle(path)
    except GatekeeperError as exc:  # missing, not a bundle, a file whose hash changed
        raise RecipeError(f"parent {recipe.parent}: {exc}") from None
    status = verify_signature(bundle.root)
    if not status.ok:
        raise RecipeError(f"parent {recipe.parent}: {status.detail}")
    adapter = bundle.manifest.adapter
    if adapter.kind != "lora" or adapter.method not in PARENT_METHODS:
        raise RecipeError(f"parent {recipe.parent}: a {adapter.method} bundle ({adapter.kind} weights); "
                          f"method dpo continues a {', '.join(PARENT_METHODS)} adapter")
    if base_sha256 is not None and bundle.manifest.base.sha256 != base_sha256:
        raise RecipeError(f"parent {recipe.parent} was trained on base {bundle.manifest.base.sha256[:12]}…, "
                          f"the recipe names {recipe.base} ({base_sha256[:12]}…)")
    _same_adapter(recipe, bundle)
    return Parent(bundle, str(status))


def _same_adapter(recipe: Recipe, bundle: LoadedBundle) -> None:
    """An ``adapter`` section may only repeat the parent's settings: the child is the parent's adapter."""
    if recipe.adapter is None:
        return
    config = read_json(bundle.adapter_dir / "adapter_config.json", BundleError, "adapter config")
    for field in sorted(recipe.adapter.model_fields_set):
        wanted, found = getattr(recipe.adapter, field), config.get(CONFIG_KEYS.get(field, field))
        if isinstance(wanted, list) and isinstance(found, list):
            wanted, found = sorted(wanted), sorted(found)
        if wanted != found:
            raise RecipeError(f"adapter.{field} is {wanted!r} but the parent's adapter has {found!r}; "
                              f"method dpo keeps the parent's adapter settings (leave 'adapter' out)")


def preflight(recipe: Recipe, root: Path) -> None:
    """The parent verified, before any weights load (inspect and sweep ask this too)."""
    from gatekeeper.bundle.base import resolve_base

    load_parent(recipe, root, resolve_base(recipe.base, relative_to=root).sha256)


def build(recipe: Recipe, base, precision: str = "float32", *, parent: Parent):
    """The base with the parent's adapter loaded trainable, its parameters by name, and their AdamW.

    As for lora: the frozen base in the compute dtype, the adapter's weights in float32.
    """
    import torch
    from peft import PeftModel

    model = load_for_training(recipe, base, precision)
    model = PeftModel.from_pretrained(model, parent.adapter_dir, is_trainable=True)
    model.train()
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    settings = recipe.training
    optimizer = torch.optim.AdamW(list(trainable.values()), lr=settings.learning_rate,
                                  weight_decay=settings.weight_decay, fused=model.device.type == "cuda")
    return model, trainable, optimizer


DPO = TrainingMethod("dpo", "lora", build, save_lora, preflight=preflight)
