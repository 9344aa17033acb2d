"""POP3 against `mailhouse serve` with poplib, consistent with the store IMAP uses."""

from __future__ import annotations

import json
import poplib
import smtplib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import tls_context
from tests.world import MailServer


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MailServer]:
    s = MailServer(tmp_path_factory.mktemp("pop"), "pop.test")
    s.cli("user", "add", "bob@pop.test", "--password", "pw")
    with s:
        with smtplib.SMTP("127.0.0.1", s.port("smtp"), timeout=10) as c:
            for i in range(3):
                c.sendmail("a@example.org", ["bob@pop.test"], b"Subject: pop %d\r\n\r\n.dot\r\nbody %d\r\n" % (i, i))
        yield s


def test_retrieve_list_uidl_top(srv: MailServer) -> None:
    p = poplib.POP3("127.0.0.1", srv.port("pop3"), timeout=10)
    assert p.getwelcome().startswith(b"+OK")
    p.user("bob@pop.test")
    p.pass_("pw")
    count, size = p.stat()
    assert count == 3
    _, listing, _ = p.list()
    assert sum(int(x.split()[1]) for x in listing) == size
    _, uidl, _ = p.uidl()
    uids = [x.split()[1] for x in uidl]
    assert len(set(uids)) == 3
    _, lines, _ = p.retr(1)
    raw = b"\r\n".join(lines) + b"\r\n"
    shown = srv.cli("mailbox", "show", "bob@pop.test", "1").stdout
    assert raw == shown  # byte for byte, dot-unstuffed by poplib
    _, top, _ = p.top(2, 0)
    assert b"Subject: pop 1" in top and b"body 1" not in top
    p.quit()
    flags = json.loads(srv.cli("mailbox", "list", "bob@pop.test", "--json").stdout)[0]["flags"]
    assert "\\Seen" in flags  # RETR marks it read, as for IMAP


def test_dele_applies_at_quit_only(srv: MailServer) -> None:
    p = poplib.POP3("127.0.0.1", srv.port("pop3"), timeout=10)
    p.user("bob@pop.test")
    p.pass_("pw")
    uid_before = [x.split()[1] for x in p.uidl()[1]]
    p.dele(1)
    # A second session still sees it: nothing happens before QUIT.
    rows = json.loads(srv.cli("mailbox", "list", "bob@pop.test", "--json").stdout)
    assert len(rows) == 3
    p.quit()
    rows = json.loads(srv.cli("mailbox", "list", "bob@pop.test", "--json").stdout)
    assert len(rows) == 2
    p = poplib.POP3_SSL("127.0.0.1", srv.port("pop3s"), timeout=10, context=tls_context())
    p.user("bob@pop.test")
    p.pass_("pw")
    assert [x.split()[1] for x in p.uidl()[1]] == uid_before[1:]  # stable UIDL
    p.quit()


def test_stls_and_bad_password(srv: MailServer) -> None:
    p = poplib.POP3("127.0.0.1", srv.port("pop3"), timeout=10)
    assert "STLS" in p.capa()
    p.stls(context=tls_context())
    p.user("bob@pop.test")
    with pytest.raises(poplib.error_proto) as e:
        p.pass_("wrong")
    assert b"[AUTH]" in e.value.args[0]
    p.quit()


def test_pop3_only_listener_config(tmp_path: Path) -> None:
    s = MailServer(tmp_path, "only.test", listeners=("pop3",))
    with s:
        p = poplib.POP3("127.0.0.1", s.port("pop3"), timeout=10)
        p.quit()
