"""The verdict document: its committed schema and backward compatibility."""

import json
from pathlib import Path

from gatekeeper.gating.result import GateResult
from gatekeeper.verdict.model import Verdict

SCHEMAS = Path(__file__).parent.parent / "gatekeeper" / "report" / "schemas"


def test_verdict_schema_export_is_current():
    """The committed JSON Schema must match the pydantic model."""
    assert json.loads((SCHEMAS / "verdict.schema.json").read_text()) == Verdict.model_json_schema()


def test_a_gate_result_written_before_outcomes_existed_still_loads():
    old = {"name": "json_parse", "status": "passed", "rule": "adapter parse+valid rate >= 0.95", "metrics": []}
    assert GateResult.model_validate(old).outcomes is None
