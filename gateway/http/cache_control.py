"""Cache-Control parsing (RFC 9111 §5.2) and its delta-seconds arguments (§1.2.2).

Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from gateway.http.fields import header_values
from gateway.types import Headers

#: RFC 9111 §1.2.2: a delta-seconds value too large to represent is taken as 2^31.
DELTA_SECONDS_MAX = 2147483648


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
