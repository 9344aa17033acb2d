from __future__ import annotations

import base64
import email
import email.policy
import json
import mmap
from collections.abc import Iterator
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailhouse.mime.structure import (
    MAX_DEPTH,
    _analyze,
    _fallback,
    _parse_address_list,
    analyze,
    parse_address_list,
)

Node = dict[str, Any]

KETCHUP = b"Do you like ketchup?\r\nI do.\r\n"


def crlf(s: str) -> bytes:
    return s.replace("\n", "\r\n").encode("utf-8")


def walk(node: Node) -> Iterator[Node]:
    yield node
    for child in node.get("parts", ()):
        yield from walk(child)
    if "body" in node:
        yield from walk(node["body"])


def by_section(result: dict[str, Any]) -> dict[str, Node]:
    """Leaf-addressable parts by IMAP section (multiparts share their container's)."""
    out: dict[str, Node] = {}
    for node in walk(result["body"]):
        if node["type"] != "multipart":
            out[node["section"]] = node
    return out


def body_of(raw: bytes, node: Node) -> bytes:
    return raw[node["body_start"] : node["body_end"]]


def header_of(raw: bytes, node: Node) -> bytes:
    return raw[node["header_start"] : node["body_start"]]


def check_invariants(raw: bytes, result: dict[str, Any]) -> None:
    # The real analysis must cope on its own: analyze()'s catch-all fallback
    # is a last resort, not something these inputs may reach.
    assert result == _analyze(raw)
    text = json.dumps(result, allow_nan=False)
    text.encode("utf-8")  # strict: no lone surrogates
    assert json.loads(text) == result
    assert result["size"] == len(raw)

    def check(node: Node, lo: int, hi: int) -> None:
        assert lo <= node["header_start"] <= node["body_start"] <= node["body_end"] <= hi
        assert node["size"] == node["body_end"] - node["body_start"]
        if node["type"] == "multipart":
            assert node["parts"]
            prev = node["body_start"]
            for child in node["parts"]:
                check(child, node["body_start"], node["body_end"])
                assert child["header_start"] >= prev
                prev = child["body_end"]
        if "body" in node:
            assert node["body"]["header_start"] == node["body_start"]
            check(node["body"], node["body_start"], node["body_end"])
        if node["type"] == "text" or "body" in node:
            assert isinstance(node["lines"], int)

    check(result["body"], 0, len(raw))


# --- a real-world shaped message ---------------------------------------------------

PDF = b"%PDF-1.4 fake pdf\n" * 20
ALT_MESSAGE = crlf(
    "Return-Path: <alice@example.org>\n"
    "Received: from mx.example.org by mail.example.com; Mon, 6 Nov 2023 10:00:01 +0100\n"
    "From: =?utf-8?q?Alice_M=C3=BCller?= <alice@example.org>\n"
    "To: Bob <bob@example.com>, carol@example.com\n"
    'Cc: "Doe, Dave" <dave@example.net>\n'
    "Subject: =?utf-8?B?UXVhcnRlcmx5IHJlcG9ydCDigqw=?=\n"
    "Date: Mon, 6 Nov 2023 10:00:00 +0100\n"
    "Message-ID: <20231106.abc@example.org>\n"
    "In-Reply-To: <prev@example.com>\n"
    "References: <root@example.com>\n <prev@example.com>\n"
    "MIME-Version: 1.0\n"
    'Content-Type: multipart/mixed; boundary="----=_Part_1"\n'
    "\n"
    "This is a multi-part message in MIME format.\n"
    "------=_Part_1\n"
    'Content-Type: multipart/alternative; boundary="----=_Part_1_alt"\n'
    "\n"
    "------=_Part_1_alt\n"
    "Content-Type: text/plain; charset=utf-8\n"
    "Content-Transfer-Encoding: quoted-printable\n"
    "\n"
    "Hi Bob,=0A=0Athe report is attached: 10 =E2=82=AC per unit.\n"
    "Regards\n"
    "------=_Part_1_alt\n"
    "Content-Type: text/html; charset=utf-8\n"
    "\n"
    "<html><head><style>p {color: red}</style></head><body><p>Hi Bob,</p></body></html>\n"
    "------=_Part_1_alt--\n"
    "\n"
    "------=_Part_1\n"
    "Content-Type: application/pdf; name*0*=UTF-8''Q3%20%E2%82%AC%20; name*1=\"report.pdf\"\n"
    "Content-Transfer-Encoding: base64\n"
    "Content-Disposition: attachment;\n"
    " filename*=UTF-8''Q3%20%E2%82%AC%20report.pdf\n"
    "Content-ID: <pdf1@example.org>\n"
    "Content-Description: The report\n"
    "Content-Language: en, de\n"
    "Content-Location: http://example.org/\n   report.pdf\n"
    "\n"
) + base64.encodebytes(PDF).replace(b"\n", b"\r\n") + crlf("------=_Part_1--\nepilogue\n")


def test_multipart_alternative_with_attachment() -> None:
    raw = ALT_MESSAGE
    r = analyze(raw)
    check_invariants(raw, r)
    root = r["body"]
    assert (root["type"], root["subtype"], root["section"]) == ("multipart", "mixed", "")
    assert root["boundary"] == "----=_Part_1"
    alt, pdf = root["parts"]
    assert (alt["subtype"], alt["section"]) == ("alternative", "1")
    plain, rich = alt["parts"]
    assert (plain["section"], plain["type"], plain["subtype"]) == ("1.1", "text", "plain")
    assert (rich["section"], rich["subtype"]) == ("1.2", "html")
    assert rich["params"] == {"charset": "utf-8"}
    assert plain["encoding"] == "quoted-printable"
    assert body_of(raw, plain) == b"Hi Bob,=0A=0Athe report is attached: 10 =E2=82=AC per unit.\r\nRegards"
    assert plain["lines"] == 2
    assert header_of(raw, plain) == (
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
    )
    assert body_of(raw, alt).startswith(b"------=_Part_1_alt\r\n")
    assert body_of(raw, alt).endswith(b"------=_Part_1_alt--\r\n")

    assert pdf["section"] == "2"
    assert (pdf["type"], pdf["subtype"], pdf["encoding"]) == ("application", "pdf", "base64")
    assert pdf["params"] == {"name*": "UTF-8''Q3%20%E2%82%AC%20report.pdf"}
    assert pdf["disposition"] == {
        "type": "attachment",
        "params": {"filename*": "UTF-8''Q3%20%E2%82%AC%20report.pdf"},
    }
    assert pdf["filename"] == "Q3 € report.pdf"
    assert pdf["id"] == "<pdf1@example.org>"
    assert pdf["description"] == "The report"
    assert pdf["language"] == ["en", "de"]
    assert pdf["location"] == "http://example.org/report.pdf"
    assert pdf["lines"] is None
    assert base64.b64decode(body_of(raw, pdf)) == PDF

    # BODY[HEADER] / BODY[TEXT] of the message
    assert header_of(raw, root).startswith(b"Return-Path:")
    assert header_of(raw, root).endswith(b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"----=_Part_1\"\r\n\r\n")
    assert body_of(raw, root).startswith(b"This is a multi-part")
    assert body_of(raw, root) == raw[raw.index(b"\r\n\r\n") + 4 :]


def test_summary_fields() -> None:
    r = analyze(ALT_MESSAGE)
    assert r["subject"] == "Quarterly report €"
    assert r["from_name"] == "Alice Müller"
    assert r["from_address"] == "alice@example.org"
    assert r["to"] == ["bob@example.com", "carol@example.com"]
    assert r["cc"] == ["dave@example.net"]
    assert r["date"] == 1699261200
    assert r["message_id"] == "<20231106.abc@example.org>"
    assert r["in_reply_to"] == "<prev@example.com>"
    assert r["references"] == ["<root@example.com>", "<prev@example.com>"]
    assert r["has_attachments"] is True
    assert r["preview"] == "Hi Bob, the report is attached: 10 € per unit. Regards"


def test_envelope() -> None:
    env = analyze(ALT_MESSAGE)["envelope"]
    assert list(env) == [
        "date", "subject", "from", "sender", "reply_to", "to", "cc", "bcc", "in_reply_to", "message_id",
    ]  # fmt: skip
    assert env["date"] == "Mon, 6 Nov 2023 10:00:00 +0100"
    assert env["subject"] == "=?utf-8?B?UXVhcnRlcmx5IHJlcG9ydCDigqw=?="
    alice = ["=?utf-8?q?Alice_M=C3=BCller?=", None, "alice", "example.org"]
    assert env["from"] == [alice]
    assert env["sender"] == [alice]
    assert env["reply_to"] == [alice]
    assert env["to"] == [["Bob", None, "bob", "example.com"], [None, None, "carol", "example.com"]]
    assert env["cc"] == [["Doe, Dave", None, "dave", "example.net"]]
    assert env["bcc"] is None
    assert env["in_reply_to"] == "<prev@example.com>"
    assert env["message_id"] == "<20231106.abc@example.org>"


def test_envelope_sender_reply_to_and_empty_fields() -> None:
    raw = crlf(
        "From: a@example.org\nSender: s@example.org\nReply-To:\nTo:\nSubject:\n\nbody\n"
    )
    env = analyze(raw)["envelope"]
    assert env["sender"] == [[None, None, "s", "example.org"]]
    assert env["reply_to"] == env["from"] == [[None, None, "a", "example.org"]]
    assert env["to"] is None
    assert env["subject"] == ""
    assert env["date"] is None
    assert env["message_id"] is None


def test_groups_in_to() -> None:
    raw = crlf(
        "To: Friends: a@example.org, \"B, Bee\" <b@example.org>;, c@example.org,\n"
        " undisclosed-recipients:;\n"
        "Cc: (just a comment) d@example.org (Dee), <@route1,@route2:e@example.org>\n"
        "Bcc: local-only, <>\n\nx"
    )
    r = analyze(raw)
    assert r["envelope"]["to"] == [
        [None, None, "Friends", None],
        [None, None, "a", "example.org"],
        ["B, Bee", None, "b", "example.org"],
        [None, None, None, None],
        [None, None, "c", "example.org"],
        [None, None, "undisclosed-recipients", None],
        [None, None, None, None],
    ]
    assert r["envelope"]["cc"] == [
        ["Dee", None, "d", "example.org"],
        [None, "@route1,@route2", "e", "example.org"],
    ]
    assert r["envelope"]["bcc"] == [[None, None, "local-only", ""], [None, None, "", ""]]
    assert r["to"] == ["a@example.org", "b@example.org", "c@example.org"]
    assert r["cc"] == ["d@example.org", "e@example.org"]


def test_unterminated_group_is_closed() -> None:
    assert parse_address_list("G: a@b") == [
        [None, None, "G", None],
        [None, None, "a", "b"],
        [None, None, None, None],
    ]


def test_address_quoting() -> None:
    assert parse_address_list('"Joe \\"JJ\\" Q." <"joe q"@[192.0.2.1]>') == [
        ['Joe "JJ" Q.', None, '"joe q"', "[192.0.2.1]"]
    ]
    assert parse_address_list("John  Q.  Public <jqp@x.org>") == [
        ["John Q. Public", None, "jqp", "x.org"]
    ]


ADDRESS_PIECES = st.sampled_from(
    [
        "a@b.c", "<x@y.z>", "Bob <bob@x.org>", '"Doe, J" <j@x>', '""<e@f>', "  John  Q. Public\t<q@p>",
        "=?utf-8?q?J=C3=B6rg?= <j@x>", ",", " ", "(c)", "G:", ";", "x", "@", "<", ">", '"', "\\",
        "[1.2.3.4]", "\r\n ", "é <u@v>",
    ]
)  # fmt: skip


@given(st.lists(ADDRESS_PIECES, max_size=8))
def test_address_fast_path_matches_tokenizer(pieces: list[str]) -> None:
    value = "".join(pieces)
    assert parse_address_list(value) == _parse_address_list(value)


@given(st.text(max_size=120))
def test_address_parser_is_total(value: str) -> None:
    parse_address_list(value)


# --- RFC 3501 section numbering -------------------------------------------------------


def _rfc3501_example() -> bytes:
    """The part layout of the example in RFC 3501 section 6.4.5."""

    def mp(subtype: str, boundary: str, parts: list[str]) -> str:
        inner = "".join(f"--{boundary}\n{p}\n" for p in parts)
        return f"Content-Type: multipart/{subtype}; boundary={boundary}\n\n{inner}--{boundary}--\n"

    def leaf(ctype: str, body: str) -> str:
        return f"Content-Type: {ctype}\n\n{body}"

    def message(subject: str, body: str) -> str:
        return f"Content-Type: message/rfc822\n\nFrom: x@example.org\nSubject: {subject}\n{body}"

    inner_alt = mp("alternative", "b5", [leaf("text/plain", "4.2.2.1"), leaf("text/richtext", "4.2.2.2")])
    m42 = message("m42", mp("mixed", "b4", [leaf("text/plain", "4.2.1"), inner_alt]))
    m3 = message("m3", mp("mixed", "b2", [leaf("text/plain", "3.1"), leaf("application/octet-stream", "3.2")]))
    four = mp("mixed", "b3", [leaf("image/gif", "4.1"), m42])
    top = mp(
        "mixed",
        "b1",
        [leaf("text/plain", "1"), leaf("application/octet-stream", "2"), m3, four],
    )
    return crlf("From: top@example.org\nSubject: top\n" + top)


def test_rfc3501_part_numbers() -> None:
    raw = _rfc3501_example()
    r = analyze(raw)
    check_invariants(raw, r)
    parts = by_section(r)
    expected = {
        "1": "text/plain",
        "2": "application/octet-stream",
        "3": "message/rfc822",
        "3.1": "text/plain",
        "3.2": "application/octet-stream",
        "4.1": "image/gif",
        "4.2": "message/rfc822",
        "4.2.1": "text/plain",
        "4.2.2.1": "text/plain",
        "4.2.2.2": "text/richtext",
    }
    assert {k: f"{v['type']}/{v['subtype']}" for k, v in parts.items()} == expected
    for section, node in parts.items():
        if node["type"] != "message":
            assert body_of(raw, node) == section.encode()
    multis = {n["section"]: n["subtype"] for n in walk(r["body"]) if n["type"] == "multipart"}
    assert multis == {"": "mixed", "3": "mixed", "4": "mixed", "4.2": "mixed", "4.2.2": "alternative"}

    m42 = parts["4.2"]
    assert m42["envelope"]["subject"] == "m42"
    assert m42["lines"] == body_of(raw, m42).count(b"\n")
    # BODY[4.2.HEADER] and BODY[4.2.TEXT]
    assert header_of(raw, m42["body"]) == b"From: x@example.org\r\nSubject: m42\r\nContent-Type: multipart/mixed; boundary=b4\r\n\r\n"
    assert body_of(raw, m42["body"]).startswith(b"--b4\r\n")
    # BODY[4.1.MIME]
    assert header_of(raw, parts["4.1"]) == b"Content-Type: image/gif\r\n\r\n"


def test_non_multipart_message_is_part_1() -> None:
    raw = crlf("Subject: s\nContent-Type: text/plain; charset=iso-8859-1\n\nh\xe9llo\n")
    r = analyze(raw)
    body = r["body"]
    assert (body["section"], body["type"], body["subtype"]) == ("1", "text", "plain")
    assert body["params"] == {"charset": "iso-8859-1"}
    assert body_of(raw, body) == "h\xe9llo\r\n".encode()
    assert body["lines"] == 1


def test_encapsulated_single_part_message() -> None:
    raw = crlf(
        "Content-Type: multipart/mixed; boundary=X\n\n--X\nContent-Type: text/plain\n\nsee attached\n"
        "--X\nContent-Type: message/rfc822\n\nSubject: inner\nMessage-ID: <i@x>\n\ninner text\n--X--\n"
    )
    r = analyze(raw)
    check_invariants(raw, r)
    msg = r["body"]["parts"][1]
    assert msg["section"] == "2"
    assert msg["envelope"]["message_id"] == "<i@x>"
    assert msg["body"]["section"] == "2.1"
    assert body_of(raw, msg["body"]) == b"inner text"
    assert r["has_attachments"] is True
    assert r["preview"] == "see attached"


# --- broken and unusual input ------------------------------------------------------------


def test_no_header_section() -> None:
    r = analyze(KETCHUP)
    check_invariants(KETCHUP, r)
    body = r["body"]
    assert body["header_start"] == body["body_start"] == 0
    assert body["body_end"] == len(KETCHUP)
    assert (body["type"], body["subtype"], body["params"]) == ("text", "plain", {"charset": "us-ascii"})
    assert body["lines"] == 2
    assert r["preview"] == "Do you like ketchup? I do."
    assert r["subject"] == ""
    assert r["envelope"]["from"] is None


def test_fallback_shape_matches() -> None:
    normal = analyze(KETCHUP)
    fallback = _fallback(KETCHUP)
    assert set(fallback) == set(normal)
    assert set(fallback["envelope"]) == set(normal["envelope"])
    assert set(fallback["body"]) == set(normal["body"])


def test_empty_message() -> None:
    r = analyze(b"")
    check_invariants(b"", r)
    assert r["body"]["size"] == 0
    assert r["body"]["lines"] == 0
    assert r["preview"] == ""


def test_bare_lf_multipart() -> None:
    raw = (
        b"Subject: lf\nContent-Type: multipart/mixed; boundary=\"b\"\n\n"
        b"--b\nContent-Type: text/plain\n\none\n--b\n\ntwo\n--b--\n"
    )
    r = analyze(raw)
    check_invariants(raw, r)
    one, two = r["body"]["parts"]
    assert body_of(raw, one) == b"one"
    assert header_of(raw, two) == b"\n"
    assert body_of(raw, two) == b"two"
    assert two["type"] == "text"


def test_missing_boundary_parameter() -> None:
    raw = crlf("Content-Type: multipart/mixed\n\n--x\n\nhello\n--x--\n")
    r = analyze(raw)
    check_invariants(raw, r)
    assert (r["body"]["type"], r["body"]["subtype"], r["body"]["section"]) == ("text", "plain", "1")
    assert "parts" not in r["body"]


def test_boundary_never_found() -> None:
    raw = crlf("Content-Type: multipart/mixed; boundary=nothere\n\nsome text\n")
    r = analyze(raw)
    check_invariants(raw, r)
    (only,) = r["body"]["parts"]
    assert (only["section"], only["type"], only["subtype"]) == ("1", "text", "plain")
    assert header_of(raw, only) == b""
    assert body_of(raw, only) == b"some text\r\n"
    assert r["preview"] == "some text"


def test_unterminated_multipart() -> None:
    raw = crlf("Content-Type: multipart/mixed; boundary=b\n\n--b\n\nfirst\n--b\n\nsecond, cut off")
    r = analyze(raw)
    check_invariants(raw, r)
    first, second = r["body"]["parts"]
    assert body_of(raw, first) == b"first"
    assert body_of(raw, second) == b"second, cut off"


def test_inner_boundary_extending_outer_and_fake_delimiters() -> None:
    raw = crlf(
        "Content-Type: multipart/mixed; boundary=abc\n\n"
        "--abc\nContent-Type: multipart/alternative; boundary=abc-inner\n\n"
        "--abc-inner\n\nplain\n--abc-inner\n\nalso --abc not at line start\n--abcdef is not it\n--abc-inner--\n"
        "--abc  \t\n\nsecond\n--abc--"
    )
    r = analyze(raw)
    check_invariants(raw, r)
    alt, second = r["body"]["parts"]
    assert [body_of(raw, p) for p in alt["parts"]] == [
        b"plain",
        b"also --abc not at line start\r\n--abcdef is not it",
    ]
    assert body_of(raw, second) == b"second"


def test_digest_default_type() -> None:
    raw = crlf(
        "Content-Type: multipart/digest; boundary=d\n\n--d\n\nSubject: one\n\n1\n--d\n\nSubject: two\n\n2\n--d--\n"
    )
    r = analyze(raw)
    check_invariants(raw, r)
    subjects = [p["envelope"]["subject"] for p in r["body"]["parts"]]
    assert subjects == ["one", "two"]
    assert [p["body"]["section"] for p in r["body"]["parts"]] == ["1.1", "2.1"]


def test_deep_nesting_is_capped() -> None:
    depth = 300
    head = "".join(f"Content-Type: multipart/mixed; boundary=b{i}\n\n--b{i}\n" for i in range(depth))
    tail = "".join(f"\n--b{i}--" for i in reversed(range(depth)))
    raw = crlf(head + "\ndeep" + tail)
    r = analyze(raw)
    check_invariants(raw, r)
    levels = 0
    node = r["body"]
    while "parts" in node:
        node = node["parts"][0]
        levels += 1
    assert levels == MAX_DEPTH
    assert (node["type"], node["subtype"]) == ("application", "octet-stream")


def test_deep_message_nesting_is_capped() -> None:
    raw = crlf("Content-Type: message/rfc822\n\n" * 200 + "Subject: bottom\n\nx")
    r = analyze(raw)
    check_invariants(raw, r)
    assert r["has_attachments"] is True


def test_many_parts_are_capped() -> None:
    raw = crlf("Content-Type: multipart/mixed; boundary=b\n\n" + "--b\n\nx\n" * 20000 + "--b--\n")
    r = analyze(raw)
    check_invariants(raw, r)
    assert 1 < len(r["body"]["parts"]) <= 5000


def test_eight_bit_headers_stay_valid_json() -> None:
    raw = (
        b"From: J\xf6rg <j@example.org>\r\nSubject: caf\xe9\r\nTo: \xff\xfe <x@y>\r\n"
        b"X-Bad: \xed\xa0\x80\r\nContent-Type: text/plain; charset=\"\xe9\"\r\n\r\nbody \xe9\r\n"
    )
    r = analyze(raw)
    check_invariants(raw, r)
    assert r["subject"] == "café"
    assert r["from_name"] == "Jörg"
    utf8 = analyze("Subject: Grüße\r\n\r\n".encode())
    assert utf8["subject"] == "Grüße"


def test_huge_header_line() -> None:
    raw = b"Subject: " + b"x" * 100_000 + b"\r\nTo: " + b"a@b, " * 20_000 + b"\r\n\r\nbody"
    r = analyze(raw)
    check_invariants(raw, r)
    assert len(r["subject"]) == 100_000
    assert len(r["to"]) == 20_000
    assert body_of(raw, r["body"]) == b"body"


def test_buffer_types_give_identical_results() -> None:
    raw = ALT_MESSAGE
    expected = analyze(raw)
    assert analyze(memoryview(raw)) == expected
    assert analyze(memoryview(bytearray(raw))) == expected
    assert analyze(memoryview(b"xx" + raw)[2:]) == expected  # slice: regex search path
    with mmap.mmap(-1, len(raw)) as mm:
        mm.write(raw)
        assert analyze(mm) == expected
        assert analyze(memoryview(mm)) == expected


# --- preview and attachments -------------------------------------------------------------


def test_preview_base64_charset_and_truncation() -> None:
    text = ("Grüße aus Köln. " * 2000).encode("iso-8859-1")
    raw = crlf("Content-Type: text/plain; charset=ISO-8859-1\nContent-Transfer-Encoding: base64\n\n")
    raw += base64.encodebytes(text).replace(b"\n", b"\r\n")
    r = analyze(raw)
    assert r["preview"] == ("Grüße aus Köln. " * 20)[:200]


def test_preview_html_only() -> None:
    raw = crlf(
        "Content-Type: text/html; charset=utf-8\n\n"
        "<html><head><title>T</title><style>" + "x{}" * 3000 + "</style></head>"
        "<body><script>var a = 1;</script><!-- hidden --><p>Caf&eacute;&nbsp;&amp;\n   more</p>"
        "<br>text</body></html>\n"
    )
    assert analyze(raw)["preview"] == "Café & more text"


def test_preview_prefers_plain_and_skips_attachments() -> None:
    raw = crlf(
        "Content-Type: multipart/mixed; boundary=b\n\n"
        "--b\nContent-Type: text/plain\nContent-Disposition: attachment; filename=notes.txt\n\nattached notes\n"
        "--b\nContent-Type: text/html\n\n<p>html body</p>\n"
        "--b\nContent-Type: text/plain\n\nplain body\n--b--\n"
    )
    r = analyze(raw)
    assert r["preview"] == "plain body"
    assert r["has_attachments"] is True


def test_preview_falls_back_to_html_when_plain_is_empty() -> None:
    raw = crlf(
        "Content-Type: multipart/alternative; boundary=a\n\n"
        "--a\nContent-Type: text/plain\n\n \n"
        "--a\nContent-Type: text/html\n\n<b>bold</b>\x00\ufeff move\n--a--\n"
    )
    assert analyze(raw)["preview"] == "bold move"


def test_no_attachments_for_alternative_and_related_inline_images() -> None:
    raw = crlf(
        "Content-Type: multipart/alternative; boundary=a\n\n"
        "--a\nContent-Type: text/plain\n\nplain\n"
        "--a\nContent-Type: multipart/related; boundary=r\n\n"
        "--r\nContent-Type: text/html\n\n<img src=cid:logo>\n"
        "--r\nContent-Type: image/png; name=logo.png\nContent-ID: <logo>\nContent-Disposition: inline\n\nPNG\n"
        "--r--\n--a--\n"
    )
    r = analyze(raw)
    check_invariants(raw, r)
    assert r["has_attachments"] is False
    assert r["preview"] == "plain"


def test_report_parts_are_not_attachments() -> None:
    raw = crlf(
        "Content-Type: multipart/report; report-type=delivery-status; boundary=r\n\n"
        "--r\nContent-Type: text/plain\n\nDelivery failed\n"
        "--r\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; x\n"
        "--r\nContent-Type: text/rfc822-headers\n\nSubject: x\n--r--\n"
    )
    assert analyze(raw)["has_attachments"] is False


def test_dates() -> None:
    def ts(value: str) -> int | None:
        result: int | None = analyze(crlf(f"Date: {value}\n\n"))["date"]
        return result

    assert ts("Mon, 6 Nov 2023 10:00:00 +0100") == 1699261200
    assert ts("6 Nov 2023 09:00 GMT") == 1699261200
    assert ts("Monday, November 6th") is None
    assert ts("Mon, 6 Foo 2023 10:00:00 +0100") is None
    assert analyze(b"\r\n")["date"] is None


def test_matches_stdlib_email_on_payloads() -> None:
    raw = ALT_MESSAGE
    ours = [n for n in walk(analyze(raw)["body"]) if "parts" not in n]
    theirs = [p for p in email.message_from_bytes(raw, policy=email.policy.compat32).walk() if not p.is_multipart()]
    assert [f"{n['type']}/{n['subtype']}" for n in ours] == [p.get_content_type() for p in theirs]
    for node, part in zip(ours, theirs, strict=True):
        payload = part.get_payload(decode=True)
        assert isinstance(payload, bytes)
        if node["encoding"] == "base64":
            assert base64.b64decode(body_of(raw, node)) == payload
        else:
            # stdlib keeps the line break that RFC 2046 assigns to the delimiter
            assert payload.rstrip(b"\r\n") == body_of(raw, node) or node["encoding"] != "7bit"


# --- robustness --------------------------------------------------------------------------


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2000))
def test_random_bytes_never_raise(raw: bytes) -> None:
    check_invariants(raw, analyze(raw))


LINES = st.sampled_from(
    [
        b"Content-Type: multipart/mixed; boundary=b",
        b"Content-Type: multipart/alternative; boundary=\"c\"",
        b"Content-Type: message/rfc822",
        b"Content-Type: multipart/digest; boundary=b",
        b"Content-Type: text/html; charset=utf-8",
        b"Content-Type: text/plain; name*0*=utf-8''%E2; name*1*=%82%AC",
        b"Content-Transfer-Encoding: base64",
        b"Content-Transfer-Encoding: quoted-printable",
        b"Content-Disposition: attachment; filename=\"a.txt\"",
        b"To: g: a@b, <c@d>;, (x) e",
        b"From: =?utf-8?q?=C3=A9?= <x@y>",
        b"Subject: =?utf-8?b?w6k=?=",
        b"Date: Mon, 6 Nov 2023 10:00:00 +0100",
        b"--b",
        b"--b--",
        b"--c",
        b"--c--",
        b"",
        b" folded",
        b"<p>x</p>",
        b"SGVsbG8=",
        b"=E2=82=AC=",
        b"\xff\xfe",
    ]
)


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(LINES, max_size=40), st.sampled_from([b"\r\n", b"\n"]), st.booleans())
def test_structured_garbage_never_raises(lines: list[bytes], eol: bytes, final: bool) -> None:
    raw = eol.join(lines) + (eol if final else b"")
    check_invariants(raw, analyze(raw))
