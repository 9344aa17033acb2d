"""DKIM signing keys per domain."""

from __future__ import annotations

import sqlite3

from .engine import Engine, _now


class KeyStore(Engine):
    # ------------------------------------------------------------------ DKIM keys (mailhouse.trust.keys)
    async def dkim_keys(self, domain: str) -> list[tuple[str, str, str, float]]:
        domain = domain.lower().rstrip(".")
        return await self._read(
            lambda c: [
                (str(s), str(a), str(k), float(t))
                for s, a, k, t in c.execute(
                    "SELECT selector, algorithm, private_key, created FROM dkim_keys "
                    "WHERE domain = ? AND active ORDER BY algorithm DESC",
                    (domain,),
                )
            ]
        )

    async def add_dkim_key(self, domain: str, selector: str, algorithm: str, private_pem: str) -> bool:
        domain = domain.lower().rstrip(".")

        def fn(c: sqlite3.Connection) -> bool:
            # OR IGNORE: the partial unique index turns a second maker's insert into a no-op.
            cur = c.execute(
                "INSERT OR IGNORE INTO dkim_keys(domain, selector, algorithm, private_key, created) "
                "VALUES (?, ?, ?, ?, ?)",
                (domain, selector, algorithm, private_pem, _now()),
            )
            return cur.rowcount > 0

        return await self._write(fn)

