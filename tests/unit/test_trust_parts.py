"""The trust layer's parts on their own: lockout, limits, greylisting, settings,
canonicalization against dkimpy's, DMARC policy arithmetic, A-R parsing, records."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from dkim.canonicalization import Relaxed
from hypothesis import given, settings
from hypothesis import strategies as st

from mailhouse.auth import service
from mailhouse.auth.passwords import hash_password
from mailhouse.auth.service import Authenticator
from mailhouse.cli.records import autoconfig_xml, domain_records
from mailhouse.config import Config, ConfigError, default_config
from mailhouse.store.base import StoreError
from mailhouse.store.models import GreyTriplet
from mailhouse.store.sqlite import SQLiteStore
from mailhouse.trust import dmarc
from mailhouse.trust.authresults import authserv_id_of, pvalue
from mailhouse.trust.dkim import parse_fields, relaxed_body, relaxed_header
from mailhouse.trust.limits import (
    ConnectionRate,
    Greylist,
    GreylistKeeper,
    Lockout,
    SendLimits,
)
from mailhouse.trust.settings import LockoutPolicy, RateLimits, parse_trust
from mailhouse.trust.spf import SPFResult


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


# ------------------------------------------------------------------ lockout
def test_lockout_after_ten_failures_in_ten_minutes() -> None:
    clock = Clock()
    lo = Lockout(LockoutPolicy(), clock=clock)
    for _ in range(9):
        assert not lo.failed("192.0.2.1", "bob@x.test").locked
        clock.t += 30
    assert not lo.check("192.0.2.1").locked
    assert lo.failed("192.0.2.1", "bob@x.test").locked  # the tenth
    state = lo.check("192.0.2.1", "bob@x.test")
    assert state.locked and 899 <= state.retry_after <= 900
    assert not lo.check("192.0.2.2", "bob@x.test").locked  # other addresses unaffected
    clock.t += 901
    assert not lo.check("192.0.2.1").locked
    # A repeat locks out twice as long.
    for _ in range(10):
        lo.failed("192.0.2.1")
    assert 1799 <= lo.check("192.0.2.1").retry_after <= 1800


def test_failures_spread_over_more_than_the_window_do_not_lock() -> None:
    clock = Clock()
    lo = Lockout(LockoutPolicy(), clock=clock)
    for _ in range(30):
        assert not lo.failed("192.0.2.1").locked
        clock.t += 67  # any 10 failures span more than 10 minutes
    assert not lo.check("192.0.2.1").locked


def test_account_under_spread_attack_keeps_known_addresses() -> None:
    clock = Clock()
    lo = Lockout(LockoutPolicy(failures=10, account_failures=20), clock=clock)
    lo.succeeded("198.51.100.1", "bob@x.test")
    for i in range(20):
        lo.failed(f"203.0.113.{i}", "bob@x.test")
    assert lo.check("203.0.113.200", "bob@x.test").locked  # a new address: held off
    assert not lo.check("198.51.100.1", "bob@x.test").locked  # the owner's usual address
    assert not lo.check("203.0.113.200", "alice@x.test").locked  # other accounts


def test_ipv6_counts_per_64() -> None:
    lo = Lockout(LockoutPolicy(failures=3))
    for i in range(3):
        lo.failed(f"2001:db8:1:2::{i + 1}")
    assert lo.check("2001:db8:1:2::99").locked
    assert not lo.check("2001:db8:1:3::1").locked


async def test_authenticator_does_not_check_passwords_while_locked(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    store = SQLiteStore(tmp_path)
    await store.open()
    try:
        await store.add_domain("x.test")
        await store.add_account("bob@x.test", hash_password("right"))
        auth = Authenticator(store, failure_delay=0, lockout=LockoutPolicy(failures=3))
        for _ in range(3):
            r = await auth.attempt("bob@x.test", "wrong", ip="192.0.2.1", protocol="imap")
            assert r.account is None and not r.locked
        checked: list[str] = []
        real = service.verify_async

        async def spy(h: str | None, pw: str) -> bool:
            checked.append(pw)
            return await real(h, pw)

        monkeypatch.setattr(service, "verify_async", spy)
        r = await auth.attempt("bob@x.test", "right", ip="192.0.2.1", protocol="pop3")
        assert r.locked and r.account is None and checked == []  # not even checked
        assert auth.locked("192.0.2.1") > 0
        assert await auth.login("bob@x.test", "right", ip="192.0.2.1") is None
        ok = await auth.attempt("bob@x.test", "right", ip="192.0.2.2", protocol="smtp")
        assert ok.account is not None and checked == ["right"]
        assert (await auth.login("bob@x.test", "right")) is not None  # old callers: no address, no lockout
        # Recent successes are remembered: argon2 runs once, but never for a locked-out address.
        assert checked == ["right"]
        assert (await auth.attempt("bob@x.test", "right", ip="192.0.2.1")).locked
        await store.set_password("bob@x.test", hash_password("new"))
        await asyncio.sleep(0.15)  # the store's directory snapshot is refreshed every 0.1 s
        assert (await auth.login("bob@x.test", "right", ip="192.0.2.3")) is None  # the old password is gone
    finally:
        await store.close()


# ------------------------------------------------------------------ limits
def test_send_limits_windows() -> None:
    clock = Clock()
    lim = SendLimits(RateLimits(messages_per_hour=3, messages_per_day=5, recipients_per_hour=10,
                                recipients_per_day=0), {"big@x.test": RateLimits(0, 0, 0, 0)}, clock=clock)
    assert all(lim.check("u@x.test", 1) is None for _ in range(3))
    assert "per hour" in (lim.check("u@x.test", 1) or "")
    clock.t += 3601
    assert lim.check("u@x.test", 1) is None and lim.check("u@x.test", 1) is None
    assert "messages per day" in (lim.check("u@x.test", 1) or "")
    assert "recipients per hour" in (lim.check("v@x.test", 11) or "")
    assert all(lim.check("big@x.test", 100) is None for _ in range(50))
    clock.t += 86400
    assert lim.check("u@x.test", 1) is None


def test_connection_rate() -> None:
    clock = Clock()
    rate = ConnectionRate(60, clock=clock)
    assert all(rate.allow("192.0.2.1") for _ in range(60))
    assert not rate.allow("192.0.2.1")
    assert rate.allow("192.0.2.2")
    clock.t += 2
    assert rate.allow("192.0.2.1") and rate.allow("192.0.2.1") and not rate.allow("192.0.2.1")
    assert all(ConnectionRate(0).allow("192.0.2.1") for _ in range(1000))


def test_greylist() -> None:
    clock = Clock()
    g = Greylist(delay=300, expire=4 * 3600, keep=36 * 86400, clock=clock)
    assert g.check("192.0.2.1", "a@x.test", "b@y.test") == 300
    clock.t += 100
    assert g.check("192.0.2.9", "a@x.test", "b@y.test") == 200  # same /24
    clock.t += 201
    assert g.check("192.0.2.1", "a@x.test", "b@y.test") == 0
    clock.t += 86400
    assert g.check("192.0.2.1", "A@x.test", "b@y.test") == 0  # remembered
    assert g.check("192.0.2.1", "other@x.test", "b@y.test") > 0




async def test_greylist_keeper_saves_and_reloads_the_triplets(tmp_path: Path) -> None:
    """What a restart finds: the triplets seen and passed before it, in the store;
    expired ones are neither loaded nor kept."""
    clock = Clock()
    store = SQLiteStore(tmp_path)
    await store.open()
    try:
        g = Greylist(delay=300, expire=4 * 3600, keep=36 * 86400, clock=clock)
        keeper = GreylistKeeper(store, g)
        await keeper.start()
        assert g.check("192.0.2.1", "known@x.test", "b@y.test") == 300
        clock.t += 301
        assert g.check("192.0.2.1", "known@x.test", "b@y.test") == 0  # passed
        assert g.check("192.0.2.1", "waiting@x.test", "b@y.test") == 300
        assert g.check("192.0.2.1", "old@x.test", "b@y.test") == 300
        await keeper.stop()
        assert g.changes() == []  # all saved

        clock.t += 4 * 3600 - 100  # "old" and "waiting" were first seen 4 h ago (minus 100 s)
        again = Greylist(delay=300, expire=4 * 3600, keep=36 * 86400, clock=clock)
        keeper = GreylistKeeper(store, again)
        await keeper.start()
        assert again.check("192.0.2.77", "known@x.test", "b@y.test") == 0
        assert again.check("192.0.2.1", "waiting@x.test", "b@y.test") == 0  # its delay ran before
        clock.t += 200  # past "old"'s expiry: the first save drops what expired
        await keeper.stop()
        rows = await store.greylist_triplets(0.0, 1e12, 1e12)  # everything still in the table
        assert sorted(r.sender for r in rows) == ["known@x.test", "waiting@x.test"]
        assert [r.passed for r in sorted(rows, key=lambda r: r.sender)] == [True, True]
    finally:
        await store.close()


async def test_greylist_keeper_keeps_changes_it_could_not_save() -> None:
    class Failing:
        async def save_greylist(self, triplets: list[GreyTriplet], *, forget: object = None) -> None:
            raise StoreError("disk full")

    g = Greylist(delay=300, expire=4 * 3600, keep=36 * 86400, clock=Clock())
    keeper = GreylistKeeper(Failing(), g)  # type: ignore[arg-type]
    g.check("192.0.2.1", "a@x.test", "b@y.test")
    with pytest.raises(StoreError):
        await keeper.save()
    assert [t.sender for t in g.changes()] == ["a@x.test"]  # still there for the next round


# ------------------------------------------------------------------ settings
def test_parse_trust() -> None:
    s = parse_trust({
        "dkim_ed25519": True, "send_as": {"Bob@X.test": ["*@X.test"]}, "received_privacy": True,
        "rate_limits": {"messages_per_hour": 5, "users": {"news@x.test": {"messages_per_day": 10000}}},
        "lockout": {"failures": 5, "window": "5m", "cooldown": "1h"}, "trusted_networks": ["127.0.0.0/8"],
        "greylisting": True, "greylist_delay": "1m", "spf_fail": "reject",
    })
    assert s.dkim_ed25519 and s.send_as == {"bob@x.test": ["*@x.test"]} and s.received_privacy
    assert s.rate_limits.messages_per_hour == 5 and s.rate_limits.messages_per_day == 1000
    assert s.user_limits["news@x.test"].messages_per_day == 10000
    assert s.user_limits["news@x.test"].messages_per_hour == 5  # inherits the table's values
    assert (s.lockout.failures, s.lockout.window, s.lockout.cooldown) == (5, 300.0, 3600.0)
    assert s.greylisting and s.greylist_delay == 60.0 and s.spf_fail == "reject"
    assert parse_trust({}).dkim_sign and not parse_trust({}).greylisting
    for bad in ({"nope": 1}, {"dkim_ed25519": "yes"}, {"send_as": {"a@b": "x"}}, {"lockout": {"failures": -1}},
                {"trusted_networks": ["not a net"]}, {"spf_fail": "explode"}, {"rate_limits": {"bogus": 1}},
                {"dkim_rsa_bits": 512}):
        with pytest.raises(ConfigError):
            parse_trust(bad)


# ------------------------------------------------------------------ canonicalization
_pieces = st.lists(st.sampled_from(["a", "b", " ", "\t", ":", "\r\n"]), max_size=40).map("".join)


@settings(max_examples=300, deadline=None)
@given(_pieces)
def test_relaxed_body_matches_dkimpy(body: str) -> None:
    b = body.encode()
    assert relaxed_body(b) == Relaxed.canonicalize_body(b)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["a", "b", " ", "\t", "\r\n ", "\r\n\t"]), max_size=30).map("".join))
def test_relaxed_header_matches_dkimpy(value: str) -> None:
    v = value.encode()
    [(name, canon)] = Relaxed.canonicalize_headers([(b"Subject ", v)])
    assert relaxed_header("subject", v) == name + b":" + canon


def test_parse_fields_keeps_folded_lines() -> None:
    h = b"From: a@b\r\nSubject: one\r\n two\r\n\tthree\r\nTo: c@d\r\n"
    f = parse_fields(h, base=10)
    assert [x.name for x in f] == ["from", "subject", "to"]
    assert f[1].raw == b"Subject: one\r\n two\r\n\tthree\r\n" and f[1].start == 21 and f[2].start == f[1].end


# ------------------------------------------------------------------ DMARC
def test_dmarc_record_parsing() -> None:
    r = dmarc.parse_record("v=DMARC1; p=Reject; sp=quarantine; pct=50; adkim=s", "x.test")
    assert r is not None and (r.p, r.sp, r.pct, r.adkim, r.aspf) == ("reject", "quarantine", 50, "s", "r")
    assert dmarc.parse_record("v=DMARC1; p=bogus", "x.test") is None
    r = dmarc.parse_record("v=DMARC1; p=bogus; rua=mailto:d@x.test", "x.test")
    assert r is not None and r.p == "none"  # RFC 7489 §6.6.3
    assert dmarc.parse_record("v=spf1 -all", "x.test") is None


def test_dmarc_alignment_and_policy() -> None:
    rec = dmarc.parse_record("v=DMARC1; p=reject; sp=quarantine; pct=100", "crepes.fr")
    spf_sub = SPFResult("pass", "mailfrom", "bounces.crepes.fr", "b@bounces.crepes.fr")
    assert dmarc.evaluate("crepes.fr", rec, spf_sub, []).result == "pass"  # relaxed: same org domain
    strict = dmarc.parse_record("v=DMARC1; p=reject; aspf=s", "crepes.fr")
    res = dmarc.evaluate("crepes.fr", strict, spf_sub, [])
    assert res.result == "fail" and res.disposition == "reject"
    # A subdomain under the organisational record gets sp.
    sub = dmarc.evaluate("news.crepes.fr", rec, None, [])
    assert sub.policy == "quarantine" and sub.disposition == "quarantine"
    # pct: messages not sampled get the next weaker policy.
    half = dmarc.parse_record("v=DMARC1; p=reject; pct=50", "crepes.fr")
    assert dmarc.evaluate("crepes.fr", half, None, [], sample=lambda: 0.2).disposition == "reject"
    assert dmarc.evaluate("crepes.fr", half, None, [], sample=lambda: 0.7).disposition == "quarantine"
    assert dmarc.organizational_domain("a.b.crepes.fr") == "crepes.fr"
    assert dmarc.organizational_domain("mail.example.co.uk") == "example.co.uk"


# ------------------------------------------------------------------ Authentication-Results
def test_authserv_id_reading() -> None:
    assert authserv_id_of(b" mail.x.test; spf=pass") == "mail.x.test"
    assert authserv_id_of(b" (c (nested)) MAIL.X.test 1; none") == "mail.x.test"
    assert authserv_id_of(b' "Mail.X.Test"; dkim=pass') == "mail.x.test"
    assert authserv_id_of(b"\r\n\tmail.x.test;\r\n\tspf=pass") == "mail.x.test"
    assert pvalue("alice@crepes.fr") == "alice@crepes.fr"
    assert pvalue("a b") == '"a b"'


# ------------------------------------------------------------------ records
async def test_domain_records(tmp_path: Path) -> None:
    config: Config = default_config()
    config.hostname = "mail.crepes.fr"
    store = SQLiteStore(tmp_path)
    await store.open()
    try:
        await store.add_domain("crepes.fr")
        recs = await domain_records(config, store, "crepes.fr")
        again = await domain_records(config, store, "crepes.fr")
    finally:
        await store.close()
    assert recs == again  # the key is made once
    by: dict[str, Any] = {}
    for r in recs:
        by.setdefault(r.type, []).append(r)
    assert by["MX"][0].value == "10 mail.crepes.fr."
    assert any(r.value == "v=spf1 mx -all" and r.name == "crepes.fr" for r in by["TXT"])
    dk = [r for r in by["TXT"] if "._domainkey." in r.name]
    assert len(dk) == 1 and dk[0].value.startswith("v=DKIM1; k=rsa; p=MII")
    assert any(r.name == "_dmarc.crepes.fr" and "p=quarantine" in r.value for r in by["TXT"])
    assert any(r.name == "_submission._tcp.crepes.fr" for r in by["SRV"])
    assert json.loads(json.dumps([r.as_dict() for r in recs]))[0].keys() == {"name", "type", "value"}
    xml = autoconfig_xml(config, "crepes.fr")
    assert "<hostname>mail.crepes.fr</hostname>" in xml and "<port>2587</port>" in xml


async def test_keys_made_once_across_concurrent_callers(tmp_path: Path) -> None:
    from mailhouse.trust.keys import KeyRing

    store = SQLiteStore(tmp_path)
    await store.open()
    try:
        await store.add_domain("crepes.fr")
        rings = [KeyRing(store), KeyRing(store)]  # as two processes would
        got = await asyncio.gather(*(r.keys("crepes.fr", ed25519=True) for r in rings for _ in range(3)))
        selectors = {tuple(k.selector for k in ks) for ks in got}
        assert len(selectors) == 1 and len(next(iter(selectors))) == 2
        assert len(await store.dkim_keys("crepes.fr")) == 2
    finally:
        await store.close()
