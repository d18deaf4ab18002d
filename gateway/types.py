"""Type aliases shared across the layers: one definition each, no imports from the gateway.

Header lists are ASGI-style ``(name, value)`` byte pairs, names lowercase. `Scope` and `Send` are
the ASGI shapes (the same as Starlette's), spelled here so that pure modules need no framework.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any

#: A header list the gateway builds or changes.
RawHeaders = list[tuple[bytes, bytes]]
#: A header list that is only read.
Headers = Sequence[tuple[bytes, bytes]]
#: Unix seconds now (`time.time`), injectable so tests can move time.
Clock = Callable[[], float]
#: ASGI.
Scope = MutableMapping[str, Any]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
