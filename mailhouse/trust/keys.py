"""DKIM signing keys: made per domain on first need, kept in the store.

RSA-2048 always (every verifier knows it); Ed25519 (RFC 8463) in addition when
`[trust] dkim_ed25519` is on, since a verifier that does not know it ignores
that signature and uses the RSA one.
"""

from __future__ import annotations

import asyncio
import base64
import time
from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from ..store.base import Store

RSA = "rsa-sha256"
ED25519 = "ed25519-sha256"

PrivateKey = rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey


@dataclass(frozen=True)
class SigningKey:
    domain: str
    selector: str
    algorithm: str
    private: PrivateKey
    created: float

    @property
    def record_name(self) -> str:
        return f"{self.selector}._domainkey.{self.domain}"

    def public_record(self) -> str:
        """The TXT record value the domain publishes for this key (RFC 6376 §3.6.1)."""
        pub = self.private.public_key()
        if isinstance(pub, ed25519.Ed25519PublicKey):
            raw = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
            return f"v=DKIM1; k=ed25519; p={base64.b64encode(raw).decode()}"
        der = pub.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        return f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode()}"


def generate_pem(algorithm: str, rsa_bits: int = 2048) -> str:
    key: PrivateKey
    if algorithm == ED25519:
        key = ed25519.Ed25519PrivateKey.generate()
    else:
        key = rsa.generate_private_key(public_exponent=65537, key_size=rsa_bits)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def load_key(domain: str, selector: str, algorithm: str, pem: str, created: float) -> SigningKey:
    key = serialization.load_pem_private_key(pem.encode(), password=None)
    if not isinstance(key, rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey):
        raise ValueError(f"DKIM key {selector} of {domain} is neither RSA nor Ed25519")
    return SigningKey(domain, selector, algorithm, key, created)


def new_selector(algorithm: str, when: float, attempt: int = 0) -> str:
    """`mh202611r` / `mh202611e`: dated, so a later key gets a new name (rotation)."""
    stamp = time.strftime("%Y%m", time.gmtime(when))
    return f"mh{stamp}{'e' if algorithm == ED25519 else 'r'}{attempt or ''}"


class KeyRing:
    """The keys of every local domain, loaded once and made when missing."""

    def __init__(self, store: Store, *, rsa_bits: int = 2048) -> None:
        self.store = store
        self.rsa_bits = rsa_bits
        self._cache: dict[str, list[SigningKey]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def keys(self, domain: str, *, ed25519: bool = False, create: bool = True) -> list[SigningKey]:
        """The domain's keys to sign with: RSA first, then Ed25519 if asked for."""
        domain = domain.lower().rstrip(".")
        wanted = [RSA, ED25519] if ed25519 else [RSA]
        have = self._cache.get(domain)
        if have is not None and all(any(k.algorithm == a for k in have) for a in wanted):
            return [k for k in have if k.algorithm in wanted]
        lock = self._locks.setdefault(domain, asyncio.Lock())
        async with lock:  # one maker per domain in this process; the store settles other processes
            have = await self._load(domain)
            if create:
                for alg in wanted:
                    if not any(k.algorithm == alg for k in have):
                        await self._make(domain, alg)
                        have = await self._load(domain)
            self._cache[domain] = have
        return [k for k in have if k.algorithm in wanted]

    async def _load(self, domain: str) -> list[SigningKey]:
        return [load_key(domain, s, a, pem, t) for s, a, pem, t in await self.store.dkim_keys(domain)]

    async def _make(self, domain: str, algorithm: str) -> None:
        loop = asyncio.get_running_loop()
        # RSA key generation takes tens of milliseconds: not on the event loop.
        pem = await loop.run_in_executor(None, generate_pem, algorithm, self.rsa_bits)
        now = time.time()
        for attempt in range(10):
            if await self.store.add_dkim_key(domain, new_selector(algorithm, now, attempt), algorithm, pem):
                return
            if any(k.algorithm == algorithm for k in await self._load(domain)):
                return  # another process made one first: use that
            # else the selector was taken by a retired key: try the next name
        raise RuntimeError(f"could not store a DKIM key for {domain}")
