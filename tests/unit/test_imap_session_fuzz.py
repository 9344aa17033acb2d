"""Hypothesis-generated command streams against the session: whatever the
client sends, every tagged command gets exactly one tagged answer, the
session never fails internally, and it still answers afterwards."""

from __future__ import annotations

import asyncio
import re
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailhouse.auth.service import Authenticator
from mailhouse.config import Config
from mailhouse.context import Context
from mailhouse.store.models import LocalTarget
from mailhouse.store.sqlite import SQLiteStore
from tests.unit.imap_harness import Client, message, password_hash

seqsets = st.sampled_from(["1", "2:3", "1:*", "*", "3,1", "5:2", "999", "$", "2:*"])
flags = st.sampled_from(["\\Seen", "\\Deleted", "\\Flagged", "$Label", "\\Answered", "\\Draft", "Junk"])
names = st.sampled_from(["INBOX", "Trash", "New", "New/Sub", '"a b"', "&AOk-t&AOk-", "Nope", "inbox"])
fetch_items = st.sampled_from(
    [
        "FLAGS", "UID", "ENVELOPE", "BODYSTRUCTURE", "BODY", "INTERNALDATE", "RFC822.SIZE", "RFC822",
        "BODY[]", "BODY.PEEK[HEADER]", "BODY[TEXT]<0.10>", "BODY.PEEK[1]", "BODY[HEADER.FIELDS (SUBJECT)]",
        "BINARY.PEEK[1]", "BINARY.SIZE[1]", "MODSEQ", "BODY[2.MIME]", "FAST", "ALL",
    ]
)
search_keys = st.sampled_from(
    [
        "ALL", "UNSEEN", "SEEN", "DELETED", "FLAGGED", "NEW", "OLD", "RECENT", "SUBJECT message", "FROM alice",
        "BODY hello", "TEXT world", "LARGER 10", "SMALLER 10000", "SINCE 1-Jan-2000", "SENTBEFORE 1-Jan-2030",
        "UID 1:*", "NOT DELETED", "OR SEEN FLAGGED", "KEYWORD $Label", "HEADER Message-ID m1", "MODSEQ 1",
        "YOUNGER 3600", "$", "1:2",
    ]
)


def commands() -> st.SearchStrategy[str]:
    return st.one_of(
        st.builds(lambda s, i: f"FETCH {s} ({i})", seqsets, fetch_items),
        st.builds(lambda s, i: f"UID FETCH {s} ({i})", seqsets, fetch_items),
        st.builds(lambda s, op, f: f"STORE {s} {op} ({f})", seqsets, st.sampled_from(["+FLAGS", "-FLAGS.SILENT", "FLAGS"]), flags),
        st.builds(lambda s, f: f"UID STORE {s} +FLAGS ({f})", seqsets, flags),
        st.builds(lambda k: f"SEARCH {k}", search_keys),
        st.builds(lambda k: f"UID SEARCH RETURN (SAVE MIN COUNT) {k}", search_keys),
        st.builds(lambda k: f"SORT (REVERSE DATE SUBJECT) UTF-8 {k}", search_keys),
        st.builds(lambda k: f"THREAD REFERENCES UTF-8 {k}", search_keys),
        st.builds(lambda s, n: f"COPY {s} {n}", seqsets, names),
        st.builds(lambda s, n: f"UID MOVE {s} {n}", seqsets, names),
        st.builds(lambda n: f"CREATE {n}", names),
        st.builds(lambda n: f"DELETE {n}", names),
        st.builds(lambda a, b: f"RENAME {a} {b}", names, names),
        st.builds(lambda n: f"STATUS {n} (MESSAGES UNSEEN UIDNEXT SIZE HIGHESTMODSEQ)", names),
        st.builds(lambda n: f"SELECT {n}", names),
        st.builds(lambda n: f"EXAMINE {n}", names),
        st.builds(lambda n: f'LIST "" "{n}*"', st.sampled_from(["", "N", "%", "INBOX"])),
        st.builds(lambda n: f"SUBSCRIBE {n}", names),
        st.builds(lambda n: f"APPEND {n} (\\Seen) {{12+}}\r\nSubject: x\r\n", names),
        st.sampled_from(
            ["NOOP", "CHECK", "EXPUNGE", "UID EXPUNGE 1:3", "CLOSE", "UNSELECT", "NAMESPACE", "CAPABILITY",
             "ENABLE QRESYNC", "ENABLE IMAP4rev2", "ENABLE UTF8=ACCEPT", "GETQUOTAROOT INBOX", "ID NIL"]
        ),
        st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E, exclude_characters="{}"), max_size=40),
    )


async def scenario(cmds: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = SQLiteStore(Path(tmp))
        await store.open()
        try:
            await store.add_domain("example.test")
            acc = await store.add_account("bob@example.test", password_hash())
            for i in range(3):
                await store.append(LocalTarget(acc.id, acc.address, acc.address, "INBOX"), message(i))
            ctx = Context(
                config=Config(data_dir=Path(tmp)), store=store, auth=Authenticator(store, 0.0), tls=None
            )
            c = Client(ctx)
            await c.login()
            await c.ok("s0 SELECT INBOX")
            for n, text in enumerate(cmds):
                tag = f"t{n}"
                out = (await c.raw(f"{tag} {text}\r\n".encode())).decode("utf-8", "replace")
                assert "SERVERBUG" not in out and "Internal error" not in out, (text, out)
                answers = re.findall(rf"^{tag} (?:OK|NO|BAD)", out, re.M)
                assert len(answers) == 1 or (not answers and "* BAD" in out), (text, out)
                if "CLOSE" in text or "UNSELECT" in text or "SELECT" in text:
                    await c.send(f"r{n} SELECT INBOX")
            assert "z OK" in await c.send("z NOOP")
        finally:
            await store.close()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(commands(), min_size=1, max_size=15))
def test_random_command_streams(cmds: list[str]) -> None:
    asyncio.run(scenario(cmds))
