"""Testing helpers for gate and test authors: a runtime that answers from tables, with no model.

Not used by gatekeeper itself. A gate's unit test builds a ``FakeRuntime`` whose
sides answer by a function of the user text, runs the engine over it, and
asserts on the ``GateResult``; the real runtimes are tested end to end.
"""

from __future__ import annotations

from typing import Callable

from gatekeeper.runtime.protocol import ANSWERED_BY, Capabilities
from gatekeeper.runtime.requests import (
    REFERENCE_SIDES,
    DivergenceResult,
    LogLikResult,
    Side,
    TimingResult,
)

ALL_SIDES = frozenset({"base", "adapter", "merged"})


class FakeRuntime:
    """A runtime for unit tests: answers come from tables keyed by side and user text."""

    dtype_name = "float32"  # what gates that judge numerics (merge_equivalence) assume it computes in

    def __init__(self, answers: dict[Side, Callable[[str], str]], name: str = "fake",
                 latency_ms: dict[Side, float] | None = None, unanswered: dict[str, str] | None = None,
                 scores: dict[Side, Callable[[str, tuple[str, ...]], list[float]]] | None = None):
        self.answers = answers
        self.scores = scores or {}
        self.unanswered = unanswered or {}
        self.name = name
        self.latency_ms = latency_ms or {}
        self.calls: list[tuple[Side, int]] = []

    def capabilities(self) -> Capabilities:
        """Every kind on base, adapter and merged, and on the reference sides ``answers`` names, unless
        ``unanswered`` (kind -> reason) says otherwise."""
        sides = ALL_SIDES | (set(self.answers) & set(REFERENCE_SIDES))
        return Capabilities({kind: frozenset(sides) for kind in ANSWERED_BY if kind not in self.unanswered},
                            dict(self.unanswered))

    def identity(self, side: Side) -> dict:
        return {"runtime": "fake", "name": self.name, "side": side}

    def profile(self) -> dict | None:
        return None

    def generate(self, side, requests, progress=None):
        self.calls.append((side, len(requests)))
        out = [self.answers[side](dict(r.messages)["user"]) for r in requests]
        if progress:
            progress(len(requests))
        return out

    def loglik(self, side, requests, progress=None):
        self.calls.append((side, len(requests)))
        results = []
        for r in requests:
            answer = self.answers[side](dict(r.messages).get("user", ""))
            same = answer == r.continuation
            results.append(LogLikResult(-0.1 if same else -5.0, max(1, len(r.continuation.split())), same))
        if progress:
            progress(len(requests))
        return results

    def choose(self, side, requests, progress=None):
        """The option the side's answer starts with scores -0.1, every other option -5; a side with a
        ``scores`` function (user text, options -> one log-probability per option) answers with it instead."""
        self.calls.append((side, len(requests)))
        results = []
        for r in requests:
            user = dict(r.messages).get("user", "")
            if side in self.scores:
                results.append([float(s) for s in self.scores[side](user, r.options)])
                continue
            answer = self.answers[side](user)
            results.append([-0.1 if answer.startswith(option) else -5.0 for option in r.options])
        if progress:
            progress(len(requests))
        return results

    def count_tokens(self, side, requests, progress=None):
        """One token per whitespace-separated word, plus one for the end of turn."""
        self.calls.append((side, len(requests)))
        counts = [sum(len(c.split()) for _, c in r.messages) + len(r.answer.split()) + 1 for r in requests]
        if progress:
            progress(len(requests))
        return counts

    def divergence(self, side, requests, progress=None):
        """The merged side answers with ``answers["merged"]`` (the adapter's when absent); unequal answers drift."""
        self.calls.append((side, len(requests)))
        merged = self.answers.get("merged", self.answers["adapter"])
        results = []
        for r in requests:
            user = dict(r.messages)["user"]
            mine, reference = merged(user), self.answers["adapter"](user)
            drift = 0.0 if mine == reference else 1.0
            results.append(DivergenceResult(mine, reference, max(1, len(reference.split())), drift, drift / 2,
                                            drift / 2, drift, drift / 2, 1.0 - drift / 2))
        if progress:
            progress(len(requests))
        return results

    def timing(self, side, requests, progress=None):
        """A fixed latency per side (10 ms unless given), one token per millisecond."""
        self.calls.append((side, len(requests)))
        ms = self.latency_ms.get(side, 10.0)
        results = [TimingResult([ms] * r.repeats, [ms / r.max_new_tokens] * r.repeats, r.max_new_tokens,
                                100.0, "process RSS", "fake") for r in requests]
        if progress:
            progress(len(requests))
        return results

    def export_merged(self, side, requests, progress=None):
        """Writes nothing: there is no model to write."""
        self.calls.append((side, len(requests)))
        return [{} for _ in requests]
