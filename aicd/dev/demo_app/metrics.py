"""Just enough of the Prometheus text exposition format (0.0.4) for the demo app, without a dependency."""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# The client libraries' default buckets: what dashboards and histogram_quantile queries expect.
DEFAULT_BUCKETS: tuple[float, ...] = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
)

LabelKey = tuple[tuple[str, str], ...]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(pairs: LabelKey, extra: tuple[str, str] | None = None) -> str:
    items = [*pairs, extra] if extra else list(pairs)
    if not items:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in items) + "}"


def _number(value: float) -> str:
    if value == float("inf"):
        return "+Inf"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


class Counter:
    def __init__(self, name: str, help_text: str, const_labels: Mapping[str, str]) -> None:
        self.name = name
        self.help = help_text
        self._const = tuple(const_labels.items())
        self._values: dict[LabelKey, float] = {}

    def inc(self, labels: Mapping[str, str] | None = None, amount: float = 1.0) -> None:
        key = self._const + tuple((labels or {}).items())
        self._values[key] = self._values.get(key, 0.0) + amount

    def get(self, labels: Mapping[str, str] | None = None) -> float:
        return self._values.get(self._const + tuple((labels or {}).items()), 0.0)

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} counter"]
        lines += [f"{self.name}{_labels(key)} {_number(v)}" for key, v in self._values.items()]
        return lines


class Histogram:
    def __init__(
        self,
        name: str,
        help_text: str,
        const_labels: Mapping[str, str],
        buckets: Sequence[float] = DEFAULT_BUCKETS,
    ) -> None:
        self.name = name
        self.help = help_text
        self._const = tuple(const_labels.items())
        self._bounds = sorted(buckets)
        # per label set: non-cumulative bucket counts (last = +Inf), sum, count
        self._series: dict[LabelKey, tuple[list[int], list[float]]] = {}

    def observe(self, value: float, labels: Mapping[str, str] | None = None) -> None:
        key = self._const + tuple((labels or {}).items())
        counts, total = self._series.setdefault(key, ([0] * (len(self._bounds) + 1), [0.0]))
        counts[bisect.bisect_left(self._bounds, value)] += 1
        total[0] += value

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        for key, (counts, total) in self._series.items():
            running = 0
            for bound, n in zip([*self._bounds, float("inf")], counts, strict=True):
                running += n
                lines.append(f"{self.name}_bucket{_labels(key, ('le', _number(bound)))} {running}")
            lines.append(f"{self.name}_sum{_labels(key)} {_number(total[0])}")
            lines.append(f"{self.name}_count{_labels(key)} {running}")
        return lines


def render(*metrics: Counter | Histogram) -> str:
    lines: list[str] = []
    for metric in metrics:
        lines += metric.render()
    return "\n".join(lines) + "\n"
