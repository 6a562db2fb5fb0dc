"""Gate protocol, the ``@gate`` decorator and the ``gatekeeper.gates`` entry points.

A gate is a class whose ``__init__`` keyword arguments are its parameters.
Built-in gates and third-party ones register the same way: an entry point in
the ``gatekeeper.gates`` group pointing at the class. Entry points are loaded
lazily, on the first lookup that misses. Nothing here imports torch, so
listing gates stays fast.
"""

from __future__ import annotations

import difflib
import inspect
import warnings
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

import pydantic

from gatekeeper._util.text import first_line, quote
from gatekeeper.errors import (
    BundleError,
    GatekeeperWarning,
    GateParameterError,
    UnknownGateError,
)

if TYPE_CHECKING:
    from gatekeeper.bundle.manifest import Bundle
    from gatekeeper.gating.engine import GateContext, Responses
    from gatekeeper.gating.result import GateResult
    from gatekeeper.runtime.requests import Request, Side

ENTRY_POINT_GROUP = "gatekeeper.gates"


@runtime_checkable
class Gate(Protocol):
    name: ClassVar[str]
    sides: ClassVar[tuple[Side, ...]]
    # Optional, and so not part of the protocol's isinstance check: ``adapter_kinds``, the
    # bundle adapter kinds (lora, delta, full) the gate can judge. On any other kind the
    # engine reports the gate as not applicable instead of asking it (engine.applies).

    def requests(self, ctx: GateContext) -> list[Request]:
        """What the gate needs answered, on every side in ``sides``."""

    def evaluate(self, ctx: GateContext, responses: Responses) -> GateResult:
        """Turn responses into a result; a failing gate returns, it does not raise."""


@dataclass(frozen=True)
class GateInfo:
    name: str
    cls: type
    description: str
    source: str  # the module that defined it

    @property
    def parameters(self) -> dict[str, inspect.Parameter]:
        params = inspect.signature(self.cls.__init__, eval_str=True).parameters
        usable = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        return {k: p for k, p in params.items() if k != "self" and p.kind in usable}

    def _params_model(self) -> type[pydantic.BaseModel]:
        fields = {
            name: (
                Any if p.annotation is inspect.Parameter.empty else p.annotation,
                ... if p.default is inspect.Parameter.empty else p.default,
            )
            for name, p in self.parameters.items()
        }
        # strict: a bundle that says min_rate: "0.9" has a typo worth reporting, not coercing
        config = pydantic.ConfigDict(extra="forbid", strict=True)
        return pydantic.create_model(f"{self.cls.__name__}Params", __config__=config, **fields)

    def build(self, params: dict[str, Any]) -> Gate:
        """Instantiate with parameters checked against the signature (before any model loads)."""
        unknown = sorted(set(params) - set(self.parameters))
        if unknown:
            raise GateParameterError(
                f"gate {self.name!r} has no parameter {unknown[0]!r}; it takes: {', '.join(self.parameters) or 'nothing'}"
            )
        try:
            checked = self._params_model()(**params)
        except pydantic.ValidationError as exc:
            problem = exc.errors()[0]
            where = ".".join(str(p) for p in problem["loc"])
            raise GateParameterError(
                f"gate {self.name!r}, parameter {where!r}: {problem['msg']} (got {quote(problem.get('input'))})"
            ) from None
        try:
            return self.cls(**{name: getattr(checked, name) for name in self.parameters})
        except ValueError as exc:  # a gate refusing a value in __init__ is bad input too, not a crash
            raise GateParameterError(f"gate {self.name!r}: {exc}") from None


_REGISTRY: dict[str, GateInfo] = {}
_BROKEN: dict[str, str] = {}  # entry point name -> why it could not be imported
_entry_points_loaded = False


def gate(name: str, *, description: str | None = None):
    """Register a gate class under ``name``; a second gate of the same name is an error."""

    def register(cls):
        if name in _REGISTRY and _REGISTRY[name].cls is not cls:
            raise ValueError(f"gate {name!r} is already registered by {_REGISTRY[name].source}")
        missing = [m for m in ("requests", "evaluate") if not callable(getattr(cls, m, None))]
        if missing:
            raise TypeError(f"gate {name!r} must define {', '.join(missing)}()")
        cls.name = name
        cls.sides = getattr(cls, "sides", ("base", "adapter"))
        doc = description or (inspect.getdoc(cls) or "").split("\n")[0]
        _REGISTRY[name] = GateInfo(name, cls, doc, cls.__module__)
        return cls

    return register


class BrokenGateWarning(GatekeeperWarning):
    """An installed gate package whose entry point failed to import: it is skipped, the rest still work."""


def load_entry_points() -> None:
    """Import every installed gate once; one that fails to import is reported by name and skipped."""
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            cls = ep.load()  # importing the module runs its @gate decorator
        except Exception as exc:  # a third party's bug must not break listing or checks that do not use it
            _BROKEN[ep.name] = f"{ep.value} failed to import ({first_line(exc)})"
            warnings.warn(f"gate {ep.name!r} is skipped: {_BROKEN[ep.name]}", BrokenGateWarning, stacklevel=2)
            continue
        if ep.name not in _REGISTRY:  # a plain class without the decorator
            gate(ep.name)(cls)


def get_gate(name: str) -> GateInfo:
    if name not in _REGISTRY:
        load_entry_points()
    if name in _BROKEN:
        raise UnknownGateError(f"gate {name!r} is installed but cannot be used: {_BROKEN[name]}")
    if name not in _REGISTRY:
        available = sorted(_REGISTRY)
        close = difflib.get_close_matches(name, available, n=3, cutoff=0.5)
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise UnknownGateError(f"unknown gate {name!r}.{hint} Available: {', '.join(available) or 'none'}")
    return _REGISTRY[name]


def available_gates() -> list[GateInfo]:
    load_entry_points()
    return [_REGISTRY[name] for name in sorted(_REGISTRY)]


def build_gates(manifest: Bundle) -> list[tuple[Any, bool]]:
    """Instantiate every gate with its parameters checked; (gate, required) pairs."""
    built = []
    seen: set[str] = set()
    for spec in manifest.gates:
        reports_as = spec.id or spec.name
        if reports_as in seen:
            hint = "" if spec.id else "; give the second one an id to run it twice"
            raise BundleError(f"gate {reports_as!r} is listed twice{hint}")
        seen.add(reports_as)
        instance = get_gate(spec.name).build(spec.params)
        if spec.id:
            instance.name = spec.id  # results and reports carry the instance's own name
        built.append((instance, spec.required))
    return built
