"""Attacks on the shared cache, end to end: real gateway processes on a real Redis (and on the
embedded memory store) in front of the recording upstream, driven with httpx and raw sockets.

Each test names the attack and the defence: a client's no-cache cannot replace a fresh entry
with a poisoned answer; error answers are not stored; requests cannot be made to share a key;
a client that stops reading cannot hold the collapsing lock; teeing misses cannot grow a worker
without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import httpx
import pytest

from tests.support.cache_e2e import entries, members, poll, target
from tests.support.gateway_process import GatewayProcess
from tests.support.raw_http import raw_request
from tests.support.upstream import RecordingUpstream, UpstreamServer

pytestmark = pytest.mark.e2e

MiB = 1024 * 1024
SITE = {"Host": "api.example"}
Start = Callable[[Mapping[str, str]], GatewayProcess]


@pytest.fixture(scope="module")
def upstream_server() -> Iterator[RecordingUpstream]:
    server = UpstreamServer()
    app = server.start()
    yield app
    server.stop()


@pytest.fixture
def upstream(upstream_server: RecordingUpstream) -> RecordingUpstream:
    upstream_server.reset()
    return upstream_server


@pytest.fixture(params=["redis", "memory"])
def store_env(request: pytest.FixtureRequest) -> dict[str, str]:
    """The environment that selects the store: a flushed real Redis, or none (embedded)."""
    if request.param == "redis":
        return {"REDIS_URL": request.getfixturevalue("redis_url")}
    return {}


@pytest.fixture
def start(upstream: RecordingUpstream) -> Iterator[Start]:
    started: list[GatewayProcess] = []

    def run(env: Mapping[str, str]) -> GatewayProcess:
        gw = GatewayProcess({"GATEWAY_UPSTREAM_URL": upstream.url, "GATEWAY_ACCESS_LOG": "false", **env})
        started.append(gw)
        return gw.start()

    yield run
    for gw in started:
        gw.stop()


def get(gw: GatewayProcess, raw_target: str, headers: Mapping[str, str] | None = None) -> httpx.Response:
    return httpx.get(f"{gw.url}{raw_target}", headers={**SITE, **(headers or {})}, timeout=10)


def requests_with(upstream: RecordingUpstream, name: bytes) -> int:
    return sum(1 for seen in upstream.requests if seen.header(name) is not None)


# -- 1. client no-cache --------------------------------------------------------------------------

ATTACKS = [
    {"Cache-Control": "no-cache"},
    {"Cache-Control": "max-age=0"},
    {"Cache-Control": "no-cache, max-age=0, min-fresh=99999"},
    {"Pragma": "no-cache"},
]


def test_client_no_cache_cannot_replace_a_fresh_entry_with_a_poisoned_answer(
    start: Start, upstream: RecordingUpstream, store_env: dict[str, str]
) -> None:
    """The attacker's requests carry a header the origin reflects (X-Answer-Header): if one of
    them reached the origin and were stored, every later client would get the poisoned field."""
    victim_side = start(store_env)
    attacker_side = start(store_env) if "REDIS_URL" in store_env else victim_side
    url = target("poison", "max-age=60")
    original = get(victim_side, url)
    assert (original.status_code, original.headers["x-cache"]) == (200, "MISS")

    for attack in ATTACKS:
        poisoned = get(attacker_side, url, {**attack, "X-Answer-Header": "X-Poisoned: yes"})
        assert poisoned.headers["x-cache"] == "HIT", attack  # answered from storage
        assert poisoned.content == original.content
        assert "x-poisoned" not in poisoned.headers

    clean = get(victim_side, url)
    assert (clean.headers["x-cache"], clean.content) == ("HIT", b"/cache/poison #1")
    assert "x-poisoned" not in clean.headers
    assert upstream.hits["/cache/poison"] == 1
    assert requests_with(upstream, b"x-answer-header") == 0  # the origin never saw the attack


def test_client_no_cache_refreshes_the_entry_only_where_the_route_opts_in(
    start: Start, upstream: RecordingUpstream
) -> None:
    gw = start({"GATEWAY_CACHE_HONOR_CLIENT_NO_CACHE": "true"})
    url = target("optin", "max-age=60")
    assert get(gw, url).content == b"/cache/optin #1"
    refreshed = get(gw, url, {"Pragma": "no-cache"})
    assert refreshed.content == b"/cache/optin #2" and refreshed.headers["x-cache"] == "EXPIRED"
    assert get(gw, url).content == b"/cache/optin #2"  # the route chose to let clients refresh
    assert upstream.hits["/cache/optin"] == 2


# -- 2. error statuses ---------------------------------------------------------------------------


def test_upstream_503_with_max_age_is_not_stored_but_404_still_is(
    start: Start, upstream: RecordingUpstream, store_env: dict[str, str]
) -> None:
    gw = start({**store_env, "GATEWAY_CACHE_TTL": "60"})
    down = target("down", "max-age=60")
    for _ in range(3):
        answer = get(gw, down, {"X-Answer-Status": "503"})
        assert answer.status_code == 503 and answer.headers["x-cache"] == "MISS"
        assert "stored" not in members(answer)
    assert upstream.hits["/cache/down"] == 3
    if "REDIS_URL" in store_env:
        assert entries(store_env["REDIS_URL"], down) == []

    # the default TTL (60 s here) never applies to an error: a bare 400 or 500 is not kept
    for status in ("400", "500"):
        bare = target(f"bare{status}")
        get(gw, bare, {"X-Answer-Status": status})
        assert get(gw, bare, {"X-Answer-Status": status}).headers["x-cache"] == "MISS"
        assert upstream.hits[f"/cache/bare{status}"] == 2

    missing = target("missing", "max-age=60")
    assert get(gw, missing, {"X-Answer-Status": "404"}).headers["x-cache"] == "MISS"
    again = get(gw, missing)
    assert (again.status_code, again.headers["x-cache"]) == (404, "HIT")
    assert upstream.hits["/cache/missing"] == 1


def test_stale_if_error_serves_the_good_entry_and_the_upstream_500_never_replaces_it(
    start: Start, upstream: RecordingUpstream, store_env: dict[str, str]
) -> None:
    gw = start(store_env)
    url = target("sie", "max-age=1, stale-if-error=60, max-age=600", fail_after="1")
    first = get(gw, url)
    assert first.headers["x-cache"] == "MISS" and first.status_code == 200
    time.sleep(1.6)  # stale now; the origin fails from its second hit on
    for _ in range(3):
        covered = get(gw, url)
        assert (covered.status_code, covered.content) == (200, b"/cache/sie #1")
        assert covered.headers["x-cache"] == "STALE" and "detail=stale-if-error" in members(covered)
    assert upstream.hits["/cache/sie"] == 4  # each tried the origin; none replaced the entry


# -- 3. key collisions ---------------------------------------------------------------------------


def raw_get(port: int, raw_target: bytes, host: bytes) -> tuple[int, dict[bytes, bytes], bytes]:
    request = b"GET " + raw_target + b" HTTP/1.1\r\nHost: " + host + b"\r\nConnection: close\r\n\r\n"
    status, headers, body = raw_request(port, request)
    return status, dict(headers), body


def test_pipe_in_the_query_or_host_cannot_make_two_requests_share_a_cache_entry(
    start: Start, upstream: RecordingUpstream, store_env: dict[str, str]
) -> None:
    """Under the old key ("<target>|<scheme>://<host>|<route>") these two requests had one key:
    the attacker's answer would have been served for the victim's host."""
    gw = start(store_env)
    query = b"cc=max-age%3D60&x="
    attacker_target = b"/cache/k?" + query + b"|http://victim.example|default"
    attacker_host = b"attacker.example"
    victim_target = b"/cache/k?" + query
    victim_host = b"victim.example|default|http://attacker.example"
    old = "{}|http://{}|default"
    assert old.format(attacker_target.decode(), attacker_host.decode()) == old.format(
        victim_target.decode(), victim_host.decode()
    )

    status, headers, body = raw_get(gw.port, attacker_target, attacker_host)
    assert (status, headers[b"x-cache"], body) == (200, b"MISS", b"/cache/k #1")
    assert raw_get(gw.port, attacker_target, attacker_host)[1][b"x-cache"] == b"HIT"

    status, headers, body = raw_get(gw.port, victim_target, victim_host)
    assert headers.get(b"x-cache") != b"HIT" and body != b"/cache/k #1"
    if status == 200:  # (a front end that validates Host may refuse this one outright: fine)
        assert body == b"/cache/k #2" and upstream.hits["/cache/k"] == 2


def test_cache_key_format_bump_never_serves_an_old_format_redis_entry(
    start: Start, upstream: RecordingUpstream, redis_url: str
) -> None:
    """An entry written under the old prefix and key (gw:c1:, unescaped fields) is not read."""
    import redis

    from gateway.cache.relay import build_entry
    from gateway.cache.request import CacheRequest
    from gateway.config import CacheSettings

    url = target("legacy", "max-age=60")
    old_key = f"{url}|http://api.example|default"
    entry = build_entry(
        CacheRequest(old_key, "GET", [], CacheSettings()),
        200,
        [(b"cache-control", b"max-age=600"), (b"content-type", b"text/plain")],
        b"FORGED",
        request_time=time.time(),
        response_time=time.time(),
    )
    with redis.Redis.from_url(redis_url) as client:
        client.hset(f"gw:c1:{{{old_key}}}", mapping={"vary": "", "v:": entry.encode()})
    gw = start({"REDIS_URL": redis_url})
    answer = get(gw, url)
    assert (answer.headers["x-cache"], answer.content) == ("MISS", b"/cache/legacy #1")


# -- 4. collapsing with a client that never reads ------------------------------------------------

BIG = 12 * MiB  # beyond what the kernel buffers for one stalled loopback socket (tcp_wmem 4 MiB)


def stalled_client(port: int, raw_target: str) -> socket.socket:
    """Sends a GET, then never reads: its receive window stays tiny and full."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.sendall(f"GET {raw_target} HTTP/1.1\r\nHost: api.example\r\nConnection: close\r\n\r\n".encode())
    return sock


def read_all(sock: socket.socket) -> bytes:
    sock.settimeout(30)
    data = bytearray()
    while chunk := sock.recv(1 << 20):
        data += chunk
    return bytes(data)


async def fetch_all(base: str, raw_target: str, count: int) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=base, headers=SITE, timeout=60) as client:
        return list(await asyncio.gather(*(client.get(raw_target) for _ in range(count))))


def test_a_leader_that_stops_reading_cannot_hold_collapsed_followers_beyond_the_upstream_time(
    start: Start, upstream: RecordingUpstream, store_env: dict[str, str]
) -> None:
    # (Writing 12 MiB to Redis takes longer than the default 0.25 s command deadline.)
    slow_redis = {"REDIS_COMMAND_TIMEOUT": "10"} if "REDIS_URL" in store_env else {}
    gw = start(
        {
            **store_env,
            **slow_redis,
            "GATEWAY_CACHE_LOCK_TIMEOUT": "30",
            "GATEWAY_CACHE_MAX_OBJECT_BYTES": str(32 * MiB),
        }
    )
    url = target("hostage", "max-age=60", size=str(BIG), length="1", delay="1")
    leader = stalled_client(gw.port, url)
    try:
        poll(lambda: True if upstream.hits["/cache/hostage"] else None, timeout=10)
        started = time.monotonic()
        followers = asyncio.run(fetch_all(gw.url, url, 3))
        elapsed = time.monotonic() - started
        # The upstream takes ~1 s; the lock would have kept them 30 s. Generous for 2 cores.
        assert elapsed < 15, elapsed
        assert [len(r.content) for r in followers] == [BIG] * 3
        assert {r.headers["x-cache"] for r in followers} == {"HIT"}
        assert upstream.hits["/cache/hostage"] == 1
        body = read_all(leader).partition(b"\r\n\r\n")[2]  # the leader still gets it all
        assert len(body) == BIG and body.startswith(b"/cache/hostage #1")
    finally:
        leader.close()


# -- 5. tee memory budget ------------------------------------------------------------------------


def memory_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


def test_many_concurrent_large_misses_with_stalled_clients_stay_within_the_tee_budget(
    start: Start, upstream: RecordingUpstream
) -> None:
    """12 clients ask for distinct 8 MiB objects and stop reading. Without a bound the worker
    would read and hold all 96 MiB for them; with an 8 MiB budget one is teed, the rest stream
    unstored at their clients' pace, and the peak RSS grows by a bounded amount."""
    size, clients = 8 * MiB, 12
    gw = start(
        {
            "GATEWAY_CACHE_TEE_BYTES": str(size),
            "GATEWAY_CACHE_MEMORY_BYTES": str(32 * MiB),
            "GATEWAY_CACHE_MAX_OBJECT_BYTES": str(16 * MiB),
        }
    )
    assert gw.proc is not None
    pid = gw.proc.pid

    def big(name: str) -> str:
        return target(name, "max-age=60", size=str(size), length="1")

    with httpx.Client(base_url=gw.url, headers=SITE, timeout=30) as client:
        for i in range(3):  # warm up the code paths (and their allocations) first
            client.get(big(f"warm{i}"))
    baseline = memory_kib(pid, "VmHWM")
    stalled: list[socket.socket] = []
    try:
        for i in range(clients):
            stalled.append(stalled_client(gw.port, big(f"rss{i}")))
        poll(
            lambda: True if all(upstream.hits[f"/cache/rss{i}"] for i in range(clients)) else None, timeout=30
        )
        time.sleep(3.0)  # time enough to read (and, unbounded, hold) most of the answers
        with httpx.Client(base_url=gw.url, headers=SITE, timeout=30) as client:
            refused = client.get(big("late"))
        assert "detail=tee-budget" in members(refused) and "stored" not in members(refused)
        assert len(refused.content) == size
        growth_mib = (memory_kib(pid, "VmHWM") - baseline) / 1024
        print(f"tee-budget peak RSS growth: {growth_mib:.1f} MiB")
        # measured: ~17 MiB with the budget, ~77 MiB (and growing) without it
        assert growth_mib < 48, growth_mib
    finally:
        for sock in stalled:
            with contextlib.suppress(OSError):
                sock.close()

    # the stalled clients are gone: their budget is back and misses are stored again
    def stored_again() -> bool | None:
        with httpx.Client(base_url=gw.url, headers=SITE, timeout=30) as client:
            answer = client.get(big(f"after{time.monotonic_ns()}"))
        return True if "stored" in members(answer) else None

    poll(stored_again, timeout=20, interval=0.2)
