"""The internal date keeps the UTC offset it was given in (APPEND date-time):
FETCH INTERNALDATE shows it as given, and SEARCH BEFORE/ON/SINCE compare its
own calendar date, "disregarding time and timezone" (RFC 9051 §6.4.4)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from mailhouse.store.models import AppendItem, LocalTarget
from mailhouse.store.sqlite import SQLiteStore
from tests.unit.imap_harness import Client, World, message, world

__all__ = ["world"]


async def _validity(world: World, folder: str) -> int:
    acc = world.store.find_account("bob@example.test")
    assert acc is not None
    f = await world.store.get_folder(acc.id, folder)
    assert f is not None
    return f.uidvalidity


async def _append(c: Client, tag: str, when: str, raw: bytes) -> str:
    return await c.send(b'%s APPEND INBOX "%s" {%d+}\r\n' % (tag.encode(), when.encode(), len(raw)) + raw + b"\r\n")


async def test_append_keeps_the_offset_for_fetch(world: World) -> None:
    c = await world.client()
    validity = await _validity(world, "INBOX")
    assert await _append(c, "a", "03-Nov-2026 23:30:00 -0500", message(1)) == (
        f"a OK [APPENDUID {validity} 1] APPEND completed\r\n"
    )
    assert await _append(c, "b", " 4-Nov-2026 01:00:00 +0530", message(2)) == (
        f"b OK [APPENDUID {validity} 2] APPEND completed\r\n"
    )
    await world.deliver(message(3))  # no date-time given: stored at +0000
    await c.ok("s SELECT INBOX")
    out = await c.send("f FETCH 1:2 INTERNALDATE")
    assert out == (
        '* 1 FETCH (INTERNALDATE " 3-Nov-2026 23:30:00 -0500")\r\n'
        '* 2 FETCH (INTERNALDATE " 4-Nov-2026 01:00:00 +0530")\r\n'
        "f OK FETCH completed\r\n"
    )
    assert (await c.send("g FETCH 3 INTERNALDATE")).endswith(' +0000")\r\ng OK FETCH completed\r\n')
    # The header path (and its cache, on the second round) and the full path agree.
    for tag in ("h1", "h2"):
        assert await c.send(f"{tag} UID FETCH 1 (INTERNALDATE BODY.PEEK[HEADER.FIELDS (SUBJECT)])") == (
            '* 1 FETCH (UID 1 INTERNALDATE " 3-Nov-2026 23:30:00 -0500" BODY[HEADER.FIELDS (SUBJECT)] {22}\r\n'
            f"Subject: message 1\r\n\r\n)\r\n{tag} OK FETCH completed\r\n"
        )
    out = await c.send("i FETCH 2 (INTERNALDATE RFC822.SIZE BODY.PEEK[TEXT])")
    assert out == (
        f'* 2 FETCH (INTERNALDATE " 4-Nov-2026 01:00:00 +0530" RFC822.SIZE {len(message(2))} '
        "BODY[TEXT] {13}\r\nhello world\r\n)\r\ni OK FETCH completed\r\n"
    )


async def test_search_dates_use_the_stated_calendar_date(world: World) -> None:
    c = await world.client()
    await c.ok(b'a APPEND INBOX "03-Nov-2026 23:30:00 -0500" {%d+}\r\n' % len(message(1)) + message(1) + b"\r\n")
    await c.ok(b'b APPEND INBOX " 4-Nov-2026 01:00:00 +0530" {%d+}\r\n' % len(message(2)) + message(2) + b"\r\n")
    # In UTC these are 4-Nov 04:30 and 3-Nov 19:30: the other way round.
    await c.ok("s SELECT INBOX")
    for tag, criteria, found in [
        ("c1", "ON 3-Nov-2026", " 1"),
        ("c2", "ON 4-Nov-2026", " 2"),
        ("c3", "SINCE 4-Nov-2026", " 2"),
        ("c4", "SINCE 3-Nov-2026", " 1 2"),
        ("c5", "BEFORE 4-Nov-2026", " 1"),
        ("c6", "BEFORE 3-Nov-2026", ""),
        ("c7", "SINCE 5-Nov-2026", ""),
        ("c8", "NOT ON 3-Nov-2026", " 2"),
        # SENTON still reads the Date: header (7-Feb-1994).
        ("c9", "SENTON 7-Feb-1994", " 1 2"),
    ]:
        assert await c.send(f"{tag} SEARCH {criteria}") == f"* SEARCH{found}\r\n{tag} OK SEARCH completed\r\n"


async def test_copy_and_move_keep_the_offset(world: World) -> None:
    c = await world.client()
    await c.ok(b'a APPEND INBOX "03-Nov-2026 23:30:00 -0500" {%d+}\r\n' % len(message(1)) + message(1) + b"\r\n")
    await c.ok("s SELECT INBOX")
    archive, trash = await _validity(world, "Archive"), await _validity(world, "Trash")
    assert await c.send("b COPY 1 Archive") == f"b OK [COPYUID {archive} 1 1] COPY completed\r\n"
    assert await c.send("c MOVE 1 Trash") == (
        f"* OK [COPYUID {trash} 1 1] Moved\r\n* 1 EXPUNGE\r\nc OK MOVE completed\r\n"
    )
    for folder in ("Archive", "Trash"):
        await c.ok(f"s SELECT {folder}")
        assert await c.send("f FETCH 1 INTERNALDATE") == (
            '* 1 FETCH (INTERNALDATE " 3-Nov-2026 23:30:00 -0500")\r\nf OK FETCH completed\r\n'
        )
        assert await c.send("g SEARCH ON 3-Nov-2026") == "* SEARCH 1\r\ng OK SEARCH completed\r\n"


async def test_store_keeps_the_offset(world: World) -> None:
    store = world.store
    acc = store.find_account("bob@example.test")
    assert acc is not None
    target = LocalTarget(acc.id, acc.address, acc.address, "INBOX")
    await store.append_many(target, [AppendItem(message(1), (), 1_793_766_600.0, -300)])
    await store.append(target, message(2), internal_date=1_793_766_600.0, internal_tz=330)
    folder = await store.get_folder(acc.id, "INBOX")
    assert folder is not None
    assert [m.internal_tz for m in await store.get_messages(folder.id, [1, 2])] == [-300, 330]
    for headers in (False, True):
        rows = await store.search_rows(folder.id, [1, 2], headers=headers)
        assert [(r.internal_date, r.internal_tz) for r in rows] == [(1_793_766_600.0, -300), (1_793_766_600.0, 330)]


async def test_migration_reads_old_rows_as_utc(tmp_path: Path) -> None:
    data = tmp_path / "data"
    store = SQLiteStore(data)
    await store.open()
    await store.add_domain("example.test")
    acc = await store.add_account("bob@example.test", "h")
    await store.append(LocalTarget(acc.id, acc.address, acc.address), message(1), internal_date=1000.0)
    await store.close()
    # Back to schema 7: no internal_tz column, the index of 0007 (and none of
    # what later migrations add that cannot be added twice).
    db = sqlite3.connect(data / "mailhouse.db")
    db.executescript(
        "ALTER TABLE folders DROP COLUMN recent_uid;"
        "DROP INDEX messages_state; ALTER TABLE messages DROP COLUMN internal_tz;"
        "CREATE INDEX messages_state ON messages(folder_id, uid, flags, keywords, modseq, size, internal_date);"
        "PRAGMA user_version = 7;"
    )
    db.close()
    store = SQLiteStore(data)
    await store.open()
    try:
        folder = await store.get_folder(acc.id, "INBOX")
        assert folder is not None
        m = await store.get_message(folder.id, 1)
        assert m is not None and m.internal_date == 1000.0 and m.internal_tz == 0
        rows = await store.search_rows(folder.id, [1], headers=False)
        assert [(r.internal_date, r.internal_tz) for r in rows] == [(1000.0, 0)]
    finally:
        await store.close()
    db = sqlite3.connect(data / "mailhouse.db")
    try:
        assert db.execute("PRAGMA user_version").fetchone()[0] >= 8  # 0008 and any later ones ran
        plan = db.execute(
            "EXPLAIN QUERY PLAN SELECT uid, internal_date, internal_tz FROM messages WHERE folder_id = 1 AND uid IN (1, 2)"
        ).fetchall()
        assert any("COVERING INDEX messages_state" in str(r) for r in plan), plan
    finally:
        db.close()
