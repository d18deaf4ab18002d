"""Pins the public surface and the import direction of the layers (CONTRIBUTING.md)."""

from __future__ import annotations

import ast
from pathlib import Path

import gateway

PACKAGE = Path(gateway.__file__).parent
PURE = ["cache/policy.py", "cache/entry.py", "cache/keys.py",
        "cache/validation.py", "ratelimit/policy.py", "http/headers.py", "http/fields.py",
        "http/dates.py", "http/cache_control.py",
        "http/identity.py", "http/paths.py", "http/host.py", "http/request.py", "routing.py",
        "config.py", "errors.py", "redis_version.py", "admin_auth.py", "types.py"]
FRAMEWORKS = ("starlette", "httpx", "aiohttp", "redis", "uvicorn")


def imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
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
        if not path.exists():
            continue
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
            assert not any(n.startswith(("gateway.autopipeline", "gateway.breaker",
                                         "gateway.redis_client", "gateway.redis_errors",
                                         "gateway.upstream")) for n in found), rel
        if module not in upper | {"gateway.__main__", "gateway.__init__"} and not rel.endswith(
            "middleware.py"
        ):
            assert not found & {"gateway.app", "gateway.cli"}, rel
