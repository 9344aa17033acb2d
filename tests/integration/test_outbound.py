"""The outbound half of the journey: queue, SMTP client, retries, bounces.

Two real `mailhouse serve` processes (crepes.fr and hamburger.edu) find each other
through DNS MX records served by a DNS server on 127.0.0.1; a faulty peer plays
every way a far side can fail.
"""

from __future__ import annotations

import json
import smtplib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mailhouse.dns.testserver import DNSServer, Zone
from tests.integration.conftest import inbox, queue, tls_context, wait_for
from tests.peer import FaultyPeer
from tests.world import MailServer, free_port

ALICE_PW = "alice-pw"
BOB_PW = "bob-pw"


def submit(server: MailServer, sender: str, password: str, rcpts: list[str], body: bytes) -> None:
    with smtplib.SMTP("127.0.0.1", server.port("submission"), timeout=20) as s:
        s.starttls(context=tls_context())
        s.login(sender, password)
        s.sendmail(sender, rcpts, body)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root: Path = tmp_path_factory.mktemp("world")
    zone = Zone()
    dns = DNSServer(zone)
    dns.start_in_thread()
    peer = FaultyPeer().start()
    crepes_smtp, hamburger_smtp = free_port(), free_port()
    for domain in ("crepes.fr", "hamburger.edu"):
        zone.add(domain, "MX", f"10 mail.{domain}.", ttl=0)
        zone.add(f"mail.{domain}", "A", "127.0.0.1", ttl=0)
    zone.add("nullmx.test", "MX", "0 .", ttl=0)
    zone.add("servfail.test", "MX", "10 mail.servfail.test.", ttl=0)
    zone.fail("servfail.test")
    common = {"retry_interval": "1s", "max_lifetime": "1h", "delay_warning": "0", "idle_timeout": "1s",
              "connect_timeout": "3s", "reply_timeout": "5s"}
    crepes = MailServer(root, "crepes.fr", extra={
        "dns": {"nameservers": [f"127.0.0.1:{dns.port}"]},
        "queue": {**common, "smtp_port": hamburger_smtp},
        "routes": {"peer.test": f"127.0.0.1:{peer.port}"},
    }, ports={"smtp": crepes_smtp})
    hamburger = MailServer(root, "hamburger.edu", extra={
        "dns": {"nameservers": [f"127.0.0.1:{dns.port}"]},
        "queue": {**common, "smtp_port": crepes_smtp},
    }, ports={"smtp": hamburger_smtp})
    crepes.cli("user", "add", "alice@crepes.fr", "--password", ALICE_PW)
    hamburger.cli("user", "add", "bob@hamburger.edu", "--password", BOB_PW)
    crepes.start()
    hamburger.start()
    yield {"crepes": crepes, "hamburger": hamburger, "zone": zone, "peer": peer, "dns": dns}
    assert crepes.stop() == 0, crepes.log()
    assert hamburger.stop() == 0, hamburger.log()
    peer.stop()
    dns.stop_thread()


def test_alice_to_bob_through_mx(world: dict[str, Any]) -> None:
    crepes, hamburger = world["crepes"], world["hamburger"]
    before = len(inbox(hamburger, "bob@hamburger.edu"))
    submit(crepes, "alice@crepes.fr", ALICE_PW, ["bob@hamburger.edu"],
           b"From: alice@crepes.fr\r\nTo: bob@hamburger.edu\r\nSubject: ketchup\r\n\r\n"
           b"Do you like ketchup?\r\nHow about pickles?\r\n")
    rows = wait_for(lambda: inbox(hamburger, "bob@hamburger.edu")[before:])
    assert rows[0]["subject"] == "ketchup"
    raw = hamburger.cli("mailbox", "show", "bob@hamburger.edu", str(rows[0]["uid"])).stdout
    head = raw.split(b"\r\n\r\n", 1)[0]
    assert head.startswith(b"Return-Path: <alice@crepes.fr>\r\nAuthentication-Results: mail.hamburger.edu;")
    assert b"\r\nReceived: from mail.crepes.fr" in head
    assert b"\r\nDKIM-Signature: " in head  # crepes.fr signed it on submission
    assert head.count(b"Return-Path:") == 1  # crepes' own Return-Path did not travel
    assert b"with ESMTPS" in head and b"with ESMTPSA" in head  # TLS on both hops
    assert raw.endswith(b"Do you like ketchup?\r\nHow about pickles?\r\n")
    wait_for(lambda: queue(crepes) == [])


def test_several_recipients_one_connection(world: dict[str, Any]) -> None:
    crepes, hamburger = world["crepes"], world["hamburger"]
    hamburger.cli("alias", "add", "bob2@hamburger.edu", "bob@hamburger.edu", check=False)
    before = len(inbox(hamburger, "bob@hamburger.edu"))
    for i in range(3):
        submit(crepes, "alice@crepes.fr", ALICE_PW, ["bob@hamburger.edu"],
               b"Subject: burst %d\r\n\r\nhi\r\n" % i)
    wait_for(lambda: len(inbox(hamburger, "bob@hamburger.edu")) >= before + 3)


def test_immediate_5xx_bounces_to_sender(world: dict[str, Any]) -> None:
    crepes = world["crepes"]
    before = len(inbox(crepes, "alice@crepes.fr"))
    submit(crepes, "alice@crepes.fr", ALICE_PW, ["nobody@hamburger.edu"],
           b"Subject: to nobody\r\nMessage-ID: <nobody-test@crepes.fr>\r\n\r\nhello?\r\n")
    rows = wait_for(lambda: inbox(crepes, "alice@crepes.fr")[before:])
    assert rows[0]["subject"] == "Undelivered Mail Returned to Sender"
    raw = crepes.cli("mailbox", "show", "alice@crepes.fr", str(rows[0]["uid"])).stdout
    assert b"multipart/report; report-type=delivery-status" in raw
    assert b"Final-Recipient: rfc822; nobody@hamburger.edu" in raw
    assert b"Action: failed" in raw and b"Status: 5.1.1" in raw
    assert b"Remote-MTA: dns; mail.hamburger.edu" in raw
    assert b"Diagnostic-Code: smtp; 550 5.1.1" in raw
    assert b"Message-ID: <nobody-test@crepes.fr>" in raw  # the original headers
    assert b"Return-Path: <>" in raw  # a bounce has the null sender
    wait_for(lambda: queue(crepes) == [])


def test_null_mx_fails_at_once(world: dict[str, Any]) -> None:
    crepes = world["crepes"]
    before = len(inbox(crepes, "alice@crepes.fr"))
    submit(crepes, "alice@crepes.fr", ALICE_PW, ["x@nullmx.test"], b"Subject: null\r\n\r\nx\r\n")
    rows = wait_for(lambda: inbox(crepes, "alice@crepes.fr")[before:])
    raw = crepes.cli("mailbox", "show", "alice@crepes.fr", str(rows[0]["uid"])).stdout
    assert b"Status: 5.1.10" in raw


def test_servfail_defers(world: dict[str, Any]) -> None:
    crepes = world["crepes"]
    submit(crepes, "alice@crepes.fr", ALICE_PW, ["x@servfail.test"], b"Subject: sf\r\n\r\nx\r\n")
    entry = wait_for(lambda: [e for e in queue(crepes) if e["recipients"] == ["x@servfail.test"] and e["attempts"] >= 1])
    assert "DNS" in entry[0]["last_error"] or "servfail" in entry[0]["last_error"].lower()
    crepes.cli("queue", "delete", entry[0]["id"])


@pytest.mark.parametrize(
    ("mode", "outcome"),
    [
        ("greet421", "deferred"), ("mail4xx", "deferred"), ("rcpt4xx", "deferred"), ("data4xx", "deferred"),
        ("eod4xx", "deferred"), ("drop_mid_data", "deferred"), ("starttls_fail", "deferred"),
        ("garbage", "deferred"), ("long_line", "deferred"), ("stall", "deferred"),
        ("mail5xx", "failed"), ("rcpt5xx", "failed"), ("data5xx", "failed"), ("eod5xx", "failed"),
        ("accept", "delivered"),
    ],
)
def test_faulty_peer(world: dict[str, Any], mode: str, outcome: str) -> None:
    crepes, peer = world["crepes"], world["peer"]
    peer.mode = mode
    received = len(peer.messages)
    bounces = len(inbox(crepes, "alice@crepes.fr"))
    submit(crepes, "alice@crepes.fr", ALICE_PW, [f"{mode}@peer.test"], f"Subject: {mode}\r\n\r\nx\r\n".encode())
    mine = lambda: [e for e in queue(crepes) if e["recipients"] == [f"{mode}@peer.test"]]  # noqa: E731
    if outcome == "deferred":
        entry = wait_for(lambda: [e for e in mine() if e["attempts"] >= 1])[0]
        assert entry["last_error"]
        # The far side recovers: the message goes through on a later attempt, nothing lost.
        peer.mode = "accept"
        crepes.cli("queue", "retry", entry["id"], check=False)  # it may be going through already
        wait_for(lambda: len(peer.messages) > received, timeout=30)
        wait_for(lambda: not mine())
    elif outcome == "failed":
        rows = wait_for(lambda: inbox(crepes, "alice@crepes.fr")[bounces:])
        assert rows[0]["subject"] == "Undelivered Mail Returned to Sender"
        wait_for(lambda: not mine())
    else:
        wait_for(lambda: len(peer.messages) > received)
        assert peer.messages[-1].recipients == [f"{mode}@peer.test"]
        assert b"Subject: accept" in peer.messages[-1].data
        assert not peer.messages[-1].data.startswith(b"Return-Path")


def test_retry_then_delivered_when_far_side_comes_up(tmp_path: Path) -> None:
    peer_port = free_port()
    crepes = MailServer(tmp_path, "crepes.fr", extra={
        "queue": {"retry_interval": "1s", "connect_timeout": "2s"},
        "routes": {"later.test": f"127.0.0.1:{peer_port}"},
    })
    crepes.cli("user", "add", "alice@crepes.fr", "--password", ALICE_PW)
    with crepes:
        submit(crepes, "alice@crepes.fr", ALICE_PW, ["bob@later.test"], b"Subject: later\r\n\r\nwait for it\r\n")
        entry = wait_for(lambda: [e for e in queue(crepes) if e["attempts"] >= 2])[0]
        assert "refused" in entry["last_error"].lower() or "connect" in entry["last_error"].lower()
        shown = json.loads(crepes.cli("queue", "show", entry["id"], "--json").stdout)
        assert [r["state"] for r in shown["recipients"]] == ["deferred"]
        assert any(ev["kind"] == "attempt" for ev in shown["events"])
        with FaultyPeer(port=peer_port) as peer:
            wait_for(lambda: peer.messages, timeout=30)
            wait_for(lambda: queue(crepes) == [])
            assert b"wait for it" in peer.messages[0].data
        trace = crepes.cli("trace", entry["id"]).stdout.decode()
        assert "outcome: connection-failed" in trace and "Connection refused" in trace
        assert "outcome: delivered" in trace and "removed from the queue" in trace


def test_lifetime_expiry_bounces(tmp_path: Path) -> None:
    crepes = MailServer(tmp_path, "crepes.fr", extra={
        "queue": {"retry_interval": "1s", "max_lifetime": "3s", "delay_warning": "1s", "connect_timeout": "1s"},
        "routes": {"never.test": f"127.0.0.1:{free_port()}"},
    })
    crepes.cli("user", "add", "alice@crepes.fr", "--password", ALICE_PW)
    with crepes:
        submit(crepes, "alice@crepes.fr", ALICE_PW, ["bob@never.test"], b"Subject: doomed\r\n\r\nbye\r\n")
        rows = wait_for(lambda: [r for r in inbox(crepes, "alice@crepes.fr")
                                 if r["subject"] == "Undelivered Mail Returned to Sender"], timeout=30)
        raw = crepes.cli("mailbox", "show", "alice@crepes.fr", str(rows[0]["uid"])).stdout
        assert b"Action: failed" in raw and b"Final-Recipient: rfc822; bob@never.test" in raw
        subjects = [r["subject"] for r in inbox(crepes, "alice@crepes.fr")]
        assert subjects.count("Delayed Mail (still being retried)") == 1  # warned once
        wait_for(lambda: queue(crepes) == [])
        qid = json.loads(crepes.cli("trace", "--json", raw.split(b"X-Mailhouse-Queue-ID: ")[1].split(b"\r\n")[0].decode()).stdout)
        kinds = [e["kind"] for e in qid]
        assert "bounced" in kinds and "dsn-delayed" in kinds and kinds[-1] == "removed"


def test_queue_admin_hold_release_delete(tmp_path: Path) -> None:
    crepes = MailServer(tmp_path, "crepes.fr", extra={
        "queue": {"retry_interval": "1h", "connect_timeout": "1s"},
        "routes": {"held.test": f"127.0.0.1:{free_port()}"},
    })
    crepes.cli("user", "add", "alice@crepes.fr", "--password", ALICE_PW)
    with crepes:
        submit(crepes, "alice@crepes.fr", ALICE_PW, ["bob@held.test"], b"Subject: hold me\r\n\r\nx\r\n")
        entry = wait_for(lambda: [e for e in queue(crepes) if e["attempts"] >= 1])[0]
        qid = entry["id"]
        crepes.cli("queue", "hold", qid)
        assert queue(crepes)[0]["next_attempt"] == "held"
        crepes.cli("queue", "release", qid)
        wait_for(lambda: queue(crepes)[0]["attempts"] >= 2)
        r = crepes.cli("queue", "delete", "NOSUCHID", check=False)
        assert r.returncode == 1 and b"no queued message" in r.stderr
        crepes.cli("queue", "delete", qid)
        assert queue(crepes) == []


def test_send_and_trace_on_both_servers(world: dict[str, Any], tmp_path: Path) -> None:
    import email
    import email.policy

    crepes, hamburger = world["crepes"], world["hamburger"]
    attachment = tmp_path / "résumé ✓.pdf"
    payload = bytes(range(256)) * 40
    attachment.write_bytes(payload)
    before = len(inbox(hamburger, "bob@hamburger.edu"))
    r = crepes.cli(
        "send", "--from", "Alice Crêpe <alice@crepes.fr>", "--to", "Bob <bob@hamburger.edu>",
        "--subject", "Déjà vu ✓ ketchup", "--attach", str(attachment), "--password-stdin",
        input=f"{ALICE_PW}\nDo you like ketchup?\nHow about pickles?\n".encode(),
    )
    out = r.stdout.decode()
    qid = out.split("queue id: ")[1].split()[0]
    mid = out.split("message-id: ")[1].strip()
    rows = wait_for(lambda: inbox(hamburger, "bob@hamburger.edu")[before:])
    raw = hamburger.cli("mailbox", "show", "bob@hamburger.edu", str(rows[0]["uid"])).stdout
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert msg["Subject"] == "Déjà vu ✓ ketchup"
    assert msg["From"].addresses[0].display_name == "Alice Crêpe"
    assert msg["Message-ID"] == mid
    parts = list(msg.iter_attachments())
    assert parts[0].get_filename() == "résumé ✓.pdf"
    assert parts[0].get_content_type() == "application/pdf"
    assert parts[0].get_content() == payload
    assert "Do you like ketchup?" in msg.get_body(("plain",)).get_content()

    wait_for(lambda: queue(crepes) == [])
    sent = crepes.cli("trace", qid).stdout.decode()
    assert "received by mail.crepes.fr on its submission listener" in sent
    assert "authenticated as alice@crepes.fr" in sent
    assert "DNS MX mail.hamburger.edu (preference 10)" in sent
    assert "C: MAIL FROM:<alice@crepes.fr>" in sent and "C: RCPT TO:<bob@hamburger.edu>" in sent
    assert "S: 220 mail.hamburger.edu ESMTP mailhouse" in sent or "reused connection" in sent
    assert "outcome: delivered" in sent and "removed from the queue" in sent
    got = hamburger.cli("trace", mid).stdout.decode()
    assert "received by mail.hamburger.edu on its smtp listener from mail.crepes.fr [127.0.0.1]" in got
    assert "delivered to bob@hamburger.edu, folder INBOX" in got
    events = json.loads(hamburger.cli("trace", mid, "--json").stdout)
    assert [e["kind"] for e in events] == ["received", "checks", "delivered"]
    import poplib

    p = poplib.POP3("127.0.0.1", hamburger.port("pop3"), timeout=10)
    p.user("bob@hamburger.edu")
    p.pass_(BOB_PW)
    p.retr(len(p.list()[1]))
    p.quit()
    got = hamburger.cli("trace", mid).stdout.decode()
    assert "first read by bob@hamburger.edu over POP3" in got


def test_send_errors_are_one_line(world: dict[str, Any]) -> None:
    crepes = world["crepes"]
    r = crepes.cli("send", "--from", "alice@crepes.fr", "--to", "bob@hamburger.edu", "--password-stdin",
                   input=b"wrong\nbody\n", check=False)
    assert r.returncode == 1 and r.stderr.decode().count("\n") == 1 and "authentication failed" in r.stderr.decode()
    r = crepes.cli("send", "--from", "alice@crepes.fr", "--to", "bob@hamburger.edu", "--server",
                   f"127.0.0.1:{free_port()}", "--password-stdin", input=b"pw\nbody\n", check=False)
    assert r.returncode == 1 and "cannot reach" in r.stderr.decode()
    r = crepes.cli("trace", "NOSUCHTHING", check=False)
    assert r.returncode == 1 and "nothing known" in r.stderr.decode()


def test_queue_retry_wakes_the_running_server(tmp_path: Path) -> None:
    """`queue retry` tells serve through its control socket (0600, gone at stop):
    the attempt starts at once, not at the queue manager's next poll (here 1 min)."""
    peer_port = free_port()
    crepes = MailServer(tmp_path, "crepes.fr", extra={
        "queue": {"retry_interval": "1h", "connect_timeout": "2s", "poll_interval": "1m"},
        "routes": {"later.test": f"127.0.0.1:{peer_port}"},
    })
    crepes.cli("user", "add", "alice@crepes.fr", "--password", ALICE_PW)
    control = crepes.data_dir / "run" / "control"
    with crepes, FaultyPeer(port=peer_port) as peer:
        wait_for(control.is_socket)  # made once the listeners are up
        assert control.stat().st_mode & 0o777 == 0o600
        latencies = []
        for i in range(2):
            peer.mode = "rcpt4xx"
            submit(crepes, "alice@crepes.fr", ALICE_PW, [f"bob{i}@later.test"], f"Subject: r{i}\r\n\r\nx\r\n".encode())
            wait_for(lambda: [e for e in queue(crepes) if e["attempts"] >= 1])  # deferred: next try in 1h
            peer.mode = "accept"
            crepes.cli("queue", "retry")
            asked = time.monotonic()
            wait_for(lambda i=i: any(f"bob{i}@later.test" in m.recipients for m in peer.messages),
                     timeout=10, interval=0.01)
            latencies.append(time.monotonic() - asked)
            wait_for(lambda: queue(crepes) == [])
        assert max(latencies) < 5, latencies
    assert not control.exists()
