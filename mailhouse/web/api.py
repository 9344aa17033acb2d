"""The JSON API under /api/ (INTERFACE.md's HTTP table) and its OpenAPI document.

Credentials: HTTP Basic (address and password), a bearer token made in the
webmail's settings, or the webmail's own session cookie (then unsafe methods
need the session's CSRF token in X-CSRF-Token, so the webmail's scripts can use
the API and other sites cannot).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import re
from typing import Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from ..store.models import Account
from . import render
from .auth import SESSION_COOKIE
from .mail import ADDR_SPEC, MailError, Outgoing, message_id, normalize_flag, parse_addresses

MAX_LIMIT = 500
PAGE_CACHE = 512  # encoded pages kept (a page of 50 is ~25 KB)
UNSAFE = ("POST", "PUT", "PATCH", "DELETE")


def _web(request: Request) -> Any:
    return request.app.state.web


def client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"


class Unauthorized(MailError):
    def __init__(self, message: str = "authentication required", challenge: bool = True) -> None:
        # No Basic challenge to the webmail's own scripts: a browser would answer
        # it with its login dialog.
        super().__init__(message, 401, {"www-authenticate": 'Basic realm="mailhouse", charset="UTF-8"'}
                         if challenge else None)


async def api_account(request: Request) -> Account:
    web = _web(request)
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer" and value:
        account: Account | None = await web.creds.token(value)
        if account is None:
            raise Unauthorized("invalid token")
        return account
    if scheme.lower() == "basic" and value:
        try:
            user, sep, password = base64.b64decode(value, validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            raise Unauthorized("malformed Basic credentials") from None
        if not sep:
            raise Unauthorized("malformed Basic credentials")
        ip = client_ip(request)
        if web.limiter.blocked(ip):
            raise MailError("too many failed logins; try again later", 429)
        account = await web.creds.password(user, password, ip)
        if account is None:
            raise Unauthorized("invalid address or password")
        return account
    if header:
        raise Unauthorized("unsupported authorization scheme")
    session = web.sessions.get(request.cookies.get(SESSION_COOKIE))
    if session is not None:
        if request.method in UNSAFE:
            token = request.headers.get("x-csrf-token", "")
            if not hmac.compare_digest(token.encode(), session.csrf.encode()):
                raise MailError("missing or wrong CSRF token", 403)
        account = web.ctx.store.find_account(session.address)
        if account is not None and account.id == session.account_id:
            return account
    raise Unauthorized(challenge=SESSION_COOKIE not in request.cookies)


def _int_param(request: Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not re.fullmatch(r"\d{1,10}", raw):
        raise MailError(f"{name} must be an integer from {lo} to {hi}")
    v = int(raw)
    if not lo <= v <= hi:
        raise MailError(f"{name} must be an integer from {lo} to {hi}")
    return v


async def _json_body(request: Request) -> dict[str, Any]:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/json":
        raise MailError("the body must be application/json", 415)
    try:
        body = json.loads(await request.body())
    except (ValueError, UnicodeDecodeError):
        raise MailError("the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise MailError("the body must be a JSON object")
    return body


def _str_list(body: dict[str, Any], key: str) -> list[str]:
    v = body.get(key, [])
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise MailError(f"{key} must be a list of strings")
    return [clean_text(x) for x in v]


def clean_text(v: str) -> str:
    """JSON may carry lone surrogates, which no mail encoding can hold."""
    return v.encode("utf-8", "replace").decode("utf-8")


def _str(body: dict[str, Any], key: str, default: str | None = "") -> str | None:
    v = body.get(key, default)
    if v is None and default is None:
        return None
    if not isinstance(v, str):
        raise MailError(f"{key} must be a string")
    return clean_text(v)


def attachment_url(ident: str, section: str) -> str:
    return f"/api/messages/{ident}/attachments/{section}"


# ---------------------------------------------------------------------- handlers
async def list_mailboxes(request: Request) -> Response:
    account = await api_account(request)
    return JSONResponse(await _web(request).mail.mailboxes(account))


async def list_messages(request: Request) -> Response:
    account = await api_account(request)
    limit = _int_param(request, "limit", 50, 1, MAX_LIMIT)
    offset = _int_param(request, "offset", 0, 0, 1_000_000_000)
    mail = _web(request).mail
    folder = await mail.folder(account, request.path_params["name"])
    key = (folder.id, folder.uidvalidity, folder.highestmodseq, folder.name, limit, offset)
    body = mail.pages.get(key)
    if body is None:
        msgs = await mail.page(folder, limit, offset)
        body = json.dumps([mail.summary(folder, m) for m in msgs], ensure_ascii=False,
                          separators=(",", ":")).encode()
        mail.pages[key] = body
        if len(mail.pages) > PAGE_CACHE:
            mail.pages.popitem(last=False)
    else:
        mail.pages.move_to_end(key)
    return Response(body, media_type="application/json")


async def get_message(request: Request) -> Response:
    account = await api_account(request)
    mail = _web(request).mail
    ident = request.path_params["id"]
    folder, msg = await mail.get(account, ident)
    raw = await mail.raw(msg)
    r = render.render(raw, msg.parse)
    s = mail.summary(folder, msg)
    p = msg.parse
    return JSONResponse({
        **s,
        "cc": list(p.get("cc") or []),
        "message_id": p.get("message_id"),
        "text": r.text,
        "html": r.html,
        "attachments": [
            {"name": a.name, "type": a.type, "size": a.size, "url": attachment_url(s["id"], a.section)}
            for a in r.attachments
        ],
    })


async def get_raw(request: Request) -> Response:
    account = await api_account(request)
    mail = _web(request).mail
    _, msg = await mail.get(account, request.path_params["id"])
    raw = await mail.raw(msg)
    return Response(raw, media_type="message/rfc822",
                    headers={"content-disposition": 'attachment; filename="message.eml"'})


def content_disposition(name: str) -> str:
    ascii_name = re.sub(r'[^\x20-\x7e]|["\\]', "_", name) or "attachment"
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name, safe='')}"


async def get_attachment(request: Request) -> Response:
    account = await api_account(request)
    mail = _web(request).mail
    _, msg = await mail.get(account, request.path_params["id"])
    part = render.find_part(msg.parse, request.path_params["section"])
    if part is None or part.get("type") == "multipart":
        raise MailError("no such attachment", 404)
    raw = await mail.raw(msg)
    t = render.mime_type(part)
    data = raw[part["body_start"] : part["body_end"]] if t == "message/rfc822" else render.part_bytes(raw, part)
    if not re.fullmatch(r"[a-z0-9][\w.+-]*/[a-z0-9][\w.+-]*", t):
        t = "application/octet-stream"
    charset = (part.get("params") or {}).get("charset")
    if t.startswith("text/") and charset and re.fullmatch(r"[\w.:-]{1,40}", charset):
        t += f"; charset={charset}"
    # Always a download, and sandboxed should a browser render it anyway: mail
    # attachments never run as a page of this origin.
    return Response(data, media_type=t, headers={
        "content-disposition": content_disposition(render.part_name(part)),
        "content-security-policy": "default-src 'none'; sandbox",
    })


_POST_KEYS = {"to", "cc", "bcc", "subject", "text", "html", "attachments"}


async def post_message(request: Request) -> Response:
    account = await api_account(request)
    body = await _json_body(request)
    unknown = set(body) - _POST_KEYS
    if unknown:
        raise MailError(f"unknown field(s): {', '.join(sorted(unknown))}")
    if "to" not in body:
        raise MailError("to is required")
    attachments: list[tuple[str, str, bytes]] = []
    raw_att = body.get("attachments", [])
    if not isinstance(raw_att, list):
        raise MailError("attachments must be a list")
    for a in raw_att:
        if not isinstance(a, dict) or set(a) - {"name", "type", "content_base64"}:
            raise MailError("an attachment is {name, type, content_base64}")
        name, ctype, content = a.get("name"), a.get("type"), a.get("content_base64")
        if not isinstance(name, str) or not isinstance(ctype, str) or not isinstance(content, str):
            raise MailError("an attachment needs a name, a type and content_base64 (strings)")
        try:
            data = base64.b64decode(content, validate=True)
        except (binascii.Error, ValueError):
            raise MailError(f"attachment {name[:80]!r}: content_base64 is not base64") from None
        name = re.sub(r"[\x00-\x1f\x7f]", " ", clean_text(name)).strip() or "attachment"
        attachments.append((name, clean_text(ctype), data))
    html = _str(body, "html", None)
    out = Outgoing(
        to=parse_addresses(_str_list(body, "to")),
        cc=parse_addresses(_str_list(body, "cc")),
        bcc=parse_addresses(_str_list(body, "bcc")),
        subject=re.sub(r"[\x00-\x1f\x7f]", " ", _str(body, "subject") or ""),
        text=_str(body, "text") or "",
        html=html or None,
        attachments=attachments,
    )
    if not out.to:
        raise MailError("to needs at least one address")
    if max(len(out.to), len(out.cc), len(out.bcc)) > 30:
        raise MailError("at most 30 addresses in each of to, cc and bcc")
    accepted = await _web(request).mail.send(account, out, client_ip(request))
    return JSONResponse({"queue_id": accepted.queue_id, "message_id": accepted.message_id}, status_code=202)


_PATCH_KEYS = {"add_flags", "remove_flags", "mailbox"}


async def patch_message(request: Request) -> Response:
    account = await api_account(request)
    body = await _json_body(request)
    unknown = set(body) - _PATCH_KEYS
    if unknown:
        raise MailError(f"unknown field(s): {', '.join(sorted(unknown))}")
    flags: dict[str, list[str]] = {}
    for key in ("add_flags", "remove_flags"):
        out = []
        for f in _str_list(body, key):
            nf = normalize_flag(f)
            if nf is None:
                raise MailError(f"{f[:80]!r} is not a flag (\\Seen, \\Flagged... or a keyword)")
            out.append(nf)
        flags[key] = out
    target_name = body.get("mailbox")
    if target_name is not None and not isinstance(target_name, str):
        raise MailError("mailbox must be a string")
    mail = _web(request).mail
    folder, uid = await mail.locate(account, request.path_params["id"])
    target = await mail.folder(account, target_name) if target_name is not None else None
    if await _web(request).ctx.store.get_message(folder.id, uid) is None:
        raise MailError("no such message", 404)
    await mail.set_flags(folder, uid, flags["add_flags"], flags["remove_flags"])
    if target is not None and target.id != folder.id:
        moved = await mail.move(folder, [uid], target)
        if uid not in moved:
            raise MailError("no such message", 404)
        folder, uid = target, moved[uid]
    msg = await _web(request).ctx.store.get_message(folder.id, uid)
    if msg is None:
        raise MailError("no such message", 404)
    return JSONResponse(mail.summary(folder, msg))


async def delete_message(request: Request) -> Response:
    account = await api_account(request)
    mail = _web(request).mail
    folder, msg = await mail.get(account, request.path_params["id"])
    trash, moved = await mail.delete(account, folder, [msg.uid])
    if trash is None:
        return JSONResponse({"removed": True, "id": None, "mailbox": None})
    new_uid = moved.get(msg.uid)
    return JSONResponse({
        "removed": False,
        "id": message_id(trash, new_uid) if new_uid is not None else None,
        "mailbox": trash.name,
    })


async def message_resource(request: Request) -> Response:
    if request.method == "PATCH":
        return await patch_message(request)
    if request.method == "DELETE":
        return await delete_message(request)
    return await get_message(request)


async def events(request: Request) -> Response:
    account = await api_account(request)
    return StreamingResponse(
        _web(request).hub.stream(account.id),
        media_type="text/event-stream",
        headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
    )


async def openapi(request: Request) -> Response:
    return JSONResponse(OPENAPI, headers={"cache-control": "no-cache"})


def routes() -> list[Route]:
    return [
        Route("/api/openapi.json", openapi, methods=["GET"]),
        Route("/api/mailboxes", list_mailboxes, methods=["GET"]),
        Route("/api/mailboxes/{name:path}/messages", list_messages, methods=["GET"]),
        Route("/api/messages", post_message, methods=["POST"]),
        Route("/api/messages/{id}/raw", get_raw, methods=["GET"]),
        Route("/api/messages/{id}/attachments/{section}", get_attachment, methods=["GET"]),
        # One route for the three methods, so a 405 names them all in Allow.
        Route("/api/messages/{id}", message_resource, methods=["GET", "PATCH", "DELETE"]),
        Route("/api/events", events, methods=["GET"]),
    ]


# ---------------------------------------------------------------------- OpenAPI
def _err(desc: str) -> dict[str, Any]:
    return {"description": desc, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


_COMMON_ERRORS = {
    "400": _err("a malformed request"),
    "401": {**_err("no or wrong credentials"), "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}}},
    "403": _err("a session request without its CSRF token"),
    "429": _err("too many failed logins from this address"),
}
_NOT_FOUND = {"404": _err("no such message or mailbox (or one of another account)")}
_ID_PARAM = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"},
             "description": "a message id as returned by the API (opaque)"}
_STR_LIST = {"type": "array", "items": {"type": "string"}}
# What a flag may be: a system flag as IMAP spells it, or an IMAP keyword atom.
FLAG_PATTERN = r"^(\\(Seen|Answered|Flagged|Deleted|Draft)|[!#$&'+\-.0-9:;<=>?@A-Z^_`a-z|~]{1,64})$"
_FLAG_LIST = {"type": "array", "items": {"type": "string", "pattern": FLAG_PATTERN}}
# An address, bare or with a display name: "bob@example.org", "Bob <bob@example.org>".
_ADDR = ADDR_SPEC
ADDRESS_PATTERN = rf"^({_ADDR}|[^<>,;:\"@\\()\[\]\x00-\x1f\x7f]*<{_ADDR}>)$"
_ADDR_LIST = {"type": "array", "maxItems": 30, "items": {"type": "string", "pattern": ADDRESS_PATTERN}}
BASE64_PATTERN = r"^([A-Za-z0-9+/]{4})*([A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"
_NULLABLE_STR = {"type": ["string", "null"]}

OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "mailhouse API", "version": "1",
             "description": "Mailboxes and messages of the authenticated account, and sending as it."},
    "security": [{"basic": []}, {"bearer": []}],
    "paths": {
        "/api/mailboxes": {
            "get": {
                "operationId": "listMailboxes",
                "summary": "The account's mailboxes with message counts",
                "responses": {
                    "200": {"description": "mailboxes", "content": {"application/json": {"schema": {
                        "type": "array", "items": {"$ref": "#/components/schemas/Mailbox"}}}}},
                    **_COMMON_ERRORS,
                },
            }
        },
        "/api/mailboxes/{name}/messages": {
            "get": {
                "operationId": "listMessages",
                "summary": "One page of a mailbox, newest first",
                "parameters": [
                    {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}},
                    {"name": "limit", "in": "query", "required": False,
                     "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": 50}},
                    {"name": "offset", "in": "query", "required": False,
                     "schema": {"type": "integer", "minimum": 0, "maximum": 1_000_000_000, "default": 0}},
                ],
                "responses": {
                    "200": {"description": "messages", "content": {"application/json": {"schema": {
                        "type": "array", "items": {"$ref": "#/components/schemas/MessageSummary"}}}},
                        "links": {
                            op: {"operationId": op, "parameters": {"id": "$response.body#/0/id"}}
                            for op in ("getMessage", "getRawMessage", "updateMessage", "deleteMessage")
                        }},
                    **_COMMON_ERRORS, **_NOT_FOUND,
                },
            }
        },
        "/api/messages": {
            "post": {
                "operationId": "sendMessage",
                "summary": "Send a message as the account (the same path as SMTP submission)",
                "requestBody": {"required": True, "content": {"application/json": {"schema": {
                    "$ref": "#/components/schemas/NewMessage"}}}},
                "responses": {
                    "202": {"description": "accepted and queued", "content": {"application/json": {"schema": {
                        "type": "object", "required": ["queue_id", "message_id"],
                        "properties": {"queue_id": {"type": "string"}, "message_id": _NULLABLE_STR}}}}},
                    **_COMMON_ERRORS,
                    "413": _err("the message is too large"),
                    "415": _err("the body is not JSON"),
                    "503": _err("temporarily refused; try again later"),
                },
            }
        },
        "/api/messages/{id}": {
            "parameters": [_ID_PARAM],
            "get": {
                "operationId": "getMessage",
                "summary": "A message: addresses, text, sanitized HTML, attachments",
                "responses": {
                    "200": {"description": "the message", "content": {"application/json": {"schema": {
                        "$ref": "#/components/schemas/Message"}}}},
                    **_COMMON_ERRORS, **_NOT_FOUND,
                },
            },
            "patch": {
                "operationId": "updateMessage",
                "summary": "Change flags and/or move to another mailbox",
                "requestBody": {"required": True, "content": {"application/json": {"schema": {
                    "$ref": "#/components/schemas/MessagePatch"}}}},
                "responses": {
                    "200": {"description": "the message as it is now (its id changes when moved)",
                            "content": {"application/json": {"schema": {
                                "$ref": "#/components/schemas/MessageSummary"}}}},
                    **_COMMON_ERRORS, **_NOT_FOUND,
                    "415": _err("the body is not JSON"),
                },
            },
            "delete": {
                "operationId": "deleteMessage",
                "summary": "Move to Trash; in Trash, remove for good",
                "responses": {
                    "200": {"description": "done", "content": {"application/json": {"schema": {
                        "type": "object", "required": ["removed", "id", "mailbox"],
                        "properties": {"removed": {"type": "boolean"}, "id": _NULLABLE_STR,
                                       "mailbox": _NULLABLE_STR}}}}},
                    **_COMMON_ERRORS, **_NOT_FOUND,
                },
            },
        },
        "/api/messages/{id}/raw": {
            "parameters": [_ID_PARAM],
            "get": {
                "operationId": "getRawMessage",
                "summary": "The stored message, byte for byte",
                "responses": {
                    "200": {"description": "the message", "content": {"message/rfc822": {"schema": {
                        "type": "string", "format": "binary"}}}},
                    **_COMMON_ERRORS, **_NOT_FOUND,
                },
            }
        },
        "/api/messages/{id}/attachments/{section}": {
            "parameters": [_ID_PARAM, {"name": "section", "in": "path", "required": True,
                                       "schema": {"type": "string"}, "description": "MIME part number"}],
            "get": {
                "operationId": "getAttachment",
                "summary": "One attachment, decoded, as a download",
                "responses": {
                    "200": {"description": "the attachment", "content": {"*/*": {"schema": {
                        "type": "string", "format": "binary"}}}},
                    **_COMMON_ERRORS, **_NOT_FOUND,
                },
            }
        },
        "/api/events": {
            "get": {
                "operationId": "events",
                "summary": "Server-Sent Events: one `change` event per change in the account's mailboxes",
                "responses": {
                    "200": {"description": "an endless event stream; data is {kind, mailbox}",
                            "content": {"text/event-stream": {"schema": {"type": "string"}}}},
                    **_COMMON_ERRORS,
                },
            }
        },
    },
    "components": {
        "securitySchemes": {
            "basic": {"type": "http", "scheme": "basic", "description": "the account's address and password"},
            "bearer": {"type": "http", "scheme": "bearer", "description": "a token made in the webmail's settings"},
        },
        "schemas": {
            "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
            "Mailbox": {
                "type": "object", "required": ["name", "special_use", "total", "unseen"],
                "properties": {"name": {"type": "string"}, "special_use": _NULLABLE_STR,
                               "total": {"type": "integer", "minimum": 0},
                               "unseen": {"type": "integer", "minimum": 0}},
            },
            "MessageSummary": {
                "type": "object",
                "required": ["id", "uid", "from", "to", "subject", "date", "flags", "size", "preview"],
                "properties": {
                    "id": {"type": "string"}, "uid": {"type": "integer"}, "mailbox": {"type": "string"},
                    "from": {"type": "string"}, "from_name": {"type": "string"}, "to": _STR_LIST,
                    "subject": {"type": "string"}, "date": {"type": ["string", "null"], "format": "date-time"},
                    "flags": _STR_LIST, "size": {"type": "integer"}, "preview": {"type": "string"},
                    "has_attachments": {"type": "boolean"},
                },
            },
            "Message": {
                "type": "object",
                "required": ["id", "from", "to", "cc", "subject", "date", "flags", "text", "html", "attachments"],
                "properties": {
                    "id": {"type": "string"}, "uid": {"type": "integer"}, "mailbox": {"type": "string"},
                    "from": {"type": "string"}, "from_name": {"type": "string"}, "to": _STR_LIST, "cc": _STR_LIST,
                    "subject": {"type": "string"}, "date": {"type": ["string", "null"], "format": "date-time"},
                    "flags": _STR_LIST, "size": {"type": "integer"}, "preview": {"type": "string"},
                    "has_attachments": {"type": "boolean"}, "message_id": _NULLABLE_STR,
                    "text": _NULLABLE_STR, "html": {**_NULLABLE_STR, "description": "sanitized"},
                    "attachments": {"type": "array", "items": {
                        "type": "object", "required": ["name", "type", "size", "url"],
                        "properties": {"name": {"type": "string"}, "type": {"type": "string"},
                                       "size": {"type": "integer"}, "url": {"type": "string"}}}},
                },
            },
            "NewMessage": {
                "type": "object", "required": ["to"], "additionalProperties": False,
                "properties": {
                    "to": {**_ADDR_LIST, "minItems": 1}, "cc": _ADDR_LIST, "bcc": _ADDR_LIST,
                    "subject": {"type": "string"}, "text": {"type": "string"}, "html": _NULLABLE_STR,
                    "attachments": {"type": "array", "items": {
                        "type": "object", "required": ["name", "type", "content_base64"],
                        "additionalProperties": False,
                        "properties": {"name": {"type": "string"}, "type": {"type": "string"},
                                       "content_base64": {"type": "string", "pattern": BASE64_PATTERN}}}},
                },
            },
            "MessagePatch": {
                "type": "object", "additionalProperties": False,
                "properties": {"add_flags": _FLAG_LIST, "remove_flags": _FLAG_LIST, "mailbox": {"type": "string"}},
            },
        },
    },
}
