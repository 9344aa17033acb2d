"""SPF: the whole RFC 7208 test suite (openspf.org, as shipped in pyspf's sources),
plus the checker over real DNS (the test DNS server on 127.0.0.1)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mailhouse.dns.testserver import DNSServer, Zone
from mailhouse.trust.dnsq import DNSTempFail, TrustDNS
from mailhouse.trust.spf import SPFChecker, parse_record

SUITE = json.loads((Path(__file__).parent / "test_trust_spf_suite.json").read_text())


class SuiteDNS:
    """The suite's zone data with the reference driver's rules (pyspf testspf.py):
    type SPF records stand in for TXT where a name has no TXT; "TIMEOUT" makes
    every question about the name fail; unknown names starting "error." fail."""

    def __init__(self, zonedata: dict[str, list[Any]]) -> None:
        # Each name's records in order, "TIMEOUT" markers in place, generated TXT last.
        self.zone: dict[str, list[Any]] = {}
        for name, records in zonedata.items():
            recs: list[Any] = []
            generated: list[tuple[str, Any]] = []
            gen = True
            for r in records:
                if r == "TIMEOUT":
                    recs.append(r)
                    continue
                for t, v in r.items():
                    if t == "TXT":
                        gen = False
                    elif t == "SPF" and gen:
                        generated.append(("TXT", v))
                    if v != "NONE":
                        recs.append((t, v))
            self.zone[name.lower()] = recs + (generated if gen else [])

    def _records(self, name: str, rtype: str, depth: int = 0) -> list[Any]:
        name = name.lower().rstrip(".")
        if any(len(label) > 63 for label in name.split(".")):
            return []
        if name not in self.zone:
            if name.startswith("error."):
                raise DNSTempFail(f"{name}: timeout")
            return []
        out: list[Any] = []
        for rec in self.zone[name]:
            if rec == "TIMEOUT":
                # The reference driver: a timeout unless an answer of the type came first.
                if not out:
                    raise DNSTempFail(f"{name}: timeout")
                break
            t, v = rec
            if t == rtype:
                out.append(v)
            elif t == "CNAME" and depth < 8:
                out += self._records(v, rtype, depth + 1)
        return out

    async def txt(self, name: str) -> list[str]:
        return ["".join(v) if isinstance(v, list) else str(v) for v in self._records(name, "TXT")]

    async def a(self, name: str) -> list[str]:
        return [str(v) for v in self._records(name, "A")]

    async def aaaa(self, name: str) -> list[str]:
        return [str(v) for v in self._records(name, "AAAA")]

    async def mx(self, name: str) -> list[str]:
        return [str(v[1]).lower().rstrip(".") for v in self._records(name, "MX") if v[1]]

    async def ptr(self, ip: str) -> list[str]:
        import ipaddress

        rev = ipaddress.ip_address(ip).reverse_pointer
        return [str(v).lower().rstrip(".") for v in self._records(rev, "PTR")]


CASES = [
    pytest.param(scenario, name, test, id=name)
    for scenario in SUITE["scenarios"]
    for name, test in scenario["tests"].items()
]


@pytest.mark.parametrize(("scenario", "name", "test"), CASES)
async def test_rfc7208_suite(scenario: dict[str, Any], name: str, test: dict[str, Any]) -> None:
    checker = SPFChecker(SuiteDNS(scenario["zonedata"]), default_explanation="DEFAULT")
    r = await checker.check(test["host"], test["mailfrom"], test["helo"])
    expected = test["result"] if isinstance(test["result"], list) else [test["result"]]
    assert r.result in expected, f"{test.get('description', '')}: {r}"
    if "explanation" in test:
        assert r.explanation == test["explanation"]


def test_suite_is_whole() -> None:
    assert len(CASES) == 203


def test_record_syntax() -> None:
    rec = parse_record("v=spf1 mx a:mail.example.org/24//64 ip4:192.0.2.0/24 ip6:2001:db8::/32 -all")
    assert [t.name for t in rec.terms] == ["mx", "a", "ip4", "ip6", "all"]
    assert rec.terms[1].cidr4 == 24 and rec.terms[1].cidr6 == 64


async def test_over_real_dns() -> None:
    zone = Zone()
    zone.add("crepes.fr", "MX", "10 mail.crepes.fr.")
    zone.add("mail.crepes.fr", "A", "127.0.0.1")
    zone.add("crepes.fr", "TXT", "v=spf1 mx -all")
    zone.add("mail.crepes.fr", "TXT", "v=spf1 a -all")
    zone.add("hamburger.edu", "TXT", "v=spf1 include:_spf.hamburger.edu ~all")
    zone.add("_spf.hamburger.edu", "TXT", "v=spf1 ip4:127.0.0.0/30 ip6:::1 -all")
    zone.add("broken.test", "TXT", "v=spf1 mx")
    zone.fail("broken.test")
    async with DNSServer(zone) as server:
        checker = SPFChecker(TrustDNS(server.resolver()))
        assert (await checker.check("127.0.0.1", "alice@crepes.fr", "mail.crepes.fr")).result == "pass"
        r = await checker.check("127.0.0.2", "alice@crepes.fr", "mail.crepes.fr")
        assert r.result == "fail" and "127.0.0.2" in r.explanation
        assert (await checker.check("127.0.0.2", "bob@hamburger.edu", "x.test")).result == "pass"
        assert (await checker.check("127.0.0.9", "bob@hamburger.edu", "x.test")).result == "softfail"
        assert (await checker.check("::1", "bob@hamburger.edu", "x.test")).result == "pass"
        assert (await checker.check("127.0.0.1", "", "mail.crepes.fr")).result == "pass"  # HELO identity
        assert (await checker.check("127.0.0.1", "x@nothere.crepes.fr", "h")).result == "none"
        assert (await checker.check("127.0.0.1", "x@broken.test", "h")).result == "temperror"
