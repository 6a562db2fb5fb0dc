"""serving_parity's logic on a fake engine beside a fake reference; the real engine is in test_serving_vllm.py."""

import json

from gatekeeper.gating.engine import run_gates
from gatekeeper.testing import FakeRuntime
from tests.fakes import ITEMS, TRUTH, build, chatty, make_bundle, perfect


def _parity(**answers):
    runtime = FakeRuntime(answers)
    [result] = run_gates(make_bundle(ITEMS), build(("serving_parity", {}, True)), runtime)
    return result, runtime


def test_an_engine_that_answers_as_the_reference_passes():
    result, runtime = _parity(base=chatty, adapter=perfect, reference_base=chatty, reference_adapter=perfect)
    assert result.status == "passed", result.summary
    assert result.metric("adapter_same_outcome").adapter == 1.0 and result.metric("adapter_identical").adapter == 1.0
    assert result.metric("noop_gap").adapter <= 0.0
    assert {side for side, _ in runtime.calls} == {"base", "adapter", "reference_base", "reference_adapter"}


def test_an_adapter_that_loads_and_does_nothing_fails_as_a_no_op():
    result, _ = _parity(base=chatty, adapter=chatty, reference_base=chatty, reference_adapter=perfect)
    assert result.status == "failed" and "silent no-op" in result.summary
    assert result.metric("noop_gap").adapter == 1.0
    assert result.metric("adapter_same_outcome").adapter == 0.0
    assert result.evidence and "first difference at word" in result.evidence[0].note


def test_other_wording_with_the_same_outcome_passes_unless_identical_answers_are_required():
    def reworded(text):  # the same JSON, laid out differently: same parse, same label
        return json.dumps(TRUTH[text], indent=1)

    result, _ = _parity(base=chatty, adapter=reworded, reference_base=chatty, reference_adapter=perfect)
    assert result.status == "passed" and result.metric("adapter_identical").adapter == 0.0
    runtime = FakeRuntime({"base": chatty, "adapter": reworded, "reference_base": chatty, "reference_adapter": perfect})
    [strict] = run_gates(make_bundle(ITEMS), build(("serving_parity", {"min_identical": 0.9}, True)), runtime)
    assert strict.status == "failed" and "identical to the reference" in strict.summary


def test_on_the_reference_runtime_itself_it_is_skipped_with_the_reason():
    result, runtime = _parity(base=chatty, adapter=perfect)
    assert result.status == "skipped" and "reference runtime itself" in result.skip_reason
    assert runtime.calls == []


def test_the_reference_sides_are_answered_by_the_reference_under_its_own_identity():
    from gatekeeper.runtime.reference import WithReference

    served = FakeRuntime({"base": chatty, "adapter": chatty}, name="engine")
    reference = FakeRuntime({"base": chatty, "adapter": perfect}, name="hf")
    both = WithReference(served, reference)
    assert both.identity("reference_adapter") == reference.identity("adapter")
    assert both.capabilities().answers("generate", "reference_base")
    [result] = run_gates(make_bundle(ITEMS), build(("serving_parity", {}, True)), both)
    assert result.status == "failed" and "silent no-op" in result.summary  # the engine's adapter does nothing
    assert sorted(served.calls) == [("adapter", 80), ("base", 80)]
    assert sorted(reference.calls) == [("adapter", 80), ("base", 80)]
