"""The admin command line of INTERFACE.md, as a user's script calls it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.conftest import wait_for
from tests.world import MailServer, free_port


def run(cwd: Path, *args: str, input: bytes | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    e = dict(os.environ)
    e.pop("MAILHOUSE_CONFIG", None)
    e.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "mailhouse", *args], cwd=cwd, capture_output=True, text=True,
        input=input.decode() if input else None, env=e, timeout=60,
    )


@pytest.fixture
def srv(tmp_path: Path) -> MailServer:
    return MailServer(tmp_path, "example.test", listeners=("smtp",))


def test_domains_users_aliases(srv: MailServer) -> None:
    assert srv.cli("domain", "add", "other.test").returncode == 0
    domains = json.loads(srv.cli("domain", "list", "--json").stdout)
    assert {d["name"] for d in domains} == {"example.test", "other.test"}

    r = srv.cli("user", "add", "Bob@Other.test")
    assert b"password: " in r.stdout  # generated and printed once
    srv.cli("user", "add", "carol@other.test", "--password-stdin", input=b"s3cret\n")
    users = json.loads(srv.cli("user", "list", "--json").stdout)
    assert {u["address"] for u in users} == {"bob@other.test", "carol@other.test"}

    r = srv.cli("user", "add", "bob@other.test", "--password", "x", check=False)
    assert r.returncode == 1 and r.stderr.decode().count("\n") == 1 and b"exists" in r.stderr
    r = srv.cli("user", "add", "x@nowhere.test", "--password", "x", check=False)
    assert r.returncode == 1 and b"domain nowhere.test does not exist" in r.stderr
    r = srv.cli("domain", "remove", "other.test", check=False)
    assert r.returncode == 1 and b"still has" in r.stderr

    srv.cli("user", "password", "carol@other.test", "--password", "new")
    srv.cli("alias", "add", "info@other.test", "bob@other.test", "carol@other.test")
    srv.cli("alias", "add", "@other.test", "bob@other.test")
    aliases = json.loads(srv.cli("alias", "list", "--json").stdout)
    assert {"address": "info@other.test", "targets": ["bob@other.test", "carol@other.test"]} in aliases
    assert "@other.test" in srv.cli("alias", "list").stdout.decode()

    srv.cli("alias", "remove", "info@other.test")
    srv.cli("alias", "remove", "@other.test")
    srv.cli("user", "remove", "bob@other.test")
    srv.cli("user", "remove", "carol@other.test")
    srv.cli("domain", "remove", "other.test")
    assert json.loads(srv.cli("user", "list", "--json").stdout) == []
    r = srv.cli("user", "remove", "nobody@example.test", check=False)
    assert r.returncode == 1 and r.stderr.startswith(b"mailhouse: no user")


def test_usage_errors_exit_2(srv: MailServer) -> None:
    assert srv.cli("user", check=False).returncode == 2
    assert srv.cli("frobnicate", check=False).returncode == 2
    assert srv.cli("mailbox", "show", "a@example.test", "notanumber", check=False).returncode == 2


def test_bad_config_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "mailhouse.toml").write_text('hostname = "x"\nfrobnicate = 1\n')
    r = run(tmp_path, "domain", "list")
    assert r.returncode == 1 and r.stderr.strip().count("\n") == 0 and "frobnicate" in r.stderr
    (tmp_path / "mailhouse.toml").write_text('[listen]\nimap = "localhost"\n')
    r = run(tmp_path, "serve")
    assert r.returncode == 1 and "listen.imap" in r.stderr and r.stderr.strip().count("\n") == 0


def test_quickstart(tmp_path: Path) -> None:
    r = run(tmp_path, "quickstart", "you@example.test")
    assert r.returncode == 0, r.stderr
    assert "password: " in r.stdout and "2587" in r.stdout
    cfg = (tmp_path / "mailhouse.toml").read_text()
    assert 'domains  = ["example.test"]' in cfg
    users = json.loads(run(tmp_path, "user", "list", "--json").stdout)
    assert [u["address"] for u in users] == ["you@example.test"]
    r = run(tmp_path, "quickstart", "you@example.test")
    assert r.returncode == 1 and "exists" in r.stderr


def test_quickstart_config_serves_every_protocol(tmp_path: Path) -> None:
    """What quickstart writes is a whole server: mail can be read over IMAP,
    POP3 and the webmail with the password it prints (on free ports here)."""
    import imaplib
    import poplib
    import re
    import urllib.request

    r = run(tmp_path, "quickstart", "you@example.test")
    assert r.returncode == 0, r.stderr
    password = re.search(r"password: (\S+)", r.stdout)
    assert password is not None
    assert "2143" in r.stdout and "2110" in r.stdout and "http://127.0.0.1:8025/" in r.stdout
    path = tmp_path / "mailhouse.toml"
    cfg = path.read_text()
    ports: dict[str, int] = {}
    for name in ("smtp", "submission", "submissions", "imap", "imaps", "pop3", "pop3s", "http", "https"):
        assert re.search(rf"^{name} +=", cfg, re.M), name
        ports[name] = free_port()
        cfg = re.sub(rf'^({name} += "127\.0\.0\.1:)\d+"', rf"\g<1>{ports[name]}" + '"', cfg, flags=re.M)
    path.write_text(cfg)
    e = dict(os.environ)
    e.pop("MAILHOUSE_CONFIG", None)
    with open(tmp_path / "serve.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "mailhouse", "serve"], cwd=tmp_path, env=e,
                                stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: "mailhouse ready" in (tmp_path / "serve.log").read_text(), msg="serve ready")
        imap = imaplib.IMAP4("127.0.0.1", ports["imap"])
        imap.login("you@example.test", password.group(1))
        assert imap.select("INBOX")[0] == "OK"
        imap.logout()
        pop = poplib.POP3("127.0.0.1", ports["pop3"])
        pop.user("you@example.test")
        pop.pass_(password.group(1))
        pop.quit()
        with urllib.request.urlopen(f"http://127.0.0.1:{ports['http']}/", timeout=10) as page:
            assert page.status == 200
    finally:
        proc.terminate()
        assert proc.wait(30) == 0, (tmp_path / "serve.log").read_text()


def test_mbox_and_maildir_round_trip(srv: MailServer, tmp_path: Path) -> None:
    srv.cli("user", "add", "bob@example.test", "--password", "pw")
    mbox = tmp_path / "in.mbox"
    mbox.write_bytes(
        b"From alice@crepes.fr Sat Nov 28 12:00:00 2026\n"
        b"From: alice@crepes.fr\nSubject: one\nStatus: RO\n\nFirst.\n>From the start\n\n"
        b"From alice@crepes.fr Sat Nov 28 12:05:00 2026\n"
        b"From: alice@crepes.fr\nSubject: two\n\nSecond \xc3\xa9t\xc3\xa9.\n"
    )
    r = srv.cli("mailbox", "import", "bob@example.test", str(mbox))
    assert b"imported 2" in r.stdout
    rows = json.loads(srv.cli("mailbox", "list", "bob@example.test", "--json").stdout)
    assert [x["subject"] for x in rows] == ["one", "two"]
    assert "\\Seen" in rows[0]["flags"]
    originals = [srv.cli("mailbox", "show", "bob@example.test", str(x["uid"])).stdout for x in rows]

    for fmt, dest in (("mbox", tmp_path / "out.mbox"), ("maildir", tmp_path / "out-maildir")):
        srv.cli("mailbox", "export", "bob@example.test", str(dest), "--format", fmt)
        srv.cli("user", "add", f"copy-{fmt}@example.test", "--password", "pw")
        srv.cli("mailbox", "import", f"copy-{fmt}@example.test", str(dest))
        copies = json.loads(srv.cli("mailbox", "list", f"copy-{fmt}@example.test", "--json").stdout)
        assert [(c["subject"], c["flags"]) for c in copies] == [(x["subject"], x["flags"]) for x in rows]
        raws = [srv.cli("mailbox", "show", f"copy-{fmt}@example.test", str(c["uid"])).stdout for c in copies]
        assert raws == originals


def test_mailbox_errors(srv: MailServer, tmp_path: Path) -> None:
    r = srv.cli("mailbox", "list", "ghost@example.test", check=False)
    assert r.returncode == 1 and b"no user" in r.stderr
    srv.cli("user", "add", "bob@example.test", "--password", "pw")
    r = srv.cli("mailbox", "show", "bob@example.test", "42", check=False)
    assert r.returncode == 1 and b"UID 42" in r.stderr
    r = srv.cli("mailbox", "import", "bob@example.test", str(tmp_path / "missing"), check=False)
    assert r.returncode == 1
    r = srv.cli("queue", "list", "--json")
    assert json.loads(r.stdout) == []
