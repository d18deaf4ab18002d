"""The route table: longest path prefix wins; each route names its upstream(s).

Matching works on the normalised raw path (gateway.http.paths; the context layer normalises
every request's path once), the same bytes that are forwarded, so the route that decides the
policy is always the route that receives the request. Prefixes are normalised the same way at
start-up ("/café" matches "/caf%C3%A9").
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from gateway.config import Route
from gateway.http.paths import normalise_path


@dataclass(frozen=True, slots=True)
class Upstream:
    """One configured backend: its origin and base path, split once at start-up."""

    origin: str  # "http://backend:3000"
    host: bytes  # the Host header the backend expects
    base_path: bytes  # "" or "/v1"

    @classmethod
    def parse(cls, url: str) -> Upstream:
        parts = urlsplit(url)
        return cls(
            origin=f"{parts.scheme}://{parts.netloc}",
            host=parts.netloc.encode(),
            base_path=parts.path.rstrip("/").encode(),
        )


class _RouteEntry:
    """One route as the table matches it: its normalised prefix and its upstreams' rotation."""

    __slots__ = ("prefix", "route", "strip", "upstreams")

    def __init__(self, route: Route) -> None:
        self.route = route
        self.prefix = normalise_path(route.prefix.encode()) if route.prefix != "/" else b""
        self.strip = route.strip_prefix and bool(self.prefix)
        ups = [Upstream.parse(u) for u in route.upstreams]
        # Round-robin without locks: the event loop runs one request at a time per worker.
        self.upstreams: Iterator[Upstream] = itertools.cycle(ups)

    def matches(self, path: bytes) -> bool:
        return (
            path.startswith(self.prefix)
            and (
                len(path) == len(self.prefix) or path[len(self.prefix)] == 0x2F  # "/"
            )
            if self.prefix
            else True
        )


class RouteTable:
    """Longest-prefix lookup over the configured routes."""

    def __init__(self, routes: Sequence[Route]) -> None:
        ordered = sorted(routes, key=lambda r: len(r.prefix if r.prefix != "/" else ""), reverse=True)
        self._entries = [_RouteEntry(r) for r in ordered]
        self._by_name = {e.route.name: e for e in self._entries}

    def match(self, raw_path: bytes) -> Route | None:
        for entry in self._entries:
            if entry.matches(raw_path):
                return entry.route
        return None

    def target(self, route: Route, raw_path: bytes) -> tuple[Upstream, bytes]:
        """Pick the next upstream of `route` and the path to request from it."""
        entry = self._by_name[route.name]
        upstream = next(entry.upstreams)
        path = raw_path[len(entry.prefix) :] if entry.strip else raw_path
        if not path.startswith(b"/"):
            path = b"/" + path
        return upstream, upstream.base_path + path
