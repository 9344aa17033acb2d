"""The trust hooks on the real reception path: a Reception over a real SQLite store,
DNS from the test DNS server on 127.0.0.1.

crepes.fr (the sending side: ownership, limits, DKIM signing) and hamburger.edu
(the receiving side: SPF, DKIM, ARC, DMARC, Authentication-Results) each get a
Context of their own, as two servers would.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import dkim
import pytest

from mailhouse.auth.service import Authenticator
from mailhouse.config import Config
from mailhouse.context import Context
from mailhouse.delivery.reception import Accepted, Client, Reception, Refusal
from mailhouse.dns.testserver import DNSServer, Zone
from mailhouse.store.sqlite import SQLiteStore
from mailhouse.trust.dnsq import TrustDNS
from mailhouse.trust.hooks import Trust, install, may_send_as
from mailhouse.trust.keys import RSA
from mailhouse.trust.settings import RateLimits, TrustSettings

MESSAGE = (
    b"From: Alice <alice@crepes.fr>\r\nTo: Bob <bob@hamburger.edu>\r\nSubject: ketchup\r\n"
    b"Date: Sat, 01 Nov 2026 10:00:00 +0000\r\nMessage-ID: <ketchup@crepes.fr>\r\n\r\n"
    b"Do you like ketchup?\r\nHow about pickles?\r\n"
)


@dataclass
class Side:
    ctx: Context
    store: SQLiteStore
    trust: Trust


async def make_side(root: Path, domain: str, dns: TrustDNS, settings: TrustSettings | None = None) -> Side:
    store = SQLiteStore(root / domain)
    await store.open()
    await store.add_domain(domain)
    config = Config(hostname=f"mail.{domain}", domains=[domain], data_dir=root / domain)
    ctx = Context(config=config, store=store, auth=Authenticator(store, failure_delay=0), tls=None)
    return Side(ctx, store, install(ctx, dns=dns, settings=settings or TrustSettings()))


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[dict[str, object]]:
    zone = Zone()
    zone.add("crepes.fr", "MX", "10 mail.crepes.fr.")
    zone.add("mail.crepes.fr", "A", "127.0.0.1")
    zone.add("crepes.fr", "TXT", "v=spf1 ip4:127.0.0.1 -all")
    zone.add("_dmarc.crepes.fr", "TXT", "v=DMARC1; p=reject")
    zone.add("hamburger.edu", "MX", "10 mail.hamburger.edu.")
    zone.add("mail.hamburger.edu", "A", "127.0.0.1")
    zone.add("quarantine.test", "TXT", "v=spf1 ip4:127.0.0.1 -all")
    zone.add("_dmarc.quarantine.test", "TXT", "v=DMARC1; p=quarantine")
    zone.add("nodmarc.test", "TXT", "v=spf1 ip4:127.0.0.1 -all")
    async with DNSServer(zone) as server:
        dns = TrustDNS(server.resolver())
        crepes = await make_side(tmp_path, "crepes.fr", dns)
        hamburger = await make_side(tmp_path, "hamburger.edu", dns)
        await crepes.store.add_account("alice@crepes.fr", "x")
        await crepes.store.add_account("eve@crepes.fr", "x")
        await crepes.store.add_alias("sales@crepes.fr", ["alice@crepes.fr", "eve@crepes.fr"])
        await hamburger.store.add_account("bob@hamburger.edu", "x")
        try:
            yield {"zone": zone, "crepes": crepes, "hamburger": hamburger, "dns": dns}
        finally:
            await crepes.store.close()
            await hamburger.store.close()


async def submit(side: Side, user: str, sender: str, rcpts: list[str], msg: bytes,
                 listener: str = "submission") -> Accepted | Refusal:
    rec = Reception(side.ctx, Client(listener, "192.0.2.7", "laptop", auth_user=user), sender, {}, submission=True)
    for r in rcpts:
        assert rec.add_recipient(r, {}) is None
    rec.start_data()
    rec.feed(msg)
    return await rec.complete([side.trust.outbound])


async def receive(side: Side, ip: str, helo: str, sender: str, rcpts: list[str], msg: bytes) -> Accepted | Refusal:
    rec = Reception(side.ctx, Client("smtp", ip, helo), sender, {})
    for r in rcpts:
        assert rec.add_recipient(r, {}) is None
    rec.start_data()
    rec.feed(msg)
    return await rec.complete([side.trust.inbound])


async def stored(side: Side, accepted: Accepted | Refusal, folder: str | None = None) -> bytes:
    assert isinstance(accepted, Accepted), accepted
    d = accepted.delivered[0]
    f = await side.store.get_folder(d.account_id, folder or d.folder)
    assert f is not None
    m = await side.store.get_message(f.id, d.uid)
    assert m is not None
    return await side.store.read_blob(m.blob_id)


async def signed_by_crepes(world: dict[str, object], msg: bytes = MESSAGE) -> bytes:
    """What crepes.fr's queue would send: the stored message without Return-Path,
    with its DKIM key published in the zone."""
    crepes, zone = world["crepes"], world["zone"]
    assert isinstance(crepes, Side) and isinstance(zone, Zone)
    await crepes.store.add_account("copy@crepes.fr", "x")
    r = await submit(crepes, "alice@crepes.fr", "alice@crepes.fr", ["copy@crepes.fr"], msg)
    raw = await stored(crepes, r)
    for k in await crepes.trust.keys.keys("crepes.fr", ed25519=crepes.trust.settings.dkim_ed25519):
        zone.remove(k.record_name)
        zone.add(k.record_name, "TXT", k.public_record(), ttl=0)
    assert raw.startswith(b"Return-Path: <alice@crepes.fr>\r\nDKIM-Signature:")
    return raw.split(b"\r\n", 1)[1]


def ar_of(raw: bytes) -> str:
    m = re.search(rb"^Authentication-Results: .*?\r\n(?![ \t])", raw, re.M | re.S)
    assert m, raw[:600]
    return m.group(0).decode()


# ------------------------------------------------------------------ end to end, in process
async def test_signed_message_passes_spf_dkim_dmarc(world: dict[str, object]) -> None:
    hamburger = world["hamburger"]
    assert isinstance(hamburger, Side)
    signed = await signed_by_crepes(world)
    r = await receive(hamburger, "127.0.0.1", "mail.crepes.fr", "alice@crepes.fr", ["bob@hamburger.edu"], signed)
    raw = await stored(hamburger, r)
    assert r.delivered[0].folder == "INBOX"  # type: ignore[union-attr]
    ar = ar_of(raw)
    assert ar.startswith("Authentication-Results: mail.hamburger.edu;")
    for want in ("spf=pass", "dkim=pass header.d=crepes.fr", "dmarc=pass", "header.from=crepes.fr", "arc=none",
                 "smtp.mailfrom=alice@crepes.fr"):
        assert want in ar, ar
    assert raw.startswith(b"Return-Path: <alice@crepes.fr>\r\nAuthentication-Results:")
    journey = await hamburger.store.journey(r.queue_id)  # type: ignore[union-attr]
    checks = [e.data for e in journey if e.kind == "checks"]
    assert checks and checks[0]["spf"] == "pass" and checks[0]["dmarc"] == "pass"
    assert checks[0]["dkim"][0]["result"] == "pass"


async def test_forgery_outside_spf_unsigned_is_refused_under_p_reject(world: dict[str, object]) -> None:
    hamburger = world["hamburger"]
    assert isinstance(hamburger, Side)
    r = await receive(hamburger, "127.0.0.2", "evil.test", "alice@crepes.fr", ["bob@hamburger.edu"], MESSAGE)
    assert isinstance(r, Refusal)
    assert (r.code, r.enhanced) == (550, "5.7.1") and "DMARC" in r.text and "crepes.fr" in r.text


async def test_altered_in_transit_fails_dkim(world: dict[str, object]) -> None:
    hamburger = world["hamburger"]
    assert isinstance(hamburger, Side)
    signed = await signed_by_crepes(world)
    altered = signed.replace(b"ketchup?", b"mustard?")
    # From an address SPF allows: DMARC still passes on SPF, DKIM itself fails.
    r = await receive(hamburger, "127.0.0.1", "mail.crepes.fr", "alice@crepes.fr", ["bob@hamburger.edu"], altered)
    ar = ar_of(await stored(hamburger, r))
    assert "dkim=fail" in ar and "body hash" in ar and "dmarc=pass" in ar
    # Forwarded by someone SPF does not allow: nothing aligned passes, p=reject refuses.
    r = await receive(hamburger, "127.0.0.3", "fwd.test", "alice@crepes.fr", ["bob@hamburger.edu"], altered)
    assert isinstance(r, Refusal) and r.code == 550


async def test_unreadable_from_does_not_escape_dmarc(world: dict[str, object]) -> None:
    hamburger = world["hamburger"]
    assert isinstance(hamburger, Side)
    msg = MESSAGE.replace(b"From: Alice <alice@crepes.fr>", b"From: Alice <alice@crepes.fr")
    r = await receive(hamburger, "127.0.0.2", "evil.test", "x@nodmarc.test", ["bob@hamburger.edu"], msg)
    assert isinstance(r, Refusal) and r.code == 550


async def test_quarantine_goes_to_junk(world: dict[str, object]) -> None:
    hamburger = world["hamburger"]
    assert isinstance(hamburger, Side)
    msg = MESSAGE.replace(b"alice@crepes.fr", b"carol@quarantine.test")
    r = await receive(hamburger, "127.0.0.2", "x.test", "carol@quarantine.test", ["bob@hamburger.edu"], msg)
    assert isinstance(r, Accepted) and r.delivered[0].folder == "Junk"
    ar = ar_of(await stored(hamburger, r))
    assert "spf=fail" in ar and "dmarc=fail (p=quarantine dis=quarantine)" in ar


async def test_spf_fail_without_dmarc_goes_to_junk(world: dict[str, object]) -> None:
    hamburger = world["hamburger"]
    assert isinstance(hamburger, Side)
    msg = MESSAGE.replace(b"alice@crepes.fr", b"dan@nodmarc.test")
    r = await receive(hamburger, "127.0.0.2", "x.test", "dan@nodmarc.test", ["bob@hamburger.edu"], msg)
    assert isinstance(r, Accepted) and r.delivered[0].folder == "Junk"
    r = await receive(hamburger, "127.0.0.1", "x.test", "dan@nodmarc.test", ["bob@hamburger.edu"], msg)
    assert isinstance(r, Accepted) and r.delivered[0].folder == "INBOX"
    assert "dmarc=none" in ar_of(await stored(hamburger, r))


async def test_dns_failure_defers_never_passes(world: dict[str, object]) -> None:
    hamburger, zone = world["hamburger"], world["zone"]
    assert isinstance(hamburger, Side) and isinstance(zone, Zone)
    zone.add("flaky.test", "TXT", "v=spf1 ip4:127.0.0.1 -all")
    zone.fail("flaky.test")
    msg = MESSAGE.replace(b"alice@crepes.fr", b"x@flaky.test")
    r = await receive(hamburger, "127.0.0.1", "x.test", "x@flaky.test", ["bob@hamburger.edu"], msg)
    assert isinstance(r, Refusal) and (r.code, r.enhanced) == (451, "4.4.3")
    # A sender domain nobody answers for at all (REFUSED): the same.
    msg = MESSAGE.replace(b"alice@crepes.fr", b"x@unknown-zone.example")
    r = await receive(hamburger, "127.0.0.1", "x.test", "x@unknown-zone.example", ["bob@hamburger.edu"], msg)
    assert isinstance(r, Refusal) and (r.code, r.enhanced) == (451, "4.4.3")


async def test_forged_authentication_results_are_removed(world: dict[str, object]) -> None:
    hamburger = world["hamburger"]
    assert isinstance(hamburger, Side)
    forged = (b"Authentication-Results: mail.hamburger.edu; spf=pass smtp.mailfrom=alice@crepes.fr;\r\n"
              b"\tdkim=pass header.d=crepes.fr\r\n"
              b"Authentication-Results: (sneaky) \"MAIL.Hamburger.EDU\"; dmarc=pass\r\n"
              b"Authentication-Results: mx.crepes.fr; spf=pass\r\n")
    signed = await signed_by_crepes(world)
    r = await receive(hamburger, "127.0.0.1", "mail.crepes.fr", "alice@crepes.fr", ["bob@hamburger.edu"],
                      forged + signed)
    raw = await stored(hamburger, r)
    head = raw.split(b"\r\n\r\n", 1)[0]
    assert head.count(b"Authentication-Results:") == 2  # ours and crepes'
    assert b"sneaky" not in head and b"Authentication-Results: mx.crepes.fr; spf=pass" in head
    assert b"dkim=pass header.d=crepes.fr" in head  # ours, the DKIM still verifies after the removal


async def test_trusted_client_is_not_checked_but_forged_results_still_go(world: dict[str, object]) -> None:
    hamburger = world["hamburger"]
    assert isinstance(hamburger, Side)
    hamburger.trust.settings.trusted_networks = [ipaddress.ip_network("127.0.0.0/8")]
    # Unsigned mail from a crepes.fr address (DMARC p=reject) would be refused if checked.
    r = await receive(hamburger, "127.0.0.1", "relay.example", "alice@crepes.fr", ["bob@hamburger.edu"], MESSAGE)
    head = (await stored(hamburger, r)).split(b"\r\n\r\n", 1)[0]
    assert b"Authentication-Results" not in head  # no checks: no verdict of ours
    forged = b"authentication-results : mail.hamburger.edu; dmarc=pass\r\n"
    other = b"Authentication-Results: mx.crepes.fr; spf=pass\r\n"
    r = await receive(hamburger, "127.0.0.1", "relay.example", "alice@crepes.fr", ["bob@hamburger.edu"],
                      forged + other + MESSAGE)
    head = (await stored(hamburger, r)).split(b"\r\n\r\n", 1)[0]
    assert b"mail.hamburger.edu; dmarc=pass" not in head and other in head
    # Not trusted: checked as before (the answer for this address is remembered).
    r = await receive(hamburger, "192.0.2.1", "relay.example", "alice@crepes.fr", ["bob@hamburger.edu"], MESSAGE)
    assert isinstance(r, Refusal) and r.code == 550


async def test_ed25519_second_signature(world: dict[str, object]) -> None:
    crepes, hamburger = world["crepes"], world["hamburger"]
    assert isinstance(crepes, Side) and isinstance(hamburger, Side)
    crepes.trust.settings.dkim_ed25519 = True
    signed = await signed_by_crepes(world)
    assert signed.count(b"DKIM-Signature:") == 2 and b"a=ed25519-sha256" in signed
    r = await receive(hamburger, "127.0.0.1", "mail.crepes.fr", "alice@crepes.fr", ["bob@hamburger.edu"], signed)
    ar = ar_of(await stored(hamburger, r))
    assert ar.count("dkim=pass") == 2 and "header.a=ed25519-sha256" in ar and "header.a=rsa-sha256" in ar


# ------------------------------------------------------------------ sending side
async def test_signature_verifies_with_dkimpy(world: dict[str, object]) -> None:
    crepes = world["crepes"]
    assert isinstance(crepes, Side)
    signed = await signed_by_crepes(world)
    keys = {k.record_name: k.public_record().encode() for k in await crepes.trust.keys.keys("crepes.fr")}
    assert dkim.verify(signed, dnsfunc=lambda name, timeout=5: keys.get(name.decode().rstrip(".")))
    sig = signed.split(b"\r\n\r\n")[0]
    assert b"c=relaxed/relaxed" in sig and b"h=from:from:" in sig and b"subject:subject" in sig
    # Keys are made once and kept in the store.
    stored_keys = await crepes.store.dkim_keys("crepes.fr")
    assert len(stored_keys) == 1 and stored_keys[0][1] == RSA


async def test_header_from_and_envelope_must_be_owned(world: dict[str, object]) -> None:
    crepes = world["crepes"]
    assert isinstance(crepes, Side)
    r = await submit(crepes, "alice@crepes.fr", "eve@crepes.fr", ["bob@hamburger.edu"], MESSAGE)
    assert isinstance(r, Refusal) and (r.code, r.enhanced) == (553, "5.7.1")
    spoof = MESSAGE.replace(b"From: Alice <alice@crepes.fr>", b"From: Boss <ceo@crepes.fr>")
    r = await submit(crepes, "alice@crepes.fr", "alice@crepes.fr", ["bob@hamburger.edu"], spoof)
    assert isinstance(r, Refusal) and (r.code, r.enhanced) == (553, "5.7.1") and "ceo@crepes.fr" in r.text
    two = MESSAGE.replace(b"From: Alice <alice@crepes.fr>", b"From: alice@crepes.fr, ceo@crepes.fr")
    r = await submit(crepes, "alice@crepes.fr", "alice@crepes.fr", ["bob@hamburger.edu"], two, listener="http")
    assert isinstance(r, Refusal) and r.code == 553
    broken = MESSAGE.replace(b"From: Alice <alice@crepes.fr>", b"From: alice@crepes.fr <ceo@crepes.fr")
    r = await submit(crepes, "alice@crepes.fr", "alice@crepes.fr", ["bob@hamburger.edu"], broken)
    assert isinstance(r, Refusal) and r.code == 553
    alias = MESSAGE.replace(b"From: Alice <alice@crepes.fr>", b"From: Sales <sales@crepes.fr>")
    r = await submit(crepes, "alice@crepes.fr", "sales@crepes.fr", ["bob@hamburger.edu"], alias)
    assert isinstance(r, Accepted)


async def test_may_send_as(world: dict[str, object]) -> None:
    crepes = world["crepes"]
    assert isinstance(crepes, Side)
    ctx = crepes.ctx
    crepes.trust.settings.send_as = {"eve@crepes.fr": ["*@newsletter.crepes.fr"], "*": ["noreply@crepes.fr"]}
    assert may_send_as(ctx, "alice@crepes.fr", "alice@crepes.fr")
    assert may_send_as(ctx, "alice@crepes.fr", "Alice+Lists@Crepes.fr")
    assert may_send_as(ctx, "alice@crepes.fr", "")  # the null sender (bounces, receipts)
    assert may_send_as(ctx, "alice@crepes.fr", "sales@crepes.fr")  # an alias that delivers to her
    assert not may_send_as(ctx, "alice@crepes.fr", "eve@crepes.fr")
    assert not may_send_as(ctx, "alice@crepes.fr", "alice@hamburger.edu")
    assert may_send_as(ctx, "eve@crepes.fr", "promo@newsletter.crepes.fr")
    assert not may_send_as(ctx, "alice@crepes.fr", "promo@newsletter.crepes.fr")
    assert may_send_as(ctx, "alice@crepes.fr", "noreply@crepes.fr")
    # A catch-all makes every address nobody else has hers, and no one else's.
    await crepes.store.add_alias("@crepes.fr", ["alice@crepes.fr"])
    assert may_send_as(ctx, "alice@crepes.fr", "anything@crepes.fr")
    assert not may_send_as(ctx, "alice@crepes.fr", "eve@crepes.fr")


async def test_sending_limits(world: dict[str, object]) -> None:
    crepes = world["crepes"]
    assert isinstance(crepes, Side)
    crepes.trust.limits.default = RateLimits(messages_per_hour=2, messages_per_day=0, recipients_per_hour=0,
                                             recipients_per_day=3)
    assert isinstance(await submit(crepes, "alice@crepes.fr", "alice@crepes.fr", ["bob@hamburger.edu"], MESSAGE),
                      Accepted)
    r = await submit(crepes, "alice@crepes.fr", "alice@crepes.fr", ["a@x.test", "b@x.test", "c@x.test"], MESSAGE)
    assert isinstance(r, Refusal) and (r.code, r.enhanced) == (451, "4.7.1") and "recipients per day" in r.text
    assert isinstance(await submit(crepes, "alice@crepes.fr", "alice@crepes.fr", ["a@x.test"], MESSAGE), Accepted)
    r = await submit(crepes, "alice@crepes.fr", "alice@crepes.fr", ["a@x.test"], MESSAGE)
    assert isinstance(r, Refusal) and r.code == 451 and "messages per hour" in r.text
    # Another user has limits of their own.
    m = MESSAGE.replace(b"alice@", b"eve@")
    assert isinstance(await submit(crepes, "eve@crepes.fr", "eve@crepes.fr", ["a@x.test"], m), Accepted)


async def test_received_privacy(world: dict[str, object]) -> None:
    crepes = world["crepes"]
    assert isinstance(crepes, Side)
    crepes.trust.settings.received_privacy = True
    raw = await signed_by_crepes(world)
    assert b"192.0.2.7" not in raw and b"laptop" not in raw and b"authenticated as" not in raw
    assert re.search(rb"\r\nReceived: by mail\.crepes\.fr \(mailhouse\) with ESMTPA id \w+; \w{3}, ", raw)


async def test_signature_for_our_own_messages(world: dict[str, object]) -> None:
    crepes = world["crepes"]
    assert isinstance(crepes, Side)
    dsn = (b"From: Mail Delivery System <MAILER-DAEMON@mail.crepes.fr>\r\nTo: alice@crepes.fr\r\n"
           b"Subject: Undelivered Mail Returned to Sender\r\n\r\nSorry.\r\n")
    sig = await crepes.trust.signature_for(dsn)
    assert sig.startswith(b"DKIM-Signature:") and b"d=crepes.fr;" in sig
    keys = {k.record_name: k.public_record().encode() for k in await crepes.trust.keys.keys("crepes.fr")}
    assert dkim.verify(sig + dsn, dnsfunc=lambda name, timeout=5: keys.get(name.decode().rstrip(".")))
    assert await crepes.trust.signature_for(dsn.replace(b"crepes.fr>", b"elsewhere.test>")) == b""


async def test_arc_chain_recorded(world: dict[str, object]) -> None:
    pytest.importorskip("authres")  # dkimpy needs it to seal (not to verify)
    from cryptography.hazmat.primitives import serialization

    from mailhouse.trust.keys import generate_pem, load_key

    hamburger, zone = world["hamburger"], world["zone"]
    assert isinstance(hamburger, Side) and isinstance(zone, Zone)
    key = load_key("list.test", "arc1", RSA, generate_pem(RSA), 0)
    zone.add("arc1._domainkey.list.test", "TXT", key.public_record(), ttl=0)
    pkcs1 = key.private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                      serialization.NoEncryption())
    msg = MESSAGE.replace(b"alice@crepes.fr", b"carol@nodmarc.test")
    msg = b"Authentication-Results: mx.list.test; spf=pass smtp.mailfrom=carol@nodmarc.test\r\n" + msg
    sealed = b"".join(dkim.arc_sign(msg, b"arc1", b"list.test", pkcs1, b"mx.list.test")) + msg
    r = await receive(hamburger, "127.0.0.1", "mx.list.test", "carol@nodmarc.test", ["bob@hamburger.edu"], sealed)
    assert "arc=pass (i=1)" in ar_of(await stored(hamburger, r))
    r = await receive(hamburger, "127.0.0.1", "mx.list.test", "carol@nodmarc.test", ["bob@hamburger.edu"],
                      sealed.replace(b"ketchup?", b"mustard?"))
    assert "arc=fail" in ar_of(await stored(hamburger, r))
