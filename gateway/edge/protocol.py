"""uvicorn's httptools protocol with the front end's limits and deadlines.

The head of every request is collected here, whole and within its limits, before llhttp sees
it; the body is then fed to llhttp with its length known, so the next head on the connection
starts at a known byte. Per connection and per worker:

  - a header deadline from the first byte of a head (from accept for a new connection),
  - a keep-alive idle timeout between requests (uvicorn's own timer),
  - a body idle timeout: no body byte for `body_timeout` while the app waits -> 408,
  - connection budgets per listener (main and admin): past one, a fast 503 and close.

Errors before a response started get a small canned answer with `Connection: close`; errors
while an earlier response is still being written close the connection after it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httptools
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from gateway.config import EdgeSettings
from gateway.edge.head import END, Framing, Head, Limits, Rejection, check, incomplete

log = logging.getLogger("gateway.edge")

#: Rejected connections waiting for the client to read their 503 before the close.
_LINGER_SECONDS = 1.0
_MAX_LINGERING = 256


#: Fields on_header looks at; every other field is only appended.
_WATCHED = frozenset({b"host", b"content-length", b"transfer-encoding", b"expect"})


class EdgeConfig(Config):
    """uvicorn's Config carrying the front end's settings to every worker (it is pickled to
    spawned workers, so this stays a plain attribute of a frozen dataclass)."""

    def __init__(self, *args: Any, edge: EdgeSettings, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.edge = edge


class Budget:
    """Open connections of one listener in this worker."""

    __slots__ = ("limit", "open")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open = 0


class _Budgets:
    """Per worker process: module state, because each worker is its own process."""

    def __init__(self) -> None:
        self.by_listener: dict[str, Budget] = {}
        self.lingering = 0
        self.last_warning = -1.0

    def get(self, listener: str, limit: int) -> Budget:
        budget = self.by_listener.get(listener)
        if budget is None:
            self.by_listener[listener] = budget = Budget(limit)
        return budget


BUDGETS = _Budgets()


class _Stop(Exception):
    """Raised from a parser callback to stop parsing with a decided answer."""

    def __init__(self, rejection: Rejection) -> None:
        super().__init__(rejection.reason)
        self.rejection = rejection


def _answer(status: int, reason: str) -> bytes:
    body = reason.encode()
    return b"".join(
        (
            STATUS_LINE[status],
            b"content-type: text/plain; charset=utf-8\r\n",
            b"content-length: %d\r\n" % len(body),
            b"connection: close\r\n\r\n",
            body,
        )
    )


_OVER_CAPACITY = _answer(503, "The gateway is at its connection limit; retry shortly.").replace(
    b"connection: close\r\n", b"connection: close\r\nretry-after: 1\r\n"
)


class EdgeProtocol(HttpToolsProtocol):
    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        edge: EdgeSettings = getattr(config, "edge", None) or EdgeSettings()
        self.edge = edge
        self.limits = Limits(edge.max_header_bytes, edge.max_headers, edge.max_url_bytes)
        self.budget: Budget | None = None
        self.reading_head = True  # between messages: the next bytes are a head
        self.head = bytearray()  # a head still arriving
        self.scan_from = 0
        self.head_fed = False  # set just before a checked head is given to llhttp
        self.in_body = False  # a message's body is being fed to llhttp
        self.body_left: int | None = 0  # None: chunked, llhttp finds the end
        self.framing = Framing()
        self.method: bytes | None = None
        self.head_timer: asyncio.TimerHandle | None = None
        self.body_timer: asyncio.TimerHandle | None = None
        self.last_read = 0.0
        self.dead = False  # a decision to close was taken: ignore further bytes
        self.lingering = False  # a refused connection waiting for its client to read the 503

    # -- connections ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        sockname = transport.get_extra_info("sockname")
        port = sockname[1] if isinstance(sockname, tuple) else None
        edge = self.edge
        if edge.admin_port is not None and port == edge.admin_port:
            budget = BUDGETS.get("admin", edge.admin_max_connections)
        else:
            budget = BUDGETS.get("main", edge.max_connections)
        if budget.open >= budget.limit:
            self._refuse(transport)
            return
        budget.open += 1
        self.budget = budget
        super().connection_made(transport)
        self.head_timer = self.loop.call_later(edge.header_timeout, self._head_timeout)

    def _refuse(self, transport: asyncio.Transport) -> None:
        """Past the budget: answer 503 at once, half-close, and drop the socket soon after,
        so the client reads the answer instead of a reset."""
        self.transport = transport
        self.dead = True
        transport.write(_OVER_CAPACITY)
        if BUDGETS.lingering >= _MAX_LINGERING or not transport.can_write_eof():
            transport.close()
            return
        BUDGETS.lingering += 1
        self.lingering = True
        transport.write_eof()
        self.loop.call_later(_LINGER_SECONDS, transport.abort)
        now = self.loop.time()
        if now - BUDGETS.last_warning >= 1.0:  # one line a second at most, even under a flood
            BUDGETS.last_warning = now
            log.warning(
                "connection limit reached (GATEWAY_MAX_CONNECTIONS or the admin "
                "listener's budget): refusing new connections with 503"
            )

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        budget = self.budget
        if budget is None:  # a refused connection
            if self.lingering:
                self.lingering = False
                BUDGETS.lingering -= 1
            return
        self.budget = None
        budget.open -= 1
        super().connection_lost(exc)

    def eof_received(self) -> None:
        if self.budget is None and not self.transport.is_closing():
            self.transport.close()  # refused: the client read the 503 and is done

    def _cancel_timers(self) -> None:
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None
        if self.body_timer is not None:
            self.body_timer.cancel()
            self.body_timer = None

    # -- bytes in ---------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self.dead:
            return
        self._unset_keepalive_if_required()
        self.last_read = self.loop.time()
        start, size = 0, len(data)
        while start < size and not self.dead:
            start = self._head_bytes(data, start) if self.reading_head else self._body_bytes(data, start)

    def _head_bytes(self, data: bytes, start: int) -> int:
        """Collect a head; give it to llhttp once complete and allowed. Returns the offset of
        the first byte after what was consumed."""
        if self.head:
            self.head += data[start:] if start else data
            buffer: bytes | bytearray = self.head
            base = 0
        else:
            while data.startswith(b"\r\n", start):  # RFC 9112 §2.2: ignore leading CRLFs
                start += 2
            buffer, base = data, start
        end = buffer.find(END, max(base, self.scan_from))
        if end < 0:
            pending = buffer[base:]
            rejection = incomplete(pending, self.limits)
            if rejection is not None:
                self._reject(rejection)
                return len(data)
            if not self.head:
                self.head = bytearray(pending)
            self.scan_from = max(0, len(self.head) - 3)
            if self.head_timer is None:
                # A head that did not arrive in one read starts its deadline now (a new
                # connection's runs from accept). Heads that arrive whole never arm a timer:
                # one per request measured as a visible share of a pass-through's CPU.
                self.head_timer = self.loop.call_later(self.edge.header_timeout, self._head_timeout)
            return len(data)
        # The usual read is exactly one whole head: no copy then.
        if isinstance(buffer, bytes) and base == 0 and end + 4 == len(buffer):
            head = buffer
        else:
            head = bytes(buffer[base : end + 4])
        consumed = len(data) - (len(buffer) - end - 4)  # offset in `data` after the head
        self.head = bytearray()
        self.scan_from = 0
        checked = check(head, self.limits)
        if isinstance(checked, Rejection):
            self._reject(checked)
            return len(data)
        self._feed_head(checked)
        return consumed

    def _feed_head(self, head: Head) -> None:
        self.reading_head = False
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None
        self.method = head.method
        self.framing.reset()
        self.head_fed = True
        self._feed(head.data)

    def _body_bytes(self, data: bytes, start: int) -> int:
        left = self.body_left
        if left is None:  # chunked: llhttp finds the end
            self._feed(data[start:] if start else data)
            return len(data)
        end = min(len(data), start + left)
        self.body_left = left - (end - start)
        self._feed(data[start:end] if start or end != len(data) else data)
        return end

    def _feed(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
        except httptools.HttpParserError as exc:
            stop = exc.__context__
            if isinstance(stop, _Stop):
                self._reject(stop.rejection)
            else:
                self._reject(Rejection(400, "Invalid HTTP request received."), str(exc))

    # -- parser callbacks -------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if not self.head_fed:
            # A message llhttp found on its own, right after a chunked body in the same read:
            # its head was never checked. Stop; the connection closes after earlier answers.
            raise _Stop(Rejection(400, "Pipelined request after a chunked body."))
        self.head_fed = False
        super().on_message_begin()

    def on_header(self, name: bytes, value: bytes) -> None:
        # uvicorn's on_header, inlined (this runs for every field of every request), plus the
        # framing facts and the trailer rule.
        if self.in_body:
            return  # a chunked trailer field: never a request header (RFC 9110 §6.5.1)
        name = name.lower()
        value = value.rstrip(b" \t")  # llhttp keeps trailing OWS (RFC 9110 §5.5 excludes it)
        if name in _WATCHED:
            if name == b"expect":
                if value.lower() == b"100-continue":
                    self.expect_100_continue = True
            else:
                self.framing.add(name, value)
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        framing = self.framing
        if framing.hosts != 1 or framing.transfer_encoding is not None:  # else nothing to check
            rejection = framing.error(self.parser.get_http_version())
            if rejection is not None:
                raise _Stop(rejection)
        super().on_headers_complete()
        if self.method is not None:
            self.scope["method"] = self.method.decode("ascii")
        if self.url[:1] != b"/" and self.url != b"*":
            # An absolute-form target (RFC 9112 §3.2.2): uvicorn keeps only its path, but its
            # authority replaces Host; the context layer reads both from raw_path.
            self.scope["raw_path"] = self.url.partition(b"?")[0]
        self.in_body = True
        self.body_left = (
            0
            if framing.content_length is None and framing.transfer_encoding is None
            else framing.body_length()
        )
        if self.body_left != 0:
            self.body_timer = self.loop.call_later(self.edge.body_timeout, self._body_timeout)

    def on_message_complete(self) -> None:
        self.in_body = False
        self.reading_head = True
        if self.body_timer is not None:
            self.body_timer.cancel()
            self.body_timer = None
        super().on_message_complete()

    def _should_upgrade(self) -> bool:
        # An extension method is never a WebSocket handshake (that needs GET).
        return self.method is None and super()._should_upgrade()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.head and self.timeout_keep_alive_task is not None:
            # The next head is already arriving: its own deadline governs, not the idle one.
            self._unset_keepalive_if_required()

    # -- deadlines --------------------------------------------------------------------------

    def _head_timeout(self) -> None:
        self.head_timer = None
        if not self.reading_head or self.dead or self.transport.is_closing():
            return
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            # An answer is still being written: the next head's deadline starts again after.
            self.head_timer = self.loop.call_later(self.edge.header_timeout, self._head_timeout)
            return
        if self.head:
            self._reject(Rejection(408, "The request head did not arrive in time."))
        else:
            self.dead = True
            self.transport.close()

    def _body_timeout(self) -> None:
        self.body_timer = None
        if not self.in_body or self.dead or self.transport.is_closing():
            return
        idle = self.loop.time() - self.last_read
        wait = self.edge.body_timeout - idle
        if self.flow.read_paused or wait > 0:
            # Paused by flow control (the app is not reading), or bytes came since: not idle.
            self.body_timer = self.loop.call_later(
                self.edge.body_timeout if self.flow.read_paused else wait, self._body_timeout
            )
            return
        self._reject(Rejection(408, "The request body stalled."))

    # -- answers ----------------------------------------------------------------------------

    def _reject(self, rejection: Rejection, detail: str = "") -> None:
        self.dead = True
        self._cancel_timers()
        client = f"{self.client[0]}:{self.client[1]}" if self.client else "-"
        log.warning(
            "%s %d %s%s", client, rejection.status, rejection.reason, f" ({detail})" if detail else ""
        )
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            if self.in_body:
                # This request's own body failed: the app sees a disconnect (its upstream
                # request is aborted); the client gets the error if no answer has started.
                started = cycle.response_started
                cycle.disconnected = True
                cycle.message_event.set()
                if not started:
                    self.transport.write(_answer(rejection.status, rejection.reason))
                self.transport.close()
            else:
                # A later pipelined request failed while an earlier answer is still going out:
                # finish that answer, then close; nothing more is read or started.
                cycle.keep_alive = False
                self.pipeline.clear()
                self.flow.pause_reading()
            return
        if not self.transport.is_closing():
            if self.in_body:
                self.transport.close()  # the answer was complete: nothing more to say
            else:
                self.transport.write(_answer(rejection.status, rejection.reason))
                self.transport.close()
