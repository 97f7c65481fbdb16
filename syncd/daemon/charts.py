"""Small SVG charts for the status page, rendered on the server: no script, no asset.

Pure functions from figures to markup. Every text that reaches the SVG (a sink's
name, a title, a label) is escaped here, so a name from a configuration or a CRM can
never become markup; numbers are formatted by the caller's ``fmt`` and escaped too.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

WIDTH, HEIGHT = 720, 190
LEFT, RIGHT, TOP, BOTTOM = 56, 12, 26, 30
# Colour-blind-safe (Okabe-Ito); a sink past the last reuses the first.
COLOURS = ("#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00", "#000000")


@dataclass(frozen=True)
class Series:
    """One named row of figures, one per label; None: no figure for that label."""

    name: str
    values: Sequence[float | None]


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def nice_ceiling(value: float) -> float:
    """Return the smallest 1, 2 or 5 times a power of ten at or above ``value`` (1 for 0)."""
    if not value > 0 or math.isinf(value):
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if value <= step * power * (1 + 1e-9):
            return float(step * power)
    return float(10 * power)  # pragma: no cover - the loop ends at 10


def count(value: float) -> str:
    """Return a count as the axis shows it: 1200 → ``1.2k``."""
    if value >= 10_000:
        return f"{value / 1000:.0f}k"
    if value >= 1000:
        return f"{value / 1000:.1f}k"
    return f"{value:.0f}" if value == int(value) else f"{value:.1f}"


def duration(seconds: float) -> str:
    """Return a duration as the axis shows it: ``45 s``, ``12 min``, ``3.5 h``."""
    if 0 < seconds < 10:  # a fast dialer's sub-second pushes: 0.5 s, not "0 s"
        return f"{seconds:.1f} s"
    if seconds < 100:
        return f"{seconds:.0f} s"
    if seconds < 6000:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def lead_time(seconds: float | None) -> str:
    """Return a speed to lead as status shows it: ``120 ms`` below a second, else
    ``duration``'s; ``-`` for none."""
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    return duration(seconds)


def chart(
    title: str,
    labels: Sequence[str],
    series: Sequence[Series],
    *,
    kind: str = "bars",
    fmt: Callable[[float], str] = count,
    ident: str = "",
) -> str:
    """Return an SVG chart of ``series`` over ``labels``: stacked bars or lines.

    ``labels`` name the x positions (every third is written under the axis); each
    mark carries a ``<title>`` with its series, label and value (the browser shows it
    on hover) and a ``data-value`` attribute.
    """
    if kind not in ("bars", "lines"):
        raise ValueError(f"kind: bars or lines, not {kind!r}")
    n = len(labels)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    top = _top(series, n, stacked=kind == "bars")
    scale = nice_ceiling(top)
    step = plot_w / max(n, 1)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img"'
        f"{f' id={chr(34)}{_e(ident)}{chr(34)}' if ident else ''}"
        f' viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}">',
        f"<title>{_e(title)}</title>",
        f'<text x="{LEFT}" y="14" class="t">{_e(title)}</text>',
    ]
    for frac in (0.0, 0.5, 1.0):  # gridlines with their values
        y = TOP + plot_h * (1 - frac)
        parts.append(
            f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" class="g"/>'
        )
        parts.append(
            f'<text x="{LEFT - 4}" y="{y + 4:.1f}" class="y">{_e(fmt(scale * frac))}</text>'
        )
    for i, label in enumerate(labels):
        if i % 3 == 0:
            x = LEFT + step * (i + 0.5)
            parts.append(f'<text x="{x:.1f}" y="{HEIGHT - 12}" class="x">{_e(label)}</text>')
    if top <= 0:
        parts.append(
            f'<text x="{LEFT + plot_w / 2:.1f}" y="{TOP + plot_h / 2:.1f}" class="none">'
            "no figures yet</text>"
        )
    elif kind == "bars":
        parts += _bars(labels, series, scale, step, fmt)
    else:
        parts += _lines(labels, series, scale, step, fmt)
    parts += _legend(series)
    parts.append("</svg>")
    return "".join(parts)


def _top(series: Sequence[Series], n: int, *, stacked: bool) -> float:
    if stacked:
        sums = [sum(s.values[i] or 0 for s in series if i < len(s.values)) for i in range(n)]
        return max(sums, default=0.0)
    return max((v for s in series for v in s.values[:n] if v is not None), default=0.0)


def _y(value: float, scale: float) -> float:
    return TOP + (HEIGHT - TOP - BOTTOM) * (1 - value / scale)


def _bars(
    labels: Sequence[str],
    series: Sequence[Series],
    scale: float,
    step: float,
    fmt: Callable[[float], str],
) -> list[str]:
    parts = []
    width = max(step * 0.7, 1.0)
    for i, label in enumerate(labels):
        base = 0.0
        x = LEFT + step * i + (step - width) / 2
        for k, s in enumerate(series):
            value = s.values[i] if i < len(s.values) else None
            if not value:
                continue
            y_top, y_base = _y(base + value, scale), _y(base, scale)
            parts.append(
                f'<rect class="bar" x="{x:.1f}" y="{y_top:.1f}" width="{width:.1f}"'
                f' height="{y_base - y_top:.1f}" fill="{COLOURS[k % len(COLOURS)]}"'
                f' data-value="{_e(value)}"><title>{_e(s.name)}, {_e(label)}: '
                f"{_e(fmt(value))}</title></rect>"
            )
            base += value
    return parts


def _lines(
    labels: Sequence[str],
    series: Sequence[Series],
    scale: float,
    step: float,
    fmt: Callable[[float], str],
) -> list[str]:
    parts = []
    for k, s in enumerate(series):
        colour = COLOURS[k % len(COLOURS)]
        points = [
            (LEFT + step * (i + 0.5), _y(v, scale), labels[i], v)
            for i, v in enumerate(s.values[: len(labels)])
            if v is not None
        ]
        if len(points) > 1:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y, _, _ in points)
            parts.append(
                f'<polyline class="line" points="{path}" fill="none" stroke="{colour}"'
                ' stroke-width="2"/>'
            )
        for x, y, label, v in points:  # a lone figure is a dot, not an invisible line
            parts.append(
                f'<circle class="dot" cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colour}"'
                f' data-value="{_e(v)}"><title>{_e(s.name)}, {_e(label)}: '
                f"{_e(fmt(v))}</title></circle>"
            )
    return parts


def _legend(series: Sequence[Series]) -> list[str]:
    parts = []
    x = WIDTH - RIGHT - 150 * len(series)
    for k, s in enumerate(series):
        colour = COLOURS[k % len(COLOURS)]
        left = max(x + 150 * k, LEFT + 200)
        parts.append(f'<rect x="{left}" y="5" width="10" height="10" fill="{colour}"/>')
        parts.append(f'<text x="{left + 14}" y="14" class="l">{_e(s.name[:20])}</text>')
    return parts


SPARKS = "▁▂▃▄▅▆▇█"


def sparkline(values: Sequence[float | None]) -> str:
    """Return one character per figure for a terminal (``syncd status``): eight heights
    scaled to the largest, a space for no figure, ``▁`` for zero."""
    top = max((v for v in values if v is not None), default=0.0)
    out = []
    for v in values:
        if v is None:
            out.append(" ")
        elif top <= 0 or v <= 0:
            out.append(SPARKS[0])
        else:
            out.append(SPARKS[max(1, min(len(SPARKS) - 1, round(v / top * (len(SPARKS) - 1))))])
    return "".join(out)
