"""meta's audit log as an admin far from UTC reads and filters it.

The log shows each time in UTC, and its From and Until fields name days; those are UTC
days too, whatever zone meta's host runs in. The form says so: an admin at UTC+14 who picks
their own today would otherwise miss their morning, which is the day before in UTC.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import pytest

from srcore.testing import log_in_client
from tests.test_clocks_outsider import _process_zone


def test_the_audit_logs_days_are_utc_days_and_the_form_says_so(
    app: Any, accounts: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from meta.models import AuditEntry

    from srcore.db import UserType

    admin = accounts.make("root1", user_type=UserType.admin)
    alice = accounts.make("alice")
    # 13:30 and 14:30 on 6 December at UTC+14: either side of midnight in UTC.
    late = datetime(2026, 12, 5, 23, 30, tzinfo=UTC)
    early = datetime(2026, 12, 6, 0, 30, tzinfo=UTC)
    with app.extensions["srcore"].db.transaction() as session:
        for when, text in ((late, "late on the 5th"), (early, "early on the 6th")):
            session.add(AuditEntry(created=when, user_id=alice.id, kind="login", detail=text))
    client = log_in_client(app.test_client(), admin)
    for zone in ("Pacific/Kiritimati", "America/St_Johns"):
        with _process_zone(monkeypatch, zone):
            page = client.get("/admin/audit?since=2026-12-06&until=2026-12-06")
            shown = page.get_data(as_text=True)
            assert page.status_code == 200
            assert "early on the 6th" in shown and "late on the 5th" not in shown
            assert "2026-12-06 00:30 UTC" in shown
            form = shown.split('role="search"', 1)[1].split("</form>", 1)[0]
            for field in ("since", "until"):
                label = re.search(rf'<label[^>]*for="{field}"[^>]*>(.*?)</label>', form, re.S)
                notes = re.search(rf'id="{field}-help"[^>]*>(.*?)<', form, re.S)
                said = (label.group(1) if label else "") + (notes.group(1) if notes else "")
                assert "UTC" in said, (field, form)
