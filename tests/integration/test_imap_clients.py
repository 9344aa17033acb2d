"""Real IMAP clients from Debian against `mailhouse serve`: mbsync (isync)
syncing every folder to a Maildir and back, and mutt driven in tmux.
Skipped when the client is not installed (apt-get install isync mutt tmux)."""

from __future__ import annotations

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
    with s:
        with smtplib.SMTP("127.0.0.1", s.port("smtp"), timeout=10) as c:
            for i in range(3):
                c.sendmail("a@example.org", ["bob@clients.test"], b"Subject: sync %d\r\n\r\nbody %d\r\n" % (i, i))
        yield s


def _rows(srv: MailServer, folder: str = "INBOX") -> list[dict[str, object]]:
    out = srv.cli("mailbox", "list", "bob@clients.test", "--folder", folder, "--json").stdout
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
