"""An IMAP4rev2 / IMAP4rev1 server session: the application layer.

Octets come in through :meth:`IMAPSession.feed`; the session parses them
(:class:`~mailhouse.imap.parser.CommandParser`), runs one command at a time
against the store and writes responses through its
:class:`~mailhouse.imap.state.SessionIO`. No task exists while the session
waits for input (an idle IDLE costs only its objects): each batch of input,
or a change to the selected folder during IDLE, starts a short-lived task
that runs until the input is used up.

Rev1 and rev2 share the port; ``ENABLE IMAP4rev2`` switches to rev2's
behaviour (ESEARCH for SEARCH, no \\Recent, UTF-8 names, LIST in SELECT).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from mailhouse import __version__
from mailhouse.context import Context
from mailhouse.imap import writer as w
from mailhouse.imap.folders import FolderCommands
from mailhouse.imap.mailbox import MailboxView
from mailhouse.imap.messages import MessageCommands
from mailhouse.imap.parser import (
    Append,
    Authenticate,
    Capability,
    Check,
    Close,
    Command,
    Compress,
    Copy,
    Create,
    Delete,
    Enable,
    Examine,
    Expunge,
    Fetch,
    GetQuota,
    GetQuotaRoot,
    Id,
    Idle,
    List,
    Login,
    Logout,
    Lsub,
    Move,
    Namespace,
    NeedContinuation,
    Noop,
    ParseError,
    Rename,
    Search,
    Select,
    SelectCommand,
    SetQuota,
    Sort,
    StartTLS,
    Status,
    Store,
    Subscribe,
    Thread,
    UidExpunge,
    Unselect,
    Unsubscribe,
    decode_sasl_response,
    is_idle_done,
)
from mailhouse.imap.sequence import MAX_NUMBER
from mailhouse.imap.state import SessionIO, logger
from mailhouse.store.base import StoreError

COMMANDS_PER_SECOND = 2000.0
COMMAND_BURST = 4000.0
MAX_BAD = 50
MAX_LOGIN_FAILURES = 5
ENABLEABLE = ("IMAP4REV2", "CONDSTORE", "QRESYNC", "UTF8=ACCEPT")

ANY_STATE = {"nonauth", "auth", "selected"}
AUTH_STATES = {"auth", "selected"}

# command class -> (method name, states in which it is valid)
_DISPATCH: dict[type[Command], tuple[str, set[str]]] = {
    Capability: ("cmd_capability", ANY_STATE),
    Noop: ("cmd_noop", ANY_STATE),
    Logout: ("cmd_logout", ANY_STATE),
    Id: ("cmd_id", ANY_STATE),
    StartTLS: ("cmd_starttls", {"nonauth"}),
    Login: ("cmd_login", {"nonauth"}),
    Authenticate: ("cmd_authenticate", {"nonauth"}),
    Enable: ("cmd_enable", {"auth"}),
    Select: ("cmd_select", AUTH_STATES),
    Examine: ("cmd_select", AUTH_STATES),
    Create: ("cmd_create", AUTH_STATES),
    Delete: ("cmd_delete", AUTH_STATES),
    Rename: ("cmd_rename", AUTH_STATES),
    Subscribe: ("cmd_subscribe", AUTH_STATES),
    Unsubscribe: ("cmd_unsubscribe", AUTH_STATES),
    List: ("cmd_list", AUTH_STATES),
    Lsub: ("cmd_lsub", AUTH_STATES),
    Namespace: ("cmd_namespace", AUTH_STATES),
    Status: ("cmd_status", AUTH_STATES),
    Append: ("cmd_append", AUTH_STATES),
    Idle: ("cmd_idle", AUTH_STATES),
    Compress: ("cmd_compress", AUTH_STATES),
    GetQuota: ("cmd_getquota", AUTH_STATES),
    GetQuotaRoot: ("cmd_getquotaroot", AUTH_STATES),
    SetQuota: ("cmd_setquota", AUTH_STATES),
    Check: ("cmd_noop", {"selected"}),
    Close: ("cmd_close", {"selected"}),
    Unselect: ("cmd_unselect", {"selected"}),
    Expunge: ("cmd_expunge", {"selected"}),
    UidExpunge: ("cmd_expunge", {"selected"}),
    Search: ("cmd_search", {"selected"}),
    Fetch: ("cmd_fetch", {"selected"}),
    Store: ("cmd_store", {"selected"}),
    Copy: ("cmd_copy", {"selected"}),
    Move: ("cmd_copy", {"selected"}),
    Sort: ("cmd_sort", {"selected"}),
    Thread: ("cmd_thread", {"selected"}),
}


class IMAPSession(FolderCommands, MessageCommands):
    def __init__(
        self,
        ctx: Context,
        io: SessionIO,
        *,
        peer: str = "unknown",
        tls_active: bool = False,
        secure_peer: bool = False,
    ) -> None:
        super().__init__(ctx, io, peer=peer, tls_active=tls_active, secure_peer=secure_peer)
        self._task: asyncio.Task[None] | None = None
        self._input_waiter: asyncio.Future[None] | None = None
        self._tokens = COMMAND_BURST
        self._tokens_at = time.monotonic()
        self._bad = 0
        self._login_failures = 0
        self._fed = False

    # -- capabilities ---------------------------------------------------------------------------------

    def capabilities(self) -> list[str]:
        caps = ["IMAP4rev1", "IMAP4rev2", "LITERAL+", "SASL-IR", "ID", "ENABLE", "IDLE"]
        if self.state == "nonauth":
            if not self.tls_active and self.ctx.tls is not None:
                caps.append("STARTTLS")
            if self.plaintext_ok:
                caps.append("AUTH=PLAIN")
            else:
                caps.append("LOGINDISABLED")
            return caps
        caps += [
            "NAMESPACE", "UNSELECT", "UIDPLUS", "MOVE", "CHILDREN", "LIST-EXTENDED", "LIST-STATUS",
            "SPECIAL-USE", "CREATE-SPECIAL-USE", "ESEARCH", "ESORT", "SEARCHRES", "CONDSTORE",
            "QRESYNC", "BINARY", "MULTIAPPEND", "STATUS=SIZE", "QUOTA", "QUOTA=RES-STORAGE", "SORT",
            "SORT=DISPLAY", "THREAD=ORDEREDSUBJECT", "THREAD=REFERENCES", "UTF8=ACCEPT", "WITHIN",
            f"APPENDLIMIT={min(self.ctx.config.limits.max_message_size, MAX_NUMBER)}",
        ]
        if not self.compressing:
            caps.append("COMPRESS=DEFLATE")
        return caps

    def greeting(self) -> None:
        if self.ctx.shutting_down.is_set():
            self.emit(w.untagged_status("BYE", "Server shutting down"))
            self.state = "logout"
            return
        code = w.Code.capability(self.capabilities())
        self.emit(w.untagged_status("OK", f"{self.ctx.config.hostname} IMAP server ready", code))

    # -- input ---------------------------------------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        self.last_activity = time.monotonic()
        self._fed = True
        self.parser.feed(data)
        waiter = self._input_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
            return
        self.kick()

    @property
    def busy(self) -> bool:
        return self._task is not None and not self._task.done()

    def kick(self) -> None:
        if self.closed or self.busy:
            return
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def run_until_idle(self) -> None:
        """For tests: process everything fed so far."""
        self.kick()
        while self.busy and (self._input_waiter is None or self._input_waiter.done()):
            assert self._task is not None
            await asyncio.wait({self._task}, timeout=0.002)

    async def _read_line(self) -> bytes | ParseError | None:
        """A raw line (SASL response), waiting for it; None when closed."""
        while not self.closed:
            line = self.parser.read_line()
            if line is not None:
                return line
            await self.flush()
            self.io.resume()
            self._input_waiter = asyncio.get_running_loop().create_future()
            try:
                await self._input_waiter
            finally:
                self._input_waiter = None
        return None

    async def _run(self) -> None:
        try:
            while True:
                self._fed = False
                await self._loop()
                await self.flush()
                # Input (or a change during IDLE) that came while the last
                # flush waited found this task still running: go round again.
                if self.closed or not (self._fed or (self.idle_tag is not None and self.dirty)):
                    break
        except (ConnectionError, OSError):
            self.close()
        except asyncio.CancelledError:
            self.close()
            raise
        except Exception:
            logger.exception("[%s]: session failed", self.peer)
            self.emit(w.untagged_status("BYE", "Internal error, closing"))
            await self._safe_flush()
            self.close()
        else:
            if not self.closed:
                self.io.resume()

    async def _safe_flush(self) -> None:
        try:
            await self.flush()
        except (ConnectionError, OSError):
            self.close()

    async def _loop(self) -> None:
        parser = self.parser
        while not self.closed:
            if self.idle_tag is not None:
                if self.dirty:
                    await self.sync()
                    self.announce(expunge_ok=True)
                    await self.flush()
                    continue
                line = parser.read_line()
                if line is None:
                    return
                tag = self.idle_tag
                self.idle_tag = None
                if isinstance(line, ParseError) or not is_idle_done(line):
                    self.tagged(tag, "BAD", "Expected DONE")
                else:
                    await self.finish(tag, "OK", "IDLE terminated")
                await self.flush()
                continue
            ev = parser.next()
            if ev is None:
                return
            if isinstance(ev, NeedContinuation):
                self.emit(ev.response())
                await self.flush()
                continue
            if isinstance(ev, ParseError):
                self._bad += 1
                self.emit(ev.response())
                if self._bad > MAX_BAD:
                    self.emit(w.untagged_status("BYE", "Too many invalid commands"))
                    await self.flush()
                    self.close()
                    return
                await self.maybe_flush()
                continue
            await self._throttle()
            await self.execute(ev)
            # Pipelined commands are answered in one write.
            if parser.buffered == 0 or self.out_size >= 16384:
                await self.flush()

    async def _throttle(self) -> None:
        now = time.monotonic()
        self._tokens = min(COMMAND_BURST, self._tokens + (now - self._tokens_at) * COMMANDS_PER_SECOND)
        self._tokens_at = now
        self._tokens -= 1
        if self._tokens < 0:
            # A client over the limit is slowed down, not cut off.
            await self.flush()
            await asyncio.sleep(-self._tokens / COMMANDS_PER_SECOND)

    async def execute(self, cmd: Command) -> None:
        entry = _DISPATCH.get(type(cmd))
        if entry is None:
            self.tagged(cmd.tag, "BAD", "Command not supported")
            return
        method, states = entry
        if self.state not in states:
            self.tagged(cmd.tag, "BAD", f"{cmd.command_name} not valid in this state")
            return
        self._bad = 0
        handler: Callable[[Any], Awaitable[None]] = getattr(self, method)
        try:
            await handler(cmd)
        except StoreError as e:
            logger.info("[%s]: %s failed: %s", self.peer, cmd.command_name, e)
            self.tagged(cmd.tag, "NO", str(e) or "failed", w.Code.CANNOT)
        except (ConnectionError, OSError):
            raise
        except Exception:
            logger.exception("[%s]: %s failed", self.peer, cmd.command_name)
            self.tagged(cmd.tag, "NO", "Internal error", w.Code.SERVERBUG)

    # -- closing ------------------------------------------------------------------------------------------

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.deselect()
        waiter = self._input_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        self.io.close()

    def shutdown(self) -> bool:
        """Server stopping: a session between commands says BYE and closes
        now (True); one in a command finishes it first."""
        if self.closed:
            return True
        if self.busy:
            return False
        self.emit(w.untagged_status("BYE", "Server shutting down"))
        if self.out:
            data = b"".join(self.out)
            self.out.clear()
            self.out_size = 0
            self.io.write(data)
        self.close()
        return True

    # -- any state -------------------------------------------------------------------------------------------

    async def cmd_capability(self, cmd: Capability) -> None:
        self.emit(w.capability(self.capabilities()))
        await self.finish(cmd.tag, "OK", "CAPABILITY completed")

    async def cmd_noop(self, cmd: Noop | Check) -> None:
        if self.view is not None:
            await self.sync(force=True)
        await self.finish(cmd.tag, "OK", f"{cmd.name} completed")

    async def cmd_logout(self, cmd: Logout) -> None:
        self.emit(w.untagged_status("BYE", "Logging out"))
        self.tagged(cmd.tag, "OK", "LOGOUT completed")
        await self.flush()
        self.state = "logout"
        self.close()

    async def cmd_id(self, cmd: Id) -> None:
        if cmd.parameters:
            shown = ", ".join(f"{k}={v}" for k, v in cmd.parameters[:8])
            logger.info("[%s]: client ID %s", self.peer, shown[:300])
        self.emit(w.id_response({"name": "mailhouse", "version": __version__}))
        await self.finish(cmd.tag, "OK", "ID completed")

    # -- not authenticated ----------------------------------------------------------------------------------

    async def cmd_starttls(self, cmd: StartTLS) -> None:
        if self.tls_active or self.ctx.tls is None:
            self.tagged(cmd.tag, "BAD", "TLS is not available" if not self.tls_active else "TLS already active")
            return
        # Octets sent after STARTTLS in the clear are never taken as commands
        # (CVE-2011-0411 style injection).
        self.parser.take_buffered()
        self.tagged(cmd.tag, "OK", "Begin TLS negotiation now")
        await self.flush()
        if not await self.io.start_tls():
            self.close()
            return
        self.tls_active = True
        self.parser.take_buffered()

    async def _logged_in(self, tag: str, account: Any, how: str) -> None:
        self.account = account
        self.state = "auth"
        logger.info("[%s]: %s logged in (%s)", self.peer, account.address, how)
        self.tagged(tag, "OK", "Logged in", w.Code.capability(self.capabilities()))

    async def _login_failed(self, tag: str, username: str) -> None:
        self._login_failures += 1
        logger.info("[%s]: login failed for %r", self.peer, username[:100])
        self.tagged(tag, "NO", "Invalid credentials", w.Code.AUTHENTICATIONFAILED)
        if self._login_failures >= MAX_LOGIN_FAILURES:
            self.emit(w.untagged_status("BYE", "Too many failed logins"))
            await self.flush()
            self.close()

    async def _check_login(self, tag: str, username: str, password: str, how: str) -> None:
        """The Authenticator (lockout, cache of recent successes, argon2, the
        delay on failure), then the answer."""
        result = await self.ctx.auth.attempt(username, password, ip=self.peer, protocol="IMAP")
        if result.account is not None:
            await self._logged_in(tag, result.account, how)
        elif result.locked:
            self.tagged(
                tag, "NO", f"Too many failed logins; try again in {int(result.retry_after) + 1}s",
                w.Code.UNAVAILABLE,
            )
        else:
            await self._login_failed(tag, username)

    async def cmd_login(self, cmd: Login) -> None:
        if not self.plaintext_ok:
            self.tagged(cmd.tag, "NO", "LOGIN needs TLS (STARTTLS first)", w.Code.PRIVACYREQUIRED)
            return
        user = cmd.username.decode("utf-8", "replace")
        password = cmd.password.decode("utf-8", "replace")
        await self._check_login(cmd.tag, user, password, "LOGIN")

    async def cmd_authenticate(self, cmd: Authenticate) -> None:
        if cmd.mechanism != "PLAIN":
            self.tagged(cmd.tag, "NO", "Unsupported authentication mechanism", w.Code.CANNOT)
            return
        if not self.plaintext_ok:
            self.tagged(cmd.tag, "NO", "Authentication needs TLS (STARTTLS first)", w.Code.PRIVACYREQUIRED)
            return
        response = cmd.initial_response
        if response is None:
            self.emit(w.continuation(b""))
            line = await self._read_line()
            if line is None:
                return
            if isinstance(line, ParseError):
                self.tagged(cmd.tag, "BAD", "Response line too long")
                return
            try:
                response = decode_sasl_response(line)
            except ValueError:
                self.tagged(cmd.tag, "BAD", "Invalid base64 in the response")
                return
            if response is None:
                self.tagged(cmd.tag, "BAD", "Authentication cancelled")
                return
        parts = response.split(b"\x00")
        if len(parts) != 3:
            self.tagged(cmd.tag, "BAD", "Malformed PLAIN response")
            return
        authzid, authcid, password = (p.decode("utf-8", "replace") for p in parts)
        if authzid and authzid.lower() != authcid.lower():
            self.tagged(cmd.tag, "NO", "Cannot act as another user", w.Code.AUTHORIZATIONFAILED)
            return
        await self._check_login(cmd.tag, authcid, password, "AUTHENTICATE PLAIN")

    # -- authenticated ------------------------------------------------------------------------------------------

    async def cmd_enable(self, cmd: Enable) -> None:
        newly: list[str] = []
        before = set(self.enabled)
        for cap in cmd.capabilities:
            # Judged against what was on before this command: "QRESYNC
            # CONDSTORE" turns both on and lists both (RFC 5161 §3.1).
            if cap not in ENABLEABLE or cap in before or cap in newly:
                continue
            self.enabled.add(cap)
            newly.append(cap)
            if cap in ("CONDSTORE", "QRESYNC"):
                # QRESYNC implies CONDSTORE (RFC 7162 §3.2.3).
                self.enable_condstore()
        names = {"IMAP4REV2": "IMAP4rev2"}
        self.emit(w.enabled(names.get(c, c) for c in newly))
        await self.finish(cmd.tag, "OK", "ENABLE completed")

    async def cmd_compress(self, cmd: Compress) -> None:
        if cmd.mechanism != "DEFLATE":
            self.tagged(cmd.tag, "NO", "Unknown compression mechanism", w.Code.CANNOT)
            return
        if self.compressing:
            self.tagged(cmd.tag, "NO", "Compression already active", w.Code.COMPRESSIONACTIVE)
            return
        pending = self.parser.take_buffered()
        self.tagged(cmd.tag, "OK", "DEFLATE active")
        await self.flush()
        self.compressing = True
        inflated = self.io.start_compression(pending)
        if inflated:
            self.parser.feed(inflated)

    async def cmd_select(self, cmd: SelectCommand) -> None:
        if self.view is not None:
            self.deselect()
            if self.rev2 or self.qresync:
                self.emit(w.untagged_status("OK", "Previous mailbox closed", w.Code.CLOSED))
        if cmd.qresync is not None and not self.qresync:
            self.tagged(cmd.tag, "BAD", "QRESYNC needs ENABLE QRESYNC first")
            return
        name = self.decode_name(cmd.mailbox)
        cols = await self.folder_columns_named(name) if name is not None else None
        if cols is None:
            self.tagged(cmd.tag, "NO", "No such mailbox", w.Code.NONEXISTENT)
            return
        if cmd.condstore or cmd.qresync is not None:
            self.enable_condstore()
        view = MailboxView(cols, readonly=cmd.readonly, recent_marks=self.watcher.recent_marks)
        self.view = view
        self.save_recent()
        self.state = "selected"
        self.dirty = False
        self.saved = None
        self.watcher.watch(view.folder_id, self)
        self.send_flags()
        self.emit(w.exists(view.count))
        if not self.rev2:
            self.emit(w.recent(view.recent_count()))
            unseen = view.first_unseen()
            if unseen:
                self.emit(w.untagged_status("OK", "First unseen", w.Code.unseen(unseen)))
        self.emit(w.untagged_status("OK", "UIDs valid", w.Code.uidvalidity(view.uidvalidity)))
        self.emit(w.untagged_status("OK", "Predicted next UID", w.Code.uidnext(view.uidnext)))
        if self.condstore:
            self.emit(w.untagged_status("OK", "Highest", w.Code.highestmodseq(view.highestmodseq)))
        if self.rev2:
            self.emit(w.list_response([], "/", view.name, utf8=self.utf8))
        if cmd.qresync is not None and cmd.qresync.uidvalidity == view.uidvalidity:
            await self._qresync(cmd, view)
        code = w.Code.READ_ONLY if view.readonly else w.Code.READ_WRITE
        await self.finish(cmd.tag, "OK", f"{cmd.name} completed", code)

    async def _qresync(self, cmd: SelectCommand, view: MailboxView) -> None:
        """VANISHED (EARLIER) and FETCH for what changed since the client's
        mod-sequence (RFC 7162 §3.2.5)."""
        p = cmd.qresync
        assert p is not None
        known = p.known_uids.resolve(MAX_NUMBER) if p.known_uids is not None else None

        def in_known(uid: int) -> bool:
            return known is None or any(a <= uid <= b for a, b in known)

        gone = await self.store.vanished_since(view.folder_id, p.modseq)
        gone = [u for u in gone if in_known(u) and view.index_of(u) is None]
        if gone:
            self.emit(w.vanished(gone, earlier=True))
        since = p.modseq
        modseqs = view.modseqs
        for i in range(view.count):
            if modseqs[i] > since and (known is None or in_known(view.uids[i])):
                # QRESYNC turned CONDSTORE on, so this carries MODSEQ.
                self.emit(self.flags_fetch(i))
                await self.maybe_flush()

    async def cmd_close(self, cmd: Close) -> None:
        view = self.view
        assert view is not None
        if not view.readonly:
            # Silently: CLOSE sends no EXPUNGE responses (RFC 9051 §6.4.1).
            await self.store.expunge(view.folder_id)
        self.deselect()
        self.tagged(cmd.tag, "OK", "CLOSE completed")

    async def cmd_unselect(self, cmd: Unselect) -> None:
        self.deselect()
        self.tagged(cmd.tag, "OK", "UNSELECT completed")

    async def cmd_idle(self, cmd: Idle) -> None:
        if self.view is not None:
            await self.sync(force=True)
            self.announce(expunge_ok=True)
        self.emit(w.continuation("idling"))
        self.idle_tag = cmd.tag

