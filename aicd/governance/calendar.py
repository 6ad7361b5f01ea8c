"""When a stage may start: deploy windows, freezes and holidays, from the spec's `schedule`, the
organisation's calendar file in the GitOps repository (so changing it is itself a reviewed commit), and the
freezes on-call set with `aicd freeze`.

```yaml
# aicd/calendar.yaml in the GitOps repository
apiVersion: aicd.dev/v1alpha1
kind: DeliveryCalendar
timezone: Europe/Berlin
windows:                                   # when set, matching stages start only inside one of them
  - {days: [mon-thu], hours: "09:00-16:00", stages: ["prod*"]}
freezes:
  - {name: year-end, from: "2026-12-20", until: "2027-01-04", reason: "year-end freeze"}
holidays:
  - {date: "2026-12-25", name: Christmas}
breakGlass: [U024BE7LH, oncall-lead]      # who may let one delivery through a freeze or outside a window
```

Each source is a rule set; a stage may start when no freeze or holiday of any set holds it and every set
whose windows apply to it has one of them open. `check` answers for one moment, and when a window is closed
it also says when the next one opens (the delivery sleeps on a durable timer until then). Pure functions of
the moment handed in: the workflow passes workflow.now(), so a time-skipping test moves them too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from aicd.governance.model import (
    DAYS,
    FreezeRule,
    SchedulePlan,
    WindowRule,
    matches,
    parse_days,
    parse_freeze,
    parse_holiday,
    parse_hours,
)
from aicd.spec.errors import SpecError, json_path
from aicd.spec.yamlsafe import Path, YamlReadError, read_yaml

CALENDAR_KIND = "DeliveryCalendar"
LOOKAHEAD_DAYS = 15  # how far ahead the next opening of a window is searched


@dataclass(frozen=True)
class ScopedWindow:
    rule: WindowRule
    apps: list[str] = field(default_factory=list)
    stages: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class RuleSet:
    """One source of rules: the spec's schedule, the calendar file, or the freeze button."""

    source: str  # "spec", the calendar's path, "aicd freeze"
    timezone: str
    windows: list[ScopedWindow] = field(default_factory=list)
    freezes: list[FreezeRule] = field(default_factory=list)
    break_glass: list[str] = field(default_factory=list)


@dataclass
class Hold:
    kind: str  # freeze | window
    reason: str
    until: str | None = None  # ISO time it ends (a freeze) or opens (a window); None: not known


@dataclass
class ScheduleAnswer:
    freeze: Hold | None = None
    window: Hold | None = None
    break_glass: list[str] = field(default_factory=list)


class CalendarInvalid(ValueError):
    def __init__(self, errors: list[SpecError]) -> None:
        super().__init__("; ".join(str(error) for error in errors))
        self.errors = errors


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r} (use an IANA name like Europe/Berlin)") from None


def moment(text: str, tz: str) -> datetime:
    """An ISO date (its midnight in `tz`) or date-time (local to `tz` unless it has an offset), in UTC."""
    try:
        if len(text) == 10:
            value = datetime.combine(date.fromisoformat(text), time(), zone(tz))
        else:
            value = datetime.fromisoformat(text)
            if value.tzinfo is None:
                value = value.replace(tzinfo=zone(tz))
    except ValueError as error:
        raise ValueError(f"{text!r} is not an ISO date or date-time: {error}") from None
    return value.astimezone(UTC)


def holiday_freeze(
    day: str, name: str = "", apps: list[str] | None = None, stages: list[str] | None = None
) -> FreezeRule:
    following = (date.fromisoformat(day) + timedelta(days=1)).isoformat()
    return FreezeRule(f"holiday {name or day}", day, following, name or "holiday", apps or [], stages or [])


def spec_rules(schedule: SchedulePlan) -> RuleSet:
    stages = list(schedule.stages)
    return RuleSet(
        source="spec",
        timezone=schedule.timezone,
        windows=[ScopedWindow(rule, [], stages) for rule in schedule.windows],
        freezes=[
            *(
                FreezeRule(f.name, f.start, f.until, f.reason, f.apps, f.stages or stages)
                for f in schedule.freezes
            ),
            *(holiday_freeze(day, stages=stages) for day in schedule.holidays),
        ],
        break_glass=list(schedule.break_glass),
    )


# --- the calendar file ----------------------------------------------------------------------------------
def parse_calendar(raw: bytes, file: str) -> RuleSet:
    """The organisation's calendar; CalendarInvalid lists every problem as `file:line:col: error: path: what`."""
    try:
        document = read_yaml(raw)
    except YamlReadError as error:
        raise CalendarInvalid(
            [SpecError(file, error.mark.line, error.mark.col, json_path(error.path), error.message)]
        ) from None
    errors: list[SpecError] = []

    def problem(path: Path, message: str) -> None:
        mark = document.mark_for(path)
        errors.append(SpecError(file, mark.line, mark.col, json_path(path), message))

    data = document.data
    if not isinstance(data, dict):
        problem((), "expected a mapping (a DeliveryCalendar)")
        raise CalendarInvalid(errors)
    if data.get("kind") != CALENDAR_KIND:
        problem(("kind",), f"kind must be {CALENDAR_KIND}")
    known = {"apiVersion", "kind", "timezone", "windows", "freezes", "holidays", "breakGlass"}
    for key in data:
        if key not in known:
            problem((key,), f"unknown key {key!r}; known: {sorted(known)}")
    tz = str(data.get("timezone", "UTC"))
    try:
        zone(tz)
    except ValueError as error:
        problem(("timezone",), str(error))
        tz = "UTC"

    def items(key: str) -> list[tuple[int, Any]]:
        value = data.get(key, [])
        if not isinstance(value, list):
            problem((key,), f"{key} must be a list")
            return []
        return list(enumerate(value))

    def globs(item: dict[str, Any], key: str, path: Path) -> list[str]:
        value = item.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            problem((*path, key), f"{key} must be a list of names or globs")
            return []
        return list(value)

    windows = []
    for index, item in items("windows"):
        path: Path = ("windows", index)
        if not isinstance(item, dict):
            problem(path, "a window is a mapping with days and hours")
            continue
        try:
            start, end = parse_hours(item.get("hours", "00:00-24:00"))
            days = parse_days(list(item.get("days", list(DAYS))))
            if item.get("timezone"):
                zone(str(item["timezone"]))
        except (ValueError, TypeError) as error:
            problem(path, str(error))
            continue
        rule = WindowRule(days, start, end, item.get("timezone"))
        windows.append(ScopedWindow(rule, globs(item, "apps", path), globs(item, "stages", path)))
    freezes = []
    for index, item in items("freezes"):
        path = ("freezes", index)
        if not isinstance(item, dict) or "from" not in item:
            problem(path, "a freeze is a mapping with at least `from`")
            continue
        try:
            freeze = parse_freeze(item, index)
            begins = moment(freeze.start, tz)
            if freeze.until is not None and moment(freeze.until, tz) <= begins:
                problem((*path, "until"), "until must come after from")
        except ValueError as error:
            problem(path, str(error))
            continue
        freezes.append(freeze)
    for index, item in items("holidays"):
        path = ("holidays", index)
        try:
            day = parse_holiday(item)
            date.fromisoformat(day)
        except (ValueError, KeyError, TypeError):
            problem(path, "a holiday is an ISO date or {date: YYYY-MM-DD, name: ...}")
            continue
        name = str(item.get("name", "")) if isinstance(item, dict) else ""
        scope = item if isinstance(item, dict) else {}
        freezes.append(holiday_freeze(day, name, globs(scope, "apps", path), globs(scope, "stages", path)))
    break_glass = data.get("breakGlass", [])
    if not isinstance(break_glass, list) or not all(isinstance(v, str) for v in break_glass):
        problem(("breakGlass",), "breakGlass must be a list of user IDs or names")
        break_glass = []
    if errors:
        raise CalendarInvalid(errors)
    return RuleSet(file, tz, windows, freezes, list(break_glass))


# --- the answer for one moment ----------------------------------------------------------------------------
def _window_open(window: WindowRule, default_tz: str, at: datetime) -> bool:
    local = at.astimezone(zone(window.timezone or default_tz))
    minute = local.hour * 60 + local.minute
    return DAYS[local.weekday()] in window.days and window.start_minute <= minute < window.end_minute


def _openings(window: WindowRule, default_tz: str, after: datetime) -> list[datetime]:
    tz = zone(window.timezone or default_tz)
    local_day = after.astimezone(tz).date()
    found = []
    for offset in range(LOOKAHEAD_DAYS):
        day = local_day + timedelta(days=offset)
        if DAYS[day.weekday()] not in window.days:
            continue
        start = datetime.combine(day, time(window.start_minute // 60, window.start_minute % 60), tz)
        if start.astimezone(UTC) > after:
            found.append(start.astimezone(UTC))
    return found


def check(at: datetime, app: str, stage: str, rule_sets: list[RuleSet]) -> ScheduleAnswer:
    """Whether `stage` of `app` may start at `at` (aware), and if not, why and until when."""
    answer = ScheduleAnswer(break_glass=sorted({who for rules in rule_sets for who in rules.break_glass}))
    active: list[tuple[RuleSet, FreezeRule, datetime | None]] = []
    for rules in rule_sets:
        for freeze in rules.freezes:
            if not (matches(freeze.apps, app) and matches(freeze.stages, stage)):
                continue
            start = moment(freeze.start, rules.timezone)
            end = moment(freeze.until, rules.timezone) if freeze.until else None
            if start <= at and (end is None or at < end):
                active.append((rules, freeze, end))
    if active:
        ends = [end for _rules, _freeze, end in active]
        until = None if any(end is None for end in ends) else max(e for e in ends if e is not None)
        reasons = "; ".join(
            f"{freeze.name}"
            + (f" ({freeze.reason})" if freeze.reason and freeze.reason != freeze.name else "")
            + f" [{rules.source}]"
            for rules, freeze, _end in active
        )
        answer.freeze = Hold("freeze", f"frozen: {reasons}", until.isoformat() if until else None)
    applying = [
        (rules, [w.rule for w in rules.windows if matches(w.apps, app) and matches(w.stages, stage)])
        for rules in rule_sets
    ]
    applying = [(rules, windows) for rules, windows in applying if windows]

    def open_at(moment_: datetime) -> bool:
        return all(
            any(_window_open(w, rules.timezone, moment_) for w in windows) for rules, windows in applying
        )

    if applying and not open_at(at):
        candidates = sorted(
            {
                start
                for rules, windows in applying
                for w in windows
                for start in _openings(w, rules.timezone, at)
            }
        )
        opens = next((candidate for candidate in candidates if open_at(candidate)), None)
        described = "; ".join(
            f"{' or '.join(w.describe(rules.timezone) for w in windows)} [{rules.source}]"
            for rules, windows in applying
        )
        answer.window = Hold(
            "window", f"outside the deploy windows: {described}", opens.isoformat() if opens else None
        )
    return answer
