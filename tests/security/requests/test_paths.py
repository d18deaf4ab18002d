"""Path spellings an attacker uses to dodge a route's policy or leave a route's base path.

Every spelling is either normalised to the route that really serves it, with that route's
rate limit applied (a bypass spelling of an exhausted route gets 429), or refused with 400;
the canary upstream (the strip-prefix route's backend) never sees a request outside /base.
"""

from __future__ import annotations

import itertools

import pytest

from tests.security.requests.conftest import request
from tests.support.gateway_process import GatewayProcess
from tests.support.upstream import RecordingUpstream

_tenants = itertools.count()

#: Spellings of /limited/x that normalise to it.
SAME_ROUTE = [
    b"/%6Cimited/x",
    b"/%6cimited/x",
    b"//limited/x",
    b"/./limited/x",
    b"/x/../limited/x",
    b"/limited/./x",
    b"/limited//x",
    b"/%2e/limited/x",
    b"/nope/%2E%2E/limited/x",
    b"/limited/y/../x",
    b"///limited/x",
    b"/limited/%78",
]
#: Spellings refused with 400 (encoded separators, NUL, climbing above the root, Tomcat's
#: "..;", raw backslash, malformed escapes).
REFUSED = [
    b"/limited%2Fx",
    b"/limited%2fx",
    b"/%2Flimited/x",
    b"/limited%5Cx",
    b"/limited/x%00",
    b"/limited/x%00.json",
    b"/../limited/x",
    b"/%2e%2e/limited/x",
    b"/%2E%2e/limited/x",
    b"/x/../../limited/x",
    b"/limited/..;/x",
    b"/limited/.;/x",
    b"/x/..;/limited/x",
    b"/limited\\x",
    b"/x\\..\\limited/x",
    b"/limited/%zz",
    b"/limited/%2",
]
#: Spellings that are not the route at all (never decoded twice, `;` params kept, overlong
#: UTF-8 kept encoded): an unclaimed path, 404, nobody sees it.
UNCLAIMED = [
    b"/%256Cimited/x",
    b"/%252e%252e/limited/x",
    b"/limited;x/x",
    b"/%C0%AElimited/x",
    b"/%c0%ae%c0%ae/limited/x",
    b"/.%2e%2flimited",
]


def tenant() -> bytes:
    return b"X-Tenant: t%d-%f\r\n" % (next(_tenants), __import__("time").time())


def limited(edge: GatewayProcess, target: bytes, who: bytes) -> int:
    return request(edge.port, target, headers=b"Host: edge.test\r\n" + who)[0]


@pytest.mark.parametrize("spelling", SAME_ROUTE, ids=lambda s: s.decode("latin-1"))
def test_bypass_spelling_is_normalised_to_the_route_and_gets_its_429(
    edge: GatewayProcess,
    recording: RecordingUpstream,
    canary: RecordingUpstream,
    spelling: bytes,
) -> None:
    who = tenant()
    assert limited(edge, b"/limited/x", who) == 200  # the route's one request this minute
    assert limited(edge, spelling, who) == 429  # the same route, the same limit
    assert [r.raw_path for r in recording.requests] == [b"/limited/x"]
    assert canary.requests == []


def test_normalised_spelling_is_what_the_upstream_receives(
    edge: GatewayProcess, recording: RecordingUpstream
) -> None:
    status, _, _ = request(
        edge.port, b"/x/..//%6Cimited/./a%7e/%c3%a9/?q=%2e%2E/../x", headers=b"Host: edge.test\r\n" + tenant()
    )
    assert status == 200
    seen = recording.requests[-1]
    assert seen.raw_path == b"/limited/a~/%C3%A9/"
    assert seen.query == b"q=%2e%2E/../x"  # the query is the upstream's business


@pytest.mark.parametrize("spelling", REFUSED, ids=lambda s: s.decode("latin-1"))
def test_ambiguous_path_is_refused_400_and_no_upstream_sees_it(
    edge: GatewayProcess,
    recording: RecordingUpstream,
    canary: RecordingUpstream,
    spelling: bytes,
) -> None:
    status, headers, body = request(edge.port, spelling, headers=b"Host: edge.test\r\n" + tenant())
    assert status == 400, body
    assert headers[b"content-type"] == b"application/problem+json"
    assert headers[b"connection"] == b"close"
    assert recording.requests == [] and canary.requests == []


@pytest.mark.parametrize("spelling", UNCLAIMED, ids=lambda s: s.decode("latin-1"))
def test_double_encoded_params_and_overlong_spellings_are_not_decoded_into_a_route(
    edge: GatewayProcess,
    recording: RecordingUpstream,
    canary: RecordingUpstream,
    spelling: bytes,
) -> None:
    status, _, _ = request(edge.port, spelling, headers=b"Host: edge.test\r\n" + tenant())
    assert status in (400, 404)
    assert recording.requests == [] and canary.requests == []


@pytest.mark.parametrize(
    "spelling",
    [
        b"/public/../internal/secret",
        b"/public/%2e%2e/internal/secret",
        b"/public/x/../../internal/secret",
        b"/public/..%2finternal/secret",
        b"/public%2f..%2finternal/secret",
        b"/public/..;/internal/secret",
        b"/public/../../etc/passwd",
        b"/public/%2E%2E/%2E%2E/etc/passwd",
    ],
)
def test_strip_prefix_route_cannot_be_escaped_upstream_never_sees_a_path_outside_its_base(
    edge: GatewayProcess,
    canary: RecordingUpstream,
    recording: RecordingUpstream,
    spelling: bytes,
) -> None:
    status, _, _ = request(edge.port, spelling)
    assert status in (400, 404)  # /internal is no route; climbing out of / is refused
    assert canary.requests == [] and recording.requests == []


def test_strip_prefix_route_forwards_inner_dot_segments_resolved_under_its_base(
    edge: GatewayProcess, canary: RecordingUpstream
) -> None:
    status, _, _ = request(edge.port, b"/public/a/b/../../c/./d")
    assert status == 200
    assert [r.raw_path for r in canary.requests] == [b"/base/c/d"]


@pytest.mark.parametrize(
    "spelling",
    [
        b"/%5F%5Fgateway/metrics",
        b"/%5f_gateway/metrics",
        b"//__gateway/metrics",
        b"/x/../__gateway/metrics",
        b"/__gateway/./metrics",
        b"/__gateway//metrics",
        b"/%2e/__gateway/metrics",
    ],
)
def test_encoded_admin_prefix_is_refused_and_never_answered_by_admin_or_forwarded(
    edge: GatewayProcess,
    recording: RecordingUpstream,
    canary: RecordingUpstream,
    spelling: bytes,
) -> None:
    assert request(edge.port, b"/__gateway/metrics")[0] == 200  # the canonical spelling
    status, _, body = request(edge.port, spelling)
    assert status == 400
    assert b"gateway_responses_total" not in body
    assert recording.requests == [] and canary.requests == []
