"""IMAP response writer: exact octets, RFC examples, structures from analyze()."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailhouse.imap import writer as w
from mailhouse.imap.parser import CommandParser, Fetch
from mailhouse.imap.sequence import SequenceSet
from mailhouse.mime.structure import analyze

PDT = dt.timezone(dt.timedelta(hours=-7))


# --- strings: quoted or literal -------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "utf8", "expected"),
    [
        ("hello world", False, b'"hello world"'),
        ("", False, b'""'),
        ("tab\there", False, b'"tab\there"'),
        ('say "hi"', False, b'{8}\r\nsay "hi"'),
        ("back\\slash", False, b"{10}\r\nback\\slash"),
        ("two\r\nlines", False, b"{10}\r\ntwo\r\nlines"),
        ("bare\nlf", False, b"{7}\r\nbare\nlf"),
        ("nul\x00", False, b"{4}\r\nnul\x80"),  # no NUL in a literal (RFC 9051 §9)
        ("bell\x07", False, b"{5}\r\nbell\x07"),
        ("café", False, b"{5}\r\ncaf\xc3\xa9"),
        ("café", True, b'"caf\xc3\xa9"'),
        (b"caf\xe9", True, b"{4}\r\ncaf\xe9"),  # not UTF-8: never quoted
        ('café "x"', True, b'{9}\r\ncaf\xc3\xa9 "x"'),
        (b"raw bytes", False, b'"raw bytes"'),
    ],
)
def test_string_quoting(value: str | bytes, utf8: bool, expected: bytes) -> None:
    assert w.string(value, utf8=utf8) == expected


def test_encode_values() -> None:
    value: w.Value = [
        None,
        0,
        42,
        "str",
        b"bytes",
        w.Atom("\\Seen"),
        w.Raw(b"(raw)"),
        w.IMAPLiteral(b"lit"),
        w.IMAPLiteral(b"a\x00b", binary=True),
        [1, [2, "x"], []],
    ]
    assert w.encode(value) == (
        b'(NIL 0 42 "str" "bytes" \\Seen (raw) {3}\r\nlit ~{3}\r\na\x00b (1 (2 "x") ()))'
    )
    assert w.binary_literal(b"abc") == w.IMAPLiteral(b"abc")
    assert w.binary_literal(b"a\x00c") == w.IMAPLiteral(b"a\x00c", binary=True)


@given(st.one_of(st.text(max_size=50), st.binary(max_size=50)), st.booleans())
def test_strings_read_back(value: str | bytes, utf8: bool) -> None:
    # Whatever the choice, the parser reads back exactly the octets (but NUL,
    # which a literal cannot carry: it comes back as 0x80).
    raw = value.encode("utf-8", "surrogateescape") if isinstance(value, str) else value
    raw = raw.replace(b"\0", b"\x80")
    wire = w.string(value, utf8=utf8)
    p = CommandParser()
    p.feed(b"a LOGIN " + wire + b" x\r\n")
    cmd = next(e for e in iter(p.next, None) if not hasattr(e, "size"))
    assert getattr(cmd, "username", None) == raw


# --- status responses ----------------------------------------------------------------------------


def test_tagged_and_untagged_status() -> None:
    assert w.ok("a1", "LOGIN completed") == b"a1 OK LOGIN completed\r\n"
    assert w.tagged("A003", "OK", "APPEND completed", w.Code.appenduid(38505, [3955])) == (
        b"A003 OK [APPENDUID 38505 3955] APPEND completed\r\n"
    )
    assert w.ok("A004", "Done", w.Code.copyuid(38505, [304, 319, 320], [3956, 3957, 3958])) == (
        b"A004 OK [COPYUID 38505 304,319:320 3956:3958] Done\r\n"
    )
    # COPYUID keeps the pairing order, it never sorts.
    assert w.Code.copyuid(1, [5, 3, 4], [10, 11, 12]) == "COPYUID 1 5,3:4 10:12"
    assert w.Code.appenduid(1, [7, 8, 9, 11]) == "APPENDUID 1 7:9,11"
    assert w.no("a", "Mailbox doesn't exist", w.Code.TRYCREATE) == (
        b"a NO [TRYCREATE] Mailbox doesn't exist\r\n"
    )
    assert w.no("a", "x", w.Code.modified([7, 9])) == b"a NO [MODIFIED 7,9] x\r\n"
    assert w.ok("a", "x", w.Code.modified("1:3")) == b"a OK [MODIFIED 1:3] x\r\n"
    assert (
        w.ok("a", "x", w.Code.modified(SequenceSet.parse("2,4:5")))
        == b"a OK [MODIFIED 2,4:5] x\r\n"
    )
    assert w.ok("a", "x", w.Code.highestmodseq(715194045007)) == (
        b"a OK [HIGHESTMODSEQ 715194045007] x\r\n"
    )
    assert w.no("a", "Authentication failed", w.Code.AUTHENTICATIONFAILED).startswith(
        b"a NO [AUTHENTICATIONFAILED] "
    )
    for code in (
        w.Code.PRIVACYREQUIRED,
        w.Code.CANNOT,
        w.Code.NONEXISTENT,
        w.Code.ALREADYEXISTS,
        w.Code.OVERQUOTA,
        w.Code.TOOBIG,
        w.Code.CLOSED,
        w.Code.UNAVAILABLE,
    ):
        assert w.no("t", "nope", code) == b"t NO [" + code.encode() + b"] nope\r\n"
    assert w.bad(None, "Command line too long") == b"* BAD Command line too long\r\n"
    assert w.bad("x") == b"x BAD invalid command\r\n"
    assert w.untagged_status("OK", "UIDs valid", w.Code.uidvalidity(3857529045)) == (
        b"* OK [UIDVALIDITY 3857529045] UIDs valid\r\n"
    )
    assert w.untagged_status("OK", "", w.Code.CLOSED) == b"* OK [CLOSED]\r\n"
    assert w.untagged_status(
        "OK", "Limited", w.Code.permanentflags(["\\Deleted", "\\Seen", "\\*"])
    ) == (b"* OK [PERMANENTFLAGS (\\Deleted \\Seen \\*)] Limited\r\n")
    assert w.untagged_status("NO", "x", w.Code.badcharset(["UTF-8", "US-ASCII"])) == (
        b'* NO [BADCHARSET ("UTF-8" "US-ASCII")] x\r\n'
    )
    assert w.untagged_status("BYE", "Logging out") == b"* BYE Logging out\r\n"
    assert w.untagged_status("PREAUTH", "hi", w.Code.capability(["IMAP4rev2"])) == (
        b"* PREAUTH [CAPABILITY IMAP4rev2] hi\r\n"
    )


def test_text_cannot_inject_lines() -> None:
    assert w.ok("a", "evil\r\n* BYE") == b"a OK evil * BYE\r\n"
    assert w.continuation("x\ny") == b"+ x y\r\n"


def test_continuation() -> None:
    assert w.continuation() == b"+ Ready\r\n"
    assert w.continuation(b"") == b"+ \r\n"
    assert w.continuation(
        b"YGgGCSqGSIb3EgECAgIBAAD/////6jcyG4GE3KkTzBeBiVHeceP2CWY0SR0fAQAgAAQEBAQ="
    ) == (b"+ YGgGCSqGSIb3EgECAgIBAAD/////6jcyG4GE3KkTzBeBiVHeceP2CWY0SR0fAQAgAAQEBAQ=\r\n")


# --- untagged data -------------------------------------------------------------------------------


def test_mailbox_data() -> None:
    assert w.exists(23) == b"* 23 EXISTS\r\n"
    assert w.recent(5) == b"* 5 RECENT\r\n"
    assert w.expunge(3) == b"* 3 EXPUNGE\r\n"
    assert w.flags(["\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft"]) == (
        b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)\r\n"
    )
    assert w.capability(["IMAP4rev2", "STARTTLS", "AUTH=GSSAPI", "LOGINDISABLED"]) == (
        b"* CAPABILITY IMAP4rev2 STARTTLS AUTH=GSSAPI LOGINDISABLED\r\n"
    )
    assert w.enabled(["CONDSTORE", "QRESYNC"]) == b"* ENABLED CONDSTORE QRESYNC\r\n"
    assert w.enabled([]) == b"* ENABLED\r\n"


def test_list_responses() -> None:
    assert (
        w.list_response(["\\HasNoChildren"], "/", "INBOX")
        == b'* LIST (\\HasNoChildren) "/" INBOX\r\n'
    )
    assert w.list_response(["\\Noselect"], "/", "") == b'* LIST (\\Noselect) "/" ""\r\n'
    assert w.list_response([], None, "foo") == b"* LIST () NIL foo\r\n"
    assert w.list_response([], "\\", "a\\b") == b'* LIST () "\\\\" {3}\r\na\\b\r\n'
    assert w.list_response([], ".", "Sent Items") == b'* LIST () "." "Sent Items"\r\n'
    assert w.list_response([], "/", "nil") == b'* LIST () "/" "nil"\r\n'
    assert w.list_response([], "/", "50%") == b'* LIST () "/" "50%"\r\n'
    # rev1: modified UTF-7 (RFC 3501 §5.1.3 example); rev2: UTF-8 as is.
    assert w.list_response([], "/", "~peter/mail/台北/日本語") == (
        b'* LIST () "/" ~peter/mail/&U,BTFw-/&ZeVnLIqe-\r\n'
    )
    assert w.list_response([], "/", "台北", utf8=True) == '* LIST () "/" "台北"\r\n'.encode()
    assert w.list_response([], "/", b"Entw&APw-rfe") == b'* LIST () "/" Entw&APw-rfe\r\n'
    # RFC 5258 §5 example 6: CHILDINFO extended data.
    assert (
        w.list_response(
            ["\\Subscribed", "\\NonExistent"], "/", "Foo", extended={"CHILDINFO": ["SUBSCRIBED"]}
        )
        == b'* LIST (\\Subscribed \\NonExistent) "/" Foo ("CHILDINFO" ("SUBSCRIBED"))\r\n'
    )
    assert (
        w.lsub_response([], ".", "#news.comp.mail.misc")
        == b'* LSUB () "." #news.comp.mail.misc\r\n'
    )


def test_status_search_esearch_vanished() -> None:
    assert w.status("blurdybloop", {"MESSAGES": 231, "UIDNEXT": 44292}) == (
        b"* STATUS blurdybloop (MESSAGES 231 UIDNEXT 44292)\r\n"
    )
    assert w.status("Entwürfe", [("UNSEEN", 0)]) == b"* STATUS Entw&APw-rfe (UNSEEN 0)\r\n"
    assert w.search([2, 3, 6]) == b"* SEARCH 2 3 6\r\n"
    assert w.search([]) == b"* SEARCH\r\n"
    assert w.search([2, 5, 6, 7, 11, 12, 18, 19, 20, 23], modseq=917162500) == (
        b"* SEARCH 2 5 6 7 11 12 18 19 20 23 (MODSEQ 917162500)\r\n"
    )
    assert w.sort([5, 3, 4, 1, 2]) == b"* SORT 5 3 4 1 2\r\n"
    # RFC 4731 §3.1 examples.
    assert w.esearch("A282", min_value=2, count=3) == b'* ESEARCH (TAG "A282") MIN 2 COUNT 3\r\n'
    assert w.esearch("A283", all_set=[2, 10, 11]) == b'* ESEARCH (TAG "A283") ALL 2,10:11\r\n'
    assert w.esearch("A284", min_value=4) == b'* ESEARCH (TAG "A284") MIN 4\r\n'
    assert w.esearch("A285", uid=True, min_value=7, max_value=3800) == (
        b'* ESEARCH (TAG "A285") UID MIN 7 MAX 3800\r\n'
    )
    assert w.esearch("A286", count=15) == b'* ESEARCH (TAG "A286") COUNT 15\r\n'
    assert w.esearch("A287", all_set=[]) == b'* ESEARCH (TAG "A287")\r\n'
    assert (
        w.esearch("a", uid=True, all_set=[1, 2, 3], modseq=5)
        == b'* ESEARCH (TAG "a") UID ALL 1:3 MODSEQ 5\r\n'
    )
    # RFC 7162 §3.2.10
    assert w.vanished([41, *range(43, 117)], earlier=True) == b"* VANISHED (EARLIER) 41,43:116\r\n"
    assert w.vanished("405,407,410,425") == b"* VANISHED 405,407,410,425\r\n"


def test_id_quota_namespace() -> None:
    assert w.id_response(
        {"name": "Cyrus", "version": "1.5", "os": "sunos", "os-version": "5.5"}
    ) == (b'* ID ("name" "Cyrus" "version" "1.5" "os" "sunos" "os-version" "5.5")\r\n')
    assert w.id_response(None) == b"* ID NIL\r\n"
    assert w.id_response({"support-url": None}) == b'* ID ("support-url" NIL)\r\n'
    assert w.quota("", [("STORAGE", 10, 512)]) == b'* QUOTA "" (STORAGE 10 512)\r\n'
    assert w.quota("#user/alice", [("STORAGE", 54, 111), ("MESSAGE", 42, 1000)]) == (
        b'* QUOTA "#user/alice" (STORAGE 54 111 MESSAGE 42 1000)\r\n'
    )
    assert w.quotaroot("INBOX", [""]) == b'* QUOTAROOT INBOX ""\r\n'
    assert w.quotaroot("comp.mail.mime", []) == b"* QUOTAROOT comp.mail.mime\r\n"
    assert w.namespace([("", "/")], None, None) == b'* NAMESPACE (("" "/")) NIL NIL\r\n'
    assert w.namespace([("", "/")], [("~", "/")], [("#shared/", "/"), ("#public/", "/")]) == (
        b'* NAMESPACE (("" "/")) (("~" "/")) (("#shared/" "/")("#public/" "/"))\r\n'
    )


def test_thread() -> None:
    n = w.ThreadNode
    # RFC 5256 §4 example.
    threads = [
        n(2),
        n(3, [n(6, [n(4, [n(23)]), n(44, [n(7, [n(96)])])])]),
    ]
    assert w.thread(threads) == b"* THREAD (2)(3 6 (4 23)(44 7 96))\r\n"
    assert w.thread([n(None, [n(3), n(5)])]) == b"* THREAD ((3)(5))\r\n"
    assert w.thread([]) == b"* THREAD \r\n"
    # A very long reply chain is written without recursion.
    chain = n(100_000)
    for i in range(99_999, 0, -1):
        chain = n(i, [chain])
    out = w.thread([chain])
    assert out.startswith(b"* THREAD (1 2 3 ") and out.endswith(b" 100000)\r\n")


def test_internal_date() -> None:
    assert w.format_internal_date(dt.datetime(1996, 7, 17, 2, 44, 25, tzinfo=PDT)) == (
        "17-Jul-1996 02:44:25 -0700"
    )
    assert w.format_internal_date(dt.datetime(2002, 8, 1, 22, 0, 0)) == " 1-Aug-2002 22:00:00 +0000"
    india = dt.timezone(dt.timedelta(hours=5, minutes=30))
    assert w.format_internal_date(dt.datetime(2024, 12, 9, 1, 2, 3, tzinfo=india)) == (
        " 9-Dec-2024 01:02:03 +0530"
    )


# --- FETCH, ENVELOPE, BODYSTRUCTURE --------------------------------------------------------------

RFC_BODY = (b"x" * 31 + b"\r\n") * 91 + b"y" * 23 + b"\r\n"
RFC_MESSAGE = (
    b"Date: Wed, 17 Jul 1996 02:23:25 -0700 (PDT)\r\n"
    b"From: Terry Gray <gray@cac.washington.edu>\r\n"
    b"Subject: IMAP4rev1 WG mtg summary and minutes\r\n"
    b"To: imap@cac.washington.edu\r\n"
    b"cc: minutes@CNRI.Reston.VA.US, John Klensin <KLENSIN@MIT.EDU>\r\n"
    b"Message-Id: <B27397-0100000@cac.washington.edu>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: TEXT/PLAIN; CHARSET=US-ASCII\r\n"
    b"\r\n" + RFC_BODY
)


def test_rfc3501_fetch_example() -> None:
    # RFC 3501 §7.4.2 (RFC 9051 §7.5.2 has the same with "IMAP4rev2").
    assert len(RFC_BODY) == 3028
    a = analyze(RFC_MESSAGE)
    line = w.fetch(
        12,
        [
            ("FLAGS", w.flag_list(["\\Seen"])),
            (
                "INTERNALDATE",
                w.format_internal_date(dt.datetime(1996, 7, 17, 2, 44, 25, tzinfo=PDT)),
            ),
            ("RFC822.SIZE", 4286),
            ("ENVELOPE", w.envelope(a["envelope"])),
            ("BODY", w.body_structure(a["body"], extensible=False)),
        ],
    )
    assert line == (
        b'* 12 FETCH (FLAGS (\\Seen) INTERNALDATE "17-Jul-1996 02:44:25 -0700" '
        b'RFC822.SIZE 4286 ENVELOPE ("Wed, 17 Jul 1996 02:23:25 -0700 (PDT)" '
        b'"IMAP4rev1 WG mtg summary and minutes" '
        b'(("Terry Gray" NIL "gray" "cac.washington.edu")) '
        b'(("Terry Gray" NIL "gray" "cac.washington.edu")) '
        b'(("Terry Gray" NIL "gray" "cac.washington.edu")) '
        b'((NIL NIL "imap" "cac.washington.edu")) '
        b'((NIL NIL "minutes" "CNRI.Reston.VA.US")'
        b'("John Klensin" NIL "KLENSIN" "MIT.EDU")) NIL NIL '
        b'"<B27397-0100000@cac.washington.edu>") '
        b'BODY ("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 3028 92))\r\n'
    )
    assert w.body_structure(a["body"]) == (
        b'("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 3028 92 NIL NIL NIL NIL)'
    )


def _leaf(ctype: str, subtype: str, params: dict[str, str], **kw: Any) -> dict[str, Any]:
    part: dict[str, Any] = {
        "type": ctype,
        "subtype": subtype,
        "params": params,
        "id": None,
        "description": None,
        "encoding": "7bit",
        "size": 0,
        "lines": None,
        "md5": None,
        "disposition": None,
        "language": None,
        "location": None,
    }
    part.update(kw)
    return part


def test_rfc3501_multipart_example() -> None:
    # RFC 3501 §7.4.2, the BODYSTRUCTURE of a two-part multipart/mixed.
    body = _leaf(
        "multipart",
        "mixed",
        {"boundary": "----=_xyz"},
        parts=[
            _leaf("text", "plain", {"charset": "US-ASCII"}, size=1152, lines=23),
            _leaf(
                "text",
                "plain",
                {"charset": "US-ASCII", "name": "cc.diff"},
                id="<960723163407.20117h@cac.washington.edu>",
                description="Compiler diff",
                encoding="base64",
                size=4554,
                lines=73,
            ),
        ],
    )
    assert w.body_structure(body, extensible=False) == (
        b'(("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 1152 23)'
        b'("TEXT" "PLAIN" ("CHARSET" "US-ASCII" "NAME" "cc.diff") '
        b'"<960723163407.20117h@cac.washington.edu>" "Compiler diff" "BASE64" 4554 73) "MIXED")'
    )
    assert w.body_structure(body) == (
        b'(("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 1152 23 NIL NIL NIL NIL)'
        b'("TEXT" "PLAIN" ("CHARSET" "US-ASCII" "NAME" "cc.diff") '
        b'"<960723163407.20117h@cac.washington.edu>" "Compiler diff" "BASE64" 4554 73 NIL NIL NIL NIL) '
        b'"MIXED" ("BOUNDARY" "----=_xyz") NIL NIL NIL)'
    )


INNER = (
    b"From: Carol <carol@example.com>\r\n"
    b"Subject: inner\r\n"
    b"Message-ID: <inner@example.com>\r\n"
    b"Content-Type: multipart/mixed; boundary=in\r\n"
    b"\r\n"
    b"--in\r\n"
    b"Content-Type: text/plain\r\n"
    b"\r\n"
    b"inner text\r\n"
    b"--in--"
)
NESTED = (
    b"From: Alice <alice@example.org>\r\n"
    b"To: Bob <bob@example.net>\r\n"
    b"Subject: nested\r\n"
    b"Date: Mon, 7 Feb 1994 21:52:25 -0800\r\n"
    b"Message-ID: <outer@example.org>\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="outer"\r\n'
    b"\r\n"
    b"preamble\r\n"
    b"--outer\r\n"
    b"Content-Type: multipart/alternative; boundary=alt\r\n"
    b"\r\n"
    b"--alt\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: quoted-printable\r\n"
    b"\r\n"
    b"Hello=20world\r\n"
    b"--alt\r\n"
    b"Content-Type: text/html; charset=utf-8\r\n"
    b"\r\n"
    b"<p>Hello</p>\r\n"
    b"--alt--\r\n"
    b"\r\n"
    b"--outer\r\n"
    b'Content-Type: application/pdf; name="doc.pdf"\r\n'
    b"Content-Transfer-Encoding: base64\r\n"
    b'Content-Disposition: attachment; filename="doc.pdf"\r\n'
    b"Content-ID: <pdf@example.org>\r\n"
    b"Content-Description: A document\r\n"
    b"Content-MD5: Q2hlY2sgSW50ZWdyaXR5IQ==\r\n"
    b"Content-Language: en, de\r\n"
    b"Content-Location: http://example.org/doc.pdf\r\n"
    b"\r\n"
    b"JVBERi0xLjQK\r\n"
    b"--outer\r\n"
    b"Content-Type: message/rfc822\r\n"
    b"\r\n" + INNER + b"\r\n"
    b"--outer--\r\n"
)


def test_nested_message_bodystructure() -> None:
    a = analyze(NESTED)
    inner_env = (
        b'(NIL "inner" (("Carol" NIL "carol" "example.com")) (("Carol" NIL "carol" "example.com")) '
        b'(("Carol" NIL "carol" "example.com")) NIL NIL NIL NIL "<inner@example.com>")'
    )
    size, lines = len(INNER), INNER.count(b"\n") + 1
    assert w.body_structure(a["body"]) == (
        b'((("TEXT" "PLAIN" ("CHARSET" "utf-8") NIL NIL "QUOTED-PRINTABLE" 13 1 NIL NIL NIL NIL)'
        b'("TEXT" "HTML" ("CHARSET" "utf-8") NIL NIL "7BIT" 12 1 NIL NIL NIL NIL) '
        b'"ALTERNATIVE" ("BOUNDARY" "alt") NIL NIL NIL)'
        b'("APPLICATION" "PDF" ("NAME" "doc.pdf") "<pdf@example.org>" "A document" "BASE64" 12 '
        b'"Q2hlY2sgSW50ZWdyaXR5IQ==" ("ATTACHMENT" ("FILENAME" "doc.pdf")) ("en" "de") '
        b'"http://example.org/doc.pdf")'
        b'("MESSAGE" "RFC822" NIL NIL NIL "7BIT" %d %s '
        b'(("TEXT" "PLAIN" ("CHARSET" "us-ascii") NIL NIL "7BIT" 10 1 NIL NIL NIL NIL) '
        b'"MIXED" ("BOUNDARY" "in") NIL NIL NIL) %d NIL NIL NIL NIL) '
        b'"MIXED" ("BOUNDARY" "outer") NIL NIL NIL)' % (size, inner_env, lines)
    )
    assert w.body_structure(a["body"], extensible=False) == (
        b'((("TEXT" "PLAIN" ("CHARSET" "utf-8") NIL NIL "QUOTED-PRINTABLE" 13 1)'
        b'("TEXT" "HTML" ("CHARSET" "utf-8") NIL NIL "7BIT" 12 1) "ALTERNATIVE")'
        b'("APPLICATION" "PDF" ("NAME" "doc.pdf") "<pdf@example.org>" "A document" "BASE64" 12)'
        b'("MESSAGE" "RFC822" NIL NIL NIL "7BIT" %d %s '
        b'(("TEXT" "PLAIN" ("CHARSET" "us-ascii") NIL NIL "7BIT" 10 1) "MIXED") %d) "MIXED")'
        % (size, inner_env, lines)
    )


def test_single_language_and_disposition_without_params() -> None:
    part = _leaf(
        "image",
        "png",
        {},
        size=3,
        disposition={"type": "inline", "params": {}},
        language=["en"],
        encoding="base64",
    )
    assert w.body_structure(part) == (
        b'("IMAGE" "PNG" NIL NIL NIL "BASE64" 3 NIL ("INLINE" NIL) "en" NIL)'
    )


def test_bodystructure_of_broken_and_8bit_messages() -> None:
    a = analyze(b"no header at all\r\n")
    assert w.body_structure(a["body"]).startswith(b'("TEXT" "PLAIN" ("CHARSET" "us-ascii")')
    a = analyze(b"Content-Type: multipart/mixed\r\n\r\nbody")  # no boundary: text/plain
    assert w.body_structure(a["body"]).startswith(b'("TEXT" "PLAIN"')
    raw = b'Subject: caf\xc3\xa9\r\nContent-Type: text/plain; name="caf\xc3\xa9.txt"\r\n\r\nx\r\n'
    a = analyze(raw)
    assert b"{9}\r\ncaf\xc3\xa9.txt" in bytes(w.body_structure(a["body"]))
    assert b'"caf\xc3\xa9.txt"' in bytes(w.body_structure(a["body"], utf8=True))
    assert w.envelope(a["envelope"]).startswith(b"(NIL {5}\r\ncaf\xc3\xa9 ")


def test_envelope_groups_and_nil() -> None:
    raw = (
        b"To: undisclosed-recipients:;\r\n"
        b'From: =?utf-8?q?J=C3=B6rg?= <j@x.de>, "Doe, \\"J\\"" <d@e.f>\r\n'
        b'Cc: team: a@b.c, "B" <b@c.d>;\r\n'
        b"Reply-To: <>\r\n"
        b"In-Reply-To: <x@y>\r\n"
        b"\r\nbody\r\n"
    )
    env = analyze(raw)["envelope"]
    frm = b'(("=?utf-8?q?J=C3=B6rg?=" NIL "j" "x.de")({8}\r\nDoe, "J" NIL "d" "e.f"))'
    assert w.envelope(env) == (
        b"(NIL NIL "
        + frm
        + b" "
        + frm
        + b' ((NIL NIL "" ""))'
        + b' ((NIL NIL "undisclosed-recipients" NIL)(NIL NIL NIL NIL))'
        + b' ((NIL NIL "team" NIL)(NIL NIL "a" "b.c")("B" NIL "b" "c.d")(NIL NIL NIL NIL))'
        + b' NIL "<x@y>" NIL)'
    )
    assert w.envelope(None) == b"(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)"
    assert w.envelope({"from": []}) == b"(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)"


def test_fetch_items_from_parsed_command() -> None:
    p = CommandParser()
    p.feed(b"a UID FETCH 1 (UID MODSEQ BODY.PEEK[HEADER.FIELDS (Subject)]<0.5> BINARY[1])\r\n")
    cmd = p.next()
    assert isinstance(cmd, Fetch)
    names = [item.response_name() for item in cmd.items]
    line = w.fetch(
        1,
        zip(
            names,
            [7, [12345], w.IMAPLiteral(b"Subje"), w.binary_literal(b"\x00\x01")],
            strict=True,
        ),
    )
    assert line == (
        b"* 1 FETCH (UID 7 MODSEQ (12345) BODY[HEADER.FIELDS (Subject)]<0> {5}\r\nSubje "
        b"BINARY[1] ~{2}\r\n\x00\x01)\r\n"
    )
    assert w.fetch(2, {"FLAGS": w.flag_list([])}) == b"* 2 FETCH (FLAGS ())\r\n"
    assert w.fetch(3, {"BODY[]": None}) == b"* 3 FETCH (BODY[] NIL)\r\n"


def test_mailbox_name_encoding() -> None:
    assert w.mailbox_name("INBOX") == b"INBOX"
    assert w.mailbox_name("Entwürfe") == b"Entw&APw-rfe"
    assert w.mailbox_name("Entwürfe", utf8=True) == '"Entwürfe"'.encode()
    assert w.mailbox_name("A & B") == b'"A &- B"'
    assert w.mailbox_name('with "quote"') == b'{12}\r\nwith "quote"'
    assert w.mailbox_name("") == b'""'


def test_string_literal_never_carries_nul() -> None:
    # RFC 9051 §9: a literal is CHAR8; NUL goes out as 0x80, the size kept.
    assert w.string(b"a\x00b") == b"{3}\r\na\x80b"
    assert w.encode(w.binary_literal(b"a\x00b")) == b"~{3}\r\na\x00b"
