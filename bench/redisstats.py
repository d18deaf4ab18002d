"""What Redis did during a run: commands and socket reads, from INFO deltas.

- `commands`: `total_commands_processed`, which counts client commands and the commands scripts
  run (an EVALSHA whose script calls INCRBY twice counts 3). `per_command` splits it by name
  from `INFO commandstats`.
- `reads`: `total_reads_processed`, the server's read events on client sockets. Redis has no
  round-trip counter; a pipeline flushed in one write is read in one event (up to 16 KiB), so
  reads approximate round trips (pipeline flushes). With auto-pipelining several concurrent
  requests share one flush, so reads per request can be well below 1.
Our own INFO calls are subtracted.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass


def _command(port: int, *args: str) -> bytes:
    """One RESP command on a fresh connection; the reply's payload (bulk string) as bytes."""
    payload = f"*{len(args)}\r\n".encode() + b"".join(f"${len(a.encode())}\r\n{a}\r\n".encode() for a in args)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(payload)
        data = b""
        while b"\r\n" not in data:
            data += sock.recv(65536)
        header, _, rest = data.partition(b"\r\n")
        if header.startswith(b"-"):
            raise RuntimeError(header.decode())
        if not header.startswith(b"$"):
            return header
        length = int(header[1:])
        while len(rest) < length + 2:
            chunk = sock.recv(65536)
            if not chunk:
                break
            rest += chunk
        return rest[:length]


@dataclass(frozen=True)
class RedisSnapshot:
    commands: int
    reads: int
    per_command: dict[str, int]

    @classmethod
    def take(cls, port: int) -> RedisSnapshot:
        info = _command(port, "INFO", "everything").decode()
        fields: dict[str, str] = {}
        per_command: dict[str, int] = {}
        for line in info.splitlines():
            key, sep, value = line.partition(":")
            if not sep:
                continue
            if key.startswith("cmdstat_"):
                calls = value.split(",")[0].removeprefix("calls=")
                per_command[key.removeprefix("cmdstat_")] = int(calls)
            else:
                fields[key] = value
        return cls(int(fields["total_commands_processed"]), int(fields["total_reads_processed"]), per_command)


def flushall(port: int) -> None:
    _command(port, "FLUSHALL")


@dataclass(frozen=True)
class RedisUsage:
    commands_per_request: float
    reads_per_request: float
    per_command_per_request: dict[str, float]


def usage(before: RedisSnapshot, after: RedisSnapshot, requests: int) -> RedisUsage:
    """Per-request Redis work between two snapshots (one INFO call of ours is in the delta)."""
    n = max(requests, 1)
    delta = {name: calls - before.per_command.get(name, 0) for name, calls in after.per_command.items()}
    own_info = delta.pop("info", 0)
    delta = {name: calls for name, calls in delta.items() if calls > 0}
    return RedisUsage(
        commands_per_request=(after.commands - before.commands - own_info) / n,
        reads_per_request=max(0, after.reads - before.reads - 2 * own_info) / n,
        per_command_per_request={k: round(v / n, 4) for k, v in sorted(delta.items())},
    )
