"""Client side of the admin API for the CLI (`gateway purge`, `gateway ready`): httpx, since
this is never the per-request hot path."""

from __future__ import annotations

from typing import Any

import httpx

from gateway.config import Settings


def admin_url(settings: Settings, base: str | None) -> str:
    edge = settings.edge
    if edge.admin_port is not None:  # the admin API has its own listener
        host, port = edge.admin_host or "127.0.0.1", edge.admin_port
    else:
        host, port = settings.host, settings.port
    host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    root = base.rstrip("/") if base else f"http://{host}:{port}"
    return root + settings.admin_prefix


def purge(
    settings: Settings,
    *,
    url: str | None = None,
    prefix: str | None = None,
    tag: str | None = None,
    soft: bool = False,
    base: str | None = None,
    transport: httpx.BaseTransport | None = None,
) -> tuple[int, dict[str, Any]]:
    """POST <admin>/purge with the configured token; returns (status, JSON body)."""
    body: dict[str, Any] = {k: v for k, v in (("url", url), ("prefix", prefix), ("tag", tag)) if v}
    if soft:
        body["soft"] = True
    headers = {}
    if settings.admin_token is not None:
        headers["Authorization"] = f"Bearer {settings.admin_token.get_secret_value()}"
    with httpx.Client(timeout=10, trust_env=False, transport=transport) as client:
        response = client.post(f"{admin_url(settings, base)}/purge", json=body, headers=headers)
    try:
        doc = response.json()
    except ValueError:
        doc = {"detail": response.text[:200]}
    return response.status_code, doc


def ready(
    settings: Settings, *, base: str | None = None, transport: httpx.BaseTransport | None = None
) -> tuple[int, dict[str, Any]]:
    """GET <admin>/ready; a refused connection is reported as status 0."""
    with httpx.Client(timeout=5, trust_env=False, transport=transport) as client:
        try:
            response = client.get(f"{admin_url(settings, base)}/ready")
        except httpx.TransportError as exc:
            return 0, {"status": "unreachable", "detail": type(exc).__name__}
    return response.status_code, response.json()
