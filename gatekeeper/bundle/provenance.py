"""Data provenance: what a bundle declares about its data sets, and the rules a declaration must keep.

A bundle's ``provenance`` (``bundle.yaml``, signed with the rest of the manifest)
says per golden set where it came from, its licence and whether it holds
customer data. ``DataRules`` is one set of rules over such a declaration; the
``dataset_audit`` gate takes them as parameters and a release policy
(``gatekeeper.release.policy``) per channel, so both judge a declaration the
same way and say the same thing about it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import Field

from gatekeeper._util.documents import Document
from gatekeeper.bundle.manifest import LICENCE_PATTERN, Bundle, DataProvenance

FIELDS = ("source", "licence", "customer_data")
TRAINING_SETS = ("train", "validation", "rehearsal")
"""The sets training reads (``validation`` picks the checkpoint): what the rules judge by default."""
UNDECLARED = "undeclared"
Licence = Annotated[str, Field(pattern=LICENCE_PATTERN)]


class DataRules(Document):
    """Rules over the declared provenance of the sets named in ``sets`` (default: the training sets)."""

    allowed_licences: list[Licence] | None = None
    """Every judged set declares a licence from this list (compared case-insensitively)."""
    customer_data: bool | None = None
    """``false``: every judged set declares ``customer_data: false``. ``true`` or left out: no rule."""
    require_declared: bool = False
    """Every judged set declares all of ``source``, ``licence`` and ``customer_data``."""
    sets: list[str] | None = Field(None, min_length=1)
    """The sets judged; default ``train``, ``validation`` and ``rehearsal``, those the bundle has."""

    @property
    def any(self) -> bool:
        return self.allowed_licences is not None or self.customer_data is False or self.require_declared

    def describe(self) -> str:
        """The rules as one phrase, for a gate's rule line."""
        parts = []
        if self.allowed_licences is not None:
            parts.append(f"licence in [{', '.join(self.allowed_licences)}]")
        if self.customer_data is False:
            parts.append("no customer data")
        if self.require_declared:
            parts.append("source, licence and customer data declared")
        return ", ".join(parts)


@dataclass(frozen=True)
class Breach:
    """One set breaking one rule."""

    set: str
    rule: str
    """``allowed_licences``, ``customer_data`` or ``require_declared``."""
    problem: str

    def __str__(self) -> str:
        return f"set {self.set!r} {self.problem}"


def _licences(rules: DataRules) -> str:
    return f"[{', '.join(rules.allowed_licences or [])}]"


def breaches(declaration: Mapping[str, DataProvenance], sets: Iterable[str], rules: DataRules) -> list[Breach]:
    """Every breach of ``rules`` by the declaration of each set in ``sets``, set by set, in rule order."""
    found = []
    allowed = {licence.lower() for licence in rules.allowed_licences or []}
    for name in sets:
        declared = declaration.get(name) or DataProvenance()
        if rules.allowed_licences is not None:
            if declared.licence is None:
                found.append(Breach(name, "allowed_licences",
                                    f"declares no licence (rule allowed_licences: {_licences(rules)})"))
            elif declared.licence.lower() not in allowed:
                found.append(Breach(name, "allowed_licences", f"has licence {declared.licence!r} "
                                    f"(rule allowed_licences: {_licences(rules)})"))
        if rules.customer_data is False:
            if declared.customer_data is None:
                found.append(Breach(name, "customer_data", "does not declare customer_data (rule customer_data: false)"))
            elif declared.customer_data:
                found.append(Breach(name, "customer_data", "declares customer data (rule customer_data: false)"))
        if rules.require_declared:
            missing = [f for f in FIELDS if getattr(declared, f) is None]
            if missing:
                found.append(Breach(name, "require_declared",
                                    f"does not declare {', '.join(missing)} (rule require_declared: true)"))
    return found


def judged_sets(rules: DataRules, available: Iterable[str], training: Iterable[str] = TRAINING_SETS) -> list[str]:
    """The sets ``rules`` judge: those it names, else the training sets among ``available``."""
    if rules.sets is not None:
        return list(rules.sets)
    available = set(available)
    return [name for name in training if name in available]


def declared(manifest: Bundle) -> dict[str, dict[str, Any] | str]:
    """Per golden set: its declared source, licence and customer data (each, or the set, ``undeclared``)."""
    view: dict[str, dict[str, Any] | str] = {}
    for name in manifest.golden_sets:
        entry = manifest.provenance.get(name)
        if entry is None or all(getattr(entry, f) is None for f in FIELDS):
            view[name] = UNDECLARED
        else:
            view[name] = {f: UNDECLARED if getattr(entry, f) is None else getattr(entry, f) for f in FIELDS}
    return view
