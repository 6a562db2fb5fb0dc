"""Write a trained adapter as the next version of a candidate: ``<dir>/v<N>/``, a complete bundle.

The version is assembled in a hidden staging directory and renamed into
place in one step, so an interrupted run never leaves a half-written
``vN`` and earlier versions are never touched.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import yaml

from gatekeeper._util.files import publish_dir, staged_dir
from gatekeeper._util.hashing import sha256_file
from gatekeeper.bundle.base import ALIASES, serving_profile, tokenizer_fingerprint
from gatekeeper.bundle.manifest import (
    AdapterRef,
    BaseRef,
    Bundle,
    TaskSpec,
    file_ref,
    write_manifest,
)
from gatekeeper.bundle.recipe import Recipe, output_dir
from gatekeeper.bundle.signing import sign_bundle
from gatekeeper.training.loop import TrainResult
from gatekeeper.training.methods import get_method

_VERSION = re.compile(r"^v(\d+)$")


def existing_versions(directory: Path) -> list[int]:
    if not directory.is_dir():
        return []
    return sorted(int(m.group(1)) for p in directory.iterdir() if (m := _VERSION.match(p.name)) and p.is_dir())


def write_candidate(result: TrainResult, recipe: Recipe, root: Path) -> Path:
    target_dir = output_dir(recipe, root)
    with staged_dir(target_dir, ".v-staging-") as staging:
        manifest = _fill(staging, result, recipe, root, target_dir)
        while True:  # claim the next free version; a concurrent run may take one first
            version = (existing_versions(target_dir) or [0])[-1] + 1
            # bundle.yaml is the only file that names the version
            write_manifest(staging, manifest.model_copy(update={"version": version}))
            sign_bundle(staging)
            try:
                return publish_dir(staging, target_dir / f"v{version}")
            except OSError:
                if not (target_dir / f"v{version}").exists():
                    raise


def _base_ref(recipe: Recipe, result: TrainResult, target_dir: Path) -> str:
    """Aliases stay aliases; a directory is written relative to the bundle, so the tree can move."""
    if recipe.base in ALIASES:
        return recipe.base
    return os.path.relpath(result.base.path.resolve(), (target_dir / "v0").resolve())


def _fill(staging: Path, result: TrainResult, recipe: Recipe, root: Path, target_dir: Path) -> Bundle:
    data = recipe.data
    (staging / "data").mkdir()
    copies = {"contract.schema.json": data.contract, "train.jsonl": data.train,
              "validation.jsonl": data.validation, "eval.jsonl": data.eval}
    copies |= {f"{name}.jsonl": source for name, source in sorted(data.extra.items())}
    if data.rehearsal is not None:
        copies["rehearsal.jsonl"] = data.rehearsal.prompts
    for name, source in copies.items():
        shutil.copyfile(root / source, staging / "data" / name)
    method = get_method(recipe.method)
    saved = method.save(result, staging / "adapter")
    (staging / "recipe.yaml").write_text(
        yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False, allow_unicode=True), encoding="utf-8"
    )
    record = dict(result.record)
    record["corpus_sha256"] = {name: sha256_file(staging / "data" / name) for name in sorted(copies)}
    record["packages"] = _package_versions()
    # the point of an adapter is to be small next to its base: record both sizes
    record["adapter_bytes"] = saved.weights.stat().st_size
    record |= saved.counts
    record["base_bytes"] = sum(p.stat().st_size for p in result.base.path.glob("*.safetensors"))
    (staging / "training.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    profile = serving_profile(result.tokenizer)
    (staging / "serving_profile.json").write_text(json.dumps(profile, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    adapter_files = {p.name: sha256_file(p) for p in sorted((staging / "adapter").iterdir()) if p.is_file()}
    return Bundle(
        name=recipe.name,
        version=0,
        base=BaseRef(ref=_base_ref(recipe, result, target_dir), sha256=result.base.sha256,
                     **tokenizer_fingerprint(result.tokenizer)),
        adapter=AdapterRef(path="adapter", method=recipe.method, kind=method.adapter_kind, files=adapter_files),
        task=TaskSpec(contract=file_ref(staging, "data/contract.schema.json"), prompt=data.prompt),
        golden_sets={
            name: file_ref(staging, f"data/{name}.jsonl")
            for name in ("eval", "train", "validation", *sorted(data.extra), *(["rehearsal"] if data.rehearsal else []))
        },
        gates=recipe.gates,
        decoding=recipe.decoding,
        # a QLoRA adapter is served over the same 4-bit base it was trained on
        serving=recipe.serving if method.serving_quantization == "none"
        else recipe.serving.model_copy(update={"quantization": method.serving_quantization}),
        recipe=file_ref(staging, "recipe.yaml"),
        training=file_ref(staging, "training.json"),
        serving_profile=file_ref(staging, "serving_profile.json"),
    )


def _package_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in ("gatekeeper", "torch", "transformers", "peft", "bitsandbytes", "safetensors", "galore-torch"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            pass
    return found
