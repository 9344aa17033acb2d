"""The trust layer between two real `mailhouse serve` processes.

crepes.fr signs what Alice submits; hamburger.edu checks what arrives (SPF, DKIM,
DMARC) against a DNS server on 127.0.0.1 that publishes both domains' MX, A, SPF,
DKIM and DMARC records. Forgeries come from 127.0.0.2 and 127.0.0.3, addresses
outside crepes.fr's SPF record (all of 127/8 is this machine).
"""

from __future__ import annotations

import base64
import json
import smtplib
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mailhouse.dns.testserver import DNSServer, Zone
from tests.integration.conftest import inbox, show, tls_context, wait_for
from tests.world import MailServer, free_port

ALICE_PW = "alice-trust-pw"
BOB_PW = "bob-trust-pw"


def message(subject: str, sender: str = "alice@crepes.fr", mid: str | None = None) -> bytes:
    return (f"From: Alice <{sender}>\r\nTo: Bob <bob@hamburger.edu>\r\nSubject: {subject}\r\n"
            f"Message-ID: <{mid or subject.replace(' ', '-')}@crepes.fr>\r\n"
            "Date: Sat, 01 Nov 2026 10:00:00 +0000\r\n\r\nDo you like ketchup?\r\nHow about pickles?\r\n").encode()


def submit(server: MailServer, user: str, password: str, sender: str, rcpts: list[str], body: bytes) -> None:
    with smtplib.SMTP("127.0.0.1", server.port("submission"), timeout=20) as s:
        s.starttls(context=tls_context())
        s.login(user, password)
        s.sendmail(sender, rcpts, body)


def mx_send(server: MailServer, source: str, helo: str, sender: str, rcpts: list[str], body: bytes) -> None:
    """Straight to the MX from `source`, as another mail server would."""
    with smtplib.SMTP("127.0.0.1", server.port("smtp"), timeout=20, source_address=(source, 0),
                      local_hostname=helo) as s:
        s.sendmail(sender, rcpts, body)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root: Path = tmp_path_factory.mktemp("trust")
    zone = Zone()
    dns = DNSServer(zone)
    dns.start_in_thread()
    crepes_smtp, hamburger_smtp = free_port(), free_port()
    for domain in ("crepes.fr", "hamburger.edu"):
        zone.add(domain, "MX", f"10 mail.{domain}.", ttl=0)
        zone.add(f"mail.{domain}", "A", "127.0.0.1", ttl=0)
        zone.add(domain, "TXT", "v=spf1 ip4:127.0.0.1 -all", ttl=0)
        zone.add(f"_dmarc.{domain}", "TXT", "v=DMARC1; p=reject", ttl=0)
    common = {"retry_interval": "1s", "max_lifetime": "1h", "delay_warning": "0", "idle_timeout": "1s",
              "connect_timeout": "3s", "reply_timeout": "5s"}
    crepes = MailServer(root, "crepes.fr", extra={
        "dns": {"nameservers": [f"127.0.0.1:{dns.port}"]}, "queue": {**common, "smtp_port": hamburger_smtp},
    }, ports={"smtp": crepes_smtp})
    hamburger = MailServer(root, "hamburger.edu", extra={
        "dns": {"nameservers": [f"127.0.0.1:{dns.port}"]}, "queue": {**common, "smtp_port": crepes_smtp},
    }, ports={"smtp": hamburger_smtp})
    crepes.cli("user", "add", "alice@crepes.fr", "--password", ALICE_PW)
    crepes.cli("user", "add", "eve@crepes.fr", "--password", "eve-pw")
    crepes.cli("user", "add", "copy@crepes.fr", "--password", "copy-pw")
    hamburger.cli("user", "add", "bob@hamburger.edu", "--password", BOB_PW)
    # What crepes.fr's administrator publishes, as `domain records` prints it.
    records = json.loads(crepes.cli("domain", "records", "crepes.fr", "--json").stdout)
    for r in records:
        if "._domainkey." in r["name"]:
            zone.add(r["name"], "TXT", r["value"], ttl=0)
    crepes.start()
    hamburger.start()
    yield {"crepes": crepes, "hamburger": hamburger, "zone": zone, "records": records}
    assert crepes.stop() == 0, crepes.log()
    assert hamburger.stop() == 0, hamburger.log()
    dns.stop_thread()


def test_domain_records(world: dict[str, Any]) -> None:
    records = world["records"]
    assert {"name", "type", "value"} == set(records[0])
    kinds = {(r["type"], r["name"]) for r in records}
    assert ("MX", "crepes.fr") in kinds and ("TXT", "_dmarc.crepes.fr") in kinds
    assert any(r["type"] == "TXT" and r["value"].startswith("v=spf1") for r in records)
    dkim = [r for r in records if "._domainkey." in r["name"]]
    assert len(dkim) == 1 and dkim[0]["value"].startswith("v=DKIM1; k=rsa; p=")
    assert any(r["type"] == "SRV" and r["name"] == "_submission._tcp.crepes.fr" for r in records)
    again = json.loads(world["crepes"].cli("domain", "records", "crepes.fr", "--json").stdout)
    assert again == records  # the key is kept, not made anew
    text = world["crepes"].cli("domain", "records", "crepes.fr").stdout.decode()
    assert "IN\tMX\t10 mail.crepes.fr." in text


def test_crepes_signs_hamburger_verifies(world: dict[str, Any]) -> None:
    crepes, hamburger = world["crepes"], world["hamburger"]
    before = len(inbox(hamburger, "bob@hamburger.edu"))
    submit(crepes, "alice@crepes.fr", ALICE_PW, "alice@crepes.fr", ["bob@hamburger.edu"],
           message("signed ketchup", mid="trust-e2e"))
    rows = wait_for(lambda: inbox(hamburger, "bob@hamburger.edu")[before:])
    raw = show(hamburger, "bob@hamburger.edu", rows[0]["uid"])
    head = raw.split(b"\r\n\r\n", 1)[0].decode()
    assert head.startswith("Return-Path: <alice@crepes.fr>\r\nAuthentication-Results: mail.hamburger.edu;")
    ar = head.split("Authentication-Results:", 1)[1].split("\r\nReceived:", 1)[0]
    for want in ("spf=pass", "dkim=pass", "header.d=crepes.fr", "dmarc=pass", "header.from=crepes.fr"):
        assert want in ar, head
    assert "DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=crepes.fr;" in head
    journey = json.loads(hamburger.cli("trace", "trust-e2e@crepes.fr", "--json").stdout)
    checks = [e["data"] for e in journey if e["kind"] == "checks"]
    assert checks and checks[0]["spf"] == "pass" and checks[0]["dmarc"] == "pass"
    sent = json.loads(crepes.cli("trace", "trust-e2e@crepes.fr", "--json").stdout)
    assert any(e["kind"] == "dkim_signed" and e["data"]["d"] == "crepes.fr" for e in sent)


def test_forgery_from_outside_spf_is_refused(world: dict[str, Any]) -> None:
    hamburger = world["hamburger"]
    with pytest.raises(smtplib.SMTPDataError) as e:
        mx_send(hamburger, "127.0.0.2", "forger.test", "alice@crepes.fr", ["bob@hamburger.edu"],
                message("forged ketchup"))
    assert e.value.smtp_code == 550
    assert b"5.7.1" in e.value.smtp_error and b"DMARC" in e.value.smtp_error


def test_message_altered_in_transit_fails_dkim(world: dict[str, Any]) -> None:
    crepes, hamburger = world["crepes"], world["hamburger"]
    submit(crepes, "alice@crepes.fr", ALICE_PW, "alice@crepes.fr", ["copy@crepes.fr"], message("to be altered"))
    rows = wait_for(lambda: inbox(crepes, "copy@crepes.fr"))
    signed = show(crepes, "copy@crepes.fr", rows[-1]["uid"]).split(b"\r\n", 1)[1]  # without Return-Path
    assert signed.startswith(b"DKIM-Signature:")
    altered = signed.replace(b"ketchup?", b"mustard?")
    # Relayed by a host SPF does not know: no aligned pass is left, p=reject refuses it.
    with pytest.raises(smtplib.SMTPDataError) as e:
        mx_send(hamburger, "127.0.0.3", "relay.test", "alice@crepes.fr", ["bob@hamburger.edu"], altered)
    assert e.value.smtp_code == 550
    # From crepes' own address: SPF passes, so DMARC does, but the signature is broken.
    before = len(inbox(hamburger, "bob@hamburger.edu"))
    mx_send(hamburger, "127.0.0.1", "mail.crepes.fr", "alice@crepes.fr", ["bob@hamburger.edu"], altered)
    rows = wait_for(lambda: inbox(hamburger, "bob@hamburger.edu")[before:])
    head = show(hamburger, "bob@hamburger.edu", rows[0]["uid"]).split(b"\r\n\r\n", 1)[0]
    assert b"dkim=fail" in head and b"body hash" in head and b"spf=pass" in head


def test_spoofed_senders_refused(world: dict[str, Any]) -> None:
    crepes = world["crepes"]
    # Envelope: refused at MAIL FROM once the SMTP server asks may_send_as, else at the end of data.
    with pytest.raises((smtplib.SMTPSenderRefused, smtplib.SMTPDataError)) as e:
        submit(crepes, "alice@crepes.fr", ALICE_PW, "eve@crepes.fr", ["bob@hamburger.edu"],
               message("envelope spoof", sender="alice@crepes.fr"))
    assert e.value.smtp_code == 553
    # Header From of someone else.
    with pytest.raises(smtplib.SMTPDataError) as d:
        submit(crepes, "alice@crepes.fr", ALICE_PW, "alice@crepes.fr", ["bob@hamburger.edu"],
               message("header spoof", sender="eve@crepes.fr"))
    assert d.value.smtp_code == 553 and b"5.7.1" in d.value.smtp_error


def _smtp_auth(server: MailServer, source: str, user: str, password: str) -> int:
    """One AUTH PLAIN attempt (smtplib's login() would try a second mechanism)."""
    with smtplib.SMTP("127.0.0.1", server.port("submission"), timeout=30, source_address=(source, 0)) as s:
        s.starttls(context=tls_context())
        s.ehlo()
        token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
        code, _ = s.docmd("AUTH", f"PLAIN {token}")
        return code


def _pop3_login(server: MailServer, source: str, user: str, password: str) -> bytes:
    sock = socket.create_connection(("127.0.0.1", server.port("pop3")), timeout=30, source_address=(source, 0))
    f = sock.makefile("rb")
    try:
        f.readline()
        sock.sendall(f"USER {user}\r\n".encode())
        f.readline()
        sock.sendall(f"PASS {password}\r\n".encode())
        return f.readline()
    finally:
        f.close()
        sock.close()


def test_password_guessing_locked_out_across_protocols(world: dict[str, Any]) -> None:
    crepes = world["crepes"]
    guesser = "127.0.0.5"
    for i in range(5):
        assert _smtp_auth(crepes, guesser, "alice@crepes.fr", f"guess{i}") == 535
        assert _pop3_login(crepes, guesser, "alice@crepes.fr", f"guess-{i}").startswith(b"-ERR")
    # Ten failures in all: the right password is now refused, temporarily, on both.
    assert _smtp_auth(crepes, guesser, "alice@crepes.fr", ALICE_PW) == 454
    reply = _pop3_login(crepes, guesser, "alice@crepes.fr", ALICE_PW)
    assert reply.startswith(b"-ERR") and b"TEMP" in reply.upper()
    # Alice from her own address is not affected.
    assert _smtp_auth(crepes, "127.0.0.1", "alice@crepes.fr", ALICE_PW) == 235
    assert _pop3_login(crepes, "127.0.0.1", "alice@crepes.fr", ALICE_PW).startswith(b"+OK")


def test_greylisting_remembers_its_triplets_across_a_restart(tmp_path: Path) -> None:
    """A sender that passed greylisting before a restart is not deferred again
    after it, nor is one whose first try was deferred just before; the log of the
    second start says how many triplets it found."""
    zone = Zone()
    zone.add("sender.test", "TXT", "v=spf1 ip4:127.0.0.0/8 -all", ttl=0)
    dns = DNSServer(zone)
    dns.start_in_thread()
    server = MailServer(tmp_path, "grey.test", listeners=("smtp",), extra={
        "dns": {"nameservers": [f"127.0.0.1:{dns.port}"]},
        "trust": {"greylisting": True, "greylist_delay": "1s"},  # 127.0.0.1 untrusted
    })
    server.cli("user", "add", "bob@grey.test", "--password", "bob-grey-pw")

    def send(sender: str) -> int:
        body = f"From: <{sender}>\r\nTo: <bob@grey.test>\r\nSubject: grey\r\n\r\nhello\r\n".encode()
        try:
            with smtplib.SMTP("127.0.0.1", server.port("smtp"), timeout=20) as s:
                s.sendmail(sender, ["bob@grey.test"], body)
        except smtplib.SMTPDataError as e:
            return e.smtp_code
        return 250

    try:
        server.start()
        assert send("known@sender.test") == 451
        time.sleep(1.2)
        assert send("known@sender.test") == 250  # passed: kept for greylist_pass
        assert send("waiting@sender.test") == 451  # first try, just before the restart
        assert server.stop() == 0
        server.start()
        assert send("known@sender.test") == 250
        time.sleep(1.2)
        assert send("waiting@sender.test") == 250  # its delay counted from before
        assert send("new@sender.test") == 451
    finally:
        rc = server.stop()
        dns.stop_thread()
    assert rc == 0, server.log()
    assert "greylist: 2 triplets kept from before" in server.log(), server.log()
