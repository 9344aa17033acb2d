"""Reads and tokens for the webmail and HTTP API."""

from __future__ import annotations

import sqlite3
from typing import Any

from ..base import NotFound
from ..models import (
    FLAG_BITS,
    ApiToken,
    Message,
    MessageQuery,
    bits_to_flags,
)
from . import jsontext
from .engine import _now
from .messages import MessageStore


class WebStore(MessageStore):
    # ------------------------------------------------------------------ webmail and HTTP API (mailhouse.web)
    # The summary fields of the parse, extracted by SQLite in one small JSON array:
    # decoding whole parses (MIME tree and all) costs ~40 µs a message in Python.
    _SUMMARY_KEYS = ("subject", "from_name", "from_address", "to", "cc", "date", "preview", "has_attachments")
    _SUMMARY_SQL = (
        "SELECT id, folder_id, uid, internal_date, size, flags, keywords, modseq, queue_id, message_id, "
        "json_extract(parse, " + ", ".join(f"'$.{k}'" for k in _SUMMARY_KEYS) + "), blob_id, m.internal_tz "
        "FROM messages m"
    )

    @classmethod
    def _summary_message(cls, r: tuple[Any, ...]) -> Message:
        values = jsontext.loads(r[10]) if r[10] else []
        return Message(
            id=r[0], folder_id=r[1], uid=r[2], internal_date=r[3], size=r[4],
            flags=bits_to_flags(r[5], r[6]), modseq=r[7], queue_id=r[8], message_id=r[9],
            parse=dict(zip(cls._SUMMARY_KEYS, values, strict=False)), blob_id=r[11], internal_tz=r[12],
        )

    async def list_messages_page(
        self, folder_id: int, limit: int, offset: int, *, max_uid: int | None = None
    ) -> list[Message]:
        # Walks the (folder_id, uid) unique index backwards; OFFSET skips index
        # entries only, but still one by one: callers paging deep pass max_uid.
        bound = max_uid if max_uid is not None else 2**63 - 1
        return await self._read(
            lambda c: [
                self._summary_message(r)
                for r in c.execute(
                    self._SUMMARY_SQL + " WHERE folder_id = ? AND uid <= ? ORDER BY uid DESC LIMIT ? OFFSET ?",
                    (folder_id, bound, max(0, limit), max(0, offset)),
                )
            ]
        )

    async def folder_uids(self, folder_id: int) -> list[int]:
        return await self._read(
            lambda c: [r[0] for r in c.execute("SELECT uid FROM messages WHERE folder_id = ? ORDER BY uid", (folder_id,))]
        )

    async def folder_counts(self, account_id: int) -> dict[int, tuple[int, int]]:
        seen = FLAG_BITS["\\Seen"]

        def fn(c: sqlite3.Connection) -> dict[int, tuple[int, int]]:
            # One grouped query over the (folder_id, flags) index, no message rows read.
            rows = c.execute(
                "SELECT f.id, count(m.folder_id), coalesce(sum((m.flags & ?) = 0), 0) FROM folders f "
                "LEFT JOIN messages m ON m.folder_id = f.id WHERE f.account_id = ? GROUP BY f.id",
                (seen, account_id),
            ).fetchall()
            return {int(fid): (int(n), int(u)) for fid, n, u in rows}

        return await self._read(fn)

    async def search_messages(self, account_id: int, query: MessageQuery, limit: int) -> list[Message]:
        def like(v: str) -> str:
            return "%" + v.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"

        where = ["m.folder_id IN (SELECT id FROM folders WHERE account_id = ?)"]
        args: list[Any] = [account_id]
        if query.folder_id is not None:
            where.append("m.folder_id = ?")
            args.append(query.folder_id)
        fields = {
            "from": "(json_extract(m.parse, '$.from_address') || ' ' || json_extract(m.parse, '$.from_name'))",
            "to": "(json_extract(m.parse, '$.to') || ' ' || json_extract(m.parse, '$.cc'))",
            "subject": "json_extract(m.parse, '$.subject')",
            "preview": "json_extract(m.parse, '$.preview')",
        }
        esc = " ESCAPE '\\'"
        if query.text:
            where.append("(" + " OR ".join(f"{f} LIKE ?{esc}" for f in fields.values()) + ")")
            args += [like(query.text)] * len(fields)
        for value, key in ((query.sender, "from"), (query.recipient, "to"), (query.subject, "subject")):
            if value:
                where.append(f"{fields[key]} LIKE ?{esc}")
                args.append(like(value))
        if query.body:
            # Inline bodies (all but the largest messages) are searched in their
            # stored bytes; that finds plain words of 7bit/8bit/quoted-printable text.
            where.append(
                f"({fields['preview']} LIKE ?{esc} OR (SELECT CAST(b.data AS TEXT) FROM blobs b "
                f"WHERE b.id = m.blob_id) LIKE ?{esc})"
            )
            args += [like(query.body)] * 2
        if query.since is not None:
            where.append("m.internal_date >= ?")
            args.append(query.since)
        if query.before is not None:
            where.append("m.internal_date < ?")
            args.append(query.before)
        sql = self._SUMMARY_SQL + " WHERE " + " AND ".join(where) + " ORDER BY m.internal_date DESC, m.id DESC LIMIT ?"
        args.append(max(0, limit))
        return await self._read(lambda c: [self._summary_message(r) for r in c.execute(sql, args)])

    _TOKEN_SQL = (
        "SELECT t.id, t.account_id, t.name, t.hash, t.created, t.last_used, a.address "
        "FROM api_tokens t JOIN accounts a ON a.id = t.account_id"
    )

    async def add_api_token(self, account_id: int, name: str, token_hash: str) -> ApiToken:
        now = _now()

        def fn(c: sqlite3.Connection) -> ApiToken:
            cur = c.execute(
                "INSERT INTO api_tokens(account_id, name, hash, created) VALUES (?, ?, ?, ?)",
                (account_id, name, token_hash, now),
            )
            row = c.execute("SELECT address FROM accounts WHERE id = ?", (account_id,)).fetchone()
            if row is None:
                raise NotFound("no such account")
            return ApiToken(int(cur.lastrowid or 0), account_id, name, token_hash, now, None, row[0])

        return await self._write(fn)

    async def list_api_tokens(self, account_id: int) -> list[ApiToken]:
        return await self._read(
            lambda c: [
                ApiToken(*r) for r in c.execute(self._TOKEN_SQL + " WHERE t.account_id = ? ORDER BY t.id", (account_id,))
            ]
        )

    async def get_api_token(self, token_id: int) -> ApiToken | None:
        row = await self._read(lambda c: c.execute(self._TOKEN_SQL + " WHERE t.id = ?", (token_id,)).fetchone())
        return ApiToken(*row) if row else None

    async def delete_api_token(self, account_id: int, token_id: int) -> bool:
        return await self._write(
            lambda c: c.execute(
                "DELETE FROM api_tokens WHERE id = ? AND account_id = ?", (token_id, account_id)
            ).rowcount > 0
        )

    async def touch_api_token(self, token_id: int, when: float) -> None:
        await self._write(
            lambda c: c.execute("UPDATE api_tokens SET last_used = ? WHERE id = ?", (when, token_id)), durable=False
        )

