"""HTTP-date (RFC 9110 §5.6.7): parsing all three formats, formatting IMF-fixdate.

Pure: no I/O, no clock (a caller that needs the current year for RFC 850 dates passes `now`).
"""

from __future__ import annotations

import calendar
import email.utils
import re
import time

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
        fields = (int(year), _MONTHS.index(month.lower()) + 1, int(day), int(hour), int(minute), int(second))
        if not (1 <= fields[2] <= 31 and fields[3] < 24 and fields[4] < 60 and fields[5] < 61):
            return None
        return float(calendar.timegm((*fields, 0, 0, 0)))
    except (ValueError, OverflowError):
        return None


def format_http_date(timestamp: float) -> bytes:
    """``timestamp`` as an IMF-fixdate (RFC 9110 §5.6.7)."""
    return email.utils.formatdate(timestamp, usegmt=True).encode("ascii")
