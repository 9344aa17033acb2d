"""`mailhouse demo`: the textbook's story on one machine, for a newcomer.

Two real mailhouse servers, crepes.fr and hamburger.edu, each with its own data
folder and free loopback ports; a DNS server on 127.0.0.1 answers their MX
records, so delivery goes through a real MX lookup. Alice sends Bob a message
through her submission port, and the six steps of the journey are printed as
they happen, with the SMTP dialogue between the two servers.
"""

from __future__ import annotations

import argparse
import json
import poplib
import secrets
import ssl
import tempfile
import time
from pathlib import Path
from typing import Any

from ..config import Config
from ..dns.testserver import DNSServer, Zone
from ..world import MailServer, free_port
from .main import CommandError

BODY = "Do you like ketchup?\nHow about pickles?\n"


class Story:
    def __init__(self) -> None:
        self.start = time.monotonic()

    def say(self, text: str = "") -> None:
        t = time.monotonic() - self.start
        print(f"[{t:6.2f}s] {text}" if text else "", flush=True)

    def step(self, n: int, text: str) -> None:
        print(flush=True)
        self.say(f"Step {n}. {text}")


def _journey(server: MailServer, ident: str) -> list[dict[str, Any]]:
    r = server.cli("trace", ident, "--json", check=False)
    if r.returncode != 0:
        return []
    events: list[dict[str, Any]] = json.loads(r.stdout)
    return events


def _wait(what: Any, timeout: float, interval: float = 0.3) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = what()
        if v:
            return v
        time.sleep(interval)
    return None


def _pop3_read(server: MailServer, user: str, password: str) -> list[bytes]:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    p = poplib.POP3_SSL("127.0.0.1", server.port("pop3s"), timeout=10, context=ctx)
    try:
        p.user(user)
        p.pass_(password)
        count = len(p.list()[1])
        return [b"\r\n".join(p.retr(i)[1]) for i in range(1, count + 1)]
    finally:
        p.quit()


def run_demo(args: argparse.Namespace) -> int:
    story = Story()
    root = Path(tempfile.mkdtemp(prefix="mailhouse-demo-"))
    zone = Zone()
    dns = DNSServer(zone)
    dns.start_in_thread()
    ports = {"crepes.fr": free_port(), "hamburger.edu": free_port()}
    for domain in ports:
        zone.add(domain, "MX", f"10 mail.{domain}.", ttl=0)
        zone.add(f"mail.{domain}", "A", "127.0.0.1", ttl=0)
    retry = "3s" if args.down else "30m"
    lifetime = "12s" if args.never else "5d"
    listeners = ("smtp", "submission", "submissions", "imap", "imaps", "pop3", "pop3s", "http")

    def server(domain: str, other: str) -> MailServer:
        return MailServer(root, domain, listeners=listeners, ports={"smtp": ports[domain]}, extra={
            "dns": {"nameservers": [f"127.0.0.1:{dns.port}"]},
            "queue": {"retry_interval": retry, "max_lifetime": lifetime, "delay_warning": "0",
                      "smtp_port": ports[other], "connect_timeout": "2s"},
        })

    crepes = server("crepes.fr", "hamburger.edu")
    hamburger = server("hamburger.edu", "crepes.fr")
    alice_pw, bob_pw = secrets.token_urlsafe(9), secrets.token_urlsafe(9)
    # "=" form: a generated password may start with "-", which argparse would take for an option.
    crepes.cli("user", "add", "alice@crepes.fr", f"--password={alice_pw}")
    hamburger.cli("user", "add", "bob@hamburger.edu", f"--password={bob_pw}")
    # Each domain publishes what `domain records` says (SPF, DKIM key, DMARC), as a
    # real one would, so the receiving side's checks pass.
    for srv in (crepes, hamburger):
        for rec in json.loads(srv.cli("domain", "records", srv.domain, "--json").stdout):
            if rec["type"] == "TXT":
                zone.add(rec["name"].rstrip("."), "TXT", rec["value"], ttl=0)
    print("mailhouse demo: the journey of Alice's message to Bob, on this machine.")
    print(f"  crepes.fr     : SMTP 127.0.0.1:{crepes.port('smtp')}, submission {crepes.port('submission')}, data {crepes.data_dir}")
    print(f"  hamburger.edu : SMTP 127.0.0.1:{hamburger.port('smtp')}, submission {hamburger.port('submission')}, data {hamburger.data_dir}")
    print(f"  DNS           : 127.0.0.1:{dns.port} answers MX hamburger.edu -> mail.hamburger.edu (127.0.0.1)")
    if args.down:
        print(f"  (the retry interval is shortened to {retry} for the demo; a real server waits 30 minutes)")
    if args.never:
        print(f"  (and messages give up after {lifetime} instead of 5 days)")
    crepes.start()
    if not args.down:
        hamburger.start()
    try:
        return _story(story, args, crepes, hamburger, alice_pw, bob_pw)
    finally:
        crepes.stop()
        hamburger.stop()
        dns.stop_thread()


def _story(
    story: Story, args: argparse.Namespace, crepes: MailServer, hamburger: MailServer, alice_pw: str, bob_pw: str
) -> int:
    story.step(1, "Alice's user agent hands her message to her mail server, crepes.fr, over SMTP submission.")
    r = crepes.cli(
        "send", "--from", "Alice <alice@crepes.fr>", "--to", "Bob <bob@hamburger.edu>", "--subject", "Ketchup?",
        "--password-stdin", input=f"{alice_pw}\n{BODY}".encode(), check=False,
    )
    if r.returncode != 0:
        raise CommandError(f"Alice's submission failed: {r.stderr.decode().strip()}")
    out = r.stdout.decode()
    qid = out.split("queue id: ")[1].split()[0]
    mid = out.split("message-id: ")[1].strip().strip("<>")
    story.say(f"crepes.fr accepted it: queue id {qid}, Message-ID <{mid}>")

    story.step(2, "The message waits in crepes.fr's queue.")
    rows = json.loads(crepes.cli("queue", "list", "--json").stdout)
    for row in rows:
        story.say(f"queue: {row['id']}  from <{row['sender']}>  to {', '.join(row['recipients'])}")
    if not rows:
        story.say("(the queue manager was quicker: it already picked the message up)")

    story.step(3, "crepes.fr's SMTP client looks up hamburger.edu's MX record and opens a TCP connection.")
    shown = 0
    started = False

    def attempts() -> list[dict[str, Any]]:
        return [e for e in _journey(crepes, qid) if e["kind"] == "attempt"]

    deadline = time.monotonic() + (60 if args.down else 30)
    delivered = False
    while time.monotonic() < deadline:
        events = attempts()
        for ev in events[shown:]:
            d = ev["data"]
            mx = ", ".join(f"{m['host']} (preference {m['preference']})" for m in (d.get("route") or {}).get("mx", []))
            story.say(f"DNS: MX of {d.get('domain')} is {mx}; connecting to {d.get('host')} [{d.get('address')}]:{d.get('port')}")
            if d.get("error"):
                story.say(f"attempt failed: {d['error']}; the message stays in the queue and will be retried")
            else:
                story.step(4, "The SMTP dialogue between crepes.fr's client (C) and hamburger.edu's server (S):")
                for line in d.get("transcript") or []:
                    print(f"           {line}")
                story.say(f"outcome: {d.get('outcome')}")
                delivered = d.get("outcome") == "delivered"
        shown = len(events)
        if delivered:
            break
        if args.down and not args.never and not started and shown >= 2:
            story.say("hamburger.edu comes up now.")
            hamburger.start()
            started = True
        if args.never and any(e["kind"] == "bounced" for e in _journey(crepes, qid)):
            break
        time.sleep(0.3)

    if args.never:
        story.step(5, "crepes.fr gives up on the message and removes it from its queue...")
        bounced = _wait(lambda: [e for e in _journey(crepes, qid) if e["kind"] == "bounced"], 30)
        if not bounced:
            raise CommandError("the bounce did not come")
        story.say(f"...and tells the sender: a failure notice ({bounced[0]['data']['dsn_queue_id']}) to alice@crepes.fr")
        story.step(6, "Alice's user agent reads the bounce from her mailbox (POP3):")
        msgs = _pop3_read(crepes, "alice@crepes.fr", alice_pw)
        for line in msgs[-1].split(b"\r\n")[:40]:
            print(f"           {line.decode(errors='replace')}")
        return 0
    if not delivered:
        raise CommandError("the message was not delivered in time; see `mailhouse trace` on both servers")

    story.step(5, "hamburger.edu's server puts the message in Bob's mailbox.")
    got = _wait(lambda: [e for e in _journey(hamburger, f"<{mid}>") if e["kind"] == "delivered"], 15)
    if got:
        d = got[0]["data"]
        story.say(f"delivered to {d['account']}, folder {d['folder']}, UID {d['uid']}")
    story.step(6, "Bob's user agent reads it from his always-on mail server (POP3):")
    msgs = _pop3_read(hamburger, "bob@hamburger.edu", bob_pw)
    for line in msgs[-1].split(b"\r\n"):
        print(f"           {line.decode(errors='replace')}")
    print()
    print("The journey on each server: "
          f"mailhouse -c {crepes.config_path} trace {qid}   and   mailhouse -c {hamburger.config_path} trace '<{mid}>'")
    if args.once:
        return 0
    print()
    print("Both servers keep running until Ctrl-C. Log in to the webmail:")
    print(f"  Bob:   http://127.0.0.1:{hamburger.port('http')}/  bob@hamburger.edu / {bob_pw}")
    print(f"  Alice: http://127.0.0.1:{crepes.port('http')}/  alice@crepes.fr / {alice_pw}")
    print(f"  (or a mail client: IMAP 127.0.0.1:{hamburger.port('imap')} / {crepes.port('imap')}, "
          f"submission {hamburger.port('submission')} / {crepes.port('submission')})")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("\nstopping the demo servers")
    return 0


async def cmd_demo(config: Config, args: argparse.Namespace) -> int:
    if args.never and not args.down:
        raise CommandError("--never goes with --down")
    # Blocking on purpose: nothing else runs in this process, and Ctrl-C must reach the story.
    return run_demo(args)
