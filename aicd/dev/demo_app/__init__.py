"""The demo application the embedded stack deploys: a small HTTP service whose behaviour per version
(error ratio, added latency, failing health) comes from that version's `app.yaml`, so a bad release
really is bad and the canary analysis has something real to catch.

    python -m aicd.dev.demo_app --port P --track stable|canary --version V --config app.yaml [--app NAME]
    python -m aicd.dev.demo_app.build --source DIR --out ARTIFACTS_ROOT --tag TAG
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

CONFIG_FILE = "app.yaml"


class ConfigError(ValueError):
    """The app.yaml is malformed; the message says which file and which key."""


@dataclass(frozen=True)
class AppConfig:
    error_ratio: float = 0.0  # share of requests to "/" answered with 500, drawn at random
    added_latency_ms: float = 0.0  # extra delay on every request to "/"
    unhealthy: bool = False  # /health answers 503: the release never becomes healthy
    name: str | None = None  # optional app name (the `app` metrics label) when the target gives none
    # Answer with this version instead of the one it runs (a mislabelled build; the demo's tests use it).
    claims_version: str | None = None


def parse_config(data: Any, source: str = "app.yaml") -> AppConfig:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
    known = {"error_ratio", "added_latency_ms", "unhealthy", "name", "claims_version"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {unknown}; known: {sorted(known)}")
    error_ratio = _number(data.get("error_ratio", 0.0), f"{source}: error_ratio")
    if not 0.0 <= error_ratio <= 1.0:
        raise ConfigError(f"{source}: error_ratio must be within 0..1, got {error_ratio}")
    latency = _number(data.get("added_latency_ms", 0.0), f"{source}: added_latency_ms")
    if latency < 0:
        raise ConfigError(f"{source}: added_latency_ms must be >= 0, got {latency}")
    unhealthy = data.get("unhealthy", False)
    if not isinstance(unhealthy, bool):
        raise ConfigError(f"{source}: unhealthy must be true or false, got {unhealthy!r}")
    name = data.get("name")
    if name is not None and not isinstance(name, str):
        raise ConfigError(f"{source}: name must be a string, got {name!r}")
    claims = data.get("claims_version")
    if claims is not None and (not isinstance(claims, str) or not claims):
        raise ConfigError(f"{source}: claims_version must be a non-empty string, got {claims!r}")
    return AppConfig(
        error_ratio=error_ratio,
        added_latency_ms=latency,
        unhealthy=unhealthy,
        name=name,
        claims_version=claims,
    )


def load_config(path: Path) -> AppConfig:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    return parse_config(data, str(path))


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{where} must be a number, got {value!r}")
    return float(value)
