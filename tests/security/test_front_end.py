"""Request-head limits, memory while heads arrive, the connection cap, the admin listener and
request bodies on GET: each test is an attack with the defence the client and upstream see."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.security.conftest import StartGateway
from tests.security.raw import connect, exchange, read_until_closed, statuses
from tests.security.upstreams import Canary, RawRecorder
from tests.support.gateway_process import GatewayProcess
from tests.support.redis_server import free_port


def _vm_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_too_many_header_fields_get_431_closed_and_upstream_sees_nothing(
    edge_gateway: GatewayProcess, recorder: RawRecorder
) -> None:
    fields = b"".join(b"X-F%d: v\r\n" % i for i in range(100))
    data, closed = exchange(edge_gateway.port, b"GET /h HTTP/1.1\r\nHost: a\r\n" + fields + b"\r\n")
    assert statuses(data) == [431]
    assert closed
    assert recorder.requests == []


def test_exactly_the_allowed_number_of_header_fields_passes(
    edge_gateway: GatewayProcess, recorder: RawRecorder
) -> None:
    fields = b"".join(b"X-F%d: v\r\n" % i for i in range(98))  # + Host + Connection = 100
    data, _ = exchange(
        edge_gateway.port, b"GET /h HTTP/1.1\r\nHost: a\r\n" + fields + b"Connection: close\r\n\r\n"
    )
    assert statuses(data) == [200]
    assert len(recorder.requests) == 1


def test_oversized_header_section_gets_431_closed_and_upstream_sees_nothing(
    edge_gateway: GatewayProcess, recorder: RawRecorder
) -> None:
    big = b"X-Big: " + b"a" * 33_000 + b"\r\n"
    data, closed = exchange(edge_gateway.port, b"GET /h HTTP/1.1\r\nHost: a\r\n" + big + b"\r\n")
    assert statuses(data) == [431]
    assert closed
    assert recorder.requests == []


def test_eight_mebibyte_header_is_refused_before_it_ends(
    edge_gateway: GatewayProcess, recorder: RawRecorder
) -> None:
    with connect(edge_gateway.port) as sock:
        sock.sendall(b"GET /h HTTP/1.1\r\nHost: a\r\nX-Big: ")
        sent = 0
        try:
            while sent < 8 * 1024 * 1024:
                sock.sendall(b"a" * 65536)
                sent += 65536
        except (BrokenPipeError, ConnectionResetError):
            pass
        data, closed = read_until_closed(sock)
    assert sent < 8 * 1024 * 1024, "the gateway kept reading an 8 MiB header"
    assert closed
    assert recorder.requests == []
    del data  # the 431 may be lost to a reset while we were still sending


def test_overlong_url_gets_414_closed_and_upstream_sees_nothing(
    edge_gateway: GatewayProcess, recorder: RawRecorder
) -> None:
    data, closed = exchange(edge_gateway.port, b"GET /" + b"u" * 8200 + b" HTTP/1.1\r\nHost: a\r\n\r\n")
    assert statuses(data) == [414]
    assert closed
    assert recorder.requests == []


def test_configured_limits_apply(start_gateway: StartGateway, recorder: RawRecorder) -> None:
    # (the start-up health check itself sends five fields and a 160-byte head)
    gateway = start_gateway(
        {"GATEWAY_MAX_HEADERS": "6", "GATEWAY_MAX_URL_BYTES": "20", "GATEWAY_MAX_HEADER_BYTES": "300"}
    )
    seven = b"GET /h HTTP/1.1\r\nHost: a\r\n" + b"".join(b"F%d: v\r\n" % i for i in range(6))
    assert statuses(exchange(gateway.port, seven + b"\r\n")[0]) == [431]
    long_url = b"GET /" + b"u" * 20 + b" HTTP/1.1\r\nHost: a\r\n\r\n"
    assert statuses(exchange(gateway.port, long_url)[0]) == [414]
    big = b"GET /h HTTP/1.1\r\nHost: a\r\nA: " + b"x" * 300 + b"\r\n\r\n"
    assert statuses(exchange(gateway.port, big)[0]) == [431]
    ok = b"GET /h HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
    assert statuses(exchange(gateway.port, ok)[0]) == [200]
    assert [r.target for r in recorder.requests] == [b"/h"]


def test_many_unfinished_huge_headers_keep_gateway_memory_bounded(
    edge_gateway: GatewayProcess, recorder: RawRecorder
) -> None:
    assert edge_gateway.proc is not None
    pid = edge_gateway.proc.pid
    before = _vm_rss_kib(pid)
    peak = before
    stop = threading.Event()

    def attack() -> None:
        # Each connection tries to send 32 MiB of one header that never ends.
        try:
            with connect(edge_gateway.port) as sock:
                sock.sendall(b"GET /h HTTP/1.1\r\nHost: a\r\nX-Big: ")
                for _ in range(512):
                    if stop.is_set():
                        return
                    sock.sendall(b"a" * 65536)
        except OSError:
            pass

    threads = [threading.Thread(target=attack) for _ in range(16)]
    for thread in threads:
        thread.start()
    while any(t.is_alive() for t in threads):
        peak = max(peak, _vm_rss_kib(pid))
        time.sleep(0.02)
    stop.set()
    # Sixteen 32 MiB heads would be 512 MiB; each is refused at 32 KiB plus one read.
    assert peak - before < 40 * 1024, f"RSS grew by {(peak - before) // 1024} MiB"
    assert recorder.requests == []
    assert httpx.get(f"{edge_gateway.url}/after").status_code == 200


def test_connection_cap_answers_503_while_admin_listener_health_stays_200(
    start_gateway: StartGateway, recorder: RawRecorder
) -> None:
    admin_port = free_port()
    gateway = start_gateway(
        {
            "GATEWAY_MAX_CONNECTIONS": "20",
            "GATEWAY_ADMIN_PORT": str(admin_port),
            "GATEWAY_HEADER_TIMEOUT": "30",
        }
    )
    idle = [connect(gateway.port) for _ in range(20)]
    try:
        time.sleep(0.3)  # let the gateway accept them all
        data, closed = exchange(gateway.port, b"GET /over HTTP/1.1\r\nHost: a\r\n\r\n")
        assert statuses(data) == [503]
        assert b"retry-after: 1" in data.lower()
        assert closed
        health = httpx.get(f"http://127.0.0.1:{admin_port}/__gateway/health", timeout=5)
        assert health.status_code == 200
    finally:
        for sock in idle:
            sock.close()
    time.sleep(0.3)
    assert httpx.get(f"{gateway.url}/after").status_code == 200
    assert [r.target for r in recorder.requests] == [b"/after"]


def test_admin_listener_serves_admin_only_and_main_listener_404s_admin_paths(
    start_gateway: StartGateway, recorder: RawRecorder, canary: Canary
) -> None:
    admin_port = free_port()
    gateway = start_gateway({"GATEWAY_ADMIN_PORT": str(admin_port)})
    admin = f"http://127.0.0.1:{admin_port}"
    assert httpx.get(f"{admin}/__gateway/health").status_code == 200
    assert httpx.get(f"{gateway.url}/__gateway/health").status_code == 404
    assert httpx.get(f"{gateway.url}/__gateway/metrics").status_code == 404
    assert httpx.get(f"{admin}/anything").status_code == 404
    assert httpx.get(f"{admin}/canary/x").status_code == 404
    assert recorder.requests == []
    assert httpx.get(f"{gateway.url}/routed").status_code == 200
    assert [r.target for r in recorder.requests] == [b"/routed"]


def test_admin_listener_works_with_several_workers(
    start_gateway: StartGateway, recorder: RawRecorder
) -> None:
    admin_port = free_port()
    gateway = start_gateway({"GATEWAY_ADMIN_PORT": str(admin_port), "GATEWAY_WORKERS": "2"})
    for _ in range(4):
        assert httpx.get(f"http://127.0.0.1:{admin_port}/__gateway/health").status_code == 200
        assert httpx.get(f"{gateway.url}/__gateway/health").status_code == 404
    assert httpx.get(f"{gateway.url}/w").status_code == 200


def test_get_body_is_never_forwarded_and_fat_get_caches_the_clean_answer(
    start_gateway: StartGateway, recorder: RawRecorder
) -> None:
    gateway = start_gateway({"GATEWAY_CACHE_ENABLED": "true"})
    host = f"127.0.0.1:{gateway.port}".encode()  # the cache key includes the host
    fat = (
        b"GET /cached HTTP/1.1\r\nHost: " + host + b"\r\nContent-Length: 11\r\n"
        b"Connection: close\r\n\r\nevil=inject"
    )
    data, _ = exchange(gateway.port, fat)
    assert statuses(data) == [200]
    [seen] = recorder.requests
    assert seen.body == b""
    assert seen.header(b"content-length") in (None, b"0")
    assert b"evil" not in bytes(recorder.connections[-1].raw)
    clean = httpx.get(f"{gateway.url}/cached")
    assert clean.status_code == 200
    assert clean.content == data.partition(b"\r\n\r\n")[2] == b"answer for /cached"
    assert len(recorder.requests) == 1  # the clean GET was a hit on what the fat GET stored


def test_head_body_is_dropped_and_the_connection_stays_in_sync(
    edge_gateway: GatewayProcess, recorder: RawRecorder
) -> None:
    payload = (
        b"HEAD /h1 HTTP/1.1\r\nHost: a\r\nContent-Length: 39\r\n\r\n"
        b"GET /canary/x HTTP/1.1\r\nHost: a\r\n\r\n\r\n\r\n"
        b"GET /h2 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
    )
    assert len(payload.split(b"\r\n\r\n", 1)[1].split(b"GET /h2")[0]) == 39
    data, _ = exchange(payload=payload, port=edge_gateway.port)
    assert statuses(data) == [200, 200]
    assert [(r.method, r.target, r.body) for r in recorder.requests] == [
        (b"HEAD", b"/h1", b""),
        (b"GET", b"/h2", b""),
    ]


@pytest.mark.e2e  # runs `python -m gateway check-config` as a process
@pytest.mark.parametrize(
    "variable,value",
    [
        ("GATEWAY_MAX_HEADER_BYTES", "0"),
        ("GATEWAY_MAX_HEADERS", "-1"),
        ("GATEWAY_MAX_URL_BYTES", "0"),
        ("GATEWAY_HEADER_TIMEOUT", "0"),
        ("GATEWAY_KEEPALIVE_TIMEOUT", "-5"),
        ("GATEWAY_BODY_TIMEOUT", "0"),
        ("GATEWAY_MAX_CONNECTIONS", "0"),
        ("GATEWAY_ADMIN_MAX_CONNECTIONS", "0"),
        ("GATEWAY_REQUEST_BUFFER_BYTES", "-1"),
        ("GATEWAY_HTTP_PARSER", "h11"),
    ],
)
def test_meaningless_front_end_values_stop_start_up_naming_the_variable(
    routes_file: Path, variable: str, value: str
) -> None:
    import subprocess
    import sys

    from tests.security.conftest import gateway_env
    from tests.support.redis_server import env_without_redis

    env = {**env_without_redis(), **gateway_env(routes_file), variable: value}
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "check-config"], env=env, capture_output=True, text=True, timeout=30
    )
    assert result.returncode != 0
    assert variable in result.stderr


def test_a_connection_cap_beyond_the_hard_fd_limit_stops_start_up(routes_file: Path) -> None:
    import subprocess
    import sys

    from tests.security.conftest import gateway_env
    from tests.support.redis_server import env_without_redis

    env = {
        **env_without_redis(),
        **gateway_env(routes_file),
        "GATEWAY_MAX_CONNECTIONS": "5000",
        "GATEWAY_PORT": str(free_port()),
    }
    code = (
        "import resource; resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 2048)); "
        "import sys; from gateway.cli import main; sys.exit(main([]))"
    )
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "GATEWAY_MAX_CONNECTIONS" in result.stderr
    assert "2048" in result.stderr
