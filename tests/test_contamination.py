"""contamination on bundles with evaluation items planted in their training data."""

import json
import random

import pytest

from gatekeeper.bundle.loading import load_bundle
from gatekeeper.check import prepare, run_check
from gatekeeper.cli import main
from gatekeeper.gating.engine import run_gates
from gatekeeper.gating.registry import get_gate
from gatekeeper.testing import FakeRuntime
from tests.conftest import (
    VOCABULARY,
    distinct_items,
    edit_manifest,
    replace_golden_sets,
)

EVAL = distinct_items("eval", 24, seed=11)
VALIDATION = distinct_items("validation", 12, seed=12)
TRAIN = distinct_items("train", 80, seed=13)


def planted(source: dict, train_id: str, text: str) -> dict:
    return {"id": train_id, "input": text, "expected": source["expected"]}


def paraphrase(text: str) -> str:
    words = text.split()
    words[4], words[15] = "quickly", "again"  # two words changed
    words[8], words[9] = words[9], words[8]  # two swapped
    return " ".join(words)


# (set, evaluation id, training id, method or methods that may find it)
PLANTED = [
    ("eval", "eval-0003", "train-copy", {"exact"}),
    ("eval", "eval-0007", "train-recased", {"exact"}),
    ("eval", "eval-0012", "train-paraphrase", {"minhash", "fuzzy"}),
    ("validation", "validation-0005", "train-ngram", {"ngram"}),
]


@pytest.fixture
def contaminated(bundle_copy):
    by_id = {i["id"]: i for i in EVAL + VALIDATION}
    rows = TRAIN[:40] + [
        planted(by_id["eval-0003"], "train-copy", by_id["eval-0003"]["input"]),
        planted(by_id["eval-0007"], "train-recased", by_id["eval-0007"]["input"].upper().replace(" ", ", ") + "?!"),
        planted(by_id["eval-0012"], "train-paraphrase", paraphrase(by_id["eval-0012"]["input"])),
        planted(by_id["validation-0005"], "train-ngram", " ".join(
            random.Random(3).choices(VOCABULARY, k=25) + by_id["validation-0005"]["input"].split()[2:15])),
    ] + TRAIN[40:]
    return replace_golden_sets(bundle_copy, [{"name": "contamination"}], train=rows, eval=EVAL, validation=VALIDATION)


@pytest.fixture
def clean(bundle_copy):
    return replace_golden_sets(bundle_copy, [{"name": "contamination"}], train=TRAIN, eval=EVAL, validation=VALIDATION)


def evaluate(bundle, **params):
    runtime = FakeRuntime({})
    result, = run_gates(load_bundle(bundle), [(get_gate("contamination").build(params), True)], runtime)
    assert runtime.calls == []  # needs no model: the runtime is never asked
    return result


def test_planted_copies_fail_the_gate_with_exactly_those_pairs(contaminated):
    result = evaluate(contaminated)
    assert result.status == "failed", result.summary
    found = {(p["set"], p["id"], p["train_id"]): p["method"] for p in result.details["pairs"]}
    assert set(found) == {(s, e, t) for s, e, t, _ in PLANTED}  # every planted pair, nothing else
    for s, e, t, methods in PLANTED:
        assert found[(s, e, t)] in methods, (e, found[(s, e, t)])
    assert result.metric("contaminated_items").adapter == 4
    assert result.metric("contaminated_share").adapter == round(4 / 36, 6)
    assert result.details["checked"] == {"eval": 24, "validation": 12}
    # strongest evidence first, both texts shown
    assert [e.id for e in result.evidence[:2]] == ["eval/eval-0003", "eval/eval-0007"]
    assert "train/train-copy" in result.evidence[0].note
    assert result.details["pairs"][0]["train_text"].startswith(EVAL[3]["input"][:40])


def test_a_clean_bundle_passes(clean):
    result = evaluate(clean)
    assert result.status == "passed", result.details["pairs"]
    assert result.metric("contaminated_items").adapter == 0 and result.details["pairs_total"] == 0


def test_threshold_and_set_selection_are_parameters(contaminated):
    assert evaluate(contaminated, max_contaminated=4).status == "passed"
    only_eval = evaluate(contaminated, sets=["eval"])
    assert only_eval.details["checked"] == {"eval": 24}
    assert {p["id"] for p in only_eval.details["pairs"]} == {"eval-0003", "eval-0007", "eval-0012"}


def test_the_report_is_deterministic(contaminated):
    assert evaluate(contaminated).model_dump() == evaluate(contaminated).model_dump()


def test_check_exits_1_and_the_verdict_lists_the_pairs(contaminated, tmp_path):
    prepared = prepare(contaminated)
    run_check(prepared, tmp_path / "direct")
    assert prepared.runtime._model is None  # no model was loaded for it
    assert main(["check", str(contaminated), "--out", str(tmp_path), "-q"]) == 1
    verdict = json.loads((tmp_path / "verdict.json").read_text())
    gate = verdict["gates"][0]
    assert gate["name"] == "contamination" and gate["status"] == "failed"
    assert gate["details"]["pairs_total"] == 4


def test_clean_check_exits_0(clean, tmp_path):
    assert main(["check", str(clean), "--out", str(tmp_path), "-q"]) == 0


@pytest.mark.parametrize("params, message", [
    ({"sets": ["eval", "train"]}, "must not include the training set"),
    ({"fuzzy_scorer": "nope"}, "scorer must be one of"),
    ({"jaccard_threshold": 2.0}, "jaccard must be within"),
])
def test_bad_parameters_exit_2_with_one_line(clean, tmp_path, capsys, params, message):
    edit_manifest(clean, lambda d: d.update(gates=[{"name": "contamination", "params": params}]))
    assert main(["check", str(clean), "--out", str(tmp_path / "r"), "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and "gate 'contamination'" in err[0]
