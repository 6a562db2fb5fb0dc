"""Writes that a reader, or a crash, never sees half done: stage beside the target, then rename.

A rename within one directory is atomic on POSIX, so a file or directory is
either the old one or the complete new one. Every writer of a report, bundle,
checkpoint, key, record or converted model goes through these two helpers.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

PICKLED_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")
"""Weight files that unpickle on load, and so can run code: never loaded, anywhere."""


def write_atomic(path: Path, data: str | bytes, *, mode: int | None = None) -> Path:
    """Write ``data`` to ``path`` through a staging file in the same directory; ``mode`` before it is visible."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, staging = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data.encode("utf-8") if isinstance(data, str) else data)
        if mode is not None:
            os.chmod(staging, mode)
        os.replace(staging, path)
    finally:
        if os.path.exists(staging):
            os.unlink(staging)
    return path


@contextlib.contextmanager
def staged_dir(parent: Path, prefix: str) -> Iterator[Path]:
    """A fresh directory inside ``parent`` to fill; whatever was not moved out of it is removed at exit."""
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def publish_dir(staging: Path, target: Path, *, replace: bool = False) -> Path:
    """Move a filled staging directory to ``target``; an existing target is kept (OSError) unless ``replace``."""
    if replace and target.exists():
        shutil.rmtree(target)
    os.rename(staging, target)
    return target


def pickled_files(directory: Path) -> list[str]:
    """Names of the files in ``directory`` that would unpickle on load."""
    return sorted(p.name for p in Path(directory).iterdir() if p.suffix in PICKLED_SUFFIXES)
