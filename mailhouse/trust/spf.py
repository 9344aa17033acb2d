"""SPF (RFC 7208), asynchronous, on the event loop.

Our own checker rather than pyspf: pyspf is synchronous (a thread per check, its
own resolver beside ours), while every SPF question here goes through the same
async resolver as the rest of the server. It is held to the RFC 7208 test suite
that pyspf's sources ship (tests/unit/test_trust_spf.py runs all of it).

Results: none, neutral, pass, fail, softfail, temperror, permerror (§2.6).
"""

from __future__ import annotations

import ipaddress
import re
import time
import urllib.parse
from dataclasses import dataclass

from .dnsq import DNSTempFail, LookupDNS

MAX_LOOKUPS = 10  # §4.6.4: terms that cause DNS queries
MAX_VOID = 2  # §4.6.4: lookups answered "no such name" or "no data"
MAX_MX = 10  # address lookups per mx mechanism
MAX_PTR = 10  # names considered per ptr mechanism or %{p}
DEFAULT_EXPLANATION = "%{o}'s SPF record does not designate %{c} as a permitted sender (%{i})"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_QUALIFIERS = {"+": "pass", "-": "fail", "~": "softfail", "?": "neutral"}
_MECHANISMS = {"all", "include", "a", "mx", "ptr", "ip4", "ip6", "exists"}
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.\-]*")
_MODIFIER = re.compile(r"([A-Za-z][A-Za-z0-9_.\-]*)=(.*)", re.S)
_CIDRS = re.compile(r"(?:/(0|[1-9][0-9]?[0-9]?))?(?://(0|[1-9][0-9]?[0-9]?))?\Z")
_IP4 = re.compile(r"(?:(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\Z")
_TOPLABEL = re.compile(r"(?:[A-Za-z0-9]*[A-Za-z][A-Za-z0-9]*|[A-Za-z0-9]+-[A-Za-z0-9\-]*[A-Za-z0-9])\Z")
_MACRO_LETTERS = set("slodiphv")
_EXP_ONLY_LETTERS = set("crt")
_DELIMITERS = set(".-+,/_=")


class _PermError(Exception):
    pass


class _TempError(Exception):
    pass


@dataclass(frozen=True)
class SPFResult:
    result: str
    identity: str  # "mailfrom" or "helo"
    domain: str  # the domain checked ("" when there was none to check)
    sender: str  # the identity as checked: local@domain (postmaster@helo for HELO)
    reason: str = ""  # why: the matching mechanism, the error
    explanation: str = ""  # for "fail": the domain's exp= text or our default

    def comment(self, ip: str) -> str:
        what = {"pass": "designates", "fail": "does not designate", "softfail": "does not designate",
                "neutral": "neither permits nor denies", "none": "publishes no SPF record for"}
        if self.result in what:
            verb = what[self.result]
            if self.result == "none":
                return f"{self.domain or 'the domain'} {verb} {ip}"
            return f"{self.domain} {verb} {ip} as permitted sender"
        return self.reason or self.result


@dataclass
class _Term:
    qualifier: str
    name: str
    arg: str | None = None
    cidr4: int = 32
    cidr6: int = 128
    network: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None


@dataclass
class _Record:
    terms: list[_Term]
    redirect: str | None
    exp: str | None


def valid_domain(domain: str) -> bool:
    """§4.3: a multi-label name with no empty or over-long label."""
    d = domain[:-1] if domain.endswith(".") else domain
    labels = d.split(".")
    return len(labels) >= 2 and len(d) <= 253 and all(0 < len(lab) <= 63 for lab in labels)


def _check_macro_string(s: str, *, explain: bool = False) -> bool:
    """Syntax of a macro-string (§7.1); returns whether it ends with a macro-expand."""
    i, n = 0, len(s)
    ends_with_macro = False
    while i < n:
        c = s[i]
        if c == "%":
            if i + 1 >= n:
                raise _PermError("'%' at the end of a macro string")
            nxt = s[i + 1]
            if nxt in "%_-":
                i += 2
                ends_with_macro = True
                continue
            if nxt != "{":
                raise _PermError(f"invalid macro '%{nxt}'")
            j = s.find("}", i + 2)
            if j < 0:
                raise _PermError("unterminated macro")
            body = s[i + 2:j]
            m = re.fullmatch(r"([A-Za-z])([0-9]*)(r?)([.\-+,/_=]*)", body, re.I)
            if not m:
                raise _PermError(f"invalid macro '%{{{body}}}'")
            letter = m.group(1).lower()
            if letter not in _MACRO_LETTERS and not (explain and letter in _EXP_ONLY_LETTERS):
                raise _PermError(f"invalid macro letter '{m.group(1)}'")
            if m.group(2) and int(m.group(2)) == 0:
                raise _PermError("a macro's digit transformer must not be 0")
            i = j + 1
            ends_with_macro = True
            continue
        o = ord(c)
        if not (0x21 <= o <= 0x7E or (explain and c == " ")):
            raise _PermError(f"invalid character {c!r} in {s!r}")
        i += 1
        ends_with_macro = False
    return ends_with_macro


def _check_domain_spec(spec: str) -> None:
    """§7.1: domain-spec = macro-string domain-end."""
    if not spec:
        raise _PermError("empty domain-spec")
    if _check_macro_string(spec):
        return
    d = spec[:-1] if spec.endswith(".") else spec
    head, dot, last = d.rpartition(".")
    if not dot or not head or not _TOPLABEL.match(last):
        raise _PermError(f"invalid domain-spec {spec!r}")


def parse_record(text: str) -> _Record:
    """One SPF record (after "v=spf1"); any syntax error anywhere is a permerror (§4.6)."""
    terms: list[_Term] = []
    redirect: str | None = None
    exp: str | None = None
    for word in text[6:].split(" "):
        if not word:
            continue
        mod = _MODIFIER.fullmatch(word)
        if mod is not None:
            name, value = mod.group(1).lower(), mod.group(2)
            if name in ("redirect", "exp"):
                if (redirect if name == "redirect" else exp) is not None:
                    raise _PermError(f"more than one {name}= modifier")
                _check_domain_spec(value)
                if name == "redirect":
                    redirect = value
                else:
                    exp = value
            else:
                _check_macro_string(value)  # unknown modifiers are ignored, but must parse
            continue
        qualifier = "+"
        if word[0] in _QUALIFIERS:
            qualifier, word = word[0], word[1:]
        m = _NAME.match(word)
        if not m or m.group(0).lower() not in _MECHANISMS:
            raise _PermError(f"unknown mechanism {word!r}")
        name, rest = m.group(0).lower(), word[m.end():]
        term = _Term(qualifier, name)
        if name == "all":
            if rest:
                raise _PermError(f"invalid term {word!r}")
        elif name in ("include", "exists"):
            if not rest.startswith(":") or not rest[1:]:
                raise _PermError(f"{name} needs a domain")
            _check_domain_spec(rest[1:])
            term.arg = rest[1:]
        elif name in ("a", "mx"):
            spec_part = rest
            cm = _CIDRS.search(rest)
            if cm and cm.group(0):
                spec_part = rest[:cm.start()]
                if cm.group(1) is not None:
                    term.cidr4 = int(cm.group(1))
                if cm.group(2) is not None:
                    term.cidr6 = int(cm.group(2))
                if term.cidr4 > 32 or term.cidr6 > 128:
                    raise _PermError(f"invalid prefix length in {word!r}")
            if spec_part:
                if not spec_part.startswith(":") or not spec_part[1:]:
                    raise _PermError(f"invalid term {word!r}")
                _check_domain_spec(spec_part[1:])
                term.arg = spec_part[1:]
        elif name == "ptr":
            if rest:
                if not rest.startswith(":") or not rest[1:]:
                    raise _PermError(f"invalid term {word!r}")
                _check_domain_spec(rest[1:])
                term.arg = rest[1:]
        elif name in ("ip4", "ip6"):
            if not rest.startswith(":"):
                raise _PermError(f"{name} needs an address")
            addr, slash, plen = rest[1:].partition("/")
            if slash and not re.fullmatch(r"0|[1-9][0-9]*", plen):
                raise _PermError(f"invalid prefix length in {word!r}")
            try:
                if name == "ip4":
                    if not _IP4.match(addr):
                        raise ValueError(addr)
                    bits = int(plen) if slash else 32
                    if bits > 32:
                        raise ValueError(plen)
                    term.network = ipaddress.IPv4Network(f"{addr}/{bits}", strict=False)
                else:
                    a6 = ipaddress.IPv6Address(addr)
                    bits = int(plen) if slash else 128
                    if bits > 128:
                        raise ValueError(plen)
                    term.network = ipaddress.IPv6Network(f"{a6}/{bits}", strict=False)
            except ValueError:
                raise _PermError(f"invalid network in {word!r}") from None
        terms.append(term)
    return _Record(terms, redirect, exp)


def _select(records: list[str]) -> str | None:
    spf = [r for r in records if r[:6].lower() == "v=spf1" and (len(r) == 6 or r[6] == " ")]
    if len(spf) > 1:
        raise _PermError("more than one SPF record")
    return spf[0] if spf else None


def _client_ip(ip: str) -> IPAddress:
    addr = ipaddress.ip_address(ip)
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped  # §5: an IPv4-mapped client is an IPv4 client
    return addr


class _Check:
    """One evaluation of check_host() with its shared lookup budget."""

    def __init__(
        self, dns: LookupDNS, ip: IPAddress, sender: str, helo: str, receiver: str, ip_upper: bool = False
    ) -> None:
        self.dns = dns
        self.ip = ip
        self.ip_upper = ip_upper
        self.sender = sender
        local, _, self.sender_domain = sender.rpartition("@")
        self.local = local or "postmaster"
        self.helo = helo
        self.receiver = receiver
        self.lookups = 0
        self.voids = 0
        self._validated: str | None = None

    # ------------------------------------------------------------- DNS with limits
    def _count(self) -> None:
        self.lookups += 1
        if self.lookups > MAX_LOOKUPS:
            raise _PermError(f"more than {MAX_LOOKUPS} DNS lookups")

    def _void(self, answer: list[str]) -> list[str]:
        if not answer:
            self.voids += 1
            if self.voids > MAX_VOID:
                raise _PermError(f"more than {MAX_VOID} void DNS lookups")
        return answer

    async def _q(self, kind: str, name: str) -> list[str]:
        try:
            if kind == "txt":
                return await self.dns.txt(name)
            if kind == "mx":
                return await self.dns.mx(name)
            if kind == "a":
                return await self.dns.a(name)
            if kind == "aaaa":
                return await self.dns.aaaa(name)
            return await self.dns.ptr(name)
        except DNSTempFail as e:
            raise _TempError(str(e)) from None

    async def _addresses(self, name: str) -> list[str]:
        return await self._q("a" if self.ip.version == 4 else "aaaa", name)

    def _in(self, addrs: list[str], term: _Term) -> bool:
        bits = term.cidr4 if self.ip.version == 4 else term.cidr6
        for text in addrs:
            try:
                net = ipaddress.ip_network(f"{text}/{bits}", strict=False)
            except ValueError:
                continue
            if net.version == self.ip.version and self.ip in net:
                return True
        return False

    # ------------------------------------------------------------- macros (§7)
    async def _validated_name(self, domain: str) -> str:
        """%{p}: a PTR name of the client that resolves back to it."""
        if self._validated is not None:
            return self._validated
        found = "unknown"
        try:
            names = (await self._q("ptr", str(self.ip)))[:MAX_PTR]
            validated = []
            for n in names:
                try:
                    if str(self.ip) in [str(ipaddress.ip_address(a)) for a in await self._addresses(n)]:
                        validated.append(n)
                except (_TempError, ValueError):
                    continue
            exact = [n for n in validated if n == domain or n.endswith("." + domain)]
            if exact or validated:
                found = (exact or validated)[0]
        except _TempError:
            pass
        self._validated = found
        return found

    async def expand(self, spec: str, domain: str, *, explain: bool = False) -> str:
        out: list[str] = []
        i, n = 0, len(spec)
        while i < n:
            c = spec[i]
            if c != "%":
                out.append(c)
                i += 1
                continue
            nxt = spec[i + 1]
            if nxt == "%":
                out.append("%")
                i += 2
                continue
            if nxt == "_":
                out.append(" ")
                i += 2
                continue
            if nxt == "-":
                out.append("%20")
                i += 2
                continue
            j = spec.index("}", i)
            m = re.fullmatch(r"([A-Za-z])([0-9]*)(r?)([.\-+,/_=]*)", spec[i + 2:j], re.I)
            assert m is not None  # checked when the record was parsed
            letter, digits, reverse, delims = m.group(1), m.group(2), m.group(3), m.group(4)
            value = await self._macro_value(letter.lower(), domain, explain)
            parts = re.split("[" + re.escape(delims or ".") + "]", value)
            if reverse:
                parts.reverse()
            if digits:
                parts = parts[-int(digits):]
            value = ".".join(parts)
            if letter.isupper():
                value = urllib.parse.quote(value, safe="-._~")
            out.append(value)
            i = j + 1
        result = "".join(out)
        if not explain:
            while len(result) > 253 and "." in result:  # §7.3: drop labels from the left
                result = result.split(".", 1)[1]
        return result

    async def _macro_value(self, letter: str, domain: str, explain: bool) -> str:
        ip = self.ip
        if letter == "s":
            return self.sender
        if letter == "l":
            return self.local
        if letter == "o":
            return self.sender_domain
        if letter == "d":
            return domain
        if letter == "i":
            if ip.version == 4:
                return str(ip)
            nibbles = ".".join(ip.exploded.replace(":", ""))
            # DNS names are case-blind; keeping the client text's case only makes
            # explanations read back as the address was written.
            return nibbles.upper() if self.ip_upper else nibbles
        if letter == "p":
            return await self._validated_name(domain)
        if letter == "v":
            return "in-addr" if ip.version == 4 else "ip6"
        if letter == "h":
            return self.helo
        if letter == "c":
            return str(ip)
        if letter == "r":
            return self.receiver
        if letter == "t":
            return str(int(time.time()))
        raise _PermError(f"invalid macro letter {letter!r}")

    # ------------------------------------------------------------- check_host (§4)
    async def check_host(self, domain: str) -> tuple[str, str, str | None, str]:
        """(result, reason, exp= spec of the deciding record, that record's domain)."""
        if not valid_domain(domain):
            return "none", f"{domain!r} is not a valid domain", None, domain
        domain = domain.rstrip(".")
        records = await self._q("txt", domain)
        text = _select(records)
        if text is None:
            return "none", f"no SPF record at {domain}", None, domain
        rec = parse_record(text)
        for term in rec.terms:
            if await self._match(term, domain):
                result = _QUALIFIERS[term.qualifier]
                return result, f"matched {term.qualifier if term.qualifier != '+' else ''}{term.name}" + (
                    f":{term.arg}" if term.arg else ""), rec.exp, domain
        if rec.redirect is not None:
            self._count()
            target = await self.expand(rec.redirect, domain)
            if not valid_domain(target):
                raise _PermError(f"redirect to an invalid domain {target!r}")
            result, reason, exp, where = await self.check_host(target)
            if result == "none":
                raise _PermError(f"redirect to {target}, which has no SPF record")
            return result, reason, exp, where
        return "neutral", "no mechanism matched", rec.exp, domain

    async def _match(self, t: _Term, domain: str) -> bool:
        name = t.name
        if name == "all":
            return True
        if name in ("ip4", "ip6"):
            return t.network is not None and t.network.version == self.ip.version and self.ip in t.network
        self._count()
        target = await self.expand(t.arg, domain) if t.arg is not None else domain
        target = target.rstrip(".").lower()
        if name == "include":
            if not valid_domain(target):
                raise _PermError(f"include of an invalid domain {target!r}")
            result, reason, _, _ = await self.check_host(target)
            if result == "pass":
                return True
            if result == "temperror":
                raise _TempError(reason)
            if result in ("permerror", "none"):
                raise _PermError(f"include:{target}: {result}")
            return False
        if not valid_domain(target):
            return False
        if name == "a":
            return self._in(self._void(await self._addresses(target)), t)
        if name == "mx":
            hosts = self._void(await self._q("mx", target))
            if len(hosts) > MAX_MX:
                raise _PermError(f"{target} has more than {MAX_MX} MX hosts")
            for h in hosts:
                if self._in(await self._addresses(h), t):
                    return True
            return False
        if name == "exists":
            return bool(self._void(await self._q("a", target)))
        if name == "ptr":
            try:
                names = self._void(await self._q("ptr", str(self.ip)))
            except _TempError:
                return False  # §5.5: a PTR lookup error is no match
            for n in names[:MAX_PTR]:
                n = n.lower().rstrip(".")
                if n != target and not n.endswith("." + target):
                    continue
                try:
                    addrs = await self._addresses(n)
                except _TempError:
                    continue
                if any(_same(a, self.ip) for a in addrs):
                    return True
            return False
        raise _PermError(f"unknown mechanism {name}")

    async def explanation(self, exp: str | None, domain: str, default: str) -> str:
        """§6.2: the exp= text of the record that failed, else the default."""
        if exp is not None:
            try:
                target = await self.expand(exp, domain)
                if valid_domain(target):
                    texts = await self._q("txt", target)
                    if len(texts) == 1 and all(32 <= ord(c) < 127 for c in texts[0]):
                        _check_macro_string(texts[0], explain=True)
                        return await self.expand(texts[0], domain, explain=True)
            except (_PermError, _TempError):
                pass
        try:
            _check_macro_string(default, explain=True)
            return await self.expand(default, domain, explain=True)
        except _PermError:
            return default


def _same(text: str, ip: IPAddress) -> bool:
    try:
        return ipaddress.ip_address(text) == ip
    except ValueError:
        return False


class SPFChecker:
    def __init__(self, dns: LookupDNS, *, receiver: str = "unknown",
                 default_explanation: str = DEFAULT_EXPLANATION) -> None:
        self.dns = dns
        self.receiver = receiver
        self.default_explanation = default_explanation

    async def check(self, ip: str, sender: str, helo: str) -> SPFResult:
        """The MAIL FROM identity; for the null sender, the HELO identity (§2.4)."""
        if not sender:
            return await self.check_helo(ip, helo)
        local, at, domain = sender.rpartition("@")
        if not at:
            local, domain = "postmaster", sender
        return await self._run(ip, f"{local or 'postmaster'}@{domain}", domain, helo, "mailfrom")

    async def check_helo(self, ip: str, helo: str) -> SPFResult:
        return await self._run(ip, f"postmaster@{helo}", helo, helo, "helo")

    async def _run(self, ip: str, sender: str, domain: str, helo: str, identity: str) -> SPFResult:
        try:
            addr = _client_ip(ip)
        except ValueError:
            return SPFResult("none", identity, domain, sender, f"client address {ip!r} cannot be checked")
        if not valid_domain(domain):
            return SPFResult("none", identity, domain, sender, f"{domain!r} is not a domain name")
        c = _Check(self.dns, addr, sender, helo, self.receiver, ip_upper=ip != ip.lower())
        try:
            result, reason, exp, where = await c.check_host(domain)
        except _TempError as e:
            return SPFResult("temperror", identity, domain, sender, f"DNS failure: {e}")
        except _PermError as e:
            return SPFResult("permerror", identity, domain, sender, str(e))
        explanation = ""
        if result == "fail":
            explanation = await c.explanation(exp, where, self.default_explanation)
        return SPFResult(result, identity, domain, sender, reason, explanation)
