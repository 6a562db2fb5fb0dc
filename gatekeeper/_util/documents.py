"""Every document gatekeeper reads (bundle.yaml, recipe.yaml, training.json, ...) goes through here.

One place turns every way a file can be unreadable (missing, a directory, not
UTF-8, not YAML or JSON, a YAML alias bomb) into one error naming the file, the
line where there is one, and the problem. The models built from documents share
``Document``: unknown keys are refused, not ignored, since a misspelt
``learning_rte`` silently falling back to a default is how irreproducible runs happen.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pydantic
import yaml
from pydantic import BaseModel, ConfigDict

from gatekeeper._util.text import shorten
from gatekeeper.errors import GatekeeperError

MAX_EXPANDED_ITEMS = 1_000_000
"""Values a document may hold once YAML aliases are expanded. A few kilobytes of nested
aliases expand to billions; validating or quoting them would run for minutes."""


class Document(BaseModel):
    model_config = ConfigDict(extra="forbid")


def expanded_size(value: Any, limit: int = MAX_EXPANDED_ITEMS) -> int:
    """How many values ``value`` holds with shared (aliased) parts counted each time they occur.

    Memoised by identity, so it takes time in the number of distinct nodes, not expanded ones;
    stops counting past ``limit``.
    """
    sizes: dict[int, int] = {}

    def size(node: Any) -> int:
        if not isinstance(node, (dict, list)):
            return 1
        key = id(node)
        if key not in sizes:
            sizes[key] = limit + 1  # a cycle (a self-referencing alias) counts as too large
            children = node.items() if isinstance(node, dict) else ((None, v) for v in node)
            total = 1
            for k, v in children:
                total += size(k) + size(v) if k is not None else size(v)
                if total > limit:
                    break
            sizes[key] = min(total, limit + 1)
        return sizes[key]

    return size(value)


def read_text(path: Path, error: type[GatekeeperError], what: str = "file") -> str:
    """A file's text as UTF-8, or ``error`` naming the file and why it cannot be read."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{path}: {what} is not UTF-8 text (byte {exc.start} is {exc.object[exc.start:exc.start + 1]!r})") from None
    except FileNotFoundError:
        raise error(f"{path}: {what} not found") from None
    except IsADirectoryError:
        raise error(f"{path}: {what} is a directory, not a file") from None
    except OSError as exc:
        raise error(f"{path}: {what} cannot be read ({exc.strerror or type(exc).__name__})") from None


def read_yaml(path: Path, error: type[GatekeeperError], what: str = "YAML document") -> Any:
    text = read_text(path, error, what)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or shorten(str(exc))
        raise error(f"{path}: malformed YAML{where}: {problem}") from None
    except RecursionError:
        raise error(f"{path}: YAML nested too deeply") from None
    if expanded_size(data) > MAX_EXPANDED_ITEMS:
        raise error(f"{path}: YAML expands to more than {MAX_EXPANDED_ITEMS:,} values (aliases); refused")
    return data


def read_json(path: Path, error: type[GatekeeperError], what: str = "JSON document") -> Any:
    text = read_text(path, error, what)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise error(f"{path}: {what} is not valid JSON (line {exc.lineno}: {exc.msg})") from None
    except RecursionError:
        raise error(f"{path}: JSON nested too deeply") from None


def validation_problem(exc: pydantic.ValidationError) -> str:
    """The first problem pydantic found, as one bounded line naming the field."""
    problem = exc.errors()[0]
    where = ".".join(str(p) for p in problem["loc"])
    message = problem["msg"].removeprefix("Value error, ")
    if problem["type"] == "extra_forbidden":
        return f"unknown key {where!r}"
    if not where:  # a rule across fields names them itself
        return shorten(message)
    return f"field {where!r}: {shorten(message)}"


def validated(model: type[BaseModel], data: Any, source: Path, error: type[GatekeeperError]):
    """``data`` (a document already read from ``source``) as ``model``, or one ``error`` line naming the field."""
    if not isinstance(data, dict):
        raise error(f"{source}: expected a mapping of fields, found {type(data).__name__}")
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as exc:
        raise error(f"{source}: {validation_problem(exc)}") from None
