"""The normalised request view: built once per request by the context layer, read by every
layer below it through `request_info(scope)`. No layer re-parses the raw target or headers."""

from __future__ import annotations

import copy

from gateway.config import Route
from gateway.types import RawHeaders, Scope

#: Where the view lives in the ASGI scope.
SCOPE_KEY = "gateway"


class RequestInfo:
    """Per-request facts; the context layer fills them in before any other layer runs.

    `path` is the normalised raw path, also written to `scope["raw_path"]` (and its decoded form
    to `scope["path"]`), so routing, per-route policy, the admin check, the cache key and the
    upstream request all see one path. `headers` are the request fields as forwarded upstream
    (forwarding family filtered, the gateway's own set; Host and Content-Length are added by the
    proxy), also written to `scope["headers"]` for routed requests: the cache's Vary selection
    and the proxy read the same list.
    """

    __slots__ = (
        "admin",
        "body_length",
        "cache_status",
        "client_ip",
        "extra_response_headers",
        "forwarded_for",
        "headers",
        "host",
        "key_fields",
        "path",
        "peer_ip",
        "peer_trusted",
        "request_id",
        "route",
        "scheme",
        "started",
        "status",
    )

    def __init__(
        self,
        *,
        request_id: str,
        route: Route | None,
        path: bytes,
        admin: bool = False,
        client_ip: str,
        peer_ip: str,
        peer_trusted: bool,
        scheme: str,
        host: str,
        forwarded_for: bytes,
        headers: RawHeaders,
        body_length: int | None = 0,
        started: float = 0.0,
    ) -> None:
        self.request_id = request_id
        self.route = route  # None: an admin path or a path no route claims
        # May the admin endpoints answer? False on the main listener when the admin API has a
        # listener of its own (GATEWAY_ADMIN_PORT): such requests get a 404, never forwarded.
        self.admin = admin
        self.path = path  # normalised, still percent-encoded where it must be
        self.client_ip = client_ip
        self.peer_ip = peer_ip
        self.peer_trusted = peer_trusted
        self.scheme = scheme  # "http" or "https" (from a trusted proxy's X-Forwarded-Proto)
        self.host = host  # validated, lowercase host[:port]; "" for HTTP/1.0 without Host
        self.forwarded_for = forwarded_for  # the verified X-Forwarded-For chain, peer last
        self.headers = headers
        # Passed-on forwarding fields that are part of the cache key (http.headers
        # cache_key_fields); "" for almost every request.
        self.key_fields = ""
        self.body_length = body_length  # Content-Length; 0: no body; None: chunked, unknown
        self.started = started
        self.cache_status = ""
        self.status = 0
        self.extra_response_headers: RawHeaders = []

    @property
    def cache_authority(self) -> str:
        """The host as the cache key names it: with the passed-on forwarding fields, which an
        upstream may build its answer from (a validated host never contains '#')."""
        return f"{self.host}#{self.key_fields}" if self.key_fields else self.host

    def detached(self) -> RequestInfo:
        """A copy for a background request: same facts, its own response bookkeeping."""
        other = copy.copy(self)
        other.extra_response_headers = []
        other.cache_status = ""
        other.status = 0
        return other


def request_info(scope: Scope) -> RequestInfo:
    """The request view of an HTTP scope that passed the context layer."""
    info: RequestInfo = scope[SCOPE_KEY]
    return info
