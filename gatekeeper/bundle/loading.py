"""Reading a bundle: every file the manifest names is inside the bundle and has its recorded hash.

``load_bundle`` checks everything before any model is touched, and loads the
contract and golden sets the gates read.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gatekeeper._util.documents import read_json, read_yaml
from gatekeeper._util.files import pickled_files
from gatekeeper._util.hashing import sha256_file
from gatekeeper._util.text import first_line
from gatekeeper.bundle.goldens import Contract, GoldenItem, load_golden_set
from gatekeeper.bundle.manifest import MANIFEST, Bundle, FileRef, read_manifest
from gatekeeper.bundle.peft_adapter import tensor_shapes
from gatekeeper.bundle.recipe import Recipe, parse_recipe
from gatekeeper.errors import BundleError


@dataclass
class LoadedBundle:
    root: Path
    manifest: Bundle
    manifest_sha256: str
    contract: Contract
    golden: dict[str, list[GoldenItem]]
    recipe: Recipe | None = None
    """The recipe the candidate was trained with, when the bundle carries one."""
    training_record: dict | None = None
    """The trainer's record (``training.json``), when the bundle carries one."""
    adapter_source: dict | None = None
    """Where an adapter ``gatekeeper init`` took in came from (``adapter_source.json``), when the bundle carries one."""

    @property
    def adapter_dir(self) -> Path:
        return self.root / self.manifest.adapter.path

    def path(self, ref: FileRef) -> Path:
        return self.root / ref.path


def verify_files(root: Path, manifest: Bundle) -> None:
    """Every file the manifest names exists inside the bundle and has its recorded hash."""
    try:
        resolved_root = root.resolve()
    except (OSError, RuntimeError) as exc:
        raise BundleError(f"{root}: cannot be resolved ({first_line(exc)})") from None
    adapter_dir = root / manifest.adapter.path
    if adapter_dir.is_dir():
        pickled = pickled_files(adapter_dir)
        if pickled:
            raise BundleError(f"{adapter_dir}: pickled weights ({', '.join(pickled)}) are never loaded; use safetensors")
    for ref in manifest.file_refs():
        try:
            path = (root / ref.path).resolve()
        except (OSError, RuntimeError) as exc:  # a symlink loop, a path too long
            raise BundleError(f"{root}: {ref.path} cannot be resolved ({first_line(exc)})") from None
        if not path.is_relative_to(resolved_root):
            raise BundleError(f"{root}: {ref.path} points outside the bundle")
        if not path.is_file():
            raise BundleError(f"{root}: missing file {ref.path}")
        found = sha256_file(path)
        if found != ref.sha256:
            raise BundleError(f"{root}: hash mismatch for {ref.path}: recorded {ref.sha256[:12]}…, found {found[:12]}…")


def load_bundle(path: str | Path) -> LoadedBundle:
    """Parse, validate and hash-check a bundle; load its contract and golden sets."""
    root = Path(path)
    manifest = read_manifest(root)  # a directory, or its bundle.yaml; any other file is named as not a bundle
    if root.is_file():
        root = root.parent
    verify_files(root, manifest)
    contract = Contract.load(root / manifest.task.contract.path)
    golden: dict[str, list[GoldenItem]] = {}
    for name, ref in sorted(manifest.golden_sets.items()):
        items = load_golden_set(name, root / ref.path)
        if name in ("eval", "train", "validation"):
            contract.check_items(items, root / ref.path)
        golden[name] = items
    if "eval" not in golden:
        raise BundleError(f"{root}: golden_sets has no 'eval' split")
    # Parsed now, not when the report is built: a broken file is refused before any model loads.
    recipe = None
    if manifest.recipe is not None:
        source = root / manifest.recipe.path
        recipe = parse_recipe(read_yaml(source, BundleError, "bundled recipe"), source, BundleError)
    training = _json_record(root, manifest.training, "training record")
    _json_record(root, manifest.serving_profile, "serving profile")  # template_drift reads it after the model ran
    _adapter_readable(root, manifest)
    adapter_source = _json_record(root, manifest.adapter_source, "adapter provenance record")
    return LoadedBundle(root, manifest, sha256_file(root / MANIFEST), contract, golden, recipe, training, adapter_source)


def _json_record(root: Path, ref: FileRef | None, what: str) -> dict | None:
    if ref is None:
        return None
    source = root / ref.path
    record = read_json(source, BundleError, what)
    if not isinstance(record, dict):
        raise BundleError(f"{source}: {what} is not a JSON object")
    return record


def _adapter_readable(root: Path, manifest: Bundle) -> None:
    """Every adapter weight file has a valid safetensors header and a LoRA adapter a JSON config:
    cheap to check now, and otherwise found only after the base has loaded."""
    adapter_dir = root / manifest.adapter.path
    for name in sorted(manifest.adapter.files):
        if name.endswith(".safetensors"):
            tensor_shapes(adapter_dir / name, "adapter weights")
    if manifest.adapter.kind == "lora":
        config = read_json(adapter_dir / "adapter_config.json", BundleError, "adapter config")
        if not isinstance(config, dict):
            raise BundleError(f"{adapter_dir / 'adapter_config.json'}: adapter config is not a JSON object")
