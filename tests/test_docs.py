"""The documentation as a newcomer meets it: a short README whose quickstart works as written,
and links (README, docs/ pages, deployment comments) that all lead somewhere that exists."""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
README_MAX_BYTES = 12 * 1024

FENCE = re.compile(r"^```.*?^```", re.S | re.M)
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"\[[^\]\n]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.M)


def pages() -> list[Path]:
    return sorted(DOCS.rglob("*.md"))


def prose(path: Path) -> str:
    """The Markdown without code blocks, where link-like text is an example, not a link."""
    text = FENCE.sub("", path.read_text(encoding="utf-8"))
    return INLINE_CODE.sub(lambda m: "`" + "x" * (len(m.group()) - 2) + "`", text)


def slug(heading: str) -> str:
    """The anchor mkdocs (Python-Markdown's toc) gives a heading."""
    text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def anchors(path: Path) -> set[str]:
    return {slug(h) for h in HEADING.findall(FENCE.sub("", path.read_text(encoding="utf-8")))}


def relative_links(path: Path) -> list[str]:
    return [
        target
        for target in LINK.findall(prose(path))
        if not re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I)  # http:, https:, mailto:
    ]


def broken_links(path: Path) -> list[str]:
    broken = []
    for target in relative_links(path):
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if not dest.is_file():
            broken.append(f"{target} (no such file)")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target} (no heading with that anchor)")
    return broken


def test_readme_is_a_front_door_of_at_most_12_kib() -> None:
    size = len(README.read_bytes())
    assert size <= README_MAX_BYTES, f"README.md is {size} bytes; move detail into docs/"


def test_readme_quickstart_shows_exactly_the_two_commands() -> None:
    text = README.read_text(encoding="utf-8")
    section = text.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"^```sh\n(.*?)^```", section, re.S | re.M)
    assert len(blocks) == 1, "the quickstart has one command block"
    commands = [line.split("#", 1)[0].strip() for line in blocks[0].splitlines()]
    assert commands == ["scripts/run", "scripts/test"]
    assert (ROOT / "scripts" / "run").is_file() and (ROOT / "scripts" / "test").is_file()


def test_readme_links_every_docs_page() -> None:
    linked = {(ROOT / target.partition("#")[0]).resolve() for target in relative_links(README)}
    missing = [p.relative_to(ROOT).as_posix() for p in pages() if p.resolve() not in linked]
    assert not missing, f"README.md does not link {missing}"


def test_every_relative_link_in_readme_and_docs_points_at_an_existing_file() -> None:
    checked = [README, ROOT / "CONTRIBUTING.md", ROOT / "CHANGELOG.md", *pages()]
    assert len(checked) > 10
    broken = {p.relative_to(ROOT).as_posix(): links for p in checked if (links := broken_links(p))}
    assert not broken, broken


def test_the_link_checker_catches_a_missing_file_and_a_missing_anchor(tmp_path: Path) -> None:
    (tmp_path / "there.md").write_text("# Title\n\n## A `code` heading: yes\n")
    page = tmp_path / "page.md"
    page.write_text(
        "[ok](there.md) [ok](there.md#a-code-heading-yes) [web](https://example.com/x.md)\n"
        "`[not a link](gone.md)`\n```\n[example](gone.md)\n```\n"
        "[bad](gone.md) [bad anchor](there.md#nope)\n"
    )
    assert broken_links(page) == ["gone.md (no such file)", "there.md#nope (no heading with that anchor)"]


def test_mkdocs_nav_lists_every_docs_page_and_nothing_else() -> None:
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    assert config["theme"]["name"] == "material"
    assert config["strict"] is True

    def files(node: object) -> list[str]:
        if isinstance(node, str):
            return [node]
        if isinstance(node, list):
            return [f for item in node for f in files(item)]
        if isinstance(node, dict):
            return [f for value in node.values() for f in files(value)]
        return []

    nav = files(config["nav"])
    assert sorted(nav) == sorted(p.relative_to(DOCS).as_posix() for p in pages())
    assert nav[0] == "index.md"


def test_deployment_files_point_at_docs_pages_that_exist() -> None:
    sources = [
        ROOT / "Dockerfile",
        ROOT / "docker-compose.yml",
        *(ROOT / "redis").iterdir(),
        *(ROOT / "scripts").iterdir(),
        *(ROOT / "bench").glob("*.py"),
        ROOT / "bench" / "run",
    ]
    mentioned = {
        (src.name, ref)
        for src in sources
        if src.is_file()
        for ref in re.findall(r"docs/[\w./-]+\.md", src.read_text(encoding="utf-8"))
    }
    assert mentioned, "the deployment files point operators at the docs"
    missing = [(name, ref) for name, ref in mentioned if not (ROOT / ref).is_file()]
    assert not missing, missing


def test_no_file_refers_to_notes_that_are_not_in_the_repository() -> None:
    """Notes kept outside the repository must not be cited: a reader cannot open them."""
    outside = ("FIELD" + "-NOTES", "ARCHITECTURE" + ".md", "STYLE" + ".md")
    roots = [
        README,
        ROOT / "pyproject.toml",
        ROOT / "Dockerfile",
        ROOT / "docker-compose.yml",
        *(ROOT / "docs").rglob("*.md"),
        *(ROOT / "gateway").rglob("*.py"),
        *(ROOT / "tests").rglob("*.py"),
        *(ROOT / "bench").glob("*.py"),
        *(ROOT / "redis").iterdir(),
        *ROOT.glob("*.md"),
    ]
    cited = sorted(
        f"{path.relative_to(ROOT)}: {name}"
        for path in roots
        if path.is_file()
        for name in outside
        if name in path.read_text(encoding="utf-8", errors="replace") and (ROOT / name).exists() is False
    )
    assert not cited, cited


# -- the configuration reference against the variables the gateway reads ----------------------

CONFIGURATION = DOCS / "configuration.md"
OUR_VARIABLE = re.compile(r"\b(?:GATEWAY|REDIS)_[A-Z0-9_]*[A-Z0-9]\b")
#: Names under our prefixes that the documentation and deployment files mention and that are,
#: on purpose, not settings of the gateway. Each is checked below to be what it says it is.
NOT_OURS = {
    # Read by the Redis container's entrypoint (deploy/kubernetes/redis/entrypoint.sh), not by
    # the gateway; the gateway never runs with them.
    "REDIS_ACL_FILE": "redis entrypoint",
    "REDIS_ACL_TEMPLATE": "redis entrypoint",
    # The placeholder in the ACL templates (`#@GATEWAY_PASSWORD_SHA256@`), not a variable.
    "GATEWAY_PASSWORD_SHA256": "placeholder",
    # Kubernetes service links for a Service named `redis`: ignored by the gateway.
    "REDIS_SERVICE_HOST": "service link",
    "REDIS_PORT_6379_TCP_ADDR": "service link",
    "REDIS_COUNTERS_SERVICE_HOST": "service link",
    "REDIS_COUNTERS_PORT": "service link",
    # Misspellings shown as examples of the "did you mean" error.
    "GATEWAY_RATE_LIMITS": "typo example",
    "GATEWAY_RATE_LIMT": "typo example",
}


def documented_files() -> list[Path]:
    """Everything a user or operator reads that may name a variable."""
    files = [
        README,
        ROOT / "CONTRIBUTING.md",
        ROOT / "CHANGELOG.md",
        ROOT / "Dockerfile",
        ROOT / "docker-compose.yml",
        *pages(),
    ]
    for folder in (ROOT / "deploy", ROOT / "redis"):
        files += [p for p in folder.rglob("*") if p.is_file()]
    return files


def test_the_configuration_reference_lists_every_variable_the_gateway_reads() -> None:
    from gateway.environment import known_variables

    text = CONFIGURATION.read_text(encoding="utf-8")
    missing = sorted(v for v in known_variables() if f"`{v}`" not in text)
    assert not missing, f"docs/configuration.md does not describe {missing}"


def test_every_variable_named_in_the_docs_and_deployment_files_is_one_the_gateway_reads() -> None:
    from gateway.environment import known_variables

    known = known_variables()
    unknown = sorted(
        f"{path.relative_to(ROOT)}: {name}"
        for path in documented_files()
        for name in set(OUR_VARIABLE.findall(path.read_text(encoding="utf-8", errors="replace")))
        if name not in known and name not in NOT_OURS
    )
    assert not unknown, f"not a setting of the gateway (a removed or misspelt variable?): {unknown}"


def test_the_allow_listed_names_are_what_their_comment_says() -> None:
    from gateway.environment import check_unknown, known_variables
    from gateway.errors import ConfigError

    assert not set(NOT_OURS) & known_variables()
    for name, kind in NOT_OURS.items():
        if kind == "service link":
            value = "tcp://10.0.0.9:6379" if name.endswith("_PORT") else "10.0.0.9"
            check_unknown({name: value})  # recognised and ignored
        elif kind == "typo example":
            try:
                check_unknown({name: "1/second"})
            except ConfigError as exc:
                assert "did you mean GATEWAY_RATE_LIMIT?" in str(exc)
            else:
                raise AssertionError(f"{name} was not refused")
        elif kind == "placeholder":
            template = (ROOT / "redis" / "users.acl.template").read_text(encoding="utf-8")
            assert f"#@{name}@" in template
        else:
            entrypoint = (ROOT / "deploy/kubernetes/redis/entrypoint.sh").read_text(encoding="utf-8")
            assert name in entrypoint
