"""More transcripts: extensions and edge cases (BINARY, LIST-EXTENDED, ESORT,
SEARCHRES, QRESYNC with MOVE, limits, other sessions' expunges)."""

from __future__ import annotations

import re

from tests.unit.imap_harness import World, message, world

__all__ = ["world"]


async def test_binary_quoted_printable_and_encoded_word_search(world: World) -> None:
    raw = (
        b"From: =?utf-8?q?J=C3=BCrgen?= <j@example.org>\r\nSubject: =?utf-8?b?w6R0c2No?=\r\n"
        b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: quoted-printable\r\n\r\nGr=C3=BC=C3=9Fe, caf=C3=A9=\r\n!\r\n"
    )
    await world.deliver(raw)
    c = await world.client()
    await c.ok("a SELECT INBOX")
    out = await c.raw(b"b FETCH 1 (BINARY.PEEK[1] BINARY.SIZE[1])\r\n")
    assert "Grüße, café!".encode() in out and b"BINARY.SIZE[1] 17" in out
    assert "* SEARCH 1" in await c.ok("c SEARCH FROM jürgen")
    assert "* SEARCH 1" in await c.ok("d SEARCH SUBJECT ätsch")
    assert "* SEARCH 1" in await c.ok("e SEARCH BODY GRÜSSE")  # case-folded: ß is ss
    assert "* SEARCH 1" in await c.ok("f SEARCH BODY café")


async def test_list_extended_recursivematch_and_children(world: World) -> None:
    c = await world.client()
    await c.ok("a CREATE Foo/Bar")
    await c.ok("b SUBSCRIBE Foo/Bar")
    out = await c.ok('c LIST (SUBSCRIBED RECURSIVEMATCH) "" "%"')
    assert '"/" Foo ("CHILDINFO" ("SUBSCRIBED"))' in out and "\\Subscribed) \"/\" Foo" not in out, out
    out = await c.ok('d LIST "" "Foo" RETURN (CHILDREN SUBSCRIBED)')
    assert '(\\HasChildren) "/" Foo' in out
    out = await c.ok('e LSUB "" "%"')
    assert '* LSUB (\\Noselect) "/" Foo' in out
    # Subscriptions outlive folders and may precede them (RFC 9051 §6.3.7).
    await c.ok("f CREATE Gone")
    await c.ok("g SUBSCRIBE Gone")
    await c.ok("h DELETE Gone")
    out = await c.ok('i LIST (SUBSCRIBED) "" "G*"')
    assert '* LIST (\\NonExistent \\Subscribed) "/" Gone' in out, out
    await c.ok("j SUBSCRIBE Later")
    await c.ok("k CREATE Later")
    out = await c.ok('l LIST "" "Later" RETURN (SUBSCRIBED)')
    assert "\\Subscribed" in out
    await c.ok("m CREATE Plain")
    assert "\\Subscribed" not in await c.ok('n LIST "" "Plain" RETURN (SUBSCRIBED)')


async def test_esort_and_searchres_min(world: World) -> None:
    for i, subj in enumerate(["c", "a", "b"]):
        await world.deliver(message(i, subj))
    c = await world.client()
    await c.ok("s SELECT INBOX")
    out = await c.ok("a UID SORT RETURN (ALL COUNT) (SUBJECT) UTF-8 ALL")
    assert '* ESEARCH (TAG "a") UID COUNT 3 ALL 2,3,1' in out
    await c.ok("b SEARCH RETURN (SAVE MIN) ALL")
    assert "* 1 FETCH (UID 1)" in await c.ok("c FETCH $ UID") and "* 2 FETCH" not in await c.ok("d FETCH $ UID")


async def test_qresync_move_and_expunge_use_vanished(world: World) -> None:
    for i in range(3):
        await world.deliver(message(i))
    c = await world.client()
    await c.ok("a ENABLE QRESYNC")
    await c.ok("b SELECT INBOX")
    out = await c.ok("c UID MOVE 2 Trash")
    assert "* VANISHED 2" in out and "EXPUNGE" not in out
    await c.ok("d STORE 1 +FLAGS.SILENT (\\Deleted)")
    out = await c.ok("e EXPUNGE")
    assert "* VANISHED 1" in out and re.search(r"e OK \[HIGHESTMODSEQ \d+\]", out)
    out = await c.ok("f SELECT Trash")
    assert "* OK [CLOSED]" in out and "* 1 EXISTS" in out


async def test_fetch_of_message_expunged_elsewhere(world: World) -> None:
    for i in range(2):
        await world.deliver(message(i))
    a = await world.client()
    b = await world.client()
    await a.ok("a SELECT INBOX")
    await b.ok("b SELECT INBOX")
    await b.ok("c STORE 1 +FLAGS.SILENT (\\Deleted)")
    await b.ok("d EXPUNGE")
    out = await a.send("e FETCH 1:2 (BODY.PEEK[HEADER])")
    assert "* 2 FETCH" in out and "e NO [EXPUNGEISSUED]" in out and "EXPUNGE\r\n" not in out
    out = await a.ok("f NOOP")
    assert "* 1 EXPUNGE" in out


async def test_recent_is_claimed_by_one_session(world: World) -> None:
    a = await world.client()
    b = await world.client()
    await a.ok("a SELECT INBOX")
    await b.ok("b SELECT INBOX")
    await world.deliver(message(1))
    out_a = await a.ok("c NOOP")
    out_b = await b.ok("d NOOP")
    recent = [o for o in (out_a, out_b) if "* 1 RECENT" in o]
    assert len(recent) == 1 and "* 1 EXISTS" in out_a and "* 1 EXISTS" in out_b


async def test_limits(world: World) -> None:
    c = await world.client()
    out = await c.raw(b"a APPEND INBOX {999999999}\r\n")
    assert out.startswith(b"a NO [TOOBIG]")
    out = await c.raw(b"b NOOP " + b"x" * 70000 + b"\r\n")
    assert b"b BAD [LIMIT]" in out
    assert "c OK" in await c.send("c NOOP")
    out = await c.send("d SEARCH " + "NOT " * 100 + "ALL")
    assert "BAD" in out
    assert "a NO [TRYCREATE]" in await c.send("a APPEND Nowhere {2+}\r\nhi")


async def test_rfc9051_store_example(world: World) -> None:
    for i in range(4):
        await world.deliver(message(i), flags=("\\Seen",) if i in (1, 3) else ())
    c = await world.client()
    await c.ok("x ENABLE IMAP4rev2")
    await c.ok("y SELECT INBOX")
    out = await c.ok("A003 STORE 2:4 +FLAGS (\\Deleted)")
    assert "* 2 FETCH (FLAGS (\\Seen \\Deleted))" in out
    assert "* 3 FETCH (FLAGS (\\Deleted))" in out
    assert "* 4 FETCH (FLAGS (\\Seen \\Deleted))" in out
    out = await c.ok("A202 EXPUNGE")
    assert out.count("* 2 EXPUNGE") == 3


async def test_status_and_list_status_of_other_account_invisible(world: World) -> None:
    await world.deliver(message(1), user="carol@example.test")
    c = await world.client()
    out = await c.ok("a STATUS INBOX (MESSAGES)")
    assert "(MESSAGES 0)" in out
    out = await c.ok('b LIST "" "*" RETURN (STATUS (MESSAGES UNSEEN))')
    assert "* STATUS INBOX (MESSAGES 0 UNSEEN 0)" in out


async def test_first_read_is_a_journey_event(world: World) -> None:
    import asyncio
    import time

    from mailhouse.mime.structure import analyze
    from mailhouse.store.models import Incoming, LocalTarget

    acc = world.store.find_account("bob@example.test")
    assert acc is not None
    raw = message(1)
    blob = world.store.new_blob()
    blob.write(raw)
    incoming = Incoming(
        queue_id="Q1", sender="alice@example.org",
        local=[LocalTarget(acc.id, acc.address, acc.address)], remote=[], parse=analyze(raw),
        message_id="m1@example.org", internal_date=time.time(),
    )
    await world.store.deliver(blob, incoming)
    c = await world.client()
    await c.ok("a SELECT INBOX")
    await c.ok("b FETCH 1 BODY.PEEK[HEADER]")
    await c.ok("c FETCH 1 BODY[]")
    await c.ok("d FETCH 1 BODY[]")
    for _ in range(100):
        reads = [e for e in await world.store.journey("Q1") if e.kind == "read"]
        if reads:
            break
        await asyncio.sleep(0.01)
    assert [e.data for e in reads] == [{"account": "bob@example.test", "protocol": "IMAP"}]


async def test_imaptest_search_addresses(world: World) -> None:
    """Dovecot imaptest's search-addresses cases: addresses as parsed."""
    msgs = [
        b"From: user-from@domain.org\r\nTo: user-to@domain.org\r\nCc: user-cc@domain.org\r\nBcc: user-bcc@domain.org\r\n\r\nbody\r\n",
        b"From: RealFrom <user-from@domain.org>\r\nTo: RealTo <user-to@domain.org>\r\n\r\nbody2\r\n",
        b"From: <user-from (comment)@ (comment) domain.org>\r\nTo: <user-to@domain.org>\r\n\r\nbody3\r\n",
        b"From: user-from@domain.org (RealFrom)\r\nTo: user-to@domain.org (RealTo)\r\n\r\nbody4\r\n",
        b"From: user-from1@domain.org, user-from2@domain.org\r\nCc: user-cc@domain.org\r\n\r\nbody5\r\n",
        b"To: groupname: groupuser1@domain.org, groupuser2@domain.org;,\r\n  groupname2: groupuser3@domain.org;\r\n\r\nbody6\r\n",
    ]
    for m in msgs:
        await world.deliver(m)
    c = await world.client()
    await c.ok("a SELECT INBOX")
    assert "* SEARCH 1 2 3 4\r\n" in await c.ok("b SEARCH FROM user-from@domain.org")
    assert "* SEARCH 2 4\r\n" in await c.ok("c SEARCH FROM realfrom")
    assert "* SEARCH 1 2 3 4 5\r\n" in await c.ok("d SEARCH FROM ser-fro")
    assert "* SEARCH 5\r\n" in await c.ok("e SEARCH FROM user-from2")
    assert "* SEARCH 6\r\n" in await c.ok("f SEARCH TO groupname2")
    assert "* SEARCH 6\r\n" in await c.ok("g SEARCH TO groupuser3")
    assert "* SEARCH\r\n" in await c.ok("h SEARCH TO groupuser4")
    assert "* SEARCH 1 2 3 4 6\r\n" in await c.ok('i SEARCH HEADER TO ""')
    assert "* SEARCH 5\r\n" in await c.ok('j SEARCH NOT HEADER TO ""')


async def test_imaptest_search_sentdate_uses_the_header_zone(world: World) -> None:
    await world.deliver(b"Date: Sat, 24 Mar 2007 23:00:00 +0200\r\nSubject: a\r\n\r\nx\r\n")
    await world.deliver(b"Date: Sun, 25 Mar 2007 03:00:00 +0300\r\nSubject: b\r\n\r\nx\r\n")
    c = await world.client()
    await c.ok("a SELECT INBOX")
    assert "* SEARCH 1\r\n" in await c.ok("b SEARCH SENTON 24-Mar-2007")
    assert "* SEARCH 2\r\n" in await c.ok("c SEARCH SENTSINCE 25-Mar-2007")
    assert "* SEARCH 1\r\n" in await c.ok("d SEARCH SENTBEFORE 25-Mar-2007")


MIME_MESSAGE = (
    b"From: user@domain.org\r\nDate: Sat, 24 Mar 2007 23:00:00 +0200\r\nMime-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="foo\r\n bar"\r\n\r\nRoot MIME prologue\r\n\r\n'
    b"--foo bar\r\nContent-Type: text/x-myown; charset=us-ascii\r\n\r\nhello\r\n\r\n"
    b"--foo bar\r\nContent-Type: message/rfc822\r\n\r\nFrom: sub@domain.org\r\n"
    b"Date: Sun, 12 Aug 2012 12:34:56 +0300\r\nSubject: submsg\r\n"
    b'Content-Type: multipart/alternative; boundary="sub1"\r\n\r\nSub MIME prologue\r\n'
    b"--sub1\r\nContent-Type: text/html\r\n\r\n<p>Hello world</p>\r\n\r\n"
    b"--sub1\r\nContent-Type: text/plain\r\n\r\nHello another world\r\n\r\n--sub1--\r\n"
    b"Sub MIME epilogue\r\n\r\n--foo bar--\r\nRoot MIME epilogue\r\n\r\n"
)


async def test_imaptest_fetch_body_mime(world: World) -> None:
    """Dovecot imaptest's fetch-body-mime: section numbers into an
    encapsulated message."""
    await world.deliver(MIME_MESSAGE)
    c = await world.client()
    await c.ok("a SELECT INBOX")

    async def section(name: str) -> bytes:
        out = await c.raw(f"f FETCH 1 (BODY.PEEK[{name}])\r\n".encode())
        m = re.search(rb"\{(\d+)\}\r\n", out)
        assert m is not None, out
        return out[m.end() : m.end() + int(m.group(1))]

    assert await section("1") == b"hello\r\n"
    assert await section("1.MIME") == b"Content-Type: text/x-myown; charset=us-ascii\r\n\r\n"
    assert (await section("2")).startswith(b"From: sub@domain.org\r\n")
    assert (await section("2")).endswith(b"Sub MIME epilogue\r\n")
    assert await section("2.MIME") == b"Content-Type: message/rfc822\r\n\r\n"
    assert (await section("2.HEADER")).endswith(b'boundary="sub1"\r\n\r\n')
    assert await section("2.HEADER.FIELDS (from subject X-foo)") == (
        b"From: sub@domain.org\r\nSubject: submsg\r\n\r\n"
    )
    assert await section("2.HEADER.FIELDS.NOT (from subject X-foo)") == (
        b'Date: Sun, 12 Aug 2012 12:34:56 +0300\r\nContent-Type: multipart/alternative; boundary="sub1"\r\n\r\n'
    )
    assert (await section("2.TEXT")).startswith(b"Sub MIME prologue\r\n--sub1")
    assert await section("2.1.MIME") == b"Content-Type: text/html\r\n\r\n"
    assert await section("2.1") == b"<p>Hello world</p>\r\n"
    assert await section("2.2") == b"Hello another world\r\n"
    out = await c.ok("g FETCH 1 (BODYSTRUCTURE)")
    assert '"ALTERNATIVE"' in out and '"MESSAGE" "RFC822"' in out


async def test_header_fetch_of_a_long_header(world: World) -> None:
    pad = b"".join(b"X-Pad-%d: %s\r\n" % (i, b"x" * 60) for i in range(400))
    await world.deliver(pad + b"Subject: at the end\r\n\r\nbody\r\n")
    c = await world.client()
    await c.ok("a SELECT INBOX")
    out = await c.ok("b FETCH 1 (INTERNALDATE BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert "Subject: at the end\r\n\r\n" in out and "INTERNALDATE" in out
    out = await c.ok("c FETCH 1 (RFC822.HEADER)")
    assert out.count("X-Pad-") == 400
