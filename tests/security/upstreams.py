"""Upstreams for the security tests, recording at the socket level.

`RawRecorder` keeps every byte each connection sent and the requests h11 parsed from them, and
notes connections that closed in the middle of a request (an aborted upstream request).
It answers each request `200` with a small cacheable body naming the path.
`Canary` accepts connections and answers nothing: it must never see a byte.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field

import h11

from tests.support.redis_server import free_port


@dataclass
class Received:
    method: bytes
    target: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes

    def header(self, name: bytes) -> bytes | None:
        return next((v for k, v in self.headers if k == name), None)


@dataclass
class Connection:
    raw: bytearray = field(default_factory=bytearray)
    aborted: bool = False  # closed with a request half received


class _Server:
    def __init__(self) -> None:
        self.port = free_port()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()

    async def _tracked(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.add(writer)
        try:
            await self.handle(reader, writer)
        finally:
            self.writers.discard(writer)

    def start(self) -> None:
        self.thread.start()
        future = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._tracked, "127.0.0.1", self.port), self.loop
        )
        self.server = future.result(10)

    def stop(self) -> None:
        async def close() -> None:
            assert self.server is not None
            self.server.close()
            for writer in list(self.writers):  # connections still open: closed with the loop
                writer.close()
            await asyncio.sleep(0.05)

        asyncio.run_coroutine_threadsafe(close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError


class RawRecorder(_Server):
    def __init__(self) -> None:
        super().__init__()
        self.connections: list[Connection] = []
        self.requests: list[Received] = []
        self.lock = threading.Lock()

    def reset(self) -> None:
        with self.lock:
            self.connections.clear()
            self.requests.clear()

    def wait_for_abort(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if any(c.aborted for c in self.connections):
                    return True
            time.sleep(0.05)
        return False

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = Connection()
        with self.lock:
            self.connections.append(conn)
        parser = h11.Connection(h11.SERVER)
        request: h11.Request | None = None
        body = bytearray()
        try:
            while True:
                event = parser.next_event()
                if event is h11.NEED_DATA:
                    data = await reader.read(65536)
                    conn.raw += data
                    if not data:
                        conn.aborted = request is not None
                        break
                    parser.receive_data(data)
                    continue
                if isinstance(event, h11.Request):
                    request, body = event, bytearray()
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, h11.EndOfMessage):
                    assert request is not None
                    with self.lock:
                        self.requests.append(
                            Received(request.method, request.target, list(request.headers), bytes(body))
                        )
                    answer = b"answer for " + request.target
                    writer.write(
                        b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n"
                        b"cache-control: max-age=60\r\ncontent-length: %d\r\n\r\n%s"
                        % (len(answer), b"" if request.method == b"HEAD" else answer)
                    )
                    await writer.drain()
                    parser.send(h11.Response(status_code=200, headers=[]))
                    parser.send(h11.EndOfMessage())
                    parser.start_next_cycle()
                    request = None
                elif isinstance(event, h11.ConnectionClosed):
                    break
        except (h11.RemoteProtocolError, ConnectionError):
            conn.aborted = request is not None
        finally:
            writer.close()


class Canary(_Server):
    def __init__(self) -> None:
        super().__init__()
        self.accepted = 0
        self.received = bytearray()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        try:
            while data := await reader.read(65536):
                self.received += data
        finally:
            writer.close()
