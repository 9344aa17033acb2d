"""Streaming a received message into storage with the header fields we add in front.

The first bytes are held back until the end of the header section is seen (or a
bound is reached) so two decisions can be taken before anything is written:
- whether the message has a header section at all: the textbook's message starts
  with "Do you like ketchup?", and trace fields prepended to it would glue that
  line onto the header; an empty line is inserted so it stays body text;
- on submission, whether Date and Message-ID are missing (RFC 6409 §8).
"""

from __future__ import annotations

import email.utils
import re

from ..ids import new_message_id
from ..mime.headers import has_header_section
from ..store.base import BlobWriter

HOLD_MAX = 64 * 1024

_HEADER_NAME = re.compile(rb"^([!-9;-~]+)[ \t]*:", re.M)


def _header_names(header: bytes) -> set[bytes]:
    return {m.group(1).lower() for m in _HEADER_NAME.finditer(header)}


class Assembler:
    def __init__(self, blob: BlobWriter, prefix: bytes, *, submission: bool, hostname: str) -> None:
        self.blob = blob
        self.prefix = prefix
        self.submission = submission
        self.hostname = hostname
        self._held = bytearray()
        self._decided = False
        self.added_message_id: str | None = None

    def feed(self, data: bytes) -> None:
        if self._decided:
            self.blob.write(data)
            return
        self._held += data
        if self._held.startswith(b"\r\n") or b"\r\n\r\n" in self._held or len(self._held) >= HOLD_MAX:
            self._decide()

    def finish(self) -> None:
        if not self._decided:
            self._decide()

    def _decide(self) -> None:
        self._decided = True
        head = bytes(self._held)
        self._held = bytearray()
        has_header = has_header_section(head)
        extra = b""
        if self.submission:
            end = head.find(b"\r\n\r\n")
            names = _header_names(head[: end + 2] if end >= 0 else head) if has_header else set()
            if b"date" not in names:
                extra += f"Date: {email.utils.formatdate(localtime=False)}\r\n".encode()
            if b"message-id" not in names:
                self.added_message_id = new_message_id(self.hostname)
                extra += f"Message-ID: {self.added_message_id}\r\n".encode()
        self.blob.write(self.prefix + extra)
        if not has_header and not head.startswith(b"\r\n"):
            self.blob.write(b"\r\n")
        self.blob.write(head)
