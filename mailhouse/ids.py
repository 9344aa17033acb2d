"""Identifiers: queue ids (as in logs and 250 replies) and Message-IDs."""

from __future__ import annotations

import itertools
import secrets
import time

_ALPHABET = "0123456789BCDFGHJKLMNPQRSTVWXYZ"  # no vowels: ids never spell words


_PAIRS = [a + b for a in _ALPHABET for b in _ALPHABET]
_N = len(_ALPHABET)
# The low 20 bits: a counter from a random start, not fresh random bits per id.
# Within one process ids made in one millisecond then never collide, two
# processes (serve and the CLI) collide only if their starts are close, and no
# getrandom() system call is made per message.
_SEQUENCE = itertools.count(secrets.randbits(20))


def new_queue_id() -> str:
    """13 characters, sorting by creation time (ms), unique without coordination."""
    n = (int(time.time() * 1000) << 20) | (next(_SEQUENCE) & 0xFFFFF)
    out = [_ALPHABET[n % _N]]  # 13 = 1 + 6 pairs of base-31 digits
    n //= _N
    for _ in range(6):
        n, r = divmod(n, _N * _N)
        out.append(_PAIRS[r])
    return "".join(reversed(out[1:])) + out[0]


def new_message_id(hostname: str) -> str:
    return f"<{time.strftime('%Y%m%d%H%M%S', time.gmtime())}.{secrets.token_hex(8)}@{hostname}>"
