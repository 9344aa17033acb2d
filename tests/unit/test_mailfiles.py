from __future__ import annotations

import mailbox
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailhouse.mailfiles import (
    MailFile,
    detect_format,
    read_mailfiles,
    write_maildir,
    write_mbox,
)

Writer = Callable[[Path, Iterable[MailFile]], int]
FORMATS: list[tuple[str, Writer]] = [("mbox", write_mbox), ("maildir", write_maildir)]

TRICKY = [
    MailFile(
        b"From: Alice <alice@example.org>\r\nSubject: quoting\r\n\r\n"
        b"From here on\r\n>From there\r\n>>From x\r\nFrom Mon Jan  1 00:00:00 2024\r\nend\r\n",
        {"\\Seen", "\\Flagged", "Junk", "$Forwarded"},
        1700000000.0,
    ),
    MailFile(b"Subject: no final newline\r\n\r\nabc", set(), 1600000000.0),
    MailFile(b"Do you like ketchup?\r\nI do.\r\n", {"\\Answered", "\\Draft", "\\Deleted"}, 1500000000.0),
    MailFile(
        "Subject: caf\u00e9\r\n\r\n8-bit \xe9\xff\x00\r\n".encode("latin-1") + "€\r\n".encode(),
        {"\\Seen"},
        86400.0,
    ),
    MailFile(b"", set(), 0.0),
    MailFile(b"\r\n", set(), 5.0),
    MailFile(b"X: y\r\n\r\na\r\r\nb\rc\r\n\r\n\r\n", {"kw"}, 6.0),
    MailFile(
        b"Status: RO\r\nX-Status: \r\nX-Keywords: \r\nSubject: own status headers\r\n\r\nb\r\n",
        set(),
        7.0,
    ),
    MailFile(b"From nobody Mon Jan  1 00:00:00 2024\r\n", {"\\Seen"}, 8.0),
    MailFile(b"Return-Path: <bounce@example.org>\r\nContent-Length: 2\r\n\r\nlonger than 2\r\n", set(), 9.0),
]


def assert_same(expected: list[MailFile], got: list[MailFile]) -> None:
    assert len(got) == len(expected)
    for want, have in zip(expected, got, strict=True):
        assert have.raw == want.raw
        assert have.flags == want.flags
        assert want.internal_date is not None and have.internal_date is not None
        assert int(have.internal_date) == int(want.internal_date)


@pytest.mark.parametrize(("fmt", "write"), FORMATS)
def test_round_trip_tricky_messages(tmp_path: Path, fmt: str, write: Writer) -> None:
    target = tmp_path / "export"
    assert write(target, TRICKY) == len(TRICKY)
    assert detect_format(target) == fmt
    assert_same(TRICKY, list(read_mailfiles(target)))


@pytest.mark.parametrize(("fmt", "write"), FORMATS)
def test_fractional_dates_round_to_the_second(tmp_path: Path, fmt: str, write: Writer) -> None:
    target = tmp_path / fmt
    write(target, [MailFile(b"A: b\r\n\r\nc\r\n", set(), 1700000000.75)])
    (back,) = read_mailfiles(target)
    assert back.internal_date == 1700000000.0


RAW_LINES = st.lists(
    st.one_of(
        st.binary(max_size=30).map(lambda b: b.replace(b"\n", b"")),
        st.sampled_from([b"From me", b">From x", b">>From ", b"From ", b"Status: RO", b"", b"."]),
    ),
    max_size=12,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(
            RAW_LINES,
            st.booleans(),
            st.sets(st.sampled_from(["\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft", "$Forwarded", "Junk", "$Label1"])),
            st.integers(min_value=0, max_value=4_000_000_000),
        ),
        max_size=6,
    )
)
def test_round_trip_property(items: list[tuple[list[bytes], bool, set[str], int]]) -> None:
    messages = [
        MailFile(b"\r\n".join(lines) + (b"\r\n" if final else b""), flags, float(date))
        for lines, final, flags, date in items
    ]
    with tempfile.TemporaryDirectory() as tmp:
        for fmt, write in FORMATS:
            target = Path(tmp) / fmt
            assert write(target, messages) == len(messages)
            assert_same(messages, list(read_mailfiles(target)))


# --- mbox details -------------------------------------------------------------------------


def test_mbox_file_layout(tmp_path: Path) -> None:
    target = tmp_path / "out.mbox"
    write_mbox(
        target,
        [MailFile(b"From: a@example.org\r\n\r\nFrom the start\r\n", {"\\Seen", "\\Answered"}, 0.0)],
    )
    data = target.read_bytes()
    assert b"\r" not in data
    assert data == (
        b"From a@example.org Thu Jan  1 00:00:00 1970\n"
        b"Status: RO\nX-Status: A\nX-Keywords:\n"
        b"From: a@example.org\n\n>From the start\n\n"
    )


def test_mbox_sender_and_date_fallbacks(tmp_path: Path) -> None:
    target = tmp_path / "out.mbox"
    write_mbox(
        target,
        [
            MailFile(b"Return-Path: <b@example.org>\r\nDate: Mon, 6 Nov 2023 10:00:00 +0100\r\n\r\nx", set(), None),
            MailFile(b"Return-Path: <>\r\n\r\nx", set(), 0.0),
        ],
    )
    lines = [line for line in target.read_bytes().split(b"\n") if line.startswith(b"From ")]
    assert lines == [
        b"From b@example.org Mon Nov  6 09:00:00 2023",
        b"From MAILER-DAEMON Thu Jan  1 00:00:00 1970",
    ]
    first = next(read_mailfiles(target))
    assert first.internal_date == 1699261200.0


def test_stdlib_mailbox_reads_our_mbox(tmp_path: Path) -> None:
    target = tmp_path / "out.mbox"
    write_mbox(target, TRICKY)
    box = mailbox.mbox(target, create=False)
    try:
        messages = list(box)
        assert len(messages) == len(TRICKY)
        first = messages[0]
        assert first["Subject"] == "quoting"
        assert first["Status"] == "RO"
        assert set(first.get_flags()) == set("ROF")
        assert messages[1]["Subject"] == "no final newline"
    finally:
        box.close()


FOREIGN_MBOX = (
    b"\n"
    b"From MAILER-DAEMON Fri Jul  8 12:08:34 2011\n"
    b"From: a@example.org\nStatus: RO\nX-Status: AF\nX-Keywords: $label1 Work\nSubject: one\n\n"
    b"From the body, not a separator\n>From quoted\n\n"
    b"From b@example.org Sat Jul  9 00:00:00 2011\n"
    b"Subject: two\nX-Mozilla-Status: 0005\n\nbody two\n\n"
    b"From - Sun Jul 10 00:00:00 +0200 2011\n"
    b"Subject: three\n\nno blank line at the end of the file\n"
)


def test_foreign_mboxo(tmp_path: Path) -> None:
    target = tmp_path / "foreign"
    target.write_bytes(FOREIGN_MBOX)
    one, two, three = read_mailfiles(target)
    assert one.raw == (
        b"From: a@example.org\r\nStatus: RO\r\nX-Status: AF\r\nX-Keywords: $label1 Work\r\n"
        b"Subject: one\r\n\r\nFrom the body, not a separator\r\nFrom quoted\r\n"
    )
    assert one.flags == {"\\Seen", "\\Answered", "\\Flagged", "$label1", "Work"}
    assert one.internal_date == 1310126914.0
    assert two.flags == {"\\Seen", "\\Flagged"}
    assert two.raw == b"Subject: two\r\nX-Mozilla-Status: 0005\r\n\r\nbody two\r\n"
    assert three.internal_date == 1310248800.0
    assert three.raw == b"Subject: three\r\n\r\nno blank line at the end of the file"


def test_mboxcl2_content_length(tmp_path: Path) -> None:
    body = b"line\nFrom x@y Mon Jan  1 00:00:00 2024\n>From kept\n"
    target = tmp_path / "cl2"
    target.write_bytes(
        b"From a@b Mon Jan  1 00:00:00 2024\n"
        b"Content-Length: " + str(len(body)).encode() + b"\n\n" + body + b"\n"
        b"From a@b Mon Jan  1 00:00:01 2024\nSubject: next\n\nx\n\n"
    )
    first, second = read_mailfiles(target)
    assert first.raw == (b"Content-Length: %d\n\n" % len(body) + body).replace(b"\n", b"\r\n")
    assert second.raw == b"Subject: next\r\n\r\nx\r\n"


def test_crlf_mbox_file(tmp_path: Path) -> None:
    target = tmp_path / "crlf"
    target.write_bytes(
        b"From a@b Mon Jan  1 00:00:00 2024\r\nSubject: one\r\n\r\nbody\r\n\r\n"
        b"From a@b Mon Jan  1 00:00:00 2024\r\nSubject: two\r\n\r\nbody\r\n\r\n"
    )
    assert [m.raw for m in read_mailfiles(target)] == [
        b"Subject: one\r\n\r\nbody\r\n",
        b"Subject: two\r\n\r\nbody\r\n",
    ]


def test_empty_mbox(tmp_path: Path) -> None:
    target = tmp_path / "empty"
    target.write_bytes(b"")
    assert detect_format(target) == "mbox"
    assert list(read_mailfiles(target)) == []
    assert write_mbox(tmp_path / "none", []) == 0
    assert (tmp_path / "none").read_bytes() == b""


# --- Maildir details ----------------------------------------------------------------------


def test_maildir_layout(tmp_path: Path) -> None:
    target = tmp_path / "Maildir"
    write_maildir(
        target,
        [
            MailFile(b"A: 1\r\n\r\nx\r\n", set(), 1000.0),
            MailFile(b"A: 2\r\n\r\ny\r\n", {"\\Seen", "\\Flagged", "Work"}, 2000.0),
        ],
    )
    assert {p.name for p in target.iterdir()} == {"cur", "new", "tmp", "dovecot-keywords"}
    assert list((target / "tmp").iterdir()) == []
    (new,) = (target / "new").iterdir()
    (cur,) = (target / "cur").iterdir()
    assert ":" not in new.name
    assert cur.name.endswith(":2,FSa")
    assert new.read_bytes() == b"A: 1\n\nx\n"
    assert os.stat(new).st_mtime == 1000.0
    assert os.stat(cur).st_mtime == 2000.0
    assert (target / "dovecot-keywords").read_text() == "0 Work\n"
    # adding more keeps names unique and keyword letters stable
    write_maildir(target, [MailFile(b"A: 3\r\n\r\n", {"Other", "Work"}, 3000.0)])
    assert (target / "dovecot-keywords").read_text() == "0 Work\n1 Other\n"
    assert [m.flags for m in read_mailfiles(target)] == [set(), {"\\Seen", "\\Flagged", "Work"}, {"Work", "Other"}]


def test_foreign_maildir(tmp_path: Path) -> None:
    target = tmp_path / "foreign"
    for sub in ("cur", "new"):
        (target / sub).mkdir(parents=True)  # no tmp/: still readable
    (target / "new" / "1000.1_2.host").write_bytes(b"Subject: new\n\nunflagged\n")
    (target / "cur" / "1000.1_10.host:2,RSc").write_bytes(b"Subject: cur\r\n\r\ncrlf already\r\n")
    (target / "cur" / "999.x.host!2,T").write_bytes(b"Subject: bang\n\n")
    (target / "cur" / ".hidden").write_bytes(b"ignored")
    (target / "dovecot-keywords").write_text("2 Important\n")
    assert detect_format(target) == "maildir"
    got = list(read_mailfiles(target))
    assert [m.raw for m in got] == [
        b"Subject: bang\r\n\r\n",
        b"Subject: new\r\n\r\nunflagged\r\n",
        b"Subject: cur\r\n\r\ncrlf already\r\n",
    ]
    assert [m.flags for m in got] == [{"\\Deleted"}, set(), {"\\Answered", "\\Seen", "Important"}]


def test_maildir_too_many_keywords(tmp_path: Path) -> None:
    keywords = {f"k{i:02d}" for i in range(30)}
    write_maildir(tmp_path / "m", [MailFile(b"x", keywords | {"\\Seen"}, 1.0)])
    (back,) = read_mailfiles(tmp_path / "m")
    assert "\\Seen" in back.flags
    assert len(back.flags - {"\\Seen"}) == 26


# --- detect_format ------------------------------------------------------------------------


def test_detect_format_errors(tmp_path: Path) -> None:
    (tmp_path / "dir").mkdir()
    with pytest.raises(ValueError, match="not a Maildir"):
        detect_format(tmp_path / "dir")
    (tmp_path / "text").write_bytes(b"Subject: not an mbox\n\n")
    with pytest.raises(ValueError, match="not an mbox"):
        detect_format(tmp_path / "text")
    with pytest.raises(ValueError, match="no such file"):
        detect_format(tmp_path / "missing")
    with pytest.raises(ValueError, match="not an mbox"):
        list(read_mailfiles(tmp_path / "text"))
