"""Path normalisation: the raw request path -> the one path every layer and the upstream see.

Pure: bytes in, bytes out (or `PathRejected`). The rules, in order (docs/security/requests.md):

1. Percent-escapes of unreserved characters are decoded (RFC 3986 §2.3: `%61` is `a`, `%2E`
   is `.`); every other escape is kept, its hex uppercased (§6.2.2.1). A malformed escape
   (`%zz`, `%4`) is rejected. Nothing is decoded twice: `%252e` stays `%252e` (a literal `%2e`).
2. `%2F` (`/`) and `%5C` (`\\`) are rejected (default) or kept encoded, never decoded
   (`escaped_slashes="keep"`); `%00`, a raw `\\`, a raw control byte and a raw `#` are always
   rejected. Other bytes a path may not carry raw (space, `"`, `<`, `|`, bytes above 0x7F) are
   percent-encoded, so equivalent spellings are one path.
3. Empty segments are merged (`//a` is `/a`) when `merge_slashes` is on (Envoy's
   merge_slashes).
4. Dot-segments are removed (§5.2.4); one that would climb above the root is rejected, as is
   a dot-segment carrying `;` parameters (`..;`), which Tomcat and Jetty treat as `..`.

The common path (only pchar bytes, no `%`, no dot-segment, no `//`) is recognised by one regex
and returned unchanged.
"""

from __future__ import annotations

import re

ESCAPED_SLASHES_MODES = ("reject", "keep")


class PathRejected(ValueError):
    """The path cannot be normalised safely; the message says why (for the 400 detail)."""


#: Paths that are already normal: segments of pchar bytes without `%`, none starting with `.`
#: (so no `.`/`..` segment), no empty segment but an optional trailing one.
_PLAIN = re.compile(rb"(?:/[A-Za-z0-9\-_~!$&'()*+,;=:@][A-Za-z0-9.\-_~!$&'()*+,;=:@]*)+/?|/")
_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
#: Bytes a path segment may carry raw (RFC 3986 pchar without pct-encoded).
_PCHAR = _UNRESERVED | frozenset(b"!$&'()*+,;=:@")
_HEX = frozenset(b"0123456789abcdefABCDEF")
#: Escapes never decoded: `/` and `\\` would change the segment structure after routing.
_SLASHES = frozenset({0x2F, 0x5C})
_ALWAYS_REJECTED = frozenset({0x00})


def _rejected_raw(byte: int) -> bool:
    return byte < 0x20 or byte == 0x7F or byte == 0x5C or byte == 0x23  # CTL, "\\", "#"


def normalise_path(raw: bytes, *, merge_slashes: bool = True, keep_escaped_slashes: bool = False) -> bytes:
    """The normal form of the raw (percent-encoded) path `raw`; raises PathRejected."""
    if _PLAIN.fullmatch(raw):
        return raw
    if not raw.startswith(b"/"):
        raise PathRejected("The request path must start with '/'.")
    segments = [_segment(s, keep_escaped_slashes) for s in raw[1:].split(b"/")]
    if merge_slashes:
        last = segments[-1]
        segments = [s for s in segments if s]
        if not last:  # keep the trailing slash: "/a/" and "/a" are different resources
            segments.append(b"")
        if not segments:
            segments = [b""]
    return b"/" + b"/".join(_remove_dot_segments(segments))


def _segment(raw: bytes, keep_escaped_slashes: bool) -> bytes:
    """One segment with unreserved escapes decoded, other escapes uppercased, raw bytes that a
    path may not carry encoded."""
    out = bytearray()
    i, n = 0, len(raw)
    while i < n:
        byte = raw[i]
        if byte == 0x25:  # "%"
            hex_ = raw[i + 1 : i + 3]
            if len(hex_) != 2 or hex_[0] not in _HEX or hex_[1] not in _HEX:
                raise PathRejected("The request path has a malformed percent-escape.")
            value = int(hex_, 16)
            if value in _ALWAYS_REJECTED:
                raise PathRejected("The request path contains an encoded NUL (%00).")
            if value in _SLASHES and not keep_escaped_slashes:
                raise PathRejected("The request path contains an encoded '/' or '\\' (%2F, %5C).")
            if value in _UNRESERVED:
                out.append(value)
            else:
                out += b"%" + hex_.upper()
            i += 3
            continue
        if byte in _PCHAR:
            out.append(byte)
        elif _rejected_raw(byte):
            raise PathRejected("The request path contains a control byte, '\\' or '#'.")
        else:
            out += b"%%%02X" % byte
        i += 1
    return bytes(out)


def _remove_dot_segments(segments: list[bytes]) -> list[bytes]:
    """RFC 3986 §5.2.4 on decoded segments; climbing above the root is refused."""
    out: list[bytes] = []
    last = len(segments) - 1
    for index, segment in enumerate(segments):
        name = segment.split(b";", 1)[0] if b";" in segment else segment
        if name == b"." or name == b"..":
            if name != segment:
                raise PathRejected("The request path has a dot-segment with parameters ('..;').")
            if name == b"..":
                if not out:
                    raise PathRejected("The request path climbs above the root ('..').")
                out.pop()
            if index == last:
                out.append(b"")  # "/a/b/.." is "/a/", a directory
            continue
        out.append(segment)
    return out or [b""]
