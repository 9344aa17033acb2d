"""The `[trust]` table of the configuration file, read into typed settings.

`parse_trust` takes the raw TOML table so `mailhouse.config` can call it without
knowing its keys; unknown keys are refused there as everywhere else. Defaults:

    [trust]
    authserv_id      = "<hostname>"   # the name in our Authentication-Results
    dkim_sign        = true           # sign submitted mail of local domains
    dkim_ed25519     = false          # also an Ed25519 signature (RFC 8463)
    dkim_rsa_bits    = 2048
    send_as          = {}             # { "bob@x.org" = ["*@x.org"], "*" = ["noreply@x.org"] }
    received_privacy = false          # submission: no client address, HELO or login in Received
    inbound_checks   = true           # SPF, DKIM, ARC, DMARC on the smtp listener
    trusted_networks = []             # clients not checked (nor rate-limited), e.g. ["10.0.0.0/8"]
    dmarc_enforce    = true           # p=reject refused (550 5.7.1), p=quarantine to Junk
    spf_fail         = "junk"         # an SPF fail DMARC did not decide: "accept", "junk", "reject"
    greylisting      = false
    greylist_delay   = "5m"
    greylist_expire  = "4h"
    greylist_pass    = "36d"
    connections_per_minute = 600      # new connections per client address (0: no limit)
    connection_exempt = []            # networks without that limit

    [trust.rate_limits]               # per authenticated user; 0: no limit (451 4.7.1 past one)
    messages_per_hour   = 200
    messages_per_day    = 1000
    recipients_per_hour = 500
    recipients_per_day  = 2000
    users = { "news@x.org" = { messages_per_day = 20000 } }

    [trust.lockout]                   # failed logins, all protocols together
    failures         = 10             # from one address within `window`...
    window           = "10m"
    cooldown         = "15m"          # ...lock it out this long, doubling on each repeat
    max_cooldown     = "24h"
    account_failures = 100            # then the account only admits addresses it knows
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

SPF_FAIL_ACTIONS = ("accept", "junk", "reject")


@dataclass
class RateLimits:
    """Per authenticated user; 0 turns a limit off."""

    messages_per_hour: int = 200
    messages_per_day: int = 1000
    recipients_per_hour: int = 500
    recipients_per_day: int = 2000

    def any(self) -> bool:
        return any((self.messages_per_hour, self.messages_per_day, self.recipients_per_hour,
                    self.recipients_per_day))


@dataclass
class LockoutPolicy:
    failures: int = 10  # failed logins from one address within `window`...
    window: float = 600.0
    cooldown: float = 900.0  # ...lock it out this long, doubling on each repeat
    max_cooldown: float = 86400.0
    # Failures on one account from all addresses together: past this, the account
    # only accepts logins from addresses it has succeeded from before (a guesser
    # spread over many addresses is held off; its owner is not).
    account_failures: int = 100


@dataclass
class TrustSettings:
    authserv_id: str | None = None  # None: the server's hostname
    # Outbound
    dkim_sign: bool = True
    dkim_ed25519: bool = False  # add an Ed25519 signature (RFC 8463) next to RSA
    dkim_rsa_bits: int = 2048
    send_as: dict[str, list[str]] = field(default_factory=dict)  # user (or "*") -> address patterns
    rate_limits: RateLimits = field(default_factory=RateLimits)
    user_limits: dict[str, RateLimits] = field(default_factory=dict)
    received_privacy: bool = False  # submission: no client address or login in our Received field
    # Inbound
    inbound_checks: bool = True
    trusted_networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = field(default_factory=list)
    dmarc_enforce: bool = True  # apply p=reject / p=quarantine
    spf_fail: str = "junk"  # an SPF "fail" that DMARC did not already decide
    greylisting: bool = False
    greylist_delay: float = 300.0
    greylist_expire: float = 4 * 3600.0  # a first attempt not retried within this is forgotten
    greylist_pass: float = 36 * 86400.0  # a triplet that passed once stays allowed this long
    # Abuse
    lockout: LockoutPolicy = field(default_factory=LockoutPolicy)
    # New connections per client address (trusted_networks are exempt too); 0: no limit.
    connections_per_minute: int = 600
    connection_exempt: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = field(default_factory=list)


_TOP_KEYS = {
    "authserv_id", "dkim_sign", "dkim_ed25519", "dkim_rsa_bits", "send_as", "rate_limits",
    "received_privacy", "inbound_checks", "trusted_networks", "dmarc_enforce", "spf_fail", "greylisting",
    "greylist_delay", "greylist_expire", "greylist_pass", "lockout", "connections_per_minute",
    "connection_exempt",
}
_LIMIT_KEYS = {"messages_per_hour", "messages_per_day", "recipients_per_hour", "recipients_per_day"}
_LOCKOUT_KEYS = {"failures", "window", "cooldown", "max_cooldown", "account_failures"}


def parse_trust(table: dict[str, Any]) -> TrustSettings:
    """`[trust]` → TrustSettings; raises mailhouse.config.ConfigError with a one-line reason."""
    # Imported here: mailhouse.config calls this function, so a top-level import would be a cycle.
    from ..config import ConfigError, parse_duration
    from ..config import _check_keys as check_keys

    if not isinstance(table, dict):
        raise ConfigError("[trust] must be a table")

    def boolean(t: dict[str, Any], key: str, default: bool, where: str) -> bool:
        v = t.get(key, default)
        if not isinstance(v, bool):
            raise ConfigError(f"{where}.{key}: expected true or false")
        return v

    def count(t: dict[str, Any], key: str, default: int, where: str) -> int:
        v = t.get(key, default)
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise ConfigError(f"{where}.{key}: expected a whole number, 0 or more")
        return v

    def networks(t: dict[str, Any], key: str, where: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        v = t.get(key, [])
        if not isinstance(v, list):
            raise ConfigError(f"{where}.{key}: expected a list of networks like \"192.0.2.0/24\"")
        out: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for n in v:
            try:
                out.append(ipaddress.ip_network(str(n), strict=False))
            except ValueError:
                raise ConfigError(f"{where}.{key}: {n!r} is not a network like \"192.0.2.0/24\"") from None
        return out

    def limits(t: Any, where: str, base: RateLimits) -> RateLimits:
        if not isinstance(t, dict):
            raise ConfigError(f"{where} must be a table")
        check_keys(t, _LIMIT_KEYS | ({"users"} if where == "trust.rate_limits" else set()), where)
        return RateLimits(**{k: count(t, k, getattr(base, k), where) for k in _LIMIT_KEYS})

    t = table
    check_keys(t, _TOP_KEYS, "[trust]")
    s = TrustSettings()
    aid = t.get("authserv_id")
    if aid is not None:
        if not isinstance(aid, str) or not aid or any(c in aid for c in " ;()\"\\"):
            raise ConfigError("trust.authserv_id: expected a host name")
        s.authserv_id = aid
    s.dkim_sign = boolean(t, "dkim_sign", s.dkim_sign, "trust")
    s.dkim_ed25519 = boolean(t, "dkim_ed25519", s.dkim_ed25519, "trust")
    s.dkim_rsa_bits = count(t, "dkim_rsa_bits", s.dkim_rsa_bits, "trust")
    if s.dkim_rsa_bits not in (1024, 2048, 3072, 4096):
        raise ConfigError("trust.dkim_rsa_bits: expected 1024, 2048, 3072 or 4096")
    send_as = t.get("send_as", {})
    if not isinstance(send_as, dict) or not all(
        isinstance(v, list) and all(isinstance(p, str) for p in v) for v in send_as.values()
    ):
        raise ConfigError('trust.send_as: expected a table like { "bob@example.org" = ["*@example.org"] }')
    s.send_as = {k.lower(): [p.lower() for p in v] for k, v in send_as.items()}
    rl = t.get("rate_limits", {})
    s.rate_limits = limits(rl, "trust.rate_limits", RateLimits())
    users = rl.get("users", {})
    if not isinstance(users, dict):
        raise ConfigError("trust.rate_limits.users must be a table of tables")
    s.user_limits = {
        u.lower(): limits(v, f"trust.rate_limits.users.{u}", s.rate_limits) for u, v in users.items()
    }
    s.received_privacy = boolean(t, "received_privacy", s.received_privacy, "trust")
    s.inbound_checks = boolean(t, "inbound_checks", s.inbound_checks, "trust")
    s.trusted_networks = networks(t, "trusted_networks", "trust")
    s.dmarc_enforce = boolean(t, "dmarc_enforce", s.dmarc_enforce, "trust")
    spf_fail = t.get("spf_fail", s.spf_fail)
    if spf_fail not in SPF_FAIL_ACTIONS:
        raise ConfigError(f"trust.spf_fail: expected one of {', '.join(SPF_FAIL_ACTIONS)}; got {spf_fail!r}")
    s.spf_fail = spf_fail
    s.greylisting = boolean(t, "greylisting", s.greylisting, "trust")
    for k in ("greylist_delay", "greylist_expire", "greylist_pass"):
        if k in t:
            setattr(s, k, parse_duration(t[k], f"trust.{k}"))
    lo = t.get("lockout", {})
    if not isinstance(lo, dict):
        raise ConfigError("[trust.lockout] must be a table")
    check_keys(lo, _LOCKOUT_KEYS, "trust.lockout")
    p = LockoutPolicy()
    p.failures = count(lo, "failures", p.failures, "trust.lockout")
    p.account_failures = count(lo, "account_failures", p.account_failures, "trust.lockout")
    for k in ("window", "cooldown", "max_cooldown"):
        if k in lo:
            setattr(p, k, parse_duration(lo[k], f"trust.lockout.{k}"))
    s.lockout = p
    s.connections_per_minute = count(t, "connections_per_minute", s.connections_per_minute, "trust")
    s.connection_exempt = networks(t, "connection_exempt", "trust")
    return s
