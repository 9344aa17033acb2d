"""The records the store hands out and takes in; plain data, no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# IMAP system flags as stored: one bit each, so "UNSEEN" is an integer test.
FLAG_BITS: dict[str, int] = {
    "\\Seen": 1,
    "\\Answered": 2,
    "\\Flagged": 4,
    "\\Deleted": 8,
    "\\Draft": 16,
}

SPECIAL_FOLDERS: tuple[tuple[str, str | None], ...] = (
    ("INBOX", None),
    ("Sent", "\\Sent"),
    ("Drafts", "\\Drafts"),
    ("Trash", "\\Trash"),
    ("Junk", "\\Junk"),
    ("Archive", "\\Archive"),
)


def flags_to_bits(flags: set[str] | frozenset[str]) -> tuple[int, str]:
    """Split IMAP flags into the system-flag bit set and the keyword string."""
    bits = 0
    keywords: list[str] = []
    for f in flags:
        for name, bit in FLAG_BITS.items():
            if f.lower() == name.lower():
                bits |= bit
                break
        else:
            if not f.startswith("\\"):
                keywords.append(f)
    return bits, " ".join(sorted(set(keywords)))


def bits_to_flags(bits: int, keywords: str) -> set[str]:
    out = {name for name, bit in FLAG_BITS.items() if bits & bit}
    out.update(k for k in keywords.split() if k)
    return out


@dataclass(frozen=True)
class Domain:
    id: int
    name: str
    created: float


@dataclass(frozen=True)
class Account:
    id: int
    address: str
    domain: str
    password_hash: str
    created: float
    quota: int | None = None


@dataclass(frozen=True)
class Alias:
    address: str
    targets: list[str]


@dataclass(frozen=True)
class Folder:
    id: int
    account_id: int
    name: str
    special_use: str | None
    uidvalidity: int
    uidnext: int
    highestmodseq: int
    subscribed: bool
    # IMAP \Recent: the first UID no session has been told of, as last saved
    # (mailhouse.imap.recent holds the live mark; this is its floor after a restart).
    recent_uid: int = 0


@dataclass(frozen=True)
class Message:
    id: int
    folder_id: int
    uid: int
    internal_date: float
    size: int
    flags: set[str]
    modseq: int
    queue_id: str | None
    message_id: str | None
    parse: dict[str, Any]
    blob_id: int
    internal_tz: int = 0
    """The UTC offset the internal date was stated in, minutes east of UTC."""


@dataclass(frozen=True)
class LocalTarget:
    """One mailbox a received message goes into."""

    account_id: int
    address: str  # the account's address
    recipient: str  # the envelope recipient that led here
    folder: str = "INBOX"


@dataclass(frozen=True)
class RemoteTarget:
    """One recipient the queue must send to."""

    address: str
    orcpt: str | None = None
    notify: str | None = None


@dataclass
class Incoming:
    """A received message, ready to be made durable in one commit."""

    queue_id: str
    sender: str
    local: list[LocalTarget]
    remote: list[RemoteTarget]
    parse: dict[str, Any]
    message_id: str | None
    internal_date: float
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    ret: str | None = None
    envid: str | None = None
    body_type: str | None = None
    smtputf8: bool = False
    auth_user: str | None = None
    flags: set[str] = field(default_factory=set)
    internal_tz: int = 0  # minutes east of UTC of the internal date


@dataclass(frozen=True)
class Delivered:
    account_id: int
    address: str
    folder: str
    uid: int
    folder_id: int = 0


@dataclass(frozen=True)
class QueueRecipient:
    id: int
    address: str
    orcpt: str | None
    notify: str | None
    state: str
    last_reply: str | None
    updated: float | None


@dataclass(frozen=True)
class QueueEntry:
    id: str
    sender: str
    message_id: str | None
    created: float
    next_attempt: float
    attempts: int
    held: bool
    last_error: str | None
    warned: bool
    ret: str | None
    envid: str | None
    body_type: str | None
    smtputf8: bool
    auth_user: str | None
    size: int
    recipients: list[QueueRecipient]
    blob_id: int = 0

    @property
    def pending(self) -> list[QueueRecipient]:
        return [r for r in self.recipients if r.state in ("pending", "deferred")]


@dataclass(frozen=True)
class JourneyEvent:
    queue_id: str
    message_id: str | None
    time: float
    kind: str
    data: dict[str, Any]


@dataclass(frozen=True)
class RecipientUpdate:
    """The outcome of one delivery attempt for one queued recipient."""

    recipient_id: int
    state: str  # delivered / deferred / failed
    reply: str | None


@dataclass
class AttemptOutcome:
    """Everything one delivery attempt changes, committed together: recipient states,
    the next try, journey events, and the DSNs it produced (so a message is never
    removed before its notices are safely queued)."""

    updates: list[RecipientUpdate]
    next_attempt: float
    last_error: str | None
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    warned: bool = False
    count_attempt: bool = True


@dataclass(frozen=True)
class MessageState:
    """The per-message state a mailbox session keeps: cheap to load for 100,000."""

    uid: int
    flags: int  # FLAG_BITS
    keywords: str
    modseq: int
    size: int

    @property
    def flag_set(self) -> set[str]:
        return bits_to_flags(self.flags, self.keywords)


@dataclass(frozen=True)
class FlagChange:
    uid: int
    flags: set[str]
    modseq: int


@dataclass(frozen=True)
class Change:
    """Published after a commit that touched a folder (for IDLE, SSE, other sessions)."""

    account_id: int
    folder_id: int
    kind: str  # "exists" / "flags" / "expunge" / "folders"


# ---- IMAP (mailhouse.imap): compact mailbox state ----------------------------


@dataclass
class FolderColumns:
    """A folder and every message's state as parallel arrays (index i is
    message i+1 by UID order): about 20 bytes a message instead of an object,
    so a session can hold 100,000 of them and load them in one query."""

    folder: Folder
    uids: Any  # array("I"), ascending
    flags: bytearray  # FLAG_BITS
    modseqs: Any  # array("Q")
    sizes: Any  # array("Q")
    keywords: dict[int, str]  # uid -> space-separated keywords, only when there are some


@dataclass(frozen=True)
class FolderDelta:
    """What changed in a folder after a mod-sequence, read in one snapshot."""

    folder: Folder
    changed: list[tuple[int, int, str, int, int]]  # (uid, flags, keywords, modseq, size) by UID
    vanished: list[int]  # UIDs expunged after the mod-sequence, ascending


@dataclass(frozen=True)
class FolderSummary:
    """STATUS figures of one folder."""

    messages: int
    unseen: int
    deleted: int
    size: int
    deleted_size: int = 0
    """Octets of the messages with \\Deleted (STATUS DELETED-STORAGE, RFC 9208)."""


@dataclass(frozen=True)
class SearchRow:
    """What SEARCH reads per message beyond the flags: the internal date, and
    the raw header block (with its empty line) if asked."""

    uid: int
    internal_date: float
    header: bytes | None
    internal_tz: int = 0  # minutes east of UTC the internal date was stated in


@dataclass(frozen=True)
class AppendItem:
    """One message of an APPEND (several for MULTIAPPEND, stored all or none)."""

    raw: bytes
    flags: tuple[str, ...] = ()
    internal_date: float | None = None
    internal_tz: int = 0  # minutes east of UTC the internal date was stated in


# ---- webmail and HTTP API (mailhouse.web) ------------------------------------


@dataclass(frozen=True)
class ApiToken:
    """A bearer token of the HTTP API; the store keeps only a hash of its secret."""

    id: int
    account_id: int
    name: str
    hash: str
    created: float
    last_used: float | None
    address: str = ""  # the account's, so callers can check it against the directory


@dataclass(frozen=True)
class MessageQuery:
    """What the webmail's search form asks for; empty fields do not filter.

    `text` matches any of from, to, subject and the preview; `body` also looks
    into the stored bytes of messages kept inline (most of them)."""

    folder_id: int | None = None  # None: every folder of the account
    text: str = ""
    sender: str = ""
    recipient: str = ""
    subject: str = ""
    body: str = ""
    since: float | None = None  # received at or after (UNIX time)
    before: float | None = None  # received before


@dataclass(frozen=True)
class GreyTriplet:
    """One greylisting triplet (mailhouse.trust.limits.Greylist): the client's
    network, the sender and the recipient (lower case), when it was first seen or,
    once `passed`, when it passed."""

    network: str
    sender: str
    recipient: str
    first: float
    passed: bool
