"""Which TLS an outbound SMTP connection must have, and whether it got it.

For each next hop the SMTP client asks for a `TLSRequirement`, decided in this
order (the first that applies wins):

1. `[tls_policy]` names the recipient domain: the operator's word is final
   (opportunistic, require, verify), over DANE and MTA-STS alike, so a broken
   published policy can be worked around.
2. DANE (RFC 7672), for MX routing (implicit MX included) only, when the
   resolver's AD bit is trusted (`[dns] trust_ad`) and the MX answer, the MX
   host's addresses and its TLSA RRset `_<port>._tcp.<host>` were all validated:
   a usable TLSA record makes TLS mandatory and the chain must match one
   (`mailhouse.trust.dane`). A validated TLSA RRset with no usable record still
   makes TLS mandatory, unauthenticated (RFC 7672 §2.2), and the rules below
   decide the rest. A failed TLSA lookup along a validated path skips the host
   (§2.2.3: it might be an attacker hiding the records). DANE comes before
   MTA-STS (RFC 8461 §2).
3. MTA-STS (RFC 8461), for MX routing only: in `enforce` mode an MX host the
   policy does not list is not used at all, and the others need TLS with a
   certificate valid for the MX host name (PKIX, `[tls] ca_file` or the system's
   CAs); in `testing` mode delivery goes on as usual, and what would have failed
   is logged and recorded in the journey.
4. Otherwise opportunistic TLS (RFC 7435): encrypt if offered, never verify.

A failure of a mandatory requirement is a failure of that host: the next one is
tried, and when none is left the message is deferred (4.7.5), never sent in the
clear. The journey's attempt records what applied: `tls_policy` = {source, level,
mode, result, ...}.
"""

from __future__ import annotations

import datetime
import ssl
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.x509 import verification

from .. import log
from ..config import Config
from ..dns.resolver import DNSTemporaryError, Resolver, TLSARecord
from ..queue.routing import Hop, Route
from . import dane
from .mtasts import MTASTS, Lookup

logger = log.get("tls-policy")

MANDATORY = ("require", "verify", "dane")
MX_ROUTES = ("mx", "implicit-mx")


class Contexts:
    """The client SSL contexts, made once: building one loads every CA, per connection that adds up."""

    def __init__(self, ca_file: Path | None = None) -> None:
        self.ca_file = ca_file
        self._verify: ssl.SSLContext | None = None
        self._any: ssl.SSLContext | None = None
        self._store: verification.Store | None = None
        self._store_error: str | None = None

    def verify(self) -> ssl.SSLContext:
        """PKIX: a chain to a trusted CA and a certificate for the host name we asked for."""
        if self._verify is None:
            ctx = ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2  # RFC 8461 §5 asks TLS 1.2 or later
            self._verify = ctx
        return self._verify

    def any_certificate(self) -> ssl.SSLContext:
        """Encryption without authentication (RFC 7435); DANE checks the chain after the handshake."""
        if self._any is None:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            self._any = ctx
        return self._any

    def store(self) -> verification.Store | None:
        """The trusted CAs as a `cryptography` store, for checking after the fact (MTA-STS testing)."""
        if self._store is None and self._store_error is None:
            path = str(self.ca_file) if self.ca_file else ssl.get_default_verify_paths().cafile
            certs: list[x509.Certificate] = []
            try:
                if path is None:
                    raise OSError("no CA bundle file")
                with open(path, "rb") as f:
                    pem = f.read()
                for block in pem.split(b"-----END CERTIFICATE-----")[:-1]:
                    try:  # one odd certificate in a system bundle must not void the rest
                        certs.append(x509.load_pem_x509_certificate(block + b"-----END CERTIFICATE-----\n"))
                    except ValueError:
                        continue
                if not certs:
                    raise OSError(f"no certificate in {path}")
                self._store = verification.Store(certs)
            except OSError as e:
                self._store_error = str(e)
        return self._store

    def pkix_problem(self, chain: list[bytes], host: str) -> str | None:
        """Why this chain would fail PKIX verification for `host`, or None."""
        if not chain:
            return "no certificate"
        store = self.store()
        if store is None:
            return f"cannot check the certificate: {self._store_error}"
        try:
            certs = [x509.load_der_x509_certificate(der) for der in chain]
            verifier = (verification.PolicyBuilder().store(store)
                        .time(datetime.datetime.now(datetime.UTC))
                        .build_server_verifier(x509.DNSName(host)))
            verifier.verify(certs[0], certs[1:])
        except (ValueError, verification.VerificationError) as e:
            return f"certificate not valid for {host}: {e}"
        return None


@dataclass(frozen=True)
class TLSRequirement:
    """What one next hop needs; `mailhouse.net.smtp_client` asks it at each step."""

    source: str  # "config", "dane", "mta-sts", "opportunistic"
    level: str  # "opportunistic", "require", "verify", "dane"
    host: str
    contexts: Contexts = field(compare=False, repr=False)
    mode: str | None = None  # MTA-STS: enforce / testing
    tlsa: tuple[TLSARecord, ...] = ()
    names: tuple[str, ...] = ()  # what a DANE-TA chain's leaf may be issued to
    refused: str | None = None  # this host must not be used at all, and why
    mx_listed: bool = True  # MTA-STS testing: whether the policy lists this host
    note: str | None = None  # how the requirement came about, for the journey

    @property
    def mandatory(self) -> bool:
        """TLS must be established, and checks must pass, or this host is not used."""
        return self.level in MANDATORY

    @property
    def want_tls(self) -> bool:
        return True  # always try STARTTLS; opportunistic or not, encryption is better than none

    @property
    def key(self) -> tuple[Any, ...]:
        """Connections opened under the same key satisfy each other: the reuse test."""
        return (self.level, self.mode, self.host, self.tlsa)

    def context(self) -> ssl.SSLContext:
        return self.contexts.verify() if self.level == "verify" else self.contexts.any_certificate()

    def check(self, ssl_object: Any) -> str | None:
        """After the handshake: what is wrong with the server's certificate for this
        requirement, or None. For `verify` the handshake itself checked."""
        if ssl_object is None:
            return "no TLS session" if self.mandatory or self.mode == "testing" else None
        if self.level == "dane":
            return dane.verify_chain(dane.peer_chain(ssl_object), self.tlsa, self.names)
        if self.source == "mta-sts" and self.mode == "testing":
            # What enforce mode would have refused, found without refusing anything.
            problems = [] if self.mx_listed else [f"{self.host} is not in the policy's mx"]
            pkix = self.contexts.pkix_problem(dane.peer_chain(ssl_object), self.host)
            problems += [pkix] if pkix else []
            if problems:
                logger.warning("MTA-STS (testing) for %s would fail: %s", self.host, "; ".join(problems))
            return "; ".join(problems) or None
        return None

    def describe(self) -> dict[str, Any]:
        d: dict[str, Any] = {"source": self.source, "level": self.level}
        if self.mode:
            d["mode"] = self.mode
        if self.tlsa:
            d["tlsa"] = [f"{r.usage} {r.selector} {r.mtype} {r.data.hex()[:16]}..." for r in self.tlsa]
        if self.note:
            d["note"] = self.note
        return d

    def report(self, tls: str | None, problem: str | None) -> dict[str, Any]:
        """`describe()` with the outcome of a connection that was used: `tls` is the
        negotiated version and cipher (None: plaintext), `problem` what check() said."""
        d = self.describe()
        if tls is None:
            d["result"] = "no TLS"
        elif problem is not None:
            d["result"] = "failed"
            d["problem"] = problem
        elif self.level in ("verify", "dane") or self.mode == "testing":  # testing: checked by check()
            d["result"] = "verified"
        else:
            d["result"] = "encrypted"
        if self.mode == "testing" and d["result"] not in ("verified", "encrypted"):
            d["result"] += " (testing: delivered anyway)"
            if tls is None:
                logger.warning("MTA-STS (testing) for %s would fail: no TLS", self.host)
        return d


class RouteTLS:
    """The TLS decisions for one route: MTA-STS looked up once, DANE per host."""

    def __init__(self, engine: OutboundTLS, route: Route, override: str | None, sts: Lookup | None) -> None:
        self.engine = engine
        self.route = route
        self.override = override
        self.sts = sts

    def refusal_event(self, req: TLSRequirement, recipients: list[str]) -> dict[str, Any]:
        """The journey's attempt for a host the policy did not let us use. Its name is
        `mx_host`, not `host`: nothing was connected to."""
        assert req.refused is not None
        logger.info("%s: %s", self.route.domain, req.refused)
        return {
            "domain": self.route.domain, "route": self.route.describe(), "mx_host": req.host,
            "recipients": recipients, "started": time.time(), "duration": 0.0,
            "outcome": "skipped", "error": req.refused, "tls_policy": req.describe(),
        }

    def _req(self, hop: Hop, source: str, level: str, **kw: Any) -> TLSRequirement:
        return TLSRequirement(source, level, hop.host, self.engine.contexts, **kw)

    async def for_hop(self, hop: Hop) -> TLSRequirement:
        route = self.route
        if self.override is not None:
            return self._req(hop, "config", self.override, note=f"[tls_policy] for {route.domain}")
        dane_unusable = False
        resolver = self.engine.resolver
        if (self.engine.use_dane and resolver is not None and resolver.trust_ad and route.how in MX_ROUTES
                and route.secure and hop.secure):
            name = dane.tlsa_name(hop.host, hop.port)
            try:
                answer = await resolver.tlsa(name)
            except DNSTemporaryError as e:
                return self._req(hop, "dane", "dane", refused=f"DANE: TLSA lookup for {hop.host} failed ({e}); "
                                 "the host is not used without it")
            if answer.secure and answer.records:
                records = dane.usable(answer.records)
                if records:
                    return self._req(hop, "dane", "dane", tlsa=tuple(records), names=(hop.host, route.domain),
                                     note=f"validated TLSA at {name}")
                dane_unusable = True
        floor = "require" if dane_unusable else "opportunistic"
        unusable_note = "validated TLSA records, none usable: TLS required" if dane_unusable else None
        policy = self.sts.policy if self.sts is not None else None
        if policy is not None and policy.mode in ("enforce", "testing") and self.sts is not None:
            how = f"policy id {self.sts.id}, {self.sts.how}"
            if unusable_note:
                how = f"{how}; {unusable_note}"
            listed = policy.matches(hop.host)
            if policy.mode == "enforce":
                if not listed:
                    return self._req(hop, "mta-sts", "verify", mode="enforce", note=how, refused=(
                        f"MTA-STS: {hop.host} is not an MX host of the {route.domain} policy "
                        f"({', '.join(policy.mx)}); not used"))
                return self._req(hop, "mta-sts", "verify", mode="enforce", note=how)
            if not listed:  # check() logs it, with whatever else enforce mode would refuse
                how += f"; {hop.host} not in the policy's mx (testing: used anyway)"
            return self._req(hop, "mta-sts", floor, mode="testing", note=how, mx_listed=listed)
        if dane_unusable:
            return self._req(hop, "dane", "require", note=unusable_note)
        return self.engine.opportunistic(hop.host)


class OutboundTLS:
    """The outbound TLS policy engine: `[tls_policy]`, DANE and MTA-STS together."""

    def __init__(
        self,
        overrides: dict[str, str] | None = None,
        *,
        resolver: Resolver | None = None,
        mta_sts: MTASTS | None = None,
        ca_file: Path | None = None,
        use_dane: bool = True,
    ) -> None:
        self.overrides = overrides or {}
        self.resolver = resolver
        self.mta_sts = mta_sts
        self.use_dane = use_dane
        self._plain: dict[str, TLSRequirement] = {}
        self.contexts = Contexts(ca_file)

    def opportunistic(self, host: str) -> TLSRequirement:
        """The requirement of nearly every hop, made once per host (it is frozen)."""
        req = self._plain.get(host)
        if req is None:
            if len(self._plain) >= 4096:
                self._plain.clear()
            req = self._plain[host] = TLSRequirement("opportunistic", "opportunistic", host, self.contexts)
        return req

    async def for_route(self, route: Route) -> RouteTLS:
        override = self.overrides.get(route.domain)
        sts: Lookup | None = None
        if override is None and self.mta_sts is not None and route.how in MX_ROUTES:
            sts = await self.mta_sts.policy(route.domain)
        return RouteTLS(self, route, override, sts)


def outbound_tls(config: Config, resolver: Resolver) -> OutboundTLS:
    """The engine `mailhouse serve` uses, from the configuration."""
    sts = None
    if config.mta_sts.enabled:
        sts = MTASTS(resolver, directory=config.data_dir / "mta-sts", ca_file=config.tls_ca_file,
                     port=config.mta_sts.port, timeout=config.mta_sts.timeout)
    return OutboundTLS(config.tls_policy, resolver=resolver, mta_sts=sts, ca_file=config.tls_ca_file)
