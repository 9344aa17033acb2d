"""Real IMAP clients from Debian against `mailhouse serve`: mbsync (isync) and
offlineimap3 syncing every folder to a Maildir and back, and mutt driven in tmux.
Skipped when the client is not installed (apt-get install isync offlineimap3 mutt tmux)."""

from __future__ import annotations

import email
import imaplib
import json
import os
import shutil
import smtplib
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.world import MailServer


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MailServer]:
    s = MailServer(tmp_path_factory.mktemp("clients"), "clients.test", listeners=("smtp", "imap", "imaps"))
    s.cli("user", "add", "bob@clients.test", "--password", "pw")
    s.cli("user", "add", "carol@clients.test", "--password", "pw")  # offlineimap's own account
    with s:
        with smtplib.SMTP("127.0.0.1", s.port("smtp"), timeout=10) as c:
            for user in ("bob", "carol"):
                for i in range(3):
                    c.sendmail("a@example.org", [f"{user}@clients.test"],
                               b"Subject: sync %d\r\n\r\nbody %d\r\n" % (i, i))
        yield s


def _rows(srv: MailServer, folder: str = "INBOX", user: str = "bob@clients.test") -> list[dict[str, object]]:
    out = srv.cli("mailbox", "list", user, "--folder", folder, "--json").stdout
    rows: list[dict[str, object]] = json.loads(out)
    return rows


@pytest.mark.skipif(shutil.which("mbsync") is None, reason="mbsync (isync) is not installed")
def test_mbsync_both_ways(srv: MailServer, tmp_path: Path) -> None:
    maildir = tmp_path / "mail"
    maildir.mkdir()
    rc = tmp_path / "mbsyncrc"
    rc.write_text(
        f"""IMAPAccount bob
Host localhost
Port {srv.port("imaps")}
User bob@clients.test
Pass pw
SSLType IMAPS
CertificateFile {srv.data_dir / "cert.pem"}

IMAPStore remote
Account bob

MaildirStore local
Path {maildir}/
Inbox {maildir}/INBOX
SubFolders Verbatim

Channel all
Far :remote:
Near :local:
Patterns *
Create Both
Expunge Both
SyncState *
"""
    )

    def sync() -> None:
        r = subprocess.run(["mbsync", "-c", str(rc), "-a"], capture_output=True, timeout=60, text=True)
        assert r.returncode == 0, r.stdout + r.stderr + srv.log()[-3000:]

    sync()
    inbox = [p for sub in ("cur", "new") for p in (maildir / "INBOX" / sub).iterdir()]
    assert len(inbox) == 3
    assert (maildir / "Trash").is_dir() and (maildir / "Sent").is_dir()
    # Back: a new local folder with a message, a message marked seen, one deleted.
    work = maildir / "Work"
    for sub in ("cur", "new", "tmp"):
        (work / sub).mkdir(parents=True)
    (work / "new" / f"{int(time.time())}.1.local").write_bytes(b"Subject: from maildir\n\nhello\n")
    first, second = sorted(inbox)[:2]
    os.rename(first, first.parent.parent / "cur" / (first.name.split(":")[0] + ":2,S"))
    second.unlink()
    sync()
    assert [r["subject"] for r in _rows(srv, "Work")] == ["from maildir"]
    rows = _rows(srv)
    assert len(rows) == 2
    assert any("\\Seen" in str(r["flags"]) for r in rows)
    sync()  # a second run finds nothing to do and still succeeds


def _maildir(folder: Path) -> dict[str, str]:
    """A local Maildir folder as {subject: maildir flags} (the ":2," info, sorted)."""
    out: dict[str, str] = {}
    for sub in ("cur", "new"):
        for p in (folder / sub).iterdir():
            subject = str(email.message_from_bytes(p.read_bytes())["Subject"])
            assert subject not in out, f"{subject!r} twice in {folder}"
            out[subject] = "".join(sorted(p.name.partition(":2,")[2]))
    return out


def _subjects_flags(rows: list[dict[str, object]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for r in rows:
        flags = r["flags"]
        assert isinstance(flags, list)
        out[str(r["subject"])] = sorted(str(f) for f in flags)
    return out


@pytest.mark.skipif(shutil.which("offlineimap") is None, reason="offlineimap (offlineimap3) is not installed")
def test_offlineimap_both_ways(srv: MailServer, tmp_path: Path) -> None:
    user = "carol@clients.test"
    # A nested folder on the server side: it must come down as Lists.python.
    imap = imaplib.IMAP4("127.0.0.1", srv.port("imap"), timeout=10)
    imap.login(user, "pw")
    assert imap.create("Lists/python")[0] == "OK"
    assert imap.append("Lists/python", "(\\Flagged)", None, b"Subject: nested\r\n\r\nlist mail\r\n")[0] == "OK"
    imap.logout()

    maildir = tmp_path / "mail"
    rc = tmp_path / "offlineimaprc"
    rc.write_text(
        f"""[general]
accounts = carol
metadata = {tmp_path / "meta"}
ui = basic

[Account carol]
localrepository = local
remoterepository = remote

[Repository local]
type = Maildir
localfolders = {maildir}

[Repository remote]
type = IMAP
remotehost = localhost
remoteport = {srv.port("imaps")}
remoteuser = {user}
remotepass = pw
ssl = yes
sslcacertfile = {srv.data_dir / "cert.pem"}
"""
    )
    env = dict(os.environ, HOME=str(tmp_path))

    def sync() -> None:
        # -o: one run; offlineimap exits non-zero when any folder failed.
        r = subprocess.run(["offlineimap", "-c", str(rc), "-o", "-u", "basic"], capture_output=True,
                           timeout=20, text=True, env=env)
        assert r.returncode == 0 and "ERROR" not in r.stdout + r.stderr, (
            r.stdout + r.stderr + srv.log()[-3000:])

    sync()
    assert _maildir(maildir / "INBOX") == {"sync 0": "", "sync 1": "", "sync 2": ""}
    assert _maildir(maildir / "Lists.python") == {"nested": "F"}
    for special in ("Archive", "Drafts", "Junk", "Sent", "Trash"):
        assert (maildir / special / "cur").is_dir(), special

    # Up: a new local message and a new local folder, one message marked seen, one deleted.
    (maildir / "INBOX" / "new" / f"{int(time.time())}.1.local").write_bytes(b"Subject: from maildir\n\nhello\n")
    work = maildir / "Work"
    for sub in ("cur", "new", "tmp"):
        (work / sub).mkdir(parents=True)
    (work / "new" / f"{int(time.time())}.2.local").write_bytes(b"Subject: work item\n\nto do\n")
    files = {str(email.message_from_bytes(p.read_bytes())["Subject"]): p
             for p in (maildir / "INBOX").glob("*/*")}
    seen = files["sync 0"]
    seen.rename(seen.parent.parent / "cur" / (seen.name.partition(":2,")[0] + ":2,S"))
    files["sync 1"].unlink()
    sync()
    assert _subjects_flags(_rows(srv, "INBOX", user)) == {
        "sync 0": ["\\Seen"], "sync 2": [], "from maildir": []}
    assert [r["subject"] for r in _rows(srv, "Work", user)] == ["work item"]

    # Down: flag, delete and append on the server side.
    imap = imaplib.IMAP4("127.0.0.1", srv.port("imap"), timeout=10)
    imap.login(user, "pw")
    imap.select("INBOX")
    uids = {str(r["subject"]): str(r["uid"]) for r in _rows(srv, "INBOX", user)}
    assert imap.uid("STORE", uids["sync 2"], "+FLAGS", "(\\Flagged \\Answered)")[0] == "OK"
    assert imap.uid("STORE", uids["sync 0"], "+FLAGS", "(\\Deleted)")[0] == "OK"
    assert imap.expunge()[0] == "OK"
    assert imap.append("INBOX", "(\\Seen)", None, b"Subject: from server\r\n\r\nnew\r\n")[0] == "OK"
    imap.logout()
    sync()
    assert _maildir(maildir / "INBOX") == {"sync 2": "FR", "from maildir": "", "from server": "S"}
    sync()  # a further run finds nothing to do: no duplicates either way
    assert len(_rows(srv, "INBOX", user)) == 3
    assert _maildir(maildir / "INBOX") == {"sync 2": "FR", "from maildir": "", "from server": "S"}
    assert _maildir(maildir / "Work") == {"work item": ""}


@pytest.mark.skipif(
    shutil.which("mutt") is None or shutil.which("tmux") is None, reason="mutt or tmux is not installed"
)
def test_mutt_reads_and_moves(srv: MailServer, tmp_path: Path) -> None:
    muttrc = tmp_path / "muttrc"
    muttrc.write_text(
        f"""set folder="imaps://bob@clients.test@localhost:{srv.port("imaps")}/"
set imap_pass="pw"
set spoolfile="+INBOX"
set certificate_file="{tmp_path / "certs"}"
set ssl_verify_host=no
set ssl_force_tls=yes
set mail_check=1
set timeout=1
set confirmappend=no
set move=no
set sort=date
set header_cache=""
"""
    )
    # Trust the server's self-signed certificate the way a user would ("a"lways).
    session = f"mutt-{os.getpid()}"
    env = dict(os.environ, TERM="xterm", HOME=str(tmp_path))
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "120", "-y", "30",
                    f"mutt -n -F {muttrc}"], check=True, env=env)
    try:
        def screen() -> str:
            return subprocess.run(["tmux", "capture-pane", "-p", "-t", session], capture_output=True,
                                  text=True).stdout

        def wait_for(text: str, keys: str | None = None, timeout: float = 20) -> str:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                s = screen()
                if text in s:
                    return s
                if keys is not None and ("(r)eject" in s or "(a)ccept" in s):
                    subprocess.run(["tmux", "send-keys", "-t", session, keys])
                time.sleep(0.2)
            raise AssertionError(f"{text!r} not on screen:\n{screen()}\n{srv.log()[-2000:]}")

        wait_for("sync ", keys="a")
        # Save the first message to Archive (creates nothing: Archive exists).
        subprocess.run(["tmux", "send-keys", "-t", session, "s", "=Archive", "Enter"], check=True)
        time.sleep(1.0)
        subprocess.run(["tmux", "send-keys", "-t", session, "$"], check=True)
        time.sleep(1.0)
        subprocess.run(["tmux", "send-keys", "-t", session, "q"], check=True)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and len(_rows(srv, "Archive")) == 0:
            time.sleep(0.2)
        assert len(_rows(srv, "Archive")) == 1
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
