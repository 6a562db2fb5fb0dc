"""``gatekeeper sweep``: one candidate per rank, each trained, signed and checked, then compared.

Every rank becomes an ordinary version (``<dir>/vN``) checked with the
bundle's own gates, so any of them can be promoted as it is. The sweep
writes ``sweep.csv``, ``sweep.json`` and ``sweep.svg`` (target score,
regression score, validation loss and adapter size against rank) and one
report directory per rank.
"""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from gatekeeper.bundle.recipe import Recipe
from gatekeeper.errors import GatekeeperError

COLUMNS = ("rank", "version", "verdict", "target_accuracy", "regression_accuracy", "best_val_loss",
           "adapter_bytes", "train_seconds")


def parse_ranks(text: str) -> list[int]:
    """``4,8,16`` -> [4, 8, 16]; anything else is a one-line error before anything trains."""
    ranks: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part.isdigit() or int(part) == 0:
            raise GatekeeperError(f"--rank expects positive whole numbers separated by commas (e.g. 4,8,16), got {text!r}")
        if int(part) in ranks:
            raise GatekeeperError(f"--rank lists {int(part)} twice")
        ranks.append(int(part))
    return sorted(ranks)


def with_rank(recipe: Recipe, rank: int) -> Recipe:
    """The recipe at another rank.

    LoRA keeps alpha / r, so every rank takes updates of the same scale and the
    sweep compares capacity rather than step size; rsLoRA's alpha / sqrt(r) is
    rank-stable already, so its alpha stays. GaLore changes the projection rank only.
    """
    if recipe.method == "galore":
        return recipe.model_copy(update={"galore": recipe.galore.model_copy(update={"rank": rank})})
    adapter = recipe.adapter
    alpha = adapter.alpha if adapter.use_rslora else adapter.alpha * rank / adapter.r
    return recipe.model_copy(update={"adapter": adapter.model_copy(update={"r": rank, "alpha": alpha})})


@dataclass
class SweepRow:
    rank: int
    version: str
    verdict: str  # pass | fail (exit code)
    target_accuracy: float | None
    regression_accuracy: float | None
    best_val_loss: float
    adapter_bytes: int
    train_seconds: float
    report: str


def _headline(verdict, gate: str) -> float | None:
    found = [g for g in verdict.gates if g.name == gate and g.metrics]
    return found[0].metrics[0].adapter if found else None


def row_for(rank: int, bundle: Path, verdict, report_dir: Path) -> SweepRow:
    record = json.loads((bundle / "training.json").read_text(encoding="utf-8"))
    return SweepRow(
        rank=rank, version=bundle.name,
        verdict="pass" if verdict.passed else f"fail ({verdict.exit_code})",
        target_accuracy=_headline(verdict, "task_accuracy"),
        regression_accuracy=_headline(verdict, "regression"),
        best_val_loss=record["best_val_loss"], adapter_bytes=record["adapter_bytes"],
        train_seconds=record["wall_seconds"], report=str(report_dir),
    )


def write_outputs(rows: list[SweepRow], out_dir: Path, name: str, method: str) -> dict[str, Path]:
    from gatekeeper.report.plots import panels

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {k: out_dir / f"sweep.{k}" for k in ("csv", "json", "svg")}
    with paths["csv"].open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=[*COLUMNS, "report"])
        writer.writeheader()
        writer.writerows(asdict(r) for r in rows)
    document = {"name": name, "method": method, "rows": [asdict(r) for r in rows]}
    paths["json"].write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    series = [
        ("task accuracy (adapter)", [(r.rank, r.target_accuracy) for r in rows]),
        ("regression accuracy (adapter)", [(r.rank, r.regression_accuracy) for r in rows]),
        ("best validation loss", [(r.rank, r.best_val_loss) for r in rows]),
        ("adapter bytes", [(r.rank, r.adapter_bytes) for r in rows]),
    ]
    paths["svg"].write_text(str(panels(series, x_label=f"{method} rank", standalone=True)) + "\n", encoding="utf-8")
    return paths
