"""Storage used over time as an inline SVG line chart, drawn on the server (no script, no CDN)."""

from __future__ import annotations

import time
from html import escape

from dockyard.api.dashboard.render import human_bytes

W, H = 720, 220
LEFT, RIGHT, TOP, BOTTOM = 72, 12, 12, 28


def _ticks(top: float, n: int = 4) -> list[float]:
    return [top * i / n for i in range(n + 1)]


def usage_svg(samples, start: float, end: float) -> str:
    """Bytes stored (solid) and bytes the repositories reference (dashed) from ``start`` to ``end``."""
    if not samples:
        return ""
    if len(samples) > W // 2:  # no more points than the plot has room for (keep the last)
        step = -(-len(samples) // (W // 2))
        samples = samples[::-1][::step][::-1]
    # a registry younger than the range: draw from its first sample, not from an empty past
    start = max(start, samples[0].at - 0.02 * (end - samples[0].at))
    if end - start < 60:
        start = end - 60
    top = max(max(s.bytes for s in samples), max(s.logical_bytes for s in samples), 1) * 1.1
    span = max(end - start, 1.0)

    def x(t: float) -> float:
        return LEFT + (W - LEFT - RIGHT) * (t - start) / span

    def y(v: float) -> float:
        return TOP + (H - TOP - BOTTOM) * (1 - v / top)

    parts = [f'<svg class="plot" viewBox="0 0 {W} {H}" role="img" aria-label="storage used over time" '
             f'xmlns="http://www.w3.org/2000/svg">']
    for v in _ticks(top):
        parts.append(f'<line class="grid" x1="{LEFT}" x2="{W - RIGHT}" y1="{y(v):.1f}" y2="{y(v):.1f}"/>'
                     f'<text class="axis" x="{LEFT - 6}" y="{y(v) + 4:.1f}" text-anchor="end">'
                     f'{escape(human_bytes(v))}</text>')
    fmt = "%H:%M:%S" if span < 3 * 3600 else "%m-%d %H:%M" if span < 4 * 86400 else "%Y-%m-%d"
    for i in range(5):
        t = start + span * i / 4
        label = time.strftime(fmt, time.gmtime(t))
        anchor = "start" if i == 0 else "end" if i == 4 else "middle"
        parts.append(f'<text class="axis" x="{x(t):.1f}" y="{H - 8}" text-anchor="{anchor}">{label}</text>')
    for attr, cls in (("logical_bytes", "line logical"), ("bytes", "line stored")):
        points = " ".join(f"{x(s.at):.1f},{y(getattr(s, attr)):.1f}" for s in samples)
        parts.append(f'<polyline class="{cls}" points="{points}"/>')
    last = samples[-1]
    parts.append(f'<circle class="dot" cx="{x(last.at):.1f}" cy="{y(last.bytes):.1f}" r="3"><title>'
                 f'{escape(human_bytes(last.bytes))} stored</title></circle></svg>')
    return "".join(parts)
