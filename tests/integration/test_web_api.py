"""The HTTP API and the webmail's security rules, over HTTP against `mailhouse serve`."""

from __future__ import annotations

import base64
import html
import json
import re
import smtplib
import threading
import time
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest

httpx = pytest.importorskip("httpx")

from tests.world import MailServer  # noqa: E402

BOB = ("bob@web.test", "bob-secret-pw")
ALICE = ("alice@web.test", "alice-secret-pw")


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MailServer]:
    s = MailServer(tmp_path_factory.mktemp("web"), "web.test", listeners=("smtp", "http", "https"))
    s.cli("user", "add", BOB[0], "--password", BOB[1])
    s.cli("user", "add", ALICE[0], "--password", ALICE[1])
    with s:
        for i in range(5):
            deliver(s, BOB[0], f"plain {i}", f"body number {i}")
        m = EmailMessage()
        m["From"] = "Carol <carol@example.org>"
        m["To"] = BOB[0]
        m["Subject"] = "with attachment"
        m.set_content("see attached")
        m.add_alternative("<p>see <b>attached</b><script>alert(1)</script></p>", subtype="html")
        m.add_attachment("naïve,data\n1,2\n".encode(), maintype="text", subtype="csv", filename="données été.csv")
        m.add_attachment(b"<script>alert(1)</script>", maintype="text", subtype="html", filename="evil.html")
        send(s, m, [BOB[0]])
        deliver(s, ALICE[0], "alice private", "only for alice")
        yield s


def send(s: MailServer, m: EmailMessage, rcpts: list[str]) -> None:
    with smtplib.SMTP("127.0.0.1", s.port("smtp"), timeout=10) as c:
        c.send_message(m, from_addr="sender@example.org", to_addrs=rcpts)


def deliver(s: MailServer, to: str, subject: str, body: str) -> None:
    m = EmailMessage()
    m["From"] = "Sender <sender@example.org>"
    m["To"] = to
    m["Subject"] = subject
    m.set_content(body)
    send(s, m, [to])


def api(s: MailServer, who: tuple[str, str] = BOB) -> httpx.Client:
    return httpx.Client(base_url=f"http://127.0.0.1:{s.port('http')}", auth=who, timeout=20)


def inbox(c: httpx.Client, **params: int) -> list[dict[str, object]]:
    r = c.get("/api/mailboxes/INBOX/messages", params=params)
    assert r.status_code == 200, r.text
    data: list[dict[str, object]] = r.json()
    return data


def by_subject(c: httpx.Client, subject: str, box: str = "INBOX") -> dict[str, object]:
    rows = c.get(f"/api/mailboxes/{box}/messages").json()
    return next(m for m in rows if m["subject"] == subject)


def login(s: MailServer, who: tuple[str, str] = BOB, https: bool = False) -> tuple[httpx.Client, str]:
    """A browser-like session: the login form's token, then the session cookie."""
    base = f"https://127.0.0.1:{s.port('https')}" if https else f"http://127.0.0.1:{s.port('http')}"
    c = httpx.Client(base_url=base, timeout=20, verify=False, headers={"origin": base})
    page = c.get("/login").text
    token = re.search(r'name="_csrf" value="([^"]+)"', page)
    assert token
    r = c.post("/login", data={"_csrf": token.group(1), "address": who[0], "password": who[1], "next": ""})
    assert r.status_code == 303, r.text
    home = c.get("/mail/INBOX")
    csrf = re.search(r'name="csrf-token" content="([^"]+)"', home.text)
    assert csrf
    return c, csrf.group(1)


# ---------------------------------------------------------------------- reading
def test_unauthenticated_is_401_json(srv: MailServer) -> None:
    c = httpx.Client(base_url=f"http://127.0.0.1:{srv.port('http')}")
    for path in ("/api/mailboxes", "/api/mailboxes/INBOX/messages", "/api/messages/1.1.1", "/api/events"):
        r = c.get(path)
        assert r.status_code == 401, path
        assert r.headers["content-type"].startswith("application/json")
        assert "error" in r.json()
        assert r.headers["www-authenticate"].startswith("Basic")
    assert c.get("/api/mailboxes", auth=(BOB[0], "wrong")).status_code == 401
    assert c.get("/api/mailboxes", headers={"authorization": "Bearer mh_1_nope"}).status_code == 401


def test_mailboxes_and_paged_listing(srv: MailServer) -> None:
    c = api(srv)
    boxes = {b["name"]: b for b in c.get("/api/mailboxes").json()}
    assert {"INBOX", "Sent", "Drafts", "Trash", "Junk"} <= set(boxes)
    assert boxes["Sent"]["special_use"] == "\\Sent"
    assert boxes["INBOX"]["total"] >= 6 and boxes["INBOX"]["unseen"] >= 6
    rows = inbox(c)
    assert set(rows[0]) >= {"id", "uid", "from", "to", "subject", "date", "flags", "size", "preview"}
    uids = [int(str(m["uid"])) for m in rows]
    assert uids == sorted(uids, reverse=True)  # newest first
    assert [m["uid"] for m in inbox(c, limit=2, offset=1)] == [m["uid"] for m in rows[1:3]]
    assert c.get("/api/mailboxes/INBOX/messages", params={"limit": 0}).status_code == 400
    assert c.get("/api/mailboxes/INBOX/messages", params={"offset": "x"}).status_code == 400
    assert c.get("/api/mailboxes/Nope/messages").status_code == 404


def test_message_detail_attachments_and_raw(srv: MailServer) -> None:
    c = api(srv)
    row = by_subject(c, "with attachment")
    m = c.get(f"/api/messages/{row['id']}").json()
    assert m["from"] == "carol@example.org" and m["to"] == [BOB[0]] and m["cc"] == []
    assert m["text"].strip() == "see attached"
    assert "<b>attached</b>" in m["html"] and "script" not in m["html"]
    names = {a["name"]: a for a in m["attachments"]}
    csv = names["données été.csv"]
    assert csv["type"] == "text/csv"
    r = c.get(csv["url"])
    assert r.status_code == 200 and r.content == "naïve,data\n1,2\n".encode()
    assert r.headers["content-type"].startswith("text/csv")
    disp = r.headers["content-disposition"]
    assert disp.startswith("attachment;") and "filename*=UTF-8''donn%C3%A9es%20%C3%A9t%C3%A9.csv" in disp
    evil = c.get(names["evil.html"]["url"])
    assert evil.headers["content-disposition"].startswith("attachment")
    assert "sandbox" in evil.headers["content-security-policy"]
    assert evil.headers["x-content-type-options"] == "nosniff"
    raw = c.get(f"/api/messages/{row['id']}/raw")
    assert raw.headers["content-type"] == "message/rfc822"
    assert b"Subject: with attachment" in raw.content
    shown = srv.cli("mailbox", "show", BOB[0], str(row["uid"])).stdout
    assert raw.content == shown  # byte for byte
    assert c.get(f"/api/messages/{row['id']}/attachments/99").status_code == 404


def test_other_accounts_data_is_404_like_missing(srv: MailServer) -> None:
    alice_row = inbox(api(srv, ALICE))[0]
    c = api(srv)
    ident = str(alice_row["id"])
    for method, path in (("GET", f"/api/messages/{ident}"), ("GET", f"/api/messages/{ident}/raw"),
                         ("DELETE", f"/api/messages/{ident}"), ("GET", f"/api/messages/{ident}/attachments/1")):
        r = c.request(method, path)
        assert r.status_code == 404 and r.json() == {"error": "no such message"}, (method, path)
    r = c.patch(f"/api/messages/{ident}", json={"add_flags": ["\\Seen"]})
    assert r.status_code == 404
    fid, validity, _ = ident.split(".")
    assert c.get(f"/api/messages/{fid}.{validity}.999999").json() == {"error": "no such message"}
    assert c.get("/api/messages/garbage").status_code == 404
    # Alice's message is untouched.
    assert api(srv, ALICE).get(f"/api/messages/{ident}").json()["flags"] == []


def test_patch_flags_move_and_delete(srv: MailServer) -> None:
    c = api(srv)
    row = by_subject(c, "plain 1")
    ident = row["id"]
    r = c.patch(f"/api/messages/{ident}", json={"add_flags": ["\\Seen", "\\Flagged", "$Work"]})
    assert r.status_code == 200 and set(r.json()["flags"]) == {"\\Seen", "\\Flagged", "$Work"}
    r = c.patch(f"/api/messages/{ident}", json={"remove_flags": ["\\Flagged"]})
    assert set(r.json()["flags"]) == {"\\Seen", "$Work"}
    assert c.patch(f"/api/messages/{ident}", json={"add_flags": ["bad flag"]}).status_code == 400
    assert c.patch(f"/api/messages/{ident}", json={"bogus": 1}).status_code == 400
    assert c.patch(f"/api/messages/{ident}", json={"mailbox": "Nope"}).status_code == 404
    moved = c.patch(f"/api/messages/{ident}", json={"mailbox": "Archive"}).json()
    assert moved["mailbox"] == "Archive" and moved["id"] != ident
    assert c.get(f"/api/messages/{ident}").status_code == 404
    d = c.delete(f"/api/messages/{moved['id']}").json()
    assert d["removed"] is False and d["mailbox"] == "Trash"
    d2 = c.delete(f"/api/messages/{d['id']}").json()
    assert d2 == {"removed": True, "id": None, "mailbox": None}
    assert c.get(f"/api/messages/{d['id']}").status_code == 404


def test_send_via_api_reaches_recipient_and_sent(srv: MailServer) -> None:
    c = api(srv)
    r = c.post("/api/messages", json={
        "to": [f"Alice <{ALICE[0]}>"], "cc": [], "bcc": ["hidden@web.test"], "subject": "Grüße über die API",
        "text": "hello alice", "html": "<p>hello <i>alice</i></p>",
        "attachments": [{"name": "a.txt", "type": "text/plain", "content_base64": base64.b64encode(b"A!").decode()}],
    })
    assert r.status_code == 400  # hidden@web.test does not exist: refused like SMTP RCPT
    assert "unknown" in r.json()["error"].lower()
    r = c.post("/api/messages", json={
        "to": [f"Alice <{ALICE[0]}>"], "bcc": [BOB[0]], "subject": "Grüße über die API",
        "text": "hello alice", "html": "<p>hello <i>alice</i></p>",
        "attachments": [{"name": "a.txt", "type": "text/plain", "content_base64": base64.b64encode(b"A!").decode()}],
    })
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["queue_id"] and body["message_id"]
    got = by_subject(api(srv, ALICE), "Grüße über die API")
    full = api(srv, ALICE).get(f"/api/messages/{got['id']}").json()
    assert full["from"] == BOB[0] and full["text"].strip() == "hello alice"
    assert [a["name"] for a in full["attachments"]] == ["a.txt"]
    raw = api(srv, ALICE).get(f"/api/messages/{got['id']}/raw").content
    assert b"Bcc" not in raw and b"bob@web.test" in raw  # From only
    sent = by_subject(c, "Grüße über die API", "Sent")
    assert "\\Seen" in sent["flags"]
    sent_raw = c.get(f"/api/messages/{sent['id']}/raw").content
    assert b"Bcc: bob@web.test" in sent_raw
    trace = srv.cli("trace", body["queue_id"], "--json", check=False)
    if trace.returncode == 0:
        assert b"received" in trace.stdout
    for bad in ({"to": "x"}, {"to": ["not an address"]}, {"to": [ALICE[0]], "attachments": [{"name": "x"}]},
                {"to": [ALICE[0]], "extra": 1}, {"to": [ALICE[0]], "attachments": [
                    {"name": "x", "type": "a/b", "content_base64": "!!"}]}, {}):
        assert c.post("/api/messages", json=bad).status_code == 400, bad
    assert c.post("/api/messages", content=b"to=x", headers={"content-type": "text/plain"}).status_code == 415


def test_events_stream_reports_new_mail(srv: MailServer) -> None:
    got: list[str] = []
    ready = threading.Event()

    def listen() -> None:
        with api(srv) as c, c.stream("GET", "/api/events", timeout=15) as r:
            assert r.headers["content-type"].startswith("text/event-stream")
            for line in r.iter_lines():
                ready.set()
                if line.startswith("data:"):
                    got.append(line)
                    return

    t = threading.Thread(target=listen, daemon=True)
    t.start()
    assert ready.wait(10)
    time.sleep(0.2)
    deliver(srv, BOB[0], "event please", "x")
    t.join(10)
    assert got and json.loads(got[0][5:]) == {"kind": "exists", "mailbox": "INBOX"}


def test_openapi_document(srv: MailServer) -> None:
    doc = httpx.get(f"http://127.0.0.1:{srv.port('http')}/api/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    for path in ("/api/mailboxes", "/api/mailboxes/{name}/messages", "/api/messages", "/api/messages/{id}",
                 "/api/messages/{id}/raw", "/api/events"):
        assert path in doc["paths"]


# ---------------------------------------------------------------------- tokens, sessions, CSRF
def test_tokens_made_in_settings_work_and_revoke(srv: MailServer) -> None:
    c, csrf = login(srv)
    page = c.post("/settings/tokens", data={"_csrf": csrf, "name": "script"})
    token = re.search(r'id="new-token">(mh_[^<]+)<', page.text)
    assert token, page.text
    bearer = {"authorization": f"Bearer {token.group(1)}"}
    base = f"http://127.0.0.1:{srv.port('http')}"
    assert httpx.get(base + "/api/mailboxes", headers=bearer).status_code == 200
    settings = c.get("/settings").text
    assert token.group(1) not in settings  # shown once only
    token_id = re.search(r'name="id" value="(\d+)"', settings)
    assert token_id
    assert c.post("/settings/tokens/revoke", data={"_csrf": csrf, "id": token_id.group(1)}).status_code == 303
    assert httpx.get(base + "/api/mailboxes", headers=bearer).status_code == 401


def test_session_cookie_flags_and_csrf(srv: MailServer) -> None:
    c, csrf = login(srv)
    base = f"http://127.0.0.1:{srv.port('http')}"
    # Cookie attributes, as the browser receives them.
    first = httpx.Client(base_url=base)
    page = first.get("/login")
    tok = re.search(r'name="_csrf" value="([^"]+)"', page.text)
    assert tok
    r = first.post("/login", data={"_csrf": tok.group(1), "address": BOB[0], "password": BOB[1]})
    cookie = r.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "secure" not in cookie
    row = by_subject(api(srv), "plain 2")
    # The session works for the API's GETs, but not for a change without the token.
    assert c.get("/api/mailboxes").status_code == 200
    assert c.patch(f"/api/messages/{row['id']}", json={"add_flags": ["\\Flagged"]}).status_code == 403
    ok = c.patch(f"/api/messages/{row['id']}", json={"add_flags": ["\\Flagged"]}, headers={"x-csrf-token": csrf})
    assert ok.status_code == 200
    # Webmail forms: no token, wrong token, or a foreign Origin are refused.
    for data, headers in (({"action": "read", "id": row["id"]}, {}),
                          ({"action": "read", "id": row["id"], "_csrf": "x"}, {}),
                          ({"action": "read", "id": row["id"], "_csrf": csrf}, {"origin": "https://evil.example"})):
        assert c.post("/act", data=data, headers=headers).status_code == 403
    # A login form posted from elsewhere (no token) does not log in.
    assert httpx.post(base + "/login", data={"address": BOB[0], "password": BOB[1]}).status_code == 403
    # Logging out ends the session.
    assert c.post("/logout", data={"_csrf": csrf}).status_code == 303
    assert c.get("/mail/INBOX").status_code == 303
    assert c.get("/api/mailboxes").status_code == 401


def test_security_headers_and_no_open_redirect(srv: MailServer) -> None:
    base = f"http://127.0.0.1:{srv.port('http')}"
    r = httpx.get(base + "/login")
    h = r.headers
    assert h["x-content-type-options"] == "nosniff"
    assert "frame-ancestors 'none'" in h["content-security-policy"]
    assert "script-src 'self'" in h["content-security-policy"]
    assert h["referrer-policy"] == "same-origin"
    for evil in ("//evil.example/x", "https://evil.example/", "/\\evil.example", "http:evil"):
        c = httpx.Client(base_url=base, headers={"origin": base})
        page = c.get("/login", params={"next": evil}).text
        tok = re.search(r'name="_csrf" value="([^"]+)"', page)
        assert tok
        r = c.post("/login", data={"_csrf": tok.group(1), "address": BOB[0], "password": BOB[1], "next": evil})
        assert r.status_code == 303 and r.headers["location"] == "/mail/INBOX", evil
    c, _ = login(srv)
    row = by_subject(api(srv), "with attachment")
    frame = c.get(f"/m/{row['id']}/frame")
    csp = frame.headers["content-security-policy"]
    assert "sandbox" in csp and "script" not in csp.replace("script-src", "") and "img-src data:;" in csp
    assert "frame-ancestors 'self'" in csp


def test_https_listener_sets_secure_cookies(srv: MailServer) -> None:
    c, _ = login(srv, https=True)
    assert c.get("/mail/INBOX").status_code == 200
    r = httpx.get(f"https://127.0.0.1:{srv.port('https')}/login", verify=False)
    assert "secure" in r.headers["set-cookie"].lower()
    assert "max-age" in r.headers["strict-transport-security"]


def test_webmail_pages_render(srv: MailServer) -> None:
    c, csrf = login(srv)
    inbox_page = c.get("/mail/INBOX").text
    assert "with attachment" in inbox_page and 'class="clip"' in inbox_page
    row = by_subject(api(srv), "with attachment")
    page = c.get(f"/m/{row['id']}").text
    assert "données été.csv" in page and "<script>alert" not in page
    assert "\\Seen" in api(srv).get(f"/api/messages/{row['id']}").json()["flags"]
    found = c.get("/search", params={"subject": "attachment"}).text
    assert "with attachment" in found and "plain 3" not in found
    assert "plain 3" in c.get("/search", params={"body": "number 3"}).text
    original = c.get(f"/m/{row['id']}/original")
    assert original.headers["content-type"].startswith("text/plain") and "Subject: with attachment" in original.text
    # Folders: create, rename, delete.
    for data in ({"action": "create", "name": "Projects"}, {"action": "rename", "name": "Projects", "new": "Work"}):
        assert c.post("/settings/folders", data={**data, "_csrf": csrf}).status_code == 303
    names = [b["name"] for b in api(srv).get("/api/mailboxes").json()]
    assert "Work" in names and "Projects" not in names
    c.post("/settings/folders", data={"action": "delete", "name": "Work", "_csrf": csrf})
    assert "Work" not in [b["name"] for b in api(srv).get("/api/mailboxes").json()]


def test_compose_send_draft_and_reply(srv: MailServer, tmp_path: Path) -> None:
    c, csrf = login(srv)
    files = {"attachments": ("notes ü.txt", b"attached text", "text/plain")}
    r = c.post("/compose", data={"_csrf": csrf, "action": "save", "to": ALICE[0], "subject": "draft one",
                                 "body": "first words"}, files=files)
    assert r.status_code == 303 and "/compose?draft=" in r.headers["location"]
    draft_page = c.get(r.headers["location"]).text
    assert "first words" in draft_page and "notes ü.txt" in draft_page
    draft_id = re.search(r'name="draft_id" value="([^"]+)"', draft_page)
    section = re.search(r'name="carry" value="([^"]+)"', draft_page)
    assert draft_id and section
    r = c.post("/compose", data={"_csrf": csrf, "action": "send", "to": ALICE[0], "subject": "draft one",
                                 "body": "final words", "draft_id": draft_id.group(1),
                                 "carry_id": draft_id.group(1), "carry": section.group(1)})
    assert r.status_code == 303, r.text
    assert [m for m in api(srv).get("/api/mailboxes/Drafts/messages").json() if m["subject"] == "draft one"] == []
    got = by_subject(api(srv, ALICE), "draft one")
    full = api(srv, ALICE).get(f"/api/messages/{got['id']}").json()
    assert full["text"].strip() == "final words" and [a["name"] for a in full["attachments"]] == ["notes ü.txt"]
    # Alice replies from the webmail: threading headers, quoted text, Answered flag.
    a, acsrf = login(srv, ALICE)
    form = a.get("/compose", params={"reply": got["id"]}).text
    assert "Re: draft one" in form and "&gt; final words" in form
    fields = {k: html.unescape(re.search(rf'name="{k}" value="([^"]*)"', form).group(1))  # type: ignore[union-attr]
              for k in ("in_reply_to", "references", "reply_id")}
    r = a.post("/compose", data={"_csrf": acsrf, "action": "send", "to": BOB[0], "subject": "Re: draft one",
                                 "body": "thanks", **fields})
    assert r.status_code == 303
    assert "\\Answered" in api(srv, ALICE).get(f"/api/messages/{got['id']}").json()["flags"]
    reply = by_subject(api(srv), "Re: draft one")
    raw = api(srv).get(f"/api/messages/{reply['id']}/raw").content
    assert b"In-Reply-To: <" in raw
    # Forwarding carries the attachments over.
    fwd = c.get("/compose", params={"forward": by_subject(api(srv), "with attachment")["id"]}).text
    assert "Fwd: with attachment" in fwd and "données été.csv" in fwd and 'name="carry"' in fwd
    # A bad address comes back to the form with the text kept.
    r = a.post("/compose", data={"_csrf": acsrf, "action": "send", "to": "nobody", "body": "keep me"})
    assert r.status_code == 400 and "keep me" in r.text


def test_list_grouped_by_conversation(srv: MailServer) -> None:
    deliver(srv, BOB[0], "Lunch plans", "first")
    deliver(srv, BOB[0], "Re: Lunch plans", "second")
    deliver(srv, BOB[0], "RE: re:  lunch   PLANS", "third")
    c, _ = login(srv)
    flat = c.get("/mail/INBOX").text
    assert flat.count("unch plans") + flat.count("lunch   PLANS") >= 3 and "Group by conversation" in flat
    grouped = c.get("/mail/INBOX", params={"threads": "on"}).text
    assert 'title="3 messages in this conversation"' in grouped
    assert "Show every message" in grouped and "Lunch plans</span>" not in grouped.split("3 messages")[1]


def test_thread_keys() -> None:
    from mailhouse.web.views import group_threads, thread_key

    assert thread_key("Re: Fwd: AW: [x]") == "[x]"
    assert thread_key("  Re:   Hello   World ") == thread_key("hello world")
    assert thread_key("") is None and thread_key("Re:") is None
    rows = [{"subject": s, "seen": seen, "flagged": False} for s, seen in
            (("Re: a", True), ("b", True), ("a", False), ("", True), ("", True))]
    out = group_threads(rows)
    assert [(r["subject"], r["thread_count"], r["seen"]) for r in out] == [
        ("Re: a", 2, False), ("b", 1, True), ("", 1, True), ("", 1, True)]


def test_journey_page_shows_each_recipients_copy(srv: MailServer) -> None:
    c = api(srv)
    r = c.post("/api/messages", json={"to": [ALICE[0], "far@remote.example"], "subject": "journey check",
                                      "text": "where is it?"})
    assert r.status_code == 202, r.text
    sent = by_subject(c, "journey check", "Sent")
    web, _ = login(srv)
    page = web.get(f"/m/{sent['id']}/journey").text
    assert "Where each recipient" in page and "far@remote.example" in page
    assert "on its http listener" in page and "delivered to " + ALICE[0] in page
    # Alice, a recipient, sees how it reached her, not the other recipient's copy.
    got = by_subject(api(srv, ALICE), "journey check")
    alice, _ = login(srv, ALICE)
    hers = alice.get(f"/m/{got['id']}/journey").text
    assert "delivered to " + ALICE[0] in hers and "Where each recipient" not in hers
