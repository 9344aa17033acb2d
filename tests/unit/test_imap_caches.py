"""The shared state that makes repeated IMAP work cheap, and the fast paths:
the folder-columns cache and inline reads of the store, the folder-id hints,
the header cache, the HEADER.FIELDS regex. Each must give exactly what the
slow path gives."""

from __future__ import annotations

import random
import re

from mailhouse.imap import fetch as fx
from mailhouse.imap.headercache import HeaderCache
from mailhouse.store.sqlite import mailboxes as mb
from tests.unit.imap_harness import World, message, world

__all__ = ["world"]


def _slow_subset(block: bytes, names: tuple[str, ...]) -> bytes:
    wanted = {n.lower().encode("latin-1", "replace") for n in names}
    kept = [raw for name, raw in fx._header_fields(block) if name in wanted]
    return b"".join(k if k.endswith(b"\n") else k + b"\r\n" for k in kept) + b"\r\n"


def test_header_fields_regex_matches_the_field_splitter() -> None:
    pieces = [
        b"From", b"from", b"FROM ", b"Subject", b"Date", b"X-From", b"From-X", b"\r", b"\x0b", b"\x0c", b" ",
        b"\t", b":", b"\r\n", b"\n", b" cont", b"\tcont", b"val", b"\r\n\r\n", b"F", b"rom", b"\xf6", b"?", b"\x1c",
    ]
    name_sets = [("From",), ("from", "subject", "DATE"), ("x-from",), ("F?m",), ("Fröm",), ("Fro",)]
    rng = random.Random(4)
    for _ in range(20000):
        block = b"".join(rng.choice(pieces) for _ in range(rng.randint(0, 14)))
        for names in name_sets:
            assert fx.header_subset(block, names, exclude=False) == _slow_subset(block, names), (block, names)
    # Names the regex cannot express exactly take the splitter.
    assert fx._fields_pattern(("a b",)) is None and fx._fields_pattern(("x:y",)) is None
    block = b"From: a\r\n b\r\nTo: c\r\nfrom : d\r\n\r\n"
    assert fx.header_subset(block, ("FROM",), exclude=False) == b"From: a\r\n b\r\nfrom : d\r\n\r\n"
    assert fx.header_subset(block, ("FROM",), exclude=True) == b"To: c\r\n\r\n"


def test_header_cache_is_bounded_and_checks_the_size() -> None:
    cache = HeaderCache(max_bytes=2000)
    for uid in range(1, 20):
        cache.put((1, 7, uid), b"x" * 100, 0.0, 500)
    assert cache.bytes <= 2000 and len(cache) < 19
    assert cache.get((1, 7, 19), 500) is not None
    assert cache.get((1, 7, 1), 500) is None  # the oldest went first
    assert cache.get((1, 7, 19), 501) is None  # another size: not that message
    assert cache.get((1, 7, 19), 500) is None
    entry = cache.put((1, 7, 30), b"h" * 10, 1.0, 10)
    before = cache.bytes
    cache.subset(entry, ("FROM",), False, b"y" * 50)
    assert cache.bytes > before and entry.subsets == {(("FROM",), False): b"y" * 50}


async def test_listing_twice_reads_headers_once_and_alike(world: World) -> None:
    for i in range(3):
        await world.deliver(message(i))
    c = await world.client()
    await c.ok("a SELECT INBOX")
    cmd = "b FETCH 1:* (UID FLAGS RFC822.SIZE INTERNALDATE BODY.PEEK[HEADER.FIELDS (FROM SUBJECT)] BODY.PEEK[HEADER])"
    first = await c.ok(cmd)
    calls: list[int] = []
    real = world.store.search_rows

    async def counting(folder_id: int, uids: list[int], *, headers: bool) -> list[object]:
        calls.append(len(uids))
        return await real(folder_id, uids, headers=headers)  # type: ignore[return-value]

    world.store.search_rows = counting  # type: ignore[method-assign,assignment]
    d = await world.client()
    await d.ok("a SELECT INBOX")
    second = await d.ok(cmd)
    assert second == first.replace("(\\Recent)", "()") and calls == []  # \Recent went to the first session
    assert "Subject: message 2" in second and "BODY[HEADER] {" in second
    # A new message is read from the store, the others still come from the cache.
    await world.deliver(message(3))
    assert "* 4 EXISTS" in await d.ok("c NOOP")
    out = await d.ok("c FETCH 1:* (BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert calls == [1] and "message 3" in out
    # Without PEEK the header sections still set \Seen, reported with FLAGS.
    out = await d.ok("d FETCH 1 (BODY[HEADER.FIELDS (SUBJECT)])")
    assert re.search(r"\* 1 FETCH \(BODY\[HEADER\.FIELDS \(SUBJECT\)\] \{\d+\}\r\n.*\r\n\r\n FLAGS \(\\Seen", out, re.S)


async def test_select_from_the_columns_cache_follows_changes(world: World) -> None:
    for i in range(5):
        await world.deliver(message(i))
    a = await world.client()
    out = await a.ok("a SELECT INBOX")
    assert "* 5 EXISTS" in out
    await a.ok("b STORE 2 +FLAGS (\\Flagged $Work)")
    await a.ok("c STORE 3 +FLAGS (\\Deleted)")
    await a.ok("d EXPUNGE")
    await world.deliver(message(9))
    b = await world.client()
    out = await b.ok("a SELECT INBOX")
    assert "* 5 EXISTS" in out and "$Work" in out
    fresh = await world.store.folder_columns(a.session.view.folder_id)  # type: ignore[union-attr]
    assert fresh is not None and list(fresh.uids) == [1, 2, 4, 5, 6]
    out = await b.ok("b FETCH 1:* (UID FLAGS)")
    assert "* 2 FETCH (UID 2 FLAGS (\\Flagged $Work))" in out and "UID 3 " not in out
    assert "* 5 FETCH (UID 6 FLAGS (" in out
    # A delta too large for the loop: the whole folder is read again, alike.
    await b.ok("c STORE 1:* -FLAGS (\\Flagged $Work)")
    limit, mb.INLINE_ROWS = mb.INLINE_ROWS, 2
    try:
        c = await world.client()
        out = await c.ok("a SELECT INBOX")
        assert "* 5 EXISTS" in out
        assert "FLAGS ())" in (await c.ok("b FETCH 2 (FLAGS)"))
    finally:
        mb.INLINE_ROWS = limit


async def test_folder_hints_survive_rename_delete_and_recreate(world: World) -> None:
    c = await world.client()
    await c.ok("a CREATE Work")
    await c.ok("b APPEND Work {6+}\r\nx: y\r\n\r\n")
    assert "* 1 EXISTS" in await c.ok("c SELECT Work")
    await c.ok("d UNSELECT")
    await c.ok("e RENAME Work Old")
    assert "NONEXISTENT" in await c.send("f SELECT Work")
    assert "NO" in await c.send("g APPEND Work {6+}\r\nx: y\r\n\r\n")
    await c.ok("h CREATE Work")
    out = await c.ok("i SELECT Work")
    assert "* 0 EXISTS" in out
    out = await c.ok("j APPEND Work {6+}\r\nx: y\r\n\r\n")
    validity = re.search(r"UIDVALIDITY (\d+)", out) or re.search(r"APPENDUID (\d+)", out)
    assert validity is not None
    assert "* 1 EXISTS" in await c.ok("k SELECT Old")
    await c.ok("l DELETE Work")
    assert "NONEXISTENT" in await c.send("m SELECT Work")
    # Another account's folder never answers for this one's name.
    other = await world.client()
    await other.ok("a LOGOUT")
    carol = World(world.store, world.ctx)
    d = await carol.client(login=False)
    await d.ok("a LOGIN carol@example.test secret")
    assert "NONEXISTENT" in await d.send("b SELECT Old")


async def test_inline_reads_give_what_the_pool_gives(world: World) -> None:
    for i in range(4):
        await world.deliver(message(i, body="b" * (i * 40000)))
    acc = world.store.find_account("bob@example.test")
    assert acc is not None
    folder = await world.store.get_folder(acc.id, "INBOX")
    assert folder is not None
    small = await world.store.read_blobs([m.blob_id for m in await world.store.get_messages(folder.id, [1, 2, 3, 4])])
    limit, mb.INLINE_MESSAGES = mb.INLINE_MESSAGES, 0
    try:
        msgs = await world.store.get_messages(folder.id, [1, 2, 3, 4])
        assert await world.store.read_blobs([m.blob_id for m in msgs]) == small
        pooled_rows = await world.store.search_rows(folder.id, [1, 2, 3, 4], headers=True)
    finally:
        mb.INLINE_MESSAGES = limit
    assert [len(v) for _, v in sorted(small.items())][3] > mb.INLINE_BLOB_BYTES  # read in the pool
    assert await world.store.search_rows(folder.id, [1, 2, 3, 4], headers=True) == pooled_rows
    await world.store.expunge(folder.id)  # nothing flagged \Deleted: nothing goes
    assert await world.store.vanished_since(folder.id, 0) == []
