"""ARC (RFC 8617) chain validation, through dkimpy, with keys fetched beforehand.

Recorded in Authentication-Results only: a valid chain tells a reader which
intermediaries vouched for the message; it does not change our disposition.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from .dkim import INLINE_VERIFY_MAX, fetch_keys, header_end, key_name, parse_fields, signatures
from .dnsq import DNSTempFail, LookupDNS


@dataclass
class ARCResult:
    result: str  # pass, fail, none, temperror
    instances: int = 0
    reason: str = ""


def _validate_sync(message: bytes, keys: dict[str, bytes | DNSTempFail | None]) -> tuple[str, str]:
    import dkim

    def dnsfunc(name: bytes, timeout: float = 5) -> bytes | None:
        v = keys.get(name.decode("ascii", "replace").rstrip(".").lower())
        return v if isinstance(v, bytes) else None

    try:
        cv, _results, reason = dkim.ARC(message, minkey=1024).verify(dnsfunc=dnsfunc)
    except Exception as e:  # a malformed chain can trip the library anywhere
        return "fail", f"{e.__class__.__name__}: {e}"
    if cv is None:
        return "fail", str(reason)
    return cv.decode("ascii", "replace").lower(), str(reason)


async def verify(message: bytes, dns: LookupDNS) -> ARCResult:
    fields = parse_fields(message[: header_end(message)])
    sets = [f for f in fields if f.name == "arc-seal"]
    if not sets:
        return ARCResult("none")
    sigs = signatures(fields, "arc-seal") + signatures(fields, "arc-message-signature")
    names = [n for s in sigs if not s.error and (n := key_name(s.tags))]
    keys = await fetch_keys(dns, names)
    failed = [k for k, v in keys.items() if isinstance(v, DNSTempFail)]
    if failed:
        return ARCResult("temperror", len(sets), f"key lookup failed: {', '.join(failed)}")
    if len(message) > INLINE_VERIFY_MAX:
        result, reason = await asyncio.get_running_loop().run_in_executor(None, _validate_sync, message, keys)
    else:
        result, reason = _validate_sync(message, keys)
    return ARCResult(result, len(sets), reason)
