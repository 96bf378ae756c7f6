"""Every event arrives although the receiver, the worker and Redis fail (shortened run).

The full run is ``python bench/reliability.py`` (1,000 events, two SIGKILLs of the
worker, a Redis restart); this one emits 100 events, kills the worker once and, for
Celery, restarts Redis once. The receiver answers 500 to a random half of the requests
and the retry schedule is compressed to seconds.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from srcore.testing import require_or_skip

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import reliability as harness

pytestmark = pytest.mark.slow


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    if name == "postgresql":
        from srcore.testdb import postgres_available

        require_or_skip(postgres_available(), "PostgreSQL")
    return name


@pytest.mark.parametrize("dispatcher", ["celery", "local"])
def test_every_event_arrives_once_or_more(dispatcher: str, backend: str, tmp_path: Path) -> None:
    if dispatcher == "celery":
        require_or_skip(harness.redis_available(), "redis-server")
    outcome = harness.run_scenario(
        dispatcher,
        backend=backend,
        events=100,
        kills=1,
        redis_restarts=1 if dispatcher == "celery" else 0,
        emit_rate=50,
        timeout=90,
        directory=tmp_path,
    )
    print(outcome.report())
    assert not outcome.missing, outcome.report()
    assert outcome.stats["unverified"] == 0
    assert outcome.states == {"delivered": 100}
    assert outcome.stats["refused_500"] > 0  # the receiver did fail requests
    assert len(outcome.disruptions) == (2 if dispatcher == "celery" else 1)
