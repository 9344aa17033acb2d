"""The one store interface. Everything above it (SMTP, queue, IMAP, web, CLI) talks to
this and never to SQLite or PostgreSQL directly.

Writes are durable when their coroutine returns: committed and fsync'd.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable

from .models import (
    Account,
    Alias,
    ApiToken,
    AppendItem,
    AttemptOutcome,
    Change,
    Delivered,
    Domain,
    FlagChange,
    Folder,
    FolderColumns,
    FolderDelta,
    FolderSummary,
    GreyTriplet,
    Incoming,
    JourneyEvent,
    LocalTarget,
    Message,
    MessageQuery,
    MessageState,
    QueueEntry,
    SearchRow,
)


class StoreError(Exception):
    """A refused store operation, worded for the user (e.g. "domain x exists")."""


class NotFound(StoreError):
    pass


class BlobWriter(abc.ABC):
    """The bytes of one message as they arrive, before they are committed.

    Small messages stay in memory; large ones spill to a spool file so a 25 MB
    message never sits in memory whole.
    """

    size: int

    @abc.abstractmethod
    def write(self, data: bytes) -> None: ...

    @abc.abstractmethod
    def head(self, n: int) -> bytes:
        """The first n bytes written (for header inspection)."""

    @abc.abstractmethod
    def view(self) -> memoryview:
        """All bytes written so far, without copying (mmap for spooled data)."""

    @abc.abstractmethod
    def discard(self) -> None:
        """Drop everything; the writer is unusable afterwards."""

    @abc.abstractmethod
    def splice(self, start: int, end: int, data: bytes) -> None:
        """Replace bytes [start, end) with `data`, before the commit: header fields that
        can only be written once the whole message is known (Authentication-Results,
        DKIM-Signature) go in front, and forged ones are taken out. Cheap in memory;
        a spooled file is rewritten."""


class Store(abc.ABC):
    """Persistent state of one mailhouse node."""

    # ---- lifecycle
    @abc.abstractmethod
    async def open(self) -> None: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    # ---- domains
    @abc.abstractmethod
    async def add_domain(self, name: str, *, exist_ok: bool = False) -> Domain: ...

    @abc.abstractmethod
    async def remove_domain(self, name: str) -> None: ...

    @abc.abstractmethod
    async def list_domains(self) -> list[Domain]: ...

    @abc.abstractmethod
    def is_local_domain(self, name: str) -> bool:
        """Fast, non-blocking: is mail for this domain delivered here?"""

    # ---- accounts
    @abc.abstractmethod
    async def add_account(self, address: str, password_hash: str) -> Account: ...

    @abc.abstractmethod
    async def remove_account(self, address: str) -> None: ...

    @abc.abstractmethod
    async def set_password(self, address: str, password_hash: str) -> None: ...

    @abc.abstractmethod
    async def list_accounts(self) -> list[Account]: ...

    @abc.abstractmethod
    def find_account(self, address: str) -> Account | None:
        """Fast, non-blocking lookup by exact (lower-cased) address."""

    # ---- aliases
    @abc.abstractmethod
    async def add_alias(self, address: str, targets: list[str]) -> Alias: ...

    @abc.abstractmethod
    async def remove_alias(self, address: str) -> None: ...

    @abc.abstractmethod
    async def list_aliases(self) -> list[Alias]: ...

    @abc.abstractmethod
    def find_alias(self, address: str) -> Alias | None:
        """Fast, non-blocking lookup; `@domain` finds the catch-all."""

    # ---- folders and messages
    @abc.abstractmethod
    async def list_folders(self, account_id: int) -> list[Folder]: ...

    @abc.abstractmethod
    async def get_folder(self, account_id: int, name: str) -> Folder | None: ...

    @abc.abstractmethod
    async def create_folder(self, account_id: int, name: str, special_use: str | None = None) -> Folder:
        """StoreError("exists") when the name is taken."""

    @abc.abstractmethod
    async def delete_folder(self, account_id: int, name: str) -> None:
        """Remove a folder and its messages; INBOX cannot be removed."""

    @abc.abstractmethod
    async def rename_folder(self, account_id: int, old: str, new: str) -> None:
        """Rename a folder and its children (`old/...`). Renaming INBOX moves its
        messages to a new folder and leaves INBOX empty (RFC 9051 §6.3.6)."""

    @abc.abstractmethod
    async def set_subscribed(self, account_id: int, name: str, subscribed: bool) -> None: ...

    @abc.abstractmethod
    async def folder_states(self, folder_id: int) -> list[MessageState]:
        """Every message's UID, flags, modseq and size, by UID."""

    @abc.abstractmethod
    async def get_messages(self, folder_id: int, uids: list[int]) -> list[Message]: ...

    @abc.abstractmethod
    async def store_flags(
        self,
        folder_id: int,
        uids: list[int],
        mode: str,
        flags: set[str],
        unchanged_since: int | None = None,
        *,
        missing: list[int] | None = None,
    ) -> tuple[list[FlagChange], list[int]]:
        """mode: "add" / "remove" / "replace". Returns (changed, failed-by-UNCHANGEDSINCE).
        The UIDs no longer in the folder (expunged meanwhile) are added to
        ``missing`` when a list is given."""

    @abc.abstractmethod
    async def expunge(self, folder_id: int, uids: list[int] | None = None) -> list[int]:
        """Remove \\Deleted messages (only those among `uids` when given); the UIDs gone."""

    @abc.abstractmethod
    async def copy_messages(
        self, folder_id: int, uids: list[int], target_folder_id: int, *, move: bool = False
    ) -> list[tuple[int, int]]:
        """(source UID, new UID) pairs; a move expunges the sources in the same commit."""

    @abc.abstractmethod
    async def vanished_since(self, folder_id: int, modseq: int) -> list[int]:
        """UIDs expunged after `modseq` (QRESYNC)."""

    @abc.abstractmethod
    def subscribe_changes(self, callback: Callable[[Change], None]) -> Callable[[], None]:
        """Call back (on the event loop) after every commit that changes a mailbox;
        returns the unsubscribe function."""

    @abc.abstractmethod
    def announce_changes(self, changes: list[Change]) -> None:
        """Tell this process's subscribers of commits another process made (a
        worker's, relayed by the main process)."""

    @abc.abstractmethod
    async def mailbox_usage(self, account_id: int) -> int:
        """Bytes of mail stored for the account (QUOTA)."""

    @abc.abstractmethod
    async def list_messages(self, folder_id: int) -> list[Message]: ...

    @abc.abstractmethod
    async def get_message(self, folder_id: int, uid: int) -> Message | None: ...

    @abc.abstractmethod
    async def read_blob(self, blob_id: int) -> bytes: ...

    @abc.abstractmethod
    def new_blob(self) -> BlobWriter: ...

    @abc.abstractmethod
    async def deliver(self, blob: BlobWriter, incoming: Incoming) -> list[Delivered]:
        """Make a received message durable: its bytes once, a message row in each
        local target's folder, a queue entry for the remote targets, the journey
        events; all in one commit shared with concurrent deliveries."""

    @abc.abstractmethod
    async def append(
        self,
        target: LocalTarget,
        raw: bytes,
        *,
        flags: Iterable[str] = (),
        internal_date: float | None = None,
        internal_tz: int = 0,
    ) -> Delivered:
        """Store a message given whole (import, IMAP APPEND, Sent copies);
        `internal_tz` is the UTC offset (minutes east) the date was stated in."""

    # ---- IMAP (mailhouse.imap): fast mailbox reads and atomic appends
    @abc.abstractmethod
    async def folder_columns(self, folder_id: int) -> FolderColumns | None:
        """The folder and all its messages' states as arrays, in one snapshot
        (None when the folder is gone): SELECT of a 100,000-message mailbox."""

    @abc.abstractmethod
    async def folder_changes(self, folder_id: int, since_modseq: int) -> FolderDelta | None:
        """Messages changed or added, and UIDs expunged, after `since_modseq`,
        with the folder's current state, in one snapshot (None when gone)."""

    @abc.abstractmethod
    async def folder_modseqs(self, folder_ids: list[int]) -> dict[int, int]:
        """folder id -> highest mod-sequence, for a cheap poll of many folders
        (changes made by other processes, which send no notification)."""

    @abc.abstractmethod
    async def folder_summaries(self, folder_ids: list[int]) -> dict[int, FolderSummary]:
        """STATUS counts (messages, unseen, deleted, total size) per folder."""

    @abc.abstractmethod
    async def read_blobs(self, blob_ids: list[int]) -> dict[int, bytes]:
        """Several messages' bytes in one round trip (FETCH of bodies)."""

    @abc.abstractmethod
    async def search_rows(self, folder_id: int, uids: list[int], *, headers: bool) -> list[SearchRow]:
        """Internal date and (if `headers`) the raw header block of the given
        messages, by UID, without reading their bodies."""

    @abc.abstractmethod
    async def append_many(self, target: LocalTarget, items: list[AppendItem]) -> list[Delivered]:
        """Store several messages in one folder in one commit: all or none
        (MULTIAPPEND). The folder must exist (NotFound otherwise)."""

    @abc.abstractmethod
    async def orphan_subscriptions(self, account_id: int) -> set[str]:
        """Subscribed names that have no folder (the others are Folder.subscribed)."""

    @abc.abstractmethod
    async def set_orphan_subscription(self, account_id: int, name: str, subscribed: bool) -> None:
        """Add or remove a subscription to a name without a folder."""

    @abc.abstractmethod
    async def note_recent(self, folder_id: int, mark: int) -> None:
        """IMAP \\Recent: sessions have been told of the folder's UIDs below `mark`
        (kept as Folder.recent_uid, never lowered). Need not be durable."""

    @abc.abstractmethod
    async def note_first_read(
        self, queue_id: str, message_id: str | None, account: str, protocol: str
    ) -> bool:
        """Add a "read" journey event unless the account already read that
        message; True when it was added."""

    # ---- queue and journey
    @abc.abstractmethod
    async def list_queue(self) -> list[QueueEntry]: ...

    @abc.abstractmethod
    async def get_queue_entry(self, queue_id: str) -> QueueEntry | None: ...

    @abc.abstractmethod
    async def due_queue(
        self, now: float, limit: int, exclude: set[str], part: tuple[int, int] | None = None
    ) -> list[QueueEntry]:
        """Entries whose next attempt is due and that are not held, oldest first.

        part=(k, n): only the k-th of n disjoint shares of the queue (each worker
        process drains its own); every entry is in exactly one share for a given n."""

    @abc.abstractmethod
    async def next_queue_time(self, part: tuple[int, int] | None = None) -> float | None:
        """When the earliest non-held entry (of that share) is due; None for none."""

    @abc.abstractmethod
    async def blob_source(self, blob_id: int) -> bytes | str:
        """A message's bytes, or the path of the file holding them (large ones)."""

    @abc.abstractmethod
    async def finish_attempt(
        self,
        queue_id: str,
        outcome: AttemptOutcome,
        notices: list[tuple[BlobWriter, Incoming]],
    ) -> bool:
        """Record one attempt and enqueue/deliver its DSNs, in one commit; the entry is
        removed once no recipient is pending. Returns True if it was removed."""

    @abc.abstractmethod
    async def update_queue_entry(
        self, queue_id: str, *, held: bool | None = None, next_attempt: float | None = None
    ) -> None:
        """hold / release / retry; NotFound for an unknown id."""

    @abc.abstractmethod
    async def retry_all(self, now: float) -> int: ...

    @abc.abstractmethod
    async def delete_queue_entry(self, queue_id: str) -> None: ...

    @abc.abstractmethod
    async def add_event(
        self, queue_id: str, kind: str, data: dict[str, object], message_id: str | None = None
    ) -> None: ...

    @abc.abstractmethod
    async def journey(self, ident: str) -> list[JourneyEvent]:
        """Events of one message by queue id or Message-ID, oldest first."""

    # ---- webmail and HTTP API (mailhouse.web)
    @abc.abstractmethod
    async def list_messages_page(
        self, folder_id: int, limit: int, offset: int, *, max_uid: int | None = None
    ) -> list[Message]:
        """One page of a folder, newest (highest UID) first, skipping `offset`
        messages (after leaving out UIDs above `max_uid` when given). The messages'
        `parse` holds only the summary keys (subject, from_name, from_address, to,
        cc, date, preview, has_attachments): what a list shows."""

    @abc.abstractmethod
    async def folder_uids(self, folder_id: int) -> list[int]:
        """Every UID of the folder, ascending (cheap: the index only)."""

    @abc.abstractmethod
    async def folder_counts(self, account_id: int) -> dict[int, tuple[int, int]]:
        """folder id -> (messages, unseen messages), for every folder of the account."""

    @abc.abstractmethod
    async def search_messages(self, account_id: int, query: MessageQuery, limit: int) -> list[Message]:
        """Messages of the account matching every given criterion, newest first
        (`parse` with the summary keys only, as in list_messages_page)."""

    @abc.abstractmethod
    async def add_api_token(self, account_id: int, name: str, token_hash: str) -> ApiToken: ...

    @abc.abstractmethod
    async def list_api_tokens(self, account_id: int) -> list[ApiToken]: ...

    @abc.abstractmethod
    async def get_api_token(self, token_id: int) -> ApiToken | None: ...

    @abc.abstractmethod
    async def delete_api_token(self, account_id: int, token_id: int) -> bool:
        """False when the account has no such token."""

    @abc.abstractmethod
    async def touch_api_token(self, token_id: int, when: float) -> None:
        """Record a use (callers throttle this: it is a write)."""

    # ---- DKIM signing keys (mailhouse.trust.keys; migration 0005_dkim)
    @abc.abstractmethod
    async def dkim_keys(self, domain: str) -> list[tuple[str, str, str, float]]:
        """The domain's active signing keys: (selector, algorithm, private key PEM, created)."""

    @abc.abstractmethod
    async def add_dkim_key(self, domain: str, selector: str, algorithm: str, private_pem: str) -> bool:
        """Keep a new active key unless the domain already has an active key of that
        algorithm (another process made it first); True when this one was kept."""

    # ---- greylisting triplets (mailhouse.trust.limits.GreylistKeeper; migration 0010)
    @abc.abstractmethod
    async def greylist_triplets(self, now: float, expire: float, keep: float) -> list[GreyTriplet]:
        """The triplets still in force at `now`: passed ones for `keep` seconds after
        they passed, the others for `expire` seconds after they were first seen."""

    @abc.abstractmethod
    async def save_greylist(
        self, triplets: list[GreyTriplet], *, forget: tuple[float, float, float] | None = None
    ) -> None:
        """Keep these triplets, each replacing any of the same key; with
        forget=(now, expire, keep), also drop those no longer in force. Need not be
        durable before it returns: losing the last batch to a crash only defers
        its senders once more."""
