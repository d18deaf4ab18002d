"""Header rules a reverse proxy must follow (RFC 9110 §7.6), on raw ASGI header lists."""

from __future__ import annotations

from collections.abc import Iterable

from gateway.http.fields import header_values
from gateway.types import Headers, RawHeaders

#: RFC 9110 §7.6.1 hop-by-hop fields, plus the proxy-auth pair that belongs to one hop,
#: `proxy-connection`, a non-standard alias some clients still send, and `http2-settings`, the
#: h2c upgrade's connection-specific field (RFC 7540 §3.2.1), as the Upgrade it goes with is
#: ignored.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-authorization",
        b"proxy-authenticate",
        b"http2-settings",
    }
)

#: Request fields the gateway sets itself, so a client's copy is never forwarded. Host is the
#: upstream's (added by the proxy), Content-Length is re-sent as parsed, Expect is answered here.
GATEWAY_SET = frozenset({b"host", b"expect", b"x-request-id", b"content-length"})

#: The forwarding and override family: fields that tell an application who the client is, which
#: host, scheme, port or URL was "really" requested, or which method to run instead. Frameworks
#: and upstream proxies act on them (Symfony/Zend read X-Original-URL and X-Rewrite-URL, Rails
#: and Spring honour X-HTTP-Method-Override, IP allow-lists read True-Client-IP or
#: X-Client-IP, link builders echo X-Forwarded-Host/-Port/-Prefix), so a client that sends
#: one can bypass access rules or poison the cache (the upstream reflects the value and the
#: answer is shared). Every `X-Forwarded-*` name belongs to it too (FORWARDING_PREFIX).
#: From an untrusted peer the whole family is dropped; the gateway then sets only its own
#: X-Forwarded-For/-Proto/-Host, Via and X-Request-ID. A route can let named ones through
#: (`forward_headers:` in the routes file).
FORWARDING_FAMILY = frozenset(
    {
        # who the client is
        b"forwarded",
        b"forwarded-for",
        b"x-forwarded",
        b"x-real-ip",
        b"true-client-ip",
        b"x-client-ip",
        b"x-cluster-client-ip",
        b"cf-connecting-ip",
        b"fastly-client-ip",
        b"x-proxyuser-ip",
        b"client-ip",
        b"http-client-ip",
        b"x-originating-ip",
        b"x-remote-ip",
        b"x-remote-addr",
        b"x-original-forwarded-for",
        b"x-original-remote-addr",
        b"wl-proxy-client-ip",
        b"proxy-client-ip",
        b"x-azure-clientip",
        b"x-azure-socketip",
        b"x-envoy-external-address",
        b"x-custom-ip-authorization",
        # which host, scheme or port was asked for
        b"x-host",
        b"x-original-host",
        b"x-real-host",
        b"front-end-https",
        b"x-url-scheme",
        b"x-scheme",
        b"x-https",
        b"x-http-host-override",
        # which URL or method was "really" requested
        b"x-original-url",
        b"x-original-uri",
        b"x-rewrite-url",
        b"x-envoy-original-path",
        b"x-http-method-override",
        b"x-http-method",
        b"x-method-override",
    }
)
FORWARDING_PREFIX = b"x-forwarded-"

#: Family members a trusted proxy (GATEWAY_TRUSTED_PROXIES) may pass on: the standard ones.
#: X-Forwarded-For is always rebuilt from the verified chain; X-Forwarded-Proto and -Host are
#: read into the request view (scheme, host) and re-sent from there.
TRUSTED_KEPT = frozenset({b"forwarded", b"x-real-ip", b"x-forwarded-port", b"x-forwarded-prefix"})


#: Forwarded fields that are passed on (from a trusted proxy, or by a route's `forward_headers`)
#: and that an upstream may build links or decisions from: they join the cache key, so an
#: answer computed from one value is never served for another (`cache_key_fields`). X-Real-IP
#: is not among them: like X-Forwarded-For it names the client, set by the trusted proxy.
KEYED_WHEN_FORWARDED = frozenset({b"forwarded", b"x-forwarded-port", b"x-forwarded-prefix"})


#: Field-name bytes an upstream reads unambiguously; CGI-style servers map `_` and `.` to `-`,
#: so `X_Forwarded_For` or `X.Forwarded.For` could pass for a field the gateway sets.
_NAME_BYTES = b"abcdefghijklmnopqrstuvwxyz0123456789-"


def cache_key_fields(headers: Headers, allowed: frozenset[bytes]) -> str:
    """The passed-on forwarding fields (and a route's allowed ones) as cache-key material:
    "" when there are none, the common case."""
    parts = [
        name + b"=" + value for name, value in headers if name in KEYED_WHEN_FORWARDED or name in allowed
    ]
    return b"\n".join(parts).decode("latin-1")


def is_forwarding(name: bytes) -> bool:
    """Whether the (lowercase) field name belongs to the forwarding/override family."""
    return name in FORWARDING_FAMILY or name.startswith(FORWARDING_PREFIX)


VIA = b"1.1 gateway"
#: Connection options that name no field (so nothing needs filtering for them).
_CONNECTION_OPTIONS = frozenset({b"keep-alive", b"close", b"upgrade", b""})


def connection_tokens(headers: Headers) -> frozenset[bytes]:
    """Field names listed in `Connection`, which are hop-by-hop for this message too (§7.6.1)."""
    return frozenset(
        token.strip().lower()
        for value in header_values(headers, b"connection")
        for token in value.split(b",")
        if token.strip()
    )


def strip_hop_by_hop(headers: Iterable[tuple[bytes, bytes]]) -> RawHeaders:
    """Drop hop-by-hop fields, including any named in `Connection`; keep the rest verbatim."""
    items = [(k.lower(), v) for k, v in headers]
    drop = HOP_BY_HOP | connection_tokens(items) if any(k == b"connection" for k, _ in items) else HOP_BY_HOP
    return [(k, v) for k, v in items if k not in drop]


def forward_request_headers(
    headers: Iterable[tuple[bytes, bytes]],
    *,
    trusted_peer: bool,
    forwarded_for: bytes,
    scheme: bytes,
    host: bytes,
    request_id: bytes,
    allowed: frozenset[bytes] = frozenset(),
) -> RawHeaders:
    """The header list sent upstream, but for Host and Content-Length (the proxy adds those).

    Hop-by-hop fields go (RFC 9110 §7.6.1); so do names with an underscore (NGINX's
    `underscores_in_headers off`: CGI-style servers read `X_Forwarded_For` as
    `X-Forwarded-For`) and the forwarding/override family, but for the standard ones from a
    trusted proxy (TRUSTED_KEPT) and the names in `allowed` (a route's `forward_headers`).
    The gateway's own fields come last: `X-Forwarded-For` is the verified chain from the
    client to the peer (`identity.resolve`), so no client-written entry reaches an upstream
    (or a response the upstream reflects it into, which the cache would then share).
    """
    out: RawHeaders = []
    via = named = None
    for key, value in headers:  # ASGI field names are lowercase
        if key in HOP_BY_HOP:
            if key == b"connection":
                named = value if named is None else named + b"," + value
            continue
        if key in allowed:
            out.append((key, value))
            continue
        if key in GATEWAY_SET or key.translate(None, _NAME_BYTES):
            continue  # names with bytes other than a-z 0-9 - (NGINX's ignore_invalid_headers)
        if key in FORWARDING_FAMILY or key.startswith(FORWARDING_PREFIX):
            if trusted_peer and key in TRUSTED_KEPT:
                out.append((key, value))
            continue
        if key == b"via":
            via = value if via is None else via + b", " + value
            continue
        out.append((key, value))
    if named is not None:  # fields named in Connection belong to this hop only (§7.6.1)
        tokens = {t.strip().lower() for t in named.split(b",")} - _CONNECTION_OPTIONS
        if tokens:
            out = [item for item in out if item[0] not in tokens]
            if b"via" in tokens:
                via = None
    out.append((b"x-forwarded-for", forwarded_for))
    out.append((b"x-forwarded-proto", scheme))
    if host:
        out.append((b"x-forwarded-host", host))
    out.append((b"via", via + b", " + VIA if via else VIA))
    out.append((b"x-request-id", request_id))
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
