"""Longest-prefix routing, prefix stripping, base paths and round-robin."""

from __future__ import annotations

from gateway.config import Route
from gateway.routing import RouteTable


def table() -> RouteTable:
    return RouteTable(
        [
            Route("root", "/", ("http://root:1",)),
            Route("api", "/api", ("http://a:1/base", "http://b:2"), strip_prefix=True),
            Route("apiv2", "/api/v2", ("http://v2:1",)),
        ]
    )


def test_longest_prefix_wins_on_segment_boundaries() -> None:
    t = table()
    assert t.match(b"/api/v2/x").name == "apiv2"  # type: ignore[union-attr]
    assert t.match(b"/api/v2").name == "apiv2"  # type: ignore[union-attr]
    assert t.match(b"/api/v20").name == "api"  # type: ignore[union-attr]
    assert t.match(b"/apix").name == "root"  # type: ignore[union-attr]
    assert t.match(b"/").name == "root"  # type: ignore[union-attr]


def test_matching_uses_the_raw_path() -> None:
    # "/%61pi" decodes to "/api" but is not the same bytes; it must not pick the api policy.
    assert table().match(b"/%61pi/x").name == "root"  # type: ignore[union-attr]


def test_no_match_without_root_route() -> None:
    assert RouteTable([Route("api", "/api", ("http://a:1",))]).match(b"/other") is None


def test_strip_prefix_base_path_and_round_robin() -> None:
    t = table()
    route = t.match(b"/api/users")
    assert route is not None
    first = t.target(route, b"/api/users")
    second = t.target(route, b"/api/users")
    third = t.target(route, b"/api")
    assert (first[0].origin, first[1]) == ("http://a:1", b"/base/users")
    assert (second[0].origin, second[1]) == ("http://b:2", b"/users")
    assert (third[0].origin, third[1]) == ("http://a:1", b"/base/")
    assert first[0].host == b"a:1"


def test_without_strip_the_path_is_kept() -> None:
    t = table()
    route = t.match(b"/api/v2/x")
    assert route is not None
    assert t.target(route, b"/api/v2/x")[1] == b"/api/v2/x"
