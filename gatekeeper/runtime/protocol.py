"""The protocol every runtime implements: its declaration is the whole contract.

The engine, the response cache and the gates use nothing of a runtime that is
not declared here, so a second engine (a server behind an OpenAI-compatible
API, vLLM in-process) is written against this module alone. A runtime says in
``capabilities()`` which request kinds it answers for which sides; a gate
whose requests it cannot answer is reported ``skipped`` with the reason, and
the runtime is never asked.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from gatekeeper.runtime.requests import (
    REFERENCE_SIDES,
    Choose,
    CountTokens,
    Divergence,
    DivergenceResult,
    ExportMerged,
    Generate,
    LogLik,
    LogLikResult,
    Progress,
    RequestKind,
    Side,
    Timing,
    TimingResult,
)

# request kind -> the runtime method that answers a list of them for one side
ANSWERED_BY: dict[RequestKind, str] = {
    "generate": "generate", "loglik": "loglik", "choose": "choose", "tokens": "count_tokens",
    "divergence": "divergence", "timing": "timing", "export": "export_merged",
}


@dataclass(frozen=True)
class Capabilities:
    """Which request kinds a runtime answers, for which sides, and why not where it does not."""

    sides: dict[RequestKind, frozenset[Side]]
    why_not: dict[RequestKind, str] = field(default_factory=dict)

    def answers(self, kind: RequestKind, side: Side) -> bool:
        return side in self.sides.get(kind, frozenset())

    def reason(self, kind: RequestKind, side: Side) -> str:
        """Why ``kind`` on ``side`` is not answered (empty when it is)."""
        if self.answers(kind, side):
            return ""
        if side in REFERENCE_SIDES:
            return ("the check runs on the hf reference runtime itself, so there is no serving engine to compare "
                    "with it (check with --runtime openai or vllm)")
        if kind in self.why_not:
            return self.why_not[kind]
        if kind in self.sides:
            return f"it answers {kind!r} requests only for the {', '.join(sorted(self.sides[kind]))} side"
        return f"it does not answer {kind!r} requests"


@runtime_checkable
class Runtime(Protocol):
    name: str
    """The engine, as reports and cache keys name it (``hf``, ``openai``, ``vllm``)."""
    dtype_name: str
    """The dtype it really computes in: gates that judge numerics (merge tolerances) read it."""

    def capabilities(self) -> Capabilities:
        """What it can answer; known before any model loads or any server is asked for a token."""

    def identity(self, side: Side) -> dict:
        """Everything besides the request that decides a response (engine and version, model hashes, template,
        dtype): the response cache's key, so one engine's answers are never served for another's."""

    def profile(self) -> dict | None:
        """The chat template, special and stop tokens it serves with, where it knows them."""

    def generate(self, side: Side, requests: list[Generate], progress: Progress | None = None) -> list[str]: ...

    def loglik(self, side: Side, requests: list[LogLik], progress: Progress | None = None) -> list[LogLikResult]: ...

    def choose(self, side: Side, requests: list[Choose], progress: Progress | None = None) -> list[list[float]]: ...

    def count_tokens(self, side: Side, requests: list[CountTokens], progress: Progress | None = None) -> list[int]: ...

    def divergence(self, side: Side, requests: list[Divergence], progress: Progress | None = None) -> list[DivergenceResult]: ...

    def timing(self, side: Side, requests: list[Timing], progress: Progress | None = None) -> list[TimingResult]: ...

    def export_merged(self, side: Side, requests: list[ExportMerged], progress: Progress | None = None) -> list[dict]: ...
