"""contamination: is any evaluation item in the training data, verbatim or nearly?"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from gatekeeper.bundle.goldens import GoldenItem
from gatekeeper.gating.overlap import METHODS, OverlapSettings, ReferenceIndex, shorten
from gatekeeper.gating.registry import gate
from gatekeeper.gating.result import Example, GateResult, Metric

DEFAULT_SETS = ("eval", "validation")


@dataclass(frozen=True)
class Pair:
    """An evaluation item and the training row it overlaps."""

    set: str
    item: GoldenItem
    train: GoldenItem
    method: str
    score: float

    def sort_key(self):  # strongest evidence first, then by name: the same order on every run
        return (METHODS.index(self.method), -self.score, self.set, self.item.id, self.train.id)

    def record(self, train_set: str) -> dict:
        return {
            "set": self.set, "id": self.item.id, "train_set": train_set, "train_id": self.train.id,
            "method": self.method, "score": self.score,
            "text": shorten(self.item.input), "train_text": shorten(self.train.input),
        }


@gate("contamination")
class Contamination:
    """Evaluation items whose input is in the training data: exact, n-gram, MinHash or fuzzy copies."""

    sides = ()  # reads golden sets only: the runtime is never asked anything

    def __init__(
        self,
        sets: list[str] | None = None,
        train_set: str = "train",
        max_contaminated: int = 0,
        ngram_n: int = 13,
        jaccard_threshold: float = 0.8,
        fuzzy_threshold: float = 0.9,
        fuzzy_scorer: str = "token_sort_ratio",
        max_examples: int = 10,
        max_pairs: int = 1000,
    ):
        if max_contaminated < 0:
            raise ValueError(f"max_contaminated must be >= 0, got {max_contaminated}")
        if sets is not None and train_set in sets:
            raise ValueError(f"sets must not include the training set {train_set!r}: it would match itself")
        self.sets, self.train_set, self.max_contaminated = sets, train_set, max_contaminated
        self.settings = OverlapSettings(ngram_n=ngram_n, jaccard=jaccard_threshold, fuzzy=fuzzy_threshold,
                                        scorer=fuzzy_scorer)
        self.max_examples, self.max_pairs = max_examples, max_pairs

    def requests(self, ctx):
        return []

    def _sets(self, ctx) -> list[str]:
        if self.sets is not None:
            return list(self.sets)  # named explicitly: a missing one is an error
        return [name for name in DEFAULT_SETS if name in ctx.bundle.golden]

    def evaluate(self, ctx, responses):
        train = ctx.golden(self.train_set)
        index = ReferenceIndex([item.input for item in train], self.settings)
        pairs: list[Pair] = []
        checked: dict[str, int] = {}
        for name in self._sets(ctx):
            items = ctx.golden(name)
            checked[name] = len(items)
            pairs += [Pair(name, items[o.probe], train[o.reference], o.method, o.score)
                      for o in index.find([item.input for item in items])]
        pairs.sort(key=Pair.sort_key)
        dirty = {(p.set, p.item.id) for p in pairs}
        total = sum(checked.values())
        share = round(len(dirty) / total, 6) if total else 0.0
        by_method = Counter(p.method for p in pairs)
        s = self.settings
        rule = (f"at most {self.max_contaminated} evaluation items overlap {self.train_set!r} "
                f"(exact, {s.ngram_n}-gram, MinHash Jaccard >= {s.jaccard}, {s.scorer} >= {s.fuzzy})")
        methods = ", ".join(f"{m} {by_method[m]}" for m in METHODS if by_method[m])
        summary = (f"{len(dirty)} of {total} evaluation items overlap the {len(train)} training rows ({methods})"
                   if dirty else f"none of {total} evaluation items overlaps the {len(train)} training rows")
        return GateResult(
            name=self.name,
            status="passed" if len(dirty) <= self.max_contaminated else "failed",
            rule=rule,
            summary=summary,
            metrics=[
                Metric(name="contaminated_items", adapter=len(dirty), threshold=self.max_contaminated,
                       higher_is_better=False),
                Metric(name="contaminated_share", adapter=share, higher_is_better=False),
            ],
            evidence=[
                Example(id=f"{p.set}/{p.item.id}", input=p.item.input, expected=p.item.expected,
                        note=f"{p.method} {p.score:.2f} with {self.train_set}/{p.train.id}: {shorten(p.train.input)}")
                for p in pairs[: self.max_examples]
            ],
            details={
                "train_set": self.train_set,
                "checked": checked,
                "by_method": {m: by_method[m] for m in METHODS},
                "pairs_total": len(pairs),
                "pairs": [p.record(self.train_set) for p in pairs[: self.max_pairs]],
            },
        )
