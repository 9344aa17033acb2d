"""Import and export of mailboxes as mbox files and Maildir directories.

A :class:`MailFile` is one message as the server stores it: ``raw`` with CRLF
line endings, IMAP ``flags`` (system flags such as ``\\Seen`` and keywords)
and the INTERNALDATE. Exporting and importing again gives back ``raw``
byte for byte, the flags, and the date to the second, for any ``raw`` whose
line breaks are all CRLF (a bare LF comes back as CRLF).

mbox (mboxrd)
    ``From <sender> <asctime in UTC>`` starts each message; the file uses LF
    line endings; every line matching ``>*From `` gets one more ``>`` so the
    quoting is reversible; one empty line follows each message. Flags are
    written as the first three header lines, ``Status:``, ``X-Status:`` and
    ``X-Keywords:`` (read by mutt, Dovecot and others); on import exactly that
    leading block is removed again. Files from other tools (mboxo, mboxcl,
    mboxcl2, Thunderbird) are read too: their ``Status:``/``X-Status:``/
    ``X-Keywords:``/``X-Mozilla-Status:`` headers give the flags and stay in
    the message. Only ``From `` lines that carry a date start a new message,
    so unquoted ``From `` lines in mboxo bodies do not split messages, and a
    ``Content-Length:`` that lands exactly on the next message is honoured.

Maildir
    Files go to ``tmp/`` and are renamed into ``new/`` (no flags) or ``cur/``
    with ``:2,`` info letters (D Draft, F Flagged, P $Forwarded, R Answered,
    S Seen, T Deleted; keywords as a-z through a Dovecot-compatible
    ``dovecot-keywords`` file, so at most 26 keywords per folder). The file
    mtime is the internal date. Files use LF line endings, as other Maildir
    software expects, unless ``raw`` contains CR CR LF, which would not survive
    the conversion; such messages are stored with CRLF and read back as is.
"""

from __future__ import annotations

import calendar
import email.utils
import itertools
import math
import mmap
import os
import re
import socket
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from mailhouse.mime.headers import (
    field_map,
    find_header_end,
    get_header,
    split_header,
    unfold,
)
from mailhouse.mime.structure import parse_address_list

SEEN = "\\Seen"
ANSWERED = "\\Answered"
FLAGGED = "\\Flagged"
DELETED = "\\Deleted"
DRAFT = "\\Draft"
RECENT = "\\Recent"
FORWARDED = "$Forwarded"


@dataclass
class MailFile:
    """One message: CRLF ``raw`` bytes, IMAP flags and keywords, INTERNALDATE.

    An ``internal_date`` of None is exported as the Date: header's time (mbox,
    else the current time) or the current time (Maildir mtime), so it comes
    back as a number.
    """

    raw: bytes
    flags: set[str] = field(default_factory=set)
    internal_date: float | None = None


def detect_format(path: Path) -> Literal["mbox", "maildir"]:
    """``"maildir"`` for a directory with ``cur/`` and ``new/``, ``"mbox"`` for a
    file that is empty or starts with a ``From `` line; ValueError otherwise."""
    if path.is_dir():
        if (path / "cur").is_dir() and (path / "new").is_dir():
            return "maildir"
        raise ValueError(f"{path}: directory has no cur/ and new/, so it is not a Maildir")
    if path.is_file():
        with open(path, "rb") as f:
            head = f.read(4096).lstrip(b"\r\n")
        if not head or head.startswith(b"From "):
            return "mbox"
        raise ValueError(f"{path}: file does not start with a 'From ' line, so it is not an mbox")
    if not path.exists():
        raise ValueError(f"{path}: no such file or directory")
    raise ValueError(f"{path}: neither a regular file nor a directory")


def read_mailfiles(path: Path) -> Iterator[MailFile]:
    """Yield the messages of an mbox file or a Maildir, in mailbox order."""
    if detect_format(path) == "maildir":
        return _read_maildir(path)
    return _read_mbox(path)


def _whole_seconds(t: float) -> float:
    return float(math.floor(t))


# --- mbox -------------------------------------------------------------------------

_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
# A From_ line that carries an asctime-style date. Requiring the date keeps
# ordinary body lines beginning with "From " (unquoted in mboxo files) from
# starting a message.
_FROM_LINE = re.compile(
    rb"From [^\n]*?(?:(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun),? +)?"
    rb"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) +(\d{1,2}) +"
    rb"(\d{1,2}):(\d\d)(?::(\d\d))? +(?:([+-]\d{4}) +|[A-Za-z]{1,5} +)?(\d{4})\b"
)
_QUOTE = re.compile(rb"^(>*From )", re.M)
_UNQUOTE = re.compile(rb"^>(>*From )", re.M)
_META = re.compile(rb"Status: (R?)O\nX-Status:(?: ([A-Z]+))?\nX-Keywords:(?: ([^\n]+))?\n")
_X_STATUS = {"A": ANSWERED, "F": FLAGGED, "T": DRAFT, "D": DELETED}
_MOZILLA_STATUS = ((0x1, SEEN), (0x2, ANSWERED), (0x4, FLAGGED), (0x8, DELETED), (0x1000, FORWARDED))


def _from_line_date(m: re.Match[bytes]) -> float | None:
    month, day, hour, minute, second, zone, year = m.groups()
    try:
        stamp = calendar.timegm(
            (
                int(year),
                _MONTHS.index(month.decode().lower()) + 1,
                int(day),
                int(hour),
                int(minute),
                int(second or 0),
            )
        )
    except (ValueError, OverflowError):
        return None
    if zone:
        offset = (int(zone[1:3]) * 60 + int(zone[3:5])) * 60
        stamp += -offset if zone[:1] == b"+" else offset
    return float(stamp)


def _next_from(data: bytes | mmap.mmap, start: int, end: int) -> int:
    """Index of the LF before the next dated From_ line at or after ``start``, or -1."""
    while True:
        p = data.find(b"\nFrom ", start, end)
        if p < 0 or _FROM_LINE.match(data, p + 1) is not None:
            return p
        start = p + 1


def _read_mbox(path: Path) -> Iterator[MailFile]:
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            return
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            yield from _parse_mbox(data)


def _parse_mbox(data: bytes | mmap.mmap) -> Iterator[MailFile]:
    n = len(data)
    pos = 0
    while pos < n and data[pos] in (10, 13):
        pos += 1
    while pos < n:
        line_end = data.find(b"\n", pos)
        if line_end < 0:
            line_end = n
        from_line = data[pos:line_end]
        crlf = from_line.endswith(b"\r")
        m = _FROM_LINE.match(from_line)
        date = _from_line_date(m) if m is not None else None
        start = min(line_end + 1, n)
        p = _next_from(data, start - 1, n)
        end = n if p < 0 else p + 1
        end, stuffed = _content_length_end(data, start, end, n)
        yield _mbox_message(data[start:end], crlf, not stuffed, date)
        pos = end


def _content_length_end(data: bytes | mmap.mmap, start: int, end: int, n: int) -> tuple[int, bool]:
    """Extend a message to its Content-Length (mboxcl2) when the From_ split
    cut it short and that length ends exactly where another message (or the
    file) starts; returns (end, extended)."""
    if _META.match(data, start, end) is not None:
        return end, False  # written by us: every From_ line is quoted
    fields_end, body_start = find_header_end(data, start, end)
    value = field_map(data[start:fields_end], True).get(b"content-length")
    if value is None:
        return end, False
    digits = value.strip()
    if not digits.isdigit() or len(digits) > 15:
        return end, False
    stop = body_start + int(digits)
    if stop <= end or stop > n:
        return end, False
    if stop == n:
        return n, True
    for sep in (b"\n", b"\r\n"):
        after = stop + len(sep)
        if data[stop:after] == sep and (after == n or _FROM_LINE.match(data, after) is not None):
            return after, True
    return end, False


def _mbox_message(block: bytes, crlf: bool, unquote: bool, date: float | None) -> MailFile:
    # Every message is followed by one empty line (the separator); a message
    # without a final line break is therefore recognisable and kept as such.
    if crlf and block.endswith(b"\r\n"):
        block = block[:-2]
    elif block.endswith(b"\n"):
        block = block[:-1]
    flags: set[str] = set()
    meta = None if crlf else _META.match(block)
    if meta is not None:
        seen, status, keywords = meta.groups()
        if seen:
            flags.add(SEEN)
        flags.update(_X_STATUS[c] for c in (status or b"").decode() if c in _X_STATUS)
        flags.update((keywords or b"").decode("utf-8", "replace").split())
        block = block[meta.end() :]
    if unquote:
        block = _UNQUOTE.sub(rb"\1", block)
    if meta is None:
        flags = _header_flags(block)
    raw = block if crlf else block.replace(b"\n", b"\r\n")
    return MailFile(raw=raw, flags=flags, internal_date=date)


def _header_flags(message: bytes) -> set[str]:
    header, _ = split_header(message)
    fields = field_map(header)
    flags: set[str] = set()
    status = fields.get(b"status")
    if status is not None and b"R" in status:
        flags.add(SEEN)
    x_status = fields.get(b"x-status")
    if x_status is not None:
        flags.update(_X_STATUS[c] for c in unfold(x_status) if c in _X_STATUS)
    keywords = fields.get(b"x-keywords")
    if keywords is not None:
        flags.update(unfold(keywords).replace(",", " ").split())
    mozilla = fields.get(b"x-mozilla-status")
    if mozilla is not None:
        try:
            bits = int(unfold(mozilla), 16)
        except ValueError:
            bits = 0
        flags.update(flag for bit, flag in _MOZILLA_STATUS if bits & bit)
    return flags


def _envelope_sender(raw: bytes) -> bytes:
    header, _ = split_header(raw)
    sender = get_header(header, "Return-Path")
    if sender is not None:
        sender = sender.strip().strip("<>").strip()
    if not sender:
        from_value = get_header(header, "From")
        for addr in parse_address_list(from_value or ""):
            if addr[2] and addr[3]:
                sender = f"{addr[2]}@{addr[3]}"
                break
    cleaned = "".join(c for c in sender or "" if c.isprintable() and not c.isspace())
    return (cleaned or "MAILER-DAEMON").encode("utf-8")


def _header_date(raw: bytes) -> float | None:
    header, _ = split_header(raw)
    value = get_header(header, "Date")
    if value is None:
        return None
    try:
        parsed = email.utils.parsedate_tz(value)
        return None if parsed is None else float(email.utils.mktime_tz(parsed))
    except Exception:  # parsedate_tz/mktime_tz raise assorted errors on junk
        return None


_ASCTIME_RANGE = (-62135596800, 253402300799)  # years 1 .. 9999


def _asctime(t: float) -> bytes:
    t = min(max(math.floor(t), _ASCTIME_RANGE[0]), _ASCTIME_RANGE[1])
    return time.asctime(time.gmtime(t)).encode("ascii")


def _status_block(flags: set[str]) -> bytes:
    letters = "".join(c for c, flag in (("A", ANSWERED), ("F", FLAGGED), ("T", DRAFT), ("D", DELETED)) if flag in flags)
    keywords = sorted(_keywords(flags))
    return (
        b"Status: " + (b"RO" if SEEN in flags else b"O") + b"\n"
        + b"X-Status:" + (b" " + letters.encode() if letters else b"") + b"\n"
        + b"X-Keywords:" + (b" " + " ".join(keywords).encode("utf-8") if keywords else b"") + b"\n"
    )


_SYSTEM_FLAGS = frozenset((SEEN, ANSWERED, FLAGGED, DELETED, DRAFT, RECENT))


def _keywords(flags: set[str]) -> list[str]:
    # A keyword is an IMAP atom: anything with whitespace or controls could
    # not be written back and read again unchanged, so it is not exported.
    return [
        f
        for f in flags
        if f not in _SYSTEM_FLAGS and f and all(c.isprintable() and not c.isspace() for c in f)
    ]


def _mbox_entry(message: MailFile) -> bytes:
    raw = message.raw
    date = message.internal_date
    if date is None:
        date = _header_date(raw)
    if date is None:
        date = time.time()
    from_line = b"From " + _envelope_sender(raw) + b" " + _asctime(date) + b"\n"
    body = _QUOTE.sub(rb">\1", _status_block(message.flags) + raw.replace(b"\r\n", b"\n"))
    return from_line + body + b"\n"


def write_mbox(path: Path, messages: Iterable[MailFile]) -> int:
    """Write ``messages`` to a new mboxrd file at ``path`` (replacing it
    atomically); returns how many were written."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    count = 0
    try:
        with open(tmp, "wb") as f:
            for message in messages:
                f.write(_mbox_entry(message))
                count += 1
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return count


# --- Maildir ----------------------------------------------------------------------

_INFO_FLAGS = {"D": DRAFT, "F": FLAGGED, "P": FORWARDED, "R": ANSWERED, "S": SEEN, "T": DELETED}
_FLAG_INFO = {flag: letter for letter, flag in _INFO_FLAGS.items()}
_KEYWORDS_FILE = "dovecot-keywords"
# Process-wide, so two exports in the same microsecond still get unique names.
_SEQUENCE = itertools.count(1)
_DIGITS = re.compile(r"(\d+)")
_BARE_LF = re.compile(rb"(?<!\r)\n")


def _load_keywords(path: Path) -> dict[int, str]:
    try:
        lines = (path / _KEYWORDS_FILE).read_text("utf-8", "replace").splitlines()
    except OSError:
        return {}
    out: dict[int, str] = {}
    for line in lines:
        index, _, name = line.partition(" ")
        if index.isdigit() and name and int(index) < 26:
            out[int(index)] = name
    return out


def _split_info(name: str) -> tuple[str, str | None]:
    for sep in (":2,", "!2,"):
        base, found, info = name.rpartition(sep)
        if found:
            return base, info
    return name, None


def _natural_key(name: str) -> list[str | int]:
    return [int(p) if i % 2 else p for i, p in enumerate(_DIGITS.split(name))]


def _read_maildir(path: Path) -> Iterator[MailFile]:
    keywords = _load_keywords(path)
    entries: list[tuple[list[str | int], str, str | None, float]] = []
    for sub in ("new", "cur"):
        with os.scandir(path / sub) as it:
            for entry in it:
                if entry.name.startswith(".") or not entry.is_file():
                    continue
                base, info = _split_info(entry.name)
                entries.append((_natural_key(base), entry.path, info, entry.stat().st_mtime))
    entries.sort(key=lambda e: e[0])
    for _, file_path, info, mtime in entries:
        try:
            with open(file_path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            continue  # expunged by another program while we were reading
        if b"\r\n" not in data:
            data = data.replace(b"\n", b"\r\n")
        elif _BARE_LF.search(data) is not None:
            data = _BARE_LF.sub(b"\r\n", data)
        flags: set[str] = set()
        for c in info or "":
            if c in _INFO_FLAGS:
                flags.add(_INFO_FLAGS[c])
            elif "a" <= c <= "z" and ord(c) - 97 in keywords:
                flags.add(keywords[ord(c) - 97])
        yield MailFile(raw=data, flags=flags, internal_date=_whole_seconds(mtime))


def _safe_hostname() -> str:
    host = socket.gethostname() or "localhost"
    return host.replace("/", "\\057").replace(":", "\\072")


def write_maildir(path: Path, messages: Iterable[MailFile]) -> int:
    """Add ``messages`` to the Maildir at ``path`` (created with cur/, new/,
    tmp/ when missing); returns how many were written."""
    for d in (path, path / "cur", path / "new", path / "tmp"):
        d.mkdir(parents=True, exist_ok=True)
    keywords = _load_keywords(path)
    letters = {name: chr(97 + index) for index, name in keywords.items()}
    now = time.time()
    stem = f"{int(now)}.M{int((now % 1) * 1e6):06d}P{os.getpid()}"
    host = _safe_hostname()
    count = 0
    for message in messages:
        info = "".join(sorted(_FLAG_INFO[f] for f in message.flags if f in _FLAG_INFO))
        keyword_letters = []
        for kw in sorted(_keywords(message.flags)):
            if kw == FORWARDED:
                continue
            if kw not in letters and len(letters) < 26:
                used = set(letters.values())
                letter = next(chr(c) for c in range(97, 123) if chr(c) not in used)
                letters[kw] = letter
                keywords[ord(letter) - 97] = kw
                _save_keywords(path, keywords)
            if kw in letters:
                keyword_letters.append(letters[kw])
        info += "".join(sorted(keyword_letters))
        raw = message.raw
        data = raw if b"\r\r\n" in raw else raw.replace(b"\r\n", b"\n")
        while True:
            base = f"{stem}Q{next(_SEQUENCE):06d}.{host}"
            tmp = path / "tmp" / base
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                continue
            break
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            if message.internal_date is not None:
                os.utime(tmp, (message.internal_date, message.internal_date))
            target = path / "new" / base if not info else path / "cur" / f"{base}:2,{info}"
            os.rename(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        count += 1
    return count


def _save_keywords(path: Path, keywords: dict[int, str]) -> None:
    tmp = path / f".{_KEYWORDS_FILE}.{os.getpid()}.tmp"
    tmp.write_text("".join(f"{i} {name}\n" for i, name in sorted(keywords.items())), "utf-8")
    os.replace(tmp, path / _KEYWORDS_FILE)
