"""Network listeners; what several of them share."""

from __future__ import annotations

import functools
import ipaddress


def peer_ip(peer: object) -> str:
    """The client's address from a transport's peername; an IPv4 client of a
    dual-stack socket ("::ffff:192.0.2.1") as the IPv4 address it is, so limits,
    trusted networks and logs see one form whatever socket accepted it."""
    if not isinstance(peer, tuple) or not peer:
        return "unknown"
    ip = str(peer[0])
    return ip[7:] if ip.startswith("::ffff:") and "." in ip else ip


@functools.lru_cache(maxsize=4096)
def is_loopback(ip: str) -> bool:
    # Per connection: parsing the address costs more than the rest of the setup.
    try:
        return ipaddress.ip_address(ip).is_loopback
    except ValueError:
        return False
