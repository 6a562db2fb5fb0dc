"""overfitting: did the adapter learn the task, or its training rows?

Three signals, the first two from the trainer's record (``training.json``),
the third from the golden sets:

- the gap between validation and training loss at the selected checkpoint
  (``best_step``): validation loss there, less the mean training loss of the
  last 10 steps up to it, since the evaluation before it (one batch per step
  is noisy; early steps of a long interval were taken by other weights);
- the trend: from the lowest validation loss (over the whole run, or the
  last ``trend_window`` evaluations) to the last evaluation, did validation
  loss rise by more than ``max_val_rise`` of that lowest while training loss
  fell (the least-squares slope of the training losses over those steps,
  times the span, below 0)? That is the shape of a run that kept fitting its
  rows after it stopped generalising. It is a property of the run: the
  trainer may have kept the checkpoint from before the rise (``select_on:
  val_loss_min``), but chose it on a validation set the run then overfitted
  past, and the cure (fewer steps, more data) is the same;
- where golden items carry a ``source`` (or ``group``) field: the adapter's
  label accuracy on evaluation items whose source no training row has (held
  out) against items whose source training saw. The base, which saw neither,
  is reported beside it: how much harder the held-out sources are anyway.

Each signal that cannot be measured (no training curve, a single evaluation,
items without sources, every source seen in training) is said in the details
and does not fail the gate; a bound set to null is measured and reported, not
judged. A bundle without a training record (an adapter
adopted with ``gatekeeper init``) is skipped with that reason.

With rehearsal the training loss pools rehearsal rows with the task's (and
with distillation adds its KL term), so it is not the task's loss alone; the
details say so, and the gap is then only a rough guide.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from gatekeeper.gating.evidence import label_of, rate, thin_curve, worst_examples
from gatekeeper.gating.labels import check_scoring, label_request, read_labels
from gatekeeper.gating.registry import gate
from gatekeeper.gating.result import Figure, GateResult, Metric
from gatekeeper.gating.stats import percentile_interval

SOURCE_FIELDS = ("source", "group")
GAP_STEPS = 10
"""Training steps averaged for the gap: the last ones up to the selected step, since the evaluation before it."""
RESAMPLES, SEED = 1000, 0


@dataclass(frozen=True)
class LossReading:
    """What the loss curves say, each figure None where the record cannot give it."""

    selected_step: float | None
    val_selected: float | None
    train_selected: float | None  # mean training loss of the last GAP_STEPS steps up to the selected one
    gap: float | None  # val_selected - train_selected
    window: tuple[float, float] | None  # the step of the lowest validation loss and the last evaluated step
    val_rise: float | None  # (last validation loss - the lowest) / the lowest
    val_rise_abs: float | None
    train_change: float | None  # least-squares fitted change of the training loss over the window
    notes: tuple[str, ...] = ()

    def rising_while_falling(self, max_val_rise: float | None) -> bool:
        return (max_val_rise is not None and self.val_rise is not None and self.val_rise > max_val_rise
                and self.train_change is not None and self.train_change < 0)


def read_losses(record: dict, trend_window: int | None = None) -> LossReading:
    """The gap at the selected step, and the trend from the lowest validation loss (over the whole
    run, or the last ``trend_window`` evaluations) to the last evaluation."""
    val = sorted((float(s), float(v)) for s, v in record.get("val_curve") or [])
    train = sorted((float(s), float(v)) for s, v in record.get("train_curve") or [])
    notes = []
    if not val:
        return LossReading(None, None, None, None, None, None, None, None, ("the record has no validation curve",))
    selected = record.get("best_step")
    if selected is None:
        selected = min(val, key=lambda p: p[1])[0]
        notes.append("the record names no best_step: the lowest validation loss is taken as selected")
    selected = float(selected)
    at = [v for s, v in val if s == selected]
    val_selected = at[0] if at else record.get("best_val_loss")
    before = [s for s, _ in val if s < selected]
    since = before[-1] if before else float("-inf")
    covered = [v for s, v in train if since < s <= selected][-GAP_STEPS:]
    train_selected = sum(covered) / len(covered) if covered else None
    if train_selected is None:
        notes.append(f"no training loss up to step {selected:g}: the selected adapter is the untrained one"
                     if selected == 0 else f"the record has no training loss near step {selected:g}")
    gap = val_selected - train_selected if val_selected is not None and train_selected is not None else None

    window = val[-trend_window:] if trend_window else val
    if len(window) < 2:
        notes.append("one evaluation only: no trend")
        return LossReading(selected, val_selected, train_selected, gap, None, None, None, None, tuple(notes))
    lowest_step, lowest = min(window, key=lambda p: p[1])  # the earliest of equal lows
    last_step, last = window[-1]
    rise_abs = last - lowest
    rise = rise_abs / lowest if lowest > 0 else (0.0 if rise_abs == 0 else float("inf"))
    change = None
    if lowest_step == last_step:
        notes.append("validation loss is at its lowest at the last evaluation")
    else:
        span = [(s, v) for s, v in train if lowest_step < s <= last_step]
        if len(span) >= 2:
            mean_s = sum(s for s, _ in span) / len(span)
            mean_v = sum(v for _, v in span) / len(span)
            spread = sum((s - mean_s) ** 2 for s, _ in span)
            slope = sum((s - mean_s) * (v - mean_v) for s, v in span) / spread if spread else 0.0
            change = slope * (last_step - lowest_step)
        else:
            notes.append(f"fewer than 2 training losses between steps {lowest_step:g} and {last_step:g}: "
                         "no training trend")
    return LossReading(selected, val_selected, train_selected, gap, (lowest_step, last_step), rise, rise_abs, change,
                       tuple(notes))


@gate("overfitting")
class Overfitting:
    """Validation-training loss gap, a rising validation loss, and accuracy on sources training never saw."""

    def __init__(
        self,
        max_gap: float | None = 0.5,
        max_val_rise: float | None = 0.10,
        trend_window: int | None = None,
        max_source_drop: float | None = 0.10,
        source_field: str | None = None,
        golden_set: str = "eval",
        train_set: str = "train",
        scoring: str = "generate",
        max_examples: int = 8,
    ):
        check_scoring(scoring)
        if trend_window is not None and trend_window < 2:
            raise ValueError(f"trend_window must be at least 2 evaluations, got {trend_window}")
        if source_field is not None and not source_field:
            raise ValueError("source_field must name a field")
        self.max_gap, self.trend_window, self.max_val_rise = max_gap, trend_window, max_val_rise
        self.max_source_drop, self.source_field = max_source_drop, source_field
        self.golden_set, self.train_set, self.scoring, self.max_examples = golden_set, train_set, scoring, max_examples

    # -- which items carry a source ------------------------------------------
    def _sources(self, ctx):
        """(field, items with it, sources seen in training, why not measured); the last empty when measured."""
        items = ctx.golden(self.golden_set)
        train = ctx.bundle.golden.get(self.train_set)
        if ctx.contract.label_field is None:
            return None, [], set(), "the contract names no label field to judge answers by"
        candidates = [self.source_field] if self.source_field else list(SOURCE_FIELDS)
        pool = items + (train or [])
        field = next((f for f in candidates if any(f in i.extra for i in pool)), None)
        if field is None:
            return None, [], set(), f"no {self.golden_set!r} item carries a {' or '.join(repr(f) for f in candidates)} field"
        tagged = [i for i in items if field in i.extra]
        if not tagged:
            return field, [], set(), f"no {self.golden_set!r} item carries a {field!r} field"
        if train is None:
            return field, [], set(), f"the bundle has no {self.train_set!r} set to tell which sources training saw"
        seen = {str(i.extra[field]) for i in train if field in i.extra}
        held = [i for i in tagged if str(i.extra[field]) not in seen]
        if not held:
            return field, [], seen, f"every {field} in {self.golden_set!r} was seen in training: none is held out"
        if len(held) == len(tagged):
            return field, [], seen, f"no {field} in {self.golden_set!r} was seen in training: nothing to compare against"
        return field, tagged, seen, ""

    def requests(self, ctx):
        ctx.golden(self.golden_set)  # a set the bundle lacks is refused before any model loads
        if ctx.bundle.training_record is None:
            return []
        _, tagged, _, _ = self._sources(ctx)
        return [label_request(ctx, item, self.scoring) for item in tagged]

    def _rule(self) -> str:
        over = f"the last {self.trend_window} evaluations" if self.trend_window else "the run"
        parts = [
            f"validation - training loss at the selected step <= {self.max_gap:g} nats/token"
            if self.max_gap is not None else "",
            f"last validation loss not more than {self.max_val_rise:.0%} above its lowest over {over} "
            "while training loss falls" if self.max_val_rise is not None else "",
            f"adapter accuracy on held-out sources at most {self.max_source_drop * 100:.0f} points below seen "
            "sources (where items carry one)" if self.max_source_drop is not None else "",
        ]
        return "; ".join(p for p in parts if p) or "nothing judged: every bound is unset (figures reported)"

    def evaluate(self, ctx, responses):
        record = ctx.bundle.training_record
        if record is None:
            reason = ("the bundle has no training record (training.json): an adapter adopted with gatekeeper init, "
                      "or trained elsewhere, carries none")
            return GateResult(name=self.name, status="skipped", rule=self._rule(), summary=f"skipped: {reason}",
                              skip_reason=reason)
        if not record.get("val_curve"):
            reason = "the training record has no validation curve"
            return GateResult(name=self.name, status="skipped", rule=self._rule(), summary=f"skipped: {reason}",
                              skip_reason=reason)
        losses = read_losses(record, self.trend_window)
        checks: dict[str, str] = {}
        problems, said = [], []

        def judge(check: str, ok: bool | None, text: str, why_not: str) -> None:
            """ok None: measured, no bound set (reported only)."""
            checks[check] = "reported (no bound set)" if ok is None else "passed" if ok else "failed"
            (problems if ok is False else said).append(text + ("" if ok is not False else why_not))

        if losses.gap is None:
            checks["gap"] = "not measured: " + "; ".join(losses.notes)
        else:
            judge("gap", None if self.max_gap is None else losses.gap <= self.max_gap,
                  f"gap {losses.gap:+.3f} nats/token at step {losses.selected_step:g} "
                  f"(validation {losses.val_selected:.3f}, training {losses.train_selected:.3f})",
                  f" > {self.max_gap}")
        if losses.val_rise is None:
            checks["trend"] = "not measured: " + "; ".join(losses.notes)
        else:
            low, last = losses.window
            falls = ("" if losses.train_change is None
                     else f", training loss {'fell' if losses.train_change < 0 else 'rose'} {abs(losses.train_change):.3f}")
            judge("trend", None if self.max_val_rise is None else not losses.rising_while_falling(self.max_val_rise),
                  f"validation loss {losses.val_rise:+.0%} from its lowest (step {low:g}) to step {last:g}{falls}",
                  ": still fitting the training rows after validation stopped improving")

        metrics = [
            Metric(name="val_train_gap", adapter=_r(losses.gap), threshold=self.max_gap, higher_is_better=False,
                   unit="nats/token"),
            Metric(name="val_rise", adapter=_r(losses.val_rise), threshold=self.max_val_rise, higher_is_better=False,
                   unit="last over lowest validation loss, - 1"),
            Metric(name="train_change", adapter=_r(losses.train_change), higher_is_better=False,
                   unit="nats/token, lowest validation step to last"),
            Metric(name="val_loss_selected", adapter=_r(losses.val_selected), higher_is_better=False, unit="nats/token"),
            Metric(name="train_loss_selected", adapter=_r(losses.train_selected), higher_is_better=False,
                   unit="nats/token"),
        ]
        details = {
            "selected_step": losses.selected_step,
            "trend_steps": list(losses.window) if losses.window else None,
            "trend_window": self.trend_window,
            "val_rise_abs": _r(losses.val_rise_abs),
            "select_on": ctx.recipe.selection.select_on if ctx.recipe is not None else None,
            "notes": list(losses.notes),
        }
        if record.get("rehearsal"):
            details["rehearsal"] = ("training loss pools rehearsal rows with the task's"
                                    + (" and adds the distillation term" if record["rehearsal"].get("mode") == "distill"
                                       else "") + ": the gap is a rough guide")

        evidence = []
        field, tagged, seen, why = self._sources(ctx)
        if why:
            checks["held_out_sources"] = f"not measured: {why}"
        else:
            source = self._judge_sources(ctx, responses, field, tagged, seen)
            metrics += source["metrics"]
            details["sources"] = source["details"]
            evidence = source["evidence"]
            judge("held_out_sources", None if self.max_source_drop is None else source["drop"] <= self.max_source_drop,
                  f"held-out {field}s {source['held']:.1%} against seen {source['seen']:.1%} "
                  f"({-source['drop'] * 100:+.1f} points)", f", more than {(self.max_source_drop or 0) * 100:.0f} below")
        details["checks"] = checks

        figure = Figure(
            kind="loss_curves",
            caption=(f"Validation loss (blue) and training loss (grey) by step; the dashed line is the selected step "
                     f"{losses.selected_step:g}, the shaded span runs from the lowest validation loss to the last "
                     "evaluation (where the trend is judged)."),
            data={"val_curve": thin_curve(record["val_curve"]), "train_curve": thin_curve(record.get("train_curve") or []),
                  "selected_step": losses.selected_step, "window": list(losses.window) if losses.window else None},
        )
        return GateResult(
            name=self.name,
            status="failed" if problems else "passed",
            rule=self._rule(),
            summary="; ".join(problems + said) or "nothing measurable: " + "; ".join(checks.values()),
            metrics=metrics,
            evidence=evidence,
            details=details,
            figures=[figure],
        )

    def _judge_sources(self, ctx, responses, field, tagged, seen) -> dict:
        gold = [label_of(i.expected, ctx.contract.label_field) for i in tagged]
        held_out = [str(i.extra[field]) not in seen for i in tagged]
        outputs, correct = {}, {}
        for side in ("base", "adapter"):
            outputs[side], predicted = read_labels(ctx, responses, side, tagged, self.scoring)
            correct[side] = [p == g for p, g in zip(predicted, gold)]
        accuracy = {
            side: {group: rate([c for c, h in zip(correct[side], held_out) if h == (group == "held")])
                   for group in ("seen", "held")}
            for side in correct
        }
        drop = {side: round(accuracy[side]["seen"] - accuracy[side]["held"], 6) for side in accuracy}
        low, high = _drop_interval([c for c, h in zip(correct["adapter"], held_out) if not h],
                                   [c for c, h in zip(correct["adapter"], held_out) if h])
        per_source = {}
        for name in sorted({str(i.extra[field]) for i in tagged}):
            rows = [k for k, i in enumerate(tagged) if str(i.extra[field]) == name]
            per_source[name] = {"seen_in_training": name in seen, "n": len(rows)} | {
                side: rate([correct[side][k] for k in rows]) for side in correct}
        held_items = [k for k, h in enumerate(held_out) if h]
        notes = [f"{field} {tagged[k].extra[field]!r} (held out); expected {gold[k]!r}" for k in held_items]
        evidence = worst_examples([tagged[k] for k in held_items], [outputs["base"][k] for k in held_items],
                                  [outputs["adapter"][k] for k in held_items], [correct["base"][k] for k in held_items],
                                  [correct["adapter"][k] for k in held_items], notes, self.max_examples)
        metrics = [
            Metric(name="seen_source_accuracy", base=accuracy["base"]["seen"], adapter=accuracy["adapter"]["seen"],
                   delta=round(accuracy["adapter"]["seen"] - accuracy["base"]["seen"], 6)),
            Metric(name="heldout_source_accuracy", base=accuracy["base"]["held"], adapter=accuracy["adapter"]["held"],
                   delta=round(accuracy["adapter"]["held"] - accuracy["base"]["held"], 6)),
            Metric(name="heldout_source_drop", base=drop["base"], adapter=drop["adapter"],
                   delta=round(drop["adapter"] - drop["base"], 6), threshold=self.max_source_drop,
                   higher_is_better=False, unit="seen - held-out accuracy"),
        ]
        details = {
            "field": field,
            "scoring": self.scoring,
            "items": {"seen": len(held_out) - len(held_items), "held_out": len(held_items)},
            "adapter_drop_interval": [round(low, 6), round(high, 6)],
            "interval": f"95% bootstrap, each group resampled apart ({RESAMPLES} resamples, seed {SEED})",
            "per_source": per_source,
        }
        return {"metrics": metrics, "details": details, "evidence": evidence, "drop": drop["adapter"],
                "seen": accuracy["adapter"]["seen"], "held": accuracy["adapter"]["held"]}


def _drop_interval(seen: list[bool], held: list[bool], level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of seen - held-out accuracy, each group resampled with replacement on its own."""
    rng = random.Random(SEED)
    samples = sorted(
        sum(seen[rng.randrange(len(seen))] for _ in seen) / len(seen)
        - sum(held[rng.randrange(len(held))] for _ in held) / len(held)
        for _ in range(RESAMPLES)
    )
    return percentile_interval(samples, level)


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 6)
