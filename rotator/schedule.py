"""When a credential may rotate: a cron expression in an IANA time zone, and a window after each
scheduled time (``credentials[].schedule``).

The expression is parsed by APScheduler 3.x's ``CronTrigger`` (never by hand: day-of-week names,
ranges, steps and daylight-saving changes are its business), imported only when a credential has a
schedule, so a one-shot run without one never loads it. Times in and out are Unix seconds.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import Any

#: How far back :meth:`Schedule.previous` looks for a scheduled time: a year and a day (the longest
#: gap a 5-field cron expression can have, ``0 0 29 2 *`` aside, which then has no previous time).
_LOOKBACK = 367 * 86400.0
#: How many scheduled times :meth:`Schedule.longest_gap` looks at (a year of weekly, two weeks of
#: hourly, four days of every 15 minutes): irregular schedules (weekdays only) show their longest gap.
_GAP_SAMPLES = 400


#: Kubernetes CronJobs (and crontab) take these for five fields.
_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


def _crontab_fields(cron: str) -> list[str]:
    """The five fields of ``cron`` as a Kubernetes CronJob reads them, for APScheduler's CronTrigger.

    Two differences are bridged here and nothing else is read by hand: APScheduler 3.x numbers
    weekdays from Monday (``0`` is Monday: its issue 286, fixed only in 4.x) where crontab numbers
    them from Sunday (``0`` and ``7``), so numbered weekdays become names; and crontab fires when
    the day of the month *or* the weekday matches when both are restricted, APScheduler when both
    do, so such an expression is refused rather than read differently from the CronJob's.
    """
    fields = _MACROS.get(cron.strip().lower(), cron).split()
    if len(fields) != 5:
        raise ValueError(f"wrong number of fields: got {len(fields)}, expected 5 (or @daily, @hourly, ...)")
    if fields[2] not in ("*", "?") and fields[4] not in ("*", "?"):
        raise ValueError(
            "restricts both the day of the month and the weekday, which crontab ORs and APScheduler "
            "ANDs: use one of them"
        )
    fields[4] = _weekday_names(fields[4])
    return fields


def _weekday_names(field: str) -> str:
    """A crontab weekday field (numbers from Sunday, 0-7, ranges, lists, steps) as weekday names."""
    if field in ("*", "?"):
        return "*"

    def day(text: str) -> int:
        if text.isdigit() and int(text) <= 7:
            return int(text) % 7
        if text.lower() in _WEEKDAYS:
            return _WEEKDAYS.index(text.lower())
        raise ValueError(f"weekday {text!r} is not 0-7 or sun-sat")

    names: list[str] = []
    for item in field.split(","):
        base, slash, step_text = item.partition("/")
        if not step_text.isdigit() and slash:
            raise ValueError(f"weekday step {step_text!r} is not a number")
        step = int(step_text) if slash else 1
        if base in ("*", "?"):
            first, last = 0, 6
        elif "-" in base:
            low, _, high = base.partition("-")
            first, last = day(low), day(high)
            last = 7 if last == 0 and first > 0 else last  # 5-7, fri-sun: Sunday ends the week too
        else:
            first = day(base)
            last = 6 if slash else first
        if step < 1 or last < first:
            raise ValueError(f"weekday range {item!r} is empty")
        names += [_WEEKDAYS[d % 7] for d in range(first, last + 1, step)]
    return ",".join(dict.fromkeys(names))


@dataclass(frozen=True)
class Schedule:
    """A parsed ``schedule``: ``cron`` (5 fields, as crontab and Kubernetes CronJobs), ``timezone``
    and ``window`` (seconds after each scheduled time during which a rotation may start; None: until
    the next scheduled time)."""

    cron: str
    timezone: str = "UTC"
    window: float | None = None
    _trigger: Any = field(default=None, repr=False, compare=False)
    # The last (scheduled time, the one after it) found: every pass in between asks about the same
    # interval, and a search costs milliseconds (a daemon asks for each credential every tick).
    _span: list[tuple[float, float]] = field(default_factory=list, repr=False, compare=False)
    # (when, the longest gap found then): a few hundred scheduled times to walk, asked every pass.
    _gap: list[tuple[float, float]] = field(default_factory=list, repr=False, compare=False)

    @classmethod
    def parse(cls, cron: str, timezone: str = "UTC", window: float | None = None) -> Schedule:
        """:raises ValueError: naming what is wrong (APScheduler's own words for the expression)."""
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        from apscheduler.triggers.cron import CronTrigger

        try:
            zone = ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"timezone {timezone!r} is not an IANA time zone (like UTC or Europe/London)"
            ) from None
        try:
            minute, hour, day, month, weekday = _crontab_fields(cron)
            trigger = CronTrigger(
                minute=minute, hour=hour, day=day, month=month, day_of_week=weekday, timezone=zone
            )
        except ValueError as exc:
            raise ValueError(f"cron {cron!r} is not a cron expression: {exc}") from None
        return cls(cron, timezone, window, trigger)

    def next_time(self, after: float) -> float | None:
        """The first scheduled time strictly after ``after`` (None: there is none)."""
        start = datetime.datetime.fromtimestamp(after, datetime.UTC) + datetime.timedelta(milliseconds=1)
        fire = self._trigger.get_next_fire_time(None, start)
        return None if fire is None else float(fire.timestamp())

    def previous(self, at: float) -> float | None:
        """The last scheduled time at or before ``at`` (None within :data:`_LOOKBACK`)."""
        known = self._span[-1] if self._span else None
        if known is not None and known[0] <= at < known[1]:
            return known[0]
        fire = self._search(at)
        if fire is not None:
            following = self.next_time(fire)
            self._span[:] = [(fire, following if following is not None else float("inf"))]
        return fire

    def _search(self, at: float) -> float | None:
        span = 60.0
        while span <= 2 * _LOOKBACK:
            fire = self.next_time(at - span)
            if fire is not None and fire <= at:
                while (later := self.next_time(fire)) is not None and later <= at:
                    fire = later
                return fire
            span *= 2
        return None

    def window_at(self, now: float) -> tuple[float, float] | None:
        """The window ``now`` falls in, as (opened, closes), or None between windows."""
        opened = self.previous(now)
        if opened is None:
            return None
        closes = self._closes(opened)
        return (opened, closes) if now < closes else None

    def next_window(self, now: float) -> tuple[float, float] | None:
        """The window in force at ``now``, else the next one (None: the schedule never fires again)."""
        current = self.window_at(now)
        if current is not None:
            return current
        opens = self.next_time(now)
        return None if opens is None else (opens, self._closes(opens))

    def longest_gap(self, now: float) -> float:
        """The longest time between two consecutive scheduled times from ``now`` on (over the next
        :data:`_GAP_SAMPLES`): how long a CronJob on this schedule may go without a run. Worked out
        again once a day at most (only daylight-saving changes move it)."""
        known = self._gap[-1] if self._gap else None
        if known is not None and abs(now - known[0]) < 86400:
            return known[1]
        gap = self._longest_gap(now)
        self._gap[:] = [(now, gap)]
        return gap

    def _longest_gap(self, now: float) -> float:
        gap = 0.0
        fire = self.previous(now) or self.next_time(now)
        for _ in range(_GAP_SAMPLES):
            if fire is None:
                break
            later = self.next_time(fire)
            if later is None:
                break
            gap = max(gap, later - fire)
            fire = later
        return gap

    def _closes(self, opened: float) -> float:
        following = self.next_time(opened)
        end = following if following is not None else float("inf")
        return end if self.window is None else min(opened + self.window, end)
