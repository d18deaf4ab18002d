"""Load generation: wrk when installed, else a small asyncio HTTP/1.1 keep-alive client.

Both print (wrk through wrk_report.lua) one `BENCH_JSON {...}` line with the same fields:
requests, duration_us, p50_us, p90_us, p99_us, mean_us, max_us and error counts, where
`status_errors` counts answers outside 2xx (wrk: status >= 400; the probes in harness.py check
that real answers are 200). The fallback is run as its own pinned process:
`python bench/loadgen.py URL --connections 64 --duration 10`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

HERE = Path(__file__).resolve().parent
MARK = "BENCH_JSON "


@dataclass(frozen=True)
class LoadResult:
    requests: int
    seconds: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    errors: int  # socket errors and timeouts
    non_2xx: int

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def tool(preferred: str = "auto") -> str:
    """The load generator to use: wrk when installed (or asked for), else the Python one."""
    if preferred == "auto":
        return "wrk" if shutil.which("wrk") else "python"
    return preferred


def run_load(
    url: str, *, seconds: float, connections: int, core: int | None, generator: str = "auto"
) -> LoadResult:
    """Load `url` for `seconds` from a separate process (pinned to `core`)."""
    from procs import pinned

    if tool(generator) == "wrk":
        argv = [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            "--latency",
            "--timeout",
            "5s",
            "-s",
            str(HERE / "wrk_report.lua"),
            url,
        ]
    else:
        argv = [
            sys.executable,
            str(HERE / "loadgen.py"),
            url,
            "--connections",
            str(connections),
            "--duration",
            str(seconds),
        ]
    out = subprocess.run(
        pinned(core, argv), capture_output=True, text=True, check=False, timeout=seconds + 60
    )
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith(MARK)), None)
    if line is None:
        raise RuntimeError(f"load generator failed ({out.returncode}): {out.stderr[-2000:]}")
    data = json.loads(line[len(MARK) :])
    return LoadResult(
        requests=int(data["requests"]),
        seconds=data["duration_us"] / 1e6,
        p50_ms=data["p50_us"] / 1e3,
        p90_ms=data["p90_us"] / 1e3,
        p99_ms=data["p99_us"] / 1e3,
        errors=int(data["connect_errors"] + data["read_errors"] + data["write_errors"] + data["timeouts"]),
        non_2xx=int(data["status_errors"]),
    )


# ---- fallback load generator -------------------------------------------------------------


async def _connection(
    host: str, port: int, request: bytes, stop_at: float, latencies: list[float], counters: dict[str, int]
) -> None:
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError:
        counters["connect_errors"] += 1
        return
    clock = time.perf_counter
    try:
        while clock() < stop_at:
            started = clock()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if length:
                await reader.readexactly(length)
            latencies.append(clock() - started)
            if not 200 <= status < 300:
                counters["status_errors"] += 1
    except (OSError, asyncio.IncompleteReadError, ValueError):
        counters["read_errors"] += 1
    finally:
        writer.close()


async def _generate(url: str, connections: int, duration: float) -> dict[str, Any]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    request = f"GET {path} HTTP/1.1\r\nHost: {parts.netloc}\r\n\r\n".encode()
    latencies: list[float] = []
    counters = {"connect_errors": 0, "read_errors": 0, "status_errors": 0}
    started = time.perf_counter()
    stop_at = started + duration
    await asyncio.gather(
        *(_connection(host, port, request, stop_at, latencies, counters) for _ in range(connections))
    )
    elapsed = time.perf_counter() - started
    ordered = sorted(latencies) or [0.0]

    def pct(p: float) -> int:
        return int(ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] * 1e6)

    return {
        "requests": len(latencies),
        "duration_us": int(elapsed * 1e6),
        "bytes": 0,
        "p50_us": pct(50),
        "p90_us": pct(90),
        "p99_us": pct(99),
        "mean_us": sum(ordered) / len(ordered) * 1e6,
        "max_us": int(ordered[-1] * 1e6),
        "write_errors": 0,
        "timeouts": 0,
        **counters,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="fallback HTTP load generator (keep-alive GETs)")
    parser.add_argument("url")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--duration", type=float, default=10.0)
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    result = asyncio.run(_generate(args.url, args.connections, args.duration))
    print(MARK + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
