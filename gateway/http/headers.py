"""Header rules a reverse proxy must follow (RFC 9110 §7.6), on raw ASGI header lists."""

from __future__ import annotations

from collections.abc import Iterable

RawHeaders = list[tuple[bytes, bytes]]

#: RFC 9110 §7.6.1 hop-by-hop fields, plus the proxy-auth pair that belongs to one hop and
#: `proxy-connection`, a non-standard alias some clients still send.
HOP_BY_HOP = frozenset({
    b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer",
    b"transfer-encoding", b"upgrade", b"proxy-authorization", b"proxy-authenticate",
})

#: Request fields the gateway sets itself, so a client's copy is never forwarded.
GATEWAY_SET = frozenset({b"host", b"expect", b"x-request-id", b"content-length"})

#: Forwarding fields a client could spoof: forwarded only when the peer is a trusted proxy.
SPOOFABLE = frozenset({
    b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"x-real-ip", b"forwarded",
})

VIA = b"1.1 gateway"


def get(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    """The first value of `name` (lowercase), or None."""
    for key, value in headers:
        if key == name:
            return value
    return None


def get_joined(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    """All values of a list-valued field joined with ', ' (RFC 9110 §5.3), or None."""
    values = [value for key, value in headers if key == name]
    return b", ".join(values) if values else None


def connection_tokens(headers: Iterable[tuple[bytes, bytes]]) -> frozenset[bytes]:
    """Field names listed in `Connection`, which are hop-by-hop for this message too."""
    tokens: set[bytes] = set()
    for key, value in headers:
        if key == b"connection":
            tokens.update(t.strip().lower() for t in value.split(b",") if t.strip())
    return frozenset(tokens)


def strip_hop_by_hop(headers: Iterable[tuple[bytes, bytes]]) -> RawHeaders:
    """Drop hop-by-hop fields, including any named in `Connection`; keep the rest verbatim."""
    items = [(k.lower(), v) for k, v in headers]
    drop = HOP_BY_HOP | connection_tokens(items) if any(
        k == b"connection" for k, _ in items
    ) else HOP_BY_HOP
    return [(k, v) for k, v in items if k not in drop]


def forward_request_headers(
    headers: Iterable[tuple[bytes, bytes]],
    *,
    trusted_peer: bool,
    forwarded_for: bytes,
    scheme: str,
    host: bytes,
    upstream_host: bytes,
    request_id: str,
) -> RawHeaders:
    """The header list sent upstream: hop-by-hop removed, forwarding fields set (§7.6.3 Via).

    `X-Forwarded-For` is always the gateway's own: the verified chain from the client to the
    peer (`identity.resolve`), so no client-written entry reaches an upstream (or a response
    the upstream reflects it into, and the cache then shares). From an untrusted peer every
    other forwarding field is dropped and rebuilt; from a trusted proxy its proto, host and
    `Forwarded`/`X-Real-IP` are kept.
    """
    out: RawHeaders = []
    proto = fwd_host = via = None
    for key, value in strip_hop_by_hop(headers):
        if key in GATEWAY_SET:
            continue
        if key in SPOOFABLE:
            if not trusted_peer:
                continue
            if key == b"x-forwarded-for":
                continue
            if key == b"x-forwarded-proto":
                proto = proto or value
                continue
            if key == b"x-forwarded-host":
                fwd_host = fwd_host or value
                continue
        if key == b"via":
            via = value if via is None else via + b", " + value
            continue
        out.append((key, value))
    out.append((b"host", upstream_host))
    out.append((b"x-forwarded-for", forwarded_for))
    out.append((b"x-forwarded-proto", proto or scheme.encode()))
    out.append((b"x-forwarded-host", fwd_host or host))
    out.append((b"via", via + b", " + VIA if via else VIA))
    out.append((b"x-request-id", request_id.encode()))
    return out


def response_headers(headers: Iterable[tuple[bytes, bytes]]) -> RawHeaders:
    """Upstream response fields as forwarded to the client: hop-by-hop removed, Via appended."""
    out = strip_hop_by_hop(headers)
    for i, (key, value) in enumerate(out):
        if key == b"via":
            out[i] = (key, value + b", " + VIA)
            break
    else:
        out.append((b"via", VIA))
    return out
