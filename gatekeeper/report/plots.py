"""Small inline SVG plots for the HTML reports.

Inline SVG keeps a report one file that opens without network access or
scripts. Coordinates are rounded to one decimal and each plot is one line of
markup, so the same numbers give the same bytes and a changed plot shows as
one changed line in ``git diff``.
"""

from __future__ import annotations

from markupsafe import Markup, escape

EMPTY = Markup("")


def _svg(css_class: str, width: float, height: float, label: str, body: list[str]) -> Markup:
    return Markup(
        f'<svg class="{css_class}" viewBox="0 0 {width:g} {height:g}" width="{width:g}" height="{height:g}" '
        f'role="img" aria-label="{escape(label)}"><title>{escape(label)}</title>{"".join(body)}</svg>'
    )


def _unit(value: float | None) -> bool:
    return value is not None and 0.0 <= value <= 1.0


def bars(base: float | None, adapter: float | None, width: int = 120) -> Markup:
    """Base (grey) over adapter (blue) on a 0..1 track; nothing for values on another scale."""
    values = [v for v in (base, adapter) if v is not None]
    if not values or not all(_unit(v) for v in values):
        return EMPTY
    body = []
    for row, (value, side) in enumerate(((base, "base"), (adapter, "adapter"))):
        if value is None:
            continue
        y = row * 9
        body.append(f'<rect class="track" x="0" y="{y}" width="{width}" height="7"/>')
        body.append(f'<rect class="{side}" x="0" y="{y}" width="{value * width:.1f}" height="7"/>')
    label = f"base {_fmt(base)}, adapter {_fmt(adapter)}"
    return _svg("bars", width, 16, label, body)


def interval(delta: float | None, low: float, high: float, level: float = 0.95, width: int = 240) -> Markup:
    """A confidence interval of adapter - base on the fixed scale -1..+1, with zero marked.

    The scale is fixed so that two reports' intervals can be compared by eye.
    """
    pad, height = 12, 30
    x = lambda v: pad + (max(-1.0, min(1.0, v)) + 1) / 2 * (width - 2 * pad)  # noqa: E731
    verdict = "better" if low > 0 else "worse" if high < 0 else "unclear"
    body = [
        f'<line class="axis" x1="{pad}" y1="10" x2="{width - pad}" y2="10"/>',
        f'<line class="zero" x1="{x(0):.1f}" y1="2" x2="{x(0):.1f}" y2="18"/>',
        f'<rect class="ci {verdict}" x="{x(low):.1f}" y="6" width="{max(x(high) - x(low), 1.5):.1f}" height="8" rx="2"/>',
    ]
    if delta is not None:
        body.append(f'<circle class="{verdict}" cx="{x(delta):.1f}" cy="10" r="3.5"/>')
    body += [
        f'<text x="{pad}" y="28" text-anchor="middle">-1</text>',
        f'<text x="{x(0):.1f}" y="28" text-anchor="middle">0</text>',
        f'<text x="{width - pad}" y="28" text-anchor="middle">+1</text>',
    ]
    label = f"{level:.0%} interval of adapter - base: [{low:+.3f}, {high:+.3f}]"
    return _svg("interval", width, height, label, body)


def outcome_strip(ids: list[str], base_ok: list[bool], adapter_ok: list[bool], max_width: int = 720) -> Markup:
    """One cell per item, base row over adapter row: green right, red wrong; hover names the item."""
    if not ids:
        return EMPTY
    label_w, available = 56, max_width - 56
    per_row = min(len(ids), int(available // 3))  # cells no narrower than 3 px; more items wrap into bands
    cell = min(12.0, available / per_row)
    pitch = max(cell, 11.0)  # rows stay tall enough for their label
    body, y = [], 0.0
    for start in range(0, len(ids), per_row):
        for side, outcomes in (("base", base_ok), ("adapter", adapter_ok)):
            body.append(f'<text x="0" y="{y + min(cell, 10) - 0.5:.1f}">{side}</text>')
            for j, item in enumerate(ids[start : start + per_row]):
                state = "ok" if outcomes[start + j] else "bad"
                body.append(
                    f'<rect class="{state}" x="{label_w + j * cell:.1f}" y="{y:.1f}" width="{cell - 1:.1f}" '
                    f'height="{min(cell, 10) - 1:.1f}"><title>{escape(item)}: {side} {"right" if state == "ok" else "wrong"}</title></rect>'
                )
            y += pitch
        y += pitch / 2
    width = label_w + per_row * cell
    label = f"{len(ids)} items; base right on {sum(base_ok)}, adapter right on {sum(adapter_ok)}"
    return _svg("strip", round(width, 1), round(y, 1), label, body)


def curve(val: list[list[float]], train: list[list[float]] | None = None, width: int = 560, height: int = 200,
          selected: float | None = None, window: list[float] | None = None) -> Markup:
    """Validation loss (and training loss when given) by step; the dot marks the lowest validation loss.

    ``selected``: the step whose weights were kept, drawn as a dashed vertical line; ``window``:
    [first, last] step of a span shaded behind the curves (where a trend was judged).
    """
    if len(val) < 2:
        return EMPTY
    train = train or []
    points = val + train
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    left, right, top, bottom = 48, 12, 20, 28
    sx = lambda v: left + (v - x0) / ((x1 - x0) or 1) * (width - left - right)  # noqa: E731
    sy = lambda v: top + (y1 - v) / ((y1 - y0) or 1) * (height - top - bottom)  # noqa: E731
    body = []
    if window is not None:
        wx0, wx1 = sx(window[0]), sx(window[1])
        body.append(f'<rect class="window" x="{wx0:.1f}" y="{top}" width="{max(wx1 - wx0, 1.5):.1f}" '
                    f'height="{height - top - bottom}"><title>trend judged over steps {window[0]:g}-{window[1]:g}</title></rect>')
    for k in range(3):  # three horizontal grid lines with their values
        value = y0 + (y1 - y0) * k / 2
        body.append(f'<line class="grid" x1="{left}" y1="{sy(value):.1f}" x2="{width - right}" y2="{sy(value):.1f}"/>')
        body.append(f'<text x="{left - 4}" y="{sy(value) + 4:.1f}" text-anchor="end">{value:.3f}</text>')
    body.append(f'<text x="{left}" y="{height - 8}">step {x0:g}</text>')
    body.append(f'<text x="{width - right}" y="{height - 8}" text-anchor="end">step {x1:g}</text>')
    for series, name in ((train, "train"), (val, "val")):
        if len(series) >= 2:
            path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in series)
            body.append(f'<polyline class="{name}" fill="none" points="{path}"/>')
    best = min(val, key=lambda p: p[1])
    body.append(f'<circle class="best" cx="{sx(best[0]):.1f}" cy="{sy(best[1]):.1f}" r="4"/>')
    if selected is not None:
        body.append(f'<line class="selected" x1="{sx(selected):.1f}" y1="{top}" x2="{sx(selected):.1f}" '
                    f'y2="{height - bottom}"><title>selected step {selected:g}</title></line>')
        body.append(f'<text class="selected" x="{sx(selected) + 3:.1f}" y="{top + 10}">selected {selected:g}</text>')
    body.append(f'<text class="legend val" x="{width - right}" y="12" text-anchor="end">validation loss</text>')
    if len(train) >= 2:
        body.append(f'<text class="legend train" x="{width - right - 110}" y="12" text-anchor="end">training loss</text>')
    label = f"validation loss by step, lowest {best[1]:.4f} at step {best[0]:g}"
    if selected is not None:
        label += f", step {selected:g} selected"
    return _svg("curve", width, height, label, body)


def reliability(base: list[dict] | None, adapter: list[dict] | None, size: int = 240) -> Markup:
    """Reliability diagram: accuracy (y) against mean top-label confidence (x) per confidence bin,
    base (grey) and adapter (blue), with the diagonal a calibrated model lies on.

    Each side is a list of bins (``count``, ``confidence``, ``accuracy``, ``low``, ``high``); empty
    bins are left out. A point above the diagonal is underconfident, below it overconfident.
    """
    sides = [(name, [b for b in bins if b.get("count")]) for name, bins in (("base", base), ("adapter", adapter)) if bins]
    if not any(bins for _, bins in sides):
        return EMPTY
    left, right, top, bottom = 36, 10, 10, 30
    inner = size - left - right
    height = top + inner + bottom
    sx = lambda v: left + max(0.0, min(1.0, v)) * inner  # noqa: E731
    sy = lambda v: top + (1 - max(0.0, min(1.0, v))) * inner  # noqa: E731
    body = [
        f'<rect class="frame" x="{left}" y="{top}" width="{inner}" height="{inner}"/>',
        f'<line class="diag" x1="{sx(0):.1f}" y1="{sy(0):.1f}" x2="{sx(1):.1f}" y2="{sy(1):.1f}"/>',
    ]
    for value in (0.0, 0.5, 1.0):
        body.append(f'<text x="{sx(value):.1f}" y="{top + inner + 12}" text-anchor="middle">{value:g}</text>')
        body.append(f'<text x="{left - 4}" y="{sy(value) + 4:.1f}" text-anchor="end">{value:g}</text>')
    body.append(f'<text x="{left + inner / 2:.1f}" y="{height - 4}" text-anchor="middle">confidence</text>')
    body.append(f'<text x="10" y="{top + inner / 2:.1f}" text-anchor="middle" '
                f'transform="rotate(-90 10 {top + inner / 2:.1f})">accuracy</text>')
    for name, bins in sides:
        if len(bins) >= 2:
            path = " ".join(f"{sx(b['confidence']):.1f},{sy(b['accuracy']):.1f}" for b in bins)
            body.append(f'<polyline class="{name}" points="{path}"/>')
        for b in bins:
            body.append(
                f'<circle class="{name}" cx="{sx(b["confidence"]):.1f}" cy="{sy(b["accuracy"]):.1f}" r="3">'
                f'<title>{name}: {b["count"]} items with confidence {b["low"]:g}-{b["high"]:g}, '
                f'mean {b["confidence"]:.3f}, accuracy {b["accuracy"]:.3f}</title></circle>'
            )
    counts = ", ".join(f"{name} {sum(b['count'] for b in bins)} items in {len(bins)} bins" for name, bins in sides)
    return _svg("reliability", size, height, f"reliability diagram: {counts}", body)


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def _short(value: float) -> str:
    """Four significant digits, thousands as k/M, so axis labels stay narrow."""
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.4g}{suffix}"
    return f"{value:.4g}"


FRONTIER_STYLE = (
    "text{font:11px sans-serif;fill:#333}.axis{stroke:#999}.accept{fill:#dcfce7;stroke:#16a34a;stroke-dasharray:4 3}"
    ".pass{fill:#16a34a}.fail{fill:#dc2626}"
)


def frontier(points: list[tuple[str, float | None, float | None, bool]], min_gain: float | None,
             max_loss: float | None, width: int = 560, height: int = 360, standalone: bool = False) -> Markup:
    """Task gain (y) against regression loss (x), one dot per (label, loss, gain, passed), numbered
    as listed; the region the gates accept (gain >= min_gain, loss <= max_loss) shaded.

    Up and to the left is better: the candidates on the upper-left edge are the frontier.
    Points without both figures are left out (a sweep whose bundle lacks a regression gate).
    """
    shown = [(k, label, x, y, ok) for k, (label, x, y, ok) in enumerate(points, 1) if x is not None and y is not None]
    if not shown:
        return EMPTY
    left, right, top, bottom = 56, 16, 16, 40
    xs = [x for _, _, x, _, _ in shown] + [0.0] + ([max_loss] if max_loss is not None else [])
    ys = [y for _, _, _, y, _ in shown] + [0.0] + ([min_gain] if min_gain is not None else [])
    pad_x, pad_y = (max(xs) - min(xs)) * 0.08 or 0.05, (max(ys) - min(ys)) * 0.08 or 0.05
    x0, x1, y0, y1 = min(xs) - pad_x, max(xs) + pad_x, min(ys) - pad_y, max(ys) + pad_y

    def sx(v: float) -> float:
        return left + (v - x0) / (x1 - x0) * (width - left - right)

    def sy(v: float) -> float:
        return top + (y1 - v) / (y1 - y0) * (height - top - bottom)

    body = [f"<style>{FRONTIER_STYLE}</style>"] if standalone else []
    if min_gain is not None or max_loss is not None:  # the accepted region runs to the plot's edges
        rx0, rx1 = sx(x0), sx(max_loss if max_loss is not None else x1)
        ry0, ry1 = sy(y1), sy(min_gain if min_gain is not None else y0)
        body.append(f'<rect class="accept" x="{rx0:.1f}" y="{ry0:.1f}" width="{rx1 - rx0:.1f}" height="{ry1 - ry0:.1f}">'
                    f'<title>accepted: task gain &gt;= {_fmt(min_gain)}, regression loss &lt;= {_fmt(max_loss)}</title></rect>')
    body.append(f'<line class="axis" x1="{left}" y1="{sy(0):.1f}" x2="{width - right}" y2="{sy(0):.1f}"/>')
    body.append(f'<line class="axis" x1="{sx(0):.1f}" y1="{top}" x2="{sx(0):.1f}" y2="{height - bottom}"/>')
    for value in (x0 + pad_x, 0.0, x1 - pad_x):
        body.append(f'<text x="{sx(value):.1f}" y="{height - bottom + 14}" text-anchor="middle">{_short(round(value, 3))}</text>')
    for value in (y0 + pad_y, 0.0, y1 - pad_y):
        body.append(f'<text x="{left - 4}" y="{sy(value) + 4:.1f}" text-anchor="end">{_short(round(value, 3))}</text>')
    body.append(f'<text x="{(left + width - right) / 2:.1f}" y="{height - 4}" text-anchor="middle">'
                'regression loss (base - adapter accuracy)</text>')
    body.append(f'<text x="12" y="{(top + height - bottom) / 2:.1f}" text-anchor="middle" '
                f'transform="rotate(-90 12 {(top + height - bottom) / 2:.1f})">task gain (adapter - base)</text>')
    for k, label, x, y, ok in shown:
        verdict = "pass" if ok else "fail"
        body.append(f'<circle class="{verdict}" cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="5"><title>{k}: {escape(label)}: '
                    f'gain {_fmt(y)}, loss {_fmt(x)}, {verdict}</title></circle>')
        body.append(f'<text x="{sx(x) + 7:.1f}" y="{sy(y) - 6:.1f}">{k}</text>')
    svg = _svg("frontier", width, height, "task gain against regression loss, per sweep point", body)
    return Markup(str(svg).replace("<svg ", '<svg xmlns="http://www.w3.org/2000/svg" ', 1)) if standalone else svg
