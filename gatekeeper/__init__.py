"""gatekeeper: decide whether a fine-tuned adapter may ship.

The public surface for gate authors and test authors. Importing it is cheap:
no torch, no transformers; model code loads only when a model is needed.

A gate::

    from gatekeeper import GateResult, Generate, Metric, gate

    @gate("my_gate")
    class MyGate:
        def requests(self, ctx): ...
        def evaluate(self, ctx, responses) -> GateResult: ...

A test: ``assert_gate(verdict, "json_parse", min_adapter={"valid_rate": 0.95})``;
``gatekeeper.testing.FakeRuntime`` answers a gate's requests without a model.
"""

__version__ = "0.1.0"

from gatekeeper.bundle.manifest import messages_for  # noqa: E402  (after __version__: modules below read it)
from gatekeeper.gating.context import GateContext  # noqa: E402
from gatekeeper.gating.engine import Responses  # noqa: E402
from gatekeeper.gating.registry import gate  # noqa: E402
from gatekeeper.gating.result import Example, Figure, GateResult, Metric, Paired  # noqa: E402
from gatekeeper.runtime.requests import (  # noqa: E402
    Choose,
    CountTokens,
    Divergence,
    ExportMerged,
    Generate,
    LogLik,
    Timing,
)
from gatekeeper.verdict.assertions import GateAssertionError, assert_gate  # noqa: E402
from gatekeeper.verdict.model import Verdict  # noqa: E402

__all__ = [
    "__version__", "gate", "GateContext", "GateResult", "Metric", "Example", "Paired", "Figure", "Responses",
    "Generate", "LogLik", "Choose", "CountTokens", "Divergence", "Timing", "ExportMerged", "messages_for",
    "assert_gate", "GateAssertionError", "Verdict",
]
