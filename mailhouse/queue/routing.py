"""Where mail for a domain goes: a configured route first, then DNS MX (RFC 5321 §5.1).

Routes also carry what DNSSEC proved about them (with `[dns] trust_ad`): whether
the MX answer was validated, and each host's addresses. DANE (RFC 7672 §2.2)
applies only along a validated path: a forged MX or address record would let
an attacker pick the TLSA name to look up, so insecure steps turn it off.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..dns.resolver import DNSPermanentError, DNSTemporaryError, Resolver

SMTP_PORT = 25


@dataclass(frozen=True)
class Hop:
    """One host to try, with its addresses in order."""

    host: str
    port: int
    addresses: list[str]
    preference: int | None = None
    secure: bool = False  # the address records were DNSSEC-validated


@dataclass
class Route:
    domain: str
    how: str  # "route" / "mx" / "implicit-mx"
    hops: list[Hop] = field(default_factory=list)
    mx: list[tuple[int, str]] = field(default_factory=list)  # as published, for the journey
    error: str | None = None
    status: str | None = None  # enhanced status for a failure
    permanent: bool = False
    # The MX answer (for an implicit MX, the proof that there is none) was DNSSEC-validated.
    secure: bool = False

    def describe(self) -> dict[str, object]:
        return {
            "domain": self.domain,
            "how": self.how,
            "mx": [{"preference": p, "host": h} for p, h in self.mx],
            "hops": [{"host": h.host, "port": h.port, "addresses": h.addresses, "dnssec": h.secure}
                     for h in self.hops],
            "dnssec": self.secure,
            "error": self.error,
        }


class Router:
    def __init__(self, resolver: Resolver, routes: dict[str, tuple[str, int]], smtp_port: int = SMTP_PORT) -> None:
        self.resolver = resolver
        self.routes = routes
        self.smtp_port = smtp_port

    async def route(self, domain: str) -> Route:
        domain = domain.lower().rstrip(".")
        if domain in self.routes:
            host, port = self.routes[domain]
            addresses = [host] if _is_ip(host) else []
            r = Route(domain, "route")
            if not addresses:
                try:
                    addresses = await self.resolver.addresses(host)
                except (DNSTemporaryError, DNSPermanentError) as e:
                    r.error, r.status = str(e), "4.4.3"
                    return r
            r.hops = [Hop(host, port, addresses)]
            return r
        if domain.startswith("[") and domain.endswith("]"):  # an address literal
            lit = domain[1:-1].removeprefix("IPv6:").removeprefix("ipv6:")
            return Route(domain, "address-literal", [Hop(lit, self.smtp_port, [lit])])
        try:
            mx, secure = await self.resolver.mx_secure(domain)
        except DNSPermanentError as e:
            return Route(domain, "mx", error=str(e), status=e.status, permanent=True)
        except DNSTemporaryError as e:
            return Route(domain, "mx", error=str(e), status="4.4.3")
        r = Route(domain, "mx" if mx else "implicit-mx", mx=[(m.preference, m.host) for m in mx], secure=secure)
        targets = [(m.preference, m.host) for m in mx] if mx else [(None, domain)]
        temp: str | None = None
        for pref, host in targets:
            try:
                addrs, addrs_secure = await self.resolver.addresses_secure(host)
            except DNSTemporaryError as e:
                temp = str(e)
                continue
            except DNSPermanentError as e:
                temp = temp or str(e)
                continue
            if addrs:
                r.hops.append(Hop(host, self.smtp_port, addrs, pref, addrs_secure))
        if not r.hops:
            if not mx and temp is None:
                r.error, r.status, r.permanent = f"{domain} has no MX and no address records", "5.1.2", True
            else:
                r.error, r.status = temp or f"no address for the MX hosts of {domain}", "4.4.3"
        return r


def _is_ip(host: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
