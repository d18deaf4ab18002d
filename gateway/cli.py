"""Command line: `python -m gateway [run]` serves; `python -m gateway check-config` validates.

The environment is read once, here. Bad configuration ends the process before it serves, with
one line that names the variable and never its value when the value is a secret.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import fields, is_dataclass
from typing import Any

from gateway.config import RedisSettings, Secret, Settings
from gateway.environment import settings_from_env
from gateway.errors import ConfigError

log = logging.getLogger("gateway")


def load_settings(environ: Mapping[str, str]) -> Settings:
    settings = settings_from_env(environ)
    from gateway.app import validate

    validate(settings)
    return settings


def configure_logging(settings: Settings) -> None:
    """Plain lines on stderr; each worker process configures its own (uvicorn spawns them)."""
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )


def app_factory() -> Any:
    """uvicorn's factory in every worker process (workers re-read the same environment)."""
    from gateway.app import create_app

    settings = load_settings(os.environ)
    configure_logging(settings)
    return create_app(settings)


def _redacted(value: Any) -> Any:
    if isinstance(value, Secret):
        return "**********"
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: _redacted(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, dict | Mapping):
        return {str(k): _redacted(v) for k, v in value.items()}
    if isinstance(value, tuple | list | frozenset | set):
        return [_redacted(v) for v in (sorted(value) if isinstance(value, frozenset | set) else value)]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


def check_config(settings: Settings) -> int:
    import json

    print(json.dumps(_redacted(settings), indent=2))
    targets = [("redis", settings.redis)] if settings.redis.configured else []
    if settings.counters_redis is not None:
        targets.append(("counters redis", settings.counters_redis))
    if not settings.redis.configured:
        print("redis: not configured (embedded in-process store)")
    for label, redis_settings in targets:
        print(f"{label} {_probe(redis_settings)}")
    return 0


def _probe(redis_settings: RedisSettings) -> str:
    """Reachability and version of one Redis, as one line that never holds a credential."""
    from gateway.redis_client import close_redis, create_redis, describe, redact_text, server_infos
    from gateway.redis_version import verdict

    async def ask() -> str:
        client = create_redis(redis_settings)
        try:
            try:
                await asyncio.wait_for(client.ping(), timeout=2)
            except Exception as exc:
                return f"NOT reachable ({type(exc).__name__}: {redact_text(str(exc))[:200]})"
            try:
                verdicts = [verdict(info) for info in await server_infos(client, 2)]
            except Exception as exc:
                return f"reachable, version unknown ({type(exc).__name__})"
        finally:
            await close_redis(client)
        worst = next((v for v in verdicts if v.vulnerable), verdicts[0])
        return f"reachable, {worst.product} {worst.version}, security: {worst.security}"

    return f"{describe(redis_settings)}: {asyncio.run(ask())}"


def serve(settings: Settings) -> int:
    from gateway.edge.server import serve as serve_edge

    configure_logging(settings)
    try:
        serve_edge(settings)
    except ConfigError as exc:
        print(f"gateway: configuration error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the port is taken, no permission to bind...
        print(f"gateway: cannot listen: {exc}", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gateway", description=__doc__)
    parser.add_argument(
        "command", nargs="?", default="run", choices=("run", "check-config", "purge", "ready")
    )
    parser.add_argument("--url", help="purge: one URL, e.g. /items?page=2")
    parser.add_argument("--prefix", help="purge: every URL under a path prefix")
    parser.add_argument("--tag", help="purge: every entry tagged so (Surrogate-Key/Cache-Tag)")
    parser.add_argument("--soft", action="store_true", help="purge: mark stale, do not delete")
    parser.add_argument(
        "--gateway",
        help="purge/ready: base URL of a running gateway (default: this configuration's host and port)",
    )
    args = parser.parse_args(argv)
    try:
        settings = load_settings(os.environ)
    except ConfigError as exc:
        print(f"gateway: configuration error: {exc}", file=sys.stderr)
        return 2
    if args.command == "check-config":
        return check_config(settings)
    if args.command in ("purge", "ready"):
        import json

        from gateway import admin_client

        if args.command == "purge":
            if sum(bool(v) for v in (args.url, args.prefix, args.tag)) != 1:
                parser.error("purge needs exactly one of --url, --prefix, --tag")
            status, doc = admin_client.purge(
                settings, url=args.url, prefix=args.prefix, tag=args.tag, soft=args.soft, base=args.gateway
            )
        else:
            status, doc = admin_client.ready(settings, base=args.gateway)
        print(json.dumps(doc))
        return 0 if status == 200 else 1
    return serve(settings)
