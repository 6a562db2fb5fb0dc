"""The verdict: every gate's result plus the record of what was checked.

``verdict.json`` is the source of truth; JUnit and HTML render from it. All
fields are deterministic for the same inputs except ``timing``, which is kept
in one section at the end.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from gatekeeper._util.documents import Document
from gatekeeper.errors import ExitCode
from gatekeeper.gating.result import GateResult

VERDICT_SCHEMA_VERSION = 1


class BundleSummary(Document):
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
    provenance: dict[str, dict[str, Any]] = Field(default_factory=dict)
    """Golden set name -> its declared source, licence and customer data, as the manifest gives them."""
    training: dict[str, Any] = Field(default_factory=dict)
    """Summary of the training record (steps, best step, validation curve)."""


class Verdict(Document):
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
    """0 only when a required gate was evaluated and none failed: skipping every required gate says
    nothing about the candidate, and a release gate with nothing checked must not say ship."""
    if any(r.status == "error" and r.required for r in results):
        return ExitCode.INTERNAL_ERROR
    if any(r.status == "failed" and r.required for r in results):
        return ExitCode.GATE_FAILED
    if not any(r.status == "passed" and r.required for r in results):
        return ExitCode.GATE_FAILED
    return ExitCode.PASSED
