"""Deploy windows, freezes and holidays (aicd.governance.calendar): the answer for a moment, when the next
window opens (across time zones and days), and a broken calendar file named by file:line:col."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from aicd.gates.schedule import global_rules
from aicd.governance.calendar import CalendarInvalid, check, parse_calendar, spec_rules
from aicd.governance.model import schedule_from

CALENDAR = b"""apiVersion: aicd.dev/v1alpha1
kind: DeliveryCalendar
timezone: Europe/Berlin
windows:
  - {days: [mon-thu], hours: "09:00-16:00", stages: ["prod*"]}
freezes:
  - {name: year-end, from: "2026-12-20", until: "2027-01-04", reason: "year-end freeze"}
holidays:
  - {date: "2026-10-03", name: Unity Day}
breakGlass: [U024BE7LH]
"""


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def test_window_closed_says_when_it_opens_in_its_time_zone() -> None:
    rules = [parse_calendar(CALENDAR, "aicd/calendar.yaml")]
    # Friday 2026-12-04 10:00 Berlin: closed until Monday 09:00 Berlin (08:00 UTC).
    answer = check(at("2026-12-04T10:00:00+01:00"), "shop", "production", rules)
    assert answer.freeze is None and answer.window is not None
    assert answer.window.until == "2026-12-07T08:00:00+00:00"
    assert answer.break_glass == ["U024BE7LH"]
    # Thursday 15:59 Berlin is inside; staging is not matched by the window at all.
    assert check(at("2026-12-03T15:59:00+01:00"), "shop", "production", rules).window is None
    assert check(at("2026-12-04T10:00:00+01:00"), "shop", "staging", rules).window is None


def test_freeze_and_holiday_hold_until_they_end() -> None:
    rules = [parse_calendar(CALENDAR, "aicd/calendar.yaml")]
    frozen = check(at("2026-12-22T10:00:00+01:00"), "shop", "staging", rules)
    assert frozen.freeze is not None and "year-end" in frozen.freeze.reason
    assert frozen.freeze.until == "2027-01-03T23:00:00+00:00"
    holiday = check(at("2026-10-03T12:00:00+02:00"), "shop", "staging", rules)
    assert holiday.freeze is not None and "Unity Day" in holiday.freeze.reason
    assert check(at("2026-10-04T00:30:00+02:00"), "shop", "staging", rules).freeze is None


def test_spec_schedule_and_the_freeze_button_combine() -> None:
    schedule = schedule_from(
        {
            "timezone": "America/New_York",
            "stages": ["production"],
            "windows": [{"days": ["tue"], "hours": "10:00-12:00"}],
        }
    )
    button = global_rules(
        [{"app": "shop*", "actor": "oncall", "reason": "incident 42", "since": "2026-01-01T00:00:00+00:00"}]
    )
    answer = check(at("2026-12-07T12:00:00+00:00"), "shop-api", "production", [spec_rules(schedule), button])
    assert answer.freeze is not None and "incident 42" in answer.freeze.reason and answer.freeze.until is None
    assert answer.window is not None and answer.window.until == "2026-12-08T15:00:00+00:00"  # 10:00 EST
    assert (
        check(at("2026-12-08T15:30:00+00:00"), "web", "production", [spec_rules(schedule), button]).freeze
        is None
    )


def test_broken_calendar_names_every_problem_where_it_is() -> None:
    broken = b"kind: DeliveryCalendar\ntimezone: Mars/Olympus\nwindows:\n  - {days: [funday]}\nfreezes:\n  - {name: x, from: '2026-12-20', until: '2026-12-01'}\n"
    with pytest.raises(CalendarInvalid) as raised:
        parse_calendar(broken, "aicd/calendar.yaml")
    lines = [str(error) for error in raised.value.errors]
    assert lines[0].startswith("aicd/calendar.yaml:2:11: error: $.timezone: unknown time zone 'Mars/Olympus'")
    assert any("$.windows[0]" in line and "funday" in line for line in lines)
    assert any("$.freezes[0].until" in line and "until must come after from" in line for line in lines)
