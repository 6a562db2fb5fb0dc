"""Resumable training checkpoints: tensors in safetensors, everything else in JSON, nothing pickled.

A checkpoint is everything the training loop's future depends on, so a run
resumed from it ends with the same weights as one never interrupted:

    <work>/step-000020/
        weights.safetensors    trainable parameters by name
        best.safetensors       the validation-best weights (absent when they are the current ones)
        optimizer.safetensors  optimizer state tensors, "<param>/<key>"; a GaLore projector as "<param>/projector[.i]"
        rng.safetensors        torch CPU (and CUDA) generator states
        state.json             step, examples consumed, curves, best step, optimizer scalars, run fingerprint
    <work>/latest.json         which step directory is complete

A step directory is written under a temporary name and renamed when
complete, and ``latest.json`` is replaced only afterwards: a kill at any
moment leaves the previous checkpoint intact.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from gatekeeper._util.files import publish_dir, staged_dir, write_atomic
from gatekeeper.bundle.recipe import output_dir
from gatekeeper.errors import RecipeError

WORK_DIR = ".work"
LATEST = "latest.json"
FORMAT = 1


def work_dir(recipe, root: Path) -> Path:
    """Where a recipe's checkpoints live: a hidden directory beside its versions."""

    return output_dir(recipe, root) / WORK_DIR


def run_fingerprint(recipe, base, root: Path) -> str:
    """What a checkpoint must match to be resumed: the recipe, the base and the training data."""
    from gatekeeper._util.hashing import sha256_file, sha256_json

    data = {k: sha256_file(root / getattr(recipe.data, k)) for k in ("train", "validation")}
    return sha256_json({"recipe": recipe.model_dump(mode="json"), "base": base.sha256, "data": data})


@dataclass
class Checkpoint:
    state: dict
    weights: dict
    best: dict | None
    optimizer: dict
    rng: dict


def _flatten_optimizer(optimizer, names: dict[int, str]) -> tuple[dict, dict]:
    """Optimizer state keyed by parameter name: tensors for safetensors, the rest for JSON."""
    import torch

    tensors, meta = {}, {}
    for param, state in optimizer.state.items():
        name = names[id(param)]
        entry: dict = {"tensors": [], "values": {}}
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{name}/{key}"] = value.detach().contiguous()
                entry["tensors"].append(key)
            elif isinstance(value, (bool, int, float)):
                entry["values"][key] = value
            elif key == "projector":  # galore_torch.GaLoreProjector: settings plus its current basis
                basis = value.ortho_matrix
                parts = basis if isinstance(basis, list) else [basis]
                for i, part in enumerate(parts):
                    tensors[f"{name}/projector.{i}"] = part.detach().contiguous()
                entry["projector"] = {"rank": value.rank, "update_proj_gap": value.update_proj_gap,
                                      "scale": value.scale, "proj_type": value.proj_type,
                                      "parts": len(parts), "as_list": isinstance(basis, list),
                                      "strides": [list(part.stride()) for part in parts]}
            else:
                raise TypeError(f"cannot checkpoint optimizer state {key!r} of type {type(value).__name__}")
        meta[name] = entry
    return tensors, meta


def _with_strides(value, strides: list[int], device):
    """A copy of ``value`` laid out with the saved strides.

    A GaLore basis is a column slice of the SVD's U, so not contiguous, and a
    matmul with a differently laid-out operand can round differently: the
    layout is part of what makes a resumed run bit-identical.
    """
    import torch

    out = torch.empty_strided(tuple(value.shape), tuple(strides), dtype=value.dtype, device=device)
    return out.copy_(value)


def restore_optimizer(optimizer, params: dict, tensors: dict, meta: dict) -> None:
    for name, entry in meta.items():
        param = params[name]
        state: dict = dict(entry["values"])
        for key in entry["tensors"]:
            value = tensors[f"{name}/{key}"]
            # torch's AdamW keeps its step counter on the CPU; moments live with the parameter
            state[key] = value if key == "step" else value.to(param.device)
        if "projector" in entry:
            from galore_torch.galore_projector import GaLoreProjector

            p = entry["projector"]
            projector = GaLoreProjector(p["rank"], update_proj_gap=p["update_proj_gap"], scale=p["scale"],
                                        proj_type=p["proj_type"])
            parts = [_with_strides(tensors[f"{name}/projector.{i}"], p["strides"][i], param.device)
                     for i in range(p["parts"])]
            projector.ortho_matrix = parts if p["as_list"] else parts[0]
            state["projector"] = projector
        optimizer.state[param] = state


def save(work: Path, *, step: int, params: dict, best: dict | None, optimizer, state: dict) -> Path:
    """Write the checkpoint for ``step`` and point ``latest.json`` at it; older ones are removed."""
    import torch
    from safetensors.torch import save_file

    with staged_dir(work, f".step-{step:06d}-") as staging:
        names = {id(p): n for n, p in params.items()}
        save_file({n: p.detach().cpu().contiguous() for n, p in params.items()}, staging / "weights.safetensors")
        if best is not None:
            save_file({n: t.cpu().contiguous() for n, t in best.items()}, staging / "best.safetensors")
        tensors, meta = _flatten_optimizer(optimizer, names)
        save_file({k: t.cpu() for k, t in tensors.items()}, staging / "optimizer.safetensors")
        rng = {"cpu": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng |= {f"cuda.{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())}
        save_file(rng, staging / "rng.safetensors")
        document = {"format": FORMAT, **state, "step": step, "has_best": best is not None, "optimizer": meta}
        (staging / "state.json").write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
        final = publish_dir(staging, work / f"step-{step:06d}", replace=True)
    write_atomic(work / LATEST, json.dumps({"step": step, "dir": final.name}) + "\n")
    for old in work.glob("step-*"):
        if old != final:
            shutil.rmtree(old, ignore_errors=True)
    return final


def load(work: Path, fingerprint: str) -> Checkpoint:
    """The latest complete checkpoint, refused when it belongs to a different run."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    pointer = work / LATEST
    if not pointer.is_file():
        raise RecipeError(f"nothing to resume: no checkpoint in {work} (train without --resume to start over)")
    try:
        directory = work / json.loads(pointer.read_text(encoding="utf-8"))["dir"]
        state = json.loads((directory / "state.json").read_text(encoding="utf-8"))
        tensors = {name: load_file(directory / f"{name}.safetensors")
                   for name in ("weights", "optimizer", "rng") + (("best",) if state["has_best"] else ())}
    except (OSError, ValueError, KeyError, SafetensorError) as exc:
        raise RecipeError(f"{work}: checkpoint is unreadable ({type(exc).__name__}: {exc})") from None
    if state.get("format") != FORMAT:
        raise RecipeError(f"{directory}: checkpoint format {state.get('format')!r} is not {FORMAT}")
    if state.get("fingerprint") != fingerprint:
        raise RecipeError(f"{directory}: checkpoint is from a different recipe, base or data; "
                          "train without --resume to start over")
    return Checkpoint(state, tensors["weights"], tensors.get("best"), tensors["optimizer"], tensors["rng"])


def restore_rng(rng: dict) -> None:
    import torch

    torch.set_rng_state(rng["cpu"])
    cuda = [rng[k] for k in sorted((k for k in rng if k.startswith("cuda.")), key=lambda k: int(k[5:]))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)


def discard(work: Path) -> None:
    shutil.rmtree(work, ignore_errors=True)
