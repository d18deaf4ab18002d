"""Every test belongs to exactly one tier, found from what it starts; `pytest -m unit` stays fast.

- ``unit``: in-process. The gateway's code runs inside the test process; the upstream, if any,
  is a server on loopback in the same process. A plain redis-server may be started (the suite's
  shared one or a disposable one: ~20 ms each, and the brief forbids fake Redis).
- ``e2e``: starts real gateway processes (``python -m gateway``).
- ``topology``: starts a Redis Cluster or Sentinel topology (seconds each).

The tier is inferred at collection, so new tests are classified without anyone remembering:
a test is at least ``e2e`` when it lives under ``tests/e2e/``, and its tier is the highest that
the code it runs names: the test function, every fixture it uses (directly or through other
fixtures), and every helper function or class from ``tests`` that those reference, followed
transitively (``GatewayProcess`` -> e2e; ``LocalCluster``, ``LocalSentinel``, ``--sentinel``,
``--cluster-enabled`` -> topology). An explicit ``pytest.mark.<tier>`` may raise a test's tier
(for what inference cannot see, such as ``request.getfixturevalue``), never lower it.

Inference is checked while the tests run: a guard on process creation (an audit hook) fails a
test that starts a process of a higher tier than its own, naming the mark to add.
"""

from __future__ import annotations

import itertools
import os
import sys
import types
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import pytest

TIERS = ("unit", "e2e", "topology")  # lowest to highest

#: Names whose mention in a test's code puts it in a tier.
_NAMES = {
    "GatewayProcess": "e2e",
    "LocalCluster": "topology",
    "LocalSentinel": "topology",
    "SentinelProcess": "topology",
}
#: String constants (redis-server arguments) that start a topology.
_CONSTANTS = {"--cluster-enabled": "topology", "--sentinel": "topology"}

TESTS = Path(__file__).resolve().parent


def rank(tier: str) -> int:
    return TIERS.index(tier)


def _code_objects(code: types.CodeType) -> Iterator[types.CodeType]:
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _code_objects(const)


def _functions(obj: object) -> Iterator[types.FunctionType]:
    """The plain functions behind a function, a method, a fixture or a class's methods."""
    obj = getattr(obj, "__wrapped__", obj)
    if isinstance(obj, types.FunctionType):
        yield obj
    elif isinstance(obj, type):
        for value in vars(obj).values():
            if isinstance(value, staticmethod | classmethod):
                value = value.__func__
            elif isinstance(value, property):
                value = value.fget
            if isinstance(value, types.FunctionType):
                yield value


def _from_tests(obj: object) -> bool:
    """Defined in a file under tests/ (by file: a folder without __init__.py still counts)."""
    if isinstance(obj, types.FunctionType):
        filename: str | None = obj.__code__.co_filename
    elif isinstance(obj, type):
        filename = getattr(sys.modules.get(obj.__module__), "__file__", None)
    else:
        return False
    return filename is not None and Path(filename).is_relative_to(TESTS)


def _strings(consts: Iterable[object]) -> Iterator[str]:
    """String constants, also inside tuples (a list literal of constants compiles to one)."""
    for const in consts:
        if isinstance(const, str):
            yield const
        elif isinstance(const, tuple | frozenset):
            yield from _strings(const)


def tier_of_code(roots: Iterable[object], follow: Callable[[object], bool] = _from_tests) -> str:
    """The highest tier that these callables, and the helpers they reference, name.

    Helpers are globals that `follow` accepts: by default, functions and classes in tests/.
    """
    found = "unit"
    seen: set[int] = set()
    stack = [f for root in roots for f in _functions(root)]
    while stack:
        func = stack.pop()
        if id(func.__code__) in seen:
            continue
        seen.add(id(func.__code__))
        for code in _code_objects(func.__code__):
            for name in code.co_names:
                tier = _NAMES.get(name)
                if tier is not None and rank(tier) > rank(found):
                    found = tier
                helper = func.__globals__.get(name)
                if helper is not None and follow(helper):
                    stack.extend(_functions(helper))
            for const in _strings(code.co_consts):
                tier = _CONSTANTS.get(const)
                if tier is not None and rank(tier) > rank(found):
                    found = tier
    return found


def inferred_tier(item: pytest.Item) -> str:
    roots: list[object] = []
    if isinstance(item, pytest.Function):
        roots.append(item.function)
        for defs in item._fixtureinfo.name2fixturedefs.values():
            roots.extend(d.func for d in defs if d.func is not None)
    tier = tier_of_code(roots)
    if TESTS / "e2e" in item.path.parents and rank(tier) < rank("e2e"):
        tier = "e2e"
    return tier


def classify(items: Sequence[pytest.Item]) -> None:
    """Give every item exactly one tier marker; refuse a mark that lowers the inferred tier."""
    errors: list[str] = []
    for item in items:
        tier = inferred_tier(item)
        explicit = {m.name for m in item.iter_markers() if m.name in TIERS}
        if len(explicit) > 1:
            errors.append(f"{item.nodeid}: more than one tier mark: {sorted(explicit)}")
            continue
        if explicit:
            marked = explicit.pop()
            if rank(marked) < rank(tier):
                errors.append(f"{item.nodeid}: marked {marked!r} but it starts {tier!r} parts")
                continue
            tier = marked
        else:
            item.add_marker(getattr(pytest.mark, tier))
        item.stash[TIER] = tier
    if errors:
        raise pytest.UsageError("test tiers:\n  " + "\n  ".join(errors))


TIER = pytest.StashKey[str]()


def _argv(args: object) -> list[str]:
    """A Popen argument vector (a string, bytes, a path or a sequence of them) as strings."""
    if isinstance(args, str | bytes | os.PathLike):
        return [os.fsdecode(args)]
    if isinstance(args, Sequence):
        return [os.fsdecode(a) if isinstance(a, str | bytes | os.PathLike) else str(a) for a in args]
    return []


def process_tier(argv: Sequence[str]) -> str:
    """The tier of a process, from the argument vector it is started with."""
    if any(a in _CONSTANTS for a in argv):
        return "topology"
    if any(a == "-m" and b == "gateway" for a, b in itertools.pairwise(argv)):
        return "e2e"
    if argv and Path(argv[0]).name == "gateway":
        return "e2e"
    return "unit"


class ProcessGuard:
    """Fails a test that starts a process above its tier (a misclassified test)."""

    def __init__(self) -> None:
        self.current: pytest.Item | None = None

    def install(self) -> None:
        sys.addaudithook(self._hook)

    def _hook(self, event: str, args: tuple[object, ...]) -> None:
        if event != "subprocess.Popen" or self.current is None:
            return
        argv = _argv(args[1])
        item, tier = self.current, process_tier(argv)
        own = item.stash.get(TIER, "unit")
        if rank(tier) > rank(own):
            raise RuntimeError(
                f"{item.nodeid} is classified {own!r} but starts a {tier!r} process "
                f"({' '.join(argv)[:120]}); mark it pytest.mark.{tier} "
                "(see tests/tiers.py)"
            )
