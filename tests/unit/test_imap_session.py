"""Transcript tests of the IMAP session over a real SQLite store, no sockets.

Cases follow RFC 9051/3501 and the extension RFCs' own examples where they
apply to a fresh mailbox."""

from __future__ import annotations

import asyncio
import base64
import re
import zlib

from tests.unit.imap_harness import PASSWORD, World, message, world

__all__ = ["world"]


def tagged(out: str, tag: str) -> str:
    m = re.search(rf"^{re.escape(tag)} (OK|NO|BAD).*$", out, re.M)
    assert m is not None, out
    return m.group(0)


async def test_greeting_capability_login(world: World) -> None:
    c = await world.client(login=False)
    out = await c.send("a1 CAPABILITY")
    assert "IMAP4rev2" in out and "AUTH=PLAIN" in out and "a1 OK" in out
    out = await c.send("a2 LOGIN bob@example.test secret")
    assert out.startswith("a2 OK [CAPABILITY IMAP4rev1 IMAP4rev2")
    out = await c.send("a3 SELECT INBOX")
    assert "* 0 EXISTS" in out and "a3 OK [READ-WRITE]" in out, out


async def test_plaintext_refused_without_tls(world: World) -> None:
    c = await world.client(login=False, secure=False)
    out = await c.send("a1 CAPABILITY")
    assert "LOGINDISABLED" in out and "AUTH=PLAIN" not in out
    assert "a2 NO [PRIVACYREQUIRED]" in await c.send("a2 LOGIN bob@example.test secret")
    assert "a3 NO [PRIVACYREQUIRED]" in await c.send("a3 AUTHENTICATE PLAIN")


async def test_bad_credentials_and_state(world: World) -> None:
    c = await world.client(login=False)
    assert "a1 NO [AUTHENTICATIONFAILED]" in await c.send("a1 LOGIN bob@example.test wrong")
    assert "a2 BAD" in await c.send("a2 SELECT INBOX")
    assert "a3 BAD" in await c.send("a3 FETCH 1 FLAGS")
    await c.login()
    assert "a4 BAD" in await c.send("a4 LOGIN bob@example.test secret")
    assert "a5 BAD" in await c.send("a5 FETCH 1 FLAGS")


async def test_authenticate_plain_sasl_ir_and_continuation(world: World) -> None:
    token = base64.b64encode(b"\x00bob@example.test\x00" + PASSWORD.encode()).decode()
    c = await world.client(login=False)
    assert "a1 OK" in await c.send(f"a1 AUTHENTICATE PLAIN {token}")
    c = await world.client(login=False)
    out = await c.send("a1 AUTHENTICATE PLAIN")
    assert out == "+ \r\n"
    assert "a1 OK" in await c.send(token)
    c = await world.client(login=False)
    await c.send("a1 AUTHENTICATE PLAIN")
    assert "a1 BAD" in await c.send("*")
    assert "a2 NO" in await c.send("a2 AUTHENTICATE CRAM-MD5")


async def test_malformed_input_gets_bad_and_goes_on(world: World) -> None:
    c = await world.client()
    out = await c.send("a1 FETCH")
    assert tagged(out, "a1").startswith("a1 BAD")
    out = await c.send("garbage")
    assert "BAD" in out
    out = await c.send("a2 NOOP")
    assert "a2 OK" in out


async def test_literal_plus_and_sync_literal(world: World) -> None:
    c = await world.client()
    out = await c.raw(b"a1 CREATE {4+}\r\nWork\r\n")
    assert "a1 OK" in out.decode()
    out = await c.raw(b"a2 CREATE {5}\r\n")
    assert out.startswith(b"+ ")
    out = await c.raw(b"Work2\r\n")
    assert b"a2 OK" in out
    out = await c.send('a3 LIST "" "Work*"')
    assert '"/" Work\r\n' in out and '"/" Work2\r\n' in out


async def test_select_responses_rev1_and_rev2(world: World) -> None:
    for i in range(3):
        await world.deliver(message(i), flags=("\\Seen",) if i == 0 else ())
    c = await world.client()
    out = await c.ok("a1 SELECT INBOX")
    for part in ("* 3 EXISTS", "* 3 RECENT", "[UNSEEN 2]", "[UIDVALIDITY ", "[UIDNEXT 4]", "* FLAGS (", "[PERMANENTFLAGS ("):
        assert part in out, (part, out)
    c2 = await world.client()
    assert "* ENABLED IMAP4rev2" in await c2.ok("a1 ENABLE IMAP4rev2")
    out = await c2.ok("a2 SELECT INBOX")
    assert "RECENT" not in out and '* LIST () "/" INBOX' in out
    out = await c2.ok("a3 EXAMINE INBOX")
    assert "[CLOSED]" in out and "a3 OK [READ-ONLY]" in out
    assert "a4 NO [NONEXISTENT]" in await c2.send("a4 SELECT nothere")
    assert "a5 BAD" in await c2.send("a5 FETCH 1 FLAGS")  # a failed SELECT deselects


async def test_fetch_items(world: World) -> None:
    raw = (
        b"From: Alice <alice@example.org>\r\nTo: bob@example.test\r\nSubject: parts\r\n"
        b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=XX\r\n\r\n"
        b"--XX\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nfirst part\r\n"
        b"--XX\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        b"AAECAwQ=\r\n--XX--\r\n"
    )
    await world.deliver(raw)
    c = await world.client()
    await c.ok("a SELECT INBOX")
    out = await c.ok("b FETCH 1 (BODYSTRUCTURE BODY INTERNALDATE RFC822.SIZE)")
    assert '("TEXT" "PLAIN" ("CHARSET" "utf-8") NIL NIL "7BIT" 10 1' in out
    assert 'BODY ((' in out and '"MIXED")' in out
    assert re.search(r'INTERNALDATE "[ 0-9]\d-\w{3}-\d{4} \d\d:\d\d:\d\d \+0000"', out)
    out = await c.ok("c FETCH 1 (BODY.PEEK[1] BODY.PEEK[2.MIME] BODY.PEEK[HEADER.FIELDS.NOT (To From)])")
    assert "BODY[1] {10}\r\nfirst part " in out
    assert "BODY[2.MIME]" in out and "Subject: parts" in out and "From:" not in out
    assert "\\Seen" not in out
    out = (await c.raw(b"d FETCH 1 (BINARY.PEEK[2] BINARY.SIZE[2])\r\n"))
    assert b"BINARY[2] ~{5}\r\n\x00\x01\x02\x03\x04" in out and b"BINARY.SIZE[2] 5" in out
    out = await c.ok("e FETCH 1 (BODY[TEXT]<0.6>)")
    assert "BODY[TEXT]<0> {6}\r\n--XX\r\n" in out and "FLAGS (\\Seen" in out
    out = await c.ok("f FETCH 1 FLAGS")
    assert "\\Seen" in out
    assert "BODY[9] NIL" in await c.ok("g FETCH 1 BODY.PEEK[9]")
    out = await c.send("h FETCH 2 FLAGS")
    assert tagged(out, "h").startswith("h BAD")
    out = await c.ok("i UID FETCH 5:* FLAGS")  # clipped to the last UID, RFC 9051 §6.4.8
    assert "* 1 FETCH (UID 1 FLAGS" in out


async def test_store_and_expunge(world: World) -> None:
    for i in range(4):
        await world.deliver(message(i))
    c = await world.client()
    await c.ok("a SELECT INBOX")
    out = await c.ok("b STORE 2:3 +FLAGS (\\Deleted $Label)")
    assert "* 2 FETCH (FLAGS (\\Deleted $Label \\Recent))" in out
    assert "* FLAGS (" in out and "$Label" in out  # new keyword announced
    out = await c.ok("c STORE 1 FLAGS.SILENT (\\Seen)")
    assert "FETCH" not in out
    out = await c.ok("d EXPUNGE")
    assert out.count("* 2 EXPUNGE") == 2, out
    out = await c.ok("e FETCH 1:* (UID)")
    assert "* 2 FETCH (UID 4)" in out
    assert "f NO [READ-ONLY]" in await c.send("f EXAMINE INBOX") + await c.send("f STORE 1 +FLAGS (\\Seen)")


async def test_uid_expunge_uidplus_copy_move(world: World) -> None:
    for i in range(5):
        await world.deliver(message(i))
    c = await world.client()
    await c.ok("a SELECT INBOX")
    await c.ok("b STORE 1:5 +FLAGS.SILENT (\\Deleted)")
    out = await c.ok("c UID EXPUNGE 2:3")
    assert out.count("* 2 EXPUNGE") == 2
    out = await c.ok("d UID COPY 4:5 Trash")
    assert re.search(r"d OK \[COPYUID \d+ 4:5 1:2\]", out), out
    assert "e NO [TRYCREATE]" in await c.send("e COPY 1 Nowhere")
    out = await c.ok("f UID MOVE 1 Archive")
    assert re.search(r"\* OK \[COPYUID \d+ 1 1\]", out) and "* 1 EXPUNGE" in out
    out = await c.ok("g APPEND Drafts (\\Draft) {12+}\r\nSubject: x\r\n\r\n")
    assert re.search(r"g OK \[APPENDUID \d+ 1\]", out), out


async def test_multiappend_is_atomic(world: World) -> None:
    c = await world.client()
    out = await c.raw(b"a APPEND INBOX {14+}\r\nSubject: one\r\n (\\Seen) {14+}\r\nSubject: two\r\n\r\n")
    assert re.search(rb"a OK \[APPENDUID \d+ 1:2\]", out), out
    out = await c.ok("b STATUS INBOX (MESSAGES UNSEEN UIDNEXT SIZE DELETED)")
    assert "(MESSAGES 2 UNSEEN 1 UIDNEXT 3 SIZE 28 DELETED 0)" in out


async def test_search(world: World) -> None:
    await world.deliver(message(1, "apple pie", body="crust and filling"))
    await world.deliver(message(2, "banana split", body="ice cream"), flags=("\\Seen",))
    await world.deliver(message(3, "cherry", body="Caf\xe9 au lait"), flags=("\\Flagged",))
    c = await world.client()
    await c.ok("a SELECT INBOX")
    assert "* SEARCH 1 3\r\n" in await c.ok("b SEARCH UNSEEN")
    assert "* SEARCH 2\r\n" in await c.ok("c SEARCH SUBJECT BANANA")
    assert "* SEARCH 1\r\n" in await c.ok("d SEARCH BODY crust")
    assert "* SEARCH 3\r\n" in await c.ok("e SEARCH OR FLAGGED SUBJECT nothing")
    assert "* SEARCH 1 2\r\n" in await c.ok("f SEARCH NOT 3")
    assert "* SEARCH 1 2 3\r\n" in await c.ok("g SEARCH SENTON 7-Feb-1994 FROM alice")
    assert "* SEARCH\r\n" in await c.ok("h SEARCH SENTBEFORE 1-Jan-1990")
    assert "* SEARCH 3\r\n" in await c.ok("i SEARCH CHARSET UTF-8 TEXT {5+}\r\ncaf\xc3\xa9".encode("latin-1"))
    assert "j NO [BADCHARSET" in await c.send("j SEARCH CHARSET KOI8-R ALL")
    out = await c.ok("k UID SEARCH RETURN (MIN MAX COUNT ALL) ALL")
    assert '* ESEARCH (TAG "k") UID MIN 1 MAX 3 COUNT 3 ALL 1:3' in out
    out = await c.ok("l SEARCH RETURN (SAVE) UNSEEN")
    assert "ESEARCH" not in out
    assert "* 3 FETCH (UID 3)" in await c.ok("m FETCH $ (UID)")
    assert "* SEARCH 1 3\r\n" in await c.ok("n SEARCH $")
    assert "* SEARCH 2 3\r\n" in await c.ok("o SEARCH LARGER 150 UID 2:*")
    out = await c.ok("p SEARCH MODSEQ 1")
    assert "(MODSEQ " in out


async def test_search_rev2_uses_esearch(world: World) -> None:
    await world.deliver(message(1))
    c = await world.client()
    await c.ok("a ENABLE IMAP4rev2")
    await c.ok("b SELECT INBOX")
    out = await c.ok("c SEARCH ALL")
    assert '* ESEARCH (TAG "c") ALL 1' in out


async def test_sort_and_thread(world: World) -> None:
    await world.deliver(message(1, "b subject"))
    await world.deliver(message(2, "Re: a subject", extra="In-Reply-To: <m3@example.org>\r\n"))
    await world.deliver(message(3, "a subject"))
    c = await world.client()
    await c.ok("s SELECT INBOX")
    assert "* SORT 2 3 1\r\n" in await c.ok("a SORT (SUBJECT) UTF-8 ALL")
    assert "* SORT 1 2 3\r\n" in await c.ok("b SORT (REVERSE SUBJECT) UTF-8 ALL")
    out = await c.ok("c THREAD REFERENCES UTF-8 ALL")
    assert "* THREAD (1)(3 2)\r\n" in out, out
    out = await c.ok("d THREAD ORDEREDSUBJECT UTF-8 ALL")
    assert "* THREAD (1)(3 2)\r\n" in out or "* THREAD (1)(2 3)" in out, out


async def test_list_create_rename_delete(world: World) -> None:
    c = await world.client()
    await c.ok("a CREATE Projects/2024/Q1")
    out = await c.ok('b LIST "" "Projects/%"')
    assert '(\\HasChildren) "/" Projects/2024' in out
    out = await c.ok('c LIST "" "*"')
    assert '(\\HasNoChildren) "/" Projects/2024/Q1' in out and "INBOX" in out
    await c.ok("e RENAME Projects Work")
    out = await c.ok('f LIST "" "Work*"')
    assert "Work/2024/Q1" in out
    assert "g NO [ALREADYEXISTS]" in await c.send("g CREATE Work")
    await c.ok("h DELETE Work/2024/Q1")
    out = await c.ok('i LIST "" ""')
    assert '* LIST (\\Noselect) "/" ""' in out
    out = await c.ok('j LIST (SPECIAL-USE) "" "*" RETURN (STATUS (MESSAGES))')
    assert "\\Trash" in out and "* STATUS Trash (MESSAGES 0)" in out and "Work" not in out
    await c.ok("k UNSUBSCRIBE Trash")
    out = await c.ok('l LIST (SUBSCRIBED) "" "*"')
    assert "Trash" not in out and "\\Subscribed" in out
    out = await c.ok('m LSUB "" "*"')
    assert "Trash" not in out and "* LSUB () \"/\" INBOX" in out
    out = await c.ok("n NAMESPACE")
    assert '* NAMESPACE (("" "/")) NIL NIL' in out
    out = await c.ok("o CREATE Notes (USE (\\Drafts))")
    assert "p NO [USEATTR]" in await c.send("p CREATE Flagged (USE (\\Flagged))")


async def test_inbox_rename_and_case(world: World) -> None:
    await world.deliver(message(1))
    c = await world.client()
    await c.ok("a RENAME inbox Old")
    out = await c.ok("b STATUS Old (MESSAGES)")
    assert "(MESSAGES 1)" in out
    out = await c.ok("c STATUS iNbOx (MESSAGES)")
    assert "* STATUS INBOX (MESSAGES 0)" in out


async def test_utf7_and_utf8_names(world: World) -> None:
    c = await world.client()
    await c.ok("a CREATE &ZeVnLIqe-")  # 日本語 in modified UTF-7
    out = await c.ok('b LIST "" "*"')
    assert "&ZeVnLIqe-" in out
    c2 = await world.client()
    await c2.ok("a ENABLE UTF8=ACCEPT")
    out = await c2.ok('b LIST "" "*"')
    assert "日本語" in out


async def test_condstore_qresync(world: World) -> None:
    for i in range(3):
        await world.deliver(message(i))
    c = await world.client()
    out = await c.ok("a SELECT INBOX (CONDSTORE)")
    hm = int(re.search(r"HIGHESTMODSEQ (\d+)", out).group(1))  # type: ignore[union-attr]
    uidvalidity = int(re.search(r"UIDVALIDITY (\d+)", out).group(1))  # type: ignore[union-attr]
    out = await c.ok(f"b STORE 1 (UNCHANGEDSINCE {hm}) +FLAGS (\\Seen)")
    assert re.search(r"\* 1 FETCH \(FLAGS \(\\Seen \\Recent\) MODSEQ \(\d+\)\)", out), out
    out = await c.send("c STORE 1 (UNCHANGEDSINCE 1) +FLAGS (\\Flagged)")
    assert "c OK [MODIFIED 1]" in out
    out = await c.ok(f"d FETCH 1:* (FLAGS) (CHANGEDSINCE {hm})")
    assert "* 1 FETCH" in out and "* 2 FETCH" not in out and "MODSEQ" in out
    await c.ok("e STORE 3 +FLAGS.SILENT (\\Deleted)")
    await c.ok("f EXPUNGE")
    c2 = await world.client()
    assert "QRESYNC" in await c2.ok("g ENABLE QRESYNC")
    out = await c2.ok(f"h SELECT INBOX (QRESYNC ({uidvalidity} {hm} 1:3))")
    assert "* VANISHED (EARLIER) 3" in out and "* 1 FETCH (UID 1 FLAGS (\\Seen)" in out, out
    out = await c2.ok(f"i UID FETCH 1:* (FLAGS) (CHANGEDSINCE {hm} VANISHED)")
    assert "* VANISHED (EARLIER) 3" in out


async def test_other_sessions_see_changes(world: World) -> None:
    await world.deliver(message(1))
    a = await world.client()
    b = await world.client()
    await a.ok("a SELECT INBOX")
    await b.ok("b SELECT INBOX")
    await world.deliver(message(2))
    out = await a.ok("c NOOP")
    assert "* 2 EXISTS" in out
    await b.ok("d STORE 1 +FLAGS (\\Deleted)")
    await b.ok("e EXPUNGE")
    out = await a.ok("f FETCH 1 (FLAGS)")
    assert "EXPUNGE" not in out  # never during FETCH (RFC 9051 §7.5.1)
    out = await a.ok("g UID FETCH 1:* (FLAGS)")
    assert "* 1 EXPUNGE" in out


async def test_idle_gets_delivery_quickly(world: World) -> None:
    c = await world.client()
    await c.ok("a SELECT INBOX")
    assert (await c.send("b IDLE")).startswith("+ ")
    loop = asyncio.get_running_loop()
    await world.deliver(message(1))
    start = loop.time()  # the commit is done when deliver returns
    for _ in range(100):
        await asyncio.sleep(0.005)
        if b"EXISTS" in c.io.data:
            break
    assert b"* 1 EXISTS" in c.io.data
    assert loop.time() - start < 0.1
    c.io.data.clear()
    assert "b OK" in await c.send("DONE")


async def test_close_unselect(world: World) -> None:
    await world.deliver(message(1))
    await world.deliver(message(2))
    c = await world.client()
    await c.ok("a SELECT INBOX")
    await c.ok("b STORE 1 +FLAGS (\\Deleted)")
    await c.ok("c UNSELECT")
    await c.ok("d SELECT INBOX")
    out = await c.ok("e CLOSE")
    assert "EXPUNGE" not in out
    out = await c.ok("f STATUS INBOX (MESSAGES)")
    assert "(MESSAGES 1)" in out


async def test_quota_id_compress_logout(world: World) -> None:
    c = await world.client()
    out = await c.ok("a GETQUOTAROOT INBOX")
    assert "* QUOTAROOT INBOX" in out
    out = await c.ok('b ID ("name" "test")')
    assert '* ID ("name" "mailhouse"' in out
    out = await c.send("c COMPRESS DEFLATE")
    assert "c OK" in out
    deflate = zlib.compressobj(wbits=-15)
    inflate = zlib.decompressobj(wbits=-15)
    data = deflate.compress(b"d NOOP\r\n") + deflate.flush(zlib.Z_SYNC_FLUSH)
    out = inflate.decompress(await c.raw(data))
    assert b"d OK" in out
    data = deflate.compress(b"e LOGOUT\r\n") + deflate.flush(zlib.Z_SYNC_FLUSH)
    out = inflate.decompress(await c.raw(data))
    assert b"* BYE" in out and b"e OK" in out
    assert c.io.closed
