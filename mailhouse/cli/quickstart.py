"""quickstart ADDRESS: a configuration, the domain and the user, ready to serve."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ..auth.passwords import generate_password, hash_password
from ..config import Config, load_config
from .common import check_address, read_password, store_for
from .main import CommandError

TEMPLATE = """\
# mailhouse configuration, written by `mailhouse quickstart {address}`.
# Paths are relative to this file's folder. See INTERFACE.md for every key.
hostname = "{hostname}"
domains  = ["{domain}"]
data_dir = "mailhouse-data"

[listen]
smtp        = "127.0.0.1:2525"    # MX: mail for local domains; no relaying
submission  = "127.0.0.1:2587"    # STARTTLS, then AUTH; authenticated users may relay
submissions = "127.0.0.1:2465"    # the same with implicit TLS
imap        = "127.0.0.1:2143"    # STARTTLS (loopback clients may log in without it)
imaps       = "127.0.0.1:2993"
pop3        = "127.0.0.1:2110"
pop3s       = "127.0.0.1:2995"
http        = "127.0.0.1:8025"    # webmail and the HTTP API
https       = "127.0.0.1:8443"

[server]
workers = "auto"                  # SMTP, IMAP and POP3 in one process per core; 0: all in this one

[storage]
url = "sqlite"

[queue]
retry_interval = "30m"
max_lifetime   = "5d"
delay_warning  = "4h"
"""


async def cmd_quickstart(config: Config, args: argparse.Namespace) -> None:
    address = check_address(args.address)
    domain = address.rpartition("@")[2]
    path = Path(args.config or os.environ.get("MAILHOUSE_CONFIG") or "mailhouse.toml")
    if path.exists() and not args.force:
        raise CommandError(f"{path} exists already; use --force to overwrite it")
    password = read_password(args) or generate_password()
    hostname = "localhost" if domain == "localhost" else f"mail.{domain}"
    path.write_text(TEMPLATE.format(address=address, hostname=hostname, domain=domain), encoding="utf-8")
    cfg = load_config(str(path))
    async with store_for(cfg) as store:
        if store.find_account(address) is None:
            await store.add_account(address, hash_password(password))
        else:
            await store.set_password(address, hash_password(password))
        postmaster = f"postmaster@{domain}"
        if postmaster != address and store.find_account(postmaster) is None and store.find_alias(postmaster) is None:
            await store.add_alias(postmaster, [address])
    smtp = cfg.listen["submission"]
    smtps = cfg.listen["submissions"]
    print(f"wrote {path}; domain {domain} and user {address} are ready.")
    print(f"password: {password}")
    print()
    print("Mail client settings:")
    print(f"  username:          {address}")
    print(f"  outgoing (SMTP):   {smtp[0]} port {smtp[1]}, STARTTLS, password authentication")
    print(f"                     or {smtps[0]} port {smtps[1]}, SSL/TLS")
    imap, imaps = cfg.listen["imap"], cfg.listen["imaps"]
    pop3, pop3s = cfg.listen["pop3"], cfg.listen["pop3s"]
    http = cfg.listen["http"]
    print(f"  incoming (IMAP):   {imap[0]} port {imap[1]}, STARTTLS, or {imaps[0]} port {imaps[1]}, SSL/TLS")
    print(f"  incoming (POP3):   {pop3[0]} port {pop3[1]}, STARTTLS, or {pop3s[0]} port {pop3s[1]}, SSL/TLS")
    print(f"  webmail:           http://{http[0]}:{http[1]}/")
    print(f"  MX (other servers' mail to {domain}): {cfg.listen['smtp'][0]} port {cfg.listen['smtp'][1]}")
    print("  the certificate is self-signed: accept it once in the client.")
    print()
    print(f"Start the server with: mailhouse{' -c ' + str(path) if args.config else ''} serve")
