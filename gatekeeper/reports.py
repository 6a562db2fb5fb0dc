"""verdict.json, junit.xml and report.html, all rendered from the verdict.

Reports are deterministic and line-oriented (stable order, one item per line,
no random ids) so that ``git diff`` between two candidates' reports reads
well. The only part that changes between two checks of the same bundle is the
timing section, kept last in each file.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

import jinja2

from gatekeeper.verdict import Verdict

REPORT_FILES = ("verdict.json", "junit.xml", "report.html")


def render_json(verdict: Verdict) -> str:
    return json.dumps(verdict.model_dump(mode="json"), indent=2, ensure_ascii=False) + "\n"


def render_junit(verdict: Verdict) -> str:
    suite = f"gatekeeper.{verdict.bundle.name}.v{verdict.bundle.version}"
    failures = sum(g.status == "failed" and g.required for g in verdict.gates)
    errors = sum(g.status == "error" for g in verdict.gates)
    skipped = sum(g.status != "passed" and not g.required and g.status != "error" for g in verdict.gates)
    lines = [
        '<?xml version="1.0" encoding="utf-8"?>',
        f'<testsuites name="gatekeeper" tests="{len(verdict.gates)}" failures="{failures}" errors="{errors}">',
        f'  <testsuite name={quoteattr(suite)} tests="{len(verdict.gates)}" failures="{failures}" '
        f'errors="{errors}" skipped="{skipped}">',
    ]
    for result in verdict.gates:
        lines.append(f'    <testcase classname={quoteattr(suite)} name={quoteattr(result.name)}>')
        body = "\n".join(
            [result.rule, result.summary]
            + [f"{m.name}: base={m.base} adapter={m.adapter} delta={m.delta} threshold={m.threshold}" for m in result.metrics]
        )
        if result.status == "error":
            lines.append(f"      <error message={quoteattr(result.error or 'error')}>{escape(body)}</error>")
        elif result.status == "failed" and result.required:
            lines.append(f"      <failure message={quoteattr(result.summary or result.rule)}>{escape(body)}</failure>")
        elif result.status == "failed":
            lines.append(f"      <skipped message={quoteattr('advisory gate failed: ' + result.summary)}/>")
        lines.append("    </testcase>")
    timing = json.dumps(verdict.timing, sort_keys=True)
    lines += [f"    <system-out>timing: {escape(timing)}</system-out>", "  </testsuite>", "</testsuites>"]
    return "\n".join(lines) + "\n"


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("gatekeeper", "templates"),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["num"] = _num
    env.globals["svg_curve"] = svg_curve
    env.globals["svg_bars"] = svg_bars
    return env


def _num(value, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def svg_bars(base: float | None, adapter: float | None, width: int = 120) -> jinja2.utils.markupsafe.Markup:
    """Two bars (base grey, adapter blue) for a value in [0, 1]; empty for other scales."""
    values = [v for v in (base, adapter) if v is not None]
    if not values or any(v < 0 or v > 1 for v in values):
        return jinja2.utils.markupsafe.Markup("")
    rows = []
    for y, (value, cls) in enumerate(((base, "b"), (adapter, "a"))):
        if value is not None:
            rows.append(f'<rect class="{cls}" x="0" y="{y * 9}" width="{value * width:.1f}" height="7"/>')
    return jinja2.utils.markupsafe.Markup(
        f'<svg class="bars" width="{width}" height="16" role="img" aria-label="base vs adapter">{"".join(rows)}</svg>'
    )


def svg_curve(points: list[list[float]], width: int = 480, height: int = 160) -> jinja2.utils.markupsafe.Markup:
    """A line plot of (step, value) pairs, with axis labels; inline so the report needs no network."""
    if len(points) < 2:
        return jinja2.utils.markupsafe.Markup("")
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    pad = 30
    sx = lambda x: pad + (x - x0) / ((x1 - x0) or 1) * (width - 2 * pad)  # noqa: E731
    sy = lambda y: height - pad - (y - y0) / ((y1 - y0) or 1) * (height - 2 * pad)  # noqa: E731
    path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in points)
    best = min(points, key=lambda p: p[1])
    return jinja2.utils.markupsafe.Markup(
        f'<svg class="curve" width="{width}" height="{height}" role="img" aria-label="validation loss by step">'
        f'<polyline fill="none" points="{path}"/>'
        f'<circle cx="{sx(best[0]):.1f}" cy="{sy(best[1]):.1f}" r="4"/>'
        f'<text x="{pad}" y="{height - 8}">step {x0:g}</text>'
        f'<text x="{width - pad}" y="{height - 8}" text-anchor="end">step {x1:g}</text>'
        f'<text x="2" y="{pad - 8}">{y1:.3f}</text><text x="2" y="{height - pad + 12}">{y0:.3f}</text>'
        f"</svg>"
    )


def render_html(verdict: Verdict) -> str:
    return _environment().get_template("report.html.j2").render(v=verdict)


def write_reports(verdict: Verdict, out_dir: Path) -> dict[str, Path]:
    """Render everything first, then move each finished file into place atomically."""
    rendered = {
        "verdict.json": render_json(verdict),
        "junit.xml": render_junit(verdict),
        "report.html": render_html(verdict),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=out_dir))
    try:
        for name, text in rendered.items():
            (staging / name).write_text(text, encoding="utf-8")
        for name in rendered:
            os.replace(staging / name, out_dir / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {name: out_dir / name for name in rendered}


def load_verdict(path: Path) -> Verdict:
    return Verdict.model_validate_json(path.read_text(encoding="utf-8"))
