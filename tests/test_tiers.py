"""The test tiers (tests/tiers.py): how a test's tier is inferred and how a wrong one is caught."""

from __future__ import annotations

import sys

import pytest

from tests.support.redis_server import RedisServer
from tests.tiers import TIER, TIERS, ProcessGuard, process_tier, tier_of_code

PYTHON = sys.executable

# Sample code to classify. It is compiled from text under a name outside tests/, so that tier
# inference of the tests in this file does not follow it (they would all be "topology").
SAMPLES = """
def starts_a_gateway():
    GatewayProcess({}).start()

def calls_a_helper_that_starts_a_gateway():
    starts_a_gateway()

def builds_a_factory_that_starts_a_gateway():
    def start():
        GatewayProcess({}).start()
    return start

def starts_a_sentinel():
    subprocess.run(["redis-server", "sentinel.conf", "--sentinel"], check=False)

def starts_a_cluster_node():
    RedisServer("--cluster-enabled", "yes")

def starts_a_plain_redis():
    RedisServer().start()

class Helper:
    def method(self):
        starts_a_sentinel()

def uses_a_helper_class():
    Helper().method()
"""
NAMESPACE: dict[str, object] = {}
exec(compile(SAMPLES, "<tier samples>", "exec"), NAMESPACE)


def tier(name: str) -> str:
    def is_sample(obj: object) -> bool:
        return any(obj is value for value in NAMESPACE.values())

    return tier_of_code([NAMESPACE[name]], follow=is_sample)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("starts_a_plain_redis", "unit"),
        ("starts_a_gateway", "e2e"),
        ("calls_a_helper_that_starts_a_gateway", "e2e"),
        ("builds_a_factory_that_starts_a_gateway", "e2e"),
        ("starts_a_sentinel", "topology"),
        ("starts_a_cluster_node", "topology"),
        ("uses_a_helper_class", "topology"),
    ],
)
def test_the_tier_is_the_highest_that_the_code_and_its_helpers_name(name: str, expected: str) -> None:
    assert tier(name) == expected


def test_the_highest_tier_of_several_roots_wins() -> None:
    roots = [NAMESPACE[name] for name in ("starts_a_plain_redis", "starts_a_gateway", "starts_a_sentinel")]
    assert tier_of_code(roots, follow=lambda obj: False) == "topology"


def test_helpers_in_tests_are_followed_by_default() -> None:
    from tests.support import redis_topologies

    # Looked up by a string: a plain mention would make this very test "topology".
    assert tier_of_code([vars(redis_topologies)["LocalCluster"]]) == "topology"
    assert tier_of_code([RedisServer]) == "unit"


@pytest.mark.parametrize(
    ("argv", "tier"),
    [
        ([PYTHON, "-m", "gateway"], "e2e"),
        (["/opt/venv/bin/gateway", "check-config"], "e2e"),
        (["redis-server", "--port", "7000", "--cluster-enabled", "yes"], "topology"),
        (["redis-server", "/tmp/s.conf", "--sentinel"], "topology"),
        (["redis-server", "--port", "7000"], "unit"),
        ([PYTHON, "-c", "import gateway"], "unit"),
        (["sh", "redis/entrypoint.sh"], "unit"),
    ],
)
def test_a_process_is_classified_by_its_arguments(argv: list[str], tier: str) -> None:
    assert process_tier(argv) == tier


def test_every_collected_test_has_exactly_one_tier(request: pytest.FixtureRequest) -> None:
    items = request.session.items
    assert items
    for item in items:
        marks = [m.name for m in item.iter_markers() if m.name in TIERS]
        assert len(marks) == 1, (item.nodeid, marks)
        assert item.stash[TIER] == marks[0]


def test_a_unit_test_that_starts_a_gateway_process_fails_naming_the_mark(
    request: pytest.FixtureRequest,
) -> None:
    guard = ProcessGuard()  # not installed: its hook is called by hand, nothing is started
    guard.current = request.node
    assert request.node.stash[TIER] == "unit"
    with pytest.raises(
        RuntimeError, match=r"classified 'unit' but starts a 'e2e' process.*pytest\.mark\.e2e"
    ):
        guard._hook("subprocess.Popen", (PYTHON, [PYTHON, "-m", "gateway"], None, None))
    guard._hook("subprocess.Popen", (PYTHON, ["redis-server", "--port", "1"], None, None))  # allowed
    guard._hook("open", ("/etc/hosts", "r", 0))  # other audit events pass
