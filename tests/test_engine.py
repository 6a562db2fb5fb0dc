"""Engine logic on a fake runtime: de-duplication, exit codes, crashing and advisory gates."""

import json

from gatekeeper.gating.engine import run_gates
from gatekeeper.gating.registry import gate
from gatekeeper.gating.result import GateResult
from gatekeeper.runtime.requests import CountTokens
from gatekeeper.testing import FakeRuntime
from gatekeeper.verdict.model import exit_code_for
from tests.fakes import ITEMS, build, chatty, make_bundle, perfect, right_on


def test_gates_share_requests_and_each_side_is_asked_once():
    runtime = FakeRuntime({"base": chatty, "adapter": perfect})
    gates = build(("json_parse", {}, True), ("task_accuracy", {}, True))
    results = run_gates(make_bundle(ITEMS), gates, runtime)
    # both gates need the same 80 answers: one call per side with 80 unique requests
    assert sorted(runtime.calls) == [("adapter", 80), ("base", 80)]
    parse, accuracy = results
    assert parse.status == "passed" and parse.metric("valid_rate").base == 0.0 and parse.metric("valid_rate").adapter == 1.0
    assert accuracy.status == "passed" and accuracy.delta == 1.0
    assert accuracy.paired.n == 80 and len(accuracy.paired.flipped_to_pass) == 80 and accuracy.paired.p_value < 1e-6
    assert exit_code_for(results) == 0


def test_an_adapter_that_forgets_the_format_fails_both_gates():
    runtime = FakeRuntime({"base": perfect, "adapter": chatty})
    results = run_gates(make_bundle(ITEMS), build(("json_parse", {}, True), ("task_accuracy", {}, True)), runtime)
    assert [r.status for r in results] == ["failed", "failed"]
    accuracy = results[1]
    assert len(accuracy.paired.flipped_to_fail) == 80
    # regressions are shown first, with raw outputs
    assert accuracy.evidence[0].base_ok and not accuracy.evidence[0].adapter_ok
    assert accuracy.evidence[0].adapter_output.startswith("The priority is")
    assert exit_code_for(results) == 1


def test_an_advisory_failure_does_not_fail_the_check():
    runtime = FakeRuntime({"base": chatty, "adapter": right_on({i["input"] for i in ITEMS[:60]})})
    results = run_gates(make_bundle(ITEMS), build(("json_parse", {}, False), ("task_accuracy", {}, True)), runtime)
    assert results[0].status == "failed" and results[0].required is False
    assert results[1].status == "passed" and results[1].required is True
    assert exit_code_for(results) == 0


def test_too_small_a_set_is_flagged():
    runtime = FakeRuntime({"base": chatty, "adapter": perfect})
    results = run_gates(make_bundle(ITEMS[:20]), build(("task_accuracy", {"min_delta": 0.1}, True)), runtime)
    assert "at least 60 are needed" in results[0].paired.too_small


@gate("test_crashing_gate")
class Crashing:
    def requests(self, ctx):
        return []

    def evaluate(self, ctx, responses):
        raise ZeroDivisionError("boom")


def test_a_crashing_gate_is_an_error_and_the_others_still_run():
    runtime = FakeRuntime({"base": chatty, "adapter": perfect})
    results = run_gates(make_bundle(ITEMS), build(("test_crashing_gate", {}, True), ("json_parse", {}, True)), runtime)
    assert results[0].status == "error" and "ZeroDivisionError: boom" in results[0].error
    assert results[1].status == "passed"
    assert exit_code_for(results) == 3


@gate("test_data_only_gate")
class DataOnly:
    sides = ()  # judges golden sets alone

    def requests(self, ctx):
        return []

    def evaluate(self, ctx, responses):
        return GateResult(name=self.name, status="passed", rule="reads data only")


def test_a_gate_without_sides_never_reaches_the_runtime():
    runtime = FakeRuntime({})  # answers nothing: any call would raise
    results = run_gates(make_bundle(ITEMS), build(("test_data_only_gate", {}, True)), runtime)
    assert results[0].status == "passed" and runtime.calls == []
    # beside a model gate, only the model gate's requests are sent
    runtime = FakeRuntime({"base": chatty, "adapter": perfect})
    run_gates(make_bundle(ITEMS), build(("test_data_only_gate", {}, True), ("json_parse", {}, True)), runtime)
    assert sorted(runtime.calls) == [("adapter", 80), ("base", 80)]


@gate("test_length_gate")
class Lengths:
    sides = ("base",)  # one tokenizer serves every side

    def requests(self, ctx):
        return [CountTokens(ctx.prompt.messages(i.input), json.dumps(i.expected)) for i in ctx.golden("eval")]

    def evaluate(self, ctx, responses):
        counts = [responses.get("base", r) for r in self.requests(ctx)]
        return GateResult(name=self.name, status="passed", rule="", details={"counts": counts})


def test_token_counts_are_asked_once_on_the_sides_a_gate_names():
    runtime = FakeRuntime({})
    result, = run_gates(make_bundle(ITEMS[:3]), build(("test_length_gate", {}, True)), runtime)
    assert runtime.calls == [("base", 3)]
    # "ticket 0: the outage in area 0" is 7 words, the answer 5, plus the end of turn
    assert result.details["counts"][0] == 7 + 5 + 1
def test_gates_record_every_items_adapter_outcome_in_set_order():
    right = {i["input"] for i in ITEMS[::3]}
    runtime = FakeRuntime({"base": chatty, "adapter": right_on(right)})
    parse, accuracy = run_gates(make_bundle(ITEMS), build(("json_parse", {}, True), ("task_accuracy", {}, True)), runtime)
    expected = {i["id"]: i["input"] in right for i in ITEMS}
    assert list(parse.outcomes) == [i["id"] for i in ITEMS]
    assert parse.outcomes == expected and accuracy.outcomes == expected



def test_any_gatekeeper_error_a_gate_raises_while_planning_is_one_bundle_error_naming_the_gate():
    import pytest

    from gatekeeper.errors import BundleError, GoldenSetError
    from gatekeeper.gating.context import GateContext
    from gatekeeper.gating.engine import plan_gates

    class NeedsAFile:
        name, sides = "needs_a_file", ("adapter",)

        def requests(self, ctx):
            raise GoldenSetError("extra.jsonl", 3, "not valid JSON")  # an error class with its own arguments

    with pytest.raises(BundleError, match=r"gate 'needs_a_file': extra.jsonl:3: not valid JSON"):
        plan_gates(GateContext(make_bundle(ITEMS)), [(NeedsAFile(), True)], FakeRuntime({}).capabilities())
