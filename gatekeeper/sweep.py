"""``gatekeeper sweep``: one candidate per point of a grid of recipe settings, each trained, signed and checked.

A sweep varies any recipe field (``--set training.learning_rate=5e-4,1e-3``,
``--set data.rehearsal.weight=0,1,4``, ``--set adapter.target_modules=all-linear,[q_proj,v_proj]``)
and, as a shorthand, the rank (``--rank 4,8``: LoRA keeps alpha / r). Several
``--set`` options make a grid. Every point is checked as a recipe before anything
trains, so a typo in the last point costs seconds, not the first point's run.

Each point becomes an ordinary version (``<dir>/vN``) checked with the bundle's
own gates, so any of them can be promoted as it is. The sweep writes
``sweep.csv`` and ``sweep.json`` (a row per point: its settings, verdict, task
gain, regression loss, validation loss, size, time), ``sweep.svg`` (task gain
against regression loss, the region the gates accept shaded: the frontier to
pick from) and one report directory per point.
"""

from __future__ import annotations

import csv
import itertools
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from gatekeeper._util.text import quote
from gatekeeper.bundle.recipe import Recipe, parse_recipe
from gatekeeper.errors import GatekeeperError, RecipeError

RANK = "rank"
"""The shorthand axis: what each method calls its rank (see ``with_rank``)."""

COLUMNS = ("point", "version", "verdict", "task_gain", "target_accuracy", "regression_loss",
           "regression_accuracy", "best_val_loss", "adapter_bytes", "train_seconds")


def split_values(text: str) -> list[str]:
    """Comma-separated values; commas inside [...] or {...} belong to the value (a list of modules)."""
    values, depth, current = [], 0, ""
    for char in text:
        depth += {"[": 1, "{": 1, "]": -1, "}": -1}.get(char, 0)
        if char == "," and depth == 0:
            values.append(current.strip())
            current = ""
        else:
            current += char
    values.append(current.strip())
    return values


def parse_ranks(text: str) -> list[int]:
    """``4,8,16`` -> [4, 8, 16]; anything else is a one-line error before anything trains."""
    ranks: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part.isdigit() or int(part) == 0:
            raise GatekeeperError(f"--rank expects positive whole numbers separated by commas (e.g. 4,8,16), got {quote(text)}")
        if int(part) in ranks:
            raise GatekeeperError(f"--rank lists {int(part)} twice")
        ranks.append(int(part))
    return sorted(ranks)


def parse_axis(text: str) -> tuple[str, list]:
    """``FIELD=V1,V2`` -> (field, [values]); each value is read as YAML (``1e-3``, ``true``, ``[q_proj, v_proj]``)."""
    import yaml

    name, sep, raw = text.partition("=")
    name = name.strip()
    if not sep or not name or not raw.strip():
        raise GatekeeperError(f"--set expects FIELD=VALUE[,VALUE...], e.g. training.learning_rate=5e-4,1e-3; got {quote(text)}")
    values = []
    for part in split_values(raw):
        if not part:
            raise GatekeeperError(f"--set {name}: an empty value in {quote(raw)}")
        try:
            value = yaml.safe_load(part)
        except yaml.YAMLError:
            raise GatekeeperError(f"--set {name}: {quote(part)} is not a value YAML can read") from None
        value = _number(value)
        if value in values:
            raise GatekeeperError(f"--set {name} lists {quote(part)} twice")
        values.append(value)
    return name, values


def _number(value):
    """YAML 1.1 reads ``1e-3`` (no dot) as text; a sweep over a rate means the number."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


@dataclass(frozen=True)
class Point:
    """One recipe of the grid: the settings it changes, in the order the axes were given."""

    settings: tuple[tuple[str, object], ...]

    @property
    def label(self) -> str:
        return " ".join(f"{name}={json.dumps(value) if not isinstance(value, str) else value}"
                        for name, value in self.settings)


def grid(axes: list[tuple[str, list]]) -> list[Point]:
    names = [name for name, _ in axes]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise GatekeeperError(f"--set {repeated[0]} is given twice; list its values in one option")
    combos = itertools.product(*(values for _, values in axes))
    return [Point(tuple(zip(names, combo))) for combo in combos]


def with_rank(recipe: Recipe, rank: int) -> Recipe:
    """The recipe at another rank.

    LoRA keeps alpha / r, so every rank takes updates of the same scale and the
    sweep compares capacity rather than step size; rsLoRA's alpha / sqrt(r) is
    rank-stable already, so its alpha stays. GaLore changes the projection rank only.
    """
    if recipe.rank is None:
        raise RecipeError(f"method {recipe.method} has no rank to sweep"
                          + (" (a dpo child keeps its parent's)" if recipe.method == "dpo" else ""))
    if recipe.method == "galore":
        return recipe.model_copy(update={"galore": recipe.galore.model_copy(update={"rank": rank})})
    adapter = recipe.adapter
    alpha = adapter.alpha if adapter.use_rslora else adapter.alpha * rank / adapter.r
    return recipe.model_copy(update={"adapter": adapter.model_copy(update={"r": rank, "alpha": alpha})})


def apply(recipe: Recipe, point: Point, source: Path) -> Recipe:
    """The recipe with the point's settings, validated as a recipe file is: a field that does not
    exist, or a value it cannot take, is one line naming the point and the field."""
    document = recipe.model_dump(mode="json")
    rank = None
    for name, value in point.settings:
        if name == RANK:
            rank = value
            continue
        *parents, leaf = name.split(".")
        node = document
        for depth, key in enumerate(parents):
            if not isinstance(node, dict) or key not in node:
                raise RecipeError(f"--set {name}: the recipe has no field {'.'.join(parents[:depth + 1])}")
            if node[key] is None:
                raise RecipeError(f"--set {name}: {'.'.join(parents[:depth + 1])} is not set in the recipe; add the section first")
            node = node[key]
        if not isinstance(node, dict):
            raise RecipeError(f"--set {name}: {'.'.join(parents)} holds a value, not fields")
        node[leaf] = value
    try:
        changed = parse_recipe(document, source)
    except RecipeError as error:
        raise RecipeError(f"sweep point {point.label}: {error}") from None
    return changed if rank is None else with_rank(changed, rank)


@dataclass
class SweepRow:
    point: str
    version: str
    verdict: str  # pass | fail (exit code)
    task_gain: float | None
    """task_accuracy: adapter - base accuracy, in [-1, 1]."""
    target_accuracy: float | None
    regression_loss: float | None
    """regression: base - adapter accuracy on the regression set; positive is forgetting."""
    regression_accuracy: float | None
    best_val_loss: float
    adapter_bytes: int
    train_seconds: float
    report: str
    settings: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Region:
    """Where the gates accept a candidate, read from the verdict's own thresholds."""

    min_gain: float | None
    max_loss: float | None


def _metric(verdict, gate: str):
    found = [g for g in verdict.gates if g.name == gate and g.metrics]
    return found[0].metrics[0] if found else None


def region_of(verdict) -> Region:
    task, regression = _metric(verdict, "task_accuracy"), _metric(verdict, "regression")
    return Region(task.threshold if task else None,
                  -regression.threshold if regression and regression.threshold is not None else None)


def row_for(point: Point, bundle: Path, verdict, report_dir: Path) -> SweepRow:
    record = json.loads((bundle / "training.json").read_text(encoding="utf-8"))
    task, regression = _metric(verdict, "task_accuracy"), _metric(verdict, "regression")
    return SweepRow(
        point=point.label, version=bundle.name,
        verdict="pass" if verdict.passed else f"fail ({verdict.exit_code})",
        task_gain=task.delta if task else None, target_accuracy=task.adapter if task else None,
        regression_loss=round(-regression.delta, 6) + 0.0 if regression else None,  # + 0.0: no -0
        regression_accuracy=regression.adapter if regression else None,
        best_val_loss=record["best_val_loss"], adapter_bytes=record["adapter_bytes"],
        train_seconds=record["wall_seconds"], report=str(report_dir), settings=dict(point.settings),
    )


def write_outputs(rows: list[SweepRow], region: Region, out_dir: Path, name: str, method: str) -> dict[str, Path]:
    from gatekeeper.report.plots import frontier

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {k: out_dir / f"sweep.{k}" for k in ("csv", "json", "svg")}
    axes = list(rows[0].settings) if rows else []
    with paths["csv"].open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=[*axes, *COLUMNS, "report"])
        writer.writeheader()
        for row in rows:
            values = asdict(row)
            settings = values.pop("settings")
            writer.writerow({**{k: json.dumps(v) if not isinstance(v, str) else v for k, v in settings.items()}, **values})
    document = {"name": name, "method": method, "axes": axes, "region": asdict(region), "rows": [asdict(r) for r in rows]}
    paths["json"].write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    points = [(row.point, row.regression_loss, row.task_gain, row.verdict == "pass") for row in rows]
    paths["svg"].write_text(str(frontier(points, region.min_gain, region.max_loss, standalone=True)) + "\n", encoding="utf-8")
    return paths
