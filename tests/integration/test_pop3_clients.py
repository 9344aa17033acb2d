"""Real POP3 clients from Debian against `mailhouse serve`: fetchmail (plain POP3 on
loopback and STLS, delivering through an MDA) and getmail6 (POP3 on loopback and
POP3S, into a Maildir), each deleting at QUIT or keeping and fetching only new mail.
Skipped when the client is not installed (apt-get install fetchmail getmail6)."""

from __future__ import annotations

import email
import json
import os
import pwd
import shlex
import shutil
import smtplib
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.world import MailServer

DOMAIN = "popclients.test"

# An MDA for fetchmail: the message on stdin into a Maildir's new/, one file each.
DELIVER = """import os, sys, time
maildir = sys.argv[1]
name = "%d.%d.mda" % (time.time_ns(), os.getpid())
with open(os.path.join(maildir, "tmp", name), "wb") as f:
    f.write(sys.stdin.buffer.read())
os.rename(os.path.join(maildir, "tmp", name), os.path.join(maildir, "new", name))
"""


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MailServer]:
    s = MailServer(tmp_path_factory.mktemp("popclients"), DOMAIN, listeners=("smtp", "pop3", "pop3s"))
    # One account a test: each starts from a maildrop of its own.
    for user in ("fm-drain", "fm-uidl", "gm-keep", "gm-drain"):
        s.cli("user", "add", f"{user}@{DOMAIN}", "--password", "pw")
    with s:
        yield s


def _send(srv: MailServer, user: str, *subjects: str) -> None:
    with smtplib.SMTP("127.0.0.1", srv.port("smtp"), timeout=10) as c:
        for subject in subjects:
            # A line starting with a dot: the clients must undo the server's dot-stuffing.
            body = f"Subject: {subject}\r\n\r\n.a line with a leading dot\r\n\r\nthe end of {subject}\r\n"
            c.sendmail("a@example.org", [f"{user}@{DOMAIN}"], body.encode())


def _rows(srv: MailServer, user: str) -> list[dict[str, object]]:
    out = srv.cli("mailbox", "list", f"{user}@{DOMAIN}", "--json").stdout
    rows: list[dict[str, object]] = json.loads(out)
    return rows


def _stored(srv: MailServer, user: str) -> dict[str, bytes]:
    """The server's INBOX as {subject: the stored message, byte for byte}."""
    return {
        str(r["subject"]): srv.cli("mailbox", "show", f"{user}@{DOMAIN}", str(r["uid"])).stdout
        for r in _rows(srv, user)
    }


def _make_maildir(path: Path) -> Path:
    for sub in ("cur", "new", "tmp"):
        (path / sub).mkdir(parents=True, exist_ok=True)
    return path


def _delivered(maildir: Path) -> dict[str, bytes]:
    """A local Maildir as {subject: the message as delivered}."""
    out: dict[str, bytes] = {}
    for sub in ("new", "cur"):
        for p in (maildir / sub).iterdir():
            raw = p.read_bytes()
            subject = str(email.message_from_bytes(raw)["Subject"])
            assert subject not in out, f"{subject!r} delivered twice"
            out[subject] = raw
    return out


def _assert_same_message(delivered: bytes, stored: bytes) -> None:
    """The client's copy is the stored message: the same body, byte for byte (line
    ends aside), and every stored header line (clients add their own Received)."""
    got_head, _, got_body = delivered.replace(b"\r\n", b"\n").partition(b"\n\n")
    want_head, _, want_body = stored.replace(b"\r\n", b"\n").partition(b"\n\n")
    assert got_body == want_body
    got_lines = got_head.split(b"\n")
    for line in want_head.split(b"\n"):
        assert line in got_lines, (line, delivered)


def _assert_all_delivered(srv: MailServer, maildir: Path, stored: dict[str, bytes]) -> None:
    delivered = _delivered(maildir)
    assert sorted(delivered) == sorted(stored)
    for subject, raw in stored.items():
        _assert_same_message(delivered[subject], raw)


# ------------------------------------------------------------------ fetchmail

def _fetchmail(srv: MailServer, tmp_path: Path, user: str, maildir: Path, *, keep: bool, stls: bool) -> Path:
    """A fetchmailrc (mode 0600, as fetchmail insists) polling `user` by UIDL."""
    deliver = tmp_path / "deliver.py"
    deliver.write_text(DELIVER)
    mda = f"{shlex.quote(sys.executable)} {shlex.quote(str(deliver))} {shlex.quote(str(maildir))}"
    if stls:  # STLS with the server's certificate checked against the name localhost
        host, tls = "localhost", f"sslproto 'tls1.2+' sslcertck sslcertfile \"{srv.data_dir / 'cert.pem'}\""
    else:  # plaintext on loopback (counts as secured): no STLS even though it is offered
        host, tls = "127.0.0.1", "sslproto ''"
    rc = tmp_path / "fetchmailrc"
    rc.write_text(
        f"""set no syslog
set idfile "{tmp_path / "fetchids"}"
poll {host} port {srv.port("pop3")} proto pop3 uidl
  user "{user}@{DOMAIN}" there with password "pw"
  {"keep" if keep else "nokeep"}
  {tls}
  mda "{mda}"
"""
    )
    rc.chmod(0o600)
    return rc


def _run_fetchmail(srv: MailServer, tmp_path: Path, rc: Path) -> int:
    """One poll; fetchmail exits 0 when it fetched mail, 1 when there was none."""
    env = dict(os.environ, HOME=str(tmp_path), FETCHMAILHOME=str(tmp_path))
    r = subprocess.run(
        ["fetchmail", "-v", "-f", str(rc), "--pidfile", str(tmp_path / "fetchmail.pid")],
        capture_output=True, text=True, timeout=20, env=env,
    )
    assert r.returncode in (0, 1), r.stdout + r.stderr + srv.log()[-3000:]
    return r.returncode


@pytest.mark.skipif(shutil.which("fetchmail") is None, reason="fetchmail is not installed")
def test_fetchmail_drains_inbox(srv: MailServer, tmp_path: Path) -> None:
    user = "fm-drain"
    _send(srv, user, "drain one", "drain two", "drain three")
    stored = _stored(srv, user)
    assert len(stored) == 3
    maildir = _make_maildir(tmp_path / "Maildir")
    rc = _fetchmail(srv, tmp_path, user, maildir, keep=False, stls=False)
    assert _run_fetchmail(srv, tmp_path, rc) == 0
    _assert_all_delivered(srv, maildir, stored)
    assert _rows(srv, user) == []  # nokeep: DELE for each, applied at QUIT
    assert _run_fetchmail(srv, tmp_path, rc) == 1  # nothing left
    assert len(_delivered(maildir)) == 3


@pytest.mark.skipif(shutil.which("fetchmail") is None, reason="fetchmail is not installed")
def test_fetchmail_uidl_keeps_and_fetches_only_new_over_stls(srv: MailServer, tmp_path: Path) -> None:
    user = "fm-uidl"
    _send(srv, user, "kept one", "kept two")
    maildir = _make_maildir(tmp_path / "Maildir")
    rc = _fetchmail(srv, tmp_path, user, maildir, keep=True, stls=True)
    assert _run_fetchmail(srv, tmp_path, rc) == 0
    _assert_all_delivered(srv, maildir, _stored(srv, user))
    assert len(_rows(srv, user)) == 2  # keep: still on the server

    _send(srv, user, "kept three")
    assert _run_fetchmail(srv, tmp_path, rc) == 0
    # Only the new one came: the first two would be delivered twice otherwise.
    _assert_all_delivered(srv, maildir, _stored(srv, user))
    assert len(_delivered(maildir)) == 3
    assert _run_fetchmail(srv, tmp_path, rc) == 1
    assert len(_delivered(maildir)) == 3
    assert len(_rows(srv, user)) == 3
    # fetchmail remembers the server's UIDLs, which are stable across sessions.
    ids = (tmp_path / "fetchids").read_text().split("\n")
    assert len([line for line in ids if line.startswith(f"{user}@{DOMAIN}@localhost ")]) == 3


# ------------------------------------------------------------------ getmail6

@pytest.fixture
def getmail_maildir(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A Maildir for getmail's Maildir destination, and the destination's extra setting.

    getmail refuses to deliver as root: under root, deliver as `nobody` into a
    folder of its own (pytest's tmp_path is not reachable for other users)."""
    if os.geteuid() != 0:
        yield _make_maildir(tmp_path / "Maildir"), ""
        return
    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("running as root and there is no user nobody for getmail to deliver as")
    top = Path(tempfile.mkdtemp(prefix="mailhouse-getmail-"))
    try:
        maildir = _make_maildir(top / "Maildir")
        for p in (top, maildir, *maildir.iterdir()):
            os.chown(p, nobody.pw_uid, nobody.pw_gid)
        yield maildir, "user = nobody"
    finally:
        shutil.rmtree(top, ignore_errors=True)


def _getmail(
    srv: MailServer, tmp_path: Path, user: str, maildir: tuple[Path, str], *, ssl: bool, delete: bool
) -> list[str]:
    """The getmail command line for one run, with its getmailrc."""
    if ssl:  # POP3S, the certificate checked against localhost
        retriever = f"""type = SimplePOP3SSLRetriever
server = localhost
port = {srv.port("pop3s")}
ca_certs = {srv.data_dir / "cert.pem"}"""
    else:  # getmail6 has no STLS: plaintext POP3 on loopback
        retriever = f"""type = SimplePOP3Retriever
server = 127.0.0.1
port = {srv.port("pop3")}"""
    rc = tmp_path / "getmailrc"
    rc.write_text(
        f"""[retriever]
{retriever}
username = {user}@{DOMAIN}
password = pw

[destination]
type = Maildir
path = {maildir[0]}/
{maildir[1]}

[options]
verbose = 1
read_all = false
delete = {"true" if delete else "false"}
"""
    )
    getmaildir = tmp_path / "getmail"
    getmaildir.mkdir(exist_ok=True)
    return ["getmail", "--getmaildir", str(getmaildir), "--rcfile", str(rc)]


def _run_getmail(srv: MailServer, tmp_path: Path, command: list[str]) -> None:
    r = subprocess.run(command, capture_output=True, text=True, timeout=20, env=dict(os.environ, HOME=str(tmp_path)))
    assert r.returncode == 0 and "error" not in r.stdout.lower(), r.stdout + r.stderr + srv.log()[-3000:]


@pytest.mark.skipif(shutil.which("getmail") is None, reason="getmail (getmail6) is not installed")
def test_getmail_pop3s_keeps_and_fetches_only_new(
    srv: MailServer, tmp_path: Path, getmail_maildir: tuple[Path, str]
) -> None:
    user = "gm-keep"
    maildir = getmail_maildir[0]
    _send(srv, user, "getmail one", "getmail two")
    command = _getmail(srv, tmp_path, user, getmail_maildir, ssl=True, delete=False)
    _run_getmail(srv, tmp_path, command)
    _assert_all_delivered(srv, maildir, _stored(srv, user))
    rows = _rows(srv, user)
    assert len(rows) == 2
    assert all("\\Seen" in str(r["flags"]) for r in rows)  # RETR marks them read

    _send(srv, user, "getmail three")
    _run_getmail(srv, tmp_path, command)  # read_all = false: only what it has not seen
    _assert_all_delivered(srv, maildir, _stored(srv, user))
    assert len(_delivered(maildir)) == 3
    _run_getmail(srv, tmp_path, command)
    assert len(_delivered(maildir)) == 3
    assert len(_rows(srv, user)) == 3


@pytest.mark.skipif(shutil.which("getmail") is None, reason="getmail (getmail6) is not installed")
def test_getmail_pop3_deletes(srv: MailServer, tmp_path: Path, getmail_maildir: tuple[Path, str]) -> None:
    user = "gm-drain"
    maildir = getmail_maildir[0]
    _send(srv, user, "gone one", "gone two", "gone three")
    stored = _stored(srv, user)
    command = _getmail(srv, tmp_path, user, getmail_maildir, ssl=False, delete=True)
    _run_getmail(srv, tmp_path, command)
    _assert_all_delivered(srv, maildir, stored)
    assert _rows(srv, user) == []
    _run_getmail(srv, tmp_path, command)
    assert len(_delivered(maildir)) == 3
