"""The ASGI application: routes of the API and the webmail, security headers, limits."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import log
from ..context import Context
from . import api, views
from .auth import Credentials, LoginLimiter, Sessions
from .events import ChangeHub
from .mail import Mail, MailError

logger = log.get("http")

# The webmail's own pages: scripts and styles from our files only, no inline code,
# frames only of our own (the sandboxed message body), never framed by others.
PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-src 'self'; form-action 'self'; base-uri 'none'; "
    "frame-ancestors 'none'; manifest-src 'self'"
)


@dataclass
class Web:
    """What every request handler shares (the app's state)."""

    ctx: Context
    listener: str
    secure: bool
    sessions: Sessions
    limiter: LoginLimiter
    creds: Credentials
    mail: Mail
    hub: ChangeHub
    templates: jinja2.Environment
    static_version: str


class SecurityHeaders:
    """Headers every response carries unless its handler chose its own."""

    def __init__(self, app: ASGIApp, secure: bool) -> None:
        self.app = app
        base = [
            (b"x-content-type-options", b"nosniff"),
            (b"referrer-policy", b"same-origin"),  # no-referrer would make Origin "null" on our own form posts
            (b"x-frame-options", b"DENY"),
            (b"cross-origin-opener-policy", b"same-origin"),
            (b"cross-origin-resource-policy", b"same-origin"),
            (b"permissions-policy", b"camera=(), microphone=(), geolocation=(), payment=()"),
        ]
        if secure:
            base.append((b"strict-transport-security", b"max-age=31536000"))
        self.base = base

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        static = scope.get("path", "").startswith("/static/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers: list[tuple[bytes, bytes]] = list(message.get("headers", []))
                present = {k.lower() for k, _ in headers}
                for k, v in self.base:
                    if k not in present:
                        headers.append((k, v))
                if b"content-security-policy" not in present:
                    headers.append((b"content-security-policy", PAGE_CSP.encode()))
                if b"cache-control" not in present:
                    # Mail is private: never kept by a shared cache or the back button.
                    # Static files are named by their content's hash (?v=): kept long.
                    cache = b"public, max-age=31536000, immutable" if static else b"no-store"
                    headers.append((b"cache-control", cache))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


class BodyTooLarge(Exception):
    pass


class BodyLimit:
    """Refuses request bodies past a size (413) before a handler buffers them."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for k, v in scope.get("headers", []):
            if k == b"content-length":
                try:
                    too_big = int(v) > self.limit
                except ValueError:
                    too_big = True
                if too_big:
                    await _too_large(scope, send)
                    return
        seen = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise BodyTooLarge()
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await _too_large(scope, send)


async def _too_large(scope: Scope, send: Send) -> None:
    resp = JSONResponse({"error": "the request is too large"}, status_code=413)
    await resp(scope, _no_receive, send)


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}


def is_api(request: Request) -> bool:
    return request.url.path.startswith("/api/") or request.url.path == "/api"


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    headers = dict(exc.headers or {})
    text = {404: "not found", 405: "method not allowed"}.get(exc.status_code, str(exc.detail))
    if is_api(request) or exc.status_code == 405:
        return JSONResponse({"error": text}, status_code=exc.status_code, headers=headers)
    return views.error_page(request, exc.status_code, text, headers)


async def mail_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, MailError)
    if is_api(request):
        return JSONResponse({"error": exc.message}, status_code=exc.status, headers=exc.headers)
    return views.error_page(request, exc.status, exc.message)


async def server_error(request: Request, exc: Exception) -> Response:
    logger.exception("%s %s failed", request.method, request.url.path)
    if is_api(request):
        return JSONResponse({"error": "internal error"}, status_code=500)
    return HTMLResponse("<!DOCTYPE html><title>Error</title><p>Something went wrong.</p>", status_code=500)


def _static_version(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.iterdir()):
        if p.is_file():
            h.update(p.name.encode() + p.read_bytes())
    return h.hexdigest()[:10]


def build_app(ctx: Context, listener: str, *, secure: bool) -> tuple[ASGIApp, Web]:
    static_dir = Path(str(resources.files("mailhouse.web").joinpath("static")))
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("mailhouse.web", "templates"),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )
    version = _static_version(static_dir)
    env.globals["static"] = lambda name: f"/static/{name}?v={version}"
    env.filters["tojson_attr"] = lambda v: json.dumps(v)
    limiter = LoginLimiter()
    web = Web(
        ctx=ctx, listener=listener, secure=secure, sessions=Sessions(), limiter=limiter,
        creds=Credentials(ctx, limiter), mail=Mail(ctx, listener), hub=ChangeHub(ctx),
        templates=env, static_version=version,
    )
    routes: list[Any] = [
        *api.routes(),
        *views.routes(),
        Mount("/static", app=StaticFiles(directory=static_dir), name="static"),
    ]
    app = Starlette(
        routes=routes,
        exception_handlers={HTTPException: http_error, MailError: mail_error, Exception: server_error},
    )
    app.state.web = web
    web.hub.start()
    # Room for a message at the size limit, base64-encoded in JSON or a form.
    limit = ctx.config.limits.max_message_size * 4 // 3 + 1024 * 1024
    return SecurityHeaders(BodyLimit(app, limit), secure), web
