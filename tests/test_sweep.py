"""``gatekeeper sweep``: a bundle per rank, each checked, one table and one plot; bad rank lists stop first."""

import csv
import json
import xml.etree.ElementTree as ET

import pytest

from gatekeeper.bundle.loading import load_bundle
from gatekeeper.bundle.recipe import load_recipe
from gatekeeper.cli import main
from gatekeeper.sweep import parse_ranks, with_rank
from gatekeeper.training.versions import existing_versions
from tests.conftest import write_recipe

GATES = [{"name": "json_parse", "params": {"min_rate": 0.0}},
         {"name": "task_accuracy", "params": {"min_delta": -1.0, "require_significant": False}}]


pytestmark = pytest.mark.usefixtures("one_thread")  # before the module's training fixtures


def test_sweep_writes_a_checked_bundle_per_rank_a_table_and_a_plot(tmp_path, tiny_base, tiny_task, capsys):
    recipe = write_recipe(tmp_path / "c", tiny_base, tiny_task, gates=GATES,
                          adapter={"r": 4, "alpha": 8, "dropout": 0.0},
                          training={"batch_size": 8, "max_steps": 3, "eval_every": 3, "learning_rate": 0.01})
    out = tmp_path / "sweep"
    assert main(["sweep", str(recipe), "--rank", "8,2", "--out", str(out), "-q"]) == 0
    assert existing_versions(tmp_path / "c") == [1, 2]
    for version, rank in ((1, 2), (2, 8)):  # ranks run in ascending order
        bundle = tmp_path / "c" / f"v{version}"
        load_bundle(bundle)  # a complete, hash-checked bundle
        config = json.loads((bundle / "adapter" / "adapter_config.json").read_text())
        assert (config["r"], config["lora_alpha"]) == (rank, 2 * rank)  # alpha / r kept from the recipe
        assert (out / f"r{rank}" / "verdict.json").is_file()

    rows = list(csv.DictReader((out / "sweep.csv").open()))
    assert [(r["rank"], r["version"]) for r in rows] == [("2", "v1"), ("8", "v2")]
    for row in rows:
        verdict = json.loads((out / f"r{row['rank']}" / "verdict.json").read_text())
        accuracy = next(g for g in verdict["gates"] if g["name"] == "task_accuracy")["metrics"][0]["adapter"]
        record = json.loads((tmp_path / "c" / row["version"] / "training.json").read_text())
        assert float(row["target_accuracy"]) == accuracy
        assert float(row["best_val_loss"]) == record["best_val_loss"]
        assert int(row["adapter_bytes"]) == record["adapter_bytes"]
        assert row["regression_accuracy"] == ""  # no regression gate in this bundle
        assert row["verdict"] == "pass"
    assert int(rows[1]["adapter_bytes"]) > int(rows[0]["adapter_bytes"])  # rank 8 stores more than rank 2
    assert json.loads((out / "sweep.json").read_text())["rows"][1]["rank"] == 8

    svg = ET.fromstring((out / "sweep.svg").read_text())
    ns = {"s": "http://www.w3.org/2000/svg"}
    panels = svg.findall("s:g", ns)
    assert [p.find("s:text", ns).text for p in panels] == [
        "task accuracy (adapter)", "regression accuracy (adapter)", "best validation loss", "adapter bytes"]
    assert [len(p.findall("s:circle", ns)) for p in panels] == [2, 0, 2, 2]  # one point per rank with a value
    printed = capsys.readouterr().out
    assert "rank sweep" in printed and str(out / "sweep.csv") in printed


@pytest.mark.parametrize("ranks, message", [
    ("", "positive whole numbers"),
    ("4,,8", "positive whole numbers"),
    ("four", "positive whole numbers"),
    ("0,4", "positive whole numbers"),
    ("-4", "positive whole numbers"),
    ("4.5", "positive whole numbers"),
    ("4,8,4", "lists 4 twice"),
])
def test_bad_rank_lists_stop_with_one_line_before_anything_trains(ranks, message, tmp_path, tiny_base, tiny_task, capsys):
    recipe = write_recipe(tmp_path / "c", tiny_base, tiny_task)
    assert main(["sweep", str(recipe), "--rank", ranks, "--out", str(tmp_path / "out")]) == 2
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and message in captured.err and captured.err.startswith("gatekeeper: error:")
    assert captured.out == ""
    assert existing_versions(tmp_path / "c") == [] and not (tmp_path / "out").exists()


def test_a_galore_rank_the_model_cannot_take_stops_before_the_first_rank_trains(tmp_path, tiny_base, tiny_task, capsys):
    recipe = write_recipe(tmp_path / "c", tiny_base, tiny_task, method="galore", adapter=None)
    assert main(["sweep", str(recipe), "--rank", "4,64", "--out", str(tmp_path / "out")]) == 2
    assert "galore.rank 64 exceeds the smaller side of model.layers.0.self_attn.k_proj.weight (32, 64)" in capsys.readouterr().err
    assert existing_versions(tmp_path / "c") == [] and not (tmp_path / "out").exists()


def test_a_missing_recipe_is_one_line_too(tmp_path, capsys):
    assert main(["sweep", str(tmp_path / "nope.yaml"), "--rank", "4"]) == 2
    assert capsys.readouterr().err.strip() == f"gatekeeper: error: {tmp_path / 'nope.yaml'}: recipe not found"


def test_rank_changes_what_each_method_calls_rank(tmp_path, tiny_base, tiny_task):
    assert parse_ranks(" 32, 4 ,8") == [4, 8, 32]
    lora, _ = load_recipe(write_recipe(tmp_path / "a", tiny_base, tiny_task, adapter={"r": 16, "alpha": 32}))
    assert (with_rank(lora, 4).adapter.r, with_rank(lora, 4).adapter.alpha) == (4, 8)
    rs, _ = load_recipe(write_recipe(tmp_path / "b", tiny_base, tiny_task,
                                     adapter={"r": 16, "alpha": 32, "use_rslora": True}))
    assert with_rank(rs, 4).adapter.alpha == 32  # alpha / sqrt(r) is rank-stable already
    galore, _ = load_recipe(write_recipe(tmp_path / "c", tiny_base, tiny_task, method="galore", adapter=None,
                                         galore={"rank": 16, "scale": 0.5}))
    ranked = with_rank(galore, 4)
    assert (ranked.rank, ranked.galore.scale, ranked.adapter) == (4, 0.5, None)
