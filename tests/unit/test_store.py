"""The SQLite store: group commit, bodies inline and in files, reference counting."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from mailhouse.store.base import NotFound, StoreError
from mailhouse.store.models import (
    AttemptOutcome,
    Incoming,
    LocalTarget,
    RecipientUpdate,
    RemoteTarget,
)
from mailhouse.store.sqlite import INLINE_MAX, SQLiteStore


@pytest.fixture
async def store(tmp_path: Path) -> SQLiteStore:
    s = SQLiteStore(tmp_path / "data")
    await s.open()
    await s.add_domain("example.test")
    yield s  # type: ignore[misc]
    await s.close()


def incoming(qid: str, account_id: int, address: str, remote: list[str] | None = None) -> Incoming:
    return Incoming(
        queue_id=qid, sender="a@example.org",
        local=[LocalTarget(account_id, address, address)] if account_id else [],
        remote=[RemoteTarget(r) for r in remote or []],
        parse={"summary": {"subject": qid}}, message_id=f"{qid}@x", internal_date=1.0,
        events=[("received", {"client_ip": "127.0.0.1"})],
    )


async def test_accounts_get_special_folders(store: SQLiteStore) -> None:
    acc = await store.add_account("Bob@Example.test", "hash")
    assert acc.address == "bob@example.test"
    folders = await store.list_folders(acc.id)
    assert next(f.name for f in folders) == "INBOX"
    assert {f.special_use for f in folders} == {None, "\\Sent", "\\Drafts", "\\Trash", "\\Junk", "\\Archive"}
    assert store.find_account("BOB@example.test") == acc
    with pytest.raises(StoreError):
        await store.add_account("bob@example.test", "hash")
    with pytest.raises(StoreError):
        await store.add_account("x@unknown.test", "hash")


async def test_uidvalidity_is_never_reused_after_a_delete(store: SQLiteStore) -> None:
    """RFC 9051 §2.3.1.1: a name deleted and re-created gets a new UIDVALIDITY, even
    within the same second and when the deleted folder held the highest value."""
    acc = await store.add_account("u@example.test", "hash")
    seen: set[int] = {f.uidvalidity for f in await store.list_folders(acc.id)}
    for _ in range(3):
        f = await store.create_folder(acc.id, "Again")
        assert f.uidvalidity not in seen and f.uidvalidity > max(seen)
        seen.add(f.uidvalidity)
        await store.delete_folder(acc.id, "Again")


async def test_concurrent_deliveries_share_commits(store: SQLiteStore) -> None:
    acc = await store.add_account("bob@example.test", "h")
    blobs = []
    for i in range(200):
        b = store.new_blob()
        b.write(b"Subject: %d\r\n\r\nbody\r\n" % i)
        blobs.append(b)
    before = store.commits
    results = await asyncio.gather(
        *(store.deliver(b, incoming(f"Q{i}", acc.id, acc.address)) for i, b in enumerate(blobs))
    )
    assert sorted(r[0].uid for r in results) == list(range(1, 201))
    assert store.commits - before < 100  # group commit: far fewer commits than messages
    inbox = await store.get_folder(acc.id, "inbox")
    assert inbox is not None and inbox.uidnext == 201
    msgs = await store.list_messages(inbox.id)
    assert len(msgs) == 200
    assert await store.read_blob(msgs[7].blob_id) == b"Subject: %d\r\n\r\nbody\r\n" % int(msgs[7].queue_id[1:])  # type: ignore[index]
    events = await store.journey("Q3")
    assert [e.kind for e in events] == ["received", "delivered"]
    assert (await store.journey("<Q3@x>"))[0].queue_id == "Q3"


async def test_journey_by_message_id_reaches_every_event_of_its_queue_ids(store: SQLiteStore) -> None:
    """Only the opening events are indexed by Message-ID (migration 0009): the
    later events of the same queue id still come, and neither lookup scans."""
    acc = await store.add_account("bob@example.test", "h")
    for qid in ("J1", "J2"):
        b = store.new_blob()
        b.write(b"Subject: j\r\n\r\nbody\r\n")
        inc = incoming(qid, acc.id, acc.address)
        inc.message_id = "same@x"
        await store.deliver(b, inc)
    await store.add_event("J1", "read", {"protocol": "POP3"}, "same@x")
    await store.add_event("J2", "read", {"protocol": "POP3"})  # no Message-ID on the row
    events = await store.journey("<same@x>")
    assert sorted((e.queue_id, e.kind) for e in events) == [
        ("J1", "delivered"), ("J1", "read"), ("J1", "received"),
        ("J2", "delivered"), ("J2", "read"), ("J2", "received"),
    ]
    assert [e.kind for e in await store.journey("J2")] == ["received", "delivered", "read"]
    conn = sqlite3.connect(store.db_path)
    try:
        plan = " ".join(
            str(r[-1]) for r in conn.execute(
                "EXPLAIN QUERY PLAN SELECT queue_id FROM journey WHERE queue_id = ?1 OR queue_id IN "
                "(SELECT queue_id FROM journey WHERE message_id = ?2 AND kind IN ('received', 'dsn'))",
                ("x", "y"),
            )
        )
        indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_schema WHERE type = 'index'")}
    finally:
        conn.close()
    assert "journey_opening" in plan and "SCAN" not in plan
    assert not {"messages_message_id", "messages_queue_id", "journey_message"} & indexes


async def test_deliveries_of_one_batch_share_folder_counters(store: SQLiteStore) -> None:
    # Deliveries waiting together run as one group (_deliver_many): each folder's
    # UIDs and modseqs still advance one per message, a missing folder is INBOX.
    acc = await store.add_account("bob@example.test", "h")
    inbox = await store.get_folder(acc.id, "INBOX")
    assert inbox is not None

    def to(qid: str, folder: str) -> Incoming:
        inc = incoming(qid, acc.id, acc.address)
        inc.local = [LocalTarget(acc.id, acc.address, acc.address, folder)]
        return inc

    plan = ["INBOX", "Junk", "INBOX", "Gone", "Junk", "INBOX"]
    blobs = []
    for i in range(len(plan)):
        b = store.new_blob()
        b.write(b"Subject: %d\r\n\r\nbody\r\n" % i)
        blobs.append(b)
    before = store.commits
    results = await asyncio.gather(*(store.deliver(b, to(f"F{i}", f)) for i, (b, f) in enumerate(zip(blobs, plan, strict=True))))
    assert store.commits - before == 1
    assert [(r[0].folder, r[0].uid) for r in results] == [
        ("INBOX", 1), ("Junk", 1), ("INBOX", 2), ("INBOX", 3), ("Junk", 2), ("INBOX", 4)
    ]
    after = await store.get_folder(acc.id, "INBOX")
    assert after is not None and after.uidnext == 5 and after.highestmodseq == inbox.highestmodseq + 4
    msgs = await store.list_messages(inbox.id)
    assert [(m.uid, m.queue_id, m.modseq) for m in msgs] == [
        (1, "F0", inbox.highestmodseq + 1), (2, "F2", inbox.highestmodseq + 2),
        (3, "F3", inbox.highestmodseq + 3), (4, "F5", inbox.highestmodseq + 4),
    ]
    for m in msgs:
        n = int(str(m.queue_id)[1:])
        assert await store.read_blob(m.blob_id) == b"Subject: %d\r\n\r\nbody\r\n" % n
    assert [e.kind for e in await store.journey("F4")] == ["received", "delivered"]


async def test_a_failing_delivery_sinks_only_itself(store: SQLiteStore) -> None:
    acc = await store.add_account("bob@example.test", "h")
    blobs = []
    for i in range(5):
        b = store.new_blob()
        b.write(b"Subject: %d\r\n\r\nbody\r\n" % i)
        blobs.append(b)
    targets = [(acc.id, acc.address)] * 5
    targets[2] = (acc.id + 1000, "ghost@example.test")  # no such account: NotFound
    results = await asyncio.gather(
        *(store.deliver(b, incoming(f"S{i}", a, addr)) for i, (b, (a, addr)) in enumerate(zip(blobs, targets, strict=True))),
        return_exceptions=True,
    )
    assert isinstance(results[2], NotFound)
    ok = [r for i, r in enumerate(results) if i != 2]
    assert sorted(r[0].uid for r in ok) == [1, 2, 3, 4]  # type: ignore[index]
    assert await store.journey("S2") == []
    inbox = await store.get_folder(acc.id, "INBOX")
    assert inbox is not None and len(await store.list_messages(inbox.id)) == 4


async def test_large_body_goes_to_a_file_and_is_removed_with_its_last_user(store: SQLiteStore) -> None:
    acc = await store.add_account("bob@example.test", "h")
    b = store.new_blob()
    big = b"Subject: big\r\n\r\n" + b"x" * (INLINE_MAX + 10)
    b.write(big[:1000])
    b.write(big[1000:])
    assert b.spooled and b.path is not None and b.path.exists()
    assert bytes(b.view()[:14]) == b"Subject: big\r\n"
    (d,) = await store.deliver(b, incoming("QBIG", acc.id, acc.address, remote=["x@far.test"]))
    msg = await store.get_message((await store.get_folder(acc.id, "INBOX")).id, d.uid)  # type: ignore[union-attr]
    assert msg is not None and await store.read_blob(msg.blob_id) == big
    q = await store.list_queue()
    assert [e.id for e in q] == ["QBIG"] and q[0].size == len(big) and q[0].pending[0].address == "x@far.test"
    path = b.path
    await store.remove_account(acc.address)
    assert path.exists()  # the queue entry still holds it


async def test_a_body_file_outlives_a_relaxed_commit_that_dropped_it(store: SQLiteStore) -> None:
    """A crash may undo a commit made without fsync: the file must stay until a
    durable commit has made its row's removal permanent."""
    acc = await store.add_account("bob@example.test", "h")
    b = store.new_blob()
    b.write(b"Subject: big\r\n\r\n" + b"x" * (INLINE_MAX + 10))
    path = b.path
    assert path is not None
    await store.deliver(b, incoming("QREL", acc.id, acc.address))
    await store._write(lambda c: c.execute("DELETE FROM messages WHERE queue_id = 'QREL'"), durable=False)
    assert path.exists()
    await store._write(lambda c: c.execute("SELECT 1"))  # any durable commit
    assert not path.exists()


async def test_no_caller_is_told_done_before_the_wal_is_synced(
    store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Commits are fsync'd by the syncer after the write lock is let go: a caller
    is woken only after that fsync, and told of its failure (never a success)."""
    import os

    from mailhouse.store.sqlite import engine

    acc = await store.add_account("bob@example.test", "h")
    synced: list[int] = []
    real = os.fdatasync

    def fdatasync(fd: int) -> None:
        real(fd)
        synced.append(fd)

    monkeypatch.setattr(engine.os, "fdatasync", fdatasync)
    b = store.new_blob()
    b.write(b"Subject: one\r\n\r\nbody\r\n")
    await store.deliver(b, incoming("QS1", acc.id, acc.address))
    assert synced and os.readlink(f"/proc/self/fd/{synced[-1]}").endswith("mailhouse.db-wal")
    await store._write(lambda c: c.execute("SELECT 1"), durable=False)
    assert len(synced) == 1  # nothing durable to make so: no fsync

    def broken(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(engine.os, "fdatasync", broken)
    b = store.new_blob()
    b.write(b"Subject: two\r\n\r\nbody\r\n")
    with pytest.raises(StoreError, match="durable"):
        await store.deliver(b, incoming("QS2", acc.id, acc.address))
    monkeypatch.setattr(engine.os, "fdatasync", real)


async def test_discarded_blob_leaves_nothing(store: SQLiteStore) -> None:
    b = store.new_blob()
    b.write(b"x" * (INLINE_MAX + 1))
    path = b.path
    assert path is not None and path.exists()
    b.discard()
    assert not path.exists()


async def test_aliases(store: SQLiteStore) -> None:
    await store.add_account("bob@example.test", "h")
    await store.add_alias("@example.test", ["bob@example.test"])
    assert store.find_alias("@example.test") is not None
    with pytest.raises(StoreError):
        await store.add_alias("bob@example.test", ["x@y.test"])
    await store.remove_alias("@example.test")
    assert await store.list_aliases() == []


async def test_append_and_flags(store: SQLiteStore) -> None:
    acc = await store.add_account("bob@example.test", "h")
    d = await store.append(
        LocalTarget(acc.id, acc.address, acc.address, "Archive"), b"Subject: x\r\n\r\ny\r\n",
        flags={"\\Seen", "$Label1"}, internal_date=1234.0,
    )
    assert d.folder == "Archive" and d.uid == 1
    folder = await store.get_folder(acc.id, "Archive")
    assert folder is not None
    m = await store.get_message(folder.id, 1)
    assert m is not None and m.flags == {"\\Seen", "$Label1"} and m.internal_date == 1234.0


async def test_reopen_keeps_everything(tmp_path: Path) -> None:
    s = SQLiteStore(tmp_path / "d")
    await s.open()
    await s.add_domain("example.test")
    await s.close()
    s2 = SQLiteStore(tmp_path / "d")
    await s2.open()
    assert [d.name for d in await s2.list_domains()] == ["example.test"]
    await s2.close()


async def test_mailbox_operations(store: SQLiteStore) -> None:
    acc = await store.add_account("bob@example.test", "h")
    seen: list[object] = []
    unsubscribe = store.subscribe_changes(seen.append)
    target = LocalTarget(acc.id, acc.address, acc.address)
    for i in range(5):
        await store.append(target, b"Subject: %d\r\n\r\nx\r\n" % i)
    inbox = await store.get_folder(acc.id, "INBOX")
    assert inbox is not None
    states = await store.folder_states(inbox.id)
    assert [s.uid for s in states] == [1, 2, 3, 4, 5]
    assert len(seen) == 5

    changed, failed = await store.store_flags(inbox.id, [1, 2], "add", {"\\Deleted", "$Work"})
    assert [c.uid for c in changed] == [1, 2] and failed == []
    assert changed[0].flags == {"\\Deleted", "$Work"}
    modseq = changed[0].modseq
    _, failed = await store.store_flags(inbox.id, [1, 3], "add", {"\\Seen"}, unchanged_since=modseq - 1)
    assert failed == [1]

    archive = await store.get_folder(acc.id, "Archive")
    assert archive is not None
    pairs = await store.copy_messages(inbox.id, [3, 4], archive.id, move=True)
    assert pairs == [(3, 1), (4, 2)]
    assert await store.expunge(inbox.id, [1]) == [1]
    assert await store.expunge(inbox.id) == [2]
    assert [s.uid for s in await store.folder_states(inbox.id)] == [5]
    assert await store.vanished_since(inbox.id, modseq) == [1, 2, 3, 4]
    assert await store.mailbox_usage(acc.id) > 0

    f = await store.create_folder(acc.id, "Lists/python")
    await store.create_folder(acc.id, "Lists/python/dev")
    with pytest.raises(StoreError):
        await store.create_folder(acc.id, "Lists/python")
    await store.rename_folder(acc.id, "Lists/python", "Py")
    names = {x.name for x in await store.list_folders(acc.id)}
    assert {"Py", "Py/dev"} <= names and "Lists/python" not in names
    assert (await store.get_folder(acc.id, "Py")).id == f.id  # type: ignore[union-attr]
    await store.rename_folder(acc.id, "INBOX", "Old")
    old = await store.get_folder(acc.id, "Old")
    assert old is not None and [s.uid for s in await store.folder_states(old.id)] == [1]
    assert await store.folder_states(inbox.id) == []
    await store.delete_folder(acc.id, "Py/dev")
    with pytest.raises(StoreError):
        await store.delete_folder(acc.id, "INBOX")
    unsubscribe()


async def test_splice_in_memory_and_spooled(store: SQLiteStore) -> None:
    for size in (100, INLINE_MAX + 100):
        b = store.new_blob()
        body = b"Return-Path: <a@b>\r\nSubject: x\r\n\r\n" + b"y" * size
        b.write(body)
        b.splice(20, 20, b"Authentication-Results: mx; spf=pass\r\n")
        b.splice(0, 0, b"")
        expected = body[:20] + b"Authentication-Results: mx; spf=pass\r\n" + body[20:]
        assert b.size == len(expected) and bytes(b.view()) == expected
        b.splice(20, 20 + 38, b"")
        assert bytes(b.view()) == body
        b.discard()


async def test_a_prefetched_body_is_not_served_for_a_later_blob(store: SQLiteStore) -> None:
    # A body read ahead by due_queue but never asked for must not be handed out
    # for the next blob (whose id, since _blob_ids, is never the same anyway).
    a = store.new_blob()
    a.write(b"Subject: A\r\n\r\nfirst\r\n")
    await store.deliver(a, incoming("QA", 0, "", remote=["x@far.test"]))
    (entry,) = await store.due_queue(1e12, 10, set())
    await store.delete_queue_entry("QA")
    b = store.new_blob()
    b.write(b"Subject: B\r\n\r\nsecond\r\n")
    await store.deliver(b, incoming("QB", 0, "", remote=["y@far.test"]))
    (entry_b,) = await store.list_queue()
    assert entry_b.blob_id > entry.blob_id  # not reused
    assert await store.blob_source(entry_b.blob_id) == b"Subject: B\r\n\r\nsecond\r\n"


async def test_blob_ids_are_never_reused_after_an_expunge(store: SQLiteStore) -> None:
    """A reader that listed a message and then reads its body by blob id must not
    get the body of a message delivered after the first one was expunged."""
    acc = await store.add_account("r@example.test", "hash")
    target = LocalTarget(acc.id, acc.address, "INBOX")
    inbox = next(f for f in await store.list_folders(acc.id) if f.name == "INBOX")

    def last_blob() -> int:
        return int(store._read_inline(lambda c: c.execute("SELECT max(blob_id) FROM messages").fetchone()[0]))

    await store.append(target, b"Subject: one\r\n\r\nfirst\r\n")
    first = last_blob()
    await store.store_flags(inbox.id, [1], "add", {"\\Deleted"})
    assert await store.expunge(inbox.id) == [1]
    await store.append(target, b"Subject: two\r\n\r\nsecond\r\n")  # one at a time
    second = last_blob()
    assert second > first
    await store.store_flags(inbox.id, [2], "add", {"\\Deleted"})
    assert await store.expunge(inbox.id) == [2]
    blob = store.new_blob()
    blob.write(b"Subject: three\r\n\r\nthird\r\n")
    await store.deliver(blob, incoming("Q3", acc.id, acc.address))  # the batched path
    assert last_blob() > second


async def test_queue_shares_are_disjoint_and_cover_the_queue(store: SQLiteStore) -> None:
    """Each worker drains due_queue(part=(k, n)): every entry in exactly one share."""
    for i in range(7):
        b = store.new_blob()
        b.write(f"Subject: {i}\r\n\r\nbody\r\n".encode())
        await store.deliver(b, incoming(f"QS{i}", 0, "", remote=[f"r{i}@far.test"]))
    everything = {e.id for e in await store.due_queue(1e12, 100, set())}
    assert len(everything) == 7
    shares = [{e.id for e in await store.due_queue(1e12, 100, set(), (k, 3))} for k in range(3)]
    assert all(shares) and sum(len(s) for s in shares) == 7 and set().union(*shares) == everything
    # The limit and the exclusions apply within the share.
    assert len(await store.due_queue(1e12, 1, set(), (0, 3))) == 1
    first = sorted(shares[0])[0]
    assert first not in {e.id for e in await store.due_queue(1e12, 100, {first}, (0, 3))}
    assert await store.next_queue_time((1, 3)) is not None
    assert await store.due_queue(0.0, 100, set(), (0, 3)) == []


async def test_attempts_finished_together_keep_each_outcome(store: SQLiteStore) -> None:
    """Attempts settled in one commit (set-wise statements): each entry kept or
    removed by its own recipients, journeys in order, a vanished entry fails alone."""
    for qid, rcpts in (("FA", ["a@far.test"]), ("FB", ["b1@far.test", "b2@far.test"]),
                       ("FC", ["c@far.test"]), ("FD", ["d@far.test"])):
        b = store.new_blob()
        b.write(f"Subject: {qid}\r\n\r\nbody\r\n".encode())
        await store.deliver(b, incoming(qid, 0, "", remote=rcpts))
    entries = {e.id: e for e in await store.due_queue(1e12, 10, set())}
    await store.delete_queue_entry("FC")  # by the administrator, while "in flight"

    def outcome(qid: str, states: list[str]) -> AttemptOutcome:
        rs = entries[qid].recipients
        return AttemptOutcome(
            [RecipientUpdate(r.id, s, f"{s} reply") for r, s in zip(rs, states, strict=True)],
            next_attempt=5000.0, last_error="4.0.0 later" if "deferred" in states else None,
            events=[("attempt", {"n": qid})],
        )

    commits = store.commits
    results = await asyncio.gather(
        store.finish_attempt("FA", outcome("FA", ["delivered"]), []),
        store.finish_attempt("FB", outcome("FB", ["delivered", "deferred"]), []),
        store.finish_attempt("FD", outcome("FD", ["failed"]), []),
    )
    assert results == [True, False, True] and store.commits == commits + 1  # one group, one commit
    # A group with a vanished entry is run again job by job: only that one fails.
    b = store.new_blob()
    b.write(b"Subject: FE\r\n\r\nbody\r\n")
    await store.deliver(b, incoming("FE", 0, "", remote=["e@far.test"]))
    (fe,) = [e for e in await store.due_queue(1e12, 10, set()) if e.id == "FE"]
    entries["FE"] = fe
    again = await asyncio.gather(
        store.finish_attempt("FC", outcome("FC", ["delivered"]), []),
        store.finish_attempt("FE", outcome("FE", ["delivered"]), []),
        return_exceptions=True,
    )
    assert isinstance(again[0], NotFound) and again[1] is True
    (left,) = await store.list_queue()
    assert left.id == "FB" and left.attempts == 1 and left.next_attempt == 5000.0
    assert left.last_error == "4.0.0 later"
    assert [(r.state, r.last_reply) for r in left.recipients] == [
        ("delivered", "delivered reply"), ("deferred", "deferred reply")]
    assert [e.kind for e in await store.journey("FA")][-2:] == ["attempt", "removed"]
    assert [e.kind for e in await store.journey("FB")][-1] == "attempt"
    assert "removed" not in [e.kind for e in await store.journey("FB")]


def test_multi_row_statements_come_in_a_few_padded_sizes() -> None:
    """Padded to a power of two, so each size's text stays in sqlite3's statement
    cache; the NULL padding matches and inserts nothing."""
    import sqlite3

    from mailhouse.store.sqlite.engine import in_list, insert_rows, padded_size, values_table

    assert [padded_size(n) for n in (0, 1, 4, 5, 8, 9, 200)] == [4, 4, 4, 8, 8, 16, 256]
    assert in_list(["a", "b", "c", "d", "e"]) == ("?,?,?,?,?,?,?,?", ["a", "b", "c", "d", "e", None, None, None])
    sql, params = values_table(2, [(1, "x")])
    assert sql.count("(?,?)") == 4 and params == [1, "x"] + [None] * 6
    c = sqlite3.connect(":memory:")
    c.execute("CREATE TABLE t(a INTEGER NOT NULL, b)")
    insert_rows(c, "INSERT INTO t(a, b)", 2, [(i, str(i)) for i in range(300)])
    assert c.execute("SELECT count(*), sum(a) FROM t").fetchone() == (300, sum(range(300)))
    marks, args = in_list([5, 7])
    assert c.execute(f"SELECT count(*) FROM t WHERE a IN ({marks})", args).fetchone() == (2,)
