"""The store methods the webmail and the API use: pages, counts, search, tokens."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mailhouse.store.models import LocalTarget, MessageQuery
from mailhouse.store.sqlite import SQLiteStore


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    s = SQLiteStore(tmp_path / "data")
    await s.open()
    await s.add_domain("example.test")
    yield s
    await s.close()


def msg(i: int, subject: str, sender: str = "carol@example.org", body: str = "hello") -> bytes:
    return (f"From: Carol {i} <{sender}>\r\nTo: bob@example.test\r\nSubject: {subject}\r\n\r\n{body}\r\n").encode()


async def test_pages_counts_search(store: SQLiteStore) -> None:
    bob = await store.add_account("bob@example.test", "h")
    other = await store.add_account("eve@example.test", "h")
    t = LocalTarget(bob.id, bob.address, bob.address)
    for i in range(30):
        await store.append(t, msg(i, f"report {i}", body=f"the secret word is w{i}xyz"), internal_date=1000.0 + i,
                           flags={"\\Seen"} if i % 3 == 0 else set())
    await store.append(LocalTarget(other.id, other.address, other.address), msg(99, "report 5"))
    inbox = await store.get_folder(bob.id, "INBOX")
    assert inbox is not None
    page = await store.list_messages_page(inbox.id, 10, 0)
    assert [m.uid for m in page] == list(range(30, 20, -1))
    assert [m.uid for m in await store.list_messages_page(inbox.id, 5, 28)] == [2, 1]
    assert [m.uid for m in await store.list_messages_page(inbox.id, 3, 1, max_uid=10)] == [9, 8, 7]
    assert await store.folder_uids(inbox.id) == list(range(1, 31))
    counts = await store.folder_counts(bob.id)
    assert counts[inbox.id] == (30, 20)
    assert all(v == (0, 0) for k, v in counts.items() if k != inbox.id)

    async def find(**kw: object) -> list[str]:
        found = await store.search_messages(bob.id, MessageQuery(**kw), 100)  # type: ignore[arg-type]
        return [m.parse["subject"] for m in found]

    assert await find(subject="report 5") == ["report 5"]  # not eve's
    assert await find(text="REPORT 1") == [f"report {i}" for i in (19, 18, 17, 16, 15, 14, 13, 12, 11, 10, 1)]
    assert await find(body="w7xyz") == ["report 7"]
    assert await find(sender="nobody") == []
    assert len(await find(sender="carol@")) == 30
    assert await find(since=1028.0) == ["report 29", "report 28"]
    assert await find(before=1002.0) == ["report 1", "report 0"]
    assert await find(subject="50%") == []  # LIKE wildcards are literal
    assert await find(folder_id=inbox.id + 1, subject="report") == []


async def test_api_tokens(store: SQLiteStore) -> None:
    bob = await store.add_account("bob@example.test", "h")
    eve = await store.add_account("eve@example.test", "h")
    tok = await store.add_api_token(bob.id, "script", "abc")
    assert tok.address == "bob@example.test"
    got = await store.get_api_token(tok.id)
    assert got is not None and got.hash == "abc" and got.account_id == bob.id and got.last_used is None
    now = time.time()
    await store.touch_api_token(tok.id, now)
    assert [t.last_used for t in await store.list_api_tokens(bob.id)] == [now]
    assert await store.list_api_tokens(eve.id) == []
    assert await store.delete_api_token(eve.id, tok.id) is False  # not hers
    assert await store.delete_api_token(bob.id, tok.id) is True
    assert await store.get_api_token(tok.id) is None
    await store.add_api_token(bob.id, "again", "def")
    await store.remove_account("bob@example.test")
    assert await store.list_api_tokens(bob.id) == []  # gone with the account


async def test_deep_pages_match_offset_pages(store: SQLiteStore, monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    from mailhouse.web import mail as web_mail

    bob = await store.add_account("bob@example.test", "h")
    t = LocalTarget(bob.id, bob.address, bob.address)
    for i in range(40):
        await store.append(t, msg(i, f"m{i}"))
    inbox = await store.get_folder(bob.id, "INBOX")
    assert inbox is not None
    # Gaps in the UIDs, as expunges leave them.
    await store.store_flags(inbox.id, [3, 4, 20], "add", {"\\Deleted"})
    await store.expunge(inbox.id)
    inbox = await store.get_folder(bob.id, "INBOX")
    assert inbox is not None
    monkeypatch.setattr(web_mail, "DEEP_OFFSET", 0)
    m = web_mail.Mail(SimpleNamespace(store=store), "http")  # type: ignore[arg-type]
    for offset in (0, 1, 10, 30, 36, 37, 50):
        want = [x.uid for x in await store.list_messages_page(inbox.id, 7, offset)]
        assert [x.uid for x in await m.page(inbox, 7, offset)] == want, offset
