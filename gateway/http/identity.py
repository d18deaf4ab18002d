"""Who the client is, seen through trusted proxies (pure: values in, decisions out)."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from functools import lru_cache

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

#: IPv6 clients are grouped by their /64: one subscriber usually owns a whole /64, so keying
#: on single addresses would hand every client 2**64 separate rate-limit buckets.
IPV6_GROUP_PREFIX = 64


def _parse(value: str) -> Address | None:
    value = value.strip().strip('"')
    if value.startswith("[") and "]" in value:  # "[2001:db8::1]:443"
        value = value[1 : value.index("]")]
    elif value.count(":") == 1:  # "203.0.113.9:51234"
        value = value.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def is_trusted(address: str, trusted: Sequence[Network]) -> bool:
    parsed = _parse(address)
    return parsed is not None and any(parsed in net for net in trusted)


def resolve(peer: str, forwarded_for: bytes | None, trusted: Sequence[Network]) -> tuple[str, list[str]]:
    """The client address and the verified hops from it to the peer (peer excluded).

    `X-Forwarded-For` is walked right to left, stopping at the first hop that is not a trusted
    proxy: that hop is the client. Entries left of it were written by the client itself, so
    they never change who the client is and are never forwarded.
    """
    current = _parse(peer)
    if current is None:
        return peer, []
    if not trusted or forwarded_for is None or not any(current in n for n in trusted):
        return str(current), []
    hops: list[str] = []
    for hop in reversed(forwarded_for.decode("latin-1").split(",")):
        address = _parse(hop)
        if address is None:
            break  # garbage from beyond the trusted chain: stop at the last hop we trust
        current = address
        hops.append(str(address))
        if not any(address in n for n in trusted):
            break
    hops.reverse()
    return str(current), hops


@lru_cache(maxsize=4096)  # pure, and the same few clients make most requests
def client_group(address: str) -> str:
    """The rate-limit identity of an address: IPv4 as is, IPv6 as its /64 network."""
    parsed = _parse(address)
    if isinstance(parsed, ipaddress.IPv6Address):
        net = ipaddress.IPv6Network((parsed, IPV6_GROUP_PREFIX), strict=False)
        return str(net)
    return str(parsed) if parsed is not None else address
