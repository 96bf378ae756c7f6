"""Fresh installs from the package index, as a user or a packager makes them.

- ``pip install srcore`` alone (no extra) and a service: it migrates, serves requests
  through the test client and delivers with ``srcore worker --once`` on SQLite, with no
  Celery, Redis, psycopg, gunicorn or pytest in the virtualenv; ``srcore serve`` names the
  extra it lacks.
- Every requirement of srcore (with every extra) and of the three example services at the
  lowest version its pyproject.toml allows (``uv pip install --resolution lowest-direct``):
  the same smoke, the other services' apps, the extras' code, gunicorn serving, and
  PostgreSQL through the lowest psycopg.

The packages come from pip's and uv's caches after the first run; srcore and the services
are built once per module into wheels.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
import tomllib
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from srcore.testdb import create_test_database, drop_test_database, postgres_available
from srcore.testing import free_port, require_or_skip

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
SERVICES = ("todo", "meta", "paste")
EXTRAS = ("celery", "redis", "postgres", "server")
_PIP = (sys.executable, "-m", "pip")
#: One install resolves and downloads at most this long (cached runs take seconds).
INSTALL_TIMEOUT = 600

#: Runs inside the new virtualenv: todo's app on the config given, a user, the pages and
#: a tracker made through the form (it emits ``tracker:created`` into the outbox).
SMOKE = textwrap.dedent(
    """
    import re, sys
    import todo
    from srcore.db import UserType

    app = todo.create_app(config=sys.argv[1])
    st = app.extensions["srcore"]
    with st.db.transaction() as session:
        session.add(st.user_model(
            id=1000, username="alice", email="alice@example.org", user_type=UserType.active
        ))
    client = app.test_client()
    assert client.get("/healthz").status_code == 200
    assert client.get("/api/openapi.json").get_json()["openapi"].startswith("3.1")
    with client.session_transaction() as session:
        session["_uid"] = 1000
        session.permanent = True
    page = client.get("/create")
    assert page.status_code == 200, page.status_code
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.get_data(as_text=True))
    made = client.post("/create", data={"name": "bugs", "csrf_token": token.group(1)})
    assert made.status_code == 302, made.status_code
    assert "Tracker bugs created." in client.get("/~alice/bugs").get_data(as_text=True)
    st.db.dispose()
    print("smoke ok")
    """
)

#: Runs inside the lowest-versions virtualenv: what the extras and the other services add.
EXTRAS_SMOKE = textwrap.dedent(
    """
    import sys
    import meta, paste, todo
    import srcore.gunicorn_logging, srcore.gunicorn_worker
    from srcore.auth.revocation import make_fanout, make_store
    from srcore.webhooks.celery import make_celery

    for module in (meta, paste):
        module.create_app(config=sys.argv[1]).extensions["srcore"].db.dispose()
    app = todo.create_app(config=sys.argv[1])
    celery = make_celery(app, broker="redis://127.0.0.1:6379/15")  # builds, connects not
    assert celery.conf.task_default_queue == "srcore-webhooks.todo"
    fanout = make_fanout("redis://127.0.0.1:6379/15", "todo", make_store())
    assert type(fanout).__name__ == "RedisFanout"
    print("extras ok")
    """
)


def _clean_env(**extra: str) -> dict[str, str]:
    """This environment without the test run's own settings (config, pytest, venv)."""
    drop = ("SRCORE_", "PYTEST_", "VIRTUAL_ENV", "PYTHONPATH")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    return {**env, **extra}


def _run(argv: list[str | Path], *, timeout: float = 120, **kwargs: object) -> str:
    result = subprocess.run(
        [str(a) for a in argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=_clean_env(),
        **kwargs,  # type: ignore[arg-type]
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{' '.join(map(str, argv))}\n{output[-4000:]}"
    return output


def _base_python() -> str:
    """The interpreter this venv was made from: new venvs are made from it too."""
    return str(Path(getattr(sys, "_base_executable", sys.executable)).resolve())


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """srcore and the example services, built once into wheels."""
    out = tmp_path_factory.mktemp("wheels")
    sources = [ROOT] + [ROOT / "example_services" / s for s in SERVICES]
    _run(
        [*_PIP, "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", out, *sources],
        timeout=300,
    )
    found = {"srcore": next(out.glob("srcore-*.whl"))}
    for service in SERVICES:
        found[service] = next(out.glob(f"srcore_{service}-*.whl"))
    return found


def _write_config(path: Path, services: list[str], database_url: str | None = None) -> Path:
    lines = ["[global]", "environment = development", ""]
    for number, service in enumerate(services):
        url = database_url or f"sqlite:///{path.parent / (service + '.db')}"
        lines += [
            f"[{service}]",
            f"origin = http://127.0.0.1:{5600 + number}",
            f"database-url = {url}",
            f"secret-key = {os.urandom(24).hex()}",
            "",
        ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def _migrate_smoke_and_deliver(venv: Path, config: Path) -> None:
    """Migrate, run :data:`SMOKE`, then one pass of the local worker over its event."""
    bin_ = venv / "bin"
    _run([bin_ / "srcore", "--config", config, "migrate", "--all", "upgrade"])
    assert "smoke ok" in _run([bin_ / "python", "-c", SMOKE, config])
    worker = _run([bin_ / "srcore", "--config", config, "worker", "todo", "--once"])
    assert "local dispatcher" in worker, worker
    assert "handled 1 row(s)" in worker, worker


def test_srcore_alone_runs_a_service_on_sqlite_with_the_local_worker(
    wheels: dict[str, Path], tmp_path: Path
) -> None:
    venv = tmp_path / "venv"
    _run([_base_python(), "-m", "venv", "--without-pip", venv])
    python = venv / "bin" / "python"
    _run(
        [*_PIP, "--python", python, "install", "--quiet", wheels["srcore"], wheels["todo"]],
        timeout=INSTALL_TIMEOUT,
    )
    probe = "import importlib.util as u; print(sorted(m for m in sys.argv[1:] if u.find_spec(m)))"
    absent = ["celery", "redis", "psycopg", "gunicorn", "pytest", "argon2", "authlib"]
    assert _run([python, "-c", "import sys; " + probe, *absent]).strip() == "[]"

    config = _write_config(tmp_path / "config.ini", ["todo"])
    _migrate_smoke_and_deliver(venv, config)

    served = subprocess.run(
        [venv / "bin" / "srcore", "--config", config, "serve", "todo"],
        capture_output=True,
        text=True,
        timeout=60,
        env=_clean_env(),
    )
    assert served.returncode == 1
    assert "needs srcore's 'server' extra" in served.stderr
    assert "pip install 'srcore[server]'" in served.stderr


def _declared(path: Path) -> list[str]:
    """The third-party requirements a pyproject.toml declares, its extras' too."""
    project = tomllib.loads(path.read_text(encoding="utf-8"))["project"]
    requirements = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        requirements += extra
    return [r for r in requirements if canonicalize_name(Requirement(r).name) != "srcore"]


@pytest.fixture
def postgres_url() -> Iterator[str]:
    require_or_skip(postgres_available(), "PostgreSQL")
    url = create_test_database(prefix="srcore_lowest")
    try:
        yield url
    finally:
        drop_test_database(url)


def test_lowest_allowed_versions_run_every_part(
    wheels: dict[str, Path], tmp_path: Path, postgres_url: str
) -> None:
    venv = tmp_path / "venv"
    uv = Path(sys.executable).parent / "uv"
    _run([uv, "venv", "--quiet", "--python", _base_python(), venv])
    python = venv / "bin" / "python"
    # Every declared requirement named on the command line: lowest-direct lowers exactly
    # these (a wheel's own requirements would count as indirect).
    declared = _declared(ROOT / "pyproject.toml")
    for service in SERVICES:
        declared += _declared(ROOT / "example_services" / service / "pyproject.toml")
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("\n".join(sorted(set(declared))) + "\n", encoding="utf-8")
    srcore = f"srcore[{','.join(EXTRAS)}] @ {wheels['srcore'].as_uri()}"
    _run(
        [uv, "pip", "install", "--quiet", "--python", python, "--resolution", "lowest-direct"]
        + ["-r", requirements, srcore]
        + [wheels[s] for s in SERVICES],
        timeout=INSTALL_TIMEOUT,
    )
    frozen = _run([uv, "pip", "freeze", "--python", python])
    print("resolved at the lowest allowed versions:\n" + frozen)
    versions = {
        canonicalize_name(name): Version(version)
        for name, _, version in (line.partition("==") for line in frozen.splitlines())
        if version
    }
    # The floors themselves were installed, where nothing else asks for more.
    for requirement in ("flask>=3.0", "sqlalchemy>=2.1", "flask-wtf>=1.3", "celery>=5.3"):
        parsed = Requirement(requirement)
        floor = Version(next(iter(parsed.specifier)).version)
        assert versions[canonicalize_name(parsed.name)] == floor, (requirement, versions)

    config = _write_config(tmp_path / "config.ini", ["meta", "todo", "paste"])
    _migrate_smoke_and_deliver(venv, config)
    assert "extras ok" in _run([python, "-c", EXTRAS_SMOKE, config])
    _serves(venv, config)

    on_postgres = _write_config(tmp_path / "pg" / "config.ini", ["todo"], postgres_url)
    _migrate_smoke_and_deliver(venv, on_postgres)


def _serves(venv: Path, config: Path) -> None:
    """``srcore serve todo`` under gunicorn answers /healthz, then stops on SIGTERM."""
    port = free_port()
    bind = ("--bind", f"127.0.0.1:{port}")
    process = subprocess.Popen(
        [venv / "bin" / "srcore", "--config", config, "serve", "todo", "--workers", "1", *bind],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=_clean_env(),
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, process.stderr.read().decode()[-3000:]  # type: ignore[union-attr]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                    assert r.status == 200
                    break
            except OSError:
                assert time.monotonic() < deadline, "gunicorn did not answer within 60 s"
                time.sleep(0.2)
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        assert process.stderr is not None
        process.stderr.close()
