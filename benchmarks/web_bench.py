#!/usr/bin/env python3
"""The webmail and API on a 100,000-message INBOX.

Fills a fresh store through the store interface (the same append the API's Sent
copies use), starts `mailhouse serve` with the http listener on a free 127.0.0.1
port, then measures:

- time to first byte of the webmail's message list (`/mail/INBOX`, first page)
  and of the API's (`/api/mailboxes/INBOX/messages`), median and p95;
- time until the list is rendered in Chromium (Playwright; skipped without it);
- API requests/s for `GET /api/mailboxes/INBOX/messages` with 50 concurrent
  keep-alive clients (a minimal asyncio HTTP/1.1 client, so the load generator
  costs as little CPU as possible: it shares the machine's cores with the server).

    python3 benchmarks/web_bench.py [--messages 100000] [--seconds 10] [--clients 50]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mailhouse.store.models import LocalTarget
from mailhouse.store.sqlite import SQLiteStore
from mailhouse.web.auth import hash_token_secret, new_token
from mailhouse.world import MailServer

USER = ("bench@web-bench.test", "bench-password")


async def fill(data_dir: Path, n: int) -> str:
    store = SQLiteStore(data_dir)
    await store.open()
    await store.add_domain("web-bench.test", exist_ok=True)
    from mailhouse.auth.passwords import hash_password

    acc = await store.add_account(USER[0], hash_password(USER[1]))
    target = LocalTarget(acc.id, acc.address, acc.address)
    t0 = time.perf_counter()
    sem = asyncio.Semaphore(256)  # enough in flight for group commit to batch them

    async def one(i: int) -> None:
        raw = (
            f"From: Sender {i % 500} <s{i % 500}@example.org>\r\nTo: {USER[0]}\r\n"
            f"Subject: Message {i}: quarterly figures and other news\r\n"
            f"Date: Mon, 2 Nov 2026 10:{i % 60:02d}:00 +0000\r\nMessage-ID: <{i}@bench>\r\n\r\n"
            + f"Line of text number {i}, long enough to give a preview.\r\n" * 20
        ).encode()
        async with sem:
            await store.append(target, raw, flags={"\\Seen"} if i % 4 else (), internal_date=1.7e9 + i)

    for start in range(0, n, 5000):
        await asyncio.gather(*(one(i) for i in range(start, min(n, start + 5000))))
        print(f"\r  filled {min(n, start + 5000):,} / {n:,}", end="", file=sys.stderr, flush=True)
    print(f"\r  filled {n:,} messages in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    secret = "benchsecret" * 4
    tok = await store.add_api_token(acc.id, "bench", hash_token_secret(secret))
    await store.close()
    return new_token(tok.id, secret)


def ttfb(url: str, headers: dict[str, str], n: int = 30) -> tuple[float, float, float, int]:
    """(first, median, p95) in ms: the first request is the uncached one."""
    times = []
    size = 0
    for _ in range(n):
        req = urllib.request.Request(url, headers=headers)
        t0 = time.perf_counter()
        with urllib.request.urlopen(req, timeout=30) as r:
            r.read(1)
            times.append(time.perf_counter() - t0)
            size = 1 + len(r.read())
    first = times[0]
    times.sort()
    return first * 1000, statistics.median(times) * 1000, times[int(len(times) * 0.95) - 1] * 1000, size


def session_cookie(base: str) -> str:
    import http.cookiejar

    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    page = opener.open(base + "/login").read().decode()
    m = re.search(r'name="_csrf" value="([^"]+)"', page)
    assert m
    data = urllib.parse.urlencode({"_csrf": m.group(1), "address": USER[0], "password": USER[1]}).encode()
    opener.open(urllib.request.Request(base + "/login", data=data, headers={"Origin": base}))
    return "; ".join(f"{c.name}={c.value}" for c in jar if c.name == "mh_session")


def rendered_list(base: str) -> tuple[float, float] | None:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return None
    if not os.path.exists("/usr/bin/chromium"):
        return None
    args = ["--no-sandbox", "--headless", "--disable-gpu", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"]
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path="/usr/bin/chromium", args=args)
        page = b.new_page()
        page.goto(base + "/login")
        page.fill("#address", USER[0])
        page.fill("#password", USER[1])
        page.click("button[type=submit]")
        page.wait_for_selector("#list li.msg")
        runs = []
        for _ in range(5):
            t0 = time.perf_counter()
            page.goto(base + "/mail/INBOX?page=1000")  # deep in the folder: rows 49,951-50,000
            page.wait_for_selector("#list li.msg")
            runs.append(time.perf_counter() - t0)
        paint = page.evaluate(
            "performance.getEntriesByType('paint').map(e => e.startTime).reduce((a, b) => Math.max(a, b), 0)"
        )
        b.close()
    return statistics.median(runs) * 1000, float(paint)


async def load(
    port: int, path: str, token: str, clients: int, seconds: float, pages: int = 0
) -> tuple[int, int, list[float]]:
    """Keep-alive clients for `seconds`; with `pages`, each request asks a random page
    among that many (offsets), so most miss the server's page cache."""
    import random

    def request() -> bytes:
        p = f"{path}?offset={random.randrange(pages) * 50}" if pages else path
        return f"GET {p} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\n\r\n".encode()

    done = 0
    errors = 0
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def client() -> None:
        nonlocal done, errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                writer.write(request())
                head = await reader.readuntil(b"\r\n\r\n")
                m = re.search(rb"(?i)content-length: *(\d+)", head)
                if m is None:
                    errors += 1
                    return
                await reader.readexactly(int(m.group(1)))
                if not head.startswith(b"HTTP/1.1 200"):
                    errors += 1
                latencies.append(time.perf_counter() - t0)
                done += 1
        finally:
            writer.close()

    await asyncio.gather(*(client() for _ in range(clients)))
    return done, errors, latencies


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=100_000)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--clients", type=int, default=50)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="web-bench-") as tmp:
        srv = MailServer(Path(tmp), "web-bench.test", listeners=("http",))
        token = asyncio.run(fill(srv.data_dir, args.messages))
        with srv:
            base = f"http://127.0.0.1:{srv.port('http')}"
            cookie = session_cookie(base)
            print(f"INBOX: {args.messages:,} messages")
            for label, path, headers in (
                ("webmail /mail/INBOX (page 1)", "/mail/INBOX", {"Cookie": cookie}),
                ("webmail /mail/INBOX?page=1000", "/mail/INBOX?page=1000", {"Cookie": cookie}),
                ("API messages?limit=50", "/api/mailboxes/INBOX/messages", {"Authorization": f"Bearer {token}"}),
                ("API messages?offset=99950", "/api/mailboxes/INBOX/messages?offset=99950",
                 {"Authorization": f"Bearer {token}"}),
                ("API mailboxes (counts)", "/api/mailboxes", {"Authorization": f"Bearer {token}"}),
            ):
                first, med, p95, size = ttfb(base + path, headers)
                print(f"  TTFB {label:<32} first {first:6.1f} ms   then median {med:6.1f} ms   "
                      f"p95 {p95:6.1f} ms   ({size:,} bytes)")
            r = rendered_list(base)
            if r is None:
                print("  rendered list: skipped (no Playwright or /usr/bin/chromium)")
            else:
                print(f"  rendered list in Chromium (navigation to rows visible): median {r[0]:.0f} ms, "
                      f"last paint at {r[1]:.0f} ms")
            for label, pages in (("same page (cached)", 0), ("random pages of 2,000 (uncached)", 2000)):
                done, errors, lat = asyncio.run(load(
                    srv.port("http"), "/api/mailboxes/INBOX/messages", token, args.clients, args.seconds, pages,
                ))
                lat.sort()
                print(f"  API GET /api/mailboxes/INBOX/messages, {label}, {args.clients} clients, "
                      f"{args.seconds:.0f} s: {done / args.seconds:,.0f} requests/s, errors {errors}, "
                      f"latency median {statistics.median(lat) * 1000:.1f} ms, p99 {lat[int(len(lat) * 0.99)] * 1000:.1f} ms")


if __name__ == "__main__":
    main()
