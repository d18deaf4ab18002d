"""Client identity behind trusted proxies, and IPv6 grouping."""

from __future__ import annotations

import ipaddress

import pytest

from gateway.http.identity import client_group, resolve

TRUSTED = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::/8"))


@pytest.mark.parametrize(
    ("peer", "xff", "expected"),
    [
        ("203.0.113.5", b"1.2.3.4", "203.0.113.5"),  # untrusted peer: header ignored
        ("10.0.0.1", None, "10.0.0.1"),
        ("10.0.0.1", b"198.51.100.7", "198.51.100.7"),
        ("10.0.0.1", b"6.6.6.6, 198.51.100.7", "198.51.100.7"),  # left-most is client-supplied
        ("10.0.0.1", b"198.51.100.7, 10.0.0.9", "198.51.100.7"),  # walk past trusted hops
        ("10.0.0.1", b"10.0.0.8, 10.0.0.9", "10.0.0.8"),  # all trusted: the farthest
        ("10.0.0.1", b"garbage, 10.0.0.9", "10.0.0.9"),  # stop at garbage
        ("10.0.0.1", b"[2001:db8::1]:443", "2001:db8::1"),
        ("10.0.0.1", b"198.51.100.7:5000", "198.51.100.7"),
        ("::ffff:10.0.0.1", b"198.51.100.7", "198.51.100.7"),  # v4-mapped peer
    ],
)
def test_client_address_through_trusted_proxies(peer: str, xff: bytes | None, expected: str) -> None:
    assert resolve(peer, xff, TRUSTED)[0] == expected


def test_no_trusted_proxies_means_the_peer() -> None:
    assert resolve("10.0.0.1", b"1.2.3.4", ()) == ("10.0.0.1", [])


def test_ipv6_clients_are_grouped_by_64() -> None:
    a = client_group("2001:db8:1:2:aaaa::1")
    b = client_group("2001:db8:1:2:ffff:ffff:ffff:ffff")
    c = client_group("2001:db8:1:3::1")
    assert a == b == "2001:db8:1:2::/64" and a != c
    assert client_group("198.51.100.7") == "198.51.100.7"


def test_resolve_keeps_only_the_verified_hops() -> None:
    assert resolve("10.0.0.1", b"6.6.6.6, 198.51.100.7, 10.0.0.9", TRUSTED) == (
        "198.51.100.7",
        ["198.51.100.7", "10.0.0.9"],
    )
    assert resolve("203.0.113.5", b"1.2.3.4", TRUSTED) == ("203.0.113.5", [])
