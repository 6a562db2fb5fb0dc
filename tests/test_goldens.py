import json

import pytest

from gatekeeper.bundle.goldens import Contract, load_jsonl, parse_strict_json
from gatekeeper.errors import GoldenSetError
from tests.conftest import CONTRACT


def _write(tmp_path, lines):
    path = tmp_path / "set.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


GOOD = json.dumps({"id": "a", "input": "x", "expected": {"priority": "low", "reason": "cosmetic only"}})


@pytest.mark.parametrize(
    "lines, line, problem",
    [
        ([GOOD, "{not json"], 2, "not valid JSON"),
        ([GOOD, json.dumps({"id": "b", "input": "y"})], 2, "missing field 'expected'"),
        ([GOOD, GOOD], 2, "duplicate id 'a' (first on line 1)"),
        (["[1, 2]"], 1, "must be a JSON object"),
    ],
)
def test_bad_lines_are_reported_with_file_and_line(tmp_path, lines, line, problem):
    path = _write(tmp_path, lines)
    with pytest.raises(GoldenSetError) as info:
        load_jsonl(path)
    assert info.value.line == line
    assert str(info.value).startswith(f"{path}:{line}: ")
    assert problem in str(info.value)


def test_contract_names_the_violation():
    contract = Contract.load(CONTRACT)
    assert contract.label_field == "priority"
    assert contract.labels == ["critical", "high", "medium", "low"]
    assert contract.violation({"priority": "high", "reason": "payroll blocked"}) is None
    assert "urgent" in contract.violation({"priority": "urgent", "reason": "payroll blocked"})
    assert "extra" in contract.violation({"priority": "high", "reason": "payroll blocked", "extra": 1}).lower() or \
        "additional" in contract.violation({"priority": "high", "reason": "payroll blocked", "extra": 1}).lower()
    assert contract.violation({"priority": "high"}) is not None


def test_expected_answers_must_keep_the_contract(tmp_path):
    bad = json.dumps({"id": "b", "input": "y", "expected": {"priority": "urgent", "reason": "r" * 5}})
    path = _write(tmp_path, [GOOD, bad])
    with pytest.raises(GoldenSetError, match=r":2: expected answer breaks the contract"):
        Contract.load(CONTRACT).check_items(load_jsonl(path), path)


@pytest.mark.parametrize(
    "text, ok",
    [
        ('{"priority": "low", "reason": "typo"}', True),
        ('  {"priority": "low", "reason": "typo"}\n', True),
        ('```json\n{"priority": "low"}\n```', False),
        ('{"priority": "low"} and more', False),
        ("The priority is low.", False),
    ],
)
def test_strict_json_parsing(text, ok):
    assert (parse_strict_json(text).error is None) is ok
