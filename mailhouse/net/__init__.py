"""Network listeners; what several of them share."""

from __future__ import annotations

import functools
import ipaddress


@functools.lru_cache(maxsize=4096)
def is_loopback(ip: str) -> bool:
    # Per connection: parsing the address costs more than the rest of the setup.
    try:
        return ipaddress.ip_address(ip).is_loopback
    except ValueError:
        return False
