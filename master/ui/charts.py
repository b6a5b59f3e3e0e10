"""Usage over time as inline SVG, drawn on the server: three small line charts need no chart library, no
script (the console's CSP allows none but its own) and work without JavaScript."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

WIDTH, HEIGHT = 320, 48


@dataclass(frozen=True)
class Chart:
    title: str
    points: str  # the SVG polyline's points
    last: float
    peak: float
    samples: int


def polyline(values: Sequence[float], width: int = WIDTH, height: int = HEIGHT) -> str:
    """`values` spread evenly across the width, scaled so that 0 is the bottom and the largest value (or
    1, when all are 0) the top; one value is a flat line across."""
    if not values:
        return ""
    top = max(max(values), 0.0) or 1.0
    if len(values) == 1:
        y = height - values[0] / top * height
        return f"0,{y:.1f} {width},{y:.1f}"
    step = width / (len(values) - 1)
    return " ".join(f"{i * step:.1f},{height - max(v, 0.0) / top * height:.1f}" for i, v in enumerate(values))


def usage_charts(history: Sequence[tuple[int, float, float, int]]) -> list[Chart]:
    """CPU, memory and processes from a task's usage samples (at_ms, cpuPct, rssMB, processes)."""
    if not history:
        return []
    out = []
    for title, column in (("CPU %", 1), ("Memory (RSS MB)", 2), ("Processes", 3)):
        values = [float(sample[column]) for sample in history]
        out.append(Chart(title, polyline(values), values[-1], max(values), len(values)))
    return out
