"""The pieces every bundle writer shares: gatekeeper's trainer (``training.versions``) and ``gatekeeper init`` (``adopt``).

A writer fills a staging directory beside the target (``gatekeeper._util.files.staged_dir``)
with these helpers, then publishes it in one rename, so a reader never sees a
half-written bundle and a refusal leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

from gatekeeper._util.files import publish_dir
from gatekeeper._util.hashing import sha256_file
from gatekeeper.bundle.base import ALIASES, serving_profile
from gatekeeper.bundle.manifest import Bundle, FileRef, file_ref, write_manifest
from gatekeeper.bundle.signing import sign_bundle
from gatekeeper.errors import BundleError

_VERSION = re.compile(r"^v(\d+)$")
CONTRACT_FILE = "contract.schema.json"


def version_of(path: Path) -> int | None:
    """N for a directory named ``vN``, else None."""
    match = _VERSION.match(Path(path).name)
    return int(match.group(1)) if match else None


def existing_versions(directory: Path) -> list[int]:
    if not directory.is_dir():
        return []
    return sorted(n for p in directory.iterdir() if (n := version_of(p)) is not None and p.is_dir())


def copy_data(staging: Path, copies: dict[str, Path]) -> dict[str, str]:
    """Copy the contract and golden sets into ``data/`` under the given names; name -> sha256 of each copy, sorted."""
    (staging / "data").mkdir()
    for name, source in copies.items():
        shutil.copyfile(source, staging / "data" / name)
    return {name: sha256_file(staging / "data" / name) for name in sorted(copies)}


def golden_refs(staging: Path, names: list[str]) -> dict[str, FileRef]:
    """The manifest's ``golden_sets``: each name's ``data/<name>.jsonl``, in the order given."""
    return {name: file_ref(staging, f"data/{name}.jsonl") for name in names}


def adapter_files(adapter_dir: Path) -> dict[str, str]:
    """The manifest's ``adapter.files``: every file in the adapter directory -> its sha256."""
    return {p.name: sha256_file(p) for p in sorted(adapter_dir.iterdir()) if p.is_file()}


def write_json(staging: Path, name: str, document: dict, *, sort_keys: bool = False) -> FileRef:
    (staging / name).write_text(json.dumps(document, indent=2, sort_keys=sort_keys) + "\n", encoding="utf-8")
    return file_ref(staging, name)


def write_serving_profile(staging: Path, tokenizer) -> FileRef:
    """``serving_profile.json``: the chat template and stop tokens the adapter was trained with, for template_drift."""
    return write_json(staging, "serving_profile.json", serving_profile(tokenizer), sort_keys=True)


def base_ref(ref: str, path: Path, bundle_dir: Path) -> str:
    """Aliases stay aliases; a directory is written relative to the bundle, so the tree can move."""
    if ref in ALIASES:
        return ref
    return os.path.relpath(Path(path).resolve(), Path(bundle_dir).resolve())


def publish(staging: Path, target: Path, manifest: Bundle) -> Path:
    """Write and sign the manifest, then move the bundle to ``target``; an existing ``target`` is never replaced."""
    write_manifest(staging, manifest)
    sign_bundle(staging)
    try:
        return publish_dir(staging, target)
    except OSError:
        if target.exists():
            raise BundleError(f"{target}: already exists; a bundle is never written over another") from None
        raise


def publish_next_version(staging: Path, directory: Path, manifest: Bundle) -> Path:
    """Publish as ``directory/v<N>``, N the next free version; a concurrent writer may take one first."""
    while True:
        version = (existing_versions(directory) or [0])[-1] + 1
        try:  # bundle.yaml is the only file that names the version
            return publish(staging, directory / f"v{version}", manifest.model_copy(update={"version": version}))
        except BundleError:  # that version appeared meanwhile: claim the next
            continue


def package_versions() -> dict[str, str]:
    """Versions of the packages that made the bundle, for its record."""
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in ("gatekeeper", "torch", "transformers", "peft", "bitsandbytes", "safetensors", "galore-torch"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            pass
    return found
