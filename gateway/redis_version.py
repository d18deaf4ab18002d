"""Which Redis/Valkey servers carry the October 2025 Lua fixes (pure: INFO fields in, verdict out).

CVE-2025-49844 (use-after-free in the Lua parser, remote code execution), CVE-2025-46817
(integer overflow in `unpack`), CVE-2025-46818 (a script running as another user) and
CVE-2025-46819 (out-of-bounds read) reach any client allowed to run EVAL, and the gateway's
own user must be (its rate limiter and cache locks are scripts). Fixed in Redis 6.2.20, 7.2.11,
7.4.6, 8.0.4 and 8.2.2 (8.4 and later were released with the fix; 7.0 and 6.0 never got it)
and in Valkey 7.2.11, 8.0.6 and 8.1.4 (9.0 and later were released with it).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

Version = tuple[int, int, int]

#: First fixed release of each maintained line; a line absent here and older than FIXED_FROM
#: never received the fix.
REDIS_FIXED: Mapping[tuple[int, int], int] = {(6, 2): 20, (7, 2): 11, (7, 4): 6, (8, 0): 4, (8, 2): 2}
REDIS_FIXED_FROM: Version = (8, 4, 0)
VALKEY_FIXED: Mapping[tuple[int, int], int] = {(7, 2): 11, (8, 0): 6, (8, 1): 4}
VALKEY_FIXED_FROM: Version = (9, 0, 0)


@dataclass(frozen=True, slots=True)
class ServerVerdict:
    product: str  # "redis" or "valkey"
    version: str  # as the server reports it; "" when unknown
    vulnerable: bool
    advice: str  # "ok", or what to upgrade to

    @property
    def security(self) -> str:
        """The readiness field: "ok" or "vulnerable: upgrade to ..."."""
        return "ok" if not self.vulnerable else f"vulnerable: {self.advice}"


def parse_version(text: str) -> Version | None:
    parts = text.strip().split(".")
    if len(parts) < 2 or not all(p.isdigit() for p in parts[:3]):
        return None
    numbers = [int(p) for p in parts[:3]] + [0] * (3 - len(parts[:3]))
    return numbers[0], numbers[1], numbers[2]


def verdict(info: Mapping[str, object]) -> ServerVerdict:
    """The verdict for a server from its `INFO server` fields (`redis_version`,
    `valkey_version`, `server_name`)."""
    valkey = "valkey_version" in info or str(info.get("server_name", "")).lower() == "valkey"
    product = "valkey" if valkey else "redis"
    text = str(info.get("valkey_version") or info.get("redis_version") or "")
    version = parse_version(text)
    fixed, fixed_from = (VALKEY_FIXED, VALKEY_FIXED_FROM) if valkey else (REDIS_FIXED, REDIS_FIXED_FROM)
    if version is None:
        return ServerVerdict(product, text, False, "unknown version: check it by hand")
    return ServerVerdict(product, text, *_check(version, fixed, fixed_from, product))


def _check(
    version: Version, fixed: Mapping[tuple[int, int], int], fixed_from: Version, product: str
) -> tuple[bool, str]:
    if version >= fixed_from:
        return False, "ok"
    line = version[:2]
    if line in fixed:
        if version[2] >= fixed[line]:
            return False, "ok"
        target = f"{line[0]}.{line[1]}.{fixed[line]}"
        return True, (f"upgrade to {product} {target} or later (CVE-2025-49844 and related Lua fixes)")
    if any(line < other for other in fixed):
        # An old line that never got the fix: the nearest fixed line above it.
        nearest = min(other for other in fixed if other > line)
        target = f"{nearest[0]}.{nearest[1]}.{fixed[nearest]}"
        return True, (
            f"{product} {line[0]}.{line[1]} never received the CVE-2025-49844 Lua "
            f"fixes: upgrade to {target} or later"
        )
    # A line between the listed ones and fixed_from (e.g. a release candidate line).
    target = ".".join(map(str, fixed_from))
    return True, f"upgrade to {product} {target} or later (CVE-2025-49844 and related Lua fixes)"
