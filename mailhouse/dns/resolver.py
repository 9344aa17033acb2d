"""DNS for mail routing, through dnspython's async resolver and its cache.

`[dns] nameservers` points it at chosen servers (tests start one on 127.0.0.1);
absent, the system resolver configuration is used.

DNSSEC: mailhouse does not validate signatures itself. With `[dns] trust_ad`,
it asks its configured nameservers for validation (the AD bit in the query,
RFC 6840 §5.7) and believes the AD bit of their answers: an answer is "secure"
only then. The decision is the operator's, because the AD bit means something
only when the nameserver validates and the path to it cannot be tampered with
(a resolver on loopback, typically); without `trust_ad` every answer counts as
insecure, whatever its flags, and DANE never applies.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.flags
import dns.nameserver
import dns.rdatatype
import dns.resolver


class DNSTemporaryError(Exception):
    """SERVFAIL, timeout, no answer from any server: try again later (4.4.3)."""


class DNSPermanentError(Exception):
    """The name does not exist (5.1.2), or publishes a null MX (5.1.10)."""

    def __init__(self, message: str, status: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class MXHost:
    preference: int
    host: str


@dataclass(frozen=True)
class TLSARecord:
    """One TLSA record (RFC 6698 §2.1) as published: usage, selector, matching type, data."""

    usage: int
    selector: int
    mtype: int
    data: bytes


@dataclass(frozen=True)
class TLSAAnswer:
    """The TLSA RRset of a name ([] when there is none) and whether it was validated."""

    records: list[TLSARecord]
    secure: bool


def make_resolver(
    nameservers: list[tuple[str, int]] | None, timeout: float = 5.0, *, ask_ad: bool = False
) -> dns.asyncresolver.Resolver:
    if nameservers:
        r = dns.asyncresolver.Resolver(configure=False)
        r.nameservers = [dns.nameserver.Do53Nameserver(host, port) for host, port in nameservers]
    else:
        r = dns.asyncresolver.Resolver()
    r.timeout = timeout
    r.lifetime = timeout * 2
    r.cache = dns.resolver.LRUCache()
    if ask_ad:
        # AD in a query asks a validating resolver to report validation in its
        # answer (RFC 6840 §5.7) without the size of DO's RRSIGs.
        r.flags = dns.flags.RD | dns.flags.AD
    return r


class Resolver:
    def __init__(
        self, nameservers: list[tuple[str, int]] | None = None, timeout: float = 5.0, *, trust_ad: bool = False
    ) -> None:
        # Only nameservers the operator named can be trusted to have validated:
        # the system's (DHCP's) resolver is anyone's.
        if trust_ad and not nameservers:
            raise ValueError("trust_ad needs explicit nameservers")
        self.trust_ad = trust_ad
        self._r = make_resolver(nameservers, timeout, ask_ad=trust_ad)

    def _secure(self, answer: dns.resolver.Answer) -> bool:
        """Whether this answer is DNSSEC-validated: its AD bit, if we trust it at all."""
        return self.trust_ad and bool(answer.response.flags & dns.flags.AD)

    async def _query(self, name: str, rtype: str) -> dns.resolver.Answer | None:
        """The answer, or None for NODATA; raises for NXDOMAIN and failures."""
        answer = await self._answer(name, rtype)
        return answer if answer.rrset is not None else None

    async def _answer(self, name: str, rtype: str) -> dns.resolver.Answer:
        """The answer, NODATA included (its rrset is None); raises for NXDOMAIN and failures."""
        try:
            return await self._r.resolve(name, rtype, search=False, raise_on_no_answer=False)
        except dns.resolver.NXDOMAIN:
            raise DNSPermanentError(f"{name}: no such domain (NXDOMAIN)", "5.1.2") from None
        except (dns.resolver.NoNameservers, dns.exception.Timeout, dns.resolver.LifetimeTimeout) as e:
            raise DNSTemporaryError(f"{name} {rtype}: {e.__class__.__name__}: DNS lookup failed") from None
        except dns.exception.DNSException as e:
            raise DNSTemporaryError(f"{name} {rtype}: {e}") from None

    async def mx(self, domain: str) -> list[MXHost]:
        """MX hosts by preference, shuffled among equals (RFC 5321 §5.1); [] when the
        domain has no MX (the caller falls back to its address records)."""
        return (await self.mx_secure(domain))[0]

    async def mx_secure(self, domain: str) -> tuple[list[MXHost], bool]:
        """`mx()`, and whether the answer (records, or their absence) was validated."""
        answer = await self._answer(domain, "MX")
        secure = self._secure(answer)
        if answer.rrset is None:
            return [], secure
        hosts = [MXHost(int(r.preference), str(r.exchange).rstrip(".").lower()) for r in answer]
        if len(hosts) == 1 and hosts[0].host in ("", ".") and hosts[0].preference == 0:
            raise DNSPermanentError(f"{domain} does not accept mail (null MX, RFC 7505)", "5.1.10")
        hosts = [h for h in hosts if h.host not in ("", ".")]
        random.shuffle(hosts)
        hosts.sort(key=lambda h: h.preference)
        return hosts, secure

    async def addresses(self, host: str) -> list[str]:
        """IPv6 and IPv4 addresses of a host; [] when it has none."""
        return (await self.addresses_secure(host))[0]

    async def addresses_secure(self, host: str) -> tuple[list[str], bool]:
        """`addresses()`, and whether every address RRset used was validated
        (False when there are none: nothing was proven about an address to use)."""
        out: list[str] = []
        temp: DNSTemporaryError | None = None
        secure = True
        for rtype in ("AAAA", "A"):
            try:
                answer = await self._query(host, rtype)
            except DNSTemporaryError as e:
                temp = e
                continue
            if answer is not None:
                out += [r.to_text() for r in answer]
                secure = secure and self._secure(answer)
        if not out and temp is not None:
            raise temp
        return out, secure and bool(out)

    async def tlsa(self, name: str) -> TLSAAnswer:
        """The TLSA records at `name` (e.g. "_25._tcp.mx.example.org"); NXDOMAIN and
        NODATA are an empty answer, other failures raise DNSTemporaryError."""
        try:
            answer = await self._answer(name, "TLSA")
        except DNSPermanentError:
            return TLSAAnswer([], False)
        if answer.rrset is None:
            return TLSAAnswer([], self._secure(answer))
        records = [
            TLSARecord(int(r.usage), int(r.selector), int(r.mtype), bytes(r.cert))  # type: ignore[attr-defined]
            for r in answer.rrset
        ]
        return TLSAAnswer(records, self._secure(answer))

    async def txt(self, name: str) -> list[str]:
        try:
            answer = await self._query(name, "TXT")
        except DNSPermanentError:
            return []
        if answer is None:
            return []
        return [b"".join(r.strings).decode("utf-8", "replace") for r in answer]
