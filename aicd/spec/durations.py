"""Durations (`30s`, `5m`, `1h30m`) and percentages (`10%`) as the spec writes them."""

from __future__ import annotations

import re

DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h|d))+$"
PERCENT_PATTERN = r"^[0-9]+(\.[0-9]+)?%$"
SECONDS_PATTERN = r"^[0-9]+$"  # whole seconds written as a string, as Argo Rollouts accepts them

_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h|d)")
_SECONDS = r"[0-9]+(?:\.[0-9]+)?"
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str | float) -> float:
    """Seconds in a duration: `30s`, `5m`, `1h30m`, `500ms`, or a plain number of seconds (`90`, as settings in
    the environment may give it; the spec's schema asks for a unit). ValueError names what is wrong."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        return float(text)
    if isinstance(text, str) and re.fullmatch(_SECONDS, text.strip()):
        return float(text)
    if not isinstance(text, str) or not re.fullmatch(DURATION_PATTERN, text):
        raise ValueError(f"unparsable duration {text!r} (use e.g. 30s, 5m, 1h30m, 24h)")
    return sum(float(number) * _UNIT_SECONDS[unit] for number, unit in _PART.findall(text))


def parse_percent(text: str) -> float:
    """A percentage string as a fraction: `10%` -> 0.1."""
    if not isinstance(text, str) or not re.fullmatch(PERCENT_PATTERN, text):
        raise ValueError(f"unparsable percentage {text!r} (use e.g. 5%, 12.5%)")
    return float(text[:-1]) / 100.0


def format_duration(seconds: float) -> str:
    """Shortest readable form: 90 -> `1m30s`."""
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    whole = round(seconds)
    parts = []
    for unit, size in (("h", 3600), ("m", 60), ("s", 1)):
        if whole >= size:
            parts.append(f"{whole // size}{unit}")
            whole %= size
    return "".join(parts) or "0s"
