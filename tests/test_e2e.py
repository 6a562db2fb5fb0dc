"""End to end on the real embedded model: GGUF -> cache -> train -> bundle -> check -> reports.

This is the demo's path, asserted: the adapter must parse and validate on at
least 95% of the evaluation split and improve label accuracy by at least 10
points over the base, measured on the same runtime. Minutes on a CPU.
"""

import json
from pathlib import Path

import pytest

from gatekeeper.cli import main

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.e2e


def test_demo_candidate_passes_json_parse_and_task_accuracy(demo_candidate):
    bundle, workdir = demo_candidate
    out = workdir / "reports"
    code = main(["check", str(bundle), "--out", str(out), "-q"])
    verdict = json.loads((out / "verdict.json").read_text())
    parse = next(g for g in verdict["gates"] if g["name"] == "json_parse")["metrics"][0]
    accuracy = next(g for g in verdict["gates"] if g["name"] == "task_accuracy")["metrics"][0]
    print(f"\nvalid JSON: base {parse['base']:.3f} adapter {parse['adapter']:.3f}; "
          f"accuracy: base {accuracy['base']:.3f} adapter {accuracy['adapter']:.3f}")
    assert parse["adapter"] >= 0.95
    assert accuracy["delta"] >= 0.10
    assert code == 0 and verdict["passed"]
    assert verdict["bundle"]["base"] == "smollm2-135m-instruct"


def test_converted_base_is_cached_and_reused(demo_candidate):
    from gatekeeper._util.hashing import sha256_file
    from gatekeeper.bundle.base import ALIASES, cache_root, resolve_base

    digest = sha256_file(ALIASES["smollm2-135m-instruct"].locate())
    resolved = resolve_base("smollm2-135m-instruct")
    assert resolved.sha256 == digest
    assert resolved.path == cache_root() / "models" / digest
    assert (resolved.path / "model.safetensors").is_file()
    assert not list(resolved.path.glob("*.bin"))


def test_the_adapter_names_its_base_as_the_recipe_does_not_by_a_path_of_this_machine(demo_candidate):
    # peft would write the directory the base loaded from: the converted GGUF in this machine's cache
    bundle, _ = demo_candidate
    config = json.loads((bundle / "adapter" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "smollm2-135m-instruct"
