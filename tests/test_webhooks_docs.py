"""The webhook event docs in each example service's README are generated from the catalog
(``srcore webhooks docs``) and kept up to date."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from srcore.cli import webhooks_command
from srcore.manifest import load_manifest
from srcore.webhooks.catalog import BEGIN, END, render, update_readme

ROOT = Path(__file__).resolve().parent.parent
SERVICES = ["todo", "paste", "meta"]


@pytest.mark.parametrize("package", SERVICES)
def test_every_readme_documents_the_events_as_the_code_sends_them(package: str) -> None:
    readme = ROOT / "example_services" / package / "README.md"
    text = readme.read_text(encoding="utf-8")
    manifest = load_manifest(package)
    assert update_readme(text, manifest) == text, (
        f"{readme} is out of date: run srcore webhooks docs {package} --readme {readme}"
    )
    for event in manifest.user_events:
        assert event.payload is not None, f"{package}: {event.name} declares no payload type"
        assert f"### `{event.name}`" in text


def test_the_docs_name_every_field_and_nested_field() -> None:
    text = render(load_manifest("todo"))
    section = text.split("### `ticket:created`")[1].split("###")[0]
    assert "Needs `todo/tickets:RO`; audience: readers." in section
    for row in (
        "| `id` | integer |",
        "| `tracker.owner.username` | string |",
        "| `resolution` | one of `fixed`, ",
        "| `created` | string (date-time) |",
    ):
        assert row in section, row


def test_the_command_updates_and_checks_a_readme(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"# Sample\n\n{BEGIN}\nold\n{END}\n\nMore.\n", encoding="utf-8")
    runner = CliRunner()
    stale = runner.invoke(webhooks_command, ["docs", "sample_service", "--readme", str(readme)])
    assert stale.exit_code == 0, stale.output
    assert "updated" in stale.output
    text = readme.read_text(encoding="utf-8")
    assert text.startswith("# Sample\n\n") and text.endswith(f"{END}\n\nMore.\n")
    assert "### `thing:created`" in text and "old" not in text
    args = ["docs", "sample_service", "--readme", str(readme), "--check"]
    assert runner.invoke(webhooks_command, args).exit_code == 0
    readme.write_text(text.replace("| `name` | string |", "| `name` | integer |"))
    checked = runner.invoke(webhooks_command, args)
    assert checked.exit_code == 1 and "out of date" in checked.output
    printed = runner.invoke(webhooks_command, ["docs", "sample_service"])
    assert printed.output == render(load_manifest("sample_service"))
    readme.write_text("# no markers\n")
    missing = runner.invoke(webhooks_command, args)
    assert missing.exit_code == 1 and "markers are missing" in missing.output
