"""Starting uvicorn with the front end: one or two listeners, one or many workers.

Both listeners are bound here, in the parent, and handed to one `uvicorn.Server` per worker:
uvicorn serves every socket it is given with the same protocol class, and `EdgeProtocol` tells
the admin listener apart by its port (its own small budget; the app answers only admin paths
there). With GATEWAY_WORKERS > 1, uvicorn's supervisor passes the same two sockets to every
worker, so each worker has both listeners and its own budgets (the kernel spreads accepts).
"""

from __future__ import annotations

import logging
import resource
import socket

import uvicorn
from uvicorn.supervisors import Multiprocess

from gateway.config import Settings
from gateway.edge.protocol import EdgeConfig, EdgeProtocol
from gateway.errors import ConfigError

log = logging.getLogger("gateway")

#: Descriptors a worker needs besides client connections: listeners, the upstream pools' and
#: Redis's sockets are counted separately; this covers logs, the event loop, refused
#: connections still lingering (at most 256) and slack.
_FD_OVERHEAD = 320


def fds_needed(settings: Settings) -> int:
    edge = settings.edge
    admin = edge.admin_max_connections if edge.admin_port is not None else 0
    # aiohttp's pool and the exact (httpx) transport's pool are separate budgets.
    upstream = 2 * settings.upstream_max_connections
    redis = settings.redis.pool_max if settings.redis.configured else 0
    if settings.counters_redis is not None:  # the counters' own Redis has a pool of its own
        redis += settings.counters_redis.pool_max
    return edge.max_connections + admin + upstream + redis + _FD_OVERHEAD


def ensure_fd_limit(settings: Settings) -> None:
    """Raise RLIMIT_NOFILE's soft limit toward the hard one if the budgets need it; if even the
    hard limit is too small, stop: a connection cap the process cannot reach would turn into
    accept() failures that reset every new client, health checks included."""
    needed = fds_needed(settings)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise ConfigError(
            "GATEWAY_MAX_CONNECTIONS",
            f"needs about {needed} file descriptors per worker (with the upstream and Redis "
            f"pools), but the hard limit is {hard} (ulimit -Hn): lower the connection budgets "
            f"or raise the limit",
        )
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    log.info("raised the open-files limit from %d to %d", soft, needed)


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


def serve(settings: Settings) -> None:
    ensure_fd_limit(settings)
    edge = settings.edge
    config = EdgeConfig(
        "gateway.cli:app_factory",
        factory=True,
        workers=settings.workers,
        host=settings.host,
        port=settings.port,
        # The upstream's Date and Server pass through; uvicorn must not add its own.
        server_header=False,
        date_header=False,
        # Client identity through trusted proxies is the gateway's job (GATEWAY_TRUSTED_PROXIES).
        proxy_headers=False,
        access_log=False,
        log_config=None,
        lifespan="on",
        loop="uvloop",
        http=EdgeProtocol,
        timeout_keep_alive=int(edge.keepalive_timeout) or 1,
        timeout_graceful_shutdown=10,
        edge=edge,
    )
    # uvicorn's timer takes seconds as given; keep fractions (tests use short timeouts).
    config.timeout_keep_alive = edge.keepalive_timeout  # type: ignore[assignment]
    sockets = [bind(settings.host, settings.port)]
    where = [f"http://{settings.host}:{settings.port}"]
    if edge.admin_port is not None:
        admin_host = edge.admin_host or "127.0.0.1"
        sockets.append(bind(admin_host, edge.admin_port))
        where.append(f"admin on http://{admin_host}:{edge.admin_port}")
    log.info(
        "listening on %s (%d worker%s)",
        ", ".join(where),
        settings.workers,
        "s" if settings.workers > 1 else "",
    )
    try:
        if settings.workers > 1:
            Multiprocess(config, sockets=sockets).run()
        else:
            uvicorn.Server(config).run(sockets=sockets)
    finally:
        for sock in sockets:
            sock.close()
