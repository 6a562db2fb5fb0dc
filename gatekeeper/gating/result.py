"""What a gate returns: its status, the rule, metrics for base and adapter, paired statistics, evidence.

A failing gate is a result (``failed``); a crashing gate is an ``error``; a gate
that does not apply to the bundle, or whose requests the runtime cannot answer,
is ``skipped`` with the reason, never ``passed``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from gatekeeper._util.documents import Document


class Metric(Document):
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


class Paired(Document):
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


class Example(Document):
    """One item shown as evidence, with raw outputs."""

    id: str
    input: str
    expected: Any = None
    base_output: str | None = None
    adapter_output: str | None = None
    base_ok: bool | None = None
    adapter_ok: bool | None = None
    note: str = ""


class Figure(Document):
    """A plot the report draws from numbers the gate measured: the verdict keeps the numbers, the
    report the picture (``gatekeeper.report.plots``), so a changed plot is a changed number in a diff."""

    kind: Literal["reliability", "loss_curves"]
    """``reliability``: ``data`` has ``base`` and ``adapter``, each a list of bins
    (``low``, ``high``, ``count``, ``confidence``, ``accuracy``). ``loss_curves``: ``data`` has
    ``val_curve`` and ``train_curve`` ([step, loss] pairs), ``selected_step`` and optionally
    ``window`` ([first step, last step] of the span a trend was judged on)."""
    caption: str = ""
    data: dict[str, Any] = Field(default_factory=dict)


Status = Literal["passed", "failed", "skipped", "error"]


class GateResult(Document):
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
    figures: list[Figure] = Field(default_factory=list)
    """Plots of this gate's evidence, drawn in report.html under its metrics."""
    error: str | None = None
    skip_reason: str | None = None
    """Why a ``skipped`` gate was not evaluated: the adapter kind it does not judge, or the request
    kinds this runtime cannot answer."""
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
