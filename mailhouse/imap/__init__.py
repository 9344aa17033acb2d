"""IMAP4rev2/IMAP4rev1 wire protocol: command parser and response writer.

Both halves are sans-I/O. :class:`~mailhouse.imap.parser.CommandParser`
turns received octets into typed :class:`~mailhouse.imap.parser.Command`
objects (or continuation requests and parse errors);
:mod:`mailhouse.imap.writer` turns response data into octets.
:mod:`mailhouse.imap.sequence` resolves sequence sets against a mailbox
without expanding them, and :mod:`mailhouse.imap.utf7` converts mailbox
names between modified UTF-7, UTF-8 and Unicode.

The server session is built on top of these and owns every decision the
grammar leaves open (which capabilities are enabled, how names and search
strings are decoded, which state allows which command):

* :mod:`~mailhouse.imap.session`: the session, its input loop, login, SELECT,
  IDLE; :mod:`~mailhouse.imap.state`: what its parts share;
* :mod:`~mailhouse.imap.folders` and :mod:`~mailhouse.imap.messages`: the
  commands on mailboxes and on messages;
* :mod:`~mailhouse.imap.mailbox`: the selected mailbox as compact arrays;
* :mod:`~mailhouse.imap.fetch`, :mod:`~mailhouse.imap.search`,
  :mod:`~mailhouse.imap.ordering`: FETCH items, SEARCH, SORT and THREAD;
* :mod:`~mailhouse.imap.names` and :mod:`~mailhouse.imap.watch`: mailbox
  names and LIST patterns, change notifications.

The socket side is :mod:`mailhouse.net.imap`.
"""

from mailhouse.imap.parser import (
    Command,
    CommandParser,
    NeedContinuation,
    ParseError,
)
from mailhouse.imap.sequence import SequenceSet

__all__ = ["Command", "CommandParser", "NeedContinuation", "ParseError", "SequenceSet"]
