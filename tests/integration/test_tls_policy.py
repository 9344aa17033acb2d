"""Outbound TLS policy between two real servers: MTA-STS and DANE.

crepes.fr sends; hamburger.edu receives for several test domains, with a
certificate from a test CA for mail.hamburger.edu and dane-ta.hamburger.edu
(its chain includes the CA, as DANE-TA needs). The DNS server on 127.0.0.1
plays a validating resolver for the names marked validated (the AD bit), and a
small HTTPS server serves the MTA-STS policies. crepes trusts the test CA
(`[tls] ca_file`), the AD bit of its nameserver (`[dns] trust_ad`), and fetches
policies from the HTTPS server's port (`[mta_sts] port`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mailhouse.dns.testserver import DNSServer, Zone
from tests.integration.conftest import inbox, queue, wait_for
from tests.integration.test_outbound import submit
from tests.tlskit import PolicyServer, Response, TestCA, tlsa
from tests.world import MailServer, free_port

ALICE_PW = "alice-pw"
BOB_PW = "bob-pw"
ELSEWHERE = "mx.elsewhere.test"


def policy(mode: str, *mx: str, max_age: int = 86400) -> Response:
    lines = ["version: STSv1", f"mode: {mode}", *(f"mx: {m}" for m in mx), f"max_age: {max_age}"]
    return Response("".join(f"{line}\r\n" for line in lines))


# domain -> (MX host, MTA-STS policy or None, DNSSEC-validated)
DOMAINS: dict[str, tuple[str, Response | None, bool]] = {
    "stsok.test": ("mail.hamburger.edu", policy("enforce", "*.hamburger.edu"), False),
    "stsbad.test": ("mail.hamburger.edu", policy("enforce", ELSEWHERE), False),
    "stscert.test": ("other.hamburger.edu", policy("enforce", "*.hamburger.edu"), False),
    "ststesting.test": ("mail.hamburger.edu", policy("testing", ELSEWHERE), False),
    "override.test": ("mail.hamburger.edu", policy("enforce", ELSEWHERE), False),
    "daneee.test": ("dane-ee.hamburger.edu", None, True),
    "daneta.test": ("dane-ta.hamburger.edu", None, True),
    "danebad.test": ("dane-bad.hamburger.edu", None, True),
    "danests.test": ("dane-ee.hamburger.edu", policy("enforce", ELSEWHERE), True),
    "noad.test": ("noad.hamburger.edu", None, False),
}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root: Path = tmp_path_factory.mktemp("tlsworld")
    ca = TestCA()
    ca_file = ca.write(root / "ca.pem")
    leaf = ca.issue(["mail.hamburger.edu", "dane-ta.hamburger.edu"])
    leaf.write(root / "hamburger-cert.pem", root / "hamburger-key.pem", chain=[ca.cert])
    stranger = TestCA("not hamburger's CA").issue(["dane-bad.hamburger.edu"])

    zone = Zone()
    dns = DNSServer(zone)
    dns.start_in_thread()
    https = PolicyServer(ca, {f"mta-sts.{d}": p for d, (_, p, _) in DOMAINS.items() if p is not None}).start()
    crepes_smtp, hamburger_smtp = free_port(), free_port()

    for domain in ("crepes.fr", "hamburger.edu"):
        zone.add(domain, "MX", f"10 mail.{domain}.", ttl=0)
        zone.add(f"mail.{domain}", "A", "127.0.0.1", ttl=0)
    for host in ("other", "dane-ee", "dane-ta", "dane-bad", "noad"):
        zone.add(f"{host}.hamburger.edu", "A", "127.0.0.1", ttl=0)
    for domain, (mx, pol, validated) in DOMAINS.items():
        zone.add(domain, "MX", f"10 {mx}.", ttl=0)
        if pol is not None:
            zone.add(f"_mta-sts.{domain}", "TXT", "v=STSv1; id=1", ttl=0)
            zone.add(f"mta-sts.{domain}", "A", "127.0.0.1", ttl=0)
        if validated:
            zone.set_validated(domain)
            zone.set_validated(mx)
    records = {
        "dane-ee.hamburger.edu": tlsa(leaf.cert, 3, 1, 1),
        "dane-ta.hamburger.edu": tlsa(ca.cert, 2, 0, 1),
        "dane-bad.hamburger.edu": tlsa(stranger.cert, 3, 1, 1),
        "noad.hamburger.edu": tlsa(stranger.cert, 3, 1, 1),  # would fail, if it were believed
    }
    for host, value in records.items():
        name = f"_{hamburger_smtp}._tcp.{host}"
        zone.add(name, "TLSA", value, ttl=0)
        zone.set_validated(name, host != "noad.hamburger.edu")

    common = {"retry_interval": "1s", "max_lifetime": "1h", "delay_warning": "0", "idle_timeout": "1s",
              "connect_timeout": "3s", "reply_timeout": "5s"}
    crepes = MailServer(root, "crepes.fr", extra={
        "dns": {"nameservers": [f"127.0.0.1:{dns.port}"], "trust_ad": True},
        "queue": {**common, "smtp_port": hamburger_smtp},
        "tls": {"ca_file": str(ca_file)},
        "mta_sts": {"port": https.port, "timeout": "5s"},
        "tls_policy": {"override.test": "opportunistic"},
    }, ports={"smtp": crepes_smtp})
    hamburger = MailServer(root, "hamburger.edu", extra={
        "dns": {"nameservers": [f"127.0.0.1:{dns.port}"]},
        "queue": {**common, "smtp_port": crepes_smtp},
        "tls": {"cert": str(root / "hamburger-cert.pem"), "key": str(root / "hamburger-key.pem")},
    }, ports={"smtp": hamburger_smtp})
    crepes.cli("user", "add", "alice@crepes.fr", "--password", ALICE_PW)
    hamburger.cli("user", "add", "bob@hamburger.edu", "--password", BOB_PW)
    for domain in DOMAINS:
        hamburger.cli("domain", "add", domain)
        hamburger.cli("alias", "add", f"@{domain}", "bob@hamburger.edu")
    crepes.start()
    hamburger.start()
    yield {"crepes": crepes, "hamburger": hamburger, "zone": zone, "dns": dns, "https": https, "root": root}
    assert crepes.stop() == 0, crepes.log()
    assert hamburger.stop() == 0, hamburger.log()
    https.stop()
    dns.stop_thread()


def send(world: dict[str, Any], domain: str, tag: str | None = None) -> str:
    """Alice writes to bob@domain; the tag (subject, and Message-ID <tag@crepes.fr>) is returned."""
    tag = tag or domain.split(".")[0]
    mid = f"{tag}@crepes.fr"
    submit(world["crepes"], "alice@crepes.fr", ALICE_PW, [f"bob@{domain}"],
           f"From: alice@crepes.fr\r\nTo: bob@{domain}\r\nSubject: {tag}\r\nMessage-ID: <{mid}>\r\n\r\n"
           f"over {tag}\r\n".encode())
    return tag


def attempts(world: dict[str, Any], tag: str) -> list[dict[str, Any]]:
    events = json.loads(world["crepes"].cli("trace", "--json", f"{tag}@crepes.fr").stdout)
    return [e["data"] for e in events if e["kind"] == "attempt"]


def delivered(world: dict[str, Any], tag: str) -> dict[str, Any]:
    """Waits for bob to have the message; the successful attempt's journey event."""
    wait_for(lambda: [r for r in inbox(world["hamburger"], "bob@hamburger.edu") if r["subject"] == tag])
    done = wait_for(lambda: [a for a in attempts(world, tag) if a.get("outcome") == "delivered"])
    assert done[-1]["tls"], done[-1]  # over TLS
    return dict(done[-1])


def deferred(world: dict[str, Any], tag: str, domain: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Waits for a failed attempt; checks nothing reached bob; the queue entry and the attempts."""
    crepes = world["crepes"]
    entry = wait_for(lambda: [e for e in queue(crepes) if e["recipients"] == [f"bob@{domain}"]
                              and e["attempts"] >= 2])[0]
    assert not [r for r in inbox(world["hamburger"], "bob@hamburger.edu") if r["subject"] == tag]
    tried = attempts(world, tag)
    assert tried and all(a["outcome"] in ("skipped", "connection-failed") for a in tried)
    crepes.cli("queue", "delete", entry["id"])
    return entry, tried


# ====================================================================== MTA-STS
def test_mta_sts_enforce_with_a_listed_mx_and_a_valid_certificate(world: dict[str, Any]) -> None:
    tag = send(world, "stsok.test")
    event = delivered(world, tag)
    tp = event["tls_policy"]
    assert (tp["source"], tp["level"], tp["mode"], tp["result"]) == ("mta-sts", "verify", "enforce", "verified")
    assert "policy id 1" in tp["note"]
    assert ("mta-sts.stsok.test", "/.well-known/mta-sts.txt") in world["https"].requests
    text = world["crepes"].cli("trace", f"{tag}@crepes.fr").stdout.decode()
    assert "TLS policy: mta-sts (verify, mode enforce): verified" in text, text


def test_mta_sts_enforce_mx_not_in_policy_is_deferred(world: dict[str, Any]) -> None:
    entry, tried = deferred(world, send(world, "stsbad.test"), "stsbad.test")
    assert "MTA-STS" in entry["last_error"] and "not an MX host" in entry["last_error"]
    assert all(a["outcome"] == "skipped" and "host" not in a for a in tried)  # never even connected
    assert tried[0]["tls_policy"]["mode"] == "enforce"


def test_mta_sts_enforce_certificate_not_valid_for_the_mx_is_deferred(world: dict[str, Any]) -> None:
    entry, tried = deferred(world, send(world, "stscert.test"), "stscert.test")
    assert "CERTIFICATE_VERIFY_FAILED" in entry["last_error"] or "certificate" in entry["last_error"].lower()
    assert tried[0]["outcome"] == "connection-failed" and tried[0]["host"] == "other.hamburger.edu"


def test_mta_sts_testing_reports_and_delivers(world: dict[str, Any]) -> None:
    event = delivered(world, send(world, "ststesting.test"))
    tp = event["tls_policy"]
    assert (tp["source"], tp["mode"], tp["result"]) == ("mta-sts", "testing", "failed (testing: delivered anyway)")
    assert tp["problem"] == "mail.hamburger.edu is not in the policy's mx"
    assert "not in the policy's mx (testing: used anyway)" in tp["note"]


def test_tls_policy_override_wins_over_mta_sts(world: dict[str, Any]) -> None:
    event = delivered(world, send(world, "override.test"))
    assert event["tls_policy"]["source"] == "config"


def test_mta_sts_policy_persists_across_a_restart(world: dict[str, Any]) -> None:
    crepes, zone, https = world["crepes"], world["zone"], world["https"]
    saved = crepes.data_dir / "mta-sts" / "stsbad.test.json"
    if not saved.exists():  # not fetched by an earlier test: fetch it now
        deferred(world, send(world, "stsbad.test", "stsbad-first"), "stsbad.test")
    assert json.loads(saved.read_text())["mode"] == "enforce"
    # The attacker's dream: after a restart, no TXT record and no policy server.
    crepes.stop()
    zone.remove("_mta-sts.stsbad.test", "TXT")
    del https.responses["mta-sts.stsbad.test"]
    try:
        crepes.start()
        entry, tried = deferred(world, send(world, "stsbad.test", "stsbad-restart"), "stsbad.test")
        assert "not an MX host" in entry["last_error"]
        assert "cached (no TXT record)" in tried[-1]["tls_policy"]["note"]
    finally:
        zone.add("_mta-sts.stsbad.test", "TXT", "v=STSv1; id=1", ttl=0)
        https.responses["mta-sts.stsbad.test"] = DOMAINS["stsbad.test"][1]  # type: ignore[assignment]


# ====================================================================== DANE
def test_dane_ee_match_is_delivered(world: dict[str, Any]) -> None:
    event = delivered(world, send(world, "daneee.test"))
    tp = event["tls_policy"]
    assert (tp["source"], tp["level"], tp["result"]) == ("dane", "dane", "verified")
    assert tp["tlsa"][0].startswith("3 1 1 ")


def test_dane_ta_match_is_delivered(world: dict[str, Any]) -> None:
    event = delivered(world, send(world, "daneta.test"))
    tp = event["tls_policy"]
    assert (tp["source"], tp["result"]) == ("dane", "verified") and tp["tlsa"][0].startswith("2 0 1 ")


def test_dane_mismatch_is_deferred(world: dict[str, Any]) -> None:
    entry, tried = deferred(world, send(world, "danebad.test"), "danebad.test")
    assert "DANE" in entry["last_error"] and "matches no DANE-EE" in entry["last_error"]
    assert tried[0]["tls_policy"]["source"] == "dane"


def test_dane_wins_over_mta_sts(world: dict[str, Any]) -> None:
    event = delivered(world, send(world, "danests.test"))
    assert event["tls_policy"]["source"] == "dane"


def test_without_the_ad_bit_dane_is_ignored(world: dict[str, Any]) -> None:
    # noad.test publishes a TLSA record that does not match, but nothing is validated.
    event = delivered(world, send(world, "noad.test"))
    tp = event["tls_policy"]
    assert (tp["source"], tp["level"], tp["result"]) == ("opportunistic", "opportunistic", "encrypted")
    assert event["route"]["dnssec"] is False
