"""``recipe.yaml``: everything a training run depends on, pinned.

Unknown keys are rejected with the key named: a misspelt ``learning_rte``
silently falling back to a default is how irreproducible runs happen.
Relative paths are relative to the recipe file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from gatekeeper._util.documents import Document, read_yaml, validated
from gatekeeper.bundle.base import DEFAULT_BASE
from gatekeeper.bundle.manifest import (
    FULL_WEIGHT_METHODS,
    DataProvenance,
    Decoding,
    GateSpec,
    MethodName,
    PromptTemplate,
    Serving,
)
from gatekeeper.errors import GatekeeperError, RecipeError

RECIPE_SCHEMA_VERSION = 1
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
"""A candidate's name: it names the directory its versions go in, so a path segment and nothing else."""



class AdapterSettings(Document):
    r: int = Field(16, gt=0)
    """LoRA rank."""
    alpha: float = Field(32, gt=0)
    """LoRA scaling numerator: the update is scaled by alpha / r (alpha / sqrt(r) with rsLoRA)."""
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: str | list[str] = "all-linear"
    """``all-linear`` (every linear layer but the output head) or a list of module names."""
    use_rslora: bool = False
    layers_to_transform: list[int] | None = None
    """Only these decoder layers (0 is the first) get the adapter; all of them when unset. Backward
    stops at the lowest adapted layer, so adapting the upper half saves a third of a step's compute."""

    @model_validator(mode="after")
    def _layers(self):
        if self.layers_to_transform is not None and (
                not self.layers_to_transform or min(self.layers_to_transform) < 0):
            raise ValueError("layers_to_transform must list layer indices >= 0")
        if self.layers_to_transform is not None and isinstance(self.target_modules, str):
            # peft matches a string pattern against whole module paths, layer numbers included
            raise ValueError("layers_to_transform needs target_modules as a list of module names, "
                             f"not {self.target_modules!r}")
        return self


class RehearsalSettings(Document):
    """Ordinary requests the base answers before training, mixed into every batch (see gatekeeper.training.rehearsal)."""

    prompts: str
    """JSONL of requests that are not the task (``id``, ``input``, ``expected`` may be null)."""
    per_batch: int = Field(2, gt=0)
    """Rehearsal rows added to each batch of task rows."""
    max_new_tokens: int = Field(48, gt=0)
    mode: Literal["answers", "distill"] = "answers"
    """``answers``: the rows' loss is the likelihood of the base's greedy answer, pooled with the
    task's tokens. ``distill``: it is the divergence KL(base || adapter) from the base's whole
    next-token distribution at every answer position, the base computed with the adapter switched
    off on the same model; the step's loss is the task's mean loss plus ``weight`` times it."""
    weight: float = Field(1.0, ge=0)
    """How much the distillation term counts against the task's (``distill`` only)."""

    @model_validator(mode="after")
    def _weight_needs_distill(self):
        if self.mode == "answers" and self.weight != 1.0:
            raise ValueError("weight applies to mode 'distill' only; mode 'answers' pools the rows with the task's")
        return self


class GaloreSettings(Document):
    """GaLore: full-parameter training whose optimizer state lives in a low-rank projection of each gradient."""

    rank: int = Field(16, gt=0)
    """Rank of the gradient projection; Adam's moments for a (m, n) matrix are (max(m, n), rank)."""
    update_proj_gap: int = Field(50, gt=0)
    """Steps between recomputing the projection (an SVD of the gradient). The paper's 200 suits
    pre-training runs of thousands of steps; a short fine-tune would keep its first subspace."""
    scale: float = Field(0.25, gt=0)
    """Multiplies the projected-back update; the projected weights step at ``learning_rate * scale``."""
    proj_type: Literal["std", "reverse_std", "right", "left", "full"] = "std"
    target_modules: str | list[str] = "all-linear"
    """Linear layers whose weight matrices get GaLore: ``all-linear`` (attention and MLP, not the
    output head) or a list of module names. Norms and biases train with plain AdamW; embeddings stay frozen."""


class DpoSettings(Document):
    """Direct preference optimisation (Rafailov et al., 2023) on top of a LoRA parent, the parent being the reference."""

    beta: float = Field(0.1, gt=0)
    """How far the child may move from its parent. A pair's loss is -log sigmoid(beta * margin), the
    margin being how much more the child prefers the chosen answer to the rejected one than the parent
    did (log-probabilities summed over the answer's tokens). The gradient scales with beta."""
    sft_weight: float = Field(0.0, ge=0)
    """Weight of the chosen answer's own negative log-likelihood (per token) added to the DPO loss, as
    RPO (Pang et al., 2024) and TRL's ``rpo_alpha`` do. DPO alone rewards a wider margin however it is
    won, and on a small model it is won mostly by making the rejected answer unlikely: the pairs'
    margins grow while the greedy answer stays what it was. This term makes the chosen answer itself
    likely. 0 (the default) is plain DPO."""


class DataSettings(Document):
    train: str
    validation: str
    eval: str
    contract: str
    prompt: PromptTemplate = Field(default_factory=PromptTemplate)
    """How an input becomes chat messages; the runtime renders evaluation prompts the same way."""
    extra: dict[str, str] = Field(default_factory=dict)
    """More golden sets the gates use (name -> JSONL file), e.g. ``regression`` and ``control``."""
    rehearsal: RehearsalSettings | None = None
    """Keep behaviour outside the task: the base's own answers to other requests, trained on alongside."""
    preferences: str | None = None
    """Method dpo: JSONL of preference pairs (``id``, ``prompt``, ``chosen``, ``rejected``), what the
    child trains on; the prompt is asked as a plain chat message, without the task's template."""
    provenance: dict[str, DataProvenance] = Field(default_factory=dict)
    """Per data set (``train``, ``validation``, ``eval``, an ``extra`` name, ``rehearsal``): its ``source``,
    ``licence`` and ``customer_data``. Copied into the bundle's manifest, where the signature covers it."""

    @model_validator(mode="after")
    def _names(self):
        taken = {"train", "validation", "eval", "contract", "rehearsal", "preferences"} & set(self.extra)
        if taken:
            raise ValueError(f"extra golden set name {sorted(taken)[0]!r} is reserved")
        sets = ["train", "validation", "eval", *self.extra, *(["rehearsal"] if self.rehearsal else []),
                *(["preferences"] if self.preferences else [])]
        unknown = sorted(set(self.provenance) - set(sets))
        if unknown:
            raise ValueError(f"provenance names set {unknown[0]!r}, which the recipe does not have "
                             f"(it has {', '.join(sets)})")
        return self


class TrainingSettings(Document):
    batch_size: int = Field(8, gt=0)
    grad_accum: int = Field(1, gt=0)
    learning_rate: float = Field(1e-3, gt=0)
    warmup_steps: int = Field(3, ge=0)
    """Linear warm-up, then cosine decay to ``min_lr_ratio`` of the peak."""
    min_lr_ratio: float = Field(0.1, ge=0, le=1)
    weight_decay: float = Field(0.0, ge=0)
    max_steps: int | None = Field(30, gt=0)
    """Optimizer steps; when unset, ``epochs`` decides."""
    epochs: float | None = Field(None, gt=0)
    eval_every: int = Field(10, gt=0)
    """Validation loss is measured every this many steps and at the end."""
    seed: int = 0
    max_seq_len: int = Field(256, gt=8)
    max_grad_norm: float = Field(1.0, gt=0)
    checkpoint_every: int = Field(10, gt=0)
    """Save a resumable checkpoint (``gatekeeper train --resume``) every this many steps."""
    precision: Literal["auto", "float32", "bfloat16"] = "auto"
    """Compute dtype of the forward and backward passes. ``bfloat16``: a frozen base is held in
    bfloat16, trained weights (the adapter, or GaLore's full weights) stay float32 and products
    run under autocast. ``auto``: bfloat16 where the device runs it natively, else float32."""
    gradient_checkpointing: bool = False
    """Keep only each layer's input during the forward pass and recompute the rest in the
    backward: activation memory of one layer instead of all, for about a third more compute."""
    field_weights: dict[str, float] = Field(default_factory=dict)
    """Loss weight of the tokens of these answer fields' values, e.g. ``{priority: 4}``; every other
    answer token weighs 1 and the task loss is the weighted mean. A label is one or two tokens of a
    twenty-token answer: weighting it spends more of each step on the decision than on the wording."""

    @model_validator(mode="after")
    def _length(self):
        if self.max_steps is None and self.epochs is None:
            raise ValueError("set max_steps or epochs")
        bad = [name for name, weight in self.field_weights.items() if not weight > 0]
        if bad:
            raise ValueError(f"field_weights[{bad[0]!r}] must be > 0")
        return self


class Selection(Document):
    select_on: Literal["val_loss_min", "last"] = "val_loss_min"


def default_gates() -> list[GateSpec]:
    return [GateSpec(name="json_parse"), GateSpec(name="task_accuracy"), GateSpec(name="template_drift")]


class Recipe(Document):
    schema_version: Literal[1] = RECIPE_SCHEMA_VERSION
    name: str = Field(pattern=NAME_PATTERN)
    """Candidates are written to ``<output_dir>/v<N>``."""
    base: str = DEFAULT_BASE
    method: MethodName = "lora"
    """lora: peft LoRA; qlora: LoRA over a frozen 4-bit NF4 base (bitsandbytes); dora: weight-decomposed LoRA;
    galore: every linear weight trains, with low-rank optimizer state (the bundle stores trained - base);
    full: every weight trains with AdamW (stored as galore's are); dpo: a LoRA parent's adapter trained further
    on preference pairs, the parent being the reference (``parent``, ``data.preferences``, ``dpo``)."""
    adapter: AdapterSettings | None = None
    """LoRA settings (lora, qlora, dora); defaults apply when the section is left out."""
    galore: GaloreSettings | None = None
    """GaLore settings (method galore); defaults apply when the section is left out."""
    parent: str | None = None
    """Method dpo: the signed LoRA bundle directory (``adapters/<name>/v<N>``) whose adapter the child continues."""
    dpo: DpoSettings | None = None
    """DPO settings (method dpo); defaults apply when the section is left out."""
    data: DataSettings
    training: TrainingSettings = Field(default_factory=TrainingSettings)
    selection: Selection = Field(default_factory=Selection)
    gates: list[GateSpec] = Field(default_factory=default_gates)
    decoding: Decoding = Field(default_factory=Decoding)
    serving: Serving = Field(default_factory=Serving)
    output_dir: str | None = None
    """Where versions go; defaults to the recipe's own directory."""

    @model_validator(mode="after")
    def _method_settings(self):
        # A section that the method ignores is a mistake worth a message, not a silent no-op.
        method = self.method
        if self.galore is not None and method != "galore":
            raise ValueError(f"'galore' settings are given but method is {method!r}")
        if method != "dpo":
            given = [k for k, v in (("parent", self.parent), ("dpo", self.dpo), ("data.preferences", self.data.preferences))
                     if v is not None]
            if given:
                raise ValueError(f"'{given[0]}' belongs to method dpo, but method is {method!r}")
        if method in FULL_WEIGHT_METHODS:
            if self.adapter is not None:
                hint = "use 'galore'" if method == "galore" else "every weight of the base trains"
                raise ValueError(f"'adapter' holds LoRA settings, which method {method} does not use; {hint}")
            if method == "galore" and self.galore is None:
                self.galore = GaloreSettings()
            if self.data.rehearsal is not None and self.data.rehearsal.mode == "distill":
                # the teacher is the base with the adapter off; these methods move the base's own weights
                raise ValueError("data.rehearsal.mode 'distill' needs an adapter method (lora, qlora, dora): "
                                 f"{method} trains the base's own weights, so no untouched base is left to distil from")
        elif method == "dpo":
            self._dpo_settings()
        elif self.adapter is None:
            self.adapter = AdapterSettings()
        return self

    def _dpo_settings(self) -> None:
        if self.parent is None:
            raise ValueError("method dpo needs 'parent': the LoRA bundle directory whose adapter it continues")
        if self.data.preferences is None:
            raise ValueError("method dpo needs 'data.preferences': a JSONL of id, prompt, chosen and rejected")
        if self.data.rehearsal is not None and self.data.rehearsal.mode != "distill":
            # the DPO loss only compares the pairs' answers; on ordinary requests nothing holds the child, and
            # the distillation teacher (the adapter off) is the base the regression gate compares with
            raise ValueError("method dpo rehearses by distillation only: set data.rehearsal.mode to 'distill' "
                             "(the base's greedy answers would teach the child the base's wording as a task)")
        if "selection" in self.model_fields_set and self.selection.select_on != "last":
            # the validation loss is the task's, which preference training is not meant to lower: step 0,
            # the parent itself, would usually win
            raise ValueError("method dpo keeps the last step; selection.select_on must be 'last'")
        self.selection = Selection(select_on="last")
        if self.dpo is None:
            self.dpo = DpoSettings()

    @property
    def rank(self) -> int | None:
        """The rank a sweep varies: LoRA's r, or GaLore's projection rank. None where there is none to
        vary: full trains every weight, and dpo keeps its parent's rank."""
        if self.method == "galore":
            return self.galore.rank
        return None if self.method in ("full", "dpo") else self.adapter.r


def output_dir(recipe: Recipe, root: Path) -> Path:
    """Where the recipe's versions go: ``output_dir`` relative to the recipe's directory ``root``, or ``root``."""
    # normpath: "../name" prints as a sibling directory, not as a path through this one
    return Path(os.path.normpath(root / recipe.output_dir)) if recipe.output_dir else root


def load_recipe(path: str | Path) -> tuple[Recipe, Path]:
    """The recipe and the directory its relative paths are relative to."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"{path}: recipe not found" if not path.is_dir() else f"{path}: a directory, not a recipe file")
    return parse_recipe(read_yaml(path, RecipeError, "recipe"), path, RecipeError), path.parent.resolve()


def parse_recipe(data, source: Path, error: type[GatekeeperError] = RecipeError) -> Recipe:
    """A recipe document already read, validated; ``error`` names ``source`` (a bundle's copy raises BundleError)."""
    return validated(Recipe, data, source, error)
