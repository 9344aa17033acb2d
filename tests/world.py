"""The test suite's mail world: see mailhouse.world (shared with `mailhouse demo`)."""

from mailhouse.world import LISTENERS, MailServer, free_port

__all__ = ["LISTENERS", "MailServer", "free_port"]
