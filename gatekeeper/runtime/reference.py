"""A serving engine under check, with the ``hf`` reference runtime beside it for the ``reference_*`` sides.

Gates ask the serving engine for ``base`` and ``adapter`` as always; a gate that
compares the engine with the reference (``serving_parity``) also asks
``reference_base`` and ``reference_adapter``, which the reference answers as its
own ``base`` and ``adapter``. Its identity is the reference's own, so answers a
plain ``hf`` check cached are reused, and its weights load only if such a gate asks.
"""

from __future__ import annotations

from gatekeeper.runtime.protocol import ANSWERED_BY, Capabilities, Runtime
from gatekeeper.runtime.requests import REFERENCE_SIDES, Side


class WithReference:
    def __init__(self, serving: Runtime, reference: Runtime):
        self.serving, self.reference = serving, reference
        self.name, self.dtype_name = serving.name, serving.dtype_name

    def _route(self, side: Side) -> tuple[Runtime, Side]:
        if side in REFERENCE_SIDES:
            return self.reference, REFERENCE_SIDES[side]
        return self.serving, side

    def capabilities(self) -> Capabilities:
        served, ref = self.serving.capabilities(), self.reference.capabilities()
        sides = {}
        for kind in ANSWERED_BY:
            mine = set(served.sides.get(kind, frozenset()))
            mine |= {r for r, own in REFERENCE_SIDES.items() if ref.answers(kind, own)}
            sides[kind] = frozenset(mine)
        return Capabilities(sides, served.why_not)

    def identity(self, side: Side) -> dict:
        runtime, own = self._route(side)
        return runtime.identity(own)

    def profile(self) -> dict | None:
        return self.serving.profile()

    def _answer(self, method: str, side: Side, requests: list, progress):
        runtime, own = self._route(side)
        return getattr(runtime, method)(own, requests, progress)

    # The request methods of the protocol, each routed by side.
    def generate(self, side, requests, progress=None):
        return self._answer("generate", side, requests, progress)

    def loglik(self, side, requests, progress=None):
        return self._answer("loglik", side, requests, progress)

    def choose(self, side, requests, progress=None):
        return self._answer("choose", side, requests, progress)

    def count_tokens(self, side, requests, progress=None):
        return self._answer("count_tokens", side, requests, progress)

    def divergence(self, side, requests, progress=None):
        return self._answer("divergence", side, requests, progress)

    def timing(self, side, requests, progress=None):
        return self._answer("timing", side, requests, progress)

    def export_merged(self, side, requests, progress=None):
        return self._answer("export_merged", side, requests, progress)
