"""calibration: label probabilities that still mean what they say.

On a fake runtime whose label log-probabilities are set per item: the
arithmetic against a hand-computed example, an overconfident adapter (its
log-probabilities scaled up, so its confidences approach 1 while its accuracy
stays put) failing, equal calibration passing, and a contract without a
closed label set skipped. Then on the real tiny model: a short, clean run
passes, and one trained to memorise labels that mean nothing fails.
"""

import json
import math
from dataclasses import replace

import pytest

from gatekeeper.bundle.goldens import Contract
from gatekeeper.gating.engine import run_gates
from gatekeeper.gating.stats import brier_score, expected_calibration_error, reliability
from gatekeeper.report.render import render_html, render_json
from gatekeeper.testing import FakeRuntime
from gatekeeper.verdict.diff import diff_verdicts
from tests.conftest import LABELS, write_jsonl, write_recipe
from tests.fakes import ITEMS, TRUTH, build, chatty, fake_verdict, make_bundle, perfect

INDEX = {i["input"]: k for k, i in enumerate(ITEMS)}


def label_of_option(option: str) -> str:
    return next(label for label in LABELS if f'"{label}"' in option)


def table(probabilities: dict[str, list[float]], offset: float = -3.0):
    """Scores from a table: user text -> probability of each label (contract order), as log-probs plus a
    constant (a runtime scores the whole option, prefix included; the softmax must cancel it)."""
    return lambda text, options: [math.log(probabilities[text][LABELS.index(label_of_option(o))]) + offset
                                  for o in options]


def sixty_percent(p_top: float = 0.6, sharpen: float = 1.0):
    """Right on 60% of items (the other 40% prefer the next label), the top label at ``p_top``;
    ``sharpen`` multiplies every log-probability (a temperature below 1): same top label, higher confidence."""

    def scores(text, options):
        gold = TRUTH[text]["priority"]
        top = gold if INDEX[text] % 10 < 6 else LABELS[(LABELS.index(gold) + 1) % 4]
        probs = {label: p_top if label == top else (1 - p_top) / 3 for label in LABELS}
        return [sharpen * math.log(probs[label_of_option(o)]) for o in options]

    return scores


def run(scores_base, scores_adapter, items=ITEMS, **params):
    runtime = FakeRuntime({"base": chatty, "adapter": perfect}, scores={"base": scores_base, "adapter": scores_adapter})
    result, = run_gates(make_bundle(items), build(("calibration", params, True)), runtime)
    return result, runtime


def test_ece_and_brier_match_a_hand_computed_example():
    # bins of width 0.1: {0.92, 0.98} in bin 9 (1 of 2 right), {0.81} in bin 8 (right), {0.61, 0.67} in bin 6 (1 of 2)
    confidences, correct = [0.92, 0.98, 0.81, 0.61, 0.67], [True, False, True, True, False]
    # bin 9: |0.5 - 0.95| * 2/5 = 0.18; bin 8: |1 - 0.81| * 1/5 = 0.038; bin 6: |0.5 - 0.64| * 2/5 = 0.056
    assert expected_calibration_error(confidences, correct, bins=10) == pytest.approx(0.274)
    bins = reliability(confidences, correct, bins=10)
    assert [b.count for b in bins] == [0, 0, 0, 0, 0, 0, 2, 0, 1, 2]
    assert (bins[9].confidence, bins[9].accuracy) == (pytest.approx(0.95), 0.5)
    # two bins instead: [0, 0.5) empty, [0.5, 1] all five: |0.6 - 0.798| = 0.198
    assert expected_calibration_error(confidences, correct, bins=2) == pytest.approx(0.198)
    assert expected_calibration_error([1.0], [True], bins=10) == 0.0  # 1.0 falls in the last bin, not past it
    # Brier: (0.3² + 0.2² + 0.1²) = 0.14 and (0.5² + 0.3² + 0.8²) = 0.98, mean 0.56
    assert brier_score([[0.7, 0.2, 0.1], [0.5, 0.3, 0.2]], [0, 2]) == pytest.approx(0.56)
    assert brier_score([[1.0, 0.0]], [None]) == pytest.approx(1.0)  # a gold label outside the set: all wrong


def test_the_gate_scores_the_softmax_of_the_label_log_probabilities():
    items = ITEMS[:4]  # gold: critical, high, medium, low
    adapter = {
        items[0]["input"]: [0.72, 0.08, 0.10, 0.10],  # critical 0.72, right
        items[1]["input"]: [0.76, 0.04, 0.10, 0.10],  # critical 0.76, wrong (high)
        items[2]["input"]: [0.10, 0.10, 0.42, 0.38],  # medium 0.42, right
        items[3]["input"]: [0.20, 0.20, 0.15, 0.45],  # low 0.45, right
    }
    uniform = {i["input"]: [0.25] * 4 for i in items}  # a tie: the contract's first label, right on item 0 only
    result, _ = run(table(uniform, offset=-7.0), table(adapter), items=items, resamples=200)
    # adapter bins: 7 holds 0.72 and 0.76 (1 of 2 right): |0.5 - 0.74| * 2/4 = 0.12;
    # 4 holds 0.42 and 0.45 (both right): |1 - 0.435| * 2/4 = 0.2825
    assert result.metric("ece").adapter == pytest.approx(0.4025)
    assert result.metric("ece").base == pytest.approx(0.0)  # 0.25 sure, right on a quarter
    # Brier per item: 0.1048, 1.5192, 0.5008, 0.405; the base's 0.75 on each
    assert result.metric("brier").adapter == pytest.approx(0.63245)
    assert result.metric("brier").base == pytest.approx(0.75)
    assert (result.metric("accuracy").base, result.metric("accuracy").adapter) == (0.25, 0.75)
    assert result.metric("mean_confidence").adapter == pytest.approx(0.5875)
    assert result.outcomes == {items[0]["id"]: True, items[1]["id"]: False, items[2]["id"]: True, items[3]["id"]: True}
    # the reliability diagram's numbers are the bins the ECE came from
    bins = {b["low"]: b for b in result.figures[0].data["adapter"] if b["count"]}
    assert sorted(bins) == [0.4, 0.7] and bins[0.7]["confidence"] == pytest.approx(0.74)
    assert bins[0.4]["accuracy"] == 1.0 and bins[0.7]["accuracy"] == 0.5
    # the confidently wrong item leads the evidence, every label's probability shown
    first = result.evidence[0]
    assert first.id == items[1]["id"] and first.adapter_output.startswith("critical 0.760, ")
    assert "0.760 sure of 'critical', expected 'high'" in first.note


def test_an_overconfident_adapter_fails_though_its_accuracy_is_unchanged():
    result, runtime = run(sixty_percent(), sixty_percent(sharpen=5.0))
    assert result.status == "failed", result.summary
    accuracy, ece = result.metric("accuracy"), result.metric("ece")
    assert accuracy.base == accuracy.adapter == 0.6  # same top labels: only the confidence moved
    assert ece.base == pytest.approx(0.0, abs=1e-9) and ece.adapter > 0.35
    assert result.metric("mean_confidence").adapter > 0.99
    assert result.paired.ci_low > 0 and result.paired.p_value < 0.01
    assert result.details["passed_by"] is None and "significantly worse" in result.summary
    assert sorted(runtime.calls) == [("adapter", 80), ("base", 80)]  # one choose call per side, nothing generated
    # every wrong item is 0.99 sure; the worst examples are those, none of them right
    assert result.evidence and all(e.adapter_ok is False for e in result.evidence)
    assert all(e.note.startswith("adapter 0.998 sure of") for e in result.evidence)
    # max_ece can let it through: an absolute bound the bundle sets, whatever the base did
    lenient, _ = run(sixty_percent(), sixty_percent(sharpen=5.0), max_ece=0.5)
    assert lenient.status == "passed" and lenient.details["passed_by"] == "max_ece"
    strict, _ = run(sixty_percent(), sixty_percent(sharpen=5.0), max_ece=0.1)
    assert strict.status == "failed"


def test_equal_calibration_passes_and_a_slight_worsening_is_not_significant():
    same, _ = run(sixty_percent(), sixty_percent())
    assert same.status == "passed" and same.metric("ece").delta == 0.0
    assert (same.paired.ci_low, same.paired.ci_high) == (0.0, 0.0)  # the same resamples for both sides
    # better calibrated than an overconfident base: passes
    better, _ = run(sixty_percent(sharpen=5.0), sixty_percent())
    assert better.status == "passed" and better.metric("ece").delta < -0.35
    # 0.6 -> 0.63 sure at 60% accuracy: worse, but within what resampling 80 items shows
    slight, _ = run(sixty_percent(), sixty_percent(sharpen=0.9))
    assert slight.metric("ece").delta > 0 and slight.paired.ci_low < 0 < slight.paired.ci_high
    assert slight.status == "passed"
    # the margin is what the lower bound is held to: a negative one demands a significant improvement
    demanding, _ = run(sixty_percent(), sixty_percent(), margin=-0.01)
    assert demanding.status == "failed"


def varied(sharpen: float = 1.0):
    """Right on 60% of items, each item's top label at its own probability between 0.4 and 0.9."""

    def scores(text, options):
        gold = TRUTH[text]["priority"]
        top = gold if INDEX[text] % 10 < 6 else LABELS[(LABELS.index(gold) + 1) % 4]
        p_top = 0.4 + 0.5 * (INDEX[text] * 37 % 80) / 80
        probs = {label: p_top if label == top else (1 - p_top) / 3 for label in LABELS}
        return [sharpen * math.log(probs[label_of_option(o)]) for o in options]

    return scores


def test_the_interval_is_seeded_and_the_same_resample_serves_both_sides():
    first, _ = run(varied(), varied(sharpen=2.0))
    again, _ = run(varied(), varied(sharpen=2.0))
    other, _ = run(varied(), varied(sharpen=2.0), seed=1)
    assert first.paired == again.paired and (first.paired.ci_low, first.paired.ci_high) != (
        other.paired.ci_low, other.paired.ci_high)
    assert first.paired.ci_low <= first.metric("ece").delta <= first.paired.ci_high


def test_a_contract_without_a_closed_label_set_is_skipped_and_nothing_is_asked(tmp_path):
    bundle = make_bundle(ITEMS)
    free = {"type": "object", "properties": {"answer": {"type": "string"}}}
    bundle = replace(bundle, contract=Contract(free))
    runtime = FakeRuntime({"base": chatty, "adapter": perfect})
    result, = run_gates(bundle, build(("calibration", {}, True)), runtime)
    assert result.status == "skipped" and "no closed set of labels" in result.skip_reason
    assert runtime.calls == []


def test_it_shares_the_label_scoring_with_task_accuracy():
    runtime = FakeRuntime({"base": chatty, "adapter": perfect})
    gates = build(("calibration", {}, True), ("task_accuracy", {"scoring": "loglik"}, True))
    calibration, accuracy = run_gates(make_bundle(ITEMS), gates, runtime)
    assert sorted(runtime.calls) == [("adapter", 80), ("base", 80)]  # one pass per side serves both gates
    assert calibration.metric("accuracy").adapter == accuracy.metric("accuracy").adapter == 1.0


def test_a_runtime_that_cannot_score_labels_skips_it():
    runtime = FakeRuntime({"base": chatty, "adapter": perfect}, unanswered={"choose": "no prompt logprobs"})
    result, = run_gates(make_bundle(ITEMS), build(("calibration", {}, True)), runtime)
    assert result.status == "skipped" and "no prompt logprobs" in result.skip_reason


def _verdict_with(calibration_result):
    verdict = fake_verdict(perfect)
    return verdict.model_copy(update={"gates": verdict.gates + [calibration_result]})


def test_the_report_draws_the_reliability_diagram_and_diff_compares_the_metrics():
    worse, _ = run(sixty_percent(), sixty_percent(sharpen=5.0))
    fine, _ = run(sixty_percent(), sixty_percent())
    html = render_html(_verdict_with(worse))
    lines = html.splitlines()
    [diagram] = [line for line in lines if '<svg class="reliability"' in line]
    assert diagram.startswith("<figure>") and diagram.endswith("</figure>")  # one line of markup
    # every item in one bin per side: a point each, no line to draw, and the diagonal
    assert diagram.count('<circle class="base"') == 1 and diagram.count('<circle class="adapter"') == 1
    assert "<polyline" not in diagram and '<line class="diag"' in diagram
    assert "adapter: 80 items with confidence 0.9-1, mean 0.998, accuracy 0.600" in diagram
    assert "base: 80 items with confidence 0.6-0.7, mean 0.600, accuracy 0.600" in diagram
    assert any(line.startswith('<tr><td>ece <span class="muted">(lower is better)</span></td>') for line in lines)
    # verdict.json carries the bins as numbers, one value per line
    text = render_json(_verdict_with(worse))
    assert '"kind": "reliability"' in text and '"confidence": 0.998' in text
    assert max(len(line) for line in text.splitlines()) < 400
    # gatekeeper diff: A is calibrated, B overconfident; ECE and Brier are lower-is-better
    change = next(g for g in diff_verdicts(_verdict_with(fine), _verdict_with(worse)).gates if g.gate == "calibration")
    by_name = {m.metric: m for m in change.metrics}
    assert set(by_name) == {"ece", "brier", "accuracy", "mean_confidence"}
    assert by_name["ece"].direction == "worse" and by_name["ece"].change > 0.35
    assert by_name["brier"].direction == "worse" and by_name["accuracy"].direction == "same"
    assert change.has_outcomes and change.flips == []  # same top labels, item by item


# -- on the real tiny model ---------------------------------------------------------------------


def _check(bundle, out):
    from gatekeeper.cli import main

    code = main(["check", str(bundle), "--out", str(out), "-q"])
    verdict = json.loads((out / "verdict.json").read_text())
    return code, {g["name"]: g for g in verdict["gates"]}


def test_a_short_clean_run_passes_on_the_real_tiny_model(bundle_copy, tmp_path, one_thread):
    from tests.conftest import edit_manifest

    edit_manifest(bundle_copy, lambda d: d.update(gates=[{"name": "calibration"}]))
    code, gates = _check(bundle_copy, tmp_path / "r")
    result = gates["calibration"]
    assert result["status"] == "passed", result["summary"]
    assert code == 0
    ece = next(m for m in result["metrics"] if m["name"] == "ece")
    assert 0 <= ece["base"] <= 1 and 0 <= ece["adapter"] <= 1
    assert len(result["figures"][0]["data"]["base"]) == 10
    assert '<svg class="reliability"' in (tmp_path / "r" / "report.html").read_text()


def test_an_adapter_that_memorised_meaningless_labels_fails_on_the_real_tiny_model(tiny_base, tmp_path, one_thread):
    """Labels drawn at random, unrelated to the ticket: trained long enough, the adapter is sure of
    each training row's label and as sure, and mostly wrong, on the evaluation set."""
    import random
    import shutil

    from gatekeeper.bundle.recipe import load_recipe
    from gatekeeper.training.loop import train
    from gatekeeper.training.versions import write_candidate
    from tests.conftest import CONTRACT, tiny_items

    rng = random.Random(7)
    task = tmp_path / "task"
    noisy = [dict(i, expected={"priority": rng.choice(LABELS), "reason": i["expected"]["reason"]})
             for i in tiny_items("train", 16)]
    write_jsonl(task / "train.jsonl", noisy)
    write_jsonl(task / "validation.jsonl", tiny_items("validation", 8, offset=100))
    write_jsonl(task / "eval.jsonl", tiny_items("eval", 48, offset=200))
    shutil.copyfile(CONTRACT, task / "contract.schema.json")
    # The output head is trained too: without it the tiny random model's logits stay too small to be sure of anything.
    modules = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "lm_head"]
    recipe_path = write_recipe(tmp_path / "recipe", tiny_base, task,
                               adapter={"r": 8, "alpha": 16, "dropout": 0.0, "target_modules": modules},
                               training={"batch_size": 8, "max_steps": 200, "eval_every": 100, "learning_rate": 0.01,
                                         "warmup_steps": 1},
                               gates=[{"name": "calibration"}], selection={"select_on": "last"})
    recipe, root = load_recipe(recipe_path)
    bundle = write_candidate(train(recipe, root), recipe, root)
    code, gates = _check(bundle, tmp_path / "r")
    result = gates["calibration"]
    assert result["status"] == "failed", result["summary"]
    assert code == 1
    confidence = next(m for m in result["metrics"] if m["name"] == "mean_confidence")
    accuracy = next(m for m in result["metrics"] if m["name"] == "accuracy")
    assert confidence["adapter"] - accuracy["adapter"] > 0.3  # sure, and wrong
    assert result["paired"]["ci_low"] > 0
