"""The webmail in a real browser (Playwright driving Debian's Chromium).

A person's day: log in, read, search, compose with an attachment, reply, move,
delete, see new mail arrive, log out; at desktop and phone sizes, light and dark
(screenshots in test-artifacts/). And a corpus of hostile HTML messages, each
opened in the browser: nothing may run, navigate, submit or load remotely.
"""

from __future__ import annotations

import os
import re
import smtplib
import time
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from tests.world import MailServer

sync_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
BOB = ("bob@browser.test", "bob-browser-pw")
ALICE = ("alice@browser.test", "alice-browser-pw")
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}

pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian's chromium is not installed")


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MailServer]:
    s = MailServer(tmp_path_factory.mktemp("browser"), "browser.test", listeners=("smtp", "http"))
    s.cli("user", "add", BOB[0], "--password", BOB[1])
    s.cli("user", "add", ALICE[0], "--password", ALICE[1])
    with s:
        for i in range(12):
            deliver(s, f"Sender {i} <s{i}@example.org>", BOB[0], f"Weekly report {i}", f"Numbers for week {i}.")
        m = EmailMessage()
        m["From"] = "Carol <carol@example.org>"
        m["To"] = BOB[0]
        m["Subject"] = "Holiday photos"
        m.set_content("The photos are attached.")
        m.add_attachment(b"\x89PNG\r\n\x1a\nfake", maintype="image", subtype="png", filename="beach.png")
        send(s, m.as_bytes(), BOB[0])
        deliver(s, "Dave <dave@example.org>", BOB[0], "Lunch on Friday?", "Shall we meet at noon?")
        yield s


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


def send(s: MailServer, raw: bytes, to: str) -> None:
    with smtplib.SMTP("127.0.0.1", s.port("smtp"), timeout=10) as c:
        c.sendmail("sender@example.org", [to], raw)


def deliver(s: MailServer, sender: str, to: str, subject: str, body: str) -> None:
    m = EmailMessage()
    m["From"] = sender
    m["To"] = to
    m["Subject"] = subject
    m.set_content(body)
    send(s, m.as_bytes(), to)


def base(s: MailServer) -> str:
    return f"http://127.0.0.1:{s.port('http')}"


def sign_in(page: Any, s: MailServer, who: tuple[str, str] = BOB) -> None:
    page.goto(base(s) + "/")
    page.get_by_label("Address").fill(who[0])
    page.get_by_label("Password").fill(who[1])
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(r".*/mail/INBOX$"))


def shot(page: Any, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"))


def test_a_day_of_mail(srv: MailServer, browser: Any, tmp_path: Path) -> None:
    ctx = browser.new_context(viewport=DESKTOP)
    page = ctx.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    sign_in(page, srv)
    expect = sync_api.expect
    expect(page.locator("#list")).to_contain_text("Weekly report 11")
    expect(page.locator('#folders a[data-name="INBOX"] .count')).to_have_text("14")
    shot(page, "desktop-inbox")

    # Read: opening marks it read, the body shows, the attachment is a download.
    page.get_by_role("link", name=re.compile("Holiday photos")).click()
    expect(page.locator("h1.subject")).to_have_text("Holiday photos")
    expect(page.locator(".body-text")).to_contain_text("The photos are attached.")
    with page.expect_download() as dl:
        page.get_by_role("link", name=re.compile("beach.png")).click()
    assert dl.value.suggested_filename == "beach.png"
    shot(page, "desktop-message")
    page.get_by_role("link", name="‹ INBOX").click()
    expect(page.locator('#folders a[data-name="INBOX"] .count')).to_have_text("13")

    # Search.
    page.get_by_label("Search mail").fill("Lunch")
    page.keyboard.press("Enter")
    expect(page.locator("#list")).to_contain_text("Lunch on Friday?")
    expect(page.locator("#list li.msg")).to_have_count(1)
    page.get_by_label("Body").fill("week 3")
    page.get_by_label("Any field").fill("")
    page.get_by_role("button", name="Search", exact=True).click()
    expect(page.locator("#list li.msg")).to_have_count(1)
    expect(page.locator("#list")).to_contain_text("Weekly report 3")
    shot(page, "desktop-search")

    # Compose with an attachment; the address completes from past correspondents.
    page.get_by_role("link", name=re.compile("Compose")).click()
    page.get_by_label("To", exact=True).fill(ALICE[0])
    page.get_by_label("Subject").fill("Plans for the picnic")
    page.get_by_label("Message").fill("Bring the ketchup.\nSee the list attached.")
    att = tmp_path / "liste des courses.txt"
    att.write_text("ketchup\nmustard\n")
    page.get_by_label("Attachments").set_input_files(str(att))
    shot(page, "desktop-compose")
    page.get_by_role("button", name="Send").click()
    expect(page.locator(".flash")).to_contain_text("Message sent")
    page.get_by_role("link", name="Compose").click()
    page.get_by_label("Cc", exact=True).press_sequentially("ali")
    expect(page.locator(".suggest li").first).to_have_text(ALICE[0])
    page.locator(".suggest li").first.click()
    expect(page.get_by_label("Cc", exact=True)).to_have_value(f"{ALICE[0]}, ")
    page.goto(base(srv) + "/mail/Sent")
    expect(page.locator("#list")).to_contain_text("Plans for the picnic")

    # Reply.
    page.goto(base(srv) + "/mail/INBOX")
    page.get_by_role("link", name=re.compile("Lunch on Friday")).click()
    page.get_by_role("link", name="Reply", exact=True).click()
    expect(page.get_by_label("Subject")).to_have_value("Re: Lunch on Friday?")
    expect(page.get_by_label("To", exact=True)).to_have_value("dave@example.org")
    body = page.get_by_label("Message")
    assert "> Shall we meet at noon?" in body.input_value()
    page.get_by_label("To", exact=True).fill(ALICE[0])  # dave is remote: keep the test local
    body.press("Control+Home")
    body.type("Noon is fine.")
    page.get_by_role("button", name="Send").click()
    page.wait_for_load_state("load")
    assert page.locator(".error").count() == 0, page.locator(".error").inner_text()
    expect(page.locator(".flash")).to_contain_text("Message sent")

    # Move one to Archive, delete another (to Trash).
    row = page.locator("#list li.msg", has_text="Weekly report 5")
    row.locator("input[type=checkbox]").check()
    page.get_by_label("Move to folder").first.select_option("Archive")
    page.get_by_role("button", name="Move", exact=True).click()
    expect(page.locator(".flash")).to_contain_text("Moved: 1 message")
    expect(page.locator("#list")).not_to_contain_text("Weekly report 5")
    page.get_by_role("link", name=re.compile("Weekly report 4")).click()
    page.get_by_role("button", name="Delete", exact=True).click()
    expect(page.locator(".flash")).to_contain_text("Deleted: 1 message")
    page.goto(base(srv) + "/mail/Trash")
    expect(page.locator("#list")).to_contain_text("Weekly report 4")
    page.goto(base(srv) + "/mail/Archive")
    expect(page.locator("#list")).to_contain_text("Weekly report 5")

    # New mail appears without reloading (Server-Sent Events), and the counts follow.
    page.goto(base(srv) + "/mail/INBOX")
    page.evaluate("window.__same_document = true")
    deliver(srv, "Erin <erin@example.org>", BOB[0], "Fresh off the wire", "hello")
    expect(page.locator("#list")).to_contain_text("Fresh off the wire", timeout=10_000)
    assert page.evaluate("window.__same_document") is True  # not a reload
    expect(page).to_have_title(re.compile(r"^\(\d+\) INBOX"))

    # Keyboard: j moves the cursor, o opens, u goes back; ? shows the help.
    page.keyboard.press("j")
    expect(page.locator("#list li.msg.cursor")).to_have_count(1)
    page.keyboard.press("o")
    expect(page.locator("h1.subject")).to_have_text("Fresh off the wire")
    page.keyboard.press("u")
    expect(page).to_have_url(re.compile(r".*/mail/INBOX$"))
    page.keyboard.press("?")
    expect(page.locator("#help")).to_be_visible()
    page.keyboard.press("Escape")

    # Dark theme.
    page.get_by_role("button", name="Switch light or dark theme").click()
    page.reload()
    assert page.evaluate("document.documentElement.dataset.theme") in ("dark", "light")
    if page.evaluate("document.documentElement.dataset.theme") != "dark":
        page.get_by_role("button", name="Switch light or dark theme").click()
    shot(page, "desktop-inbox-dark")

    # Log out.
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_label("Password")).to_be_visible()
    page.goto(base(srv) + "/mail/INBOX")
    expect(page).to_have_url(re.compile(r".*/login\?next=%2Fmail%2FINBOX$"))
    assert errors == []
    ctx.close()

    # What Alice got: the text and the attachment.
    import httpx

    c = httpx.Client(base_url=base(srv), auth=ALICE, timeout=10)
    rows = c.get("/api/mailboxes/INBOX/messages").json()
    picnic = next(r for r in rows if r["subject"] == "Plans for the picnic")
    full = c.get(f"/api/messages/{picnic['id']}").json()
    assert "Bring the ketchup." in full["text"]
    assert [a["name"] for a in full["attachments"]] == ["liste des courses.txt"]
    assert any(r["subject"] == "Re: Lunch on Friday?" for r in rows)


def test_phone_layout(srv: MailServer, browser: Any) -> None:
    ctx = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True)
    page = ctx.new_page()
    sign_in(page, srv)
    expect = sync_api.expect
    shot(page, "phone-inbox")
    # The folder list is off-screen until the menu opens it.
    assert page.locator("#sidebar").bounding_box()["x"] < 0
    page.get_by_role("button", name="Folders").click()
    page.wait_for_timeout(300)
    assert page.locator("#sidebar").bounding_box()["x"] >= 0
    shot(page, "phone-folders")
    page.get_by_role("button", name="Folders").click()
    page.get_by_role("link", name=re.compile("Holiday photos")).click()
    expect(page.locator("h1.subject")).to_be_visible()
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"] + 1, "the message page scrolls sideways on a phone"
    shot(page, "phone-message")
    page.goto(base(srv) + "/compose")
    for label in ("To", "Cc", "Bcc", "Subject", "Message"):
        expect(page.get_by_label(label, exact=True)).to_be_visible()
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"] + 1
    shot(page, "phone-compose")
    ctx.close()


# ---------------------------------------------------------------------- hostile HTML
PWN = "http://127.0.0.1:9"  # nothing listens there: any request to it is a failure
XSS_HTML = [
    "<script>alert('x1')</script><p>script tag</p>",
    "<img src=x onerror=\"alert('x2')\"><p>onerror</p>",
    "<a id=l href=\"javascript:alert('x3')\">js link</a> <a href=\"JaVaScRiPt:alert('x3b')\">mixed case</a>",
    "<a href=\"data:text/html,<script>alert('x4')</script>\">data link</a>",
    "<svg onload=\"alert('x5')\"><script>alert('x5b')</script><a xlink:href=\"javascript:alert('x5c')\">s</a></svg>",
    "<div style=\"background:url(javascript:alert('x6'));width:expression(alert('x6b'))\">css</div>"
    f"<p style=\"background-image:url({PWN}/pwn-css)\">bg</p>",
    f"<meta http-equiv=\"refresh\" content=\"0;url={PWN}/pwn-meta\"><p>meta refresh</p>",
    f"<form action=\"{PWN}/pwn-form\" method=post><input name=q value=1><button id=b>go</button></form>"
    f"<button formaction=\"{PWN}/pwn-formaction\">x</button>",
    "<iframe src=\"javascript:alert('x9')\"></iframe><iframe srcdoc=\"<script>parent.alert('x9b')</script>\"></iframe>",
    "<<script>alert('x10');//<</script><scr<script>ipt>alert('x10b')</scr</script>ipt><img \"\"\"><script>alert('x10c')</script>\">",
    "<object data=\"javascript:alert('x11')\"></object><embed src=\"javascript:alert('x11b')\">",
    f"<base href=\"{PWN}/\"><link rel=stylesheet href=\"{PWN}/pwn.css\"><a href=\"relative\">rel</a>",
    "<body onload=\"alert('x13')\"><p>body onload</p></body>",
    "<math><mtext><table><mglyph><style><img src=x onerror=\"alert('x14')\">",
    "<noscript><p title=\"</noscript><img src=x onerror=alert('x15')>\"></noscript>",
    f"<img src=\"{PWN}/pwn-remote.png\"><img srcset=\"{PWN}/pwn-srcset.png 1x\"><video poster=\"{PWN}/pwn-poster\"></video>",
    f"<a href=\"{PWN}/pwn-nav\" target=\"_top\" id=top>top link</a><p>top navigation</p>",
    "<details open ontoggle=\"alert('x18')\"><summary>s</summary></details><marquee onstart=\"alert('x18b')\">m</marquee>",
    "<style>@import 'http://127.0.0.1:9/pwn-import.css'; body{background:url(http://127.0.0.1:9/pwn-style)}</style>s",
    "<isindex action=\"javascript:alert('x20')\" type=image><input type=image src=x onerror=alert('x20b')>",
]


def hostile(i: int, html: str) -> bytes:
    return (
        f"From: \"<script>alert('from')</script>\" <evil{i}@example.org>\r\n"
        f"To: {BOB[0]}\r\nSubject: XSS {i} <img src=x onerror=alert('subject')>\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
        f"<html><body>{html}</body></html>\r\n"
    ).encode()


ENCODED = [
    # UTF-7: a browser that honoured it would see a script tag.
    b"Content-Type: text/html; charset=utf-7\r\n\r\n+ADw-script+AD4-alert('u7')+ADw-/script+AD4-\r\n",
    # Quoted-printable and base64 hide the tags from a naive filter.
    b"Content-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
    b"=3Cscript=3Ealert('qp')=3C/script=3E=3Cimg src=3Dx onerror=3Dalert('qp2')=3E\r\n",
    b"Content-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    b"PHNjcmlwdD5hbGVydCgnYjY0Jyk8L3NjcmlwdD48aW1nIHNyYz14IG9uZXJyb3I9YWxlcnQoJ2I2NDInKT4=\r\n",
    # Latin-1 bytes in a part that claims UTF-8, and a multipart with an HTML attachment.
    b"Content-Type: text/html; charset=utf-8\r\n\r\n<p>caf\xe9 \xff\xfe<script>alert('mix')</script></p>\r\n",
    b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/html\r\n\r\n<p>hi</p>\r\n"
    b"--b\r\nContent-Type: text/html; name=evil.html\r\nContent-Disposition: inline; filename=evil.html\r\n\r\n"
    b"<script>alert('att')</script>\r\n--b--\r\n",
]


def test_hostile_html_never_runs(srv: MailServer, browser: Any) -> None:
    for i, html in enumerate(XSS_HTML):
        send(srv, hostile(i, html), BOB[0])
    for j, body in enumerate(ENCODED):
        send(srv, f"From: e@example.org\r\nTo: {BOB[0]}\r\nSubject: ENC {j}\r\nMIME-Version: 1.0\r\n".encode() + body,
             BOB[0])
    import httpx

    c = httpx.Client(base_url=base(srv), auth=BOB, timeout=10)
    rows = c.get("/api/mailboxes/INBOX/messages", params={"limit": 200}).json()
    targets = [r for r in rows if r["subject"].startswith(("XSS ", "ENC "))]
    assert len(targets) == len(XSS_HTML) + len(ENCODED)

    ctx = browser.new_context(viewport=DESKTOP, accept_downloads=True)
    page = ctx.new_page()
    dialogs: list[str] = []
    requests: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    popups: list[Any] = []
    page.on("request", lambda r: requests.append(r.url))
    # A link the reader clicks opens in a new tab (never this one); that is the
    # link working, so only where popups go is checked, not that they exist.
    ctx.on("page", lambda p: popups.append(p))
    sign_in(page, srv)
    for r in targets:
        url = base(srv) + f"/m/{r['id']}"
        page.goto(url)
        page.wait_for_load_state("load")
        frame = page.locator("iframe.body-frame")
        if frame.count():
            inner = page.frame_locator("iframe.body-frame")
            # Click what a reader might click: links and buttons inside the message.
            for el in inner.locator("a, button, summary").all()[:5]:
                try:
                    el.click(timeout=1000, no_wait_after=True)
                except Exception:
                    pass  # hidden or removed: nothing to click
        page.wait_for_timeout(150)
        assert page.url == url, f"{r['subject']}: navigated to {page.url}"
        assert page.evaluate("typeof window.__pwned") == "undefined"
        shown = page.locator("h1.subject").inner_text()
        assert shown == r["subject"]  # the subject's tags are shown as text
    assert dialogs == [], dialogs
    bad = [u for u in requests if "127.0.0.1:9/" in u or u.startswith(("javascript:", "data:text/html"))]
    assert bad == [], bad
    for p in popups:
        assert p.url.startswith(("http://", "https://", "about:blank", "chrome-error:")), p.url
    # The sanitized HTML the API hands out carries no active content either.
    for r in targets:
        html = c.get(f"/api/messages/{r['id']}").json()["html"] or ""
        # A plain link stays a link (it opens in a new tab when clicked); nothing else
        # may point at the hostile host.
        low = html.lower().replace('href="http://127.0.0.1:9/pwn-nav" target="_blank"', "")
        for needle in ("<script", "onerror=", "onload=", "javascript:", "<iframe", "<form", "<meta", "<svg",
                       "<object", "<embed", "<base", "<link", "<style", "127.0.0.1:9", "ontoggle=", "<math"):
            assert needle not in low, (r["subject"], needle, html)
    ctx.close()
    time.sleep(0)  # keep the module's server alive until here


def test_journey_view(srv: MailServer, browser: Any) -> None:
    deliver(srv, "Carol <carol@example.org>", BOB[0], "Where did it go", "Follow me.")
    ctx = browser.new_context(viewport=DESKTOP)
    page = ctx.new_page()
    sign_in(page, srv)
    page.get_by_role("link", name=re.compile("Where did it go")).first.click()
    page.locator("#journey-link").click()
    page.wait_for_url(re.compile(r".*/journey$"))
    timeline = page.locator("ol.journey").inner_text()
    assert "on its smtp listener" in timeline and "delivered to " + BOB[0] in timeline
    assert "first read by " + BOB[0] + " over HTTP" in timeline
    shot(page, "desktop-journey")
    ctx.close()
