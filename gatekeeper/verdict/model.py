"""The verdict: every gate's result plus the record of what was checked.

``verdict.json`` is the source of truth; JUnit and HTML render from it. All
fields are deterministic for the same inputs except ``timing``, which is kept
in one section at the end.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from gatekeeper.errors import ExitCode

VERDICT_SCHEMA_VERSION = 1


class _Doc(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Metric(_Doc):
    """One measured value. A gate that judges data rather than a model (contamination,
    dataset_audit) puts the value under ``adapter``, the candidate whose data it is,
    and leaves ``base`` and ``delta`` None."""

    name: str
    """What is measured, e.g. ``valid_rate``."""
    base: float | None = None
    """The base model's value (None when the gate measures the adapter alone)."""
    adapter: float | None = None
    """The candidate's value."""
    delta: float | None = None
    """adapter - base."""
    threshold: float | None = None
    """The value the rule compares against, if any."""
    higher_is_better: bool = True
    unit: str = ""


class Paired(_Doc):
    """A paired comparison of base and adapter on the same items."""

    n: int
    test: str = "exact McNemar (two-sided)"
    p_value: float
    ci_level: float = 0.95
    ci_low: float
    ci_high: float
    flipped_to_fail: list[str]
    """Items the base got right and the adapter got wrong."""
    flipped_to_pass: list[str]
    """Items the base got wrong and the adapter got right."""
    too_small: str | None = None
    """Why the set cannot support the rule, when it cannot."""


class Example(_Doc):
    """One item shown as evidence, with raw outputs."""

    id: str
    input: str
    expected: Any = None
    base_output: str | None = None
    adapter_output: str | None = None
    base_ok: bool | None = None
    adapter_ok: bool | None = None
    note: str = ""


Status = Literal["passed", "failed", "error"]


class GateResult(_Doc):
    name: str
    required: bool = True
    """A required gate that fails fails the check; an advisory one is only reported."""
    status: Status
    rule: str
    """The rule in words, with its thresholds."""
    summary: str = ""
    metrics: list[Metric] = Field(default_factory=list)
    paired: Paired | None = None
    evidence: list[Example] = Field(default_factory=list)
    details: dict[str, Any] = Field(default_factory=dict)
    error: str | None = None
    outcomes: dict[str, bool] | None = None
    """Item id -> whether the adapter's answer met the gate's per-item criterion, in set order.

    Two candidates checked on the same golden set can then be compared item by
    item (``gatekeeper diff`` lists the items whose outcome flipped). None for
    gates that do not judge items one by one, and in verdicts written before
    this field existed.
    """

    def metric(self, name: str) -> Metric:
        for metric in self.metrics:
            if metric.name == name:
                return metric
        raise KeyError(f"gate {self.name!r} has no metric {name!r}; it has {[m.name for m in self.metrics]}")

    @property
    def delta(self) -> float | None:
        """The delta of the gate's headline (first) metric."""
        return self.metrics[0].delta if self.metrics else None


class BundleSummary(_Doc):
    path: str
    name: str
    version: int
    manifest_sha256: str
    base: str
    base_sha256: str
    adapter_sha256: str
    tokenizer_sha256: str
    chat_template_sha256: str
    golden_sets: dict[str, str]
    """Golden set name -> sha256."""
    signature: str = "unsigned"
    training: dict[str, Any] = Field(default_factory=dict)
    """Summary of the training record (steps, best step, validation curve)."""


class Verdict(_Doc):
    schema_version: Literal[1] = VERDICT_SCHEMA_VERSION
    gatekeeper_version: str
    passed: bool
    exit_code: int
    bundle: BundleSummary
    gates: list[GateResult]
    environment: dict[str, Any]
    timing: dict[str, Any] = Field(default_factory=dict)
    """Wall times and cache counts: the only part that differs between identical checks."""

    def gate(self, name: str) -> GateResult:
        for result in self.gates:
            if result.name == name:
                return result
        raise KeyError(f"verdict has no gate {name!r}; it has {[g.name for g in self.gates]}")


def exit_code_for(results: list[GateResult]) -> ExitCode:
    if any(r.status == "error" and r.required for r in results):
        return ExitCode.INTERNAL_ERROR
    if any(r.status == "failed" and r.required for r in results):
        return ExitCode.GATE_FAILED
    return ExitCode.PASSED
