"""The demo's self-contained HTML report: inline SVG charts, no script, no external asset."""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["bar_chart", "histogram", "table", "write_report"]

_W = 640
_COLORS = ("#3b6ea5", "#d9822b", "#5a9e5a", "#b64949", "#7d5ba6", "#8c8c8c")


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _caption(title: str) -> str:
    # The title is HTML, not SVG text: HTML wraps a long title, SVG would clip it at the edge.
    return f'<figure><figcaption>{_e(title)}</figcaption>'


def bar_chart(
    title: str,
    labels: Sequence[str],
    series: Mapping[str, Sequence[float]],
    *,
    fmt: str = "{:,.0f}",
    xmax: float | None = None,
) -> str:
    """Horizontal grouped bars: one group per label, one bar per series."""
    names = list(series)
    bar, gap, top = 16, 10, 6
    left = int(min(360, max(120, 12 + 6.2 * max(len(x) for x in labels))))
    group = bar * len(names) + gap
    height = top + group * len(labels) + 24 + 18 * len(names)
    vmax = xmax if xmax is not None else max([abs(v) for s in series.values() for v in s] + [1e-12])
    span = _W - left - 90
    parts = [
        _caption(title),
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_W}" height="{height}" '
        f'role="img" aria-label="{_e(title)}">',
    ]
    for i, label in enumerate(labels):
        y0 = top + i * group
        parts.append(
            f'<text x="{left - 6}" y="{y0 + group / 2}" text-anchor="end" '
            f'font-size="12">{_e(label)}</text>'
        )
        for j, name in enumerate(names):
            v = float(series[name][i])
            w = 0 if vmax == 0 else max(0.0, span * abs(v) / vmax)
            y = y0 + j * bar
            parts.append(
                f'<rect x="{left}" y="{y}" width="{w:.1f}" height="{bar - 2}" '
                f'fill="{_COLORS[j % len(_COLORS)]}"><title>{_e(name)}: '
                f"{_e(fmt.format(v))}</title></rect>"
            )
            parts.append(
                f'<text x="{left + w + 4:.1f}" y="{y + bar - 5}" font-size="11">'
                f"{_e(fmt.format(v))}</text>"
            )
    ly = top + group * len(labels) + 10
    for j, name in enumerate(names):
        parts.append(
            f'<rect x="{left}" y="{ly + 18 * j}" width="12" height="12" '
            f'fill="{_COLORS[j % len(_COLORS)]}"/><text x="{left + 18}" '
            f'y="{ly + 18 * j + 11}" font-size="12">{_e(name)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def histogram(title: str, values: Sequence[float], *, bins: int = 24, unit: str = "") -> str:
    """A vertical histogram; negative bins red, positive blue."""
    parts = [
        _caption(title),
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_W}" height="240" role="img" '
        f'aria-label="{_e(title)}">',
    ]
    if not values:
        parts.append('<text x="10" y="40">no values</text></svg></figure>')
        return "".join(parts)
    lo, hi = min(values), max(values)
    if lo == hi:
        lo, hi = lo - 1, hi + 1
    width = (hi - lo) / bins
    counts = [0] * bins
    for v in values:
        counts[min(int((v - lo) / width), bins - 1)] += 1
    cmax = max(counts)
    left, base, plot_w, plot_h = 40, 200, _W - 60, 180
    bw = plot_w / bins
    for i, c in enumerate(counts):
        h = plot_h * c / cmax
        mid = lo + (i + 0.5) * width
        color = "#b64949" if mid < 0 else "#3b6ea5"
        parts.append(
            f'<rect x="{left + i * bw:.1f}" y="{base - h:.1f}" width="{bw - 1:.1f}" '
            f'height="{h:.1f}" fill="{color}"><title>{lo + i * width:,.0f} to '
            f"{lo + (i + 1) * width:,.0f}{_e(unit)}: {c}</title></rect>"
        )
    parts.append(f'<text x="{left}" y="{base + 16}" font-size="11">{lo:,.0f}{_e(unit)}</text>')
    parts.append(
        f'<text x="{left + plot_w}" y="{base + 16}" font-size="11" text-anchor="end">'
        f"{hi:,.0f}{_e(unit)}</text>"
    )
    parts.append(
        f'<text x="{left - 4}" y="{base - plot_h + 10}" font-size="11" '
        f'text-anchor="end">{cmax}</text>'
    )
    parts.append("</svg></figure>")
    return "".join(parts)


def table(head: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    th = "".join(f"<th>{_e(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def write_report(path: Path, title: str, sections: Sequence[tuple[str, str]]) -> Path:
    """Write ``sections`` (heading, HTML fragment) as one page; returns ``path``."""
    css = (
        "body{font-family:system-ui,sans-serif;max-width:760px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;"
        "padding:3px 8px;font-size:13px;text-align:right}th{background:#f3f3f3}"
        "td:first-child{text-align:left}h2{margin-top:1.6em}.note{color:#666;font-size:13px}"
        "figure{margin:.5em 0 1em}figcaption{font-weight:bold;margin-bottom:4px}"
    )
    body = "".join(f"<h2>{_e(h)}</h2>{frag}" for h, frag in sections)
    doc = (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{_e(title)}'
        f"</title><style>{css}</style></head><body><h1>{_e(title)}</h1>{body}</body></html>"
    )
    tmp = path.with_suffix(".tmp")
    tmp.write_text(doc, encoding="utf-8")
    tmp.replace(path)
    return path
