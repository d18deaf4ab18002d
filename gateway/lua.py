"""Server-side Lua scripts: resource files read once at import, called by SHA.

Each script is a ``.lua`` file in the ``lua/`` folder of the package that runs it; its opening
comment states its KEYS, ARGV and reply. The files ship in the wheel as package data
(pyproject.toml), so they are found the same way in a checkout, an install or a zip.
"""

from __future__ import annotations

import hashlib
from importlib.resources import files


class LuaScript:
    """A server-side script, called by SHA and loaded on first NOSCRIPT."""

    __slots__ = ("sha", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()


def load_script(package: str, name: str) -> LuaScript:
    """The script in ``lua/<name>`` beside `package`'s modules. Call it at import time: a
    missing file then stops start-up instead of failing a request."""
    return LuaScript(files(package).joinpath("lua").joinpath(name).read_text(encoding="utf-8"))
