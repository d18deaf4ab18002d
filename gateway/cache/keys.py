"""What identifies a stored response (RFC 9111 §4.1): the primary key, the Vary-selected
variant, and the purge tags an origin attaches. Pure: no I/O, no clock."""

from __future__ import annotations

import functools
import hashlib
import urllib.parse
from collections.abc import Collection

from gateway.http.fields import combined, list_members
from gateway.types import Headers

#: Where origins name purge tags, and the separator each uses.
TAG_HEADERS = {b"surrogate-key": " ", b"cache-tag": ","}


def strip_query(raw_query: bytes, ignore_params: Collection[str]) -> bytes:
    """The query without the ignored parameters, other parameters kept raw and in order."""
    if not raw_query or not ignore_params:
        return raw_query
    kept = [
        part
        for part in raw_query.split(b"&")
        if urllib.parse.unquote_plus(part.partition(b"=")[0].decode("latin-1")) not in ignore_params
    ]
    return b"&".join(kept)


#: Every key field escapes "%" (so the escape is reversible) and "|" (the separator), and "{"
#: and "}" (so a Redis hash tag never ends inside a key); the path also escapes "?", so the first
#: "?" of a key's target always starts the query. Chained `str.replace` is the fastest form in
#: CPython for the usual case of nothing to escape (a key is built on every cached request).


def field(text: str) -> str:
    """One key field, escaped: no "|", "{" or "}" left, and distinct texts stay distinct."""
    return text.replace("%", "%25").replace("|", "%7C").replace("{", "%7B").replace("}", "%7D")


def _path(text: str) -> str:
    return field(text).replace("?", "%3F")


def target_form(raw_path: bytes, raw_query: bytes) -> str:
    """The path-and-query field of a key: ``<path>[?<query>]``, each escaped.

    Raw bytes are kept (latin-1) so distinct encodings stay distinct keys. The escape works
    character by character, so a prefix of a target is a prefix of its form: purge by prefix
    and by url compare forms (`prefix_form`).
    """
    path = _path(raw_path.decode("latin-1"))
    if not raw_query:
        return path
    return path + "?" + field(raw_query.decode("latin-1"))


def prefix_form(raw: bytes) -> str:
    """A path prefix (possibly with a "?" and the start of a query) as keys spell it."""
    path, question, query = raw.partition(b"?")
    form = _path(path.decode("latin-1"))
    if question:
        form += "?" + field(query.decode("latin-1"))
    return form


def primary_key(
    scheme: str,
    host: str,
    route_name: str,
    raw_path: bytes,
    raw_query: bytes,
    ignore_params: Collection[str] = (),
) -> str:
    """§4.1 primary cache key: ``"<target>|<scheme>|<host>|<route>"``, every field escaped
    (`field`, `target_form`), so the encoding is injective: two requests share a key only if
    they agree on every field. The target comes first so the store can purge by url or prefix.
    """
    return target_form(raw_path, strip_query(raw_query, ignore_params)) + _origin_fields(
        scheme, host, route_name
    )


@functools.lru_cache(maxsize=4096)
def _origin_fields(scheme: str, host: str, route_name: str) -> str:
    """``|<scheme>|<host>|<route>``: few distinct values, so remembered (bounded: the Host is
    the client's)."""
    return f"|{field(scheme.lower())}|{field(host.lower())}|{field(route_name)}"


def url_of(key: str) -> str:
    """The target field of a primary key (its path and query as `target_form` spells them)."""
    return key.partition("|")[0]


def loggable(key: str) -> str:
    """A primary key fit for a log line: its query is replaced by ``?...`` (query strings often
    carry tokens, and logs are kept longer and read more widely than the cache)."""
    target, separator, rest = key.partition("|")
    path, question, _ = target.partition("?")
    return path + ("?..." if question else "") + separator + rest


def vary_names(response_headers: Headers) -> str:
    """The normalized Vary of a response: sorted unique lowercase names, comma-separated."""
    return ",".join(sorted(set(list_members(combined(response_headers, b"vary")))))


def variant_material(vary: str, request_headers: Headers) -> bytes:
    """§4.1: the request header values a Vary selects on, normalized (trimmed, duplicate lines
    combined, list members trimmed); an absent header differs from an empty one."""
    if not vary:
        return b""
    parts = []
    for name in vary.split(","):
        value = combined(request_headers, name.encode("latin-1"))
        if value is None:
            parts.append(name.encode("latin-1") + b"\x00")
        else:
            members = b",".join(member.strip() for member in value.split(b","))
            parts.append(name.encode("latin-1") + b":" + members)
    return b"\n".join(parts)


def variant_id(material: bytes) -> str:
    """A short stable id of a variant's material; "" when the response has no Vary."""
    return hashlib.blake2b(material, digest_size=8).hexdigest() if material else ""


def tags(response_headers: Headers) -> tuple[str, ...]:
    """Purge tags named by the origin in Surrogate-Key (space-separated) or Cache-Tag (commas)."""
    found: list[str] = []
    for name, separator in TAG_HEADERS.items():
        value = combined(response_headers, name)
        if value:
            text = value.decode("latin-1").replace(", ", separator if separator == "," else " ")
            found.extend(tag.strip() for tag in text.split(separator) if tag.strip())
    return tuple(dict.fromkeys(found))
