"""The governance settings of a spec, typed once at the boundary and carried in the plan (plain dataclasses that
Temporal's converter carries; every field has a default so plans made before governance still decode).

```yaml
spec:
  policy:                      # Rego policy gate before every stage (and every wave with everyWave)
    package: aicd.delivery     # its `deny` (and `warn`) rules are read
    modules: [policies/]       # .rego files or directories in the GitOps repo (reviewed like the rest)
    opa: {url: http://opa.platform:8181}   # or: ask this OPA server, which holds the policies
    overriders: [U024BE7LH]    # who may let a denied stage through (with a reason; audited)
  schedule:                    # deploy windows, freezes, holidays; the organisation's calendar file too
    timezone: Europe/Berlin
    stages: [production]
    windows: [{days: [mon-thu], hours: "09:00-16:00"}]
    freezes: [{name: year-end, from: "2026-12-20", until: "2027-01-04", reason: year-end}]
    holidays: ["2026-12-25"]
    breakGlass: [U024BE7LH]
    calendar: aicd/calendar.yaml
    carbon: {prometheus: {url: ...}, query: grid_carbon_intensity, below: 250, maxDelay: 6h}
  notifications:
    pagerduty: {routingKey: {env: PD_ROUTING_KEY}}
    webhook: {url: https://hooks.example.com/aicd, secret: {env: AICD_WEBHOOK_SECRET}}
    waitingTooLong: 4h
```
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any, Literal

from aicd.spec.durations import parse_duration
from aicd.spec.model import PrometheusConfig, SecretSource, _prometheus

DEFAULT_POLICY_PACKAGE = "aicd.delivery"
DEFAULT_POLICY_RECHECK_S = 300.0
DEFAULT_CALENDAR = "aicd/calendar.yaml"
DEFAULT_SCHEDULE_RECHECK_S = 60.0
DEFAULT_CARBON_INTERVAL_S = 300.0
DEFAULT_ROUTING_KEY_ENV = "AICD_PAGERDUTY_ROUTING_KEY"
Severity = Literal["critical", "error", "warning", "info"]
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
HOURS = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])-([01][0-9]|2[0-4]):([0-5][0-9])$")


def matches(patterns: list[str], value: str) -> bool:
    """Glob patterns (`prod*`); an empty list matches everything."""
    return not patterns or any(fnmatchcase(value, pattern) for pattern in patterns)


@dataclass(frozen=True)
class PolicyPlan:
    package: str = DEFAULT_POLICY_PACKAGE
    modules: list[str] = field(default_factory=list)  # paths in the GitOps repo (files or directories)
    opa_url: str | None = None  # an OPA server's base URL: it evaluates instead of the worker
    every_wave: bool = False
    overriders: list[str] = field(default_factory=list)
    recheck_s: float = DEFAULT_POLICY_RECHECK_S  # a denied stage is evaluated again this often (a fix)
    stages: list[str] = field(default_factory=list)  # globs of the stages it applies to; empty: all

    @property
    def rule_path(self) -> str:
        return "data." + self.package

    def describe(self) -> str:
        where = f"OPA at {self.opa_url}" if self.opa_url else f"modules {', '.join(self.modules)}"
        return f"policy {self.rule_path} ({where}){' before every wave' if self.every_wave else ''}"


@dataclass(frozen=True)
class WindowRule:
    """Open on these days (mon..sun) between these local times (end exclusive; 24:00 = midnight)."""

    days: list[str]
    start_minute: int
    end_minute: int
    timezone: str | None = None  # None: the calendar's or the spec's

    def describe(self, default_tz: str) -> str:
        def hhmm(minute: int) -> str:
            return f"{minute // 60:02d}:{minute % 60:02d}"

        return f"{','.join(self.days)} {hhmm(self.start_minute)}-{hhmm(self.end_minute)} {self.timezone or default_tz}"


@dataclass(frozen=True)
class FreezeRule:
    name: str
    start: str  # ISO date or date-time; a date means its midnight in the timezone
    until: str | None = None  # None: until the rule is removed
    reason: str = ""
    apps: list[str] = field(default_factory=list)  # globs; empty: every app
    stages: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class CarbonPlan:
    """Wait until `query` (one number, e.g. grid carbon intensity in gCO2/kWh) is below `below`, at most
    `max_delay_s`; then go anyway (a delivery never waits for ever on the weather)."""

    prometheus: PrometheusConfig
    query: str
    below: float
    max_delay_s: float
    interval_s: float = DEFAULT_CARBON_INTERVAL_S
    stages: list[str] = field(default_factory=list)

    def describe(self) -> str:
        from aicd.spec.durations import format_duration

        return f"carbon-aware: wait until {self.query} < {self.below:g}, at most {format_duration(self.max_delay_s)}"


@dataclass(frozen=True)
class SchedulePlan:
    timezone: str = "UTC"
    stages: list[str] = field(default_factory=list)  # the stages its windows, freezes, holidays apply to
    windows: list[WindowRule] = field(default_factory=list)
    freezes: list[FreezeRule] = field(default_factory=list)
    holidays: list[str] = field(default_factory=list)  # ISO dates, closed all day in the timezone
    break_glass: list[str] = field(default_factory=list)
    calendar: str | None = DEFAULT_CALENDAR  # the organisation's calendar file in the GitOps repo
    recheck_s: float = DEFAULT_SCHEDULE_RECHECK_S
    carbon: CarbonPlan | None = None


@dataclass(frozen=True)
class IncidentPlan:
    pagerduty_key: SecretSource | None = None  # where the worker reads the routing key
    severity: Severity = "error"
    webhook_url: str | None = None
    webhook_secret: SecretSource | None = None
    waiting_too_long_s: float | None = None

    @property
    def enabled(self) -> bool:
        return self.pagerduty_key is not None or self.webhook_url is not None


def parse_days(raw: list[str]) -> list[str]:
    """`[mon-fri, sun]` -> the day names in order; ValueError for anything else."""
    days: set[int] = set()
    for item in raw:
        first, _, last = str(item).lower().partition("-")
        if first not in DAYS or (last and last not in DAYS):
            raise ValueError(f"day {item!r} is not one of {', '.join(DAYS)} or a range like mon-fri")
        start, end = DAYS.index(first), DAYS.index(last or first)
        span = range(start, end + 1) if start <= end else [*range(start, 7), *range(0, end + 1)]
        days.update(span)
    return [DAYS[index] for index in sorted(days)]


def parse_hours(text: str) -> tuple[int, int]:
    found = HOURS.fullmatch(str(text))
    if not found:
        raise ValueError(f"hours {text!r} are not HH:MM-HH:MM")
    start = int(found[1]) * 60 + int(found[2])
    end = int(found[3]) * 60 + int(found[4])
    if end > 24 * 60 or end <= start:
        raise ValueError(f"hours {text!r}: the end must come after the start on the same day")
    return start, end


def parse_window(raw: dict[str, Any]) -> WindowRule:
    start, end = parse_hours(raw.get("hours", "00:00-24:00"))
    return WindowRule(parse_days(list(raw.get("days", list(DAYS)))), start, end, raw.get("timezone"))


def parse_freeze(raw: dict[str, Any], index: int) -> FreezeRule:
    return FreezeRule(
        name=str(raw.get("name") or f"freeze-{index + 1}"),
        start=str(raw["from"]),
        until=str(raw["until"]) if raw.get("until") is not None else None,
        reason=str(raw.get("reason", "")),
        apps=[str(app) for app in raw.get("apps", [])],
        stages=[str(stage) for stage in raw.get("stages", [])],
    )


def parse_holiday(raw: Any) -> str:
    return str(raw["date"] if isinstance(raw, dict) else raw)


def _secret(raw: dict[str, Any] | None) -> SecretSource | None:
    return None if raw is None else SecretSource(env=raw.get("env"), file=raw.get("file"))


def policy_from(raw: dict[str, Any] | None) -> PolicyPlan | None:
    if raw is None:
        return None
    return PolicyPlan(
        package=raw.get("package", DEFAULT_POLICY_PACKAGE),
        modules=list(raw.get("modules", [])),
        opa_url=raw["opa"]["url"].rstrip("/") if "opa" in raw else None,
        every_wave=bool(raw.get("everyWave", False)),
        overriders=list(raw.get("overriders", [])),
        recheck_s=parse_duration(raw["recheck"]) if "recheck" in raw else DEFAULT_POLICY_RECHECK_S,
        stages=list(raw.get("stages", [])),
    )


def schedule_from(raw: dict[str, Any] | None, prometheus: Any = None) -> SchedulePlan:
    """The spec's schedule; without one, the organisation's calendar (at its default path) still applies."""
    if raw is None:
        return SchedulePlan()
    carbon = raw.get("carbon")
    return SchedulePlan(
        timezone=raw.get("timezone", "UTC"),
        stages=list(raw.get("stages", [])),
        windows=[parse_window(window) for window in raw.get("windows", [])],
        freezes=[parse_freeze(freeze, index) for index, freeze in enumerate(raw.get("freezes", []))],
        holidays=[parse_holiday(day) for day in raw.get("holidays", [])],
        break_glass=list(raw.get("breakGlass", [])),
        calendar=raw.get("calendar", DEFAULT_CALENDAR),
        recheck_s=parse_duration(raw["recheck"]) if "recheck" in raw else DEFAULT_SCHEDULE_RECHECK_S,
        carbon=(
            CarbonPlan(
                prometheus=_prometheus(carbon["prometheus"]),
                query=carbon["query"],
                below=float(carbon["below"]),
                max_delay_s=parse_duration(carbon["maxDelay"]),
                interval_s=(
                    parse_duration(carbon["interval"]) if "interval" in carbon else DEFAULT_CARBON_INTERVAL_S
                ),
                stages=list(carbon.get("stages", [])),
            )
            if carbon
            else None
        ),
    )


def incidents_from(notifications: dict[str, Any]) -> IncidentPlan | None:
    pagerduty = notifications.get("pagerduty")
    webhook = notifications.get("webhook")
    waiting = notifications.get("waitingTooLong")
    if pagerduty is None and webhook is None:
        return None
    return IncidentPlan(
        pagerduty_key=(
            _secret(pagerduty.get("routingKey")) or SecretSource(env=DEFAULT_ROUTING_KEY_ENV)
            if pagerduty is not None
            else None
        ),
        severity=(pagerduty or {}).get("severity", "error"),
        webhook_url=webhook["url"] if webhook else None,
        webhook_secret=_secret(webhook.get("secret")) if webhook else None,
        waiting_too_long_s=parse_duration(waiting) if waiting else None,
    )
