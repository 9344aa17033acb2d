"""The configuration file (TOML) of INTERFACE.md, read into typed settings.

Every key of the interface is read here; unknown keys are refused so a typo never
silently turns a feature off.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .trust.settings import TrustSettings, parse_trust

LISTENER_NAMES = (
    "smtp",
    "submission",
    "submissions",
    "imap",
    "imaps",
    "pop3",
    "pop3s",
    "http",
    "https",
)

DEV_LISTEN = {
    "smtp": "127.0.0.1:2525",
    "submission": "127.0.0.1:2587",
    "submissions": "127.0.0.1:2465",
    "imap": "127.0.0.1:2143",
    "imaps": "127.0.0.1:2993",
    "pop3": "127.0.0.1:2110",
    "pop3s": "127.0.0.1:2995",
    "http": "127.0.0.1:8025",
    "https": "127.0.0.1:8443",
}


class ConfigError(Exception):
    """A configuration problem, worded as a one-line message for the user."""


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


def parse_duration(value: str | int | float, key: str = "duration") -> float:
    """`"30m"` → 1800.0 seconds; a bare number means seconds; `"0"` is zero."""
    if isinstance(value, bool):
        raise ConfigError(f"{key}: expected a duration like \"30m\", got {value!r}")
    if isinstance(value, int | float):
        return float(value)
    m = _DURATION.match(str(value))
    if not m:
        raise ConfigError(f"{key}: expected a duration like \"30s\", \"30m\", \"4h\", \"5d\"; got {value!r}")
    return float(m.group(1)) * _UNITS[m.group(2) or "s"]


def parse_size(value: str | int, key: str = "size") -> int:
    """`"25MB"`/`"25M"`/`26214400` → bytes (binary multiples: mail limits are quoted so)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    m = re.match(r"^\s*(\d+)\s*([kmg]i?b?)?\s*$", str(value), re.I)
    if not m:
        raise ConfigError(f"{key}: expected a size like \"25MB\", got {value!r}")
    mult = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[(m.group(2) or "")[:1].lower()]
    return int(m.group(1)) * mult


def parse_hostport(value: str, key: str) -> tuple[str, int]:
    """`"127.0.0.1:2525"`, `"[::1]:2525"`, `":2525"` (all addresses) → (host, port)."""
    if not isinstance(value, str):
        raise ConfigError(f"{key}: expected \"host:port\", got {value!r}")
    m = re.match(r"^\[([0-9a-fA-F:.]+)\]:(\d+)$", value) or re.match(r"^([^:\[\]]*):(\d+)$", value)
    if not m:
        raise ConfigError(f"{key}: expected \"host:port\", got {value!r}")
    port = int(m.group(2))
    if not 0 <= port <= 65535:
        raise ConfigError(f"{key}: port {port} out of range")
    return m.group(1), port


@dataclass
class Limits:
    """SMTP limits; the defaults are what a production server ships with."""

    max_message_size: int = 25 * 1024 * 1024
    max_recipients: int = 100
    command_timeout: float = 300.0
    data_timeout: float = 600.0
    max_errors: int = 20
    max_connections: int = 1000
    max_connections_per_ip: int = 50


@dataclass
class QueueSettings:
    retry_interval: float = 1800.0
    max_lifetime: float = 5 * 86400.0
    delay_warning: float = 4 * 3600.0
    # Beyond INTERFACE.md: limits and timeouts of the outbound SMTP client.
    connections_per_destination: int = 20
    max_connections: int = 100
    connect_timeout: float = 30.0
    reply_timeout: float | None = None  # caps RFC 5321 §4.5.3.2's per-phase waits (5/10 min)
    smtp_port: int = 25  # the port of MX hosts; a test world on one machine changes it
    idle_timeout: float = 5.0  # an idle outbound connection is kept this long for the next message
    # How often the queue managers look at the store for changes no one told them
    # of (the CLI tells a running serve through its control socket).
    poll_interval: float = 1.0


TLS_POLICIES = ("opportunistic", "require", "verify")


@dataclass
class MTASTSSettings:
    """`[mta_sts]`: applying recipient domains' MTA-STS policies (RFC 8461) outbound."""

    enabled: bool = True
    port: int = 443  # where policies are fetched; only a test world on one machine changes it
    timeout: float = 10.0  # the whole policy fetch: connect, TLS, request, body


@dataclass
class Config:
    hostname: str = "localhost"
    domains: list[str] = field(default_factory=lambda: ["localhost"])
    data_dir: Path = field(default_factory=lambda: Path("mailhouse-data").resolve())
    listen: dict[str, tuple[str, int]] = field(default_factory=dict)
    tls_cert: Path | None = None
    tls_key: Path | None = None
    # CAs that outbound verification trusts (tls_policy "verify", MTA-STS and its
    # policy fetch) instead of the system's; None: the system's.
    tls_ca_file: Path | None = None
    storage_url: str = "sqlite"
    queue: QueueSettings = field(default_factory=QueueSettings)
    nameservers: list[tuple[str, int]] | None = None
    # The nameservers validate DNSSEC: believe the AD bit of their answers (DANE needs it).
    dns_trust_ad: bool = False
    routes: dict[str, tuple[str, int]] = field(default_factory=dict)
    tls_policy: dict[str, str] = field(default_factory=dict)  # next-hop domain -> TLS_POLICIES
    mta_sts: MTASTSSettings = field(default_factory=MTASTSSettings)
    limits: Limits = field(default_factory=Limits)
    # IMAP/POP3 logins without TLS from non-loopback clients (loopback is always allowed).
    allow_plaintext_auth: bool = False
    trust: TrustSettings = field(default_factory=TrustSettings)
    # Processes serving SMTP, IMAP and POP3 beside the main one (which keeps the
    # queue, HTTP and the notices between them); 0: everything in one process.
    workers: int = 0
    path: Path | None = None  # the file this came from; None: development defaults

    @property
    def config_dir(self) -> Path:
        return self.path.parent if self.path else Path.cwd()


def _nameserver(value: Any) -> tuple[str, int]:
    """A resolver address: `"127.0.0.1"`, `"127.0.0.1:5353"`, `"::1"`, `"[::1]:5353"`."""
    if isinstance(value, str) and (value.startswith("[") or value.count(":") == 1):
        return parse_hostport(value, "dns.nameservers")
    if isinstance(value, str) and value:
        return value, 53
    raise ConfigError(f"dns.nameservers: expected addresses, got {value!r}")


def _resolve(base: Path, value: Any, key: str) -> Path:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{key}: expected a path, got {value!r}")
    p = Path(value).expanduser()
    return (p if p.is_absolute() else base / p).resolve()


def _table(doc: dict[str, Any], name: str) -> dict[str, Any]:
    t = doc.get(name, {})
    if not isinstance(t, dict):
        raise ConfigError(f"[{name}] must be a table")
    return t


def _check_keys(table: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}")


def default_config() -> Config:
    cfg = Config()
    cfg.listen = {name: parse_hostport(v, f"listen.{name}") for name, v in DEV_LISTEN.items()}
    return cfg


def config_from_toml(doc: dict[str, Any], path: Path) -> Config:
    base = path.parent.resolve()
    _check_keys(
        doc,
        {"hostname", "domains", "data_dir", "listen", "tls", "storage", "queue", "dns", "routes", "limits",
         "tls_policy", "allow_plaintext_auth", "trust", "mta_sts", "server"},
        path.name,
    )
    cfg = Config(path=path.resolve())
    hostname = doc.get("hostname", "localhost")
    if not isinstance(hostname, str) or not hostname:
        raise ConfigError("hostname: expected a host name")
    cfg.hostname = hostname
    domains = doc.get("domains", [])
    if not isinstance(domains, list) or not all(isinstance(d, str) for d in domains):
        raise ConfigError("domains: expected a list of domain names")
    cfg.domains = [d.lower().rstrip(".") for d in domains]
    cfg.data_dir = _resolve(base, doc.get("data_dir", "data"), "data_dir")
    plain = doc.get("allow_plaintext_auth", False)
    if not isinstance(plain, bool):
        raise ConfigError("allow_plaintext_auth: expected true or false")
    cfg.allow_plaintext_auth = plain

    listen = _table(doc, "listen")
    _check_keys(listen, set(LISTENER_NAMES), "[listen]")
    cfg.listen = {k: parse_hostport(v, f"listen.{k}") for k, v in listen.items()}

    tls = _table(doc, "tls")
    _check_keys(tls, {"cert", "key", "ca_file"}, "[tls]")
    if ("cert" in tls) != ("key" in tls):
        raise ConfigError("[tls]: give both cert and key, or neither")
    if "cert" in tls:
        cfg.tls_cert = _resolve(base, tls["cert"], "tls.cert")
        cfg.tls_key = _resolve(base, tls["key"], "tls.key")
    if "ca_file" in tls:
        cfg.tls_ca_file = _resolve(base, tls["ca_file"], "tls.ca_file")

    server = _table(doc, "server")
    _check_keys(server, {"workers"}, "[server]")
    workers = server.get("workers", 0)
    if workers == "auto":
        workers = min(len(os.sched_getaffinity(0)), 64)
    if isinstance(workers, bool) or not isinstance(workers, int) or not 0 <= workers <= 64:
        raise ConfigError('server.workers: expected a number of processes from 0 to 64, or "auto"')
    cfg.workers = workers

    storage = _table(doc, "storage")
    _check_keys(storage, {"url"}, "[storage]")
    url = storage.get("url", "sqlite")
    if not isinstance(url, str):
        raise ConfigError("storage.url: expected a string")
    cfg.storage_url = url

    q = _table(doc, "queue")
    _check_keys(
        q,
        {"retry_interval", "max_lifetime", "delay_warning", "connections_per_destination", "max_connections",
         "connect_timeout", "reply_timeout", "smtp_port", "idle_timeout", "poll_interval"},
        "[queue]",
    )
    qs = QueueSettings(
        retry_interval=parse_duration(q.get("retry_interval", "30m"), "queue.retry_interval"),
        max_lifetime=parse_duration(q.get("max_lifetime", "5d"), "queue.max_lifetime"),
        delay_warning=parse_duration(q.get("delay_warning", "4h"), "queue.delay_warning"),
        connect_timeout=parse_duration(q.get("connect_timeout", "30s"), "queue.connect_timeout"),
        idle_timeout=parse_duration(q.get("idle_timeout", "5s"), "queue.idle_timeout"),
        poll_interval=parse_duration(q.get("poll_interval", "1s"), "queue.poll_interval"),
    )
    if qs.poll_interval < 0.1:  # below, an idle server would spin on the store
        raise ConfigError("queue.poll_interval: at least 100ms")
    if "reply_timeout" in q:
        qs.reply_timeout = parse_duration(q["reply_timeout"], "queue.reply_timeout")
    for k in ("connections_per_destination", "max_connections", "smtp_port"):
        if k in q:
            v = q[k]
            if not isinstance(v, int) or isinstance(v, bool) or not 0 < v < 65536:
                raise ConfigError(f"queue.{k}: expected a positive whole number")
            setattr(qs, k, v)
    cfg.queue = qs
    if cfg.queue.retry_interval <= 0:
        raise ConfigError("queue.retry_interval must be more than 0")

    dns = _table(doc, "dns")
    _check_keys(dns, {"nameservers", "trust_ad"}, "[dns]")
    if "nameservers" in dns:
        ns = dns["nameservers"]
        if not isinstance(ns, list):
            raise ConfigError("dns.nameservers: expected a list of \"host:port\" or addresses")
        cfg.nameservers = [_nameserver(n) for n in ns]
    trust_ad = dns.get("trust_ad", False)
    if not isinstance(trust_ad, bool):
        raise ConfigError("dns.trust_ad: expected true or false")
    if trust_ad and not cfg.nameservers:
        # The AD bit is only as good as the resolver that set it and the path from
        # it: only believe resolvers the operator chose, never whatever DHCP gave.
        raise ConfigError("dns.trust_ad needs dns.nameservers: the AD bit is trusted only from "
                          "validating resolvers you name")
    cfg.dns_trust_ad = trust_ad

    routes = _table(doc, "routes")
    cfg.routes = {k.lower().rstrip("."): parse_hostport(v, f"routes.{k}") for k, v in routes.items()}

    policy = _table(doc, "tls_policy")
    for k, v in policy.items():
        if v not in TLS_POLICIES:
            raise ConfigError(f"tls_policy.{k}: expected one of {', '.join(TLS_POLICIES)}; got {v!r}")
    cfg.tls_policy = {k.lower().rstrip("."): v for k, v in policy.items()}

    sts = _table(doc, "mta_sts")
    _check_keys(sts, {"enabled", "port", "timeout"}, "[mta_sts]")
    ms = MTASTSSettings()
    enabled = sts.get("enabled", True)
    if not isinstance(enabled, bool):
        raise ConfigError("mta_sts.enabled: expected true or false")
    ms.enabled = enabled
    if "port" in sts:
        v = sts["port"]
        if not isinstance(v, int) or isinstance(v, bool) or not 0 < v < 65536:
            raise ConfigError("mta_sts.port: expected a port number")
        ms.port = v
    if "timeout" in sts:
        ms.timeout = parse_duration(sts["timeout"], "mta_sts.timeout")
        if ms.timeout <= 0:
            raise ConfigError("mta_sts.timeout must be more than 0")
    cfg.mta_sts = ms

    limits = _table(doc, "limits")
    _check_keys(
        limits,
        {"max_message_size", "max_recipients", "command_timeout", "data_timeout", "max_errors",
         "max_connections", "max_connections_per_ip"},
        "[limits]",
    )
    lim = Limits()
    if "max_message_size" in limits:
        lim.max_message_size = parse_size(limits["max_message_size"], "limits.max_message_size")
    for k in ("max_recipients", "max_errors", "max_connections", "max_connections_per_ip"):
        if k in limits:
            v = limits[k]
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ConfigError(f"limits.{k}: expected a positive whole number")
            setattr(lim, k, v)
    for k in ("command_timeout", "data_timeout"):
        if k in limits:
            setattr(lim, k, parse_duration(limits[k], f"limits.{k}"))
    cfg.limits = lim
    cfg.trust = parse_trust(_table(doc, "trust"))
    return cfg


def load_config(explicit: str | None = None) -> Config:
    """-c FILE, else $MAILHOUSE_CONFIG, else ./mailhouse.toml, else development defaults."""
    candidate = explicit or os.environ.get("MAILHOUSE_CONFIG")
    if candidate:
        path = Path(candidate)
        if not path.is_file():
            raise ConfigError(f"configuration file {candidate} not found")
    else:
        path = Path("mailhouse.toml")
        if not path.is_file():
            return default_config()
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: {e}") from None
    except OSError as e:
        raise ConfigError(f"{path}: {e.strerror}") from None
    return config_from_toml(doc, path)
