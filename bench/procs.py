"""Processes the benchmark starts: pinned to a core, waited for, measured, always stopped."""

from __future__ import annotations

import contextlib
import http.client
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pinned(core: int | None, argv: Sequence[str]) -> list[str]:
    """argv run on one core via taskset (unpinned when taskset or the core is unavailable)."""
    if core is None or shutil.which("taskset") is None or core >= (os.cpu_count() or 1):
        return list(argv)
    return ["taskset", "-c", str(core), *argv]


@dataclass
class Server:
    """A started process and where it listens; `stop()` ends it and its children."""

    name: str
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path
    pid_file: Path | None = None
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def main_pid(self) -> int:
        """The process that serves: nginx's master writes its own pid file; others are ours."""
        if self.pid_file is not None and self.pid_file.exists():
            return int(self.pid_file.read_text().split()[0])
        return self.proc.pid

    def peak_rss_kib(self) -> int:
        """Largest VmHWM (peak resident set) among the process and its descendants."""
        return max((vm_hwm_kib(pid) for pid in process_tree(self.main_pid())), default=0)

    def log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def stop(self) -> None:
        if self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def start(
    name: str,
    argv: Sequence[str],
    port: int,
    log_dir: Path,
    *,
    env: Mapping[str, str] | None = None,
    core: int | None = None,
    pid_file: Path | None = None,
    ready_path: str | None = "/",
    timeout: float = 20.0,
) -> Server:
    """Start argv in its own process group and wait until `port` answers (HTTP when ready_path)."""
    log_path = log_dir / f"{name}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            pinned(core, argv),
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env or os.environ),
            start_new_session=True,
        )
    server = Server(name, port, proc, log_path, pid_file)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}:\n{server.log_tail()}")
        if (http_status(port, ready_path) is not None) if ready_path else port_open(port):
            return server
        time.sleep(0.05)
    server.stop()
    raise RuntimeError(f"{name} did not listen on {port} within {timeout:.0f} s:\n{server.log_tail()}")


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def http_status(port: int, path: str) -> int | None:
    return http_get(port, path)[0]


def http_get(port: int, path: str) -> tuple[int | None, dict[str, str]]:
    """One GET on loopback: (status, lower-cased headers), (None, {}) when nothing answers."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}
    except OSError:
        return None, {}
    finally:
        conn.close()


def process_tree(pid: int) -> list[int]:
    """pid and all its descendants (via /proc/<pid>/task/<tid>/children)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").glob("*"):
            with contextlib.suppress(OSError):
                todo += [int(child) for child in (task / "children").read_text().split()]
    return found


def vm_hwm_kib(pid: int) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0
