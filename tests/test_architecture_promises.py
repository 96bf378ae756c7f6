"""What docs/architecture.md tells someone changing srcore, held to the code: the package
map names every module, the layers it draws are the ones the import contracts enforce,
and optional heavy imports wait for the function that needs them."""

from __future__ import annotations

import itertools
import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ARCHITECTURE = ROOT / "docs" / "architecture.md"


def _section(title: str) -> str:
    text = ARCHITECTURE.read_text(encoding="utf-8")
    return text.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


def _contracts() -> dict[str, dict[str, object]]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return {c["id"]: c for c in data["tool"]["importlinter"]["contracts"]}


def _top_level_modules() -> set[str]:
    found = set()
    for path in (ROOT / "srcore").iterdir():
        if path.suffix == ".py":
            found.add(path.name)
        elif (path / "__init__.py").is_file():
            found.add(path.name + "/")
    return found


def test_the_package_map_names_every_module_and_only_real_ones() -> None:
    """ "Package map": a module missing from it is one a newcomer cannot place."""
    named = set()
    for line in _section("Package map").splitlines():
        if line.startswith("| `"):
            named.update(
                n.removeprefix("srcore/") for n in re.findall(r"`([^`]+)`", line.split("|")[1])
            )
    modules = _top_level_modules()
    assert sorted(modules - named) == [], "modules of srcore/ the package map leaves out"
    assert sorted(named - modules) == [], "names in the package map that are no module"


def _layer_groups() -> list[list[str]]:
    """The "Layers" drawing, top to bottom: each labelled line and each ';'-separated part
    is a group of modules below the ones before it."""
    (drawing,) = re.findall(r"```\n(.*?)```", _section("Layers"), re.S)
    # A line with a label in its first column ("the app", "features") starts a new group.
    text = "".join(
        (" " if line[:15].isspace() else ";") + line[15:] for line in drawing.splitlines()
    )
    groups = []
    for part in text.split(";"):
        part = re.sub(r"\([^)]*\)", "", part.split(":")[0]).replace("then", " ")
        names = re.findall(r"[a-z_.]+", part)
        if names:
            groups.append([n.removeprefix("srcore.") for n in names])
    return groups


def test_the_layers_drawn_are_the_layers_enforced() -> None:
    """ "No import runs back up": the drawing's order is the order of the "layers"
    contract lint-imports checks, so the picture cannot tell a changer something else."""
    position = {}
    for index, layer in enumerate(_contracts()["layers"]["layers"]):  # type: ignore[union-attr]
        for name in re.split(r"[|:]", str(layer)):
            position[name.strip().strip("\\").strip().removeprefix("srcore.")] = index
    groups = _layer_groups()
    assert [g[:2] for g in groups[:2]] == [["cli", "testing"], ["dev", "worker_cli"]]
    for upper, lower in itertools.pairwise(groups):
        for a in upper:
            for b in lower:
                assert position[a] < position[b], f"the drawing puts {a} above {b}"


def test_the_order_inside_auth_is_the_contracts() -> None:
    """ "Inside auth the order is `extension` > `oauth_client` > `web` | `api` |
    `wellknown` > `state` > ...", and "with no exception listed"."""
    text = " ".join(_section("Layers").split())
    drawn = re.search(r"Inside auth the order is (.*?)\. ", text)
    assert drawn is not None
    layers = [" | ".join(re.findall(r"`(\w+)`", part)) for part in drawn.group(1).split(">")]
    contracts = _contracts()
    assert layers == contracts["auth"]["layers"]
    for contract in contracts.values():
        assert not {"ignore_imports", "unmatched_ignore_imports_alerting"} & set(contract)


_LAZY = """
import sys, tempfile
from pathlib import Path
sys.path.insert(0, sys.argv[1])
import srcore, srcore.app, srcore.db, srcore.webhooks, srcore.mail, srcore.metrics
import srcore.auth, srcore.rendering, srcore.throttle, srcore.outbound, srcore.openapi
from srcore.testing import write_config
import sample_service
HEAVY = ("celery", "kombu", "markdown", "redis", "smtplib", "nh3", "pygments", "psycopg")
found = [m for m in HEAVY if m in sys.modules]
assert not found, f"imported by importing srcore: {found}"
d = Path(tempfile.mkdtemp())
config = write_config(d / "c.ini", service_id="sample", database_url=f"sqlite:///{d}/s.db")
sample_service.create_app(config=config).test_client().get("/healthz")
found = [m for m in HEAVY if m in sys.modules]
assert not found, f"imported by an app on SQLite, no broker, no Redis, no SMTP: {found}"
"""


def test_heavy_optional_imports_wait_for_the_function_that_needs_them() -> None:
    """Principle 1: "Heavy or optional imports (Celery, Markdown, mail, Redis) happen
    inside the function that needs them": importing srcore, or serving a request of an
    app that uses none of them, loads none of them."""
    done = subprocess.run(
        [sys.executable, "-c", _LAZY, str(ROOT / "tests")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
