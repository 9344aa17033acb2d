"""Password hashing: argon2id through argon2-cffi.

Verification costs tens of milliseconds of CPU by design, so callers run it off
the event loop (`verify_async`) and rate-limit before calling it.
"""

from __future__ import annotations

import asyncio
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

_hasher = PasswordHasher()  # argon2id with the library's RFC 9106 "low memory" profile

# A real hash of a random password: verifying against it when the account does not
# exist costs the same time, so response timing does not reveal which users exist.
# Made on first use: hashing costs ~0.3 s, too much for every CLI start.
_dummy_hash: str | None = None


def _dummy() -> str:
    global _dummy_hash
    if _dummy_hash is None:
        _dummy_hash = _hasher.hash(secrets.token_hex(16))
    return _dummy_hash


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    try:
        return _hasher.verify(password_hash or _dummy(), password) and password_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


async def verify_async(password_hash: str | None, password: str) -> bool:
    return await asyncio.get_running_loop().run_in_executor(None, verify_password, password_hash, password)


def generate_password() -> str:
    """A password to print once: 20 characters, easy to copy (no ambiguous symbols)."""
    alphabet = "abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"
    return "".join(secrets.choice(alphabet) for _ in range(20))
