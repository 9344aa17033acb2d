"""The loopback DNS server, exercised through dnspython's async resolver as the product uses it."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import time
from collections.abc import AsyncIterator

import dns.asyncquery
import dns.asyncresolver
import dns.exception
import dns.flags
import dns.message
import dns.rcode
import dns.resolver
import pytest

from mailhouse.dns.testserver import DNSServer, Query, Zone

# SubjectPublicKeyInfo DER sizes of RSA keys: what a DKIM p= tag base64-encodes.
SPKI_2048 = 294
SPKI_4096 = 550


def dkim_value(spki_bytes: int) -> str:
    return "v=DKIM1; k=rsa; p=" + base64.b64encode(os.urandom(spki_bytes)).decode()


@pytest.fixture
def zone() -> Zone:
    z = Zone("test")
    z.add("hamburger.edu", "MX", "10 mx.hamburger.edu.")
    z.add("hamburger.edu", "MX", "20 backup.hamburger.edu")
    z.add("mx.hamburger.edu", "A", "127.0.0.1")
    z.add("mx.hamburger.edu", "AAAA", "::1")
    z.add("hamburger.edu", "TXT", "v=spf1 ip4:127.0.0.1 -all")
    z.add("_dmarc.hamburger.edu", "TXT", "v=DMARC1; p=reject")
    z.add("nullmx.test", "MX", "0 .")
    z.add("www.hamburger.edu", "CNAME", "mx.hamburger.edu.")
    return z


@pytest.fixture
async def server(zone: Zone) -> AsyncIterator[DNSServer]:
    async with DNSServer(zone) as s:
        yield s


def resolver_for(server: DNSServer, timeout: float = 2.0) -> dns.asyncresolver.Resolver:
    # Spelled out rather than server.resolver(): this is the product's construction.
    r = dns.asyncresolver.Resolver(configure=False)
    r.nameservers = [dns.nameserver.Do53Nameserver("127.0.0.1", server.port)]
    r.timeout = timeout
    r.lifetime = timeout * 2
    return r


async def test_mx_a_aaaa(server: DNSServer) -> None:
    r = resolver_for(server)
    mx = await r.resolve("hamburger.edu", "MX")
    assert sorted((rd.preference, rd.exchange.to_text()) for rd in mx) == [
        (10, "mx.hamburger.edu."),
        (20, "backup.hamburger.edu."),
    ]
    assert mx.response.flags & dns.flags.AA
    assert [rd.address for rd in await r.resolve("mx.hamburger.edu", "A")] == ["127.0.0.1"]
    assert [rd.address for rd in await r.resolve("mx.hamburger.edu", "AAAA")] == ["::1"]
    assert {q.transport for q in server.queries} == {"udp"}


async def test_txt_is_literal_text(server: DNSServer) -> None:
    r = resolver_for(server)
    answer = await r.resolve("hamburger.edu", "TXT")
    assert [b"".join(rd.strings) for rd in answer] == [b"v=spf1 ip4:127.0.0.1 -all"]


async def test_names_are_case_insensitive_and_case_is_echoed(server: DNSServer) -> None:
    r = resolver_for(server)
    answer = await r.resolve("MX.Hamburger.EDU", "A")
    assert answer.rrset is not None
    assert answer.rrset.name.to_text() == "MX.Hamburger.EDU."
    assert [rd.address for rd in answer] == ["127.0.0.1"]


async def test_dkim_2048_fits_udp(server: DNSServer, zone: Zone) -> None:
    value = dkim_value(SPKI_2048)
    zone.add("sel._domainkey.hamburger.edu", "TXT", value)
    answer = await resolver_for(server).resolve("sel._domainkey.hamburger.edu", "TXT")
    (rd,) = list(answer)
    assert all(len(s) <= 255 for s in rd.strings) and len(rd.strings) == 2
    assert b"".join(rd.strings).decode() == value
    # ~490 bytes: still under the 512-byte classic limit.
    assert server.queries[-1] == Query("sel._domainkey.hamburger.edu", "TXT", "udp")


async def test_big_txt_is_truncated_then_fetched_over_tcp(server: DNSServer, zone: Zone) -> None:
    value = dkim_value(SPKI_4096)
    zone.add("big._domainkey.hamburger.edu", "TXT", value)
    answer = await resolver_for(server).resolve("big._domainkey.hamburger.edu", "TXT")
    assert b"".join(next(iter(answer)).strings).decode() == value
    assert [q.transport for q in server.queries] == ["udp", "tcp"]


async def test_udp_limit_applies_to_edns_clients(zone: Zone) -> None:
    value = dkim_value(SPKI_4096)
    zone.add("big._domainkey.hamburger.edu", "TXT", value)
    async with DNSServer(zone, udp_limit=512) as server:
        r = server.resolver()
        r.use_edns(0, 0, 1232)
        await r.resolve("big._domainkey.hamburger.edu", "TXT")
        assert [q.transport for q in server.queries] == ["udp", "tcp"]
    async with DNSServer(zone) as server:
        r = server.resolver()
        r.use_edns(0, 0, 1232)
        await r.resolve("big._domainkey.hamburger.edu", "TXT")
        assert [q.transport for q in server.queries] == ["udp"]


async def test_nxdomain_under_known_apex(server: DNSServer) -> None:
    r = resolver_for(server)
    with pytest.raises(dns.resolver.NXDOMAIN):
        await r.resolve("nope.hamburger.edu", "A")
    with pytest.raises(dns.resolver.NXDOMAIN):
        await r.resolve("no-such-domain.test", "MX")  # "test" declared as an apex


async def test_nodata(server: DNSServer, zone: Zone) -> None:
    r = resolver_for(server)
    zone.add("sel._domainkey.hamburger.edu", "TXT", dkim_value(SPKI_2048))
    with pytest.raises(dns.resolver.NoAnswer):
        await r.resolve("mx.hamburger.edu", "MX")
    # An empty non-terminal exists too (RFC 8020).
    with pytest.raises(dns.resolver.NoAnswer):
        await r.resolve("_domainkey.hamburger.edu", "TXT")
    # The apex always has an SOA.
    assert len(await r.resolve("hamburger.edu", "SOA")) == 1


async def test_outside_every_apex_is_refused(server: DNSServer) -> None:
    q = dns.message.make_query("example.com", "A")
    reply = await dns.asyncquery.udp(q, "127.0.0.1", port=server.port, timeout=2)
    assert reply.rcode() == dns.rcode.REFUSED
    with pytest.raises(dns.resolver.NoNameservers):
        await resolver_for(server).resolve("example.com", "A")


async def test_servfail_and_other_rcodes(server: DNSServer, zone: Zone) -> None:
    r = resolver_for(server)
    zone.fail("hamburger.edu")
    with pytest.raises(dns.resolver.NoNameservers, match="SERVFAIL"):
        await r.resolve("hamburger.edu", "MX")
    zone.fail("hamburger.edu", "REFUSED")
    with pytest.raises(dns.resolver.NoNameservers, match="REFUSED"):
        await r.resolve("hamburger.edu", "MX")
    zone.fail("mx.hamburger.edu", "NXDOMAIN")
    with pytest.raises(dns.resolver.NXDOMAIN):
        await r.resolve("mx.hamburger.edu", "A")
    zone.recover("hamburger.edu")
    assert len(await r.resolve("hamburger.edu", "MX")) == 2


async def test_fail_one_type_only(server: DNSServer, zone: Zone) -> None:
    r = resolver_for(server)
    zone.fail("mx.hamburger.edu", rtype="AAAA")
    with pytest.raises(dns.resolver.NoNameservers):
        await r.resolve("mx.hamburger.edu", "AAAA")
    assert len(await r.resolve("mx.hamburger.edu", "A")) == 1


async def test_stall_times_out(server: DNSServer, zone: Zone) -> None:
    zone.stall("hamburger.edu")
    r = resolver_for(server, timeout=0.2)
    started = time.monotonic()
    with pytest.raises(dns.resolver.LifetimeTimeout):
        await r.resolve("hamburger.edu", "MX")
    assert time.monotonic() - started < 2
    # A stalled TCP query is silent too, and does not hold up stop().
    q = dns.message.make_query("hamburger.edu", "MX")
    with pytest.raises(dns.exception.Timeout):
        await dns.asyncquery.tcp(q, "127.0.0.1", port=server.port, timeout=0.3)


async def test_null_mx(server: DNSServer) -> None:
    answer = await resolver_for(server).resolve("nullmx.test", "MX")
    (rd,) = list(answer)
    assert rd.preference == 0 and rd.exchange == dns.name.root


async def test_cname_answers_carry_the_target(server: DNSServer) -> None:
    answer = await resolver_for(server).resolve("www.hamburger.edu", "A")
    assert answer.canonical_name.to_text() == "mx.hamburger.edu."
    assert [rd.address for rd in answer] == ["127.0.0.1"]


async def test_zone_changes_mid_test(server: DNSServer, zone: Zone) -> None:
    r = resolver_for(server)
    with pytest.raises(dns.resolver.NXDOMAIN):
        await r.resolve("new.hamburger.edu", "A")
    zone.add("new.hamburger.edu", "A", "127.0.0.1")
    assert len(await r.resolve("new.hamburger.edu", "A")) == 1
    zone.remove("new.hamburger.edu", "A")
    with pytest.raises(dns.resolver.NXDOMAIN):
        await r.resolve("new.hamburger.edu", "A")
    zone.remove("hamburger.edu")  # apex stays known: NODATA, not REFUSED
    with pytest.raises(dns.resolver.NoAnswer):
        await r.resolve("hamburger.edu", "MX")


async def test_edns_echo_and_badvers(server: DNSServer) -> None:
    q = dns.message.make_query("mx.hamburger.edu", "A", use_edns=0, payload=1232)
    reply = await dns.asyncquery.udp(q, "127.0.0.1", port=server.port, timeout=2)
    assert reply.edns == 0 and reply.flags & dns.flags.AA
    plain = await dns.asyncquery.udp(
        dns.message.make_query("mx.hamburger.edu", "A"), "127.0.0.1", port=server.port, timeout=2
    )
    assert plain.edns == -1
    q = dns.message.make_query("mx.hamburger.edu", "A", use_edns=1)
    reply = await dns.asyncquery.udp(q, "127.0.0.1", port=server.port, timeout=2)
    assert reply.rcode() == dns.rcode.BADVERS


async def test_garbage_is_ignored(server: DNSServer) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for junk in (b"", b"\x00", os.urandom(11), os.urandom(300), b"\xff" * 12 + b"\x01"):
            s.sendto(junk, ("127.0.0.1", server.port))
    # TCP: a bogus frame, then a truncated one, then a hang-up.
    _reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"\x00\x05hello\x00\x40abc")
    await writer.drain()
    writer.close()
    await asyncio.sleep(0.05)
    assert len(await resolver_for(server).resolve("mx.hamburger.edu", "A")) == 1


def test_threaded_server_serves_sync_resolvers(zone: Zone) -> None:
    with DNSServer(zone) as server:
        r = dns.resolver.Resolver(configure=False)
        r.nameservers = [server.nameserver]
        r.lifetime = 4
        assert [rd.address for rd in r.resolve("mx.hamburger.edu", "A")] == ["127.0.0.1"]
        zone.fail("mx.hamburger.edu")
        with pytest.raises(dns.resolver.NoNameservers):
            r.resolve("mx.hamburger.edu", "A")
    server.stop_thread()  # idempotent


def test_fixed_port_and_ipv6_loopback(zone: Zone) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    server = DNSServer(zone, host="::1")
    try:
        server.start_in_thread()
    except OSError:
        pytest.skip("no IPv6 loopback")
    try:
        r = dns.resolver.Resolver(configure=False)
        r.nameservers = [dns.nameserver.Do53Nameserver("::1", server.port)]
        assert len(r.resolve("hamburger.edu", "MX")) == 2
    finally:
        server.stop_thread()
    # The same port can be taken again straight away.
    again = DNSServer(zone, host="::1", port=server.port)
    again.start_in_thread()
    again.stop_thread()


def test_only_loopback() -> None:
    with pytest.raises(ValueError):
        DNSServer(Zone(), host="0.0.0.0")
    with pytest.raises(ValueError):
        DNSServer(Zone(), host="localhost")
