"""IMAP against `mailhouse serve` with Python's imaplib: STARTTLS, implicit
TLS, sessions seeing each other, IDLE latency, changes made by the CLI."""

from __future__ import annotations

import imaplib
import json
import smtplib
import socket
import time
from collections.abc import Iterator

import pytest

from tests.integration.conftest import tls_context
from tests.world import MailServer


def _recv(sock: socket.socket) -> bytes:
    """One recv that fails the test, instead of spinning forever, when the server has closed."""
    chunk = sock.recv(4096)
    if not chunk:
        raise AssertionError("connection closed")
    return chunk


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MailServer]:
    s = MailServer(tmp_path_factory.mktemp("imap"), "imap.test", listeners=("smtp", "imap", "imaps"))
    s.cli("user", "add", "bob@imap.test", "--password", "pw")
    s.cli("user", "add", "eve@imap.test", "--password", "pw2")
    with s:
        with smtplib.SMTP("127.0.0.1", s.port("smtp"), timeout=10) as c:
            for i in range(3):
                c.sendmail("a@example.org", ["bob@imap.test"], b"Subject: hello %d\r\n\r\nbody %d\r\n" % (i, i))
        yield s


def _login(srv: MailServer, user: str = "bob@imap.test", pw: str = "pw") -> imaplib.IMAP4:
    m = imaplib.IMAP4("127.0.0.1", srv.port("imap"), timeout=10)
    m.starttls(tls_context())
    m.login(user, pw)
    return m


def test_starttls_login_fetch_search(srv: MailServer) -> None:
    m = _login(srv)
    typ, data = m.select("INBOX")
    assert typ == "OK" and int(data[0] or b"0") >= 3
    typ, data = m.uid("FETCH", "1:*", "(UID FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert typ == "OK" and b"Subject: hello 0" in data[0][1]  # type: ignore[index]
    shown = srv.cli("mailbox", "show", "bob@imap.test", "1").stdout
    typ, data = m.fetch("1", "(BODY.PEEK[])")
    assert data[0][1] == shown  # type: ignore[index]
    typ, data = m.search(None, "SUBJECT", "hello")
    assert data[0].split()[:3] == [b"1", b"2", b"3"]
    m.logout()


def test_implicit_tls_and_isolation(srv: MailServer) -> None:
    m = imaplib.IMAP4_SSL("127.0.0.1", srv.port("imaps"), ssl_context=tls_context(), timeout=10)
    m.login("eve@imap.test", "pw2")
    typ, data = m.select("INBOX")
    assert typ == "OK" and data == [b"0"]  # eve sees only her own mailboxes
    assert m.select("bob@imap.test/INBOX")[0] == "NO"
    m.logout()


def test_bad_password_is_refused(srv: MailServer) -> None:
    m = imaplib.IMAP4("127.0.0.1", srv.port("imap"), timeout=10)
    m.starttls(tls_context())
    with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        m.login("bob@imap.test", "nope")
    m.logout()


def test_idle_sees_delivery_fast_and_cli_changes(srv: MailServer) -> None:
    m = _login(srv)
    m.select("INBOX")
    sock = m.socket()
    tag = m._new_tag().decode()  # type: ignore[attr-defined]
    m.send(f"{tag} IDLE\r\n".encode())
    assert m.readline().startswith(b"+ ")
    with smtplib.SMTP("127.0.0.1", srv.port("smtp"), timeout=10) as c:
        c.sendmail("a@example.org", ["bob@imap.test"], b"Subject: idle\r\n\r\nnew\r\n")
        sent = time.monotonic()
    sock.settimeout(5)
    line = m.readline()
    assert line.endswith(b"EXISTS\r\n"), line
    assert time.monotonic() - sent < 0.5
    # A change by another process (the CLI) is seen by polling.
    rows = json.loads(srv.cli("mailbox", "list", "bob@imap.test", "--json").stdout)
    mbox = srv.root / "import.mbox"
    mbox.write_bytes(b"From a@example.org Mon Jan  1 00:00:00 2024\nSubject: imported\n\nhi\n")
    srv.cli("mailbox", "import", "bob@imap.test", str(mbox))
    line = m.readline()
    while line.endswith(b"RECENT\r\n"):
        line = m.readline()
    assert line == b"* %d EXISTS\r\n" % (len(rows) + 1), line
    m.send(b"DONE\r\n")
    while True:
        line = m.readline()
        if not line:
            raise AssertionError("connection closed")
        if line.startswith(tag.encode()):
            break
    m.logout()


def test_two_sessions_expunge_and_move(srv: MailServer) -> None:
    a = _login(srv)
    b = _login(srv)
    a.select("INBOX")
    b.select("INBOX")
    a.append("INBOX", None, None, b"Subject: to delete\r\n\r\nx\r\n")
    typ, data = b.noop()
    typ, data = b.uid("SEARCH", None, "SUBJECT", '"to delete"')
    uid = data[0].split()[-1].decode()
    b.uid("STORE", uid, "+FLAGS", "(\\Deleted)")
    b.expunge()
    a.noop()
    assert a.untagged_responses.get("EXPUNGE"), a.untagged_responses
    typ, data = a.uid("MOVE", "1", "Archive")
    assert typ == "OK"
    typ, data = a.status("Archive", "(MESSAGES)")
    assert b"MESSAGES 1" in data[0]
    a.logout()
    b.logout()


def test_shutdown_says_bye(tmp_path_factory: pytest.TempPathFactory) -> None:
    s = MailServer(tmp_path_factory.mktemp("imapstop"), "stop.test", listeners=("imap",))
    s.cli("user", "add", "bob@stop.test", "--password", "pw")
    with s:
        sock = socket.create_connection(("127.0.0.1", s.port("imap")), timeout=10)
        assert sock.recv(4096).startswith(b"* OK")
        sock.sendall(b"a LOGIN bob@stop.test pw\r\n")
        assert b"a OK" in sock.recv(4096)
        assert s.stop() == 0
        assert b"* BYE" in sock.recv(4096)


def test_compress_deflate_over_tls(srv: MailServer) -> None:
    import zlib

    raw = socket.create_connection(("127.0.0.1", srv.port("imaps")), timeout=10)
    sock = tls_context().wrap_socket(raw)
    assert sock.recv(4096).startswith(b"* OK")
    sock.sendall(b"a LOGIN bob@imap.test pw\r\n")
    assert b"a OK" in sock.recv(4096)
    deflate = zlib.compressobj(wbits=-15)
    inflate = zlib.decompressobj(wbits=-15)
    # The first compressed command travels in the same packet as COMPRESS.
    sock.sendall(b"b COMPRESS DEFLATE\r\n" + deflate.compress(b"c SELECT INBOX\r\n") + deflate.flush(zlib.Z_SYNC_FLUSH))
    data = b""
    while b"b OK" not in data:
        data += _recv(sock)
    rest = data.split(b"b OK DEFLATE active\r\n", 1)[1]
    out = inflate.decompress(rest)
    while b"c OK" not in out:
        out += inflate.decompress(_recv(sock))
    assert b"EXISTS" in out
    sock.sendall(deflate.compress(b"d LOGOUT\r\n") + deflate.flush(zlib.Z_SYNC_FLUSH))
    out = b""
    while b"d OK" not in out:
        out += inflate.decompress(_recv(sock))
    sock.close()


def test_recent_is_not_given_again_after_a_restart(tmp_path_factory: pytest.TempPathFactory) -> None:
    """A message one session was told of as \\Recent before a restart is not \\Recent
    to the next session after it (the mark is kept in the store); one that
    arrived since is, to exactly one session."""
    s = MailServer(tmp_path_factory.mktemp("recent"), "recent.test", listeners=("smtp", "imap"))
    s.cli("user", "add", "bob@recent.test", "--password", "pw")

    def deliver(n: int) -> None:
        with smtplib.SMTP("127.0.0.1", s.port("smtp"), timeout=10) as c:
            c.sendmail("a@example.org", ["bob@recent.test"], b"Subject: r%d\r\n\r\nbody\r\n" % n)

    def recent_on_select() -> tuple[int, bytes]:  # (RECENT at SELECT, STATUS RECENT just before)
        m = imaplib.IMAP4("127.0.0.1", s.port("imap"), timeout=10)
        m.starttls(tls_context())
        m.login("bob@recent.test", "pw")
        _, status = m.status("INBOX", "(RECENT)")
        m.select("INBOX")
        _, data = m.response("RECENT")
        m.logout()
        return int(data[0] or b"0"), status[0].rsplit(b"RECENT ", 1)[1].rstrip(b")")  # type: ignore[arg-type, union-attr]

    with s:
        deliver(1)
        assert recent_on_select() == (1, b"1")
        assert recent_on_select() == (0, b"0")
    time.sleep(0.2)
    with s:
        deliver(2)
        assert recent_on_select() == (1, b"1")  # the new one only
        assert recent_on_select() == (0, b"0")
