"""dataset_audit: is the data the candidate was trained and judged on sound?

Six checks, each a metric with its own threshold: exact duplicates and the
share of near duplicates in the training set; overlap between splits; the
share of each label in every split; contract violations; and the share of
training examples that ``max_seq_len`` would cut. Token counts come from the
runtime's tokenizer (never the weights), so they are exact, not estimates.

It also reports each set's declared provenance (the manifest's ``provenance``:
source, licence, customer data, or undeclared). Rules over it are a seventh
check, made only when a parameter sets one (``allowed_licences``,
``customer_data: false``, ``require_declared``), so a bundle that sets none
keeps the verdict it had.

``load_bundle`` already refuses a bundle whose train, validation or eval
answers break the contract; the audit still counts violations, so a set it
is given that loading does not check (an extra golden set) is covered too.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pydantic

from gatekeeper._util.documents import validation_problem
from gatekeeper.bundle.goldens import GoldenItem, answer_text
from gatekeeper.bundle.provenance import DataRules, breaches, declared, judged_sets
from gatekeeper.gating.evidence import label_of
from gatekeeper.gating.overlap import Overlap, OverlapSettings, ReferenceIndex, shorten
from gatekeeper.gating.registry import gate
from gatekeeper.gating.result import Example, GateResult, Metric
from gatekeeper.runtime.requests import CountTokens

LISTED = 200  # rows listed per check in the details; counts are always complete
TRAINING_ENCODED = ("validation",)  # held-out sets the trainer encodes at max_seq_len too


@dataclass
class Check:
    metric: Metric
    passed: bool
    problem: str = ""
    details: Any = None
    evidence: list[Example] = field(default_factory=list)


def _share(part: int, whole: int) -> float:
    return round(part / whole, 6) if whole else 0.0


def _pair_record(left_set: str, left: GoldenItem, right_set: str, right: GoldenItem, o: Overlap) -> dict:
    return {"set": left_set, "id": left.id, "other_set": right_set, "other_id": right.id,
            "method": o.method, "score": o.score, "text": shorten(left.input), "other_text": shorten(right.input)}


@gate("dataset_audit")
class DatasetAudit:
    """Training and evaluation data: duplicates, split overlap, label balance, contract, truncation."""

    sides = ("base",)  # asks token counts only, and one tokenizer serves every side

    def __init__(
        self,
        train_set: str = "train",
        held_out: list[str] | None = None,
        max_duplicates: int = 0,
        max_near_duplicate_share: float = 0.01,
        max_split_overlaps: int = 0,
        min_label_share: float = 0.05,
        max_violations: int = 0,
        max_truncated_share: float = 0.0,
        max_seq_len: int | None = None,
        ngram_n: int = 13,
        jaccard_threshold: float = 0.8,
        fuzzy_threshold: float = 0.9,
        fuzzy_scorer: str = "token_sort_ratio",
        max_examples: int = 5,
        allowed_licences: list[str] | None = None,
        customer_data: bool | None = None,
        require_declared: bool = False,
        provenance_sets: list[str] | None = None,
    ):
        shares = {"max_near_duplicate_share": max_near_duplicate_share, "min_label_share": min_label_share,
                  "max_truncated_share": max_truncated_share}
        for name, value in shares.items():
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be within [0, 1], got {value}")
        if max_seq_len is not None and max_seq_len < 1:
            raise ValueError(f"max_seq_len must be >= 1, got {max_seq_len}")
        if held_out is not None and train_set in held_out:
            raise ValueError(f"held_out must not include the training set {train_set!r}")
        self.train_set, self.held_out = train_set, held_out
        self.max_duplicates, self.max_near_duplicate_share = max_duplicates, max_near_duplicate_share
        self.max_split_overlaps, self.min_label_share = max_split_overlaps, min_label_share
        self.max_violations, self.max_truncated_share, self.max_seq_len = max_violations, max_truncated_share, max_seq_len
        self.settings = OverlapSettings(ngram_n=ngram_n, jaccard=jaccard_threshold, fuzzy=fuzzy_threshold,
                                        scorer=fuzzy_scorer)
        self.max_examples = max_examples
        try:  # the same rules a release policy sets per channel (gatekeeper.bundle.provenance)
            self.rules = DataRules(allowed_licences=allowed_licences, customer_data=customer_data,
                                   require_declared=require_declared, sets=provenance_sets)
        except pydantic.ValidationError as exc:
            raise ValueError(validation_problem(exc).replace("'sets", "'provenance_sets")) from None

    # -- which data -----------------------------------------------------------
    def _sets(self, ctx) -> list[str]:
        held_out = self.held_out if self.held_out is not None else [
            name for name in ("validation", "eval") if name in ctx.bundle.golden]
        return [self.train_set, *held_out]

    def _encoded_sets(self, ctx) -> list[str]:
        return [name for name in self._sets(ctx) if name == self.train_set or name in TRAINING_ENCODED]

    def _seq_len(self, ctx) -> tuple[int | None, str]:
        if self.max_seq_len is not None:
            return self.max_seq_len, "parameter"
        if ctx.recipe is not None:
            return ctx.recipe.training.max_seq_len, "recipe"
        return None, "none: the bundle has no recipe and no max_seq_len parameter was given"

    @staticmethod
    def _count_request(ctx, item: GoldenItem) -> CountTokens:
        return CountTokens(ctx.prompt.messages(item.input), answer_text(item.expected))

    def _provenance_sets(self, ctx) -> list[str]:
        return judged_sets(self.rules, ctx.bundle.golden, training=(self.train_set, "validation", "rehearsal"))

    def requests(self, ctx):
        for name in self._provenance_sets(ctx) if self.rules.any else []:
            ctx.golden(name)  # a set named in provenance_sets that the bundle lacks: refused before any model loads
        if self._seq_len(ctx)[0] is None:
            return []
        return [self._count_request(ctx, item) for name in self._encoded_sets(ctx) for item in ctx.golden(name)]

    # -- the checks -----------------------------------------------------------
    def _example(self, set_name: str, item: GoldenItem, note: str) -> Example:
        return Example(id=f"{set_name}/{item.id}", input=item.input, expected=item.expected, note=note)

    def _duplicates(self, train: list[GoldenItem], index: ReferenceIndex) -> tuple[Check, Check]:
        name, pairs = self.train_set, index.find_within()
        exact = [o for o in pairs if o.method == "exact"]
        near = [o for o in pairs if o.method != "exact"]

        def records(found: list[Overlap]) -> list[dict]:
            return [_pair_record(name, train[o.probe], name, train[o.reference], o) for o in found[:LISTED]]

        def evidence(found: list[Overlap]) -> list[Example]:
            examples = []
            for o in found[: self.max_examples]:
                earlier = train[o.reference]
                # the same input with another answer teaches the model both: say so
                conflict = ", with a different answer" if train[o.probe].expected != earlier.expected else ""
                note = f"{o.method} {o.score:.2f} copy of {name}/{earlier.id}{conflict}: {shorten(earlier.input)}"
                examples.append(self._example(name, train[o.probe], note))
            return examples

        repeated = len({o.probe for o in exact})  # rows that repeat an earlier row
        near_rows = len({row for o in near for row in (o.probe, o.reference)})
        near_share = _share(near_rows, len(train))
        return (
            Check(Metric(name="exact_duplicates", adapter=repeated, threshold=self.max_duplicates, higher_is_better=False),
                  repeated <= self.max_duplicates, f"{repeated} row(s) of {name!r} repeat an earlier row",
                  {"total": len(exact), "pairs": records(exact)}, evidence(exact)),
            Check(Metric(name="near_duplicate_share", adapter=near_share, threshold=self.max_near_duplicate_share,
                         higher_is_better=False),
                  near_share <= self.max_near_duplicate_share,
                  f"{near_share:.1%} of {name!r} rows ({near_rows}) are near duplicates",
                  {"rows": near_rows, "total": len(near), "pairs": records(near)}, evidence(near)),
        )

    def _split_overlaps(self, ctx, train_index: ReferenceIndex) -> Check:
        names = self._sets(ctx)
        records, evidence, total = [], [], 0
        for i, reference_set in enumerate(names[:-1]):
            reference = ctx.golden(reference_set)
            index = train_index if i == 0 else ReferenceIndex([x.input for x in reference], self.settings)
            for probe_set in names[i + 1 :]:
                probes = ctx.golden(probe_set)
                for o in index.find([x.input for x in probes]):
                    total += 1
                    records.append(_pair_record(probe_set, probes[o.probe], reference_set, reference[o.reference], o))
                    evidence.append(self._example(probe_set, probes[o.probe], f"{o.method} {o.score:.2f} copy of "
                                                  f"{reference_set}/{reference[o.reference].id}"))
        return Check(Metric(name="split_overlaps", adapter=total, threshold=self.max_split_overlaps, higher_is_better=False),
                     total <= self.max_split_overlaps, f"{total} item(s) overlap another split",
                     {"total": total, "pairs": records[:LISTED]}, evidence[: self.max_examples])

    def _label_balance(self, ctx) -> Check:
        field_name, labels = ctx.contract.label_field, ctx.contract.labels
        if not labels:
            return Check(Metric(name="min_label_share", threshold=self.min_label_share), True,
                         details="not checked: the contract names no label field with an enum")
        shares, low = {}, []
        for name in self._sets(ctx):
            items = ctx.golden(name)
            counts = Counter(str(label_of(i.expected, field_name)) for i in items)
            shares[name] = {label: _share(counts[label], len(items)) for label in labels}
            low += [f"{label!r} is {share:.1%} of {name!r}" for label, share in shares[name].items()
                    if share < self.min_label_share]
        lowest = min(share for per_set in shares.values() for share in per_set.values())
        return Check(Metric(name="min_label_share", adapter=lowest, threshold=self.min_label_share),
                     not low, "label " + "; ".join(low), {"label_field": field_name, "shares": shares})

    def _contract(self, ctx) -> Check:
        counts, evidence = {}, []
        for name in self._sets(ctx):
            broken = [(i, p) for i in ctx.golden(name) if (p := ctx.contract.violation(i.expected))]
            counts[name] = len(broken)
            evidence += [self._example(name, i, f"expected answer breaks the contract: {p}") for i, p in broken]
        total = sum(counts.values())
        return Check(Metric(name="contract_violations", adapter=total, threshold=self.max_violations, higher_is_better=False),
                     total <= self.max_violations, f"{total} expected answer(s) break the contract",
                     counts, evidence[: self.max_examples])

    def _truncation(self, ctx, responses) -> Check:
        limit, source = self._seq_len(ctx)
        if limit is None:
            return Check(Metric(name="truncated_share", threshold=self.max_truncated_share, higher_is_better=False),
                         True, details={"max_seq_len": None, "source": source})
        lengths = [(name, item, responses.get("base", self._count_request(ctx, item)))
                   for name in self._encoded_sets(ctx) for item in ctx.golden(name)]
        cut = sorted((x for x in lengths if x[2] > limit), key=lambda x: (-x[2], x[0], x[1].id))
        share = _share(len(cut), len(lengths))
        details = {
            "max_seq_len": limit, "source": source, "counted": "tokens of prompt and answer, as training encodes them",
            "sets": {name: _share(sum(1 for n, _, c in cut if n == name), sum(1 for n, _, _ in lengths if n == name))
                     for name in self._encoded_sets(ctx)},
            "longest": max(c for _, _, c in lengths) if lengths else 0,
        }
        return Check(Metric(name="truncated_share", adapter=share, threshold=self.max_truncated_share, higher_is_better=False),
                     share <= self.max_truncated_share, f"{share:.1%} of training examples exceed {limit} tokens",
                     details, [self._example(n, i, f"{c} tokens > max_seq_len {limit}") for n, i, c in cut[: self.max_examples]])

    def _provenance(self, ctx) -> tuple[dict, Check | None]:
        """What the manifest declares per set; with rules set, the check of the judged sets against them."""
        report = {"declared": declared(ctx.bundle.manifest)}
        if not self.rules.any:
            return report, None
        judged = self._provenance_sets(ctx)  # each one in the bundle: requests() saw to that
        found = breaches(ctx.bundle.manifest.provenance, judged, self.rules)
        report |= {"rules": self.rules.model_dump(exclude_none=True, exclude_defaults=True), "judged": judged,
                   "breaches": [{"set": b.set, "rule": b.rule, "problem": str(b)} for b in found]}
        return report, Check(Metric(name="provenance_breaches", adapter=len(found), threshold=0, higher_is_better=False),
                             not found, "; ".join(str(b) for b in found), report)

    # -- the result -----------------------------------------------------------
    def evaluate(self, ctx, responses):
        train = ctx.golden(self.train_set)
        index = ReferenceIndex([item.input for item in train], self.settings)
        exact, near = self._duplicates(train, index)
        checks = {
            "exact_duplicates": exact,
            "near_duplicates": near,
            "split_overlaps": self._split_overlaps(ctx, index),
            "label_balance": self._label_balance(ctx),
            "contract_violations": self._contract(ctx),
            "truncation": self._truncation(ctx, responses),
        }
        provenance, provenance_check = self._provenance(ctx)
        if provenance_check is not None:
            checks["provenance"] = provenance_check
        problems = [c.problem for c in checks.values() if not c.passed]
        sizes = {name: len(ctx.golden(name)) for name in self._sets(ctx)}
        return GateResult(
            name=self.name,
            status="passed" if not problems else "failed",
            rule=(f"duplicates <= {self.max_duplicates}, near duplicates <= {self.max_near_duplicate_share:.0%}, "
                  f"split overlaps <= {self.max_split_overlaps}, each label >= {self.min_label_share:.0%} of each set, "
                  f"contract violations <= {self.max_violations}, truncated <= {self.max_truncated_share:.0%}"
                  + (f"; {', '.join(self._provenance_sets(ctx))}: {self.rules.describe()}" if self.rules.any else "")),
            summary="; ".join(problems) if problems else (
                f"{', '.join(f'{n} {k}' for n, k in sizes.items())}: every check passed"),
            metrics=[c.metric for c in checks.values()],
            evidence=[e for c in checks.values() for e in c.evidence],
            details={"sets": sizes, "failed": [name for name, c in checks.items() if not c.passed]}
            | {name: c.details for name, c in checks.items()} | {"provenance": provenance},  # with rules or without
        )
