"""verdict.json, junit.xml and report.html, all rendered from the verdict.

Reports are deterministic and line-oriented (stable order, one item per line,
no random ids) so that ``git diff`` between two candidates' reports reads
well. The only part that changes between two checks of the same bundle is the
timing section, kept last in each file.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import TYPE_CHECKING
from xml.sax.saxutils import escape, quoteattr

import jinja2
from markupsafe import Markup

from gatekeeper._util.files import write_atomic
from gatekeeper.gating.result import Figure, GateResult
from gatekeeper.report import plots
from gatekeeper.verdict.model import Verdict

if TYPE_CHECKING:
    from gatekeeper.training.inspect import Inspection
    from gatekeeper.verdict.diff import VerdictDiff

REPORT_FILES = ("verdict.json", "junit.xml", "report.html")


def render_json(verdict: Verdict) -> str:
    return json.dumps(verdict.model_dump(mode="json"), indent=2, ensure_ascii=False) + "\n"


def render_junit(verdict: Verdict) -> str:
    suite = f"gatekeeper.{verdict.bundle.name}.v{verdict.bundle.version}"
    failures = sum(g.status == "failed" and g.required for g in verdict.gates)
    errors = sum(g.status == "error" for g in verdict.gates)
    skipped = sum(g.status == "skipped" or (g.status == "failed" and not g.required) for g in verdict.gates)
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
        elif result.status == "skipped":
            lines.append(f"      <skipped message={quoteattr('not evaluated: ' + (result.skip_reason or ''))}/>")
        lines.append("    </testcase>")
    timing = json.dumps(verdict.timing, sort_keys=True)
    lines += [f"    <system-out>timing: {escape(timing)}</system-out>", "  </testsuite>", "</testsuites>"]
    return "\n".join(lines) + "\n"


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("gatekeeper.report", "templates"),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["num"] = _num
    env.filters["signed"] = _signed
    env.filters["oneline"] = oneline
    env.filters["raw"] = raw
    env.filters["text"] = lambda value: Markup(_text(value))
    env.globals.update(plots=plots, strip=outcome_strip, figure=figure)
    return env


def _num(value, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        if value != 0 and abs(value) < 10 ** -digits:  # a drift of 3e-7 is not 0.000
            return f"{value:.2e}"
        return f"{value:.{digits}f}"
    return str(value)


def _signed(value, digits: int = 3) -> str:
    return "—" if value is None else f"{value:+.{digits}f}"


def oneline(value) -> Markup:
    """Escape text and write its line breaks as character references.

    The browser shows the breaks (cells use ``white-space: pre-wrap``), while
    the HTML source keeps one item per line, so ``git diff`` stays readable
    even when a model's raw output spans several lines.
    """
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, sort_keys=True)
    return Markup(_text(text).replace("\r", "&#13;").replace("\n", "&#10;"))


def _text(value: str) -> str:
    """Escaped for an element's text: quotes stay quotes, so JSON in a cell reads as JSON in a diff."""
    return html.escape(value, quote=False)


def raw(value: str | None) -> Markup:
    """A model's raw output: line breaks marked visibly (they decide whether JSON parses), empty said so."""
    if not value:
        return Markup('<span class="muted">(empty)</span>')
    marked = _text(value).replace("\r", "␍").replace("\n", '<span class="nl">↵</span>&#10;')
    return Markup(marked)


def base_outcomes(result: GateResult) -> list[bool] | None:
    """Base outcomes per item, recovered from the adapter's outcomes and the paired flips."""
    if result.outcomes is None or result.paired is None:
        return None
    to_fail, to_pass = set(result.paired.flipped_to_fail), set(result.paired.flipped_to_pass)
    return [item in to_fail or (ok and item not in to_pass) for item, ok in result.outcomes.items()]


def outcome_strip(result: GateResult) -> Markup:
    base = base_outcomes(result)
    if base is None:
        return plots.EMPTY
    return plots.outcome_strip(list(result.outcomes), base, list(result.outcomes.values()))


def figure(fig: Figure) -> Markup:
    """A gate's figure drawn from the numbers in its result; a kind this version cannot draw, nothing."""
    data = fig.data
    if fig.kind == "reliability":
        return plots.reliability(data.get("base"), data.get("adapter"))
    if fig.kind == "loss_curves":
        return plots.curve(data.get("val_curve") or [], data.get("train_curve"), selected=data.get("selected_step"),
                           window=data.get("window"))
    return plots.EMPTY


def render_html(verdict: Verdict) -> str:
    return _environment().get_template("report.html.j2").render(v=verdict)


def render_diff_html(diff: VerdictDiff) -> str:
    return _environment().get_template("diff.html.j2").render(d=diff)


def write_diff_html(diff: VerdictDiff, path: Path) -> Path:
    """Write the side-by-side diff; a reader never sees a half-written file."""
    return write_atomic(path, render_diff_html(diff))


def render_inspect_html(inspection: Inspection) -> str:
    from gatekeeper.training import inspect

    return _environment().get_template("inspect.html.j2").render(i=inspection, ins=inspect)


def write_inspect_html(inspection: Inspection, path: Path) -> Path:
    """``gatekeeper inspect --html``: the terminal's view as one self-contained page, written atomically."""
    return write_atomic(path, render_inspect_html(inspection))


def write_reports(verdict: Verdict, out_dir: Path) -> dict[str, Path]:
    """Render everything first, then move each finished file into place atomically."""
    rendered = {
        "verdict.json": render_json(verdict),
        "junit.xml": render_junit(verdict),
        "report.html": render_html(verdict),
    }
    for name, text in rendered.items():
        write_atomic(out_dir / name, text)
    return {name: out_dir / name for name in rendered}
