"""Reading raw header lists: the one set of lookup helpers every layer uses.

Pure: no I/O. Headers are ASGI-style ``(name, value)`` byte pairs. ASGI servers give lowercase
names; a name is also matched when it differs only in case, so lists built by hand (tests, the
upstream's raw headers before lowering) read the same.
"""

from __future__ import annotations

from collections.abc import Iterable

from gateway.types import Headers


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
