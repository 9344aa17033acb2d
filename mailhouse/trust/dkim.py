"""DKIM (RFC 6376): signing with `cryptography`, verifying with dkimpy.

Signing is ours: dkimpy signs RSA in pure Python (~10 ms a message, FIELD-NOTES),
`cryptography` takes well under a millisecond. Canonicalization is relaxed/relaxed
and is checked against dkimpy's verifier in the tests.

Verification is dkimpy's, fed with keys fetched beforehand through our async
resolver (its `dnsfunc` then only reads a dict), so a DNS failure is known for
what it is, a temporary error, instead of being folded into "fail".
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ed25519, padding

from .dnsq import DNSTempFail, LookupDNS
from .keys import ED25519, SigningKey

# What we sign (RFC 6376 §5.4.1), each present instance; the OVERSIGNED ones once
# more, so an instance added in transit (a second From, a changed Subject put
# above the original) breaks the signature instead of slipping past it.
SIGNED = (
    "from", "reply-to", "subject", "date", "message-id", "to", "cc", "mime-version",
    "content-type", "content-transfer-encoding", "content-disposition", "in-reply-to", "references",
    "list-id", "list-unsubscribe", "list-unsubscribe-post", "list-help", "list-post", "sender",
    "autocrypt", "openpgp",
)
OVERSIGNED = frozenset({"from", "to", "cc", "subject", "date", "message-id", "reply-to", "sender",
                        "mime-version", "content-type", "content-transfer-encoding", "in-reply-to",
                        "references"})
INLINE_VERIFY_MAX = 64 * 1024  # larger messages are verified in a thread

_WSP = re.compile(rb"[ \t]+")
_TRAILING_WSP = re.compile(rb"[ \t]+\r\n")
_FOLD = re.compile(rb"\r?\n")


# ------------------------------------------------------------------ message structure
def header_end(msg: bytes | memoryview) -> int:
    """Offset of the empty line ending the header section (len(msg) when there is none)."""
    data = msg if isinstance(msg, bytes) else bytes(msg[: 256 * 1024])
    if data.startswith(b"\r\n"):
        return 0
    i = data.find(b"\r\n\r\n")
    if i >= 0:
        return i + 2
    return len(msg)


@dataclass(frozen=True)
class Field:
    name: str  # lower-cased
    start: int  # offset of the field in the message
    end: int  # offset after its final CRLF
    raw: bytes  # the whole field, name, colon, value and CRLFs

    @property
    def value(self) -> bytes:
        return self.raw.split(b":", 1)[1] if b":" in self.raw else b""


def parse_fields(header: bytes, base: int = 0) -> list[Field]:
    """The header fields of a header section, folded lines kept with their field."""
    fields: list[Field] = []
    pos = 0
    n = len(header)
    while pos < n:
        end = header.find(b"\r\n", pos)
        end = n if end < 0 else end + 2
        # Continuation lines (starting with WSP) belong to the field above.
        while end < n and header[end:end + 1] in (b" ", b"\t"):
            nxt = header.find(b"\r\n", end)
            end = n if nxt < 0 else nxt + 2
        raw = header[pos:end]
        colon = raw.find(b":")
        if colon > 0:
            name = raw[:colon].rstrip(b" \t").decode("ascii", "replace").lower()
            fields.append(Field(name, base + pos, base + end, raw))
        pos = end
    return fields


def relaxed_header(name: str, raw_value: bytes) -> bytes:
    """RFC 6376 §3.4.2: lower-case name, unfolded value, WSP runs as one SP, trimmed."""
    value = _WSP.sub(b" ", _FOLD.sub(b"", raw_value)).strip(b" \t\r\n")
    return name.encode("ascii", "replace") + b":" + value + b"\r\n"


def relaxed_body(body: bytes) -> bytes:
    """RFC 6376 §3.4.4 (with dkimpy's reading of its corner cases)."""
    # Most bodies have neither whitespace before a line end nor a tab or two
    # spaces in a row: a substring test (C, memchr-fast) skips each regex pass
    # over the whole body (~75 µs each for 4 KB) when it could change nothing.
    if b" \r\n" in body or b"\t\r\n" in body:
        body = _TRAILING_WSP.sub(b"\r\n", body)
    if b"\t" in body or b"  " in body:
        body = _WSP.sub(b" ", body)
    end = len(body)
    while body.endswith(b"\r\n", 0, end):
        end -= 2
    body = body + b"\r\n" if end == len(body) else body[: end + 2]
    return b"" if body == b"\r\n" else body


# ------------------------------------------------------------------ signing
def _fold_tags(tags: list[tuple[str, str]], first: int) -> str:
    """`t=v; t=v;` folded below 78 columns: between tags, and inside the long ones
    (h= at its colons, base64 anywhere), where RFC 6376 allows FWS."""
    out = ""
    col = first
    for i, (tag, value) in enumerate(tags):
        last = i == len(tags) - 1
        text = f"{tag}={value}" + ("" if last else ";")
        if col + 1 + len(text) <= 76:
            out += " " + text
            col += 1 + len(text)
            continue
        if tag in ("bh", "b"):
            out += f"\r\n\t{tag}="
            col = 8 + len(tag) + 1
            rest = value + ("" if last else ";")
            while rest:
                room = max(76 - col, 8)
                out += rest[:room]
                rest = rest[room:]
                if rest:
                    out += "\r\n\t"
                    col = 8
            continue
        if tag == "h":
            out += "\r\n\th="
            col = 10
            names = value.split(":")
            for j, name in enumerate(names):
                piece = name + (":" if j < len(names) - 1 else ("" if last else ";"))
                if col + len(piece) > 76:
                    out += "\r\n\t "
                    col = 9
                out += piece
                col += len(piece)
            continue
        out += "\r\n\t" + text
        col = 8 + len(text)
    return out


def _signed_names(fields: list[Field]) -> list[str]:
    present: dict[str, int] = {}
    for f in fields:
        present[f.name] = present.get(f.name, 0) + 1
    names: list[str] = []
    for name in SIGNED:
        n = present.get(name, 0) + (1 if name in OVERSIGNED else 0)
        names += [name] * n
    return names


def _header_hash_input(fields: list[Field], names: Iterable[str]) -> bytes:
    """The signed fields in h= order, each name's instances taken from the bottom up."""
    by_name: dict[str, list[Field]] = {}
    for f in fields:
        by_name.setdefault(f.name, []).append(f)
    out = bytearray()
    for name in names:
        stack = by_name.get(name)
        if stack:
            f = stack.pop()
            out += relaxed_header(name, f.value)
    return bytes(out)


def sign(message: bytes, keys: list[SigningKey], *, now: int) -> bytes:
    """DKIM-Signature fields (each ending CRLF) for `message`, one per key."""
    hend = header_end(message)
    fields = parse_fields(message[:hend])
    body = message[hend + 2:] if hend + 2 <= len(message) else b""
    bh = base64.b64encode(hashlib.sha256(relaxed_body(body)).digest()).decode()
    names = _signed_names(fields)
    signed = _header_hash_input(fields, names)
    out = b""
    for key in keys:
        tags = [("v", "1"), ("a", key.algorithm), ("c", "relaxed/relaxed"), ("d", key.domain),
                ("s", key.selector), ("t", str(now)), ("h", ":".join(names)), ("bh", bh)]
        head = "DKIM-Signature:" + _fold_tags([*tags, ("b", "")], len("DKIM-Signature:"))
        data = signed + relaxed_header("dkim-signature", head.split(":", 1)[1].encode()).rstrip(b"\r\n")
        if key.algorithm == ED25519:
            assert isinstance(key.private, ed25519.Ed25519PrivateKey)
            # RFC 8463 §3: Ed25519 signs the SHA-256 hash, not the data itself.
            sig = key.private.sign(hashlib.sha256(data).digest())
        else:
            assert not isinstance(key.private, ed25519.Ed25519PrivateKey)
            sig = key.private.sign(data, padding.PKCS1v15(), hashes.SHA256())
        b64 = base64.b64encode(sig).decode()
        value = _fold_tags([*tags, ("b", b64)], len("DKIM-Signature:"))
        out += b"DKIM-Signature:" + value.encode() + b"\r\n"
    return out


# ------------------------------------------------------------------ verification
@dataclass
class DKIMResult:
    result: str  # pass, fail, neutral, temperror, permerror (RFC 8601 §2.7.1)
    domain: str = ""
    selector: str = ""
    algorithm: str = ""
    b: str = ""  # the start of b=, to tell signatures apart (RFC 6008)
    reason: str = ""
    identity: str = ""

    def as_dict(self) -> dict[str, str]:
        d = {"result": self.result, "d": self.domain, "s": self.selector, "a": self.algorithm}
        if self.reason:
            d["reason"] = self.reason
        return d


@dataclass
class _Sig:
    index: int
    tags: dict[bytes, bytes] = field(default_factory=dict)
    error: str = ""


def _tags(value: bytes) -> dict[bytes, bytes]:
    from dkim.util import parse_tag_value

    return dict(parse_tag_value(value))


def signatures(fields: list[Field], name: str = "dkim-signature") -> list[_Sig]:
    out = []
    for i, f in enumerate(x for x in fields if x.name == name):
        s = _Sig(i)
        try:
            s.tags = _tags(f.value)
        except Exception as e:  # dkimpy raises its own and builtin errors for bad tag lists
            s.error = f"unparseable signature: {e}"
        out.append(s)
    return out


def key_name(tags: dict[bytes, bytes]) -> str | None:
    s, d = tags.get(b"s"), tags.get(b"d")
    if not s or not d:
        return None
    try:
        return f"{s.decode('ascii').strip()}._domainkey.{d.decode('ascii').strip().rstrip('.')}".lower()
    except UnicodeDecodeError:
        return None


async def fetch_keys(dns: LookupDNS, names: Iterable[str]) -> dict[str, bytes | DNSTempFail | None]:
    """Key records by name, fetched together: bytes, None (no key), or the failure."""
    uniq = sorted(set(names))

    async def one(name: str) -> bytes | DNSTempFail | None:
        try:
            records = await dns.txt(name)
        except DNSTempFail as e:
            return e
        if not records:
            return None
        # Several TXT records at a key name: take one that looks like a key.
        best = next((r for r in records if "p=" in r), records[0])
        return best.encode("latin-1", "replace")

    results = await asyncio.gather(*(one(n) for n in uniq))
    return dict(zip(uniq, results, strict=True))


def _verify_sync(message: bytes, sigs: list[_Sig], keys: dict[str, bytes | DNSTempFail | None]) -> list[DKIMResult]:
    import dkim

    def dnsfunc(name: bytes, timeout: float = 5) -> bytes | None:
        v = keys.get(name.decode("ascii", "replace").rstrip(".").lower())
        return v if isinstance(v, bytes) else None

    d = dkim.DKIM(message, minkey=1024)
    results: list[DKIMResult] = []
    for s in sigs:
        t = s.tags
        r = DKIMResult(
            "neutral",
            domain=t.get(b"d", b"").decode("ascii", "replace").strip().lower(),
            selector=t.get(b"s", b"").decode("ascii", "replace").strip(),
            algorithm=t.get(b"a", b"").decode("ascii", "replace").strip().lower(),
            b=re.sub(rb"\s+", b"", t.get(b"b", b""))[:8].decode("ascii", "replace"),
            identity=t.get(b"i", b"").decode("utf-8", "replace").strip(),
        )
        results.append(r)
        if s.error:
            r.reason = s.error
            continue
        name = key_name(t)
        key = keys.get(name) if name else None
        if isinstance(key, DNSTempFail):
            r.result, r.reason = "temperror", f"key lookup failed: {key}"
            continue
        if key is None:
            r.result, r.reason = "permerror", f"no key at {name}" if name else "no d= or s="
            continue
        try:
            dkim.evaluate_pk(name, key)
        except Exception as e:
            r.result, r.reason = "permerror", f"bad key: {e}"
            continue
        try:
            ok = d.verify(idx=s.index, dnsfunc=dnsfunc)
        except dkim.ValidationError as e:
            r.result, r.reason = "fail", str(e)
            continue
        except dkim.DKIMException as e:
            r.result, r.reason = "neutral", str(e)
            continue
        except Exception as e:  # a malformed message can trip the library anywhere
            r.result, r.reason = "neutral", f"{e.__class__.__name__}: {e}"
            continue
        r.result = "pass" if ok else "fail"
        if not ok:
            r.reason = "signature did not verify"
    return results


async def verify(message: bytes, dns: LookupDNS) -> list[DKIMResult]:
    """One result per DKIM-Signature field, in the order they appear."""
    fields = parse_fields(message[: header_end(message)])
    sigs = signatures(fields)
    if not sigs:
        return []
    keys = await fetch_keys(dns, [n for s in sigs if not s.error and (n := key_name(s.tags))])
    if len(message) > INLINE_VERIFY_MAX:
        return await asyncio.get_running_loop().run_in_executor(None, _verify_sync, message, sigs, keys)
    return _verify_sync(message, sigs, keys)
