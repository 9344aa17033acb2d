from __future__ import annotations

import codecs
import mmap
import re

from hypothesis import example, given, settings
from hypothesis import strategies as st

from mailhouse.mime.headers import (
    codec_name,
    decode_bytes,
    decode_words,
    field_map,
    find_header_end,
    get_header,
    has_header_section,
    iter_fields,
    param_text,
    parse_content_type,
    parse_disposition,
    split_header,
    unfold,
)

KETCHUP = b"Do you like ketchup?\r\nI do.\r\n"


# --- split_header / find_header_end -------------------------------------------------


def test_split_header_crlf() -> None:
    raw = b"Subject: hi\r\nFrom: a@b\r\n\r\nbody\r\n"
    header, offset = split_header(raw)
    assert header == b"Subject: hi\r\nFrom: a@b\r\n"
    assert raw[offset:] == b"body\r\n"


def test_split_header_bare_lf() -> None:
    raw = b"Subject: hi\nFrom: a@b\n\nbody\n"
    header, offset = split_header(raw)
    assert header == b"Subject: hi\nFrom: a@b\n"
    assert raw[offset:] == b"body\n"


def test_split_header_no_header_section() -> None:
    header, offset = split_header(KETCHUP)
    assert header == b""
    assert offset == 0


def test_split_header_empty_header_section() -> None:
    header, offset = split_header(b"\r\nbody")
    assert header == b""
    assert offset == 2


def test_split_header_only_headers_without_final_newline() -> None:
    raw = b"Subject: hi\r\nX: y"
    header, offset = split_header(raw)
    assert header == raw
    assert offset == len(raw)


def test_split_header_empty_message() -> None:
    assert split_header(b"") == (b"", 0)


def test_split_header_continuations_and_whitespace_line() -> None:
    raw = b"Subject: a\r\n  b\r\n \r\nX: y\r\n\r\nbody"
    header, offset = split_header(raw)
    assert raw[offset:] == b"body"
    assert get_header(header, "x") == "y"
    assert get_header(header, "subject") == "a  b"


def test_non_header_line_ends_header_without_separator() -> None:
    raw = b"Subject: hi\r\nthis is body text\r\nmore\r\n"
    header, offset = split_header(raw)
    assert header == b"Subject: hi\r\n"
    assert raw[offset:] == b"this is body text\r\nmore\r\n"


def test_find_header_end_window_inside_buffer() -> None:
    buf = b"xxxxContent-Type: text/plain\r\n\r\nhello\r\nyyyy"
    fields_end, body_start = find_header_end(buf, 4, len(buf) - 4)
    assert buf[4:fields_end] == b"Content-Type: text/plain\r\n"
    assert buf[body_start : len(buf) - 4] == b"hello\r\n"


def test_find_header_end_on_mmap_and_memoryview() -> None:
    raw = b"A: b\r\n\r\nbody"
    with mmap.mmap(-1, len(raw)) as mm:
        mm.write(raw)
        assert find_header_end(mm) == (6, 8)
    assert find_header_end(memoryview(raw)) == (6, 8)


def test_long_header_line() -> None:
    raw = b"X-Long: " + b"a" * 100_000 + b"\r\nSubject: s\r\n\r\nbody"
    header, offset = split_header(raw)
    assert raw[offset:] == b"body"
    assert get_header(header, "Subject") == "s"


@given(st.binary(max_size=400))
def test_find_header_end_is_total(raw: bytes) -> None:
    fields_end, body_start = find_header_end(raw)
    assert 0 <= fields_end <= body_start <= len(raw)
    assert body_start - fields_end <= 2


# --- has_header_section -------------------------------------------------------------


def test_has_header_section() -> None:
    assert has_header_section(b"Received: from x\r\n\r\n")
    assert has_header_section(b"Subject : obsolete spacing\r\n")
    assert has_header_section(b"\r\nbody after an empty header")
    assert has_header_section(b"")
    assert not has_header_section(KETCHUP)
    assert not has_header_section(b"From someone Mon Jan  1 00:00:00 2024\n")
    assert not has_header_section(b" continuation first\r\n")
    assert not has_header_section(b"\xc3\xa9t\xc3\xa9: 8-bit name\r\n")


# --- fields -------------------------------------------------------------------------


def test_get_header_first_occurrence_case_insensitive_unfolded() -> None:
    header = b"Received: one\r\nreceived: two\r\nSubject: a\r\n\tfolded\r\n"
    assert get_header(header, "RECEIVED") == "one"
    assert get_header(header, "Subject") == "a\tfolded"
    assert get_header(header, "To") is None


def test_get_header_keeps_encoded_words() -> None:
    assert get_header(b"Subject: =?utf-8?q?x?=\r\n", "subject") == "=?utf-8?q?x?="


def test_eight_bit_header_values() -> None:
    assert get_header("Subject: café\r\n".encode(), "subject") == "café"
    # Not UTF-8: Latin-1, which keeps every byte recoverable.
    value = get_header(b"Subject: caf\xe9\r\n", "subject")
    assert value == "café"
    assert value.encode("latin-1") == b"caf\xe9"


def test_iter_fields_and_field_map() -> None:
    header = b"A: 1\r\nB: 2\r\nA: 3\r\n"
    assert list(iter_fields(header)) == [(b"A", b" 1\r"), (b"B", b" 2\r"), (b"A", b" 3\r")]
    assert field_map(header) == {b"a": b" 1\r", b"b": b" 2\r"}
    assert unfold(b" a\r\n b\r") == "a b"
    assert unfold(b" a\n b") == "a b"  # bare LF folding


# --- RFC 2047 -------------------------------------------------------------------------


def test_decode_words() -> None:
    assert decode_words("=?utf-8?q?caf=C3=A9?=") == "café"
    assert decode_words("=?ISO-8859-1?Q?caf=E9_au_lait?=") == "café au lait"
    assert decode_words("=?utf-8?B?SGVsbG8g4oKs?=") == "Hello €"
    assert decode_words("plain text") == "plain text"


def test_decode_words_adjacent_whitespace_dropped() -> None:
    assert decode_words("=?utf-8?q?a?= =?utf-8?q?b?=") == "ab"
    assert decode_words("=?utf-8?q?a?=\t =?utf-8?q?b?= c") == "ab c"
    assert decode_words("x =?utf-8?q?a?= y") == "x a y"


def test_decode_words_multibyte_split_across_words() -> None:
    # "€" is E2 82 AC; split over two encoded-words
    assert decode_words("=?utf-8?q?=E2=82?= =?utf-8?q?=AC?=") == "€"


def test_decode_words_lenient() -> None:
    assert decode_words("=?unknown-charset?q?abc?=") == "abc"
    assert decode_words("=?utf-8*en?q?hi?=") == "hi"
    assert decode_words("=?utf-8?b?SGk?=") == "Hi"  # missing padding
    assert decode_words('"=?utf-8?q?J=C3=B6rg?=" <j@x>') == '"Jörg" <j@x>'
    assert decode_words("=?utf-8?x?abc?=") == "=?utf-8?x?abc?="
    assert decode_words("=?base64?q?abc?=") == "abc"  # not a charset: falls back


@given(st.text(max_size=200))
def test_decode_words_is_total(s: str) -> None:
    decode_words(s)
    decode_words("=?utf-8?b?" + s + "?=")
    decode_words("=?" + s + "?q?" + s + "?=")


def test_decode_bytes() -> None:
    assert decode_bytes("é".encode("latin-1"), "iso-8859-1") == "é"
    assert decode_bytes("é".encode(), "us-ascii") == "é"  # mislabelled UTF-8
    assert decode_bytes(b"\xe9", "us-ascii") == "\ufffd"
    assert decode_bytes(b"\xe9", "no-such-charset") == "é"
    assert decode_bytes(b"a\xe2\x82", "utf-8", final=False) == "a"
    assert decode_bytes(b"\x00abc", None) == "\x00abc"


# --- MIME parameters -----------------------------------------------------------------


def test_parse_content_type() -> None:
    assert parse_content_type('Text/Plain; Charset="UTF-8"; format=flowed') == (
        "text",
        "plain",
        {"charset": "UTF-8", "format": "flowed"},
    )
    assert parse_content_type('multipart/mixed;\tboundary="a;b \\"c\\""') == (
        "multipart",
        "mixed",
        {"boundary": 'a;b "c"'},
    )


def test_parse_content_type_invalid_keeps_params() -> None:
    assert parse_content_type("text; charset=utf-8") == (None, None, {"charset": "utf-8"})
    assert parse_content_type("") == (None, None, {})


def test_parse_content_type_lenient_values() -> None:
    _, _, params = parse_content_type('application/pdf; name=my file.pdf ; x="unterminated')
    assert params == {"name": "my file.pdf", "x": "unterminated"}
    _, _, params = parse_content_type("text/plain; charset=a; CHARSET=b")
    assert params == {"charset": "a"}


def test_rfc2231_continuations() -> None:
    value = (
        "application/pdf; name*0*=UTF-8''%E2%82%AC%20rates; name*1*=%20and%20more;\r\n"
        ' name*2=".pdf"; title*0="Plain "; title*1="title"'
    )
    _, _, params = parse_content_type(value)
    assert params == {
        "name*": "UTF-8''%E2%82%AC%20rates%20and%20more.pdf",
        "title": "Plain title",
    }
    assert param_text(params, "name") == "€ rates and more.pdf"
    assert param_text(params, "title") == "Plain title"
    assert param_text(params, "missing") is None


def test_rfc2231_out_of_order_and_language() -> None:
    _, params = parse_disposition(
        "attachment; filename*1=\"b.txt\"; filename*0*=iso-8859-1'fr'%E9t%E9_"
    )
    assert param_text(params, "filename") == "été_b.txt"


def test_param_text_encoded_word_in_filename() -> None:
    _, params = parse_disposition('attachment; filename="=?utf-8?B?w6l0w6kucGRm?="')
    assert params == {"filename": "=?utf-8?B?w6l0w6kucGRm?="}
    assert param_text(params, "filename") == "été.pdf"


def test_parse_disposition() -> None:
    assert parse_disposition("Attachment; filename=a.txt; size=3") == (
        "attachment",
        {"filename": "a.txt", "size": "3"},
    )
    assert parse_disposition(";filename=x") == (None, {"filename": "x"})


@given(st.text(max_size=200))
def test_parse_params_is_total(value: str) -> None:
    _, _, params = parse_content_type(value)
    for name in params:
        param_text(params, name.rstrip("*"))
    parse_disposition(value)


# --- fast paths against the reference semantics ----------------------------------------

# The header block as one regex matched it before find_header_end searched
# for the first bad line instead.
_REFERENCE_BLOCK = re.compile(
    rb"(?:[\x21-\x39\x3b-\x7e]+[ \t]*:[^\n]*(?:\n|\Z)(?:[ \t][^\n]*(?:\n|\Z))*)*"
)


def _reference_header_end(buf: bytes, start: int, end: int) -> tuple[int, int]:
    m = _REFERENCE_BLOCK.match(buf, start, end)
    e = m.end() if m is not None else start
    if e >= end:
        return end, end
    if buf[e] == 10:
        return e, e + 1
    if buf[e] == 13 and e + 1 < end and buf[e + 1] == 10:
        return e, e + 2
    return e, e


LINES = st.sampled_from(
    [
        b"Subject: s", b"X :obsolete", b"To:", b" folded", b"\tfolded", b"", b"\r", b" ", b"bad line",
        b": nameless", b"N\xe4me: v", b"x" * 40, b"A:b:c", b"\x7f: del", b"~!#: odd", b"Key\t\t: v\r",
    ]
)  # fmt: skip


@settings(max_examples=400)
@given(
    st.lists(LINES, max_size=10), st.sampled_from([b"\r\n", b"\n"]), st.booleans(),
    st.binary(max_size=6), st.integers(0, 3), st.integers(0, 3),
)  # fmt: skip
def test_find_header_end_matches_reference(
    lines: list[bytes], eol: bytes, final: bool, tail: bytes, lo: int, hi: int
) -> None:
    raw = b"a:\n"[:lo] + eol.join(lines) + (eol if final else b"") + tail + b"\n\r\n"[:hi]
    start, end = lo, len(raw) - hi
    assert find_header_end(raw, start, end) == _reference_header_end(raw, start, end)
    assert find_header_end(memoryview(raw), start, end) == _reference_header_end(raw, start, end)
    fields_end, _ = _reference_header_end(raw, 0, len(raw))
    assert list(iter_fields(raw)) == list(iter_fields(raw[:fields_end]))
    assert field_map(raw) == field_map(raw[:fields_end], True)


def _reference_decode(data: bytes, charset: str | None, final: bool) -> str:
    """decode_bytes before plain decode() was tried ahead of the incremental decoder."""
    codec = codec_name(charset)
    for name in (codec, "utf-8"):
        if name is None:
            continue
        try:
            if final:
                return data.decode(name)
            return codecs.getincrementaldecoder(name)("strict").decode(data, False)
        except Exception:
            continue
    try:
        return data.decode(codec or "latin-1", "replace")
    except Exception:
        return data.decode("latin-1")


CHARSETS = st.sampled_from(
    [
        "utf-8", "us-ascii", "iso-8859-1", "iso-8859-15", "windows-1252", "koi8-r", "shift_jis",
        "gb2312", "utf-7", "utf-16", "iso-2022-jp", "cp037", "bogus", "", "UTF-8*en",
    ]
)  # fmt: skip


@settings(max_examples=500)
@example(b"a+AGE", "utf-7", False, 0)  # plain decode() would flush the open base64 run
@example(b"\x1b$B", "iso-2022-jp", False, 0)
@example(b"a\xe2\x82", "utf-8", False, 0)
@given(
    st.binary(max_size=40) | st.text(max_size=20).map(lambda t: t.encode()),
    CHARSETS,
    st.booleans(),
    st.integers(0, 40),
)
def test_decode_bytes_matches_reference(data: bytes, charset: str, final: bool, cut: int) -> None:
    data = data[: len(data) - cut] if cut < len(data) else data  # truncated multi-byte endings
    assert decode_bytes(data, charset, final) == _reference_decode(data, charset, final)


def test_codec_name() -> None:
    assert codec_name(None) is None
    assert codec_name("") is None
    assert codec_name("US-ASCII") == "ascii"
    assert codec_name('"utf-8"') == "utf-8"
    assert codec_name("gb2312") == "gb18030"
    assert codec_name("base64") is None
    assert codec_name("no-such-charset") is None
    # long labels are looked up without being cached, with the same answer
    assert codec_name("utf-8" + " " * 100) == "utf-8"
    assert codec_name("x" * 100) is None
