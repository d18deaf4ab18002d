"""Runs `python -m gateway` as a real subprocess for end-to-end tests."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

import httpx

from tests.support.redis_server import env_without_redis, free_port, stop_process


class GatewayProcess:
    def __init__(self, env: Mapping[str, str], *, port: int | None = None) -> None:
        self.port = port or free_port()
        self.env = {
            **env_without_redis(),
            "GATEWAY_HOST": "127.0.0.1",
            "GATEWAY_PORT": str(self.port),
            "GATEWAY_LOG_LEVEL": "info",
            **env,
        }
        self.log_path = Path(tempfile.mkstemp(prefix="gw-log-", suffix=".txt")[1])
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin_url(self) -> str:
        """Where the admin API answers: its own listener when GATEWAY_ADMIN_PORT is set."""
        port = self.env.get("GATEWAY_ADMIN_PORT")
        if port:
            return f"http://{self.env.get('GATEWAY_ADMIN_HOST') or '127.0.0.1'}:{port}"
        return self.url

    def start(self, wait: bool = True) -> GatewayProcess:
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "gateway"], env=self.env, stdout=log, stderr=log
            )
        if wait:
            self.wait_healthy()
        return self

    def wait_healthy(self, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited {self.proc.returncode}:\n{self.logs()}")
            try:
                if httpx.get(f"{self.admin_url}/__gateway/health", timeout=0.5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"gateway not healthy in {timeout}s:\n{self.logs()}")

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        stop_process(self.proc, timeout=10)

    def __enter__(self) -> GatewayProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self.log_path.unlink(missing_ok=True)
