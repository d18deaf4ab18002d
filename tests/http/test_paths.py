"""The path normaliser on its own: a table of spellings, and properties checked over many
generated paths (idempotent, never above the root, never a dot-segment or `//` left)."""

from __future__ import annotations

import itertools
import random

import pytest

from gateway.http.paths import PathRejected, normalise_path

NORMAL = [
    (b"/", b"/"),
    (b"/api/x", b"/api/x"),
    (b"/api/x/", b"/api/x/"),
    (b"/%61pi/x", b"/api/x"),  # unreserved escapes decoded (RFC 3986 §2.3)
    (b"/a%2d%2E%5f%7E", b"/a-._~"),
    (b"/caf%c3%a9", b"/caf%C3%A9"),  # others kept, hex uppercased (§6.2.2.1)
    (b"/a%3b%40", b"/a%3B%40"),
    (b"/%252e", b"/%252e"),  # never decoded twice
    (b"//api/x", b"/api/x"),  # merged slashes
    (b"/api//x//", b"/api/x/"),
    (b"/./api/x", b"/api/x"),  # dot-segments (§5.2.4)
    (b"/x/../api/x", b"/api/x"),
    (b"/a/b/..", b"/a/"),
    (b"/a/b/.", b"/a/b/"),
    (b"/a/..", b"/"),
    (b"/a/%2e%2E/b", b"/b"),
    (b"/.well-known/x", b"/.well-known/x"),
    (b"/a..b/...", b"/a..b/..."),
    (b"/a;p=1/b", b"/a;p=1/b"),
    (b"/a b", b"/a%20b"),  # bytes a path may not carry raw are encoded
    (b"/\xc3\xa9|^", b"/%C3%A9%7C%5E"),
    (b"/%c0%ae%c0%ae/x", b"/%C0%AE%C0%AE/x"),  # overlong UTF-8 stays encoded: not a dot
]
REJECTED = [
    b"",
    b"api",
    b"*",
    b"/a%2Fb",
    b"/a%2fb",
    b"/a%5cb",
    b"/a%00",
    b"/a\\b",
    b"/a\x00",
    b"/a\x7f",
    b"/a\tb",
    b"/a#frag",
    b"/..",
    b"/../a",
    b"/a/../..",
    b"/%2e%2e",
    b"/a/..;/b",
    b"/.;x",
    b"/a%",
    b"/a%4",
    b"/a%4g",
    b"/a%%41",
]


@pytest.mark.parametrize(("raw", "normal"), NORMAL, ids=lambda v: v.decode("latin-1"))
def test_spelling_normalises_to_its_canonical_path(raw: bytes, normal: bytes) -> None:
    assert normalise_path(raw) == normal


@pytest.mark.parametrize("raw", REJECTED, ids=lambda v: v.decode("latin-1"))
def test_ambiguous_or_unsafe_path_is_rejected(raw: bytes) -> None:
    with pytest.raises(PathRejected):
        normalise_path(raw)


def test_merge_slashes_off_keeps_empty_segments() -> None:
    assert normalise_path(b"//api//x", merge_slashes=False) == b"//api//x"
    assert normalise_path(b"/a//../b", merge_slashes=False) == b"/a/b"


def test_keep_escaped_slashes_forwards_them_encoded_never_decoded() -> None:
    assert normalise_path(b"/a%2fb%5c", keep_escaped_slashes=True) == b"/a%2Fb%5C"
    assert normalise_path(b"/a/..%2f..%2fb", keep_escaped_slashes=True) == b"/a/..%2F..%2Fb"
    with pytest.raises(PathRejected):
        normalise_path(b"/a%00", keep_escaped_slashes=True)


def test_common_paths_are_returned_as_the_same_object() -> None:
    raw = b"/api/v1/items/42"
    assert normalise_path(raw) is raw  # the fast path: no copy, no rewrite of the scope


ALPHABET = [
    b"a",
    b"B",
    b".",
    b"..",
    b"%2e",
    b"%2E%2e",
    b"%41",
    b"%7e",
    b"%c3%a9",
    b";p",
    b"",
    b"~",
    b"x y",
    b"%25",
    b"-_",
]


def generated(count: int) -> list[bytes]:
    rng = random.Random(7)
    paths = [b"/" + b"/".join(seq) for n in range(1, 4) for seq in itertools.product(ALPHABET[:8], repeat=n)]
    for _ in range(count):
        parts = [b"".join(rng.choices(ALPHABET, k=rng.randint(1, 3))) for _ in range(rng.randint(1, 6))]
        paths.append(b"/" + b"/".join(parts) + rng.choice([b"", b"/"]))
    return paths


@pytest.mark.parametrize("merge", [True, False])
def test_properties_idempotent_rooted_and_without_dot_segments(merge: bool) -> None:
    checked = 0
    for raw in generated(3000):
        try:
            normal = normalise_path(raw, merge_slashes=merge)
        except PathRejected:
            continue
        checked += 1
        assert normalise_path(normal, merge_slashes=merge) == normal, raw  # idempotent
        assert normal.startswith(b"/"), raw
        segments = normal.split(b"/")[1:]
        assert b".." not in segments and b"." not in segments, raw  # never climbs anywhere
        assert b"%2E" not in normal.upper().replace(b"%252E", b""), raw  # dots are decoded
        if merge:
            assert b"//" not in normal, raw
    assert checked > 1000  # most generated paths are valid: the properties were exercised


def test_a_path_that_climbs_above_the_root_is_always_rejected_never_clamped() -> None:
    for depth in range(1, 5):
        climb = b"/a" * depth + b"/.." * (depth + 1) + b"/etc/passwd"
        with pytest.raises(PathRejected):
            normalise_path(climb)
        assert normalise_path(b"/a" * depth + b"/.." * depth + b"/etc") == b"/etc"
