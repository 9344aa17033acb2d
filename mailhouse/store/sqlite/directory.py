"""Domains, accounts and aliases, with the in-memory snapshot RCPT lookups read."""

from __future__ import annotations

import sqlite3
import time

from ..base import NotFound, StoreError
from ..models import (
    SPECIAL_FOLDERS,
    Account,
    Alias,
    Domain,
)
from . import jsontext
from .engine import Engine, _now


class DirectoryStore(Engine):
    SNAPSHOT_CHECK_INTERVAL = 0.1

    def _snapshot(self) -> None:
        now = time.monotonic()
        if now - self._snapshot_checked < self.SNAPSHOT_CHECK_INTERVAL:
            return
        self._snapshot_checked = now
        if self._reader is None:
            raise StoreError("store is not open")
        with self._reader_lock:
            c = self._reader
            key = c.execute("SELECT value FROM meta WHERE key = 'directory'").fetchone()[0]
            if key == self._snapshot_version:
                return
            c.execute("BEGIN")
            try:
                self._domains = {r[0] for r in c.execute("SELECT name FROM domains")}
                self._accounts = {r[1]: Account(*r) for r in c.execute(self._ACCOUNT_SQL)}
                self._aliases = {a: Alias(a, jsontext.loads(t)) for a, t in c.execute("SELECT address, targets FROM aliases")}
            finally:
                c.execute("COMMIT")
            self._snapshot_version = key

    # ------------------------------------------------------------------ domains
    async def add_domain(self, name: str, *, exist_ok: bool = False) -> Domain:
        name = name.lower().rstrip(".")

        def fn(c: sqlite3.Connection) -> Domain:
            row = c.execute("SELECT id, name, created FROM domains WHERE name = ?", (name,)).fetchone()
            if row:
                if exist_ok:
                    return Domain(*row)
                raise StoreError(f"domain {name} exists already")
            now = _now()
            cur = c.execute("INSERT INTO domains(name, created) VALUES (?, ?)", (name, now))
            return Domain(int(cur.lastrowid or 0), name, now)

        return await self._write(fn)

    async def remove_domain(self, name: str) -> None:
        name = name.lower().rstrip(".")

        def fn(c: sqlite3.Connection) -> None:
            row = c.execute("SELECT id FROM domains WHERE name = ?", (name,)).fetchone()
            if not row:
                raise NotFound(f"no domain {name}")
            n = c.execute("SELECT count(*) FROM accounts WHERE domain_id = ?", row).fetchone()[0]
            if n:
                raise StoreError(f"domain {name} still has {n} user(s); remove them first")
            c.execute("DELETE FROM aliases WHERE domain_id = ?", row)
            c.execute("DELETE FROM domains WHERE id = ?", row)

        await self._write(fn)

    async def list_domains(self) -> list[Domain]:
        return await self._read(
            lambda c: [Domain(*r) for r in c.execute("SELECT id, name, created FROM domains ORDER BY name")]
        )

    def is_local_domain(self, name: str) -> bool:
        self._snapshot()
        return name.lower().rstrip(".") in self._domains

    # ------------------------------------------------------------------ accounts
    async def add_account(self, address: str, password_hash: str) -> Account:
        address = address.lower()
        local, _, domain = address.rpartition("@")
        if not local or not domain:
            raise StoreError(f"{address!r} is not an address like user@example.org")

        def fn(c: sqlite3.Connection) -> Account:
            d = c.execute("SELECT id FROM domains WHERE name = ?", (domain,)).fetchone()
            if not d:
                raise StoreError(f"domain {domain} does not exist; add it with: mailhouse domain add {domain}")
            if c.execute("SELECT 1 FROM accounts WHERE address = ?", (address,)).fetchone():
                raise StoreError(f"user {address} exists already")
            if c.execute("SELECT 1 FROM aliases WHERE address = ?", (address,)).fetchone():
                raise StoreError(f"{address} is an alias; remove the alias first")
            now = _now()
            cur = c.execute(
                "INSERT INTO accounts(address, domain_id, password_hash, created) VALUES (?, ?, ?, ?)",
                (address, d[0], password_hash, now),
            )
            aid = int(cur.lastrowid or 0)
            uidvalidity = int(now) & 0xFFFFFFFF or 1
            c.executemany(
                "INSERT INTO folders(account_id, name, special_use, uidvalidity) VALUES (?, ?, ?, ?)",
                [(aid, n, su, uidvalidity) for n, su in SPECIAL_FOLDERS],
            )
            return Account(aid, address, domain, password_hash, now)

        return await self._write(fn)

    async def remove_account(self, address: str) -> None:
        address = address.lower()

        def fn(c: sqlite3.Connection) -> None:
            if c.execute("DELETE FROM accounts WHERE address = ?", (address,)).rowcount == 0:
                raise NotFound(f"no user {address}")

        await self._write(fn)

    async def set_password(self, address: str, password_hash: str) -> None:
        address = address.lower()

        def fn(c: sqlite3.Connection) -> None:
            cur = c.execute("UPDATE accounts SET password_hash = ? WHERE address = ?", (password_hash, address))
            if cur.rowcount == 0:
                raise NotFound(f"no user {address}")

        await self._write(fn)

    _ACCOUNT_SQL = (
        "SELECT a.id, a.address, d.name, a.password_hash, a.created, a.quota "
        "FROM accounts a JOIN domains d ON d.id = a.domain_id"
    )

    async def list_accounts(self) -> list[Account]:
        return await self._read(
            lambda c: [Account(*r) for r in c.execute(self._ACCOUNT_SQL + " ORDER BY d.name, a.address")]
        )

    def find_account(self, address: str) -> Account | None:
        self._snapshot()
        return self._accounts.get(address.lower())

    # ------------------------------------------------------------------ aliases
    async def add_alias(self, address: str, targets: list[str]) -> Alias:
        address = address.lower()
        domain = address.rpartition("@")[2]
        if "@" not in address or not domain:
            raise StoreError(f"{address!r} is not an address like user@example.org or @example.org")
        if not targets:
            raise StoreError("an alias needs at least one target")

        def fn(c: sqlite3.Connection) -> Alias:
            d = c.execute("SELECT id FROM domains WHERE name = ?", (domain,)).fetchone()
            if not d:
                raise StoreError(f"domain {domain} does not exist; add it with: mailhouse domain add {domain}")
            if c.execute("SELECT 1 FROM accounts WHERE address = ?", (address,)).fetchone():
                raise StoreError(f"{address} is a user; an alias cannot shadow it")
            if c.execute("SELECT 1 FROM aliases WHERE address = ?", (address,)).fetchone():
                raise StoreError(f"alias {address} exists already; remove it first")
            c.execute(
                "INSERT INTO aliases(address, domain_id, targets, created) VALUES (?, ?, ?, ?)",
                (address, d[0], jsontext.dumps(targets), _now()),
            )
            return Alias(address, list(targets))

        return await self._write(fn)

    async def remove_alias(self, address: str) -> None:
        address = address.lower()

        def fn(c: sqlite3.Connection) -> None:
            if c.execute("DELETE FROM aliases WHERE address = ?", (address,)).rowcount == 0:
                raise NotFound(f"no alias {address}")

        await self._write(fn)

    async def list_aliases(self) -> list[Alias]:
        return await self._read(
            lambda c: [
                Alias(a, jsontext.loads(t)) for a, t in c.execute("SELECT address, targets FROM aliases ORDER BY address")
            ]
        )

    def find_alias(self, address: str) -> Alias | None:
        self._snapshot()
        return self._aliases.get(address.lower())

