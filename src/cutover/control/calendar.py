"""Calendar windows: the days and local hours in which a plan may enter a step."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cutover.errors import InvalidInput

DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_HOURS = re.compile(r"^(\d{2}):(\d{2})-(\d{2}):(\d{2})$")
_LOOKAHEAD = 9  # days searched for the next opening: a week, and the day either side


def format_utc(timestamp: float) -> str:
    """A moment as people read it in statuses and refusals: 2026-03-29 01:00:00 UTC."""
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def parse_days(text: str | list[str] | tuple[str, ...]) -> frozenset[int]:
    """``Mon-Fri``, ``Sat,Sun``, ``[Mon, Wed]`` or ``Fri-Mon`` as weekday numbers (Monday 0)."""
    parts = [text] if isinstance(text, str) else list(text)
    days: set[int] = set()
    for part in (p.strip() for item in parts for p in str(item).split(",")):
        first, _, last = part.partition("-")
        start, end = _day(first), _day(last) if last else _day(first)
        span = (end - start) % 7
        days.update((start + offset) % 7 for offset in range(span + 1))
    return frozenset(days)


def _day(text: str) -> int:
    name = text.strip().lower()
    for number, day in enumerate(_NAMES):
        if name in (day, day[:3]):
            return number
    raise InvalidInput(
        f"{text.strip()!r} is not a day; write days like Mon-Fri, Sat,Sun or [Mon, Wed]"
    )


def parse_hours(text: str) -> tuple[int, int]:
    """``02:00-05:00`` as minutes from midnight, start and end; ``22:00-02:00`` crosses
    midnight (the window opens on the day named and closes the next morning)."""
    found = _HOURS.match(text.strip())
    if found is None:
        raise InvalidInput(f"hours {text!r} must read like 02:00-05:00 (24-hour, local time)")
    h1, m1, h2, m2 = (int(group) for group in found.groups())
    start, end = h1 * 60 + m1, h2 * 60 + m2
    if h1 > 23 or m1 > 59 or m2 > 59 or end > 24 * 60:
        raise InvalidInput(f"hours {text!r}: a time runs from 00:00 to 23:59 (24:00 as an end)")
    if start == end:
        raise InvalidInput(
            f"hours {text!r} open and close at the same time; for the whole day write 00:00-24:00"
        )
    return start, end


def parse_zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidInput(
            f"tz {name!r} is not a time zone; give an IANA name like Europe/Berlin or UTC"
        ) from None


@dataclass(frozen=True, slots=True)
class Calendar:
    """Days and local hours, in one time zone, in which something may happen."""

    days: frozenset[int]
    start: int  # minutes after local midnight
    end: int  # minutes after local midnight; below start when the hours cross midnight
    zone: ZoneInfo

    @classmethod
    def parse(cls, days: str | list[str] | tuple[str, ...], hours: str, tz: str) -> Calendar:
        start, end = parse_hours(hours)
        return cls(parse_days(days), start, end, parse_zone(tz))

    def describe(self) -> str:
        names = ",".join(DAYS[day] for day in sorted(self.days))
        return f"{names} {_clock(self.start)}-{_clock(self.end)} {self.zone.key}"

    def contains(self, timestamp: float) -> bool:
        """Whether the local wall clock at ``timestamp`` reads inside the window."""
        local = datetime.fromtimestamp(timestamp, self.zone)
        minute = local.hour * 60 + local.minute + local.second / 60
        weekday = local.weekday()
        if self.start < self.end:
            return weekday in self.days and self.start <= minute < self.end
        return (weekday in self.days and minute >= self.start) or (
            (weekday - 1) % 7 in self.days and minute < self.end
        )

    def next_open(self, timestamp: float) -> float:
        """``timestamp`` when the window is open then, else when it next opens."""
        if self.contains(timestamp):
            return timestamp
        today = datetime.fromtimestamp(timestamp, self.zone).date()
        openings = (
            self._opening(today + timedelta(days=offset)) for offset in range(-1, _LOOKAHEAD)
        )
        return min(at for at in openings if at is not None and at > timestamp)

    def _opening(self, day: date) -> float | None:
        """When the window of ``day`` opens, or None when it does not open that day. A start
        that the clocks skip (02:30 on the night of a spring change) opens when they land."""
        if day.weekday() not in self.days:
            return None
        wall = datetime.combine(day, _time(self.start), self.zone)
        late = wall.timestamp()  # fold 0: a skipped time reads as after the jump
        if datetime.fromtimestamp(late, self.zone).replace(tzinfo=None) == wall.replace(
            tzinfo=None
        ):
            return late
        if not self.contains(late):
            return None  # the whole window fell into the skipped hour
        early = wall.replace(fold=1).timestamp()  # before the jump, outside the window
        while late - early > 1:  # the window opens at the jump: find it to the second
            middle = (early + late) / 2
            early, late = (early, middle) if self.contains(middle) else (middle, late)
        return float(int(late))


def _time(minutes: int) -> time:
    return time(minutes // 60 % 24, minutes % 60)


def _clock(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"
