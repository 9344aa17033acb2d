"""DMARC (RFC 7489): record discovery, identifier alignment, policy with p/sp/pct.

In-house (no maintained evaluator fits, FIELD-NOTES); organisational domains come
from the public suffix list that `publicsuffixlist` ships.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from .dkim import DKIMResult
from .dnsq import LookupDNS
from .spf import SPFResult

POLICIES = ("none", "quarantine", "reject")
_WEAKER = {"reject": "quarantine", "quarantine": "none", "none": "none"}


@lru_cache(maxsize=1)
def _psl() -> Any:
    from publicsuffixlist import PublicSuffixList

    return PublicSuffixList()  # parsing the list costs ~50 ms: once per process


def organizational_domain(domain: str) -> str:
    """RFC 7489 §3.2: the registrable domain (a public suffix is its own)."""
    d = domain.lower().rstrip(".")
    try:
        org = _psl().privatesuffix(d)
    except Exception:
        org = None
    return str(org) if org else d


@dataclass
class DMARCRecord:
    p: str
    sp: str | None
    pct: int
    adkim: str
    aspf: str
    found_at: str  # the domain whose _dmarc record this is
    text: str


def parse_record(text: str, found_at: str) -> DMARCRecord | None:
    """A record's tags; None when it cannot be used at all (§6.6.3)."""
    tags: dict[str, str] = {}
    for part in text.split(";"):
        if "=" in part:
            k, v = part.split("=", 1)
            tags.setdefault(k.strip().lower(), v.strip())
    if tags.get("v") != "DMARC1":
        return None
    p = tags.get("p", "").lower()
    sp = tags.get("sp", "").lower() or None
    has_rua = any(u.strip().lower().startswith("mailto:") for u in tags.get("rua", "").split(","))
    if p not in POLICIES or (sp is not None and sp not in POLICIES):
        # §6.6.3: an invalid p or sp with a valid rua is p=none; without, no DMARC at all.
        if not has_rua:
            return None
        p, sp = "none", None
    try:
        pct = max(0, min(100, int(tags.get("pct", "100"))))
    except ValueError:
        pct = 100
    adkim = "s" if tags.get("adkim", "r").lower() == "s" else "r"
    aspf = "s" if tags.get("aspf", "r").lower() == "s" else "r"
    return DMARCRecord(p, sp, pct, adkim, aspf, found_at, text)


async def _record_at(dns: LookupDNS, domain: str) -> DMARCRecord | None:
    texts = [t for t in await dns.txt(f"_dmarc.{domain}") if t.startswith("v=DMARC1")]
    if len(texts) != 1:
        return None  # none, or several: §6.6.3 says apply no policy
    return parse_record(texts[0], domain)


async def find_record(dns: LookupDNS, from_domain: str) -> DMARCRecord | None:
    """The From domain's record, else its organisational domain's. Raises DNSTempFail."""
    rec = await _record_at(dns, from_domain)
    if rec is None:
        org = organizational_domain(from_domain)
        if org != from_domain:
            rec = await _record_at(dns, org)
    return rec


@dataclass
class DMARCResult:
    result: str  # pass, fail, none, temperror, permerror
    domain: str  # the RFC5322.From domain
    policy: str = "none"  # the policy the domain asks for this message (p or sp)
    disposition: str = "none"  # what we apply: none, quarantine, reject
    spf_aligned: bool = False
    dkim_aligned: bool = False
    reason: str = ""
    record: DMARCRecord | None = None

    def comment(self) -> str:
        if self.record is None:
            return self.reason
        r = self.record
        parts = [f"p={r.p}"]
        if r.sp:
            parts.append(f"sp={r.sp}")
        if r.pct != 100:
            parts.append(f"pct={r.pct}")
        parts.append(f"dis={self.disposition}")
        return " ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        return {"result": self.result, "from": self.domain, "policy": self.policy,
                "disposition": self.disposition, "spf_aligned": self.spf_aligned,
                "dkim_aligned": self.dkim_aligned}


def aligned(a: str, b: str, mode: str) -> bool:
    a, b = a.lower().rstrip("."), b.lower().rstrip(".")
    if mode == "s":
        return a == b
    return organizational_domain(a) == organizational_domain(b)


def evaluate(
    from_domain: str,
    rec: DMARCRecord | None,
    spf: SPFResult | None,
    dkim: list[DKIMResult],
    *,
    sample: Callable[[], float] = random.random,
) -> DMARCResult:
    """The verdict for one author domain given its record (None: it has none)."""
    from_domain = from_domain.lower().rstrip(".")
    if rec is None:
        return DMARCResult("none", from_domain, reason="no DMARC record")
    policy = rec.p if rec.found_at == from_domain else (rec.sp or rec.p)
    res = DMARCResult("fail", from_domain, policy=policy, record=rec)
    res.spf_aligned = spf is not None and spf.result == "pass" and aligned(spf.domain, from_domain, rec.aspf)
    res.dkim_aligned = any(d.result == "pass" and aligned(d.domain, from_domain, rec.adkim) for d in dkim)
    if res.spf_aligned or res.dkim_aligned:
        res.result = "pass"
        return res
    # §6.6.4: a message not picked by pct gets the next weaker policy.
    res.disposition = policy if sample() * 100 < rec.pct else _WEAKER[policy]
    return res

