"""Webhook delivery in the test's own process: who receives which event, with no server."""

from __future__ import annotations

from typing import Any

__all__ = ["deliver_pending"]


def deliver_pending(app: Any) -> dict[int, list[str]]:
    """Run the local webhook worker in process over every pending event and return, per
    subscription id, the events it was delivered, in delivery order.

    Every receiver "answers" 204 without a request leaving the process, so a test can ask
    *who* receives an event (fan-out, audiences, filters) without running an HTTP server.
    """
    from sqlalchemy import select

    from srcore.outbound.sender import Exchange
    from srcore.webhooks.models import Delivery, OutboxRow
    from srcore.webhooks.worker import Worker

    class Accept:
        def post(self, url: str, headers: Any, body: bytes, *, deadline: float) -> Exchange:
            return Exchange(status=204, headers={})

        def close(self) -> None:
            pass

    http = Accept()
    worker = Worker(app, http=http, trusted_http=http, poll_interval=0.01)
    try:
        worker.drain()
    finally:
        worker.close()
    got: dict[int, list[str]] = {}
    with app.extensions["srcore"].db.transaction() as session:
        for sub_id, event in session.execute(
            select(Delivery.subscription_id, OutboxRow.event)
            .join(OutboxRow, Delivery.outbox_id == OutboxRow.id)
            .order_by(Delivery.id)
        ):
            got.setdefault(sub_id, []).append(event)
    return got
