"""Chart geometry, computed on the server: scales, ticks and SVG path strings the templates draw as inline
SVG (no JavaScript needed to read a chart). Pure functions of plain numbers, so they are tested directly."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

# Tick steps for time axes, in seconds: the first that gives at most MAX_TICKS ticks is used.
TIME_STEPS = (
    1,
    2,
    5,
    10,
    15,
    30,
    60,
    120,
    300,
    600,
    900,
    1800,
    3600,
    7200,
    10800,
    21600,
    43200,
    86400,
    172800,
    604800,
)
MAX_TICKS = 8
MAX_LOG_TICKS = 4


@dataclass(frozen=True)
class Linear:
    """Maps [lo, hi] onto [start, end] (pixels; end < start for a y axis growing upwards)."""

    lo: float
    hi: float
    start: float
    end: float

    def __call__(self, value: float) -> float:
        span = self.hi - self.lo
        share = 0.5 if span <= 0 else (value - self.lo) / span
        return round(self.start + share * (self.end - self.start), 2)


@dataclass(frozen=True)
class Log:
    """A log10 scale for ratios (canary / baseline): 2x above and 2x below look the same size."""

    lo: float
    hi: float
    start: float
    end: float

    def __call__(self, value: float) -> float:
        value = min(max(value, self.lo), self.hi)
        return Linear(math.log10(self.lo), math.log10(self.hi), self.start, self.end)(math.log10(value))


@dataclass(frozen=True)
class Tick:
    position: float
    label: str


def time_ticks(start: float, end: float, scale: Linear, relative: bool = False) -> list[Tick]:
    """Ticks on whole multiples of a round step; labelled by clock time (UTC), or as +seconds from
    `start` when `relative`."""
    span = max(end - start, 1e-9)
    step = next((s for s in TIME_STEPS if span / s <= MAX_TICKS), TIME_STEPS[-1])
    origin = start if relative else 0.0
    first = math.ceil((start - origin) / step) * step + origin
    ticks = []
    value = first
    while value <= end + 1e-9:
        label = _relative_label(value - start) if relative else _clock_label(value, step)
        ticks.append(Tick(scale(value), label))
        value += step
    return ticks


def _relative_label(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 60:
        return f"+{seconds}s"
    minutes, rest = divmod(seconds, 60)
    if minutes < 60:
        return f"+{minutes}m{rest:02d}s" if rest else f"+{minutes}m"
    hours, minutes = divmod(minutes, 60)
    return f"+{hours}h{minutes:02d}m"


def _clock_label(epoch: float, step: float) -> str:
    moment = datetime.fromtimestamp(epoch, UTC)
    if step < 60:
        return moment.strftime("%H:%M:%S")
    if step < 86400:
        return moment.strftime("%H:%M")
    return moment.strftime("%m-%d %H:%M")


def value_ticks(lo: float, hi: float, scale: Linear, count: int = 4) -> list[Tick]:
    """About `count` round ticks between lo and hi."""
    if hi <= lo:
        return [Tick(scale(lo), format_number(lo))]
    raw = (hi - lo) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    value = math.ceil(lo / step) * step
    ticks = []
    while value <= hi + step * 1e-9:
        ticks.append(Tick(scale(value), format_number(value)))
        value += step
    return ticks


def log_ticks(lo: float, hi: float, scale: Log) -> list[Tick]:
    """Ticks at 1, 2, 5 times powers of ten (only powers of ten when the range is wide)."""
    decades = math.log10(hi) - math.log10(lo)
    multipliers = (1,) if decades > 1.5 else (1, 2, 5) if decades > 0.7 else (1, 1.2, 1.5, 2, 3, 5, 7)
    every = max(1, math.ceil(decades / MAX_LOG_TICKS))  # wide ranges: every second or third power of ten
    ticks = []
    for exponent in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1):
        if exponent % every:
            continue
        for multiplier in multipliers:
            value = multiplier * 10**exponent
            if lo <= value <= hi:
                ticks.append(Tick(scale(value), format_ratio(value)))
    return ticks


def format_number(value: float | None, digits: int = 3) -> str:
    """A readable number with `digits` significant digits: 0.0045, 12.3, 1.5k."""
    if value is None or not math.isfinite(value):
        return "-"
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 10000:
        return f"{value / 1000:.{max(digits - 2, 0)}f}k".replace(".0k", "k")
    text = f"{value:.{digits}g}"
    if "e" in text:
        text = f"{value:.{max(digits - 1 - math.floor(math.log10(magnitude)), 0)}f}"
    return text


def format_ratio(value: float | None) -> str:
    """A canary/baseline ratio as people say it: 1.05x, 0.8x, 1000x."""
    if value is None or not math.isfinite(value):
        return "-"
    return f"{format_number(value)}x"


def step_path(points: Sequence[tuple[float, float]], end_x: float | None = None) -> str:
    """An SVG path holding each value until the next point (weights change in steps), then to `end_x`."""
    if not points:
        return ""
    x, y = points[0]
    parts = [f"M{x:g},{y:g}"]
    for next_x, next_y in points[1:]:
        parts.append(f"H{next_x:g}")
        if next_y != y:
            parts.append(f"V{next_y:g}")
        y = next_y
    if end_x is not None and end_x > points[-1][0]:
        parts.append(f"H{end_x:g}")
    return " ".join(parts)


def line_path(points: Sequence[tuple[float, float] | None]) -> str:
    """A polyline through the points; None breaks the line (no data at that look)."""
    parts = []
    pen_down = False
    for point in points:
        if point is None:
            pen_down = False
            continue
        parts.append(f"{'L' if pen_down else 'M'}{point[0]:g},{point[1]:g}")
        pen_down = True
    return " ".join(parts)


def band_path(
    uppers: Sequence[tuple[float, float] | None], lowers: Sequence[tuple[float, float] | None]
) -> str:
    """Closed areas between upper and lower bounds, one per run of looks where both are known."""
    areas = []
    run: list[tuple[tuple[float, float], tuple[float, float]]] = []
    for upper, lower in [*zip(uppers, lowers, strict=True), (None, None)]:
        if upper is not None and lower is not None:
            run.append((upper, lower))
            continue
        if run:
            if len(run) == 1:  # a single look: a thin bar so it stays visible
                (ux, uy), (lx, ly) = run[0]
                run = [((ux - 2, uy), (lx - 2, ly)), ((ux + 2, uy), (lx + 2, ly))]
            top = " ".join(f"L{x:g},{y:g}" for (x, y), _ in run)
            bottom = " ".join(f"L{x:g},{y:g}" for _, (x, y) in reversed(run))
            areas.append(f"M{top[1:]} {bottom} Z")
            run = []
    return " ".join(areas)
