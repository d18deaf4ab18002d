"""Header access, HTTP-date and Cache-Control parsing for the cache policy.

Pure: no I/O, no clock. Headers are ASGI-style ``(name, value)`` byte pairs; names are compared
lowercase.
"""

from __future__ import annotations

import calendar
import email.utils
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

Headers = Sequence[tuple[bytes, bytes]]

#: RFC 9111 §1.2.2: a delta-seconds value too large to represent is taken as 2^31.
DELTA_SECONDS_MAX = 2147483648


def header(headers: Headers, name: bytes) -> bytes | None:
    """The first value of header ``name`` (lowercase), or None."""
    for key, value in headers:
        if key == name or key.lower() == name:
            return value
    return None


def header_values(headers: Headers, name: bytes) -> list[bytes]:
    """Every value of header ``name`` (lowercase), in order."""
    return [value for key, value in headers if key == name or key.lower() == name]


def combined(headers: Headers, name: bytes) -> bytes | None:
    """All field lines of ``name`` combined as one comma-separated value (RFC 9110 §5.3)."""
    values = header_values(headers, name)
    if not values:
        return None
    return b", ".join(value.strip() for value in values)


def list_members(value: bytes | None) -> list[str]:
    """The lowercase members of a comma-separated list field such as Vary or Connection."""
    if not value:
        return []
    text = value.decode("latin-1")
    return [member.strip().lower() for member in text.split(",") if member.strip()]


def without(
    headers: Iterable[tuple[bytes, bytes]], names: frozenset[bytes]
) -> list[tuple[bytes, bytes]]:
    """The headers whose lowercase name is not in ``names``."""
    return [(key, value) for key, value in headers if key.lower() not in names]


_DAY = r"(?:mon|tue|wed|thu|fri|sat|sun)"
_LONG_DAY = r"(?:monday|tuesday|wednesday|thursday|friday|saturday|sunday)"
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_MONTH = "(" + "|".join(_MONTHS) + ")"
_TIME = r"(\d\d):(\d\d):(\d\d)"
#: RFC 9110 §5.6.7: IMF-fixdate, then the obsolete RFC 850 and asctime forms. Names are matched
#: case-insensitively; anything else (other zones, missing comma, extra spaces) is invalid.
_IMF_FIXDATE = re.compile(rf"{_DAY}, (\d\d) {_MONTH} (\d{{4}}) {_TIME} GMT", re.IGNORECASE)
_RFC850 = re.compile(rf"{_LONG_DAY}, (\d\d)-{_MONTH}-(\d\d) {_TIME} GMT", re.IGNORECASE)
_ASCTIME = re.compile(rf"{_DAY} {_MONTH} ([ \d]\d) {_TIME} (\d{{4}})", re.IGNORECASE)


def parse_http_date(value: bytes | None, now: float | None = None) -> float | None:
    """An HTTP-date (RFC 9110 §5.6.7, all three formats) as unix seconds; None when invalid.

    A two-digit RFC 850 year more than 50 years ahead of ``now`` (or of the year 2000 when not
    given) is in the past century, as §5.6.7 requires.
    """
    if value is None:
        return None
    text = value.decode("latin-1").strip()
    try:
        if match := _IMF_FIXDATE.fullmatch(text):
            day, month, year, hour, minute, second = match.groups()
        elif match := _ASCTIME.fullmatch(text):
            month, day, hour, minute, second, year = match.groups()
        elif match := _RFC850.fullmatch(text):
            day, month, short_year, hour, minute, second = match.groups()
            current = 2000 if now is None else time.gmtime(now).tm_year
            year_number = current - current % 100 + int(short_year)
            if year_number > current + 50:
                year_number -= 100
            year = str(year_number)
        else:
            return None
        fields = (int(year), _MONTHS.index(month.lower()) + 1, int(day), int(hour), int(minute),
                  int(second))
        if not (1 <= fields[2] <= 31 and fields[3] < 24 and fields[4] < 60 and fields[5] < 61):
            return None
        return float(calendar.timegm((*fields, 0, 0, 0)))
    except (ValueError, OverflowError):
        return None


def format_http_date(timestamp: float) -> bytes:
    """``timestamp`` as an IMF-fixdate (RFC 9110 §5.6.7)."""
    return email.utils.formatdate(timestamp, usegmt=True).encode("ascii")


def parse_delta_seconds(value: str | None) -> int | None:
    """delta-seconds (RFC 9111 §1.2.2): a non-negative integer, capped at 2^31; None if invalid."""
    if value is None or not value.isdigit() or not value.isascii():
        return None
    return min(int(value), DELTA_SECONDS_MAX)


@dataclass(frozen=True, slots=True)
class CacheControl:
    """Parsed Cache-Control directives (RFC 9111 §5.2).

    ``directives`` maps each lowercase directive name to its first argument (unquoted) or None.
    ``invalid`` holds names whose argument should have been delta-seconds but was not;
    §4.2.1 encourages treating such freshness information as stale.
    """

    directives: Mapping[str, str | None] = field(default_factory=dict)
    invalid: frozenset[str] = frozenset()

    def __contains__(self, name: object) -> bool:
        return name in self.directives

    def seconds(self, name: str) -> int | None:
        """The delta-seconds argument of ``name``; None when absent or invalid."""
        return parse_delta_seconds(self.directives.get(name))


EMPTY = CacheControl()

#: Directives whose argument is delta-seconds (RFC 9111 §5.2.1, §5.2.2; RFC 5861 §3, §4).
_DELTA_DIRECTIVES = frozenset(
    {"max-age", "s-maxage", "min-fresh", "stale-while-revalidate", "stale-if-error"}
)


def _split_directives(text: str) -> Iterable[str]:
    """Split on commas outside quoted strings (no-cache="a, b" is one directive)."""
    start, quoted, escaped = 0, False, False
    for index, char in enumerate(text):
        if escaped:
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == "," and not quoted:
            yield text[start:index]
            start = index + 1
    yield text[start:]


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        inner = value[1:-1]
        return inner.replace('\\"', '"').replace("\\\\", "\\")
    return value


def parse_cache_control(values: Sequence[bytes] | bytes | None) -> CacheControl:
    """Parse Cache-Control field lines (RFC 9111 §5.2; both token and quoted-string arguments).

    Names are case-insensitive; the first occurrence of a directive wins (§4.2.1).
    """
    if not values:
        return EMPTY
    lines = [values] if isinstance(values, bytes) else list(values)
    directives: dict[str, str | None] = {}
    invalid: set[str] = set()
    for line in lines:
        for part in _split_directives(line.decode("latin-1")):
            name, sep, argument = part.strip().partition("=")
            if not name or name != name.rstrip() or argument != argument.lstrip():
                continue  # no whitespace around "=" (RFC 9111 §5.2): not a valid directive
            name = name.lower()
            value = _unquote(argument.rstrip()) if sep else None
            if name in _DELTA_DIRECTIVES and parse_delta_seconds(value) is None:
                invalid.add(name)
            directives.setdefault(name, value)
    return CacheControl(directives, frozenset(invalid))


def cache_control_of(headers: Headers) -> CacheControl:
    """The Cache-Control of a header list."""
    return parse_cache_control(header_values(headers, b"cache-control"))
