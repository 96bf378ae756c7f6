"""--first-port of the demo and of ``srcore init`` only applies to a new config; with an
existing one, both say so in one line instead of silently keeping the old ports."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

DEMO = Path(__file__).resolve().parent.parent / "scripts" / "demo.py"


def _demo() -> ModuleType:
    spec = importlib.util.spec_from_file_location("srcore_demo_script", DEMO)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_first_port_with_an_existing_config_is_reported(tmp_path: Path) -> None:
    demo = _demo()
    config = tmp_path / "config.ini"
    config.write_text("[meta]\norigin = http://127.0.0.1:5000\n", encoding="utf-8")
    note = demo.first_port_note(config, 5500)
    assert note is not None and "\n" not in note
    assert "--first-port 5500" in note and "ignored" in note and str(config) in note


def test_first_port_is_silent_when_it_applies_or_is_not_given(tmp_path: Path) -> None:
    demo = _demo()
    config = tmp_path / "config.ini"
    assert demo.first_port_note(config, 5500) is None  # no config yet: it is used
    config.write_text("[meta]\n", encoding="utf-8")
    assert demo.first_port_note(config, None) is None


def test_init_says_first_port_does_not_change_an_existing_config(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from srcore.cli import cli

    config = tmp_path / "config.ini"
    config.write_text("[meta]\norigin = http://127.0.0.1:5000\n", encoding="utf-8")
    result = CliRunner().invoke(cli, ["init", "--path", str(config), "--first-port", "5500"])
    assert result.exit_code == 2
    assert "--first-port 5500 only applies to a new file" in result.output
    assert "origin = http://127.0.0.1:5000" in config.read_text(encoding="utf-8")
