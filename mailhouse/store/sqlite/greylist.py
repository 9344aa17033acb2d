"""Greylisting's triplets (mailhouse.trust.limits.Greylist), kept across restarts."""

from __future__ import annotations

import sqlite3

from ..models import GreyTriplet
from .engine import Engine


class GreylistStore(Engine):
    async def greylist_triplets(self, now: float, expire: float, keep: float) -> list[GreyTriplet]:
        return await self._read(
            lambda c: [
                GreyTriplet(str(n), str(s), str(r), float(f), bool(p))
                for n, s, r, f, p in c.execute(
                    "SELECT network, sender, recipient, first, passed FROM greylist "
                    "WHERE first > CASE WHEN passed THEN ? ELSE ? END",
                    (now - keep, now - expire),
                )
            ]
        )

    async def save_greylist(
        self, triplets: list[GreyTriplet], *, forget: tuple[float, float, float] | None = None
    ) -> None:
        rows = [(t.network, t.sender, t.recipient, t.first, int(t.passed)) for t in triplets]

        def fn(c: sqlite3.Connection) -> None:
            c.executemany(
                "INSERT INTO greylist(network, sender, recipient, first, passed) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT(network, sender, recipient) DO UPDATE SET first = excluded.first, passed = excluded.passed",
                rows,
            )
            if forget is not None:
                now, expire, keep = forget
                c.execute(
                    "DELETE FROM greylist WHERE first <= CASE WHEN passed THEN ? ELSE ? END",
                    (now - keep, now - expire),
                )

        # Not worth an fsync of its own: a crash loses at most the last batch,
        # whose senders are then deferred once more (as before any of this).
        await self._write(fn, durable=False, directory=False)
