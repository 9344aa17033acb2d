"""Typed DNS questions for SPF, DKIM, DMARC and ARC, with their failure semantics.

The checks need what `mailhouse.dns.resolver.Resolver` does not offer (PTR, A
and AAAA apart, TXT with "no such name" and "no data" folded together) and must
tell a temporary failure (the message is deferred, 4.4.3) from an empty answer.
Every question goes through dnspython's async resolver made by
`mailhouse.dns.resolver`, so `[dns] nameservers` and its cache apply.
"""

from __future__ import annotations

import ipaddress
from typing import Protocol

import dns.asyncresolver
import dns.exception
import dns.name
import dns.resolver
import dns.reversename

from ..dns.resolver import Resolver, make_resolver


class DNSTempFail(Exception):
    """SERVFAIL, timeout, no server answering: the answer is unknown, not empty."""


class LookupDNS(Protocol):
    """What the checks ask. An empty list is "no such name" or "no data" alike."""

    async def txt(self, name: str) -> list[str]: ...

    async def a(self, name: str) -> list[str]: ...

    async def aaaa(self, name: str) -> list[str]: ...

    async def mx(self, name: str) -> list[str]: ...

    async def ptr(self, ip: str) -> list[str]: ...


class TrustDNS:
    def __init__(self, resolver: dns.asyncresolver.Resolver) -> None:
        self._r = resolver

    @classmethod
    def from_config(cls, nameservers: list[tuple[str, int]] | None, timeout: float = 5.0) -> TrustDNS:
        return cls(make_resolver(nameservers, timeout))

    @classmethod
    def from_resolver(cls, resolver: Resolver) -> TrustDNS:
        # The product's Resolver wraps a dnspython resolver: sharing it shares the cache.
        inner = getattr(resolver, "_r", None)
        if isinstance(inner, dns.asyncresolver.Resolver):
            return cls(inner)
        return cls(make_resolver(None))

    async def _ask(self, name: str, rtype: str) -> list[str] | None:
        try:
            qname = dns.name.from_text(name)
        except (dns.name.LabelTooLong, dns.name.EmptyLabel, dns.name.NameTooLong, dns.exception.SyntaxError):
            return None  # a name that cannot exist has no records
        try:
            answer = await self._r.resolve(qname, rtype, search=False, raise_on_no_answer=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.YXDOMAIN):
            return None
        except (dns.resolver.NoNameservers, dns.exception.Timeout) as e:
            raise DNSTempFail(f"{name} {rtype}: {e.__class__.__name__}") from None
        except dns.exception.DNSException as e:
            raise DNSTempFail(f"{name} {rtype}: {e}") from None
        if answer.rrset is None:
            return []
        return [r.to_text() for r in answer.rrset] if rtype != "TXT" else [
            b"".join(r.strings).decode("latin-1") for r in answer.rrset  # type: ignore[attr-defined]
        ]

    async def txt(self, name: str) -> list[str]:
        return await self._ask(name, "TXT") or []

    async def a(self, name: str) -> list[str]:
        return await self._ask(name, "A") or []

    async def aaaa(self, name: str) -> list[str]:
        return await self._ask(name, "AAAA") or []

    async def mx(self, name: str) -> list[str]:
        out = []
        for text in await self._ask(name, "MX") or []:
            host = text.split(None, 1)[1] if " " in text else text
            out.append(host.rstrip(".").lower())
        return out

    async def ptr(self, ip: str) -> list[str]:
        try:
            rev = dns.reversename.from_address(str(ipaddress.ip_address(ip)))
        except ValueError:
            return []
        return [n.rstrip(".").lower() for n in await self._ask(rev.to_text(), "PTR") or []]
