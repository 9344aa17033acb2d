"""Outbound TLS policy: MTA-STS parsing, fetching and caching; DANE matching; the
per-hop decision; the resolver's AD handling against the test DNS server."""

from __future__ import annotations

import asyncio
import datetime
import json
import ssl
import tomllib
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from mailhouse.config import ConfigError, config_from_toml
from mailhouse.dns.resolver import DNSTemporaryError, Resolver, TLSAAnswer, TLSARecord
from mailhouse.dns.testserver import DNSServer, Zone
from mailhouse.queue.routing import Hop, Route
from mailhouse.trust import dane
from mailhouse.trust.mtasts import (
    MTASTS,
    FetchError,
    Policy,
    PolicyError,
    mx_matches,
    parse_policy,
    parse_txt,
)
from mailhouse.trust.tlspolicy import OutboundTLS
from tests.tlskit import NOW, PolicyServer, Response, TestCA, server_context, tlsa, tlsa_data

POLICY = "version: STSv1\r\nmode: enforce\r\nmx: mail.example.org\r\nmx: *.example.net\r\nmax_age: 86400\r\n"


# ====================================================================== MTA-STS parsing
@pytest.mark.parametrize(
    ("records", "expected"),
    [
        (["v=STSv1; id=20240101T000000"], "20240101T000000"),
        (["v=STSv1;id=abc"], "abc"),
        (["v=STSv1; id=abc;"], "abc"),
        (["v=STSv1; id=abc; ext=1"], "abc"),
        (["v=spf1 -all", "v=STSv1; id=abc"], "abc"),  # other TXT records are not ours
        (["v=STSv1; id=abc", "v=STSv1; id=def"], None),  # two: no policy (§3.1)
        (["v=STSv1; id=has-dash"], None),
        (["v=STSv1; id=" + "a" * 33], None),
        (["v=STSv1"], None),
        (["v=STSv2; id=abc"], None),
        ([" v=STSv1; id=abc"], None),
        ([], None),
    ],
)
def test_parse_txt(records: list[str], expected: str | None) -> None:
    assert parse_txt(records) == expected


def test_parse_policy() -> None:
    p = parse_policy(POLICY)
    assert p == Policy("enforce", ("mail.example.org", "*.example.net"), 86400)
    assert parse_policy(POLICY.replace("\r\n", "\n")) == p  # LF alone ends lines too


def test_parse_policy_details() -> None:
    assert parse_policy("version: STSv1\nmode: none\nmax_age: 0\n") == Policy("none", (), 0)
    assert parse_policy("version: STSv1\nmode: testing\nmx: A.Example.ORG.\nmax_age: 1").mx == ("a.example.org",)
    big = parse_policy("version: STSv1\nmode: testing\nmx: a.example\nmax_age: 9999999999\n")
    assert big.max_age == 31_557_600  # capped at a year
    extra = parse_policy("version: STSv1\nfuture_key: whatever\nmode: enforce\nmode: none\nmx: a.example\n"
                         "max_age: 60\n")
    assert extra.mode == "enforce"  # the first of a repeated key; unknown keys ignored


@pytest.mark.parametrize(
    "text",
    [
        "version: STSv2\nmode: enforce\nmx: a.example\nmax_age: 1\n",
        "mode: enforce\nmx: a.example\nmax_age: 1\n",
        "version: STSv1\nmode: strict\nmx: a.example\nmax_age: 1\n",
        "version: STSv1\nmode: enforce\nmax_age: 1\n",  # enforce with no mx
        "version: STSv1\nmode: enforce\nmx: a.example\n",  # no max_age
        "version: STSv1\nmode: enforce\nmx: a.example\nmax_age: -1\n",
        "version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 12345678901\n",
        "version: STSv1\nmode: enforce\nmx: a.*.example\nmax_age: 1\n",
        "<html>not a policy</html>",
    ],
)
def test_parse_policy_rejects(text: str) -> None:
    with pytest.raises(PolicyError):
        parse_policy(text)


@pytest.mark.parametrize(
    ("pattern", "host", "ok"),
    [
        ("mail.example.org", "mail.example.org", True),
        ("mail.example.org", "MAIL.Example.Org.", True),
        ("mail.example.org.", "mail.example.org", True),
        ("mail.example.org", "mail2.example.org", False),
        ("*.example.net", "mx1.example.net", True),
        ("*.example.net", "example.net", False),  # the wildcard is one label, not zero
        ("*.example.net", "a.b.example.net", False),  # nor two
        ("*.example.net", ".example.net", False),
        ("*.example.net", "mx1.example.net.evil", False),
        ("", "example.net", False),
    ],
)
def test_mx_matches(pattern: str, host: str, ok: bool) -> None:
    assert mx_matches(pattern, host) is ok


# ====================================================================== MTA-STS caching
class FakeDNS:
    def __init__(self) -> None:
        self.txt_records: dict[str, list[str]] = {}
        self.fail_txt = False

    async def txt(self, name: str) -> list[str]:
        if self.fail_txt:
            raise DNSTemporaryError(f"{name} TXT: SERVFAIL")
        return self.txt_records.get(name, [])

    async def addresses(self, host: str) -> list[str]:
        return ["127.0.0.1"]


class FakeFetch:
    def __init__(self, text: str = POLICY) -> None:
        self.text = text
        self.calls = 0
        self.fail: str | None = None

    async def __call__(self, domain: str) -> str:
        self.calls += 1
        if self.fail:
            raise FetchError(self.fail)
        return self.text


async def test_policy_is_fetched_once_then_cached(tmp_path: Path) -> None:
    dns, fetch = FakeDNS(), FakeFetch()
    dns.txt_records["_mta-sts.example.org"] = ["v=STSv1; id=one"]
    sts = MTASTS(dns, directory=tmp_path, fetcher=fetch)
    first = await sts.policy("Example.ORG.")
    assert first.policy is not None and first.policy.mode == "enforce" and first.how == "fetched"
    again = await sts.policy("example.org")
    assert again.how == "cached" and fetch.calls == 1
    # Concurrent lookups share one fetch.
    dns.txt_records["_mta-sts.example.org"] = ["v=STSv1; id=two"]
    results = await asyncio.gather(*(sts.policy("example.org") for _ in range(5)))
    assert fetch.calls == 2 and {r.id for r in results} == {"two"}


async def test_new_id_refetches_and_failure_keeps_the_cached_policy(tmp_path: Path) -> None:
    dns, fetch = FakeDNS(), FakeFetch()
    dns.txt_records["_mta-sts.example.org"] = ["v=STSv1; id=one"]
    sts = MTASTS(dns, directory=tmp_path, fetcher=fetch)
    await sts.policy("example.org")
    dns.txt_records["_mta-sts.example.org"] = ["v=STSv1; id=two"]
    fetch.fail = "HTTP 500"
    kept = await sts.policy("example.org")
    assert kept.policy is not None and kept.policy.mode == "enforce" and kept.id == "one"
    assert kept.how.startswith("cached (fetch failed: HTTP 500")
    # A failed fetch is not retried at once for the same id...
    await sts.policy("example.org")
    assert fetch.calls == 2
    # ...but a new id is fetched at once.
    fetch.fail = None
    fetch.text = POLICY.replace("enforce", "testing")
    dns.txt_records["_mta-sts.example.org"] = ["v=STSv1; id=three"]
    fresh = await sts.policy("example.org")
    assert fresh.id == "three" and fresh.policy is not None and fresh.policy.mode == "testing"


async def test_dns_trouble_or_removed_txt_keeps_the_cached_policy(tmp_path: Path) -> None:
    dns, fetch = FakeDNS(), FakeFetch()
    dns.txt_records["_mta-sts.example.org"] = ["v=STSv1; id=one"]
    sts = MTASTS(dns, directory=tmp_path, fetcher=fetch)
    await sts.policy("example.org")
    dns.fail_txt = True
    got = await sts.policy("example.org")
    assert got.policy is not None and got.how.startswith("cached (TXT lookup failed")
    dns.fail_txt = False
    del dns.txt_records["_mta-sts.example.org"]
    got = await sts.policy("example.org")
    assert got.policy is not None and got.how == "cached (no TXT record)"


async def test_no_policy_without_txt_or_when_the_first_fetch_fails(tmp_path: Path) -> None:
    dns, fetch = FakeDNS(), FakeFetch()
    sts = MTASTS(dns, directory=tmp_path, fetcher=fetch)
    assert (await sts.policy("example.org")).policy is None and fetch.calls == 0
    dns.txt_records["_mta-sts.example.org"] = ["v=STSv1; id=one"]
    fetch.fail = "connection refused"
    none = await sts.policy("example.org")
    assert none.policy is None and "connection refused" in none.how  # deliver as without MTA-STS (§5)
    fetch.fail, fetch.text = None, "garbage"
    sts2 = MTASTS(dns, directory=tmp_path, fetcher=fetch)
    assert (await sts2.policy("example.org")).policy is None


async def test_policies_survive_a_restart_until_max_age(tmp_path: Path) -> None:
    dns, fetch = FakeDNS(), FakeFetch()
    dns.txt_records["_mta-sts.example.org"] = ["v=STSv1; id=one"]
    await MTASTS(dns, directory=tmp_path, fetcher=fetch).policy("example.org")
    saved = json.loads((tmp_path / "example.org.json").read_text())
    assert saved["id"] == "one" and saved["mode"] == "enforce" and saved["mx"] == ["mail.example.org", "*.example.net"]
    # Restarted, with the policy host unreachable and the TXT record gone: still enforced.
    del dns.txt_records["_mta-sts.example.org"]
    fetch.fail = "unreachable"
    restarted = MTASTS(dns, directory=tmp_path, fetcher=fetch)
    got = await restarted.policy("example.org")
    assert got.policy is not None and got.policy.mode == "enforce" and got.how == "cached (no TXT record)"
    # Expired: gone.
    saved["fetched"] -= 86400 + 1
    (tmp_path / "example.org.json").write_text(json.dumps(saved))
    assert (await MTASTS(dns, directory=tmp_path, fetcher=fetch).policy("example.org")).policy is None
    # A corrupt file is ignored, not fatal.
    (tmp_path / "example.org.json").write_text("{not json")
    assert (await MTASTS(dns, directory=tmp_path, fetcher=fetch).policy("example.org")).policy is None


# ====================================================================== MTA-STS fetching
@pytest.fixture(scope="module")
def ca() -> TestCA:
    return TestCA()


@pytest.fixture(scope="module")
def https(ca: TestCA) -> Any:
    responses = {
        "mta-sts.ok.test": Response(POLICY),
        "mta-sts.chunked.test": Response(POLICY, chunked=True),
        "mta-sts.charset.test": Response(POLICY, content_type="text/plain; charset=utf-8"),
        "mta-sts.redirect.test": Response("", 301, headers={"Location": "https://evil.test/"}),
        "mta-sts.html.test": Response(POLICY, content_type="text/html"),
        "mta-sts.missing.test": Response("no", 404),
        "mta-sts.big.test": Response("x" * (64 * 1024 + 1)),
        "mta-sts.bigchunks.test": Response("x" * (64 * 1024 + 1), chunked=True),
    }
    with PolicyServer(ca, responses) as server:
        yield server


@pytest.mark.parametrize("domain", ["ok.test", "chunked.test", "charset.test"])
async def test_fetch(ca: TestCA, https: PolicyServer, tmp_path: Path, domain: str) -> None:
    sts = MTASTS(FakeDNS(), ca_file=ca.write(tmp_path / "ca.pem"), port=https.port)
    assert parse_policy(await sts.fetch(domain)).mode == "enforce"
    assert (f"mta-sts.{domain}", "/.well-known/mta-sts.txt") in https.requests


@pytest.mark.parametrize(
    ("domain", "why"),
    [
        ("redirect.test", "redirects are not followed"),
        ("html.test", "not text/plain"),
        ("missing.test", "HTTP 404"),
        ("big.test", "larger than"),
        ("bigchunks.test", "larger than"),
    ],
)
async def test_fetch_refuses(ca: TestCA, https: PolicyServer, tmp_path: Path, domain: str, why: str) -> None:
    sts = MTASTS(FakeDNS(), ca_file=ca.write(tmp_path / "ca.pem"), port=https.port)
    with pytest.raises(FetchError, match=why):
        await sts.fetch(domain)


async def test_fetch_needs_a_trusted_certificate_for_the_policy_host(https: PolicyServer, tmp_path: Path) -> None:
    other = TestCA("another CA")
    sts = MTASTS(FakeDNS(), ca_file=other.write(tmp_path / "other.pem"), port=https.port)
    with pytest.raises(FetchError, match="CERTIFICATE_VERIFY_FAILED"):
        await sts.fetch("ok.test")


async def test_fetch_times_out(ca: TestCA, tmp_path: Path) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(5)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        sts = MTASTS(FakeDNS(), ca_file=ca.write(tmp_path / "ca.pem"), port=port, timeout=0.5)
        with pytest.raises(FetchError, match="no policy within"):
            await sts.fetch("ok.test")
    finally:
        server.close()


# ====================================================================== DANE matching
@pytest.fixture(scope="module")
def chain(ca: TestCA) -> dict[str, Any]:
    inter = ca.intermediate()
    leaf = inter.issue(["mx.example.org"])
    return {"root": ca, "inter": inter, "leaf": leaf,
            "der": [leaf.der, inter.cert.public_bytes(serialization.Encoding.DER),
                    ca.cert.public_bytes(serialization.Encoding.DER)]}


def rec(text: str) -> TLSARecord:
    u, s, m, data = text.split()
    return TLSARecord(int(u), int(s), int(m), bytes.fromhex(data))


def test_spki_is_taken_from_the_certificate_bytes(chain: dict[str, Any]) -> None:
    leaf = chain["leaf"]
    assert dane.spki_der(leaf.der) == leaf.cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def test_usable_records() -> None:
    recs = [TLSARecord(3, 1, 1, b"\0" * 32), TLSARecord(2, 0, 2, b"\0" * 64), TLSARecord(3, 0, 0, b"cert"),
            TLSARecord(1, 1, 1, b"\0" * 32), TLSARecord(0, 0, 1, b"\0" * 32),  # PKIX-*: unusable (§3.1.3)
            TLSARecord(3, 2, 1, b"\0" * 32), TLSARecord(3, 1, 3, b"\0" * 32),  # unknown selector / type
            TLSARecord(3, 1, 1, b"\0" * 31)]  # a SHA-256 that is not 32 bytes
    assert dane.usable(recs) == recs[:3]
    assert dane.tlsa_name("MX.example.org.", 25) == "_25._tcp.MX.example.org"


@pytest.mark.parametrize(("selector", "mtype"), [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)])
def test_dane_ee_every_selector_and_matching_type(chain: dict[str, Any], selector: int, mtype: int) -> None:
    r = rec(tlsa(chain["leaf"].cert, 3, selector, mtype))
    assert dane.verify_chain(chain["der"], [r], ["mx.example.org"]) is None
    assert dane.verify_chain(chain["der"][:1], [r], ["mx.example.org"]) is None  # the leaf alone is enough


def test_dane_ee_ignores_names_and_dates(ca: TestCA) -> None:
    old = ca.issue(["somewhere.else"], not_before=NOW - datetime.timedelta(days=30),
                   not_after=NOW - datetime.timedelta(days=1))
    r = rec(tlsa(old.cert, 3, 1, 1))
    assert dane.verify_chain([old.der], [r], ["mx.example.org"]) is None


def test_dane_mismatch(chain: dict[str, Any], ca: TestCA) -> None:
    other = ca.issue(["mx.example.org"])
    problem = dane.verify_chain(chain["der"], [rec(tlsa(other.cert, 3, 1, 1))], ["mx.example.org"])
    assert problem is not None and "matches no DANE-EE" in problem
    assert dane.verify_chain(chain["der"], [TLSARecord(1, 1, 1, tlsa_data(chain["leaf"].cert, 1, 1))],
                             ["mx.example.org"]) == "DANE: no usable TLSA record"
    assert dane.verify_chain([], [rec(tlsa(other.cert, 3, 1, 1))], ["x"]) == "DANE: the server sent no certificate"


@pytest.mark.parametrize("anchor", ["root", "inter"])
@pytest.mark.parametrize(("selector", "mtype"), [(0, 1), (1, 1), (0, 0), (1, 2)])
def test_dane_ta(chain: dict[str, Any], anchor: str, selector: int, mtype: int) -> None:
    r = rec(tlsa(chain[anchor].cert, 2, selector, mtype))
    assert dane.verify_chain(chain["der"], [r], ["mx.example.org", "example.org"]) is None
    # The recipient domain is a reference identifier too (RFC 7672 §3.2.2).
    assert dane.verify_chain(chain["der"], [r], ["other.example", "mx.example.org"]) is None


def test_dane_ta_checks_names_dates_and_the_path(chain: dict[str, Any], ca: TestCA) -> None:
    r = rec(tlsa(ca.cert, 2, 1, 1))
    wrong = dane.verify_chain(chain["der"], [r], ["mail.example.org", "example.org"])
    assert wrong is not None and "not mail.example.org or example.org" in wrong
    inter = chain["inter"]
    expired = inter.issue(["mx.example.org"], not_after=NOW - datetime.timedelta(days=1))
    der = [expired.der, *chain["der"][1:]]
    problem = dane.verify_chain(der, [r], ["mx.example.org"])
    assert problem is not None and "expired" in problem
    # The anchor must be among what the server sent, and the leaf must chain to it.
    assert "no certificate the server sent" in (dane.verify_chain(chain["der"][:2], [r], ["mx.example.org"]) or "")
    stranger = TestCA("stranger").issue(["mx.example.org"])
    unchained = dane.verify_chain([stranger.der, *chain["der"][1:]], [r], ["mx.example.org"])
    assert unchained is not None and "does not chain" in unchained
    # Wildcards: one whole leftmost label only.
    wild = inter.issue(["*.example.org"])
    ok = [wild.der, *chain["der"][1:]]
    assert dane.verify_chain(ok, [r], ["mx.example.org"]) is None
    assert dane.verify_chain(ok, [r], ["a.mx.example.org"]) is not None


@pytest.mark.parametrize(
    ("pattern", "host", "ok"),
    [("*.example.org", "mx.example.org", True), ("*.example.org", "example.org", False),
     ("m*.example.org", "mx.example.org", False), ("MX.example.org.", "mx.EXAMPLE.org", True)],
)
def test_certificate_name_matching(pattern: str, host: str, ok: bool) -> None:
    assert dane.name_matches(pattern, host) is ok


async def test_peer_chain_over_a_real_handshake(chain: dict[str, Any]) -> None:
    ctx = server_context(chain["leaf"], [chain["inter"].cert, chain["root"].cert])

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1)
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=ctx)
    port = server.sockets[0].getsockname()[1]
    client = ssl.create_default_context()
    client.check_hostname, client.verify_mode = False, ssl.CERT_NONE
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client, server_hostname="mx.example.org")
        got = dane.peer_chain(writer.get_extra_info("ssl_object"))
        assert got == chain["der"]
        writer.close()
    finally:
        server.close()


# ====================================================================== the resolver and AD
@pytest.fixture
async def dnsserver() -> AsyncIterator[DNSServer]:
    zone = Zone()
    zone.add("signed.test", "MX", "10 mx.signed.test.")
    zone.add("mx.signed.test", "A", "127.0.0.1")
    zone.add("_25._tcp.mx.signed.test", "TLSA", "3 1 1 " + "ab" * 32)
    zone.add("_25._tcp.mx.signed.test", "TLSA", "2 0 2 " + "cd" * 64)
    zone.add("alias.signed.test", "CNAME", "mx.signed.test.")
    zone.add("plain.test", "MX", "10 mx.signed.test.")
    for name in ("signed.test", "mx.signed.test", "_25._tcp.mx.signed.test", "nothing.signed.test"):
        zone.set_validated(name)
    async with DNSServer(zone) as server:
        yield server


async def test_tlsa_and_secure_answers(dnsserver: DNSServer) -> None:
    ns = [("127.0.0.1", dnsserver.port)]
    r = Resolver(ns, trust_ad=True)
    answer = await r.tlsa("_25._tcp.mx.signed.test")
    assert answer.secure
    assert sorted((x.usage, x.selector, x.mtype, x.data) for x in answer.records) == [
        (2, 0, 2, bytes.fromhex("cd" * 64)), (3, 1, 1, bytes.fromhex("ab" * 32))]
    assert (await r.mx_secure("signed.test"))[1] is True
    assert (await r.mx_secure("plain.test"))[1] is False
    assert await r.addresses_secure("mx.signed.test") == (["127.0.0.1"], True)
    assert (await r.addresses_secure("alias.signed.test"))[1] is False  # the CNAME itself is not validated
    assert await r.tlsa("_25._tcp.nothing.signed.test") == TLSAAnswer([], False)  # NXDOMAIN
    # Not trusting AD: the same answers count as insecure, and AD is not even asked for.
    untrusting = Resolver(ns)
    assert (await untrusting.tlsa("_25._tcp.mx.signed.test")).secure is False
    assert (await untrusting.mx_secure("signed.test"))[1] is False
    with pytest.raises(ValueError):
        Resolver(None, trust_ad=True)


async def test_test_server_sets_ad_only_when_asked(dnsserver: DNSServer) -> None:
    import dns.flags

    r = dnsserver.resolver()
    plain = await r.resolve("mx.signed.test", "A")
    assert not plain.response.flags & dns.flags.AD
    r.flags = dns.flags.RD | dns.flags.AD
    assert (await r.resolve("mx.signed.test", "A")).response.flags & dns.flags.AD
    r.cache = None
    r.flags = None
    r.use_edns(0, dns.flags.DO, 1232)
    assert (await r.resolve("mx.signed.test", "A")).response.flags & dns.flags.AD


# ====================================================================== the per-hop decision
class PolicyResolver(Resolver):
    """A Resolver whose TLSA answers the test chooses."""

    def __init__(self, answers: Mapping[str, TLSAAnswer | Exception], trust_ad: bool = True) -> None:
        super().__init__([("127.0.0.1", 9)], trust_ad=trust_ad)
        self.answers = answers

    async def tlsa(self, name: str) -> TLSAAnswer:
        got = self.answers.get(name, TLSAAnswer([], True))
        if isinstance(got, Exception):
            raise got
        return got


class StaticSTS(MTASTS):
    def __init__(self, policy: Policy | None) -> None:
        super().__init__(FakeDNS())
        self.fixed = policy

    async def policy(self, domain: str) -> Any:
        from mailhouse.trust.mtasts import Lookup

        return Lookup(self.fixed, "id1", "fetched") if self.fixed else Lookup(None)


EE = TLSARecord(3, 1, 1, b"\1" * 32)
ENFORCE = Policy("enforce", ("mx.example.org",), 86400)


def route(how: str = "mx", secure: bool = True, host: str = "mx.example.org", hop_secure: bool = True) -> Route:
    return Route("example.org", how, [Hop(host, 25, ["127.0.0.1"], 10, hop_secure)], secure=secure)


async def decide(route_: Route, *, answers: Mapping[str, TLSAAnswer | Exception] | None = None,
                 policy: Policy | None = None, overrides: dict[str, str] | None = None,
                 trust_ad: bool = True) -> Any:
    engine = OutboundTLS(overrides, resolver=PolicyResolver(answers or {}, trust_ad),
                         mta_sts=StaticSTS(policy))
    return await (await engine.for_route(route_)).for_hop(route_.hops[0])


async def test_decisions() -> None:
    name = "_25._tcp.mx.example.org"
    dane_answer = {name: TLSAAnswer([EE], True)}
    # Nothing published: opportunistic.
    r = await decide(route())
    assert (r.source, r.level, r.mandatory) == ("opportunistic", "opportunistic", False)
    # DANE along a validated path; it wins over MTA-STS, even one that would not list the host.
    r = await decide(route(), answers=dane_answer, policy=Policy("enforce", ("other.example",), 60))
    assert (r.source, r.level, r.tlsa, r.refused) == ("dane", "dane", (EE,), None)
    assert r.names == ("mx.example.org", "example.org")
    # The operator's [tls_policy] wins over both.
    r = await decide(route(), answers=dane_answer, policy=ENFORCE, overrides={"example.org": "require"})
    assert (r.source, r.level) == ("config", "require")
    # Any insecure step turns DANE off: the MX answer, the host's addresses, the TLSA answer, trust in AD.
    for rt, ans, trust in [
        (route(secure=False), dane_answer, True),
        (route(hop_secure=False), dane_answer, True),
        (route(), {name: TLSAAnswer([EE], False)}, True),
        (route(), dane_answer, False),
        (route(how="route"), dane_answer, True),
    ]:
        r = await decide(rt, answers=ans, trust_ad=trust)
        assert r.source == "opportunistic", (rt, ans, trust)
    # Validated records, none usable: TLS is still mandatory (RFC 7672 §2.2), unauthenticated.
    r = await decide(route(), answers={name: TLSAAnswer([TLSARecord(1, 1, 1, b"\1" * 32)], True)})
    assert (r.source, r.level, r.mandatory) == ("dane", "require", True)
    # A failed TLSA lookup on a validated path: the host is not used.
    r = await decide(route(), answers={name: DNSTemporaryError("SERVFAIL")})
    assert r.refused is not None and "TLSA lookup" in r.refused


async def test_mta_sts_decisions() -> None:
    r = await decide(route(), policy=ENFORCE)
    assert (r.source, r.level, r.mode, r.refused) == ("mta-sts", "verify", "enforce", None)
    r = await decide(route(host="mx2.example.org"), policy=ENFORCE)
    assert r.refused is not None and "not an MX host" in r.refused
    r = await decide(route(host="mx2.example.org"), policy=Policy("testing", ("mx.example.org",), 60))
    assert (r.source, r.level, r.mode, r.refused, r.mandatory) == ("mta-sts", "opportunistic", "testing", None, False)
    assert "testing: used anyway" in (r.note or "")
    r = await decide(route(), policy=Policy("none", (), 60))
    assert r.source == "opportunistic"
    # MTA-STS is about MX hosts: a configured route is left alone.
    r = await decide(route(how="route", host="mx2.example.org"), policy=ENFORCE)
    assert r.source == "opportunistic"


async def test_requirement_reports() -> None:
    r = await decide(route(), policy=Policy("testing", ("mx.example.org",), 60))
    assert r.report("TLSv1.3 X", None)["result"] == "verified"  # check() found nothing wrong
    o = await decide(route())
    assert o.report("TLSv1.3 X", None)["result"] == "encrypted" and o.report(None, None)["result"] == "no TLS"
    assert r.report(None, None)["result"] == "no TLS (testing: delivered anyway)"
    bad = r.report("TLSv1.3 X", "certificate not valid")
    assert bad["result"] == "failed (testing: delivered anyway)" and bad["problem"] == "certificate not valid"
    d = await decide(route(), answers={"_25._tcp.mx.example.org": TLSAAnswer([EE], True)})
    assert d.report("TLSv1.3 X", None) == {**d.describe(), "result": "verified"}
    # Connections are reused only under the same requirement.
    assert d.key != r.key


# ====================================================================== configuration
def test_config_keys(tmp_path: Path) -> None:
    doc = tomllib.loads("""
[tls]
ca_file = "ca.pem"
[dns]
nameservers = ["127.0.0.1:5353"]
trust_ad = true
[mta_sts]
enabled = false
port = 8443
timeout = "3s"
""")
    cfg = config_from_toml(doc, tmp_path / "mailhouse.toml")
    assert cfg.tls_ca_file == (tmp_path / "ca.pem").resolve() and cfg.tls_cert is None
    assert cfg.dns_trust_ad is True
    assert (cfg.mta_sts.enabled, cfg.mta_sts.port, cfg.mta_sts.timeout) == (False, 8443, 3.0)
    default = config_from_toml({}, tmp_path / "mailhouse.toml")
    assert (default.dns_trust_ad, default.mta_sts.enabled, default.mta_sts.port, default.tls_ca_file) == (
        False, True, 443, None)
    for bad in ({"dns": {"trust_ad": True}}, {"dns": {"trust_ad": "yes", "nameservers": ["127.0.0.1"]}},
                {"mta_sts": {"port": 0}}, {"mta_sts": {"unknown": 1}}, {"mta_sts": {"timeout": "0"}}):
        with pytest.raises(ConfigError):
            config_from_toml(bad, tmp_path / "mailhouse.toml")


# ====================================================================== PKIX after the fact (MTA-STS testing)
def test_pkix_problem(chain: dict[str, Any], tmp_path: Path) -> None:
    from mailhouse.trust.tlspolicy import Contexts

    ctx = Contexts(chain["root"].write(tmp_path / "ca.pem"))
    assert ctx.pkix_problem(chain["der"][:2], "mx.example.org") is None
    wrong = ctx.pkix_problem(chain["der"][:2], "mail.example.org")
    assert wrong is not None and "not valid for mail.example.org" in wrong
    assert ctx.pkix_problem(chain["der"][:1], "mx.example.org") is not None  # the intermediate is missing
    assert ctx.pkix_problem([], "mx.example.org") == "no certificate"
    stranger = Contexts(TestCA("stranger").write(tmp_path / "other.pem"))
    assert stranger.pkix_problem(chain["der"][:2], "mx.example.org") is not None
    missing = Contexts(tmp_path / "nothing.pem")
    assert "cannot check" in (missing.pkix_problem(chain["der"], "mx.example.org") or "")


# ====================================================================== the SMTP client's use of it
async def test_deliverer_defers_with_4_7_5_when_the_policy_refuses_every_host() -> None:
    from mailhouse.config import QueueSettings
    from mailhouse.net.smtp_client import SMTPDeliverer
    from mailhouse.store.models import QueueEntry, QueueRecipient

    engine = OutboundTLS(resolver=PolicyResolver({}), mta_sts=StaticSTS(Policy("enforce", ("elsewhere.test",), 60)))
    deliverer = SMTPDeliverer("mail.crepes.fr", QueueSettings(connect_timeout=1), tls=engine)
    rcpt = QueueRecipient(1, "bob@example.org", None, None, "pending", None, None)
    entry = QueueEntry("Q1", "alice@crepes.fr", None, 0.0, 0.0, 0, False, None, False, None, None, None, False,
                       None, 10, [rcpt])
    two = Route("example.org", "mx", [Hop("mx.example.org", 9, ["127.0.0.1"], 10),
                                      Hop("mx2.example.org", 9, ["127.0.0.1"], 20)])
    att = await deliverer.deliver(two, entry, [rcpt], b"Subject: x\r\n\r\nx\r\n")
    result = att.results[1]
    assert (result.state, result.status) == ("deferred", "4.7.5")
    assert "not an MX host" in result.reply
    assert [e["outcome"] for _, e in att.events] == ["skipped", "skipped"]
    assert [e["mx_host"] for _, e in att.events] == ["mx.example.org", "mx2.example.org"]
    assert att.events[0][1]["tls_policy"] == {"source": "mta-sts", "level": "verify", "mode": "enforce",
                                              "note": "policy id id1, fetched"}
    await deliverer.close()
