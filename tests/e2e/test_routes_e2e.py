"""A routes file in a real gateway: longest prefix, strip_prefix, round-robin, per-route policy."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.e2e.conftest import GatewayFactory
from tests.support.upstream import RecordingUpstream


def test_routes_file_drives_forwarding_and_policies(
    gateway_factory: GatewayFactory, upstream: RecordingUpstream, tmp_path: Path
) -> None:
    routes = tmp_path / "routes.yaml"
    routes.write_text(f"""
routes:
  - name: api
    prefix: /api
    upstream: ["{upstream.url}/one", "{upstream.url}/two/"]
    strip_prefix: true
    cache: false
    rate_limit: {{limits: "3/minute", key: route}}
  - name: api-v2
    prefix: /api/v2
    upstream: {upstream.url}
""")
    gw = gateway_factory({"GATEWAY_ROUTES_FILE": str(routes), "GATEWAY_UPSTREAM_URL": ""})
    statuses = [httpx.get(f"{gw.url}/api/items/7?x=1").status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]  # the route's own limit
    assert [r.raw_path for r in upstream.requests] == [b"/one/items/7", b"/two/items/7", b"/one/items/7"]
    assert all(r.query == b"x=1" for r in upstream.requests)
    # The longer prefix wins, keeps its path, and has no limit.
    for _ in range(4):
        assert httpx.get(f"{gw.url}/api/v2/echo").status_code == 200
    assert upstream.requests[-1].raw_path == b"/api/v2/echo"
    # No route claims this path (no GATEWAY_UPSTREAM_URL): a 404 problem, nothing forwarded.
    count = len(upstream.requests)
    missing = httpx.get(f"{gw.url}/other")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    assert len(upstream.requests) == count
