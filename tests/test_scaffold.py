"""``srcore new-service``: names, the config append, the generated package and its tests,
and the network à la carte (a service is in the nav exactly when its section is)."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from click.testing import CliRunner

from srcore.cli import _add_commands, cli
from srcore.config import load_config
from srcore.scaffold import ScaffoldError, add_service_section, check_name, render_files
from srcore.scaffold.generate import package_name, title_of
from srcore.testing import write_config

SRCORE = Path(sys.executable).parent / "srcore"


def _never(_name: str) -> bool:
    return False


# -- names ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["paste", "demo-svc", "a1", "x" * 32, "lists2"])
def test_good_names_pass(name, tmp_path):
    check_name(name, installed={"todo"}, directory=tmp_path / name, importable=_never)


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("", "not a valid service id"),
        ("a", "not a valid service id"),
        ("Paste", "not a valid service id"),
        ("1paste", "not a valid service id"),
        ("paste-", "not a valid service id"),
        ("pa_ste", "not a valid service id"),
        ("x" * 33, "not a valid service id"),
        ("pa--ste", "'--' is not allowed"),
        ("global", "reserved"),
        ("srcore", "reserved"),
        ("class", "Python keyword"),
        ("match", "Python keyword"),
        ("json", "standard library"),
        ("email", "standard library"),
        ("todo", "already installed"),
    ],
)
def test_bad_names_are_refused_in_one_line(name, reason, tmp_path):
    with pytest.raises(ScaffoldError) as caught:
        check_name(name, installed={"todo"}, directory=tmp_path / "new", importable=_never)
    assert reason in str(caught.value)
    assert "\n" not in str(caught.value)


def test_an_importable_module_or_an_existing_directory_is_taken(tmp_path):
    with pytest.raises(ScaffoldError, match="module called 'flask'"):
        check_name("flask", directory=tmp_path / "flask")
    (tmp_path / "paste").mkdir()
    with pytest.raises(ScaffoldError, match="already exists"):
        check_name("paste", directory=tmp_path / "paste", importable=_never)


def test_package_and_title():
    assert package_name("demo-svc") == "demo_svc"
    assert title_of("demo-svc") == "Demo Svc"


def test_rendered_files_have_no_placeholder_left():
    files = render_files("demo-svc")
    assert "demo_svc/templates/demo-svc/index.html" in files
    assert "tests/test_demo_svc.py" in files
    for path, text in files.items():
        assert "@@" not in text and "__pkg__" not in path and "__id__" not in path
    assert 'demo-svc = "demo_svc"' in files["pyproject.toml"]
    assert '@oauth("demo-svc/items:RW")' in files["demo_svc/api.py"]
    assert 'emit(\n        "item:created",' in files["demo_svc/logic.py"]
    for path, text in files.items():
        if path.endswith(".py"):
            compile(text, path, "exec")


# -- the config append ---------------------------------------------------------------------

NETWORK = """\
; The operator's notes: keep me.
[global]
site-name = Example ; inline note
environment = development

[meta]
origin = http://127.0.0.1:5000
; meta's database
database-url = sqlite:///meta.db

[todo]
origin = http://127.0.0.1:5001
internal-origin = http://127.0.0.1:5007
"""


def test_config_append_keeps_the_file_and_adds_a_section(tmp_path):
    config = tmp_path / "config.ini"
    config.write_text(NETWORK)
    added = add_service_section(config, "paste")
    text = config.read_text()
    assert text.startswith(NETWORK)
    assert added.port == 5008  # after the highest port of the file
    section = text[len(NETWORK) :]
    assert section.startswith("\n; Added by `srcore new-service paste`")
    assert "[paste]\norigin = http://127.0.0.1:5008\n" in section
    assert f"database-url = sqlite:///{tmp_path.resolve() / 'paste.db'}" in section
    assert "oauth-client-id = paste\n" in section
    assert "oauth-client-secret = " in section
    secret = next(ln for ln in section.splitlines() if ln.startswith("secret-key"))
    assert len(secret.split(" = ")[1]) >= 48


def test_config_append_port_option_skips_taken_ports(tmp_path):
    config = tmp_path / "config.ini"
    config.write_text(NETWORK)
    assert add_service_section(config, "paste", port=5000).port == 5002
    assert add_service_section(config, "lists", port=6000).port == 6000


def test_config_append_without_meta_has_no_client_and_refuses_a_taken_section(tmp_path):
    config = tmp_path / "config.ini"
    config.write_text("[global]\nsite-name = x")  # no final newline
    added = add_service_section(config, "paste")
    assert added.port == 5000
    assert "oauth-client" not in config.read_text()
    assert "site-name = x\n\n; Added by" in config.read_text()
    before = config.read_text()
    with pytest.raises(ScaffoldError, match=r"already has a \[paste\] section"):
        add_service_section(config, "paste")
    assert config.read_text() == before


def test_config_append_refuses_a_file_it_cannot_read(tmp_path):
    config = tmp_path / "config.ini"
    config.write_text("no section header\n")
    with pytest.raises(ScaffoldError, match="cannot read it as an INI file"):
        add_service_section(config, "paste")
    with pytest.raises(ScaffoldError, match="cannot read it"):
        add_service_section(tmp_path / "missing.ini", "paste")


# -- the command ---------------------------------------------------------------------------


def _invoke(*args: str):
    _add_commands()
    return CliRunner().invoke(cli, list(args), prog_name="srcore")


def test_help_has_an_example():
    result = _invoke("new-service", "--help")
    assert result.exit_code == 0
    assert "Example: srcore new-service paste" in result.output


@pytest.mark.parametrize(
    ("name", "says"),
    [("Bad!", "not a valid service id"), ("todo", "already installed"), ("json", "standard")],
)
def test_command_refuses_bad_names_with_exit_status_2(name, says, tmp_path):
    result = _invoke("new-service", name, "--dir", str(tmp_path))
    assert result.exit_code == 2
    (line,) = result.output.splitlines()
    assert line.startswith("srcore new-service: ") and says in line
    assert list(tmp_path.iterdir()) == []


def test_command_refuses_a_missing_config_before_writing(tmp_path):
    result = _invoke("new-service", "demo-svc", "--dir", str(tmp_path), "--config", "nope.ini")
    assert result.exit_code == 2
    assert "nope.ini is not a file" in result.output
    assert list(tmp_path.iterdir()) == []


def test_command_writes_the_package_and_the_section(tmp_path):
    config = tmp_path / "config.ini"
    config.write_text(NETWORK)
    result = _invoke(
        "new-service", "demo-svc", "--dir", str(tmp_path / "src"), "--config", str(config)
    )
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("creating service demo-svc in ")
    assert any("checking the first migration" in ln for ln in lines)
    summary = lines[-1]
    assert summary.startswith("created demo-svc in ")
    assert ": 12 files; added [demo-svc] to " in summary
    root = tmp_path / "src" / "demo-svc"
    (migration,) = (root / "demo_svc" / "migrations" / "versions").glob("*.py")
    text = migration.read_text()
    assert 'op.create_table(\n        "item"' in text
    assert '"user",' not in text.replace('["user.id"]', "")  # the core's lineage owns it
    assert "[demo-svc]" in config.read_text()


# -- à la carte: the network is the config file --------------------------------------------


def _todo_nav(path: Path) -> list[tuple[str, str]]:
    import todo

    app = todo.create_app(config=path)
    try:
        state = app.extensions["srcore"]
        return [(item.id, item.name) for item in state.nav()]
    finally:
        app.extensions["srcore"].db.dispose()


def _network(directory: Path, services: list[str]) -> Path:
    """A network of meta and *services*, each section added as `new-service` adds it."""
    directory.mkdir()
    config = write_config(
        directory / "config.ini",
        service_id="meta",
        database_url=f"sqlite:///{directory / 'meta.db'}",
    )
    for service in services:
        add_service_section(config, service)
    return config


def test_a_configured_service_is_in_every_nav_and_removing_its_section_removes_it(tmp_path):
    with_paste = _network(tmp_path / "a", ["todo", "paste"])
    assert _todo_nav(with_paste) == [("meta", "Meta"), ("todo", "Todo"), ("paste", "Paste")]
    without = _network(tmp_path / "b", ["todo"])
    assert _todo_nav(without) == [("meta", "Meta"), ("todo", "Todo")]
    # The two files differ by paste's section alone (and fresh secrets).
    assert "[paste]" not in without.read_text()
    assert load_config(with_paste).services == ["meta", "todo", "paste"]
    assert load_config(without).services == ["meta", "todo"]


# -- acceptance: generate, install, run the generated tests ---------------------------------


def _venv_with_this_environment(path: Path) -> Path:
    """A venv that sees this environment's packages (srcore, pytest, ...) below its own."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    python = path / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    parent = sysconfig.get_paths()["purelib"]
    # addsitedir (not a bare path) so this environment's own .pth files (editable
    # installs of srcore and the example services) are processed too.
    (Path(site) / "_srcore_parent_env.pth").write_text(
        f"import site; site.addsitedir({parent!r})\n"
    )
    return python


@pytest.mark.slow
def test_generated_service_installs_and_its_tests_pass(tmp_path):
    work = tmp_path / "work"
    config = _network(work, ["todo"])
    generated = subprocess.run(
        [str(SRCORE), "new-service", "demo-svc", "--dir", "src", "--config", "config.ini"],
        cwd=work,
        capture_output=True,
        text=True,
    )
    assert generated.returncode == 0, generated.stdout + generated.stderr
    assert generated.stdout.splitlines()[-1].startswith("created demo-svc in ./src/demo-svc: ")

    python = _venv_with_this_environment(tmp_path / "venv")
    installed = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            str(work / "src" / "demo-svc"),
        ],
        capture_output=True,
        text=True,
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr

    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "SRCORE_"))}
    tests = subprocess.run(
        [str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=work / "src" / "demo-svc",
        capture_output=True,
        text=True,
        env=env,
    )
    assert tests.returncode == 0, tests.stdout[-5000:] + tests.stderr[-2000:]
    assert " passed" in tests.stdout and "failed" not in tests.stdout

    # Installed and configured, it is in the nav of every other service: here, todo's.
    nav = subprocess.run(
        [
            str(python),
            "-c",
            "import sys, todo; app = todo.create_app(config=sys.argv[1]); "
            "print([(n.id, n.name, n.url) for n in app.extensions['srcore'].nav()])",
            str(config),
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    assert nav.returncode == 0, nav.stderr[-3000:]
    assert "('demo-svc', 'Demo Svc', 'http://127.0.0.1:6001/')" in nav.stdout
