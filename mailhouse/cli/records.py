"""`mailhouse domain records NAME`: the DNS records a local domain must publish.

MX, SPF, the DKIM key record(s) (made first if the domain has no key), DMARC,
and what mail clients use to find their settings: RFC 6186 SRV records for the
listeners that run, and the Thunderbird autoconfig name when webmail runs (it
serves the file, see `autoconfig_xml`).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from xml.sax.saxutils import escape

from ..config import Config
from ..store.base import Store
from ..trust.keys import KeyRing

TTL = 3600

# RFC 6186 / RFC 8314 service names of our listeners.
SRV = (
    ("submissions", "_submissions._tcp"),
    ("submission", "_submission._tcp"),
    ("imaps", "_imaps._tcp"),
    ("imap", "_imap._tcp"),
    ("pop3s", "_pop3s._tcp"),
    ("pop3", "_pop3._tcp"),
)


@dataclass(frozen=True)
class Record:
    name: str
    type: str
    value: str

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "type": self.type, "value": self.value}

    def zone_line(self) -> str:
        """As in a zone file; long TXT values split into 255-byte strings (RFC 1035)."""
        value = self.value
        if self.type == "TXT":
            value = " ".join('"' + value[i:i + 255].replace('"', '\\"') + '"' for i in range(0, len(value), 255))
        return f"{self.name}.\t{TTL}\tIN\t{self.type}\t{value}"


def _port(config: Config, listener: str) -> int | None:
    hp = config.listen.get(listener)
    return hp[1] if hp else None


async def domain_records(config: Config, store: Store, domain: str) -> list[Record]:
    domain = domain.lower().rstrip(".")
    host = config.hostname.rstrip(".")
    settings = config.trust
    keys = await KeyRing(store, rsa_bits=settings.dkim_rsa_bits).keys(domain, ed25519=settings.dkim_ed25519)
    out = [
        Record(domain, "MX", f"10 {host}."),
        Record(domain, "TXT", "v=spf1 mx -all"),
    ]
    out += [Record(k.record_name, "TXT", k.public_record()) for k in keys]
    out.append(Record(f"_dmarc.{domain}", "TXT", "v=DMARC1; p=quarantine; adkim=r; aspf=r"))
    for listener, service in SRV:
        port = _port(config, listener)
        if port is not None:
            out.append(Record(f"{service}.{domain}", "SRV", f"0 1 {port} {host}."))
    if "http" in config.listen or "https" in config.listen:
        out.append(Record(f"autoconfig.{domain}", "CNAME", f"{host}."))
    return out


def print_records(records: list[Record], *, as_json: bool) -> None:
    if as_json:
        json.dump([r.as_dict() for r in records], sys.stdout)
        sys.stdout.write("\n")
        return
    for r in records:
        print(r.zone_line())


def autoconfig_xml(config: Config, domain: str) -> str:
    """The Thunderbird autoconfig file (`/mail/config-v1.1.xml` on autoconfig.DOMAIN)
    for the listeners that run."""
    host = escape(config.hostname)
    d = escape(domain.lower())
    servers = []
    for listener, kind, socket in (("imaps", "imap", "SSL"), ("imap", "imap", "STARTTLS"),
                                   ("pop3s", "pop3", "SSL"), ("pop3", "pop3", "STARTTLS")):
        port = _port(config, listener)
        if port is not None:
            servers.append(
                f'    <incomingServer type="{kind}">\n      <hostname>{host}</hostname>\n'
                f"      <port>{port}</port>\n      <socketType>{socket}</socketType>\n"
                "      <username>%EMAILADDRESS%</username>\n"
                "      <authentication>password-cleartext</authentication>\n    </incomingServer>\n"
            )
    for listener, socket in (("submissions", "SSL"), ("submission", "STARTTLS")):
        port = _port(config, listener)
        if port is not None:
            servers.append(
                f'    <outgoingServer type="smtp">\n      <hostname>{host}</hostname>\n'
                f"      <port>{port}</port>\n      <socketType>{socket}</socketType>\n"
                "      <username>%EMAILADDRESS%</username>\n"
                "      <authentication>password-cleartext</authentication>\n    </outgoingServer>\n"
            )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n<clientConfig version="1.1">\n'
        f'  <emailProvider id="{d}">\n    <domain>{d}</domain>\n'
        f"    <displayName>{d}</displayName>\n" + "".join(servers) + "  </emailProvider>\n</clientConfig>\n"
    )
