"""Bad bundles exit 2 with one line naming the problem, before any model loads, writing nothing."""

import json
import shutil

import pytest

from gatekeeper.bundle.loading import load_bundle
from gatekeeper.cli import main
from tests.conftest import edit_manifest, write_recipe


def run_check(bundle, tmp_path, capsys):
    out = tmp_path / "reports"
    code = main(["check", str(bundle), "--out", str(out), "-q"])
    captured = capsys.readouterr()
    return code, captured.err.strip().splitlines(), out


def _set_gate_param(data):
    data["gates"][1]["params"]["min_delta"] = "ten points"


def _unknown_gate(data):
    data["gates"].append({"name": "jsn_parse"})


def _other_base(data):
    data["base"]["sha256"] = "f" * 64


CASES = {
    "missing file": (lambda b: (b / "adapter" / "adapter_model.safetensors").unlink(), "missing file adapter/adapter_model.safetensors"),
    "hash mismatch": (lambda b: (b / "data" / "eval.jsonl").write_text((b / "data" / "eval.jsonl").read_text().replace("ticket", "tickets", 1)), "hash mismatch for data/eval.jsonl"),
    "malformed yaml": (lambda b: (b / "bundle.yaml").write_text("name: [unclosed\nversion: 1\n"), "malformed YAML at line"),
    "unknown gate": (lambda b: edit_manifest(b, _unknown_gate), "unknown gate 'jsn_parse'. Did you mean 'json_parse'"),
    "wrong parameter type": (lambda b: edit_manifest(b, _set_gate_param), "gate 'task_accuracy', parameter 'min_delta'"),
    "different base": (lambda b: edit_manifest(b, _other_base), "adapter was trained for base sha256 ffffffffffff"),
    "missing field": (lambda b: edit_manifest(b, lambda d: d.pop("task")), "field 'task': Field required"),
    "not a bundle": (lambda b: (b / "bundle.yaml").unlink(), "no such bundle manifest"),
    "provenance of a missing set": (lambda b: edit_manifest(b, lambda d: d.update(provenance={"nope": {"licence": "mit"}})),
                                    "provenance names set 'nope', which golden_sets does not have"),
    "unknown provenance key": (lambda b: edit_manifest(b, lambda d: d.update(provenance={"train": {"licenze": "mit"}})),
                               "unknown key 'provenance.train.licenze'"),
    "bad licence": (lambda b: edit_manifest(b, lambda d: d.update(provenance={"train": {"licence": "GPL 3"}})),
                    "field 'provenance.train.licence'"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_bundle_exits_2_with_one_line_and_writes_nothing(case, bundle_copy, tmp_path, capsys):
    damage, expected = CASES[case]
    damage(bundle_copy)
    code, err, out = run_check(bundle_copy, tmp_path, capsys)
    assert code == 2
    assert len(err) == 1, err
    assert err[0].startswith("gatekeeper: error: ") and expected in err[0]
    assert "Traceback" not in err[0]
    assert not out.exists()


def test_a_different_base_directory_is_caught_by_hash(bundle_copy, tiny_base, tmp_path, capsys):
    """Same architecture, different weights: the base hash differs, so the check refuses."""
    from safetensors.torch import load_file, save_file

    other = tmp_path / "other-base"
    shutil.copytree(tiny_base, other)
    weights = load_file(other / "model.safetensors")
    first = sorted(weights)[0]
    weights[first] = weights[first] + 0.5
    save_file(weights, other / "model.safetensors", metadata={"format": "pt"})
    edit_manifest(bundle_copy, lambda d: d["base"].update(ref=str(other)))
    code, err, out = run_check(bundle_copy, tmp_path, capsys)
    assert code == 2 and "adapter was trained for base" in err[0] and not out.exists()


def test_pickled_adapter_weights_are_refused(bundle_copy, tmp_path, capsys):
    (bundle_copy / "adapter" / "adapter_model.bin").write_bytes(b"not loaded")
    code, err, out = run_check(bundle_copy, tmp_path, capsys)
    assert code == 2 and "pickled" in err[0]


def test_a_valid_bundle_loads_with_every_golden_set(tiny_bundle):
    loaded = load_bundle(tiny_bundle)
    assert set(loaded.golden) == {"eval", "train", "validation"}
    assert loaded.contract.label_field == "priority"
    assert loaded.manifest.adapter.files.keys() >= {"adapter_model.safetensors", "adapter_config.json"}


def test_bundle_schema_export_is_current():
    """The committed JSON Schema must match the pydantic model."""
    from pathlib import Path

    from gatekeeper.bundle.manifest import Bundle

    committed = Path(__file__).parent.parent / "gatekeeper" / "report" / "schemas" / "bundle.schema.json"
    assert json.loads(committed.read_text()) == Bundle.model_json_schema()



def test_recipe_schema_export_is_current():
    """The same for recipes: a new recipe key must reach the committed schema (make schemas)."""
    from pathlib import Path

    from gatekeeper.bundle.recipe import Recipe

    committed = Path(__file__).parent.parent / "gatekeeper" / "report" / "schemas" / "recipe.schema.json"
    assert json.loads(committed.read_text()) == Recipe.model_json_schema()


@pytest.mark.parametrize("provenance, message", [
    ({"training": {"licence": "mit"}}, "provenance names set 'training', which the recipe does not have"),
    ({"rehearsal": {"licence": "mit"}}, "provenance names set 'rehearsal'"),  # the recipe has no rehearsal pool
    ({"train": {"licence": "mit", "owner": "acme"}}, "unknown key 'data.provenance.train.owner'"),
    ({"train": {"customer_data": "sometimes"}}, "field 'data.provenance.train.customer_data'"),
])
def test_a_bad_recipe_provenance_is_one_line(provenance, message, tmp_path, tiny_task):
    import yaml

    from gatekeeper.bundle.recipe import load_recipe
    from gatekeeper.errors import RecipeError

    path = write_recipe(tmp_path, tmp_path / "base", tiny_task)
    recipe = yaml.safe_load(path.read_text())
    recipe["data"]["provenance"] = provenance
    path.write_text(yaml.safe_dump(recipe))
    with pytest.raises(RecipeError, match=None) as raised:
        load_recipe(path)
    assert message in str(raised.value) and "\n" not in str(raised.value)
    recipe["data"]["provenance"] = {"train": {"source": "https://example.org", "licence": "MIT", "customer_data": False},
                                    "eval": {}}
    path.write_text(yaml.safe_dump(recipe))
    assert load_recipe(path)[0].data.provenance["train"].licence == "MIT"
