"""Write a trained adapter as the next version of a candidate: ``<dir>/v<N>/``, a complete bundle.

The version is assembled in a hidden staging directory and renamed into
place in one step, so an interrupted run never leaves a half-written
``vN`` and earlier versions are never touched. The pieces are shared with
``gatekeeper init`` (``gatekeeper.bundle.assembly``).
"""

from __future__ import annotations

from pathlib import Path

import yaml

from gatekeeper._util.files import staged_dir
from gatekeeper.bundle.assembly import (
    CONTRACT_FILE,
    adapter_files,
    base_ref,
    copy_data,
    existing_versions,  # noqa: F401  (re-exported: where callers and tests have always found it)
    golden_refs,
    package_versions,
    publish_next_version,
    write_json,
    write_serving_profile,
)
from gatekeeper.bundle.base import tokenizer_fingerprint
from gatekeeper.bundle.manifest import AdapterRef, BaseRef, Bundle, TaskSpec, file_ref
from gatekeeper.bundle.recipe import Recipe, output_dir
from gatekeeper.training.loop import TrainResult
from gatekeeper.training.methods import get_method


def write_candidate(result: TrainResult, recipe: Recipe, root: Path) -> Path:
    target_dir = output_dir(recipe, root)
    with staged_dir(target_dir, ".v-staging-") as staging:
        return publish_next_version(staging, target_dir, _fill(staging, result, recipe, root, target_dir))


def _fill(staging: Path, result: TrainResult, recipe: Recipe, root: Path, target_dir: Path) -> Bundle:
    data = recipe.data
    copies = {CONTRACT_FILE: data.contract, "train.jsonl": data.train,
              "validation.jsonl": data.validation, "eval.jsonl": data.eval}
    copies |= {f"{name}.jsonl": source for name, source in sorted(data.extra.items())}
    if data.rehearsal is not None:
        copies["rehearsal.jsonl"] = data.rehearsal.prompts
    if data.preferences is not None:  # copied as written; the loader knows the name (goldens.PREFERENCES)
        copies["preferences.jsonl"] = data.preferences
    corpus = copy_data(staging, {name: root / source for name, source in copies.items()})
    method = get_method(recipe.method)
    saved = method.save(result, staging / "adapter")
    (staging / "recipe.yaml").write_text(
        yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False, allow_unicode=True), encoding="utf-8"
    )
    record = dict(result.record)
    record["corpus_sha256"] = corpus
    record["packages"] = package_versions()
    # the point of an adapter is to be small next to its base: record both sizes
    record["adapter_bytes"] = saved.weights.stat().st_size
    record |= saved.counts
    record["base_bytes"] = sum(p.stat().st_size for p in result.base.path.glob("*.safetensors"))
    training = write_json(staging, "training.json", record)
    profile = write_serving_profile(staging, result.tokenizer)
    return Bundle(
        name=recipe.name,
        version=0,
        # any vN beside v0 has the same relative path to the base
        base=BaseRef(ref=base_ref(recipe.base, result.base.path, target_dir / "v0"), sha256=result.base.sha256,
                     **tokenizer_fingerprint(result.tokenizer)),
        adapter=AdapterRef(path="adapter", method=recipe.method, kind=method.adapter_kind,
                           files=adapter_files(staging / "adapter")),
        task=TaskSpec(contract=file_ref(staging, f"data/{CONTRACT_FILE}"), prompt=data.prompt),
        golden_sets=golden_refs(
            staging, ["eval", "train", "validation", *sorted(data.extra), *(["rehearsal"] if data.rehearsal else []),
                      *(["preferences"] if data.preferences else [])]),
        provenance=dict(sorted(data.provenance.items())),  # the recipe's declaration, signed with the manifest
        gates=recipe.gates,
        decoding=recipe.decoding,
        # a QLoRA adapter is served over the same 4-bit base it was trained on
        serving=recipe.serving if method.serving_quantization == "none"
        else recipe.serving.model_copy(update={"quantization": method.serving_quantization}),
        recipe=file_ref(staging, "recipe.yaml"),
        training=training,
        serving_profile=profile,
    )
