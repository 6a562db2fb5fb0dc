"""assert_gate: the gate's own rule, or your bounds on its metrics, with the evidence in the message."""

import pytest

from gatekeeper.verdict.assertions import GateAssertionError, assert_gate
from tests.fakes import ITEMS, fake_verdict, right_on

# json_parse needs a valid rate of 0.5; this adapter is right on a quarter of the items
VERDICT = fake_verdict(right_on({i["input"] for i in ITEMS[:20]}))


def test_without_bounds_the_gates_own_rule_decides():
    assert assert_gate(VERDICT, "task_accuracy").status == "passed"  # min_delta 0.10: +0.25 holds
    with pytest.raises(GateAssertionError) as failed:
        assert_gate(VERDICT, "json_parse")
    message = str(failed.value)
    assert message.startswith("gate 'json_parse' failed\n  rule: adapter parse+valid rate >= 0.50\n")
    assert "  valid_rate: base 0.000, adapter 0.250, delta +0.250 (threshold 0.500)\n" in message
    assert "  worst examples:\n    eval-0020: 'ticket 20: the outage in area 43' expected {\"priority\": \"critical\"" in message
    assert "      adapter: 'The priority is critical.'  (not JSON:" in message


def test_bounds_are_your_rule_on_the_headline_or_a_named_metric():
    assert_gate(VERDICT, "task_accuracy", min_delta=0.25, max_delta=0.25)
    assert_gate(VERDICT, "json_parse", metric="parse_rate", min_adapter=0.2)  # bounds hold, whatever the status
    with pytest.raises(GateAssertionError, match=r"^gate 'task_accuracy': accuracy delta \+0.250 is below min_delta=0.3\n"):
        assert_gate(VERDICT, "task_accuracy", min_delta=0.3)
    with pytest.raises(GateAssertionError, match="parse_rate adapter value 0.250 is above max_adapter=0.1"):
        assert_gate(VERDICT, "json_parse", metric="parse_rate", max_adapter=0.1)


def test_unknown_names_say_what_there_is():
    with pytest.raises(GateAssertionError, match=r"verdict has no gate 'safety'; it has \['json_parse', 'task_accuracy'\]"):
        assert_gate(VERDICT, "safety")
    with pytest.raises(GateAssertionError, match="gate 'json_parse' has no metric 'f1'"):
        assert_gate(VERDICT, "json_parse", metric="f1", min_adapter=0.5)
