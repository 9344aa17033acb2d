"""The webmail: server-rendered pages (Jinja2) and their form posts.

Every state-changing request is a POST carrying the session's CSRF token (a form
field, or X-CSRF-Token from the scripts) and, when the browser sends one, an
Origin of this server; the session cookie is SameSite=Strict besides. Redirects
only ever go to paths of this server.
"""

from __future__ import annotations

import calendar
import hmac
import math
import re
import secrets
import time
from typing import Any
from urllib.parse import quote, urlencode

from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
)
from starlette.routing import Route

from .. import log
from ..mime.headers import decode_bytes
from ..store.base import StoreError
from ..store.models import Account, Folder, Message, MessageQuery
from . import render
from .api import _web, attachment_url, client_ip
from .auth import LOGIN_COOKIE, SESSION_COOKIE, Session, hash_token_secret, new_token
from .mail import (
    Mail,
    MailError,
    Outgoing,
    format_address,
    iso,
    parse_addresses,
    valid_folder_name,
)

logger = log.get("http")

PAGE_SIZE = 50
SEARCH_LIMIT = 200
FOLDER_ORDER = {"INBOX": 0, "\\Drafts": 1, "\\Sent": 2, "\\Archive": 3, "\\Junk": 4, "\\Trash": 5}
# Glyphs every common font has (emoji fonts are often missing on Linux desktops).
ICONS = {"INBOX": "✉", "\\Drafts": "✎", "\\Sent": "➤", "\\Archive": "▤", "\\Junk": "⚠", "\\Trash": "✖"}


class LoginRequired(Exception):
    pass


def safe_path(value: str | None, default: str = "/") -> str:
    """A redirect target of this server only: a path, never //host or a scheme."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return default
    if any(ord(c) < 32 for c in value):
        return default
    return value


def redirect(path: str) -> RedirectResponse:
    return RedirectResponse(safe_path(path), status_code=303)


def session_of(request: Request) -> Session | None:
    s: Session | None = _web(request).sessions.get(request.cookies.get(SESSION_COOKIE))
    return s


def require(request: Request) -> tuple[Session, Account]:
    s = session_of(request)
    if s is not None:
        account = _web(request).ctx.store.find_account(s.address)
        if account is not None and account.id == s.account_id:
            return s, account
    raise LoginRequired()


def _same_origin(request: Request) -> bool:
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        # Older browsers send none on same-origin form posts; SameSite=Strict and
        # the token still stand. "null" comes from sandboxed frames: refused.
        return origin is None
    host = request.headers.get("host", "")
    return origin in (f"http://{host}", f"https://{host}")


async def posted(request: Request, session: Session) -> FormData:
    limit = _web(request).ctx.config.limits.max_message_size
    form = await request.form(max_files=100, max_fields=2000, max_part_size=limit)
    token = form.get("_csrf")
    if (
        not isinstance(token, str)
        or not hmac.compare_digest(token.encode(), session.csrf.encode())
        or not _same_origin(request)
    ):
        raise MailError("this form has expired; reload the page and try again", 403)
    return form


def _sort_key(f: dict[str, Any]) -> tuple[int, str]:
    key = f["name"] if f["name"] == "INBOX" else (f["special_use"] or "")
    return (FOLDER_ORDER.get(key, 9), f["name"].lower())


async def page(request: Request, template: str, status: int = 200, **values: Any) -> HTMLResponse:
    web = _web(request)
    s, account = require(request)
    boxes = sorted(await web.mail.mailboxes(account), key=_sort_key)
    for b in boxes:
        b["icon"] = ICONS.get(b["name"] if b["name"] == "INBOX" else (b["special_use"] or ""), "▸")
        b["url"] = folder_url(b["name"])
        b["depth"] = b["name"].count("/")
        b["label"] = b["name"].rsplit("/", 1)[-1]
    # A background refresh (new mail) must not eat a notice meant for the next page.
    flash: list[str] = []
    if request.headers.get("x-refresh") != "1":
        flash = list(s.flash)
        s.flash.clear()
    html = web.templates.get_template(template).render(
        account=account.address, csrf=s.csrf, folders=boxes, flash=flash, current=values.pop("current", None),
        **values,
    )
    return HTMLResponse(html, status_code=status)


def folder_url(name: str, **query: Any) -> str:
    q = {k: v for k, v in query.items() if v not in (None, "", 1)}
    return "/mail/" + quote(name, safe="/") + ("?" + urlencode(q) if q else "")


def error_page(request: Request, status: int, text: str, headers: dict[str, str] | None = None) -> Response:
    web = _web(request)
    html = web.templates.get_template("error.html").render(status=status, text=text)
    return HTMLResponse(html, status_code=status, headers=headers)


def _row(folder: Folder, msg: Message) -> dict[str, Any]:
    s = Mail.summary(folder, msg)
    p = msg.parse
    outgoing = folder.special_use in ("\\Sent", "\\Drafts")
    who = ", ".join(p.get("to") or []) if outgoing else (s["from_name"] or s["from"])
    ts = p.get("date") if isinstance(p.get("date"), int) else msg.internal_date
    return {
        **s,
        "who": ("To: " + who) if outgoing else who or "(unknown sender)",
        "url": f"/m/{s['id']}",
        "seen": "\\Seen" in msg.flags,
        "flagged": "\\Flagged" in msg.flags,
        "answered": "\\Answered" in msg.flags,
        "draft": "\\Draft" in msg.flags,
        "when": short_date(ts),
        "folder_name": folder.name,
    }


_REPLY_PREFIX = re.compile(r"^\s*(?:(?:re|fwd?|aw|sv|tr|wg)\s*(?:\[\d+\])?\s*:\s*)+", re.I)


def thread_key(subject: str | None) -> str | None:
    """The conversation a subject belongs to (RFC 5256's base subject, simplified):
    reply and forward prefixes removed, case and spacing folded. None: no grouping."""
    base = " ".join(_REPLY_PREFIX.sub("", subject or "").split()).lower()
    return base or None


def group_threads(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows (newest first) folded into one row per conversation: its newest message,
    how many the page holds, unread if any of them is."""
    out: list[dict[str, Any]] = []
    seen: dict[str, dict[str, Any]] = {}
    for r in rows:
        key = thread_key(r.get("subject"))
        head = seen.get(key) if key is not None else None
        if head is None:
            head = {**r, "thread_count": 1}
            out.append(head)
            if key is not None:
                seen[key] = head
            continue
        head["thread_count"] += 1
        head["seen"] = head["seen"] and r["seen"]
        head["flagged"] = head["flagged"] or r["flagged"]
        head["has_attachments"] = head.get("has_attachments") or r.get("has_attachments")
    return out


def short_date(ts: float | int | None) -> str:
    if ts is None:
        return ""
    try:
        t = time.gmtime(float(ts))
    except (OverflowError, OSError, ValueError):
        return ""
    now = time.gmtime()
    if t[:3] == now[:3]:
        return time.strftime("%H:%M", t)
    if t.tm_year == now.tm_year:
        return time.strftime("%b %d", t)
    return time.strftime("%Y-%m-%d", t)


# ---------------------------------------------------------------------- login
async def login_form(request: Request) -> Response:
    if session_of(request) is not None:
        return redirect("/mail/INBOX")
    token = secrets.token_urlsafe(24)
    html = _web(request).templates.get_template("login.html").render(
        csrf=token, error=None, address="", next=safe_path(request.query_params.get("next"), ""),
    )
    resp = HTMLResponse(html)
    _set_cookie(request, resp, LOGIN_COOKIE, token, 3600)
    return resp


def _set_cookie(request: Request, resp: Response, name: str, value: str, max_age: int | None) -> None:
    resp.set_cookie(name, value, max_age=max_age, path="/", httponly=True, samesite="strict",
                    secure=_web(request).secure)


async def login(request: Request) -> Response:
    web = _web(request)
    form = await request.form(max_files=0, max_fields=10, max_part_size=4096)
    address = str(form.get("address") or "").strip()
    password = str(form.get("password") or "")
    token = str(form.get("_csrf") or "")
    cookie = request.cookies.get(LOGIN_COOKIE, "")
    nxt = safe_path(str(form.get("next") or ""), "/mail/INBOX")
    ip = client_ip(request)

    def again(error: str, status: int, headers: dict[str, str] | None = None) -> Response:
        new = secrets.token_urlsafe(24)
        html = web.templates.get_template("login.html").render(csrf=new, error=error, address=address, next=nxt)
        resp = HTMLResponse(html, status_code=status, headers=headers)
        _set_cookie(request, resp, LOGIN_COOKIE, new, 3600)
        return resp

    if not token or not cookie or not hmac.compare_digest(token.encode(), cookie.encode()) or not _same_origin(request):
        return again("The form expired. Please sign in again.", 403)
    if web.limiter.blocked(ip):
        return again("Too many failed sign-ins from your address. Try again later.", 429,
                     {"retry-after": str(web.limiter.retry_after(ip))})
    account = await web.creds.password(address, password, ip)
    if account is None:
        logger.info("[%s]: webmail login failed for %r", ip, address[:100])
        return again("Wrong address or password.", 401)
    logger.info("[%s]: webmail login of %s", ip, account.address)
    s = web.sessions.create(account)
    resp = RedirectResponse(nxt, status_code=303)
    _set_cookie(request, resp, SESSION_COOKIE, s.id, None)
    resp.delete_cookie(LOGIN_COOKIE, path="/")
    return resp


async def logout(request: Request) -> Response:
    s, _ = require(request)
    await posted(request, s)
    _web(request).sessions.end(s.id)
    resp = redirect("/login")
    resp.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict", secure=_web(request).secure)
    return resp


async def home(request: Request) -> Response:
    return redirect("/mail/INBOX" if session_of(request) else "/login")


# ---------------------------------------------------------------------- lists
async def mailbox(request: Request) -> Response:
    _, account = require(request)
    mail: Mail = _web(request).mail
    folder = await mail.folder(account, request.path_params["name"])
    try:
        pageno = max(1, min(int(request.query_params.get("page", "1")), 10_000_000))
    except ValueError:
        pageno = 1
    counts = (await mail.counts(account)).get(folder.id, (0, 0))
    total = counts[0]
    pages = max(1, math.ceil(total / PAGE_SIZE))
    pageno = min(pageno, pages)
    msgs = await mail.page(folder, PAGE_SIZE, (pageno - 1) * PAGE_SIZE)
    first = (pageno - 1) * PAGE_SIZE + 1 if msgs else 0
    threads = "on" if request.query_params.get("threads") == "on" else None
    rows = [_row(folder, m) for m in msgs]
    if threads:
        rows = group_threads(rows)
    return await page(
        request, "list.html", current=folder.name, title=folder.name, folder=folder.name,
        rows=rows, total=total, unseen=counts[1], pageno=pageno, pages=pages,
        first=first, last=first + len(msgs) - 1 if msgs else 0,
        newer=folder_url(folder.name, page=pageno - 1, threads=threads) if pageno > 1 else None,
        older=folder_url(folder.name, page=pageno + 1, threads=threads) if pageno < pages else None,
        back=folder_url(folder.name, page=pageno, threads=threads), search=None,
        trash=folder.special_use == "\\Trash", threads=threads,
        threads_toggle=folder_url(folder.name, page=pageno, threads=None if threads else "on"),
    )


def _day(value: str, end: bool = False) -> float | None:
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value or ""):
        return None
    try:
        t = time.strptime(value, "%Y-%m-%d")
    except ValueError:
        return None
    return float(calendar.timegm(t)) + (86400.0 if end else 0.0)


async def search(request: Request) -> Response:
    _, account = require(request)
    web = _web(request)
    q = request.query_params
    fields = {k: (q.get(k) or "").strip()[:200] for k in ("q", "from", "to", "subject", "body", "since", "before", "folder")}
    folders = {f.id: f for f in await web.mail.folders(account)}
    folder_id = None
    if fields["folder"]:
        chosen = next((f for f in folders.values() if f.name == fields["folder"]), None)
        folder_id = chosen.id if chosen else -1
    query = MessageQuery(
        folder_id=folder_id, text=fields["q"], sender=fields["from"], recipient=fields["to"],
        subject=fields["subject"], body=fields["body"], since=_day(fields["since"]),
        before=_day(fields["before"], end=True),
    )
    searched = any(v for k, v in fields.items() if k != "folder")
    msgs = await web.ctx.store.search_messages(account.id, query, SEARCH_LIMIT) if searched else []
    rows = [_row(folders[m.folder_id], m) for m in msgs if m.folder_id in folders]
    back = "/search?" + urlencode({k: v for k, v in fields.items() if v})
    return await page(
        request, "list.html", current=None, title="Search", folder=None, rows=rows, total=len(rows), unseen=0,
        pageno=1, pages=1, first=1 if rows else 0, last=len(rows), newer=None, older=None, back=back,
        search=fields, searched=searched, limit=SEARCH_LIMIT, trash=False,
    )


async def contacts(request: Request) -> Response:
    _, account = require(request)
    q = (request.query_params.get("q") or "").strip().lower()
    found = [c for c in await _web(request).mail.contacts(account) if q and q in c.lower()] if q else []
    return JSONResponse(found[:10])


# ---------------------------------------------------------------------- one message
async def show(request: Request) -> Response:
    _, account = require(request)
    mail: Mail = _web(request).mail
    ident = request.path_params["id"]
    folder, msg = await mail.get(account, ident)
    if folder.special_use == "\\Drafts":
        return redirect("/compose?" + urlencode({"draft": ident}))
    if "\\Seen" not in msg.flags:
        await mail.set_flags(folder, msg.uid, ["\\Seen"], [])
        msg.flags.add("\\Seen")
    if msg.queue_id:  # the journey's last step: its recipient read it
        await _web(request).ctx.store.note_first_read(msg.queue_id, msg.message_id, account.address, "HTTP")
    raw = await mail.raw(msg)
    images = request.query_params.get("images") == "1"
    r = render.render(raw, msg.parse, allow_remote=images)
    p = msg.parse
    row = _row(folder, msg)
    date = p.get("date") if isinstance(p.get("date"), int) else msg.internal_date
    return await page(
        request, "message.html", current=folder.name, title=p.get("subject") or "(no subject)", m=row,
        folder=folder.name, trash=folder.special_use == "\\Trash",
        junk=folder.special_use == "\\Junk",
        sender=format_address(p.get("from_name") or "", p.get("from_address") or ""),
        to=", ".join(p.get("to") or []), cc=", ".join(p.get("cc") or []),
        date_iso=iso(date), date_text=time.strftime("%a, %d %b %Y %H:%M UTC", time.gmtime(float(date or 0))),
        text_html=render.text_to_html(r.text) if r.text is not None and r.html is None else None,
        frame=(f"/m/{ident}/frame" + ("?images=1" if images else "")) if r.html is not None else None,
        remote_images=r.remote_images, images=images, headers=r.headers,
        attachments=[{"name": a.name, "type": a.type, "size": human_size(a.size),
                      "url": attachment_url(ident, a.section)} for a in r.attachments],
        back=folder_url(folder.name),
    )


def human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GB"


async def frame(request: Request) -> Response:
    _, account = require(request)
    mail: Mail = _web(request).mail
    _, msg = await mail.get(account, request.path_params["id"])
    raw = await mail.raw(msg)
    images = request.query_params.get("images") == "1"
    r = render.render(raw, msg.parse, allow_remote=images)
    img = "img-src data: https: http:" if images else "img-src data:"
    csp = (
        f"default-src 'none'; {img}; style-src 'unsafe-inline'; font-src data:; form-action 'none'; "
        "base-uri 'none'; frame-ancestors 'self'; sandbox allow-popups allow-popups-to-escape-sandbox"
    )
    return HTMLResponse(render.html_document(r.html or ""), headers={
        "content-security-policy": csp, "x-frame-options": "SAMEORIGIN",
    })


async def journey(request: Request) -> Response:
    """The message's journey on this server, as `mailhouse trace` tells it: for the
    sender, where each recipient's copy is; for a recipient, how it reached them."""
    from ..cli.trace import describe

    _, account = require(request)
    web = _web(request)
    ident = request.path_params["id"]
    folder, msg = await web.mail.get(account, ident)
    events = []
    # A copy saved by a client (Sent over IMAP, the webmail's own) has no queue id:
    # the Message-ID ties it to the journey of what was sent.
    mid = msg.message_id or str(msg.parse.get("message_id") or "").strip().strip("<>")
    if mid:
        events = await web.ctx.store.journey(mid)
    if msg.queue_id and not events:
        events = await web.ctx.store.journey(msg.queue_id)
    mine = account.address.lower()
    is_sender = any(e.kind == "received" and str(e.data.get("auth_user") or "").lower() == mine for e in events)
    shown = []
    for e in events:
        owner = e.data.get("account")
        if not is_sender and e.kind in ("delivered", "read") and str(owner or "").lower() != mine:
            continue  # another recipient's copy is theirs to see
        lines = describe(e)
        shown.append({"when": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(e.time)), "queue_id": e.queue_id,
                      "kind": e.kind, "head": lines[0], "more": lines[1:]})
    copies = []
    if is_sender:
        for qid in dict.fromkeys(e.queue_id for e in events if e.kind == "queued"):
            entry = await web.ctx.store.get_queue_entry(qid)
            if entry is None:
                continue
            for r in entry.recipients:
                copies.append({"address": r.address, "state": r.state, "reply": r.last_reply or "",
                               "next": "held" if entry.held else short_date(entry.next_attempt)})
    return await page(
        request, "journey.html", current=folder.name, title="Journey", m=_row(folder, msg), events=shown,
        copies=copies, back=f"/m/{ident}",
    )


async def original(request: Request) -> Response:
    _, account = require(request)
    mail: Mail = _web(request).mail
    _, msg = await mail.get(account, request.path_params["id"])
    raw = await mail.raw(msg)
    text = decode_bytes(raw[: 4 * 1024 * 1024], "utf-8")
    return PlainTextResponse(text, headers={"content-security-policy": "default-src 'none'; sandbox"})


async def act(request: Request) -> Response:
    """One form for every action on one or more messages (list and message pages)."""
    s, account = require(request)
    form = await posted(request, s)
    web = _web(request)
    mail: Mail = web.mail
    action = str(form.get("action") or "")
    back = safe_path(str(form.get("back") or ""), "/mail/INBOX")
    ids = [str(v) for v in form.getlist("id") if isinstance(v, str)]
    if not ids:
        s.flash.append("Select at least one message.")
        return redirect(back)
    groups: dict[int, tuple[Folder, list[int]]] = {}
    for ident in ids:
        folder, uid = await mail.locate(account, ident)
        groups.setdefault(folder.id, (folder, []))[1].append(uid)
    flag_ops = {
        "read": ("add", "\\Seen"), "unread": ("remove", "\\Seen"),
        "flag": ("add", "\\Flagged"), "unflag": ("remove", "\\Flagged"),
    }
    n = len(ids)
    for folder, uids in groups.values():
        if action in flag_ops:
            mode, flag = flag_ops[action]
            await web.ctx.store.store_flags(folder.id, uids, mode, {flag})
        elif action == "delete":
            trash, _ = await mail.delete(account, folder, uids)
            if trash is not None and back.startswith("/m/"):
                back = folder_url(folder.name)
        elif action in ("move", "junk", "archive", "notjunk"):
            if action == "junk":
                target = await mail.special(account, "\\Junk", "Junk")
            elif action == "archive":
                target = await mail.special(account, "\\Archive", "Archive")
            elif action == "notjunk":
                target = await mail.folder(account, "INBOX")
            else:
                target = await mail.folder(account, str(form.get("target") or ""))
            await mail.move(folder, uids, target)
            if back.startswith("/m/"):
                back = folder_url(folder.name)
        else:
            raise MailError("unknown action")
    done = {"read": "Marked as read", "unread": "Marked as unread", "flag": "Flagged", "unflag": "Unflagged",
            "delete": "Deleted", "move": "Moved", "junk": "Moved to Junk", "archive": "Archived",
            "notjunk": "Moved to Inbox"}[action]
    s.flash.append(f"{done}: {n} message{'s' if n != 1 else ''}.")
    return redirect(back)


# ---------------------------------------------------------------------- compose
def _quote(text: str) -> str:
    return "\n".join("> " + line if line else ">" for line in text.rstrip("\n").split("\n"))


def _re(prefix: str, subject: str) -> str:
    return subject if subject.lower().startswith(prefix.lower()) else f"{prefix} {subject}".strip()


async def compose_form(request: Request) -> Response:
    _, account = require(request)
    mail: Mail = _web(request).mail
    q = request.query_params
    fields: dict[str, Any] = {
        "to": q.get("to", "")[:2000], "cc": "", "bcc": "", "subject": "", "body": "",
        "in_reply_to": "", "references": "", "reply_id": "", "draft_id": "", "carry_id": "", "carried": [],
    }
    heading = "New message"
    source = q.get("reply") or q.get("forward") or q.get("draft")
    if source:
        folder, msg = await mail.get(account, source)
        raw = await mail.raw(msg)
        r = render.render(raw, msg.parse)
        p = msg.parse
        text = r.text
        if text is None and r.html is not None:
            text = re.sub(r"<[^>]+>", "", r.html)
        text = text or ""
        env = p.get("envelope") or {}
        headers = dict((k.lower(), v) for k, v in reversed(r.headers))
        mid = p.get("message_id")
        if q.get("draft"):
            heading = "Draft"
            fields.update(to=headers.get("to", ""), cc=headers.get("cc", ""), bcc=headers.get("bcc", ""),
                          subject=p.get("subject") or "", body=text, draft_id=source,
                          in_reply_to=headers.get("in-reply-to", ""), references=headers.get("references", ""))
            fields["carry_id"] = source
            fields["carried"] = [{"section": a.section, "name": a.name, "size": human_size(a.size)}
                                 for a in r.attachments]
        elif q.get("reply"):
            heading = "Reply"
            reply_to = env.get("reply_to") or env.get("from") or []
            to = [f"{a[2]}@{a[3]}" for a in reply_to if a and a[2] and a[3]] or [p.get("from_address") or ""]
            cc: list[str] = []
            if q.get("all") == "1":
                heading = "Reply to all"
                mine = {account.address.lower()} | {t.lower() for t in to}
                for a in list(p.get("to") or []) + list(p.get("cc") or []):
                    if a.lower() not in mine:
                        cc.append(a)
                        mine.add(a.lower())
            when = time.strftime("%a, %d %b %Y %H:%M", time.gmtime(float(p.get("date") or msg.internal_date)))
            who = format_address(p.get("from_name") or "", p.get("from_address") or "")
            fields.update(
                to=", ".join(to), cc=", ".join(cc), subject=_re("Re:", p.get("subject") or ""),
                body=f"\n\nOn {when}, {who} wrote:\n{_quote(text)}\n",
                in_reply_to=mid or "", references=" ".join([*(p.get("references") or []), *([mid] if mid else [])]),
                reply_id=source,
            )
        else:
            heading = "Forward"
            fwd = (
                "\n\n---------- Forwarded message ----------\n"
                f"From: {format_address(p.get('from_name') or '', p.get('from_address') or '')}\n"
                f"Date: {headers.get('date', '')}\nSubject: {p.get('subject') or ''}\n"
                f"To: {', '.join(p.get('to') or [])}\n\n{text}"
            )
            fields.update(subject=_re("Fwd:", p.get("subject") or ""), body=fwd, carry_id=source)
            fields["carried"] = [{"section": a.section, "name": a.name, "size": human_size(a.size)}
                                 for a in r.attachments]
        del folder
    return await page(request, "compose.html", current=None, title=heading, heading=heading, f=fields, error=None)


def _split(value: str) -> list[str]:
    return [value] if value.strip() else []


async def compose(request: Request) -> Response:
    s, account = require(request)
    form = await posted(request, s)
    web = _web(request)
    mail: Mail = web.mail

    def field(name: str) -> str:
        v = form.get(name)
        return v if isinstance(v, str) else ""

    action = field("action") or "send"
    fields: dict[str, Any] = {k: field(k) for k in ("to", "cc", "bcc", "subject", "body", "in_reply_to",
                                                   "references", "reply_id", "draft_id", "carry_id")}
    keep = [v for v in form.getlist("carry") if isinstance(v, str)]
    try:
        out = Outgoing(
            to=parse_addresses(_split(fields["to"])), cc=parse_addresses(_split(fields["cc"])),
            bcc=parse_addresses(_split(fields["bcc"])), subject=fields["subject"][:998].replace("\n", " "),
            text=fields["body"].replace("\r\n", "\n"),
            in_reply_to=fields["in_reply_to"].strip() or None,
            references=fields["references"].split(),
        )
        out.attachments = await mail.carried(account, fields["carry_id"], keep)
        for up in form.getlist("attachments"):
            if isinstance(up, UploadFile) and up.filename:
                data = await up.read()
                out.attachments.append((up.filename, up.content_type or "application/octet-stream", data))
        if action == "save":
            new_id = await mail.save_draft(account, out, fields["draft_id"] or None)
            s.flash.append("Draft saved.")
            return redirect("/compose?" + urlencode({"draft": new_id}))
        if action == "discard":
            if fields["draft_id"]:
                await mail.discard_draft(account, fields["draft_id"])
            s.flash.append("Draft discarded.")
            return redirect("/mail/INBOX")
        accepted = await mail.send(account, out, client_ip(request))
    except MailError as e:
        fields["carried"] = []
        if fields["carry_id"]:
            try:
                _, src = await mail.get(account, fields["carry_id"])
                _, _, atts = render.analyse_parts(src.parse)
                fields["carried"] = [{"section": a.section, "name": a.name, "size": human_size(a.size)}
                                     for a in atts if a.section in keep]
            except MailError:
                pass
        return await page(request, "compose.html", status=e.status if e.status != 404 else 400, current=None,
                          title="New message", heading="New message", f=fields, error=e.message)
    if fields["reply_id"]:
        try:
            folder, uid = await mail.locate(account, fields["reply_id"])
            await mail.set_flags(folder, uid, ["\\Answered"], [])
        except (MailError, StoreError):
            pass
    if fields["draft_id"]:
        await mail.discard_draft(account, fields["draft_id"])
    s.flash.append(f"Message sent (queue id {accepted.queue_id}).")
    return redirect("/mail/INBOX")


# ---------------------------------------------------------------------- settings
async def settings(request: Request, created_token: str | None = None) -> Response:
    _, account = require(request)
    tokens = await _web(request).ctx.store.list_api_tokens(account.id)
    rows = [{"id": t.id, "name": t.name, "created": iso(t.created), "last_used": iso(t.last_used) or "never"}
            for t in tokens]
    return await page(request, "settings.html", current=None, title="Settings", tokens=rows, new_token=created_token)


async def token_create(request: Request) -> Response:
    s, account = require(request)
    form = await posted(request, s)
    name = str(form.get("name") or "").strip()[:100] or "token"
    secret = secrets.token_urlsafe(32)
    row = await _web(request).ctx.store.add_api_token(account.id, name, hash_token_secret(secret))
    # Shown once, on this response only: only its hash is kept.
    return await settings(request, created_token=new_token(row.id, secret))


async def token_revoke(request: Request) -> Response:
    s, account = require(request)
    form = await posted(request, s)
    try:
        token_id = int(str(form.get("id") or ""))
    except ValueError:
        raise MailError("no such token", 404) from None
    web = _web(request)
    if await web.ctx.store.delete_api_token(account.id, token_id):
        web.creds.forget_token(token_id)
        s.flash.append("Token revoked.")
    return redirect("/settings")


async def folder_action(request: Request) -> Response:
    s, account = require(request)
    form = await posted(request, s)
    store = _web(request).ctx.store
    action = str(form.get("action") or "")
    name = str(form.get("name") or "").strip()
    new = str(form.get("new") or "").strip()
    try:
        if action == "create":
            why = valid_folder_name(name)
            if why:
                raise MailError(why)
            await store.create_folder(account.id, name)
            s.flash.append(f"Folder {name} created.")
        elif action == "rename":
            why = valid_folder_name(new)
            if why:
                raise MailError(why)
            if name == "INBOX":
                raise MailError("INBOX cannot be renamed here")
            await store.rename_folder(account.id, name, new)
            s.flash.append(f"Folder {name} renamed to {new}.")
        elif action == "delete":
            f = await store.get_folder(account.id, name)
            if f is None:
                raise MailError(f"no folder {name}", 404)
            if f.special_use or f.name == "INBOX":
                raise MailError(f"{name} is a special folder and stays")
            await store.delete_folder(account.id, name)
            s.flash.append(f"Folder {name} deleted.")
        else:
            raise MailError("unknown action")
    except StoreError as e:
        raise MailError(str(e)) from None
    except MailError as e:
        s.flash.append(e.message)
    return redirect("/settings")


async def manifest(request: Request) -> Response:
    return JSONResponse({"name": "mailhouse", "short_name": "mail", "start_url": "/mail/INBOX",
                         "display": "standalone", "background_color": "#ffffff", "theme_color": "#2457c5"},
                        media_type="application/manifest+json", headers={"cache-control": "public, max-age=86400"})


def _guard(handler: Any) -> Any:
    async def wrapped(request: Request) -> Response:
        try:
            resp: Response = await handler(request)
            return resp
        except LoginRequired:
            if request.method == "GET" and not request.url.path.startswith("/app/"):
                target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                return redirect("/login?" + urlencode({"next": safe_path(target)}))
            if request.url.path.startswith("/app/"):
                return JSONResponse({"error": "authentication required"}, status_code=401)
            return redirect("/login")

    return wrapped


def routes() -> list[Route]:
    return [
        Route("/", _guard(home), methods=["GET"]),
        Route("/login", login_form, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", _guard(logout), methods=["POST"]),
        Route("/mail/{name:path}", _guard(mailbox), methods=["GET"]),
        Route("/search", _guard(search), methods=["GET"]),
        Route("/m/{id}", _guard(show), methods=["GET"]),
        Route("/m/{id}/frame", _guard(frame), methods=["GET"]),
        Route("/m/{id}/original", _guard(original), methods=["GET"]),
        Route("/m/{id}/journey", _guard(journey), methods=["GET"]),
        Route("/act", _guard(act), methods=["POST"]),
        Route("/compose", _guard(compose_form), methods=["GET"]),
        Route("/compose", _guard(compose), methods=["POST"]),
        Route("/settings", _guard(settings), methods=["GET"]),
        Route("/settings/tokens", _guard(token_create), methods=["POST"]),
        Route("/settings/tokens/revoke", _guard(token_revoke), methods=["POST"]),
        Route("/settings/folders", _guard(folder_action), methods=["POST"]),
        Route("/app/contacts", _guard(contacts), methods=["GET"]),
        Route("/manifest.webmanifest", manifest, methods=["GET"]),
    ]
