"""The gateway: a streaming reverse proxy with a Redis-backed shared HTTP cache and rate limits."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gateway.config import Settings

if TYPE_CHECKING:
    from gateway.app import create_app

__version__ = "0.1.0"

__all__ = ["Settings", "__version__", "create_app"]


def __getattr__(name: str) -> Any:
    # create_app pulls in the whole stack; load it on first use so that importing a low layer
    # (gateway.errors, gateway.config) never imports the layers above it.
    if name == "create_app":
        from gateway.app import create_app

        return create_app
    raise AttributeError(f"module 'gateway' has no attribute {name!r}")
