"""A gate that cannot be answered, or does not apply, is skipped with its reason: never passed."""

from gatekeeper.gating.engine import run_gates
from gatekeeper.report.render import render_html, render_junit
from gatekeeper.testing import FakeRuntime
from gatekeeper.verdict.model import Verdict, exit_code_for
from tests.fakes import ITEMS, build, chatty, fake_verdict, make_bundle, perfect


def test_a_gate_the_runtime_cannot_answer_is_skipped_with_the_reason_and_never_asked():
    runtime = FakeRuntime({"base": chatty, "adapter": perfect}, unanswered={"choose": "the server returns no logprobs"})
    gates = build(("json_parse", {}, True), ("task_accuracy", {"scoring": "loglik"}, True))
    parse, accuracy = run_gates(make_bundle(ITEMS), gates, runtime)
    assert parse.status == "passed"
    assert accuracy.status == "skipped" and "the server returns no logprobs" in accuracy.skip_reason
    assert "fake runtime" in accuracy.skip_reason
    assert sorted(runtime.calls) == [("adapter", 80), ("base", 80)]  # generate only: choose was never asked
    assert exit_code_for([parse, accuracy]) == 0  # a required gate ran and passed; the skip is said, not hidden


def test_a_check_whose_required_gates_were_all_skipped_does_not_pass():
    runtime = FakeRuntime({"base": chatty, "adapter": perfect}, unanswered={"generate": "no generation here"})
    results = run_gates(make_bundle(ITEMS), build(("json_parse", {}, True), ("task_accuracy", {}, False)), runtime)
    assert [r.status for r in results] == ["skipped", "skipped"]
    assert exit_code_for(results) == 1 and runtime.calls == []


def test_skipped_shows_in_verdict_json_junit_and_html():
    verdict = fake_verdict(perfect)
    skipped = verdict.gates[1].model_copy(update={"status": "skipped", "skip_reason": "planted reason", "metrics": []})
    verdict = verdict.model_copy(update={"gates": [verdict.gates[0], skipped]})
    again = Verdict.model_validate_json(verdict.model_dump_json())
    assert again.gates[1].status == "skipped" and again.gates[1].skip_reason == "planted reason"
    junit = render_junit(verdict)
    assert '<skipped message="not evaluated: planted reason"/>' in junit and 'skipped="1"' in junit
    html = render_html(verdict)
    assert '<span class="badge skipped">skipped</span>' in html and "Not evaluated: planted reason" in html
    assert "Skipped, not passed: task_accuracy." in html
