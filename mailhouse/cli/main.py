"""`mailhouse [-c FILE] COMMAND ...`: the command line of INTERFACE.md.

argparse rather than click: it starts in about half the time (FIELD-NOTES), and
admin commands are often run in scripts and loops.
Exit status: 0 success, 1 failure (one line on stderr), 2 bad usage.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from ..config import Config, ConfigError, load_config

Handler = Callable[[Config, argparse.Namespace], Coroutine[Any, Any, int | None]]


class CommandError(Exception):
    """A failure to report as one line on stderr, exit status 1."""


def _password_args(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--password", metavar="PW", help="the password (visible in the process list: prefer --password-stdin)")
    g.add_argument("--password-stdin", action="store_true", help="read the password from the first line of stdin")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mailhouse", description="mailhouse: a complete Internet mail system in one process."
    )
    parser.add_argument("-c", "--config", metavar="FILE", help="configuration file (default: $MAILHOUSE_CONFIG, else ./mailhouse.toml)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    # Handlers by name ("module.function" in mailhouse.cli), imported when run: a
    # command then loads only its own module (`mailhouse --help` took 0.51 s with
    # every command's imports, dnspython's resolver and the demo's DNS server among them).
    def cmd(parent: Any, name: str, handler: str, help: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = parent.add_parser(name, help=help, description=help)
        p.set_defaults(handler=handler)
        return p

    def group(name: str, help: str) -> Any:
        p = sub.add_parser(name, help=help, description=help)
        return p.add_subparsers(dest="subcommand", metavar="SUBCOMMAND", required=True)

    cmd(sub, "serve", "admin.cmd_serve", "run every configured listener and the delivery queue")
    p = cmd(sub, "quickstart", "quickstart.cmd_quickstart", "write mailhouse.toml for ADDRESS's domain and create the user")
    p.add_argument("address")
    p.add_argument("--force", action="store_true", help="overwrite an existing configuration file")
    _password_args(p)

    g = group("domain", "local domains: mail to them is delivered here")
    cmd(g, "add", "admin.cmd_domain_add", "add a local domain").add_argument("name")
    cmd(g, "list", "admin.cmd_domain_list", "list local domains").add_argument("--json", action="store_true")
    cmd(g, "remove", "admin.cmd_domain_remove", "remove a local domain (it must have no users)").add_argument("name")
    p = cmd(g, "records", "admin.cmd_domain_records", "the DNS records NAME should publish")
    p.add_argument("name")
    p.add_argument("--json", action="store_true")

    g = group("user", "accounts")
    p = cmd(g, "add", "admin.cmd_user_add", "add an account (prints a generated password if none is given)")
    p.add_argument("address")
    _password_args(p)
    cmd(g, "list", "admin.cmd_user_list", "list accounts").add_argument("--json", action="store_true")
    cmd(g, "remove", "admin.cmd_user_remove", "remove an account and its mail").add_argument("address")
    p = cmd(g, "password", "admin.cmd_user_password", "set an account's password")
    p.add_argument("address")
    _password_args(p)

    g = group("alias", "aliases; @domain is the domain's catch-all")
    p = cmd(g, "add", "admin.cmd_alias_add", "add an alias to one or more targets (local or remote)")
    p.add_argument("address")
    p.add_argument("targets", nargs="+", metavar="TARGET")
    cmd(g, "list", "admin.cmd_alias_list", "list aliases").add_argument("--json", action="store_true")
    cmd(g, "remove", "admin.cmd_alias_remove", "remove an alias").add_argument("address")

    g = group("mailbox", "the messages of an account")
    p = cmd(g, "list", "mailbox.cmd_list", "one row a message")
    p.add_argument("address")
    p.add_argument("--folder", default="INBOX")
    p.add_argument("--json", action="store_true")
    p = cmd(g, "show", "mailbox.cmd_show", "the stored message, byte for byte")
    p.add_argument("address")
    p.add_argument("uid", type=int)
    p.add_argument("--folder", default="INBOX")
    p = cmd(g, "import", "mailbox.cmd_import", "import an mbox file or a Maildir folder")
    p.add_argument("address")
    p.add_argument("path")
    p.add_argument("--folder", default="INBOX")
    p = cmd(g, "export", "mailbox.cmd_export", "export to an mbox file (a path ending in / or an existing folder: Maildir)")
    p.add_argument("address")
    p.add_argument("path")
    p.add_argument("--folder", default="INBOX")
    p.add_argument("--format", choices=["mbox", "maildir"], help="default: maildir for a folder path, else mbox")

    g = group("queue", "messages waiting to be sent")
    cmd(g, "list", "queue.cmd_list", "one row a queued message").add_argument("--json", action="store_true")
    p = cmd(g, "show", "queue.cmd_show", "a queued message's envelope, recipients and attempts")
    p.add_argument("id")
    p.add_argument("--json", action="store_true")
    cmd(g, "retry", "queue.cmd_retry", "retry ID now; with no ID, everything").add_argument("id", nargs="?")
    cmd(g, "delete", "queue.cmd_delete", "remove a queued message without a bounce").add_argument("id")
    cmd(g, "hold", "queue.cmd_hold", "keep a message from being sent until released").add_argument("id")
    cmd(g, "release", "queue.cmd_release", "let a held message go").add_argument("id")
    p = cmd(sub, "send", "send.cmd_send", "a user agent: the body from stdin, submitted with STARTTLS and AUTH")
    p.add_argument("--from", dest="sender", required=True, metavar="ADDR")
    p.add_argument("--to", action="append", required=True, metavar="ADDR")
    p.add_argument("--cc", action="append", metavar="ADDR")
    p.add_argument("--bcc", action="append", metavar="ADDR")
    p.add_argument("--subject", metavar="S")
    p.add_argument("--attach", action="append", metavar="FILE")
    p.add_argument("--server", metavar="HOST:PORT", help="any submission server (default: this configuration's)")
    p.add_argument("--user", help="login name (default: the --from address)")
    p.add_argument("--password-stdin", action="store_true",
                   help="the first line of stdin is the password, the rest the body (else $MAILHOUSE_PASSWORD)")
    p.add_argument("--insecure", action="store_true", help="do not verify the server's certificate")
    p.add_argument("--timeout", type=float, default=60.0)

    p = cmd(sub, "demo", "demo.cmd_demo", "the textbook's story: Alice's message to Bob across two servers")
    p.add_argument("--once", action="store_true", help="exit after the story")
    p.add_argument("--down", action="store_true", help="hamburger.edu is down at first: watch the queue retry")
    p.add_argument("--never", action="store_true", help="with --down: it stays down, and Alice gets the bounce")

    p = cmd(sub, "trace", "trace.cmd_trace", "the journey of one message (queue id or Message-ID)")
    p.add_argument("id")
    p.add_argument("--json", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
        module, _, function = str(args.handler).partition(".")
        handler: Handler = getattr(importlib.import_module(f"{__package__}.{module}"), function)
        if args.command == "serve":
            from ..serve import run

            run(config)
            return 0
        result: int | None = asyncio.run(handler(config, args))
        return int(result or 0)
    except (CommandError, ConfigError) as e:
        print(f"mailhouse: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as e:
        from ..store.base import StoreError

        if isinstance(e, StoreError):
            print(f"mailhouse: {e}", file=sys.stderr)
            return 1
        if isinstance(e, OSError):
            print(f"mailhouse: {e.filename or ''}{': ' if e.filename else ''}{e.strerror or e}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
