"""The metrics of meta, todo and paste as an operator's Prometheus meets them.

The three services run under gunicorn with several workers (each keeps its values in
files of its own, added up at every scrape), each with its webhook worker, and serve
their metrics at a ``metrics-path`` of their own. After pages, API calls, errors and
webhook deliveries, every scrape passes ``promtool check metrics`` (the exposition
format, and its lint: names, units, help, counters ending in ``_total``, histograms'
buckets). Then a real ``prometheus`` server scrapes them every second: each target is up,
the series the operators' guide promises are there with the labels it names, their
values are sane (no negative count, a histogram's ``+Inf`` bucket its count, a counter
grows by the requests sent), and no series is made per raw path or method a client sent.

promtool and prometheus are Debian's ``prometheus`` package (``make test`` installs it
when it can); without it these tests are skipped, and fail under ``CI=true``.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import json
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from srcore import testdb
from srcore.testing import (
    free_port,
    require_or_skip,
    run_service,
    run_worker,
    write_config,
    write_network_config,
)
from tests.conftest import require_postgres
from tests.test_security_e2e import (
    Network,
    Receiver,
    bearer,
    csrf,
    mail_sink,
    open_page_as,
    personal_token,
    register,
)

__all__ = ["mail_sink"]  # a fixture used by this module

pytestmark = [pytest.mark.slow]

SERVICES = ("meta", "todo", "paste")
#: Each service's metrics at a path of its own, as an operator may choose them.
METRICS_PATHS = {"meta": "/metrics", "todo": "/internal/metrics", "paste": "/ops/prometheus"}
WORKERS = 3
SCOPES = ["todo/trackers:RW", "paste/pastes:RW", "meta/profile:RW"]
EVENTS = {"meta": ["profile:updated"], "todo": ["tracker:created"], "paste": ["paste:created"]}
#: The methods the guide names; any other is counted as ``other``.
METHODS = {"GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "other"}
#: A path no route takes, and a method nobody defines: neither may become a label.
RAW_PATH = "/no-such-page-7f3a9c"
RAW_METHOD = "BREW7F3A9C"
#: Requests sent to one route between two looks at Prometheus.
MORE = 25
#: How long Prometheus may take to start, scrape, and see what was sent.
PATIENCE = 60.0
#: The metric families the operators' guide promises, and their types: no other.
FAMILIES = {"srcore_http_requests_total": "counter", "srcore_http_request_seconds": "histogram"}
#: The series Prometheus stores from a scrape: the families' samples, and its own per target.
SERIES = {
    "srcore_http_requests_total",
    "srcore_http_request_seconds_bucket",
    "srcore_http_request_seconds_sum",
    "srcore_http_request_seconds_count",
    "up",
    "scrape_duration_seconds",
    "scrape_samples_scraped",
    "scrape_samples_post_metric_relabeling",
    "scrape_series_added",
}


@dataclass
class World:
    net: Network
    ports: dict[str, int]
    apps: dict[str, Any]
    token: str
    receiver: Receiver


def _with_metrics_paths(config: Path) -> None:
    """Give each service's section its ``metrics-path``."""
    lines = []
    for line in config.read_text(encoding="utf-8").splitlines():
        lines.append(line)
        name = line.strip("[]")
        if line.startswith("[") and name in METRICS_PATHS:
            lines.append(f"metrics-path = {METRICS_PATHS[name]}")
    config.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _wait_for(check: Callable[[], bool], what: str, timeout: float = PATIENCE) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.2)


def _traffic(world: World) -> None:
    """Pages, forms, API calls (good and refused), errors and webhook deliveries."""
    net, token = world.net, world.token
    for service in SERVICES:
        base = getattr(net, service)
        for path in ("/", "/healthz", RAW_PATH, RAW_PATH + "/x?q=secret"):
            requests.get(base + path, timeout=10)
        requests.request(RAW_METHOD, base + "/", timeout=10)
        requests.head(base + "/", timeout=10)
        requests.options(base + "/", timeout=10)
        requests.delete(base + "/", timeout=10)
        requests.post(f"{base}/api/webhooks", data=b"{not json", headers=bearer(token), timeout=10)
        requests.get(f"{base}/api/webhooks", headers=bearer("not-a-token"), timeout=10)
        listed = requests.get(f"{base}/api/webhooks", headers=bearer(token), timeout=10)
        assert listed.status_code == 200, listed.text
    made = requests.post(
        f"{net.todo}/api/trackers",
        headers=bearer(token),
        json={"name": "ops", "visibility": "public"},
        timeout=10,
    )
    assert made.status_code == 201, made.text
    assert requests.get(f"{net.todo}/api/trackers/ops", headers=bearer(token), timeout=10).ok
    assert requests.get(f"{net.todo}/~alice/ops", timeout=10).ok
    requests.get(f"{net.todo}/api/trackers/no-such-tracker", headers=bearer(token), timeout=10)
    made = requests.post(
        f"{net.paste}/api/pastes",
        headers=bearer(token),
        json={"title": "ops", "text": "echo hello"},
        timeout=10,
    )
    assert made.status_code == 201, made.text
    requests.get(f"{net.paste}/api/pastes/nosuchid", headers=bearer(token), timeout=10)
    got = world.receiver.got
    _wait_for(lambda: len(got) >= 2, "the webhook deliveries of tracker:created, paste:created")


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, mail_sink: Any
) -> Iterator[World]:
    from srcore.app import migration_target
    from srcore.migrate import upgrade_all

    require_or_skip(shutil.which("promtool") is not None, "promtool (Debian's prometheus)")
    tmp = tmp_path_factory.mktemp(f"metrics-prometheus-{request.param}")
    ports = {service: free_port() for service in SERVICES}
    config = write_network_config(
        tmp / "config.ini",
        ports,
        global_keys={**mail_sink.config_keys(), "allow-private-webhook-targets": "127.0.0.0/8"},
    )
    _with_metrics_paths(config)
    made: list[str] = []
    if request.param == "postgresql":
        require_postgres()
        text = config.read_text(encoding="utf-8")
        for name in ports:
            url = testdb.create_test_database(prefix=f"srcore_prom_{name}")
            made.append(url)
            text = text.replace(f"sqlite:///{tmp / (name + '.db')}", url)
        config.write_text(text, encoding="utf-8")
    apps: dict[str, Any] = {}
    try:
        for service in SERVICES:
            upgrade_all(migration_target(service, config))
            apps[service] = importlib.import_module(service).create_app(config=config)
        with contextlib.ExitStack() as stack:
            urls = {
                service: stack.enter_context(
                    run_service(service, config, port=port, workers=WORKERS, timeout=60)
                )
                for service, port in ports.items()
            }
            for service in SERVICES:
                stack.enter_context(run_worker(service, config, timeout=60))
            net = Network(config, tmp, urls["meta"], urls["todo"], urls["paste"], mail_sink, {})
            receiver = net.receiver()
            stack.callback(receiver.close)
            browser = register(net, "alice")
            open_page_as(net, browser, "alice", net.todo, "/create")
            page = browser.get(f"{net.todo}/create", timeout=10)
            form = {"csrf_token": csrf(page), "name": "pub", "visibility": "public"}
            assert browser.post(f"{net.todo}/create", data=form, timeout=10).ok
            open_page_as(net, browser, "alice", net.paste, "/new")
            token = personal_token(net, browser, SCOPES)
            for service in SERVICES:
                subscribed = requests.post(
                    f"{getattr(net, service)}/api/webhooks",
                    headers=bearer(token),
                    json={"url": receiver.url, "events": EVENTS[service]},
                    timeout=10,
                )
                assert subscribed.status_code == 201, subscribed.text
            built = World(net, ports, apps, token, receiver)
            _traffic(built)
            yield built
    finally:
        for app in apps.values():
            app.extensions["srcore"].db.dispose()
        for url in made:
            testdb.drop_test_database(url)


def _scrape(world: World, service: str) -> str:
    answer = requests.get(getattr(world.net, service) + METRICS_PATHS[service], timeout=10)
    assert answer.status_code == 200, answer.text
    assert answer.headers["Cache-Control"] == "no-store", answer.headers
    return answer.text


def _families(body: str) -> dict[str, str]:
    """The metric families of an exposition text, and their types."""
    found = {}
    for line in body.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            found[name] = kind
    return found


def _promtool(body: str) -> str:
    """What ``promtool check metrics`` says of *body*: nothing when it is right."""
    promtool = shutil.which("promtool")
    require_or_skip(promtool is not None, "promtool (Debian's prometheus)")
    assert promtool is not None
    checked = subprocess.run(
        [promtool, "check", "metrics"],
        input=body,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    said = (checked.stdout + checked.stderr).strip()
    return said or ("" if checked.returncode == 0 else f"exit status {checked.returncode}")


def _routes(world: World, service: str) -> set[str]:
    """The label values a route may take: the service's URL rules, and ``<unmatched>``."""
    return {rule.rule for rule in world.apps[service].url_map.iter_rules()} | {"<unmatched>"}


# -- promtool -------------------------------------------------------------------------------


def test_promtool_finds_nothing_wrong_in_any_scrape(world: World) -> None:
    for service in SERVICES:
        body = _scrape(world, service)
        assert _families(body) == FAMILIES, (service, body)
        assert _promtool(body) == "", (service, body)


def test_a_single_process_serves_the_same_families(tmp_path: Path) -> None:
    """Served by one process (``srcore serve --debug``, a server without
    ``PROMETHEUS_MULTIPROC_DIR``), the page holds the same families as under gunicorn:
    none of the ``*_created`` gauges prometheus-client adds to a process's own registry."""
    import sample_service

    config = write_config(
        tmp_path / "config.ini",
        service_id="sample",
        database_url=f"sqlite:///{tmp_path / 'sample.db'}",
        extra="metrics-path = /metrics\n",
    )
    client = sample_service.create_app(config=config).test_client()
    for method in ("GET", "HEAD", "POST", "DELETE", RAW_METHOD):
        client.open("/", method=method)
        client.open(RAW_PATH, method=method)
    body = client.get("/metrics").get_data(as_text=True)
    assert _families(body) == FAMILIES, body
    assert "_created" not in body, body
    assert _promtool(body) == "", body


# -- a Prometheus server --------------------------------------------------------------------


@contextlib.contextmanager
def _prometheus(world: World, tmp: Path) -> Iterator[str]:
    """A Prometheus server on 127.0.0.1 scraping every service each second, for the
    block's time at most :data:`PATIENCE` times three; its API's URL."""
    binary = shutil.which("prometheus")
    require_or_skip(binary is not None, "prometheus (Debian's prometheus)")
    assert binary is not None
    jobs = [
        {
            "job_name": service,
            "metrics_path": METRICS_PATHS[service],
            "static_configs": [{"targets": [f"127.0.0.1:{world.ports[service]}"]}],
        }
        for service in SERVICES
    ]
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "scrape_configs": jobs,
    }
    (tmp / "prometheus.yml").write_text(json.dumps(config), encoding="utf-8")  # JSON is YAML
    port = free_port()
    log = (tmp / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={tmp / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--storage.tsdb.retention.time=1h",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:

        def ready() -> bool:
            assert process.poll() is None, (tmp / "prometheus.log").read_text()
            with contextlib.suppress(requests.ConnectionError):
                return requests.get(url + "/-/ready", timeout=2).status_code == 200
            return False

        _wait_for(ready, "prometheus ready")
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)
        log.close()


def _api(url: str, path: str, **params: str) -> Any:
    answer = requests.get(f"{url}/api/v1/{path}", params=params, timeout=10)
    body = answer.json()
    assert answer.status_code == 200 and body["status"] == "success", body
    return body["data"]


def _query(url: str, expr: str) -> list[tuple[dict[str, str], float]]:
    data = _api(url, "query", query=expr)
    assert data["resultType"] == "vector", data
    return [(item["metric"], float(item["value"][1])) for item in data["result"]]


def test_a_prometheus_server_scrapes_every_service(world: World, tmp_path: Path) -> None:
    with _prometheus(world, tmp_path) as prom:

        def all_up() -> bool:
            targets = _api(prom, "targets")["activeTargets"]
            return sorted(t["labels"]["job"] for t in targets if t["health"] == "up") == sorted(
                SERVICES
            )

        _wait_for(all_up, "every target up")
        for target in _api(prom, "targets")["activeTargets"]:
            job = target["labels"]["job"]
            assert target["scrapeUrl"].endswith(METRICS_PATHS[job]), target

        def home_count(service: str) -> float:
            found = _query(
                prom,
                f'sum(srcore_http_requests_total{{job="{service}",route="/",method="GET"}})',
            )
            return found[0][1] if found else 0.0

        before = {service: home_count(service) for service in SERVICES}
        for service in SERVICES:
            base = getattr(world.net, service)
            for _ in range(MORE):
                requests.get(base + "/", timeout=10, allow_redirects=False)
        for service in SERVICES:
            _wait_for(
                functools.partial(lambda s: home_count(s) == before[s] + MORE, service),
                f"{service}: Prometheus sees the {MORE} requests sent",
            )

        names = _query(prom, "count by (__name__, job) ({__name__=~'.+'})")
        for service in SERVICES:
            assert {m["__name__"] for m, _ in names if m["job"] == service} == SERIES, names
        counted = _query(prom, "srcore_http_requests_total")
        for service in SERVICES:
            mine = [(m, v) for m, v in counted if m["job"] == service]
            assert mine, (service, counted)
            routes = _routes(world, service)
            for labels, value in mine:
                assert set(labels) == {
                    "__name__",
                    "job",
                    "instance",
                    "service",
                    "method",
                    "route",
                    "status",
                }, labels
                assert labels["service"] == service, labels
                assert labels["method"] in METHODS, labels
                assert labels["route"] in routes, labels
                assert labels["status"].isdigit() and len(labels["status"]) == 3, labels
                assert value >= 1, labels
            statuses = {labels["status"][0] for labels, _ in mine}
            assert {"2", "4"} <= statuses, (service, statuses)
            assert any(m["route"] == METRICS_PATHS[service] for m, _ in mine), mine
        text = json.dumps(counted)
        assert "no-such-page" not in text and RAW_METHOD not in text and "secret" not in text

        for family in ("bucket", "sum", "count"):
            found = _query(prom, f"srcore_http_request_seconds_{family}")
            assert {m["job"] for m, _ in found} == set(SERVICES), (family, found)
            for labels, value in found:
                assert value >= 0, labels
                assert labels["route"] in _routes(world, labels["job"]), labels
        # No bucket of a histogram holds more than a wider one, its +Inf bucket is its count.
        buckets: dict[tuple[tuple[str, str], ...], list[tuple[float, float]]] = {}
        for labels, value in _query(prom, "srcore_http_request_seconds_bucket"):
            key = tuple(sorted((k, v) for k, v in labels.items() if k != "le"))
            buckets.setdefault(key, []).append((float(labels["le"]), value))
        for key, points in buckets.items():
            counts = [value for _, value in sorted(points)]
            assert counts == sorted(counts), (key, points)
        mismatched = _query(
            prom,
            "srcore_http_request_seconds_count"
            ' != ignoring(le) srcore_http_request_seconds_bucket{le="+Inf"}',
        )
        assert mismatched == []
        assert _query(prom, "srcore_http_requests_total < 0") == []
        assert _query(prom, "resets(srcore_http_requests_total[1m]) > 0") == []
        # Every request counted is timed: the counter and the histogram agree per route
        # (once a scrape reads them between two requests: Prometheus's own are counted).
        _wait_for(
            lambda: (
                not _query(
                    prom,
                    "sum by (job, route) (srcore_http_requests_total)"
                    " != sum by (job, route) (srcore_http_request_seconds_count)",
                )
            ),
            "requests counted and timed alike",
        )
