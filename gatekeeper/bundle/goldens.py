"""Golden sets (JSONL) and output contracts (JSON Schema).

A golden set line is ``{"id": ..., "input": ..., "expected": ...}``, with any
further keys kept as the item's ``extra`` (a ``source`` or ``group`` the
overfitting gate splits items by). Every problem is reported with the file and
line it was found on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import jsonschema

from gatekeeper.errors import GoldenSetError

REQUIRED_FIELDS = ("id", "input", "expected")


@dataclass(frozen=True)
class GoldenItem:
    id: str
    input: str
    expected: Any
    line: int
    extra: dict[str, Any] = field(default_factory=dict, hash=False)
    """The line's other keys (``source``, ``group``, ...), as written; empty when it has none.
    Left out of the hash, so an item hashes as it did before it had extras."""


def _json_objects(path: Path):
    """(line number, object) for every non-blank line of a JSONL file; stops at the first bad one."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise GoldenSetError(path, None, "file not found") from None
    except UnicodeDecodeError as exc:
        raise GoldenSetError(path, None, f"not UTF-8 ({exc.reason})") from None
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise GoldenSetError(path, number, f"not valid JSON ({exc.msg})") from None
        if not isinstance(record, dict):
            raise GoldenSetError(path, number, "a line must be a JSON object")
        yield number, record


def load_jsonl(path: str | Path) -> list[GoldenItem]:
    path = Path(path)
    items: list[GoldenItem] = []
    first_seen: dict[str, int] = {}
    for number, record in _json_objects(path):
        missing = [name for name in REQUIRED_FIELDS if name not in record]
        if missing:
            raise GoldenSetError(path, number, f"missing field {missing[0]!r}")
        if not isinstance(record["id"], str) or not isinstance(record["input"], str):
            raise GoldenSetError(path, number, "'id' and 'input' must be strings")
        if record["id"] in first_seen:
            raise GoldenSetError(path, number, f"duplicate id {record['id']!r} (first on line {first_seen[record['id']]})")
        first_seen[record["id"]] = number
        extra = {key: value for key, value in record.items() if key not in REQUIRED_FIELDS}
        items.append(GoldenItem(record["id"], record["input"], record["expected"], number, extra))
    if not items:
        raise GoldenSetError(path, None, "no items")
    return items


PREFERENCE_FIELDS = ("id", "prompt", "chosen", "rejected")
PREFERENCES = "preferences"
"""The golden-set name a preference set goes by in a recipe's data and a bundle's manifest."""


def load_preferences(path: str | Path) -> list[GoldenItem]:
    """A preference set: lines of ``{"id", "prompt", "chosen", "rejected"}``, checked as golden sets are.

    Each pair becomes a golden item whose input is the prompt and whose expected value is
    ``{"chosen": ..., "rejected": ...}``, so the gates that read inputs (contamination) read it too.
    A pair whose two answers are the same text is refused: it has no preference to teach.
    """
    path = Path(path)
    items: list[GoldenItem] = []
    first_seen: dict[str, int] = {}
    for number, record in _json_objects(path):
        missing = [name for name in PREFERENCE_FIELDS if name not in record]
        if missing:
            raise GoldenSetError(path, number, f"missing field {missing[0]!r} (a preference pair has "
                                               f"{', '.join(PREFERENCE_FIELDS)})")
        unknown = sorted(set(record) - set(PREFERENCE_FIELDS))
        if unknown:
            raise GoldenSetError(path, number, f"unknown field {unknown[0]!r}")
        empty = [name for name in PREFERENCE_FIELDS if not isinstance(record[name], str) or not record[name].strip()]
        if empty:
            raise GoldenSetError(path, number, f"{empty[0]!r} must be a non-empty string")
        if record["chosen"].strip() == record["rejected"].strip():
            raise GoldenSetError(path, number, "'chosen' and 'rejected' are the same text")
        if record["id"] in first_seen:
            raise GoldenSetError(path, number, f"duplicate id {record['id']!r} (first on line {first_seen[record['id']]})")
        first_seen[record["id"]] = number
        items.append(GoldenItem(record["id"], record["prompt"],
                                {"chosen": record["chosen"], "rejected": record["rejected"]}, number))
    if not items:
        raise GoldenSetError(path, None, "no items")
    return items


def load_golden_set(name: str, path: str | Path) -> list[GoldenItem]:
    """The golden set ``name`` from ``path``: the preference set in its own format, any other as golden items."""
    return load_preferences(path) if name == PREFERENCES else load_jsonl(path)


@dataclass(frozen=True)
class Contract:
    """The output contract: a JSON Schema, and which property is the label."""

    schema: dict
    source: str = "<contract>"

    @classmethod
    def load(cls, path: str | Path) -> Contract:
        path = Path(path)
        try:
            schema = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise GoldenSetError(path, None, "contract file not found") from None
        except UnicodeDecodeError as exc:
            raise GoldenSetError(path, None, f"contract is not UTF-8 ({exc.reason})") from None
        except json.JSONDecodeError as exc:
            raise GoldenSetError(path, exc.lineno, f"contract is not valid JSON ({exc.msg})") from None
        except RecursionError:
            raise GoldenSetError(path, None, "contract nested too deeply") from None
        if not isinstance(schema, (dict, bool)):
            raise GoldenSetError(path, None, f"a contract is a JSON Schema object, not a {type(schema).__name__}")
        try:
            jsonschema.Draft202012Validator.check_schema(schema)
        except jsonschema.SchemaError as exc:
            raise GoldenSetError(path, None, f"not a valid JSON Schema: {exc.message}") from None
        return cls(schema, str(path))

    @cached_property
    def _validator(self) -> jsonschema.Draft202012Validator:
        return jsonschema.Draft202012Validator(self.schema)

    @cached_property
    def label_field(self) -> str | None:
        """The property whose value is one of a closed set of labels."""
        explicit = self.schema.get("x-label-field")
        if explicit:
            return explicit
        for name, spec in self.schema.get("properties", {}).items():
            if isinstance(spec, dict) and "enum" in spec:
                return name
        return None

    @property
    def labels(self) -> list[str]:
        if self.label_field is None:
            return []
        return list(self.schema["properties"][self.label_field].get("enum", []))

    def violation(self, value: Any) -> str | None:
        """Why a value breaks the contract, or None when it keeps it."""
        error = jsonschema.exceptions.best_match(self._validator.iter_errors(value))
        if error is None:
            return None
        where = "/".join(str(p) for p in error.absolute_path)
        return f"{where}: {error.message}" if where else error.message

    def check_items(self, items: list[GoldenItem], path: str | Path) -> None:
        """Every expected answer in a set must itself keep the contract."""
        for item in items:
            problem = self.violation(item.expected)
            if problem:
                raise GoldenSetError(path, item.line, f"expected answer breaks the contract: {problem}")


@dataclass(frozen=True)
class ParsedOutput:
    value: Any
    error: str | None  # why it is not a JSON value, or None


def parse_strict_json(text: str) -> ParsedOutput:
    """Strict: the whole output, bar surrounding whitespace, must be one JSON value."""
    try:
        return ParsedOutput(json.loads(text.strip()), None)
    except json.JSONDecodeError as exc:
        return ParsedOutput(None, f"not JSON: {exc.msg} at char {exc.pos}")


def answer_text(expected: Any) -> str:
    """How an expected answer is written as a training target: compact, key order kept."""
    return json.dumps(expected, ensure_ascii=False)
