"""DNS for mail routing, through dnspython's async resolver and its cache.

`[dns] nameservers` points it at chosen servers (tests start one on 127.0.0.1);
absent, the system resolver configuration is used.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
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


def make_resolver(nameservers: list[tuple[str, int]] | None, timeout: float = 5.0) -> dns.asyncresolver.Resolver:
    if nameservers:
        r = dns.asyncresolver.Resolver(configure=False)
        r.nameservers = [dns.nameserver.Do53Nameserver(host, port) for host, port in nameservers]
    else:
        r = dns.asyncresolver.Resolver()
    r.timeout = timeout
    r.lifetime = timeout * 2
    r.cache = dns.resolver.LRUCache()
    return r


class Resolver:
    def __init__(self, nameservers: list[tuple[str, int]] | None = None, timeout: float = 5.0) -> None:
        self._r = make_resolver(nameservers, timeout)

    async def _query(self, name: str, rtype: str) -> dns.resolver.Answer | None:
        """The answer, or None for NODATA; raises for NXDOMAIN and failures."""
        try:
            return await self._r.resolve(name, rtype, search=False)
        except dns.resolver.NoAnswer:
            return None
        except dns.resolver.NXDOMAIN:
            raise DNSPermanentError(f"{name}: no such domain (NXDOMAIN)", "5.1.2") from None
        except (dns.resolver.NoNameservers, dns.exception.Timeout, dns.resolver.LifetimeTimeout) as e:
            raise DNSTemporaryError(f"{name} {rtype}: {e.__class__.__name__}: DNS lookup failed") from None
        except dns.exception.DNSException as e:
            raise DNSTemporaryError(f"{name} {rtype}: {e}") from None

    async def mx(self, domain: str) -> list[MXHost]:
        """MX hosts by preference, shuffled among equals (RFC 5321 §5.1); [] when the
        domain has no MX (the caller falls back to its address records)."""
        answer = await self._query(domain, "MX")
        if answer is None:
            return []
        hosts = [MXHost(int(r.preference), str(r.exchange).rstrip(".").lower()) for r in answer]
        if len(hosts) == 1 and hosts[0].host in ("", ".") and hosts[0].preference == 0:
            raise DNSPermanentError(f"{domain} does not accept mail (null MX, RFC 7505)", "5.1.10")
        hosts = [h for h in hosts if h.host not in ("", ".")]
        random.shuffle(hosts)
        hosts.sort(key=lambda h: h.preference)
        return hosts

    async def addresses(self, host: str) -> list[str]:
        """IPv6 and IPv4 addresses of a host; [] when it has none."""
        out: list[str] = []
        temp: DNSTemporaryError | None = None
        for rtype in ("AAAA", "A"):
            try:
                answer = await self._query(host, rtype)
            except DNSTemporaryError as e:
                temp = e
                continue
            if answer is not None:
                out += [r.to_text() for r in answer]
        if not out and temp is not None:
            raise temp
        return out

    async def txt(self, name: str) -> list[str]:
        try:
            answer = await self._query(name, "TXT")
        except DNSPermanentError:
            return []
        if answer is None:
            return []
        return [b"".join(r.strings).decode("utf-8", "replace") for r in answer]
