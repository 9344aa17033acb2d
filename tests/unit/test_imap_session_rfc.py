"""Byte-exact transcripts of RFC conformance fixes: each test pins the whole
server reply (``S:``) to the client's bytes (``C:``) for a case a raw-socket
review found answered wrongly."""

from __future__ import annotations

from tests.unit.imap_harness import World, message, world

__all__ = ["world"]


async def test_binary_of_unknown_transfer_encoding_is_unknown_cte(world: World) -> None:
    # RFC 3516 §4.1, RFC 9051 §7.1: NO [UNKNOWN-CTE], not [EXPUNGEISSUED].
    raw = (
        b"From: a@example.org\r\nSubject: uue\r\nMIME-Version: 1.0\r\nContent-Type: text/plain\r\n"
        b"Content-Transfer-Encoding: x-uue\r\n\r\nbegin 644 x\r\n`\r\nend\r\n"
    )
    await world.deliver(raw)
    c = await world.client()
    await c.ok("s SELECT INBOX")
    out = await c.raw(b"a FETCH 1 BINARY.PEEK[1]\r\n")
    assert out == b"a NO [UNKNOWN-CTE] Unknown Content-Transfer-Encoding\r\n"
    out = await c.raw(b"b FETCH 1 BINARY.SIZE[1]\r\n")
    assert out == b"b NO [UNKNOWN-CTE] Unknown Content-Transfer-Encoding\r\n"
    # Not PEEK: \Seen was set meanwhile, and is reported.
    out = await c.raw(b"c FETCH 1 BINARY[1]\r\n")
    assert out == (
        b"* 1 FETCH (UID 1 FLAGS (\\Seen \\Recent))\r\nc NO [UNKNOWN-CTE] Unknown Content-Transfer-Encoding\r\n"
    )


async def test_invalid_modified_utf7_names_are_refused_not_aliased(world: World) -> None:
    # RFC 3501 §5.1.3, RFC 6855 §3.
    c = await world.client()
    for tag, name in [
        ("a1", '"bad&-name&"'),  # "&" not written "&-"
        ("a2", '"&Jjo"'),  # unterminated run
        ("a3", '"&AC8-slash"'),  # "/" base64-encoded
        ("a4", '"x&AGE-"'),  # "a": printable ASCII base64-encoded
        ("a5", '"&ZeVnLIqe-&ZeVnLIqe-"'),  # two adjacent runs
    ]:
        assert await c.send(f"{tag} CREATE {name}") == f"{tag} NO [CANNOT] Invalid mailbox name\r\n"
    assert await c.raw(b'a6 CREATE "caf\xc3\xa9"\r\n') == b"a6 NO [CANNOT] Invalid mailbox name\r\n"
    assert await c.send('b CREATE "x&-AGE-"') == "b OK CREATE completed\r\n"
    # The invalid spelling is no alias of the mailbox "x&AGE-" (sent as x&-AGE-).
    assert await c.send('c SELECT "x&AGE-"') == "c NO [NONEXISTENT] No such mailbox\r\n"
    assert await c.send('d STATUS "x&AGE-" (MESSAGES)') == "d NO [NONEXISTENT] No such mailbox\r\n"
    assert await c.send('e DELETE "x&AGE-"') == "e NO [NONEXISTENT] No such mailbox\r\n"
    assert await c.send('f RENAME "x&-AGE-" "y&AGE-"') == "f NO [CANNOT] Invalid mailbox name\r\n"
    assert await c.send('g RENAME "x&AGE-" "y"') == "g NO [NONEXISTENT] No such mailbox\r\n"
    assert await c.send('h APPEND "x&AGE-" {2+}\r\nhi') == "h NO [NONEXISTENT] Invalid mailbox name\r\n"
    assert await c.send('i SUBSCRIBE "&Jjo"') == "i NO [CANNOT] Invalid mailbox name\r\n"
    assert await c.send('j LIST "" "x&AGE-"') == "j OK LIST completed\r\n"
    assert await c.send('k LIST "" "x*"') == '* LIST (\\HasNoChildren) "/" x&-AGE-\r\nk OK LIST completed\r\n'
    # A valid non-ASCII name round-trips.
    assert await c.send('l CREATE "&ZeVnLIqe-"') == "l OK CREATE completed\r\n"
    assert await c.send('m LIST "" "&ZeVnLIqe-"') == (
        '* LIST (\\HasNoChildren) "/" &ZeVnLIqe-\r\nm OK LIST completed\r\n'
    )
    # After UTF8=ACCEPT, 8-bit names are UTF-8; invalid UTF-8 is refused.
    u = await world.client()
    await u.ok("n ENABLE UTF8=ACCEPT")
    assert await u.raw(b'o CREATE "caf\xc3\xa9"\r\n') == b"o OK CREATE completed\r\n"
    assert await u.raw(b'p CREATE "caf\xe9"\r\n') == b"p NO [CANNOT] Invalid mailbox name\r\n"


async def test_status_recent_counts_as_select_does(world: World) -> None:
    await world.deliver(message(1))
    c = await world.client()
    out = await c.send("a STATUS INBOX (MESSAGES RECENT UNSEEN)")
    assert out == "* STATUS INBOX (MESSAGES 1 RECENT 1 UNSEEN 1)\r\na OK STATUS completed\r\n"
    out = await c.send("b SELECT INBOX")
    assert "* 1 EXISTS\r\n* 1 RECENT\r\n" in out
    out = await c.send("c STATUS INBOX (RECENT)")
    assert out == "* STATUS INBOX (RECENT 1)\r\nc OK STATUS completed\r\n"
    other = await world.client()
    out = await other.send("d STATUS INBOX (RECENT)")
    assert out == "* STATUS INBOX (RECENT 0)\r\nd OK STATUS completed\r\n"
    await world.deliver(message(2))
    out = await other.send('e LIST "" "INBOX" RETURN (STATUS (RECENT))')
    assert out == '* LIST () "/" INBOX\r\n* STATUS INBOX (RECENT 1)\r\ne OK LIST completed\r\n'
    # RFC 9051 has no RECENT status item.
    rev2 = await world.client()
    await rev2.ok("f ENABLE IMAP4rev2")
    out = await rev2.send("g STATUS INBOX (MESSAGES RECENT)")
    assert out == "g BAD RECENT is not a status item of IMAP4rev2\r\n"
    out = await rev2.send('h LIST "" "INBOX" RETURN (STATUS (RECENT))')
    assert out == "h BAD RECENT is not a status item of IMAP4rev2\r\n"


async def test_delete_mailbox_with_inferiors(world: World) -> None:
    # RFC 9051 §6.3.4, example A82-A86.
    c = await world.client()
    await c.ok("a CREATE foo/bar")
    await world.deliver(message(1), folder="foo")
    assert await c.send("b DELETE foo") == "b OK DELETE completed\r\n"
    assert await c.send('c LIST "" "foo*"') == (
        '* LIST (\\Noselect \\HasChildren) "/" foo\r\n* LIST (\\HasNoChildren) "/" foo/bar\r\nc OK LIST completed\r\n'
    )
    assert await c.send('d LIST "" "f%"') == '* LIST (\\Noselect \\HasChildren) "/" foo\r\nd OK LIST completed\r\n'
    assert await c.send("e SELECT foo") == "e NO [NONEXISTENT] No such mailbox\r\n"
    assert await c.send("f DELETE foo") == "f NO [HASCHILDREN] Mailbox has inferior hierarchical names\r\n"
    assert await c.send("g CREATE foo") == "g OK CREATE completed\r\n"
    out = await c.send("h SELECT foo")
    assert "* 0 EXISTS\r\n" in out and out.endswith("h OK [READ-WRITE] SELECT completed\r\n")


async def test_plain_literals_carry_no_nul(world: World) -> None:
    # RFC 9051 §9: a literal is CHAR8 (no NUL); only BINARY uses literal8.
    raw = (
        b"From: a@example.org\r\nSubject: nul\r\nMIME-Version: 1.0\r\nContent-Type: application/octet-stream\r\n"
        b"Content-Transfer-Encoding: binary\r\n\r\na\x00b\r\n"
    )
    head = raw[: raw.index(b"\r\n\r\n") + 4]
    await world.deliver(raw)
    c = await world.client()
    await c.ok("s SELECT INBOX")
    out = await c.raw(b"a FETCH 1 BODY.PEEK[1]\r\n")
    assert out == b"* 1 FETCH (BODY[1] {5}\r\na\x80b\r\n)\r\na OK FETCH completed\r\n"
    out = await c.raw(b"b FETCH 1 BODY.PEEK[]\r\n")
    assert out == b"* 1 FETCH (BODY[] {%d}\r\n%sa\x80b\r\n)\r\nb OK FETCH completed\r\n" % (len(raw), head)
    out = await c.raw(b"c FETCH 1 (RFC822.TEXT RFC822)\r\n")
    assert out == (
        b"* 1 FETCH (RFC822.TEXT {5}\r\na\x80b\r\n RFC822 {%d}\r\n%sa\x80b\r\n FLAGS (\\Seen \\Recent))\r\n"
        b"c OK FETCH completed\r\n" % (len(raw), head)
    )
    out = await c.raw(b"d FETCH 1 BINARY.PEEK[1]\r\n")
    assert out == b"* 1 FETCH (BINARY[1] ~{5}\r\na\x00b\r\n)\r\nd OK FETCH completed\r\n"


async def test_implicit_seen_reports_modseq_under_condstore(world: World) -> None:
    # RFC 7162 §3.2: once CONDSTORE is on, every unsolicited FETCH has MODSEQ.
    for i in range(3):
        await world.deliver(message(i, body="hi"))
    c = await world.client()
    await c.ok("a ENABLE CONDSTORE")
    out = await c.send("b SELECT INBOX")
    assert "[HIGHESTMODSEQ 4]" in out
    out = await c.send("c FETCH 2 BODY[TEXT]")
    assert out == "* 2 FETCH (BODY[TEXT] {4}\r\nhi\r\n FLAGS (\\Seen \\Recent) MODSEQ (5))\r\nc OK FETCH completed\r\n"
    out = await c.send("d FETCH 3 BODY[HEADER.FIELDS (SUBJECT)]")
    assert out == (
        "* 3 FETCH (BODY[HEADER.FIELDS (SUBJECT)] {22}\r\nSubject: message 2\r\n\r\n"
        " FLAGS (\\Seen \\Recent) MODSEQ (6))\r\nd OK FETCH completed\r\n"
    )
    out = await c.send("e FETCH 2 BODY[TEXT]")  # already \Seen: nothing unsolicited
    assert out == "* 2 FETCH (BODY[TEXT] {4}\r\nhi\r\n)\r\ne OK FETCH completed\r\n"


async def test_status_deleted_storage(world: World) -> None:
    # QUOTA=RES-STORAGE is advertised: RFC 9208 §5.1 DELETED-STORAGE.
    sizes = [len(message(i)) for i in range(3)]
    for i in range(3):
        await world.deliver(message(i), flags=("\\Deleted",) if i != 1 else ())
    c = await world.client()
    out = await c.send("a STATUS INBOX (DELETED DELETED-STORAGE)")
    assert out == f"* STATUS INBOX (DELETED 2 DELETED-STORAGE {sizes[0] + sizes[2]})\r\na OK STATUS completed\r\n"
    out = await c.send('b LIST "" "Trash" RETURN (STATUS (DELETED-STORAGE))')
    assert out == '* LIST () "/" Trash\r\n* STATUS Trash (DELETED-STORAGE 0)\r\nb OK LIST completed\r\n'


async def test_store_on_message_expunged_elsewhere(world: World) -> None:
    # RFC 2180 §4.2.1, RFC 9051 §7.5.1: no invented flags for a vanished message.
    for i in range(2):
        await world.deliver(message(i))
    a = await world.client()
    b = await world.client()
    await a.ok("s SELECT INBOX")
    await b.ok("t SELECT INBOX")
    await b.ok("u STORE 1 +FLAGS.SILENT (\\Deleted)")
    await b.ok("v EXPUNGE")
    out = await a.send("a STORE 1 +FLAGS (\\Flagged)")
    assert out == "a OK STORE completed\r\n"
    out = await a.send("b STORE 1:2 +FLAGS (\\Answered)")
    assert out == "* 2 FETCH (FLAGS (\\Answered \\Recent))\r\nb OK STORE completed\r\n"
    out = await a.send("c NOOP")
    assert out == "* 1 EXPUNGE\r\nc OK NOOP completed\r\n"


async def test_store_unchangedsince_on_message_expunged_elsewhere(world: World) -> None:
    for i in range(2):
        await world.deliver(message(i))
    a = await world.client()
    b = await world.client()
    await a.ok("s ENABLE CONDSTORE")
    await a.ok("t SELECT INBOX")
    await b.ok("u SELECT INBOX")
    await b.ok("v STORE 1 +FLAGS.SILENT (\\Deleted)")
    await b.ok("w EXPUNGE")
    out = await a.send("a STORE 1:2 (UNCHANGEDSINCE 100) +FLAGS (\\Flagged)")
    assert out == "* 2 FETCH (FLAGS (\\Flagged \\Recent) MODSEQ (6))\r\na OK STORE completed\r\n"
    out = await a.send("b UID STORE 1 (UNCHANGEDSINCE 100) +FLAGS (\\Seen)")
    assert out == "* 1 EXPUNGE\r\nb OK STORE completed\r\n"


async def test_enable_lists_every_capability_it_turned_on(world: World) -> None:
    # RFC 5161 §3.1: QRESYNC implies CONDSTORE, which was also asked for.
    c = await world.client()
    out = await c.send("a ENABLE QRESYNC CONDSTORE FOO")
    assert out == "* ENABLED QRESYNC CONDSTORE\r\na OK ENABLE completed\r\n"
    out = await c.send("b ENABLE CONDSTORE QRESYNC")
    assert out == "* ENABLED\r\nb OK ENABLE completed\r\n"


async def test_search_charset_after_utf8_accept_is_bad(world: World) -> None:
    # RFC 6855 §3.
    await world.deliver(message(1))
    c = await world.client()
    await c.ok("a ENABLE UTF8=ACCEPT")
    await c.ok("b SELECT INBOX")
    out = await c.send("c SEARCH CHARSET UTF-8 ALL")
    assert out == "c BAD SEARCH CHARSET is not allowed after ENABLE UTF8=ACCEPT\r\n"
    assert await c.send("d SEARCH ALL") == "* SEARCH 1\r\nd OK SEARCH completed\r\n"


async def test_invalid_tag_is_answered_untagged(world: World) -> None:
    # RFC 9051 §9: "*" is no tag character; there is no tag to answer with.
    c = await world.client()
    assert await c.send("a* NOOP") == "* BAD Missing or invalid tag\r\n"
    assert await c.send("a+ NOOP") == "* BAD Missing or invalid tag\r\n"
    assert await c.send("a NOOP") == "a OK NOOP completed\r\n"
    # RFC 2971 §4: the ID list is field-value pairs.
    assert await c.send('b ID ("a" "b" "c")') == "b BAD Expected a space at )\r\n"
    assert await c.send('c ID ("a" "b" )') == "c BAD Expected an ID field name\r\n"
