"""The docs stay true: the config reference matches the declarations, links resolve, every
command and key the guides name exists, and every command's --help has an example."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
import yaml
from click.testing import CliRunner

from srcore.cli import _add_commands, cli
from srcore.config import GLOBAL_KEYS, SERVICE_KEYS, Key, env_name
from srcore.config.reference import (
    REGENERATE,
    declared_entries,
    documented_entries,
    reference_problems,
    render_reference,
)
from srcore.config_cli import make_config_command
from srcore.manifest import Manifest, parse_manifest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
REFERENCE = DOCS / "config-reference.md"
#: Hand-written pages whose commands, keys and environment variables are checked.
GUIDES = [DOCS / "operators.md", DOCS / "architecture.md", DOCS / "index.md", ROOT / "README.md"]


def repo_manifests() -> list[Manifest]:
    """The manifests of the services in this repository: what the reference documents.

    Read from the files, not from what happens to be installed, so the test pins them.
    """
    found = []
    for path in sorted(ROOT.glob("example_services/*/*/service.yaml")):
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        found.append(parse_manifest(data, package=path.parent.name, source=str(path)))
    return found


def _without_entry(text: str, section: str, key: str) -> str:
    """*text* with the entry of *key* in *section* cut out (heading to the next heading)."""
    lines = text.splitlines(keepends=True)
    out: list[str] = []
    current: str | None = None
    skipping = False
    for line in lines:
        if line.startswith("## "):
            found = re.match(r"## `\[([^\]]+)\]`", line)
            current = found.group(1) if found else None
            skipping = False
        elif line.startswith("### "):
            skipping = current == section and line.startswith(f"### `{key}`")
        if not skipping:
            out.append(line)
    return "".join(out)


# -- the config reference -----------------------------------------------------------------


def test_the_reference_is_exactly_what_the_declarations_generate() -> None:
    text = REFERENCE.read_text(encoding="utf-8")
    assert reference_problems(text, repo_manifests()) == [], (
        f"docs/config-reference.md is out of date: run `{REGENERATE}`"
    )
    assert render_reference(repo_manifests()) == text


def test_the_reference_has_every_key_of_every_section() -> None:
    manifests = repo_manifests()
    entries = documented_entries(REFERENCE.read_text(encoding="utf-8"))
    for key in GLOBAL_KEYS:
        assert ("global", key.name) in entries
    for key in SERVICE_KEYS:
        assert ("<service>", key.name) in entries
    assert {m.id for m in manifests} >= {"meta", "todo"}
    for manifest in manifests:
        for section, keys in manifest.config.items():
            for key in keys:
                assert (section, key.name) in entries


def test_each_entry_shows_type_default_flags_env_and_help() -> None:
    text = REFERENCE.read_text(encoding="utf-8")
    assert "srcore config reference --output docs/config-reference.md" in text.split("##")[0]
    assert "Generated" in text.split("##")[0]
    entry = text.split("### `environment`", 1)[1].split("###", 1)[0]
    assert "one of `development`, `staging`, `production`" in entry
    assert "`development`" in entry and "`SRCORE__GLOBAL__ENVIRONMENT`" in entry
    assert "Anything but 'production' shows a banner" in entry
    secret = text.split("## `[<service>]`", 1)[1].split("### `secret-key`", 1)[1]
    secret = secret.split("###", 1)[0]
    assert "| text | *(empty)* | yes | yes | `SRCORE__<SERVICE>__SECRET_KEY` |" in secret
    tickets = text.split("## `[todo]`", 1)[1].split("### `tickets-per-page`", 1)[1]
    assert "| whole number | `25` | no | no | `SRCORE__TODO__TICKETS_PER_PAGE` |" in tickets
    for intro in ("Lookup order", "-file", "SRCORE__<SECTION>__<KEY>", "/etc/srcore/config.ini"):
        assert intro in text


def test_removing_any_declared_key_from_the_docs_fails_the_check() -> None:
    manifests = repo_manifests()
    text = render_reference(manifests)
    entries = declared_entries(manifests)
    assert len(entries) > 30
    for section, key in entries:
        broken = _without_entry(text, section, key)
        assert broken != text
        problems = reference_problems(broken, manifests)
        assert f"[{section}] {key}: declared, but missing from the config reference" in problems
        assert problems[-1] == f"regenerate it: {REGENERATE}"


def test_a_newly_declared_key_fails_the_check_until_regenerated() -> None:
    manifests = repo_manifests()
    text = render_reference(manifests)
    todo = next(m for m in manifests if m.id == "todo")
    grown = dataclasses.replace(
        todo,
        config={**todo.config, "todo": (*todo.config["todo"], Key("labels-per-ticket", "int"))},
    )
    changed = [grown if m.id == "todo" else m for m in manifests]
    problems = reference_problems(text, changed)
    assert "[todo] labels-per-ticket: declared, but missing from the config reference" in problems
    assert reference_problems(render_reference(changed), changed) == []


def test_an_undeclared_or_edited_entry_fails_the_check() -> None:
    manifests = repo_manifests()
    text = render_reference(manifests)
    extra = text + "\n### `no-such-key`\n\nGone.\n"
    assert "[todo] no-such-key: in the config reference, but no longer declared" in (
        reference_problems(extra, manifests)
    )
    edited = text.replace("How many tickets a tracker's page", "How many tickets a page")
    assert reference_problems(edited, manifests) == [
        "the config reference differs from what the declarations generate",
        f"regenerate it: {REGENERATE}",
    ]


def test_the_reference_follows_the_manifests_it_is_given() -> None:
    only_srcore = render_reference([])
    assert "## `[global]`" in only_srcore and "## `[<service>]`" in only_srcore
    assert "## `[todo]`" not in only_srcore
    # The order of the manifests given does not matter: meta first, then by id.
    manifests = repo_manifests()
    assert render_reference(reversed(manifests)) == render_reference(manifests)


def _config_cli() -> click.Group:
    @click.group()
    @click.option("--config")
    def root(config: str | None) -> None:
        pass

    root.add_command(make_config_command(manifests=repo_manifests))
    return root


def test_config_reference_command_prints_writes_and_checks(tmp_path: Path) -> None:
    runner = CliRunner()
    printed = runner.invoke(_config_cli(), ["config", "reference"])
    assert printed.exit_code == 0, printed.output
    assert printed.output == render_reference(repo_manifests())

    out = tmp_path / "docs" / "ref.md"
    wrote = runner.invoke(_config_cli(), ["config", "reference", "--output", str(out)])
    assert wrote.exit_code == 0, wrote.output
    assert out.read_text(encoding="utf-8") == printed.output
    assert "meta" in wrote.output and "todo" in wrote.output

    ok = runner.invoke(_config_cli(), ["config", "reference", "--check", str(out)])
    assert ok.exit_code == 0 and "up to date" in ok.output
    out.write_text(_without_entry(printed.output, "global", "redis-url"), encoding="utf-8")
    bad = runner.invoke(_config_cli(), ["config", "reference", "--check", str(out)])
    assert bad.exit_code == 1
    assert "[global] redis-url: declared, but missing" in bad.output + (bad.stderr or "")


def test_the_installed_srcore_command_has_the_reference() -> None:
    _add_commands()
    result = CliRunner().invoke(cli, ["config", "reference"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("# Config reference")


# -- every command has an example ---------------------------------------------------------


def _walk(command: click.Command, path: str) -> Iterator[tuple[str, click.Command]]:
    yield path, command
    if isinstance(command, click.Group):
        for name, sub in sorted(command.commands.items()):
            yield from _walk(sub, f"{path} {name}")


def test_every_command_help_has_an_example() -> None:
    _add_commands()
    commands = list(_walk(cli, "srcore"))
    names = {path for path, _ in commands}
    assert {"srcore dev", "srcore config reference", "srcore migrate upgrade"} <= names
    missing = [path for path, command in commands if "Example" not in (command.epilog or "")]
    assert missing == [], f"--help without an example: {missing}"
    for path, command in commands:
        ctx = click.Context(command, info_name=path)
        assert "Example" in command.get_help(ctx), path


def test_help_output_shows_the_example() -> None:
    _add_commands()
    result = CliRunner().invoke(cli, ["dev", "--help"])
    assert result.exit_code == 0
    assert "Example:" in result.output and "srcore --config var/config.ini dev" in result.output


# -- the guides name real things ----------------------------------------------------------


def _fences(text: str) -> tuple[list[tuple[str, str]], str]:
    """The fenced blocks of a Markdown page as ``(language, body)``, and the text outside."""
    blocks: list[tuple[str, str]] = []
    outside: list[str] = []
    language: str | None = None
    body: list[str] = []
    for line in text.splitlines():
        if line.startswith("```"):
            if language is None:
                language, body = line[3:].strip(), []
            else:
                blocks.append((language, "\n".join(body)))
                language = None
        elif language is None:
            outside.append(line)
        else:
            body.append(line)
    return blocks, "\n".join(outside)


def _code(text: str) -> list[str]:
    """Shell blocks and inline code spans of a Markdown page."""
    blocks, outside = _fences(text)
    shell = [body for language, body in blocks if language in ("", "sh", "shell", "bash")]
    return shell + re.findall(r"`([^`\n]+)`", outside)


def _ini_blocks(text: str) -> list[str]:
    return [body for language, body in _fences(text)[0] if language == "ini"]


def _declared_keys() -> dict[str, set[str]]:
    keys = {"global": {k.name for k in GLOBAL_KEYS}}
    for manifest in repo_manifests():
        own = {k.name for k in manifest.config.get(manifest.id, ())}
        keys[manifest.id] = {k.name for k in SERVICE_KEYS} | own
    return keys


def test_links_between_the_docs_resolve() -> None:
    for page in [*DOCS.glob("*.md"), ROOT / "README.md"]:
        text = page.read_text(encoding="utf-8")
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if target.startswith(("http://", "https://", "mailto:", "#")):
                continue
            path = (page.parent / target.split("#", 1)[0]).resolve()
            assert path.exists(), f"{page.name}: broken link {target}"
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for name in ("docs/operators.md", "docs/config-reference.md", "docs/architecture.md"):
        assert f"]({name})" in readme


@pytest.mark.parametrize("page", GUIDES, ids=lambda p: p.name)
def test_every_srcore_command_the_docs_name_exists(page: Path) -> None:
    _add_commands()
    seen = 0
    for code in _code(page.read_text(encoding="utf-8")):
        for match in re.finditer(
            r"(?:^|(?<=[;&|(])[ \t]*|bin/)srcore"
            r"((?:[ \t]+--config[ =]\S+)?(?:[ \t]+[A-Za-z0-9_./=:@'\"-]+)*)",
            code,
            re.M,
        ):
            words = [w for w in match.group(1).split() if not w.startswith("--config")]
            words = [w for w in words if not w.startswith(("/", "var/"))]
            if not words or words[0].startswith("-") or words[0].isupper():
                continue  # `srcore --version`, `srcore COMMAND --help`
            command = cli.commands.get(words[0])
            assert command is not None, f"{page.name}: `srcore {words[0]}` does not exist"
            seen += 1
            if words[0] == "config" and len(words) > 1 and not words[1].startswith("-"):
                assert isinstance(command, click.Group)
                assert words[1] in command.commands, f"{page.name}: srcore config {words[1]}"
            if words[0] == "migrate" and len(words) > 2 and not words[2].startswith("-"):
                assert isinstance(command, click.Group)
                assert words[2] in command.commands, f"{page.name}: srcore migrate .. {words[2]}"
    if page.name in ("operators.md", "README.md"):
        assert seen > 5


@pytest.mark.parametrize("page", GUIDES, ids=lambda p: p.name)
def test_every_config_key_the_docs_show_is_declared(page: Path) -> None:
    declared = _declared_keys()
    text = page.read_text(encoding="utf-8")
    for block in _ini_blocks(text):
        section: str | None = None
        for line in block.splitlines():
            header = re.match(r"^\[([a-z0-9:_-]+)\]", line)
            if header:
                section = header.group(1)
                continue
            pair = re.match(r"^([a-z][a-z0-9-]*)\s*=", line)
            if pair is None or section is None or section not in declared:
                continue  # systemd units and sub-sections are not the srcore config
            key = pair.group(1).removesuffix("-file")
            assert key in declared[section], f"{page.name}: [{section}] {key} is not declared"
    envs = {env_name(section, key) for section, keys in declared.items() for key in keys}
    for var in re.findall(r"\bSRCORE__[A-Z0-9_]+", text):
        if "<" in var or var.count("__") > 2:
            continue  # placeholders and the sub-section example
        assert var.removesuffix("_FILE") in envs, f"{page.name}: {var} names no declared key"
    for key in re.findall(r"`([a-z][a-z0-9]*(?:-[a-z0-9]+)+) = [^`]*`", text):
        assert any(key.removesuffix("-file") in keys for keys in declared.values()), (
            f"{page.name}: `{key} = ...` is not a declared key"
        )
