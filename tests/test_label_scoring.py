"""task_accuracy with ``scoring: loglik``: the closed set of labels scored instead of generated.

On a fake runtime for the gate's logic, and on a trained tiny candidate
against the plain path: where the greedy answer is valid JSON, the label it
writes is the label the scores prefer.
"""

import json

import pytest

from gatekeeper.bundle.goldens import parse_strict_json
from gatekeeper.check import prepare
from gatekeeper.errors import GateParameterError
from gatekeeper.gating.engine import run_gates
from gatekeeper.testing import FakeRuntime
from tests.fakes import ITEMS, build, chatty, make_bundle, perfect


def test_labels_are_scored_without_generating():
    runtime = FakeRuntime({"base": chatty, "adapter": perfect})
    accuracy, = run_gates(make_bundle(ITEMS), build(("task_accuracy", {"scoring": "loglik"}, True)), runtime)
    assert accuracy.status == "passed" and accuracy.metric("accuracy").adapter == 1.0
    assert accuracy.details["scoring"] == "loglik"
    # one choose call per side; nothing generated
    assert sorted(runtime.calls) == [("adapter", 80), ("base", 80)]


def test_an_adapter_that_prefers_wrong_labels_fails():
    def shifted(text):  # the next label in the contract's order, always wrong
        answer = json.loads(perfect(text))
        labels = ["critical", "high", "medium", "low"]
        answer["priority"] = labels[(labels.index(answer["priority"]) + 1) % 4]
        return json.dumps(answer)

    runtime = FakeRuntime({"base": perfect, "adapter": shifted})
    accuracy, = run_gates(make_bundle(ITEMS), build(("task_accuracy", {"scoring": "loglik"}, True)), runtime)
    assert accuracy.status == "failed" and accuracy.metric("accuracy").adapter == 0.0
    assert len(accuracy.paired.flipped_to_fail) == 80
    # the evidence shows every label's score, the preferred one first
    first = accuracy.evidence[0]
    assert first.base_output.startswith(f"{first.expected['priority']} -0.10,")
    assert not first.adapter_output.startswith(first.expected["priority"])


def test_answers_that_do_not_begin_with_the_label_cannot_be_scored():
    items = [dict(i, expected={"reason": i["expected"]["reason"], "priority": i["expected"]["priority"]}) for i in ITEMS]
    runtime = FakeRuntime({"base": chatty, "adapter": perfect})
    accuracy, = run_gates(make_bundle(items), build(("task_accuracy", {"scoring": "loglik"}, True)), runtime)
    assert accuracy.status == "error" and "begin with the label field 'priority'" in accuracy.error


def test_an_unknown_scoring_is_a_parameter_error():
    with pytest.raises(GateParameterError, match="scoring must be 'generate' or 'loglik'"):
        build(("task_accuracy", {"scoring": "vibes"}, True))


def test_scored_labels_agree_with_the_labels_greedy_answers_write(ranked_candidates):
    """The plain path writes the answer; where it is valid JSON, its label is the top-scored one."""
    from gatekeeper.gating.engine import GateContext

    _, _, bundle = ranked_candidates
    prepared = prepare(bundle)
    ctx = GateContext(prepared.bundle)
    items = prepared.bundle.golden["eval"]
    gate = build(("task_accuracy", {"scoring": "loglik"}, True))[0][0]
    written = prepared.runtime.generate("adapter", [ctx.task_request(i) for i in items])
    scores = prepared.runtime.choose("adapter", [gate.choice(ctx, i) for i in items])
    labels = ctx.contract.labels
    compared = 0
    for text, row in zip(written, scores):
        parsed = parse_strict_json(text).value
        if isinstance(parsed, dict) and parsed.get("priority") in labels:
            compared += 1
            assert labels[row.index(max(row))] == parsed["priority"], (text, row)
    assert compared >= len(items) // 2, compared


def test_an_adapter_that_never_says_one_label_fails_the_per_label_floor():
    """Right on every ticket but the low ones: the average gains, one label is starved."""
    def never_low(text):
        answer = json.loads(perfect(text))
        if answer["priority"] == "low":
            answer["priority"] = "medium"
        return json.dumps(answer)

    runtime = FakeRuntime({"base": chatty, "adapter": never_low})
    plain, floored = run_gates(make_bundle(ITEMS), build(("task_accuracy", {}, True),
                                                         ("task_accuracy", {"min_label_accuracy": 0.25}, True)), runtime)
    assert plain.status == "passed"
    assert floored.status == "failed" and "below the per-label floor: low 0.0%" in floored.summary
    assert floored.details["per_label_accuracy"]["low"]["adapter"] == 0.0
    assert "every label >= 25% right" in floored.rule


def test_a_per_label_floor_outside_zero_to_one_is_a_parameter_error():
    with pytest.raises(GateParameterError, match="min_label_accuracy must be between 0 and 1, got 25"):
        build(("task_accuracy", {"min_label_accuracy": 25.0}, True))
