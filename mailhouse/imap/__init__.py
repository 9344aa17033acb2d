"""IMAP4rev2/IMAP4rev1 wire protocol: command parser and response writer.

Both halves are sans-I/O. :class:`~mailhouse.imap.parser.CommandParser`
turns received octets into typed :class:`~mailhouse.imap.parser.Command`
objects (or continuation requests and parse errors);
:mod:`mailhouse.imap.writer` turns response data into octets.
:mod:`mailhouse.imap.sequence` resolves sequence sets against a mailbox
without expanding them, and :mod:`mailhouse.imap.utf7` converts mailbox
names between modified UTF-7, UTF-8 and Unicode. The session (mailbox
state, store access) is built on top of these and owns every decision the
grammar leaves open: which capabilities are enabled, how names and search
strings are decoded, which state allows which command.
"""

from mailhouse.imap.parser import (
    Command,
    CommandParser,
    NeedContinuation,
    ParseError,
)
from mailhouse.imap.sequence import SequenceSet

__all__ = ["Command", "CommandParser", "NeedContinuation", "ParseError", "SequenceSet"]
