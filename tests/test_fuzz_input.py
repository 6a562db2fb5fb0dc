"""No input reaches exit 3: random bytes, truncated files and re-encoded documents in every file a bundle holds.

Seeded, so a failure replays; bounded, so the suite stays fast. Every broken
file is recorded in the manifest with its new hash (and the manifest signed
again), so the damage reaches the parser instead of stopping at the hash check.
Each case must exit 2 with one line, load no model and write no report.
"""

from __future__ import annotations

import random
import shutil

import pytest

from gatekeeper._util.hashing import sha256_file
from gatekeeper.cli import main
from gatekeeper.runtime.hf import modeling
from tests.conftest import edit_manifest

SEED = 20261202
TARGETS = ["bundle.yaml", "training.json", "recipe.yaml", "serving_profile.json", "data/eval.jsonl",
           "data/contract.schema.json", "adapter/adapter_config.json", "adapter/adapter_model.safetensors"]


def _damaged(original: bytes, how: str, rng: random.Random) -> bytes:
    if how == "random":
        return rng.randbytes(rng.choice([1, 17, 512, 4096]))
    if how == "truncated":
        # Cut half-way through a line in the first half, chosen by line, not by byte: files
        # hold this machine's absolute paths, and a byte offset would land somewhere else
        # (perhaps on a line boundary that leaves a valid, shorter document) on another.
        lines = original.splitlines(keepends=True) or [original]
        line = rng.randrange(0, max(1, len(lines) // 2))
        return b"".join(lines[:line]) + lines[line][: len(lines[line]) // 2]
    if how == "utf16":
        return original.decode("utf-8", errors="replace").encode("utf-16")
    if how == "empty":
        return b""
    raise AssertionError(how)


def _record(bundle, relative: str) -> None:
    """Point the manifest at the damaged file's new hash, and sign it again."""
    digest = sha256_file(bundle / relative)

    def update(document):
        for ref in [document["task"]["contract"], *document["golden_sets"].values(),
                    *(document.get(k) for k in ("recipe", "training", "serving_profile"))]:
            if ref and ref["path"] == relative:
                ref["sha256"] = digest
        if relative.startswith("adapter/"):
            document["adapter"]["files"][relative.removeprefix("adapter/")] = digest

    edit_manifest(bundle, update)


CASES = [(target, how) for target in TARGETS for how in ("random", "truncated", "utf16", "empty")]


@pytest.mark.parametrize("target,how", CASES, ids=[f"{t}-{h}" for t, h in CASES])
def test_a_damaged_file_is_bad_input_never_a_crash(tiny_bundle, tmp_path, capsys, target, how):
    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    rng = random.Random(f"{SEED}-{target}-{how}")
    path = bundle / target
    path.write_bytes(_damaged(path.read_bytes(), how, rng))
    if target != "bundle.yaml":
        _record(bundle, target)
    loaded = modeling.MODELS_LOADED
    code = main(["check", str(bundle), "--out", str(tmp_path / "r"), "-q"])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2, lines
    assert len(lines) == 1 and len(lines[0]) < 1200, lines
    assert modeling.MODELS_LOADED == loaded and not (tmp_path / "r").exists()
