"""Host field validation and normalisation on its own (RFC 9112 §3.2, RFC 9110 §7.2)."""

from __future__ import annotations

import pytest

from gateway.http.host import normalise_host


@pytest.mark.parametrize(
    ("raw", "host"),
    [
        (b"Example.COM", "example.com"),
        (b"example.com:8080", "example.com:8080"),
        (b"example.com.", "example.com"),
        (b"127.0.0.1", "127.0.0.1"),
        (b"[::1]:80", "[::1]:80"),
        (b"[2001:DB8::1]", "[2001:db8::1]"),
        (b"x:", "x"),
        (b"a_b-c~d", "a_b-c~d"),
    ],
)
def test_valid_host_is_lowercased_without_a_trailing_dot(raw: bytes, host: str) -> None:
    assert normalise_host(raw) == host


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"a b",
        b"evil.com/x",
        b"a@b",
        b"x:99999",
        b"x:8a",
        b"x:80:80",
        b"[zz]",
        b"[::1",
        b"%65x",
        b"a\\b",
        b"<x>",
        b"a,b",
        b"a;b",
        b"\xc3\xa9.example",
    ],
)
def test_invalid_host_is_refused(raw: bytes) -> None:
    assert normalise_host(raw) is None
