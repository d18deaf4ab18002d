"""The gateway's error tree and its one rendering: RFC 9457 `application/problem+json`.

Foreign exceptions (aiohttp, redis) are translated into these at one boundary each (the proxy,
the Redis adapters); every layer above sees only these, and each carries the status to answer.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from email.utils import formatdate
from typing import Any

from gateway.types import RawHeaders, Send

PROBLEM_JSON = b"application/problem+json"


class GatewayError(Exception):
    """Base of every error the gateway answers with; `status` and `title` say how."""

    status: int = 500
    title: str = "Internal Server Error"

    def __init__(self, detail: str = "", headers: Iterable[tuple[bytes, bytes]] = ()) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.headers: RawHeaders = list(headers)


class BadRequest(GatewayError):
    status, title = 400, "Bad Request"


class Unauthorized(GatewayError):
    status, title = 401, "Unauthorized"


class Forbidden(GatewayError):
    status, title = 403, "Forbidden"


class NotFound(GatewayError):
    status, title = 404, "Not Found"


class MethodNotAllowed(GatewayError):
    status, title = 405, "Method Not Allowed"


class PayloadTooLarge(GatewayError):
    status, title = 413, "Content Too Large"


class NotImplementedByGateway(GatewayError):
    status, title = 501, "Not Implemented"


class TooManyRequests(GatewayError):
    status, title = 429, "Too Many Requests"


class BadGateway(GatewayError):
    status, title = 502, "Bad Gateway"


class ServiceUnavailable(GatewayError):
    status, title = 503, "Service Unavailable"


class GatewayTimeout(GatewayError):
    status, title = 504, "Gateway Timeout"


class StoreUnavailable(ServiceUnavailable):
    """Redis (or another store) failed: unreachable, too slow, breaker open or an error reply.

    Raised by the storage adapters only; the middleware above turns it into a bypass or the
    configured failure mode, so it rarely reaches a client.
    """


class ConfigError(Exception):
    """A configuration value is invalid; the message names the variable and what was wrong."""

    def __init__(self, variable: str, message: str) -> None:
        super().__init__(f"{variable}: {message}")
        self.variable = variable


def problem_body(status: int, title: str, detail: str, request_id: str = "", **extra: Any) -> bytes:
    """An RFC 9457 problem document; never carries internal addresses or secrets."""
    doc: dict[str, Any] = {"type": "about:blank", "title": title, "status": status}
    if detail:
        doc["detail"] = detail
    if request_id:
        doc["request_id"] = request_id
    doc.update(extra)
    return json.dumps(doc, separators=(",", ":")).encode()


def http_date() -> bytes:
    """The current time as an IMF-fixdate, for responses the gateway itself generates."""
    return formatdate(usegmt=True).encode()


async def send_problem(
    send: Send,
    status: int,
    title: str,
    detail: str = "",
    *,
    headers: Iterable[tuple[bytes, bytes]] = (),
    request_id: str = "",
    extra: dict[str, Any] | None = None,
    head: bool = False,
) -> None:
    """Send a complete problem+json response on a raw ASGI `send`."""
    body = problem_body(status, title, detail, request_id, **(extra or {}))
    raw: RawHeaders = [
        (b"content-type", PROBLEM_JSON),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
        (b"date", http_date()),
        *headers,
    ]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": b"" if head else body})


async def send_error(send: Send, exc: GatewayError, request_id: str = "", head: bool = False) -> None:
    """Render a GatewayError as its problem response."""
    await send_problem(
        send,
        exc.status,
        exc.title,
        exc.detail,
        headers=exc.headers,
        request_id=request_id,
        head=head,
    )
