"""Content hashes: the identity of every artifact a verdict depends on."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

_CHUNK = 1 << 20


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_text(text: str) -> str:
    return sha256_bytes(text.encode("utf-8"))


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def canonical_json(value: Any) -> str:
    """One spelling per value, so equal documents hash equally."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def sha256_json(value: Any) -> str:
    return sha256_text(canonical_json(value))


def sha256_files(paths: dict[str, Path]) -> str:
    """Hash of a set of named files: names and contents both count."""
    return sha256_json({name: sha256_file(path) for name, path in sorted(paths.items())})


def user_dir(override: str, xdg: str, fallback: str) -> Path:
    """``$override`` if set, else ``$xdg/gatekeeper``, else ``~/<fallback>/gatekeeper``."""
    if os.environ.get(override):
        return Path(os.environ[override])
    base = os.environ.get(xdg)
    return (Path(base) if base else Path.home() / fallback) / "gatekeeper"
