"""Identifiers: queue ids (as in logs and 250 replies) and Message-IDs."""

from __future__ import annotations

import secrets
import time

_ALPHABET = "0123456789BCDFGHJKLMNPQRSTVWXYZ"  # no vowels: ids never spell words


def new_queue_id() -> str:
    """13 characters, sorting by creation time (ms), unique without coordination."""
    n = (int(time.time() * 1000) << 20) | secrets.randbits(20)
    out = []
    for _ in range(13):
        n, r = divmod(n, len(_ALPHABET))
        out.append(_ALPHABET[r])
    return "".join(reversed(out))


def new_message_id(hostname: str) -> str:
    return f"<{time.strftime('%Y%m%d%H%M%S', time.gmtime())}.{secrets.token_hex(8)}@{hostname}>"
