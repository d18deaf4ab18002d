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

from gateway.config import Secret, Settings
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
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s",
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
    if settings.redis.configured:
        from gateway.redis_client import close_redis, create_redis, describe

        async def ping() -> bool:
            client = create_redis(settings.redis)
            try:
                return bool(await asyncio.wait_for(client.ping(), timeout=2))
            except Exception:
                return False
            finally:
                await close_redis(client)

        ok = asyncio.run(ping())
        print(f"redis {describe(settings.redis)}: {'reachable' if ok else 'NOT reachable'}")
    else:
        print("redis: not configured (embedded in-process store)")
    return 0


def serve(settings: Settings) -> int:
    import uvicorn

    configure_logging(settings)
    uvicorn.run(
        "gateway.cli:app_factory", factory=True,
        host=settings.host, port=settings.port, workers=settings.workers,
        # The upstream's Date and Server pass through; uvicorn must not add its own.
        server_header=False, date_header=False,
        # Client identity through trusted proxies is the gateway's job (GATEWAY_TRUSTED_PROXIES).
        proxy_headers=False,
        access_log=False, log_config=None, lifespan="on",
        # httptools (llhttp) is the fast parser but knows only registered methods; h11 takes
        # any method token (GATEWAY_HTTP_PARSER=h11) at a CPU cost.
        loop="uvloop", http=settings.http_parser, timeout_graceful_shutdown=10,
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gateway", description=__doc__)
    parser.add_argument("command", nargs="?", default="run",
                        choices=("run", "check-config", "purge", "ready"))
    parser.add_argument("--url", help="purge: one URL, e.g. /items?page=2")
    parser.add_argument("--prefix", help="purge: every URL under a path prefix")
    parser.add_argument("--tag", help="purge: every entry tagged so (Surrogate-Key/Cache-Tag)")
    parser.add_argument("--soft", action="store_true", help="purge: mark stale, do not delete")
    parser.add_argument("--gateway", help="purge/ready: base URL of a running gateway "
                        "(default: this configuration's host and port)")
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
            status, doc = admin_client.purge(settings, url=args.url, prefix=args.prefix,
                                             tag=args.tag, soft=args.soft, base=args.gateway)
        else:
            status, doc = admin_client.ready(settings, base=args.gateway)
        print(json.dumps(doc))
        return 0 if status == 200 else 1
    return serve(settings)
