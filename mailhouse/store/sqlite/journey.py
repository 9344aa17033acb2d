"""The journey log: events keyed by queue id and Message-ID."""

from __future__ import annotations

import sqlite3

from ..models import (
    JourneyEvent,
)
from . import jsontext
from .engine import Engine, _now


class JourneyStore(Engine):
    async def add_event(
        self, queue_id: str, kind: str, data: dict[str, object], message_id: str | None = None
    ) -> None:
        now = _now()
        await self._write(
            lambda c: c.execute(
                "INSERT INTO journey(queue_id, message_id, time, kind, data) VALUES (?,?,?,?,?)",
                (queue_id, message_id, now, kind, jsontext.dumps(data)),
            )
        )

    async def journey(self, ident: str) -> list[JourneyEvent]:
        mid = ident.strip().removeprefix("<").removesuffix(">")

        def fn(c: sqlite3.Connection) -> list[JourneyEvent]:
            # Through the events that open a journey (the partial index
            # journey_opening, migration 0009): any later event of the same queue
            # id comes with them, whatever Message-ID it carries.
            rows = c.execute(
                "SELECT queue_id, message_id, time, kind, data FROM journey WHERE queue_id = ?1 OR queue_id IN "
                "(SELECT queue_id FROM journey WHERE message_id = ?2 AND kind IN ('received', 'dsn')) "
                "ORDER BY time, id",
                (ident, mid),
            ).fetchall()
            return [JourneyEvent(q, m, t, k, jsontext.loads(d)) for q, m, t, k, d in rows]

        return await self._read(fn)

