"""``gatekeeper sweep``: a checked bundle per point of a grid of recipe settings, a table and a frontier plot;
bad axes stop with one line before anything trains."""

import csv
import json
import xml.etree.ElementTree as ET

import pytest
import yaml

from gatekeeper.bundle.loading import load_bundle
from gatekeeper.bundle.recipe import load_recipe
from gatekeeper.cli import main
from gatekeeper.errors import GatekeeperError, RecipeError
from gatekeeper.sweep import Point, apply, grid, parse_axis, parse_ranks, with_rank
from gatekeeper.training.versions import existing_versions
from tests.conftest import write_recipe

GATES = [{"name": "json_parse", "params": {"min_rate": 0.0}},
         {"name": "task_accuracy", "params": {"min_delta": -1.0, "require_significant": False}},
         {"name": "regression", "params": {"max_new_tokens": 8, "max_drop": 0.1}}]

pytestmark = pytest.mark.usefixtures("one_thread")  # before the module's training fixtures


def _recipe(tmp_path, tiny_base, tiny_task, regression_sets, **overrides):
    path = write_recipe(tmp_path / "c", tiny_base, tiny_task, gates=GATES, selection={"select_on": "last"},
                        training={"batch_size": 8, "max_steps": 24, "eval_every": 24, "warmup_steps": 0}, **overrides)
    document = yaml.safe_load(path.read_text())
    document["data"]["extra"] = {"regression": str(regression_sets / "regression.jsonl"),
                                 "control": str(regression_sets / "control.jsonl")}
    path.write_text(yaml.safe_dump(document))
    return path


def test_a_learning_rate_sweep_writes_the_table_and_the_frontier(tmp_path, tiny_base, tiny_task, regression_sets, capsys):
    recipe = _recipe(tmp_path, tiny_base, tiny_task, regression_sets)
    out = tmp_path / "sweep"
    # the gentle rate keeps what the base knew; the steep one forgets it (as test_regression_gate plants)
    assert main(["sweep", str(recipe), "--set", "training.learning_rate=1e-6,0.02", "--out", str(out), "-q"]) == 0
    assert existing_versions(tmp_path / "c") == [1, 2]

    rows = list(csv.DictReader((out / "sweep.csv").open()))
    assert [(r["training.learning_rate"], r["point"], r["version"], r["report"]) for r in rows] == [
        ("1e-06", "training.learning_rate=1e-06", "v1", str(out / "p1")),
        ("0.02", "training.learning_rate=0.02", "v2", str(out / "p2"))]
    for row in rows:
        bundle = tmp_path / "c" / row["version"]
        load_bundle(bundle)  # a complete, hash-checked bundle, trained at the point's rate
        assert yaml.safe_load((bundle / "recipe.yaml").read_text())["training"]["learning_rate"] == float(
            row["training.learning_rate"])
        verdict = json.loads((out / f"p{rows.index(row) + 1}" / "verdict.json").read_text())
        gates = {g["name"]: g for g in verdict["gates"]}
        task, regression = gates["task_accuracy"]["metrics"][0], gates["regression"]["metrics"][0]
        assert float(row["task_gain"]) == task["delta"] and float(row["target_accuracy"]) == task["adapter"]
        assert float(row["regression_loss"]) == pytest.approx(-regression["delta"])
        assert float(row["regression_accuracy"]) == regression["adapter"]
        assert row["verdict"] == ("pass" if verdict["passed"] else f"fail ({verdict['exit_code']})")
        record = json.loads((bundle / "training.json").read_text())
        assert float(row["best_val_loss"]) == record["best_val_loss"]
    gentle, steep = rows
    assert float(gentle["regression_loss"]) == 0.0 and gentle["verdict"] == "pass"
    assert float(steep["regression_loss"]) > 0.1 and steep["verdict"] == "fail (1)"

    document = json.loads((out / "sweep.json").read_text())
    assert document["axes"] == ["training.learning_rate"]
    assert document["region"] == {"min_gain": -1.0, "max_loss": 0.1}
    assert [r["settings"] for r in document["rows"]] == [{"training.learning_rate": 1e-6}, {"training.learning_rate": 0.02}]

    ns = {"s": "http://www.w3.org/2000/svg"}
    svg = ET.fromstring((out / "sweep.svg").read_text())
    assert [c.get("class") for c in svg.findall("s:circle", ns)] == ["pass", "fail"]
    assert "regression loss &lt;= 0.100" in (out / "sweep.svg").read_text()
    assert svg.find("s:rect", ns).get("class") == "accept"
    printed = capsys.readouterr().out
    assert "sweep over training.learning_rate" in printed and str(out / "sweep.csv") in printed


def test_several_axes_make_a_grid_and_each_point_is_a_valid_recipe(tmp_path, tiny_base, tiny_task):
    recipe, root = load_recipe(write_recipe(tmp_path / "a", tiny_base, tiny_task, adapter={"r": 8, "alpha": 16}))
    points = grid([parse_axis("training.learning_rate=1e-4,1e-3"),
                   parse_axis("adapter.target_modules=all-linear,[q_proj, v_proj]")])
    assert [p.label for p in points] == [
        "training.learning_rate=0.0001 adapter.target_modules=all-linear",
        'training.learning_rate=0.0001 adapter.target_modules=["q_proj", "v_proj"]',
        "training.learning_rate=0.001 adapter.target_modules=all-linear",
        'training.learning_rate=0.001 adapter.target_modules=["q_proj", "v_proj"]']
    changed = apply(recipe, points[1], tmp_path / "a" / "recipe.yaml")
    assert (changed.training.learning_rate, changed.adapter.target_modules) == (1e-4, ["q_proj", "v_proj"])
    assert changed.model_dump() == recipe.model_copy(update={
        "training": recipe.training.model_copy(update={"learning_rate": 1e-4}),
        "adapter": recipe.adapter.model_copy(update={"target_modules": ["q_proj", "v_proj"]})}).model_dump()
    ranked = apply(recipe, Point((("rank", 4),)), tmp_path)
    assert (ranked.adapter.r, ranked.adapter.alpha) == (4, 8)  # --rank keeps alpha / r; --set adapter.r does not
    assert apply(recipe, Point((("adapter.r", 4),)), tmp_path).adapter.alpha == 16


@pytest.mark.parametrize("point, message", [
    ((("training.learning_rte", 1e-3),), "sweep point training.learning_rte=0.001:"),
    ((("training.learning_rate", -1),), "greater than 0"),
    ((("trainng.steps", 1),), "--set trainng.steps: the recipe has no field trainng"),
    ((("data.rehearsal.weight", 2),), "data.rehearsal is not set in the recipe"),
    ((("training.seed.x", 2),), "training.seed holds a value, not fields"),
])
def test_a_point_that_is_no_valid_recipe_names_the_field(point, message, tmp_path, tiny_base, tiny_task):
    recipe, _ = load_recipe(write_recipe(tmp_path / "a", tiny_base, tiny_task))
    with pytest.raises(RecipeError, match=None) as raised:
        apply(recipe, Point(point), tmp_path / "a" / "recipe.yaml")
    assert message in str(raised.value) and "\n" not in str(raised.value)


@pytest.mark.parametrize("argv, message", [
    ([], "sweep needs something to vary"),
    (["--set", "training.learning_rate"], "--set expects FIELD=VALUE"),
    (["--set", "training.learning_rate=1e-3,,2e-3"], "an empty value"),
    (["--set", "training.learning_rate=1e-3,1e-3"], "lists '1e-3' twice"),
    (["--set", "training.seed=1,2", "--set", "training.seed=3"], "--set training.seed is given twice"),
    (["--set", "training.learning_rate=1e-3,-1"], "sweep point training.learning_rate=-1"),
    (["--set", "adapter.target_modules=[q_proj"], "is not a value YAML can read"),
    (["--rank", ""], "positive whole numbers"),
    (["--rank", "4,,8"], "positive whole numbers"),
    (["--rank", "four"], "positive whole numbers"),
    (["--rank", "0,4"], "positive whole numbers"),
    (["--rank", "4.5"], "positive whole numbers"),
    (["--rank", "4,8,4"], "lists 4 twice"),
])
def test_bad_axes_stop_with_one_line_before_anything_trains(argv, message, tmp_path, tiny_base, tiny_task, capsys):
    recipe = write_recipe(tmp_path / "c", tiny_base, tiny_task)
    assert main(["sweep", str(recipe), *argv, "--out", str(tmp_path / "out")]) == 2
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and message in captured.err and captured.err.startswith("gatekeeper: error:")
    assert captured.out == ""
    assert existing_versions(tmp_path / "c") == [] and not (tmp_path / "out").exists()


def test_a_galore_rank_the_model_cannot_take_stops_before_the_first_point_trains(tmp_path, tiny_base, tiny_task, capsys):
    recipe = write_recipe(tmp_path / "c", tiny_base, tiny_task, method="galore", adapter=None)
    assert main(["sweep", str(recipe), "--rank", "4,64", "--out", str(tmp_path / "out")]) == 2
    assert "galore.rank 64 exceeds the smaller side of model.layers.0.self_attn.k_proj.weight (32, 64)" in capsys.readouterr().err
    assert existing_versions(tmp_path / "c") == [] and not (tmp_path / "out").exists()


def test_a_missing_recipe_is_one_line_too(tmp_path, capsys):
    assert main(["sweep", str(tmp_path / "nope.yaml"), "--rank", "4"]) == 2
    assert capsys.readouterr().err.strip() == f"gatekeeper: error: {tmp_path / 'nope.yaml'}: recipe not found"


def test_rank_changes_what_each_method_calls_rank(tmp_path, tiny_base, tiny_task):
    assert parse_ranks(" 32, 4 ,8") == [4, 8, 32]
    with pytest.raises(GatekeeperError):
        parse_ranks("4,4")
    lora, _ = load_recipe(write_recipe(tmp_path / "a", tiny_base, tiny_task, adapter={"r": 16, "alpha": 32}))
    assert (with_rank(lora, 4).adapter.r, with_rank(lora, 4).adapter.alpha) == (4, 8)
    rs, _ = load_recipe(write_recipe(tmp_path / "b", tiny_base, tiny_task,
                                     adapter={"r": 16, "alpha": 32, "use_rslora": True}))
    assert with_rank(rs, 4).adapter.alpha == 32  # alpha / sqrt(r) is rank-stable already
    galore, _ = load_recipe(write_recipe(tmp_path / "c", tiny_base, tiny_task, method="galore", adapter=None,
                                         galore={"rank": 16, "scale": 0.5}))
    ranked = with_rank(galore, 4)
    assert (ranked.rank, ranked.galore.scale, ranked.adapter) == (4, 0.5, None)
