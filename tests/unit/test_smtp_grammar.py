"""Tests for mailhouse.smtp.grammar."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailhouse.smtp import grammar
from mailhouse.smtp.grammar import (
    AddressError,
    CommandError,
    DotStuffer,
    GrammarError,
    LineEndingNormalizer,
    ParameterError,
    ProtocolError,
    Reply,
    ReplyParser,
    dot_stuff,
    format_reply,
    is_valid_domain,
    is_xtext,
    normalize_line_endings,
    parse_command,
    parse_ehlo_keywords,
    parse_esmtp_params,
    parse_mail_from,
    parse_path,
    parse_rcpt_to,
    xtext_decode,
    xtext_encode,
)

# ---------------------------------------------------------------- replies


def test_format_reply_single_line() -> None:
    assert format_reply(250, "2.1.0", "Sender ok") == b"250 2.1.0 Sender ok\r\n"
    assert format_reply(220, None, "mx ESMTP") == b"220 mx ESMTP\r\n"


def test_format_reply_multiline_repeats_enhanced_code() -> None:
    assert format_reply(550, "5.7.1", ["no", "really no"]) == (
        b"550-5.7.1 no\r\n550 5.7.1 really no\r\n"
    )
    assert format_reply(250, None, "a\nb\r\nc") == b"250-a\r\n250-b\r\n250 c\r\n"


def test_format_reply_empty_text() -> None:
    assert format_reply(250, None, "") == b"250\r\n"
    assert format_reply(250, "2.0.0", "") == b"250 2.0.0\r\n"
    assert format_reply(250, None, []) == b"250\r\n"
    assert format_reply(250, None, ["", "x"]) == b"250-\r\n250 x\r\n"


@pytest.mark.parametrize(
    ("code", "enhanced"),
    [(199, None), (600, None), (250, "5.0.0"), (550, "5.0"), (550, "5.0.0.0"), (550, "x")],
)
def test_format_reply_rejects_invalid(code: int, enhanced: str | None) -> None:
    with pytest.raises(ValueError):
        format_reply(code, enhanced, "text")


def test_format_reply_list_item_with_line_break_refused() -> None:
    with pytest.raises(ValueError):
        format_reply(250, None, ["a\r\n550 injected"])


def test_reply_object() -> None:
    r = Reply(250, "2.0.0", ["one", "two"])
    assert r.to_bytes() == b"250-2.0.0 one\r\n250 2.0.0 two\r\n"
    assert r.text == "one\ntwo"
    assert r.is_positive and not r.is_permanent and not r.is_transient
    assert Reply(354, None, ["go"]).is_intermediate
    assert Reply(451).is_transient
    assert Reply(554).is_permanent


def test_reply_parser_multiline_and_enhanced() -> None:
    p = ReplyParser()
    data = b"250-2.0.0 first\r\n250-2.0.0 second\r\n250 2.0.0 third\r\n"
    assert p.feed(data) == [Reply(250, "2.0.0", ["first", "second", "third"])]
    assert not p.pending


def test_reply_parser_incremental_byte_by_byte() -> None:
    p = ReplyParser()
    data = b"220 mx ESMTP\r\n250-mx Hello\r\n250-PIPELINING\r\n250 SIZE 100\r\n"
    out: list[Reply] = []
    for i in range(len(data)):
        out += p.feed(data[i : i + 1])
    assert out == [
        Reply(220, None, ["mx ESMTP"]),
        Reply(250, None, ["mx Hello", "PIPELINING", "SIZE 100"]),
    ]


def test_reply_parser_tolerant() -> None:
    p = ReplyParser()
    # Missing text, bare LF, "-" with no text.
    assert p.feed(b"250\n") == [Reply(250, None, [""])]
    assert p.feed(b"250-\r\n250 ok\r\n") == [Reply(250, None, ["", "ok"])]
    # Enhanced class must match the code to be recognised.
    assert p.feed(b"550 2.0.0 odd\r\n") == [Reply(550, None, ["2.0.0 odd"])]
    # A later line without the code keeps its text.
    assert p.feed(b"550-5.1.1 a\r\n550 b\r\n") == [Reply(550, "5.1.1", ["a", "b"])]
    assert p.feed(b"250 2.0.0\r\n") == [Reply(250, "2.0.0", [""])]


def test_reply_parser_detection_can_be_disabled() -> None:
    p = ReplyParser(detect_enhanced=False)
    assert p.feed(b"250 2.0.0 ok\r\n") == [Reply(250, None, ["2.0.0 ok"])]


@pytest.mark.parametrize(
    "data",
    [b"hello\r\n", b"25\r\n", b"2500 x\r\n", b"250x\r\n", b"650 no\r\n", b"150 x\r\n", b"\r\n"],
)
def test_reply_parser_rejects_garbage(data: bytes) -> None:
    p = ReplyParser()
    with pytest.raises(ProtocolError):
        p.feed(data)
    with pytest.raises(ProtocolError):
        p.feed(b"250 ok\r\n")  # a failed parser stays failed


def test_reply_parser_rejects_code_change_and_long_lines() -> None:
    with pytest.raises(ProtocolError):
        ReplyParser().feed(b"250-a\r\n251 b\r\n")
    p = ReplyParser(max_line_length=100)
    with pytest.raises(ProtocolError):
        p.feed(b"250 " + b"x" * 200)  # no CRLF needed to notice
    with pytest.raises(ProtocolError):
        ReplyParser(max_lines=3).feed(b"250-a\r\n" * 4)


@given(
    st.integers(200, 599),
    st.one_of(st.none(), st.sampled_from(["0.0", "1.1", "7.8", "5.4"])),
    st.lists(
        st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=30),
        min_size=1,
        max_size=5,
    ),
)
def test_reply_round_trip(code: int, sub: str | None, lines: list[str]) -> None:
    # 3xx replies have no enhanced class (RFC 3463 classes are 2, 4, 5).
    enhanced = f"{str(code)[0]}.{sub}" if sub and code // 100 != 3 else None
    lines = [line.strip() for line in lines]
    # Lines that themselves start like an enhanced code are ambiguous on the wire.
    if enhanced is None and lines[0][:1].isdigit():
        return
    wire = format_reply(code, enhanced, lines)
    parsed = ReplyParser().feed(wire)
    assert parsed == [Reply(code, enhanced, lines)]
    assert parsed[0].to_bytes() == wire


def test_parse_ehlo_keywords() -> None:
    lines = [
        "mx.example Hello client",
        "PIPELINING",
        "size 1000",
        "AUTH PLAIN LOGIN",
        "AUTH=LOGIN",
        "",
        "8BITMIME",
    ]
    assert parse_ehlo_keywords(lines) == {
        "PIPELINING": [],
        "SIZE": ["1000"],
        "AUTH": ["PLAIN", "LOGIN"],
        "8BITMIME": [],
    }


# ---------------------------------------------------------------- commands


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"HELO crepes.fr\r\n", ("HELO", "crepes.fr")),
        (b"mail FROM:<a@b>", ("MAIL", "FROM:<a@b>")),
        (b"DATA\n", ("DATA", "")),
        (b"RCPT TO:<a@b>   \r\n", ("RCPT", "TO:<a@b>")),
        (b"NOOP", ("NOOP", "")),
        ("MAIL FROM:<j\u00f6rg@b>".encode(), ("MAIL", "FROM:<j\u00f6rg@b>")),
    ],
)
def test_parse_command(line: bytes, expected: tuple[str, str]) -> None:
    assert parse_command(line) == expected


@pytest.mark.parametrize(
    "line",
    [
        b"",
        b"\r\n",
        b"HE\x00LO x",
        b"MAIL\tFROM:<a@b>",
        b"\xff\xfe",
        b" HELO x",
        b"-X",
        b"HELO a\rb",
    ],
)
def test_parse_command_rejects(line: bytes) -> None:
    with pytest.raises(CommandError):
        parse_command(line)


# ---------------------------------------------------------------- paths


@pytest.mark.parametrize(
    ("arg", "address", "params", "utf8"),
    [
        ("FROM:<a@b>", "a@b", {}, False),
        ("FROM: <alice@crepes.fr>", "alice@crepes.fr", {}, False),
        ("from:<alice@crepes.fr>", "alice@crepes.fr", {}, False),
        ("FROM:<>", "", {}, False),
        ("FROM:<> SIZE=10", "", {"SIZE": "10"}, False),
        ("FROM:<@x.org,@y.org:a@b.org>", "a@b.org", {}, False),
        ('FROM:<"john doe"@b.org>', '"john doe"@b.org', {}, False),
        ('FROM:<"a>b\\"c"@b.org>', '"a>b\\"c"@b.org', {}, False),
        ("FROM:<a@[1.2.3.4]>", "a@[1.2.3.4]", {}, False),
        ("FROM:<a@[IPv6:2001:db8::1]>", "a@[IPv6:2001:db8::1]", {}, False),
        ("FROM:<a@[ipv6:::ffff:1.2.3.4]>", "a@[ipv6:::ffff:1.2.3.4]", {}, False),
        ("FROM:<first.last+tag@sub.example.com>", "first.last+tag@sub.example.com", {}, False),
        (
            "FROM:<j\u00f6rg@b\u00fccher.de> SMTPUTF8",
            "j\u00f6rg@b\u00fccher.de",
            {"SMTPUTF8": None},
            True,
        ),
        (
            "FROM:<a@b> body=8bitmime  ret=HDRS envid=QQ+2B1",
            "a@b",
            {"BODY": "8bitmime", "RET": "HDRS", "ENVID": "QQ+2B1"},
            False,
        ),
    ],
)
def test_parse_mail_from(arg: str, address: str, params: dict[str, str | None], utf8: bool) -> None:
    parsed = parse_mail_from(arg)
    assert parsed.address == address
    assert parsed.params == params
    assert parsed.utf8 is utf8
    a, p, u = parsed  # also usable as a tuple
    assert (a, p, u) == (address, params, utf8)


@pytest.mark.parametrize(
    "arg",
    [
        "FROM:a@b",  # no brackets
        "FROM:<a@b",  # unterminated
        "FROM:<a>",  # no domain
        "FROM:<@b>",
        "FROM:<a@>",
        "FROM:<a..b@c>",
        "FROM:<.a@c>",
        "FROM:<a.@c>",
        "FROM:<a b@c>",
        "FROM:<a@-b.com>",
        "FROM:<a@b-.com>",
        "FROM:<a@b..com>",
        "FROM:<a@b.com.>",
        "FROM:<a@b_c.com>",
        "FROM:<a@[1.2.3.256]>",
        "FROM:<a@[1.2.3]>",
        "FROM:<a@[IPv6:zz::1]>",
        "FROM:<a@[IPv6:fe80::1%eth0]>",
        "FROM:<a@[foo:bar]>",
        "FROM:<a@[1.2.3.4>",
        'FROM:<"unterminated@b>',
        'FROM:<"a"b@c>',
        "FROM:<@x:a@b@c>",
        "FROM:<@x,y:a@b>",
        "FROM:<@x a@b>",
        "FROM:<a\u00a0b@c>",  # NBSP is not a UTF8 atext character we accept
        "FROM:<a@" + "a" * 64 + ".com>",
        "FROM:<a@" + ("abc." * 64) + "com>",
    ],
)
def test_parse_mail_from_bad_address(arg: str) -> None:
    with pytest.raises(AddressError) as info:
        parse_mail_from(arg)
    assert info.value.reason


@pytest.mark.parametrize("arg", ["", "FROM", "TO:<a@b>", "FROM<a@b>", "FRO:<a@b>"])
def test_parse_mail_from_bad_shape(arg: str) -> None:
    with pytest.raises(CommandError):
        parse_mail_from(arg)


@pytest.mark.parametrize(
    "arg", ["FROM:<a@b>SIZE=1", "FROM:<a@b> SIZE=1 size=2", "FROM:<a@b> =x", "FROM:<a@b> SIZE="]
)
def test_parse_mail_from_bad_params(arg: str) -> None:
    with pytest.raises(ParameterError):
        parse_mail_from(arg)


def test_parse_rcpt_to() -> None:
    assert parse_rcpt_to("TO:<bob@hamburger.edu>").address == "bob@hamburger.edu"
    assert parse_rcpt_to("TO: <Postmaster>").address == "Postmaster"
    assert parse_rcpt_to("to:<postmaster>").address == "postmaster"
    parsed = parse_rcpt_to("TO:<b@c> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b+40c")
    assert parsed.params == {"NOTIFY": "SUCCESS,FAILURE", "ORCPT": "rfc822;b+40c"}
    with pytest.raises(AddressError):
        parse_rcpt_to("TO:<>")
    with pytest.raises(CommandError):
        parse_rcpt_to("FROM:<a@b>")
    with pytest.raises(AddressError):
        parse_mail_from("FROM:<Postmaster>")  # only RCPT may omit the domain


def test_parse_path_and_domain_helpers() -> None:
    assert parse_path("a@b") == "a@b"
    assert parse_path("", allow_null=True) == ""
    assert is_valid_domain("xn--bcher-kva.example")
    assert is_valid_domain("b\u00fccher.example")
    assert not is_valid_domain("")
    assert not is_valid_domain("a" * 64 + ".com")


def test_parse_esmtp_params() -> None:
    assert parse_esmtp_params("") == {}
    assert parse_esmtp_params("  size=10   SMTPUTF8 x-Foo=Bar ") == {
        "SIZE": "10",
        "SMTPUTF8": None,
        "X-FOO": "Bar",
    }
    for bad in ["A=b=c", "-X=1", "A=", "A B a", "\u00e9=1"]:
        with pytest.raises(ParameterError):
            parse_esmtp_params(bad)


# ---------------------------------------------------------------- xtext


def test_xtext_examples() -> None:
    assert xtext_encode("a+b=c d") == "a+2Bb+3Dc+20d"
    assert xtext_decode("a+2Bb+3Dc+20d") == "a+b=c d"
    assert xtext_decode("a+2bb") == "a+b"  # lower-case hex tolerated
    assert xtext_encode("\u00e9") == "+C3+A9"
    assert is_xtext("rfc822;a+40b")
    for bad in ["a+2", "a+ZZ", "a b", "a=b", "\u00e9", "a+FF"]:
        with pytest.raises(ParameterError):
            xtext_decode(bad)


@given(st.text())
def test_xtext_round_trip(text: str) -> None:
    encoded = xtext_encode(text)
    assert is_xtext(encoded)
    assert xtext_decode(encoded) == text


# ---------------------------------------------------------------- content


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"a\r\nb\r\n", b"a\r\nb\r\n"),
        (b"a\nb\n", b"a\r\nb\r\n"),
        (b"a\rb\r", b"a\r\nb\r\n"),
        (b"a\r\r\nb\n\r", b"a\r\n\r\nb\r\n\r\n"),
        (b"", b""),
    ],
)
def test_normalize_line_endings(raw: bytes, expected: bytes) -> None:
    assert normalize_line_endings(raw) == expected


_CONTENT = st.lists(st.sampled_from([b"a", b".", b"\r", b"\n", b"\r\n", b".."]), max_size=60).map(
    b"".join
)


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, start = [], 0
    for p in points:
        pieces.append(data[start:p])
        start = p
    pieces.append(data[start:])
    return pieces


@given(_CONTENT, st.lists(st.integers(0, 1000), max_size=10))
def test_line_ending_normalizer_streaming(data: bytes, cuts: list[int]) -> None:
    norm = LineEndingNormalizer()
    out = b"".join(norm.feed(piece) for piece in _split(data, cuts)) + norm.flush()
    assert out == normalize_line_endings(data)


@pytest.mark.parametrize(
    ("message", "wire"),
    [
        (b"", b".\r\n"),
        (b"hi\r\n", b"hi\r\n.\r\n"),
        (b"hi", b"hi\r\n.\r\n"),
        (b".\r\n", b"..\r\n.\r\n"),
        (b"a\r\n.b\r\n..c\r\n", b"a\r\n..b\r\n...c\r\n.\r\n"),
        (b"a\n.\nb", b"a\r\n..\r\nb\r\n.\r\n"),
        (b"a\r", b"a\r\n.\r\n"),
    ],
)
def test_dot_stuff(message: bytes, wire: bytes) -> None:
    assert dot_stuff(message) == wire


@given(_CONTENT, st.lists(st.integers(0, 1000), max_size=10))
def test_dot_stuffer_streaming_matches_one_shot(data: bytes, cuts: list[int]) -> None:
    stuffer = DotStuffer()
    out = b"".join(stuffer.dot_stuff(piece) for piece in _split(data, cuts)) + stuffer.finish()
    assert out == dot_stuff(data)
    # The wire form has exactly one terminator, at the very end.
    assert out.endswith(b".\r\n")
    assert (b"\r\n" + out).find(b"\r\n.\r\n") == len(out) - 3


# ---------------------------------------------------------------- fast paths
# The ordinary case (printable ASCII, dot-atom@domain, one-line reply) takes a
# one-match fast path; whatever it accepts must come out exactly as the
# general code would make it, and everything else must still reach that code.


def _outcome(fn: Callable[[], object]) -> object:
    try:
        return ("ok", fn())
    except GrammarError as e:
        return (type(e).__name__, e.reason)


_ATEXT_REF = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-/=?^_`{|}~"
)
_LDH_REF = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-")


def _domain_ref(domain: str) -> bool:
    """is_valid_domain for ASCII, written out label by label."""
    if not domain or len(domain) > 255:
        return False
    return all(
        0 < len(label) <= 63
        and label[0] != "-"
        and label[-1] != "-"
        and all(ch in _LDH_REF for ch in label)
        for label in domain.split(".")
    )


def _dot_atom_ref(local: str) -> bool:
    return all(atom and all(ch in _ATEXT_REF for ch in atom) for atom in local.split("."))


def _path_ref(arg: str, keyword: str) -> object:
    """The general parser's answer for an ASCII MAIL/RCPT argument."""
    prefix = keyword + ":"
    if arg[: len(prefix)].upper() != prefix:
        return ("CommandError", f"expected {prefix}<address>")
    return _outcome(
        lambda: grammar._parse_path_argument(
            arg, keyword, allow_null=keyword == "FROM", allow_postmaster=keyword == "TO"
        )
    )


_PATH_PIECE_CHOICES = (
    *("a", "Z9", ".", "-", "@", "<", ">", " ", "_", "+", "=", '"', "[", "]", "é"),
    *("1.2.3.4", "postmaster", "b" * 63, "c" * 64, "d" * 200),
    *(" SIZE=1", " BODY=8BITMIME", " X=é", "\t", "\r\n"),
)
_PATH_PIECES = st.lists(st.sampled_from(_PATH_PIECE_CHOICES), max_size=14).map("".join)


@given(
    st.sampled_from(["FROM:", "from:", "FROM: ", "FROM:  ", "TO:", "to: ", "FRO:"]), _PATH_PIECES
)
def test_path_fast_path_agrees_with_general_parser(keyword: str, rest: str) -> None:
    arg = keyword + rest
    assert _outcome(lambda: tuple(parse_mail_from(arg))) == _path_ref_tuple(arg, "FROM")
    assert _outcome(lambda: tuple(parse_rcpt_to(arg))) == _path_ref_tuple(arg, "TO")


def _path_ref_tuple(arg: str, keyword: str) -> object:
    result = _path_ref(arg, keyword)
    if isinstance(result, tuple) and result[0] == "ok":
        return ("ok", tuple(result[1]))
    return result


@pytest.mark.parametrize(
    "arg",
    [
        "FROM:<a@" + ".".join(["x" * 63] * 4) + ">",  # 255 octets: valid
        "FROM:<a@" + ".".join(["x" * 63] * 4) + "x>",  # 256: too long
        "FROM:<a@" + "x" * 63 + ">",
        "FROM:<a@" + "x" * 64 + ">",
        "FROM:<a-b.c_d@e-f.g> SIZE=1  BODY=7BIT ",
        "FROM:<a@b>SIZE=1",
        "FROM:<a@b.>",
        "FROM:<a@-b>",
        "FROM:<a.@b>",
        "FROM:<>  ",
    ],
)
def test_path_fast_path_edges(arg: str) -> None:
    assert _outcome(lambda: tuple(parse_mail_from(arg))) == _path_ref_tuple(arg, "FROM")


@given(st.text(alphabet="ab-.0_é", max_size=80))
def test_domain_and_local_part_fast_paths(text: str) -> None:
    if not text.isascii():
        return
    assert is_valid_domain(text) == _domain_ref(text)
    if not text:
        expected: object = ("AddressError", "empty local part")
    elif _dot_atom_ref(text):
        expected = ("ok", len(text))
    else:
        expected = ("AddressError", "invalid local part")
    assert _outcome(lambda: grammar._parse_local_part(f"{text}@b")) == expected


@given(
    st.sampled_from([200, 250, 354, 421, 550, 599]),
    st.sampled_from([None, "2.0.0", "4.7.0", "5.1.1"]),
    st.text(max_size=20),
)
def test_format_reply_single_line_fast_path(code: int, enhanced: str | None, text: str) -> None:
    # A str without line breaks formats exactly like the one-item list.
    if "\r" in text or "\n" in text:
        return
    assert _outcome_bytes(lambda: format_reply(code, enhanced, text)) == _outcome_bytes(
        lambda: format_reply(code, enhanced, [text])
    )


def _outcome_bytes(fn: Callable[[], bytes]) -> object:
    try:
        return fn()
    except ValueError as e:
        return str(e)


def _parse_command_ref(line: bytes) -> object:
    if line.endswith(b"\n"):
        line = line[:-1]
        if line.endswith(b"\r"):
            line = line[:-1]
    if not line or any(b < 0x20 or b == 0x7F for b in line):
        return "CommandError"
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        return "CommandError"
    verb, _, arg = text.partition(" ")
    if not verb or not verb[0].isascii() or not verb[0].isalpha():
        return "CommandError"
    if not all(ch.isascii() and (ch.isalnum() or ch == "-") for ch in verb):
        return "CommandError"
    return (verb.upper(), arg.strip(" "))


@given(
    st.lists(
        st.sampled_from(
            ["MAIL", "noop", "X-1", "-", "1", " ", "  ", ":", "<a@b>", "é", "\x00", "\t", "\r"]
        ),
        max_size=6,
    ).map("".join),
    st.sampled_from(["", "\n", "\r\n"]),
)
def test_parse_command_fast_path(text: str, end: str) -> None:
    line = (text + end).encode("utf-8")
    try:
        got: object = parse_command(line)
    except CommandError:
        got = "CommandError"
    assert got == _parse_command_ref(line)


@pytest.mark.parametrize(
    ("wire", "code", "enhanced", "lines"),
    [
        (b"250 2.1.0 Ok\r\n", 250, "2.1.0", ["Ok"]),
        (b"250 2.1.0\r\n", 250, "2.1.0", [""]),
        (b"250 2.0.0  two spaces\r\n", 250, "2.0.0", [" two spaces"]),
        (b"250 4.1.0 class differs\r\n", 250, None, ["4.1.0 class differs"]),
        (b"550 5.1.1 caf\xc3\xa9 \xff\r\n", 550, "5.1.1", ["caf\u00e9 \ufffd"]),
        (b"250 2.1.0x not a code\r\n", 250, None, ["2.1.0x not a code"]),
        (b"354 End data with <CR><LF>.<CR><LF>\r\n", 354, None, ["End data with <CR><LF>.<CR><LF>"]),
        (b"250-2.0.0 first\r\n250 2.0.0 last\r\n", 250, "2.0.0", ["first", "last"]),
    ],
)
def test_one_line_replies_parse_as_the_general_path_does(wire: bytes, code: int, enhanced: str | None, lines: list[str]) -> None:
    """Single-line replies with an enhanced code take a one-match fast path: the
    result must be what the line-by-line parse gives."""
    (reply,) = ReplyParser().feed(wire)
    assert (reply.code, reply.enhanced, reply.lines) == (code, enhanced, lines)
    # Fed a byte at a time, replies come out the same.
    p = ReplyParser()
    out = [r for i in range(len(wire)) for r in p.feed(wire[i : i + 1])]
    assert [(r.code, r.enhanced, r.lines) for r in out] == [(code, enhanced, lines)]
