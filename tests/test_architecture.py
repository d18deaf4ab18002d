"""Pins the public surface and the import direction of the layers (CONTRIBUTING.md)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import gateway

PACKAGE = Path(gateway.__file__).parent
PURE = [
    "cache/policy.py",
    "cache/entry.py",
    "cache/keys.py",
    "cache/request.py",
    "cache/validation.py",
    "ratelimit/policy.py",
    "http/headers.py",
    "http/fields.py",
    "http/dates.py",
    "http/cache_control.py",
    "http/identity.py",
    "http/paths.py",
    "http/host.py",
    "http/request.py",
    "routing.py",
    "config.py",
    "errors.py",
    "redis_version.py",
    "admin_auth.py",
    "types.py",
]
FRAMEWORKS = ("starlette", "httpx", "aiohttp", "redis", "uvicorn")


def parse(path: Path) -> ast.Module:
    """ast.parse, once more on CPython 3.11's spurious "AST constructor recursion depth
    mismatch" SystemError (python/cpython#106905), seen when a long test session ran first."""
    try:
        return ast.parse(path.read_text())
    except SystemError:
        return ast.parse(path.read_text())


def imports(path: Path) -> set[str]:
    tree = parse(path)
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_public_surface() -> None:
    assert sorted(gateway.__all__) == ["Settings", "__version__", "create_app"]
    assert callable(gateway.create_app)


def test_pure_modules_import_no_framework_and_read_no_clock() -> None:
    for rel in PURE:
        path = PACKAGE / rel
        assert path.is_file(), f"PURE names {rel}, which does not exist (renamed?)"
        found = imports(path)
        assert not {n for n in found if n.split(".")[0] in FRAMEWORKS}, rel
        source = path.read_text()
        assert "time.time(" not in source and "time.monotonic(" not in source, rel


def test_low_layers_never_import_upward() -> None:
    upper = {"gateway.app", "gateway.cli", "gateway.proxy", "gateway.context", "gateway.admin"}
    middleware = {"gateway.cache.middleware", "gateway.ratelimit.middleware"}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE).as_posix()
        module = "gateway." + rel.removesuffix(".py").replace("/", ".")
        found = {n for n in imports(path) if n.startswith("gateway.")}
        if rel in PURE:
            assert not found & (upper | middleware), rel
            assert not any(
                n.startswith(
                    (
                        "gateway.autopipeline",
                        "gateway.breaker",
                        "gateway.redis_client",
                        "gateway.redis_errors",
                        "gateway.upstream",
                    )
                )
                for n in found
            ), rel
        if module not in upper | {"gateway.__main__", "gateway.__init__"} and not rel.endswith(
            "middleware.py"
        ):
            assert not found & {"gateway.app", "gateway.cli"}, rel


def module_name(path: Path) -> str:
    parts = ["gateway", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Each gateway module and the gateway modules it imports anywhere: at the top, inside a
    function, under TYPE_CHECKING, absolute or relative. `from a import b` counts as importing
    `a.b` when that is a module, else `a`."""
    modules = {module_name(path): path for path in PACKAGE.rglob("*.py")}

    def known(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found: set[str | None] = set()
        for node in ast.walk(parse(path)):
            if isinstance(node, ast.Import):
                found |= {known(alias.name) for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                found |= {known(f"{base}.{alias.name}") or known(base) for alias in node.names}
        graph[name] = {m for m in found if m is not None and m != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle as a path that returns to its start, or [] when the graph is acyclic."""
    done: set[str] = set()
    path: list[str] = []

    def visit(node: str) -> list[str]:
        if node in path:
            return [*path[path.index(node) :], node]
        if node in done:
            return []
        path.append(node)
        for target in sorted(graph.get(node, ())):
            cycle = visit(target)
            if cycle:
                return cycle
        path.pop()
        done.add(node)
        return []

    for start in sorted(graph):
        cycle = visit(start)
        if cycle:
            return cycle
    return []


def test_find_cycle_reports_a_cycle_through_any_import() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) == []


def test_import_graph_sees_late_and_relative_imports() -> None:
    graph = import_graph()
    assert "gateway.app" in graph["gateway"]  # create_app, imported inside __getattr__
    assert "gateway.app" in graph["gateway.cli"]  # inside load_settings
    assert "gateway.runtime" in graph["gateway.cache.middleware"]  # under TYPE_CHECKING


def test_no_import_cycle_among_gateway_modules() -> None:
    cycle = find_cycle(import_graph())
    assert not cycle, " -> ".join(cycle)


def test_design_code_map_names_every_module_and_only_modules_that_exist() -> None:
    """docs/design.md's code map is where a new maintainer starts: no module missing, no stale
    name left behind by a rename."""
    text = (PACKAGE.parent / "docs/design.md").read_text(encoding="utf-8")
    code_map = text.split("\n## Code map\n", 1)[1].split("\n## ", 1)[0]
    named: set[str] = set()
    for ref in re.findall(r"`([\w/*]+\.(?:py|lua))`", code_map):
        matches = {p.relative_to(PACKAGE).as_posix() for p in PACKAGE.glob(ref)}
        assert matches, f"docs/design.md names {ref}, which does not exist"
        named |= matches
    modules = {p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*.py")}
    modules |= {p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*.lua")}
    missing = sorted(m for m in modules - named if not m.endswith("__init__.py"))
    assert not missing, f"docs/design.md's code map lacks {missing}"


def test_docs_name_only_gateway_files_that_exist() -> None:
    root = PACKAGE.parent
    stale = [
        f"{doc.relative_to(root)}: {ref}"
        for doc in [*(root / "docs").rglob("*.md"), root / "CONTRIBUTING.md"]
        for ref in re.findall(r"gateway/[\w/]+\.(?:py|lua)\b", doc.read_text(encoding="utf-8"))
        if not (root / ref).is_file()
    ]
    assert not stale, stale
