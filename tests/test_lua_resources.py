"""The Redis scripts are resource files: each one states its contract, is loaded by a module, and
ships in the built package (where `importlib.resources` finds it inside the wheel's zip)."""

from __future__ import annotations

import importlib
import os
import pkgutil
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import gateway
from gateway.lua import LuaScript

PACKAGE = Path(gateway.__file__).parent
ROOT = PACKAGE.parent
LUA_FILES = sorted(PACKAGE.rglob("*.lua"))


def loaded_scripts() -> list[LuaScript]:
    """Every LuaScript held at module level by any gateway module (`__main__` would run)."""
    found = []
    for info in pkgutil.walk_packages([str(PACKAGE)], "gateway."):
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        found += [value for value in vars(module).values() if isinstance(value, LuaScript)]
    return found


def test_the_scripts_are_found() -> None:
    names = {path.relative_to(PACKAGE).as_posix() for path in LUA_FILES}
    assert {"ratelimit/lua/decide.lua", "cache/lua/put.lua", "cache/lua/unlock.lua"} <= names


def test_every_lua_file_is_loaded_by_a_module_and_no_script_is_inline() -> None:
    sources = {script.source for script in loaded_scripts()}
    unused = [path.name for path in LUA_FILES if path.read_text(encoding="utf-8") not in sources]
    assert not unused, f"no module loads {unused}"
    inline = [path.name for path in PACKAGE.rglob("*.py") if "redis.call(" in path.read_text()]
    assert not inline, f"Lua in Python strings: {inline}"


def test_every_lua_file_opens_with_its_keys_argv_and_reply() -> None:
    for path in LUA_FILES:
        lines = path.read_text(encoding="utf-8").splitlines()
        header = []
        for line in lines:
            if not line.startswith("--"):
                break
            header.append(line)
        text = "\n".join(header)
        assert header and all(f"-- {part}:" in text for part in ("KEYS", "ARGV", "Returns")), path


def test_the_built_wheel_ships_every_lua_file_and_loads_it_from_the_zip(tmp_path: Path) -> None:
    # What the Dockerfile copies and installs: the project files and the package.
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(PACKAGE, source / "gateway", ignore=shutil.ignore_patterns("__pycache__"))
    dist = tmp_path / "dist"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--quiet",
            "--wheel-dir",
            str(dist),
            str(source),
        ],
        check=True,
        timeout=300,
    )
    (wheel,) = dist.glob("gateway-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        shipped = {name for name in archive.namelist() if name.endswith(".lua")}
    assert shipped == {f"gateway/{path.relative_to(PACKAGE).as_posix()}" for path in LUA_FILES}

    # Imported from the wheel itself (a zip on sys.path), every script reads the same source.
    check = (
        "import gateway.cache.redis_store as c, gateway.ratelimit.limiter as r, sys\n"
        "assert c.__file__.startswith(sys.argv[1]), c.__file__\n"
        "print(r.SCRIPT.source == open(sys.argv[2]).read(), c._PUT.source == open(sys.argv[3]).read())"
    )
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            check,
            str(wheel),
            str(PACKAGE / "ratelimit/lua/decide.lua"),
            str(PACKAGE / "cache/lua/put.lua"),
        ],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(wheel)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "True"]
