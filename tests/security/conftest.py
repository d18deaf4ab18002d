"""Security tests reuse the end-to-end fixtures: a recording upstream and gateway processes."""

from __future__ import annotations

from tests.e2e.conftest import gateway_factory, upstream, upstream_server

__all__ = ["gateway_factory", "upstream", "upstream_server"]
