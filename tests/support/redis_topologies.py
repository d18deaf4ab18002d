"""Real local Redis topologies for tests: a 3-primary Cluster and a Sentinel-managed master.

Everything runs on free loopback ports in temporary directories and is torn down afterwards.
No redis-cli: the cluster is formed from Python (CLUSTER ADDSLOTSRANGE, SET-CONFIG-EPOCH, MEET),
and the sentinels are `redis-server <conf> --sentinel` processes.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from tests.support.redis_server import RedisServer, free_port, server_binary, stop_process

SLOTS = 16384
MASTER_NAME = "gwmaster"


def command(node: redis.Redis, *args: str | int) -> Any:
    """One raw command; the reply's shape depends on the command (redis-py leaves it untyped)."""
    return node.execute_command(*args)  # type: ignore[no-untyped-call]  # untyped in redis-py


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(redis.RedisError, OSError):
            if condition():
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} within {timeout:.0f} s")
        time.sleep(0.05)


def cluster_port() -> int:
    """A free port whose cluster bus port (+10000) is free and valid too."""
    while True:
        port = free_port()
        if port + 10000 >= 65536:
            continue
        with socket.socket() as bus, contextlib.suppress(OSError):
            bus.bind(("127.0.0.1", port + 10000))
            return port


class LocalCluster:
    """`masters` primaries sharing the 16384 slots, no replicas; `.ports` lists them."""

    def __init__(self, masters: int = 3) -> None:
        self.servers: list[RedisServer] = []
        self.masters = masters

    @property
    def ports(self) -> list[int]:
        return [s.port for s in self.servers]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.ports[0]}"

    def start(self) -> LocalCluster:
        try:
            for _ in range(self.masters):
                server = RedisServer(
                    "--cluster-enabled",
                    "yes",
                    "--cluster-node-timeout",
                    "2000",
                    "--cluster-config-file",
                    "nodes.conf",
                    port=cluster_port(),
                )
                self.servers.append(server.start())
            self._form()
        except BaseException:
            self.close()
            raise
        return self

    def _form(self) -> None:
        clients = [redis.Redis(host=s.host, port=s.port) for s in self.servers]
        try:
            share = SLOTS // len(clients) + 1
            for i, node in enumerate(clients):
                command(node, "CLUSTER", "ADDSLOTSRANGE", i * share, min((i + 1) * share, SLOTS) - 1)
                command(node, "CLUSTER", "SET-CONFIG-EPOCH", i + 1)
            for server in self.servers[1:]:
                command(clients[0], "CLUSTER", "MEET", server.host, server.port)

            def formed() -> bool:
                return all(
                    b"cluster_state:ok" in command(n, "CLUSTER", "INFO")
                    and len(command(n, "CLUSTER", "NODES").splitlines()) == len(clients)
                    for n in clients
                )

            wait_until(formed, 20, "the test cluster did not form")
        finally:
            for node in clients:
                node.close()

    def flushall(self) -> None:
        for server in self.servers:
            with redis.Redis(host=server.host, port=server.port) as node:
                node.flushall()

    def close(self) -> None:
        for server in self.servers:
            server.close()
        self.servers = []

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


class SentinelProcess:
    """One `redis-server <conf> --sentinel` watching the master under `MASTER_NAME`."""

    def __init__(self, master_port: int, quorum: int) -> None:
        self.host = "127.0.0.1"
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="gw-sentinel-")
        self.conf = Path(self.dir, "sentinel.conf")
        self.conf.write_text(
            f"port {self.port}\nbind 127.0.0.1\nprotected-mode no\ndir {self.dir}\n"
            f"sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} {quorum}\n"
            f"sentinel down-after-milliseconds {MASTER_NAME} 600\n"
            f"sentinel failover-timeout {MASTER_NAME} 4000\n"
            f"sentinel parallel-syncs {MASTER_NAME} 1\n"
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> SentinelProcess:
        self.proc = subprocess.Popen(
            [server_binary(), str(self.conf), "--sentinel"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(self.ping, 10, "a sentinel did not start")
        return self

    def ping(self) -> bool:
        with redis.Redis(host=self.host, port=self.port, socket_timeout=0.5) as client:
            return bool(client.ping())

    def close(self) -> None:
        stop_process(self.proc)
        self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)


class LocalSentinel:
    """A master, one replica and `sentinels` sentinels (quorum: a majority of them).

    `master`/`replica` are the servers as started; after `failover()` their roles are swapped.
    """

    def __init__(self, sentinels: int = 1) -> None:
        self.count = sentinels
        # No 5 s diskless-sync delay: the replica (and a demoted master) sync at once.
        fast_sync = ("--repl-diskless-sync-delay", "0")
        self.master = RedisServer(*fast_sync)
        self.replica = RedisServer(*fast_sync)
        self.sentinels: list[SentinelProcess] = []

    @property
    def addresses(self) -> list[tuple[str, int]]:
        return [(s.host, s.port) for s in self.sentinels]

    @property
    def env_value(self) -> str:
        """The value of REDIS_SENTINELS."""
        return ",".join(f"{h}:{p}" for h, p in self.addresses)

    def start(self) -> LocalSentinel:
        try:
            self.master.start()
            self.replica.extra_args += ("--replicaof", self.master.host, str(self.master.port))
            self.replica.start()
            wait_until(lambda: _link_up(self.replica), 10, "the replica did not sync")
            quorum = self.count // 2 + 1
            self.sentinels = [SentinelProcess(self.master.port, quorum).start() for _ in range(self.count)]
            wait_until(self._sentinels_see_replica, 15, "sentinels did not discover the replica")
        except BaseException:
            self.close()
            raise
        return self

    def _sentinels_see_replica(self) -> bool:
        for sentinel in self.sentinels:
            with redis.Redis(host=sentinel.host, port=sentinel.port) as client:
                replicas = client.execute_command("SENTINEL", "REPLICAS", MASTER_NAME)
                if not replicas:
                    return False
        return True

    def master_port(self) -> int:
        """The master's port as the first sentinel reports it now."""
        sentinel = self.sentinels[0]
        with redis.Redis(host=sentinel.host, port=sentinel.port) as client:
            reply = client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME)
        return int(reply[1])

    def failover(self, timeout: float = 20) -> None:
        """Stop the master and wait until the sentinels have promoted the replica."""
        old, new = self.master, self.replica
        old.stop()
        wait_until(
            lambda: self.master_port() == new.port and _is_master(new),
            timeout,
            "the sentinels did not promote the replica",
        )
        self.master, self.replica = new, old

    def close(self) -> None:
        for sentinel in self.sentinels:
            sentinel.close()
        self.sentinels = []
        self.replica.close()
        self.master.close()

    def __enter__(self) -> LocalSentinel:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def _link_up(server: RedisServer) -> bool:
    with redis.Redis(host=server.host, port=server.port) as client:
        info = client.info("replication")
    return bool(info.get("master_link_status") == "up")


def _is_master(server: RedisServer) -> bool:
    with redis.Redis(host=server.host, port=server.port) as client:
        return bool(client.info("replication").get("role") == "master")
