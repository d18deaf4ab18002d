"""Which upstream client: naive pass-through proxies (httpx, aiohttp) and the gateway itself,
each next to the bare Starlette app measured in the same run, alternated, median ratio.

    .venv/bin/python bench/clients.py [--seconds 5] [--rounds 3]

The measurement behind the "upstream client" design note (docs/design.md).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from loadgen import run_load
from procs import Server, free_port, start

HERE = Path(__file__).parent
ROOT = HERE.parent


def uvicorn(app: str, port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "uvicorn",
        app,
        "--app-dir",
        str(HERE),
        "--port",
        str(port),
        "--loop",
        "uvloop",
        "--http",
        "httptools",
        "--no-access-log",
        "--log-level",
        "warning",
    ]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args()
    logs = Path(tempfile.mkdtemp(prefix="gw-clients-"))
    servers: list[Server] = []
    try:
        up_port = free_port()
        upstream = start("upstream", uvicorn("refapp:raw_app", up_port), up_port, logs, core=1)
        servers.append(upstream)
        env = {**os.environ, "BENCH_UPSTREAM": upstream.url}
        candidates = {
            "reference (bare Starlette)": uvicorn("refapp:starlette_app", free_port()),
            "naive proxy, httpx": uvicorn("client_apps:httpx_app", free_port()),
            "naive proxy, aiohttp": uvicorn("client_apps:aiohttp_app", free_port()),
        }
        gw_port = free_port()
        candidates["gateway (aiohttp, pass-through)"] = [sys.executable, "-m", "gateway"]
        env_gw = {
            **env,
            "GATEWAY_UPSTREAM_URL": upstream.url,
            "GATEWAY_PORT": str(gw_port),
            "GATEWAY_HOST": "127.0.0.1",
            "GATEWAY_ACCESS_LOG": "false",
            "GATEWAY_CACHE_ENABLED": "false",
            "GATEWAY_LOG_LEVEL": "warning",
        }
        results: dict[str, list[float]] = {name: [] for name in candidates}
        for _ in range(args.rounds):
            for name, argv in candidates.items():
                port = gw_port if name.startswith("gateway") else int(argv[argv.index("--port") + 1])
                server = start(
                    name.split()[0],
                    argv,
                    port,
                    logs,
                    core=0,
                    env=env_gw if name.startswith("gateway") else env,
                    ready_path="/__gateway/health" if name.startswith("gateway") else "/",
                )
                try:
                    run_load(f"{server.url}/item", seconds=1, connections=args.connections, core=1)
                    result = run_load(
                        f"{server.url}/item", seconds=args.seconds, connections=args.connections, core=1
                    )
                    assert result.non_2xx == 0 and result.errors == 0, (name, result)
                    results[name].append(result.rps)
                finally:
                    server.stop()
        ref = statistics.median(results["reference (bare Starlette)"])
        print(f"{'candidate':36} {'req/s (median)':>15} {'x reference':>12}")
        for name, values in results.items():
            rps = statistics.median(values)
            print(f"{name:36} {rps:15,.0f} {rps / ref:12.2f}")
    finally:
        for server in servers:
            server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
