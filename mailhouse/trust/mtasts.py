"""MTA-STS (RFC 8461): a recipient domain's published promise of TLS to its MX hosts.

A domain announces a policy with a TXT record at `_mta-sts.<domain>`
(`v=STSv1; id=...`) and serves it at
`https://mta-sts.<domain>/.well-known/mta-sts.txt`:

    version: STSv1
    mode: enforce            # or testing, or none
    mx: mail.example.org
    mx: *.example.net        # a wildcard stands for exactly one leftmost label
    max_age: 604800

Fetching follows §3.3: HTTPS with a certificate valid for `mta-sts.<domain>`
(PKIX, `[tls] ca_file` or the system's CAs), no redirects, status 200,
`text/plain`, at most 64 KiB, within `[mta_sts] timeout`. The address of
`mta-sts.<domain>` comes from mailhouse's own resolver, so `[dns] nameservers`
applies here as everywhere.

Caching follows §5.1: a policy is kept (in memory, and as JSON under
`data_dir/mta-sts/` so a restart keeps enforcing it) until `max_age` runs out.
On each use the TXT record is read again; a different id means a new policy to
fetch; the same id, a cached policy younger than a day (or than half its
max_age) is used as is, an older one is refreshed. Whenever a fetch or the
TXT lookup fails, or the TXT record disappears, an unexpired cached policy stays
in force: an attacker who blocks DNS or HTTPS must not switch enforcement off.
A domain withdraws its policy by publishing `mode: none`.

What the policy means for delivery is applied in `mailhouse.trust.tlspolicy`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import re
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from .. import log
from ..dns.resolver import DNSPermanentError, DNSTemporaryError

logger = log.get("mta-sts")

WELL_KNOWN = "/.well-known/mta-sts.txt"
MAX_POLICY = 64 * 1024  # RFC 8461 §3.3: senders may limit the body to 64 KiB
MAX_HEAD = 16 * 1024
MAX_AGE_LIMIT = 31_557_600  # RFC 8461 §3.2: one year
REFRESH_AFTER = 86_400.0  # refresh a still-valid policy at most daily (§5.1 "proactively")
RETRY_FAILED_FETCH = 60.0  # a failed fetch for the same id is not retried sooner than this
MODES = ("enforce", "testing", "none")

_ID = re.compile(r"^[A-Za-z0-9]{1,32}$")
_FIELD_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")
_SAFE_FILE = re.compile(r"^[a-z0-9][a-z0-9.-]{0,252}$")


class PolicyError(ValueError):
    """A policy text that is not a valid STSv1 policy."""


class FetchError(Exception):
    """The policy could not be fetched (network, TLS, HTTP, size, media type)."""


class STSDNS(Protocol):
    """What MTA-STS asks of DNS (mailhouse.dns.resolver.Resolver provides it)."""

    async def txt(self, name: str) -> list[str]: ...

    async def addresses(self, host: str) -> list[str]: ...


# ---------------------------------------------------------------------- parsing
def parse_txt(records: list[str]) -> str | None:
    """The policy id of the `_mta-sts` TXT records, or None when there is no valid
    one (RFC 8461 §3.1: exactly one record starting with "v=STSv1;")."""
    candidates = [r for r in records if r.startswith("v=STSv1;") or r == "v=STSv1"]
    if len(candidates) != 1:
        return None
    fields: dict[str, str] = {}
    for part in candidates[0].split(";")[1:]:
        part = part.strip(" \t")
        if not part:
            continue
        key, eq, value = part.partition("=")
        if not eq or not key or not _FIELD_NAME.match(key):
            return None
        fields.setdefault(key, value)
    sts_id = fields.get("id")
    return sts_id if sts_id is not None and _ID.match(sts_id) else None


def mx_matches(pattern: str, host: str) -> bool:
    """An `mx:` pattern against an MX host name (RFC 8461 §4.1): exact, or
    `*.example.org` for exactly one more leftmost label; case and a final dot ignored."""
    pattern = pattern.strip().lower().rstrip(".")
    host = host.strip().lower().rstrip(".")
    if not pattern or not host:
        return False
    if pattern.startswith("*."):
        first, _, rest = host.partition(".")
        return bool(first) and rest == pattern[2:]
    return pattern == host


@dataclass(frozen=True)
class Policy:
    mode: str  # enforce / testing / none
    mx: tuple[str, ...]
    max_age: int  # seconds

    def matches(self, host: str) -> bool:
        return any(mx_matches(p, host) for p in self.mx)

    def to_json(self) -> dict[str, Any]:
        return {"mode": self.mode, "mx": list(self.mx), "max_age": self.max_age}


def parse_policy(text: str) -> Policy:
    """The policy body (RFC 8461 §3.2): `key: value` lines (CRLF or LF); version,
    mode and max_age are required, mx too unless mode is none; unknown keys are
    ignored; of a repeated key other than mx, the first counts."""
    fields: dict[str, str] = {}
    mx: list[str] = []
    for raw in text.replace("\r\n", "\n").split("\n"):
        line = raw.strip(" \t")
        if not line:
            continue
        key, colon, value = line.partition(":")
        key, value = key.strip(" \t"), value.strip(" \t")
        if not colon or not _FIELD_NAME.match(key):
            raise PolicyError(f"not a policy line: {raw[:80]!r}")
        if key == "mx":
            if not re.match(r"^(\*\.)?[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?\.?$", value):
                raise PolicyError(f"mx: not a host name or *.pattern: {value[:80]!r}")
            mx.append(value.lower().rstrip("."))
        else:
            fields.setdefault(key, value)
    if fields.get("version") != "STSv1":
        raise PolicyError(f"version: expected STSv1, got {fields.get('version')!r}")
    mode = fields.get("mode")
    if mode not in MODES:
        raise PolicyError(f"mode: expected enforce, testing or none; got {mode!r}")
    age = fields.get("max_age", "")
    if not re.match(r"^[0-9]{1,10}$", age):
        raise PolicyError(f"max_age: expected a number of seconds, got {age!r}")
    if not mx and mode != "none":
        raise PolicyError("no mx: a policy that is not mode none must list its MX hosts")
    return Policy(mode, tuple(mx), min(int(age), MAX_AGE_LIMIT))


# ---------------------------------------------------------------------- fetching
async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = b""
        while True:
            size_line = await reader.readuntil(b"\r\n")
            try:
                size = int(size_line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise FetchError("bad chunked encoding") from None
            if size == 0:
                while (await reader.readuntil(b"\r\n")) != b"\r\n":  # trailers
                    pass
                return body
            if len(body) + size > MAX_POLICY:
                raise FetchError(f"policy larger than {MAX_POLICY} bytes")
            body += await reader.readexactly(size)
            if await reader.readexactly(2) != b"\r\n":
                raise FetchError("bad chunked encoding")
    if "content-length" in headers:
        try:
            length = int(headers["content-length"])
        except ValueError:
            raise FetchError("bad Content-Length") from None
        if length > MAX_POLICY:
            raise FetchError(f"policy larger than {MAX_POLICY} bytes")
        return await reader.readexactly(length)
    body = await reader.read(MAX_POLICY + 1)
    while body and len(body) <= MAX_POLICY:
        more = await reader.read(MAX_POLICY + 1 - len(body))
        if not more:
            break
        body += more
    if len(body) > MAX_POLICY:
        raise FetchError(f"policy larger than {MAX_POLICY} bytes")
    return body


async def http_get_policy(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str, port: int = 443
) -> str:
    """One GET of the well-known policy over an open (TLS) connection."""
    authority = host if port == 443 else f"{host}:{port}"  # RFC 9110 §7.2: the port unless the default
    writer.write(
        f"GET {WELL_KNOWN} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: mailhouse\r\nAccept: text/plain\r\n"
        f"Connection: close\r\n\r\n".encode("ascii")
    )
    await writer.drain()
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.LimitOverrunError:
        raise FetchError("HTTP response header too large") from None
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise FetchError(f"not an HTTP response: {lines[0][:80]!r}")
    status = int(parts[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    if 300 <= status < 400:
        # §3.3: a redirect could move the policy off the domain's own HTTPS name.
        raise FetchError(f"HTTP {status} redirect to {headers.get('location', '?')}: redirects are not followed")
    if status != 200:
        raise FetchError(f"HTTP {status}")
    media = headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media != "text/plain":
        raise FetchError(f"media type {media or 'missing'}, not text/plain")
    body = await _read_body(reader, headers)
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        raise FetchError("policy is not UTF-8 text") from None


# ---------------------------------------------------------------------- the cache
@dataclass(frozen=True)
class CachedPolicy:
    domain: str
    id: str
    policy: Policy
    fetched: float  # time.time() of the fetch

    @property
    def expires(self) -> float:
        return self.fetched + self.policy.max_age

    def to_json(self) -> dict[str, Any]:
        return {"domain": self.domain, "id": self.id, "fetched": self.fetched, **self.policy.to_json()}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> CachedPolicy:
        policy = Policy(str(d["mode"]), tuple(str(m) for m in d["mx"]), int(d["max_age"]))
        if policy.mode not in MODES:
            raise ValueError(f"bad mode {policy.mode!r}")
        return cls(str(d["domain"]), str(d["id"]), policy, float(d["fetched"]))


@dataclass(frozen=True)
class Lookup:
    """The policy in force for a domain (None: none) and how we know, for the journey."""

    policy: Policy | None
    id: str | None = None
    how: str = "none"  # "none", "fetched", "cached", or "cached (...why not fresh)"


Fetcher = Callable[[str], Awaitable[str]]


class MTASTS:
    def __init__(
        self,
        dns: STSDNS,
        *,
        directory: Path | None = None,
        ca_file: Path | None = None,
        port: int = 443,
        timeout: float = 10.0,
        fetcher: Fetcher | None = None,
    ) -> None:
        self.dns = dns
        self.directory = directory
        self.ca_file = ca_file
        self.port = port
        self.timeout = timeout
        self._fetch = fetcher or self.fetch
        self._cache: dict[str, CachedPolicy] = {}
        self._looked_on_disk: set[str] = set()
        self._failed: dict[str, tuple[str, float, str]] = {}  # domain -> (id, when, why)
        self._inflight: dict[str, asyncio.Future[Lookup]] = {}
        self._ctx: ssl.SSLContext | None = None

    # -- the HTTPS fetch -----------------------------------------------------
    def _context(self) -> ssl.SSLContext:
        if self._ctx is None:
            ctx = ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            self._ctx = ctx
        return self._ctx

    async def fetch(self, domain: str) -> str:
        """The policy text of `domain`, fetched as §3.3 says; raises FetchError."""
        host = f"mta-sts.{domain}"
        try:
            async with asyncio.timeout(self.timeout):
                try:
                    addresses = await self.dns.addresses(host)
                except (DNSTemporaryError, DNSPermanentError) as e:
                    raise FetchError(str(e)) from None
                if not addresses:
                    raise FetchError(f"{host} has no address")
                errors: list[str] = []
                for address in addresses:
                    try:
                        reader, writer = await asyncio.open_connection(
                            address, self.port, ssl=self._context(), server_hostname=host, limit=MAX_HEAD)
                    except (OSError, ssl.SSLError) as e:
                        errors.append(f"{host}[{address}]:{self.port}: {e}")
                        continue
                    try:
                        return await http_get_policy(reader, writer, host, self.port)
                    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError, ssl.SSLError) as e:
                        raise FetchError(f"{host}[{address}]: {e.__class__.__name__}: {e}") from None
                    finally:
                        writer.close()
                        with contextlib.suppress(Exception):
                            await writer.wait_closed()
                raise FetchError("; ".join(errors))
        except TimeoutError:
            raise FetchError(f"{host}: no policy within {self.timeout:g}s") from None

    # -- persistence -----------------------------------------------------------
    def _path(self, domain: str) -> Path | None:
        if self.directory is None:
            return None
        name = domain if _SAFE_FILE.match(domain) else hashlib.sha256(domain.encode()).hexdigest()
        return self.directory / f"{name}.json"

    def _load(self, domain: str) -> CachedPolicy | None:
        path = self._path(domain)
        if path is None or not path.exists():
            return None
        try:
            cached = CachedPolicy.from_json(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, KeyError, TypeError) as e:
            logger.warning("ignoring unreadable cached MTA-STS policy %s: %s", path, e)
            return None
        return cached if cached.domain == domain else None

    def _save(self, cached: CachedPolicy) -> None:
        path = self._path(cached.domain)
        if path is None:
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(cached.to_json()), encoding="utf-8")
            os.replace(tmp, path)
        except OSError as e:  # the in-memory copy still applies until a restart
            logger.warning("cannot save MTA-STS policy of %s to %s: %s", cached.domain, path, e)

    def cached(self, domain: str, now: float | None = None) -> CachedPolicy | None:
        """The unexpired cached policy of a domain, from memory or disk."""
        now = time.time() if now is None else now
        got = self._cache.get(domain)
        if got is None and domain not in self._looked_on_disk:
            self._looked_on_disk.add(domain)
            got = self._load(domain)
            if got is not None:
                self._cache[domain] = got
        if got is not None and got.expires <= now:
            return None
        return got

    # -- the lookup --------------------------------------------------------------
    async def policy(self, domain: str) -> Lookup:
        """The policy in force for `domain`; never raises for DNS or HTTPS trouble.

        Concurrent deliveries to one domain share a single lookup.
        """
        domain = domain.lower().rstrip(".")
        fut = self._inflight.get(domain)
        if fut is None:
            fut = asyncio.ensure_future(self._lookup(domain))
            self._inflight[domain] = fut
            fut.add_done_callback(lambda _: self._inflight.pop(domain, None))
        return await asyncio.shield(fut)

    async def _lookup(self, domain: str) -> Lookup:
        now = time.time()
        cached = self.cached(domain, now)
        try:
            sts_id = parse_txt(await self.dns.txt(f"_mta-sts.{domain}"))
        except DNSTemporaryError as e:
            return self._fallback(cached, f"TXT lookup failed: {e}")
        if sts_id is None:
            # §3.1/§5.1: a removed TXT record does not end a cached policy; mode none does.
            return self._fallback(cached, "no TXT record")
        if cached is not None and cached.id == sts_id and now - cached.fetched < min(
                REFRESH_AFTER, cached.policy.max_age / 2):
            return Lookup(cached.policy, cached.id, "cached")
        failed = self._failed.get(domain)
        if failed is not None and failed[0] == sts_id and now - failed[1] < RETRY_FAILED_FETCH:
            return self._fallback(cached, f"fetch failed: {failed[2]}")
        try:
            policy = parse_policy(await self._fetch(domain))
        except (FetchError, PolicyError) as e:
            self._failed[domain] = (sts_id, now, str(e))
            logger.warning("MTA-STS policy of %s (id %s) not fetched: %s", domain, sts_id, e)
            return self._fallback(cached, f"fetch failed: {e}")
        self._failed.pop(domain, None)
        fresh = CachedPolicy(domain, sts_id, policy, now)
        self._cache[domain] = fresh
        await asyncio.get_running_loop().run_in_executor(None, self._save, fresh)
        logger.info("MTA-STS policy of %s (id %s): mode %s, mx %s, max_age %d", domain, sts_id, policy.mode,
                    ", ".join(policy.mx) or "-", policy.max_age)
        return Lookup(policy, sts_id, "fetched")

    @staticmethod
    def _fallback(cached: CachedPolicy | None, why: str) -> Lookup:
        if cached is None:
            # §5: with no usable policy, deliver as if the domain had none.
            return Lookup(None, None, "none" if why == "no TXT record" else f"none ({why})")
        return Lookup(cached.policy, cached.id, f"cached ({why})")
