"""Every recipe shipped under adapters/ is a valid recipe whose gates build and whose files exist.

A typo in a shipped recipe would otherwise surface minutes into `make demo`.
"""

from pathlib import Path

import pytest

from gatekeeper.bundle.recipe import load_recipe, output_dir
from gatekeeper.gating.registry import get_gate

ADAPTERS = Path(__file__).resolve().parent.parent / "adapters"
RECIPES = sorted(ADAPTERS.glob("*/recipe.yaml"))


def test_the_demo_recipes_are_shipped():
    assert {p.parent.name for p in RECIPES} >= {"support-ticket-json", "support-ticket-json-quick"}


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.parent.name)
def test_a_shipped_recipe_loads_its_gates_build_and_its_files_exist(path):
    recipe, root = load_recipe(path)
    data = recipe.data
    files = [data.train, data.validation, data.eval, data.contract, *data.extra.values()]
    if data.rehearsal is not None:
        files.append(data.rehearsal.prompts)
    if data.preferences is not None:
        files.append(data.preferences)
    for name in files:
        assert (root / name).is_file(), f"{path}: {name} does not exist"
    names = set()
    for spec in recipe.gates:
        get_gate(spec.name).build(spec.params)
        names.add(spec.id or spec.name)
        golden = spec.params.get("golden_set")
        assert golden is None or golden in data.extra or golden == "eval", f"{path}: gate {spec.name} reads {golden}"
    assert len(names) == len(recipe.gates)
    assert output_dir(recipe, root).resolve().parent == ADAPTERS  # versions land in adapters/<name>/
