"""IMAP command parser: RFC examples as transcripts, literals, limits, fuzz.

Most cases are the client lines of the examples in RFC 9051 §6, RFC 3501
§6, and the extension RFCs (7162, 4731, 5182, 5256, 5258, 5819, 6154,
2971, 9208, 4978, 4959, 3502, 3516, 6851), parsed to the exact typed value.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailhouse.imap.parser import (
    Append,
    AppendMessage,
    Authenticate,
    BinarySection,
    BinarySize,
    BodySection,
    Capability,
    Check,
    Close,
    Command,
    CommandParser,
    Compress,
    Copy,
    Create,
    Delete,
    Enable,
    Examine,
    Expunge,
    Fetch,
    FetchAttr,
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
    Partial,
    QresyncParams,
    Rename,
    Search,
    SearchAll,
    SearchAnd,
    SearchDate,
    SearchFlag,
    SearchHeader,
    SearchModSeq,
    SearchNot,
    SearchOr,
    SearchSequence,
    SearchSize,
    SearchText,
    SearchUid,
    SearchWithin,
    Section,
    Select,
    SetQuota,
    Sort,
    SortCriterion,
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
from mailhouse.imap.sequence import STAR, SequenceSet, format_numbers, format_ranges
from mailhouse.imap.utf7 import (
    decode_mailbox_name,
    decode_modified_utf7,
    encode_mailbox_name,
    encode_modified_utf7,
    is_modified_utf7,
)

Event = Command | NeedContinuation | ParseError


def events(data: bytes, **kw: Any) -> list[Event]:
    p = CommandParser(**kw)
    p.feed(data)
    out: list[Event] = []
    while (e := p.next()) is not None:
        out.append(e)
    return out


def commands(data: bytes, **kw: Any) -> list[Event]:
    """Events without the continuation requests (the client ignores none:
    these tests send literal data right away, as a pipelining client
    would after each ``+``)."""
    return [e for e in events(data, **kw) if not isinstance(e, NeedContinuation)]


def one(line: bytes) -> Command:
    out = commands(line + b"\r\n")
    assert len(out) == 1, out
    cmd = out[0]
    assert isinstance(cmd, Command), cmd
    return cmd


def err(line: bytes) -> ParseError:
    out = commands(line + b"\r\n")
    assert len(out) == 1, out
    e = out[0]
    assert isinstance(e, ParseError), e
    assert "Unparsable" not in e.reason
    return e


S = SequenceSet.parse


# --- RFC examples, command by command --------------------------------------------------

EXAMPLES: list[tuple[bytes, Command]] = [
    # RFC 9051 §6.1 any state
    (b"abcd CAPABILITY", Capability(tag="abcd")),
    (b"a002 NOOP", Noop(tag="a002")),
    (b"A023 LOGOUT", Logout(tag="A023")),
    # §6.2 not authenticated
    (b"a002 STARTTLS", StartTLS(tag="a002")),
    (b"A001 AUTHENTICATE GSSAPI", Authenticate(tag="A001", mechanism="GSSAPI")),
    (
        b"A01 AUTHENTICATE PLAIN dGVzdAB0ZXN0AHRlc3Q=",  # RFC 4959 §3
        Authenticate(tag="A01", mechanism="PLAIN", initial_response=b"test\x00test\x00test"),
    ),
    (
        b"A02 AUTHENTICATE EXTERNAL =",
        Authenticate(tag="A02", mechanism="EXTERNAL", initial_response=b""),
    ),
    (b"a001 LOGIN SMITH SESAME", Login(tag="a001", username=b"SMITH", password=b"SESAME")),
    (
        b'a001 login "fred" "a \\"quoted\\" \\\\pw"',
        Login(tag="a001", username=b"fred", password=b'a "quoted" \\pw'),
    ),
    # §6.3 authenticated
    (
        b"t2 ENABLE CONDSTORE X-GOOD-IDEA",
        Enable(tag="t2", capabilities=("CONDSTORE", "X-GOOD-IDEA")),
    ),
    (b"A1 enable utf8=accept", Enable(tag="A1", capabilities=("UTF8=ACCEPT",))),
    (b"A142 SELECT INBOX", Select(tag="A142", mailbox=b"INBOX")),
    (b"A932 EXAMINE blurdybloop", Examine(tag="A932", mailbox=b"blurdybloop")),
    (b"A003 CREATE owatagusiam/", Create(tag="A003", mailbox=b"owatagusiam/")),
    (
        b"t1 CREATE MySpecial (USE (\\drafts \\Sent))",  # RFC 6154 §5.3
        Create(tag="t1", mailbox=b"MySpecial", special_use=("\\Drafts", "\\Sent")),
    ),
    (b"A682 DELETE blurdybloop", Delete(tag="A682", mailbox=b"blurdybloop")),
    (
        b"A683 RENAME blurdybloop sarasoop",
        Rename(tag="A683", mailbox=b"blurdybloop", new_name=b"sarasoop"),
    ),
    (
        b"A002 SUBSCRIBE #news.comp.mail.mime",
        Subscribe(tag="A002", mailbox=b"#news.comp.mail.mime"),
    ),
    (
        b"A002 UNSUBSCRIBE #news.comp.mail.mime",
        Unsubscribe(tag="A002", mailbox=b"#news.comp.mail.mime"),
    ),
    (b'A101 LIST "" ""', List(tag="A101", reference=b"", patterns=(b"",))),
    (
        b'A102 LIST #news.comp.mail.misc ""',
        List(tag="A102", reference=b"#news.comp.mail.misc", patterns=(b"",)),
    ),
    (b"A202 LIST ~/Mail/ %", List(tag="A202", reference=b"~/Mail/", patterns=(b"%",))),
    (b'A1 LIST "" *', List(tag="A1", reference=b"", patterns=(b"*",))),
    (b'A2 LIST "" INBOX.]x*', List(tag="A2", reference=b"", patterns=(b"INBOX.]x*",))),
    # RFC 5258 §5
    (
        b'A02 LIST (SUBSCRIBED) "" "*"',
        List(
            tag="A02",
            reference=b"",
            patterns=(b"*",),
            extended=True,
            select_subscribed=True,
            return_subscribed=True,
        ),
    ),
    (
        b'A03 LIST () "" "%" RETURN (CHILDREN)',
        List(tag="A03", reference=b"", patterns=(b"%",), extended=True, return_children=True),
    ),
    (
        b'A04 LIST (REMOTE) "" "%" RETURN (CHILDREN)',
        List(
            tag="A04",
            reference=b"",
            patterns=(b"%",),
            extended=True,
            select_remote=True,
            return_children=True,
        ),
    ),
    (
        b'A06 LIST (SUBSCRIBED RECURSIVEMATCH) "" "%" RETURN (CHILDREN)',
        List(
            tag="A06",
            reference=b"",
            patterns=(b"%",),
            extended=True,
            select_subscribed=True,
            select_recursive=True,
            return_subscribed=True,
            return_children=True,
        ),
    ),
    (
        b'A01 LIST "" ("INBOX" "Drafts" "Sent/%")',
        List(tag="A01", reference=b"", patterns=(b"INBOX", b"Drafts", b"Sent/%"), extended=True),
    ),
    # RFC 5819 §5
    (
        b'A01 LIST "" % RETURN (STATUS (MESSAGES UNSEEN))',
        List(
            tag="A01",
            reference=b"",
            patterns=(b"%",),
            extended=True,
            return_status=("MESSAGES", "UNSEEN"),
        ),
    ),
    # RFC 6154 §5.1 / §5.2
    (
        b't3 LIST (SPECIAL-USE) "" "*"',
        List(tag="t3", reference=b"", patterns=(b"*",), extended=True, select_special_use=True),
    ),
    (
        b't1 LIST "" "%" RETURN (SPECIAL-USE)',
        List(tag="t1", reference=b"", patterns=(b"%",), extended=True, return_special_use=True),
    ),
    (
        b'A002 LSUB "#news." "comp.mail.*"',
        Lsub(tag="A002", reference=b"#news.", pattern=b"comp.mail.*"),
    ),
    (b"A001 NAMESPACE", Namespace(tag="A001")),
    (
        b"A042 STATUS blurdybloop (UIDNEXT MESSAGES)",
        Status(tag="A042", mailbox=b"blurdybloop", items=("UIDNEXT", "MESSAGES")),
    ),
    (
        b"A1 STATUS INBOX (messages uidnext uidvalidity unseen deleted size highestmodseq recent appendlimit)",
        Status(
            tag="A1",
            mailbox=b"INBOX",
            items=(
                "MESSAGES",
                "UIDNEXT",
                "UIDVALIDITY",
                "UNSEEN",
                "DELETED",
                "SIZE",
                "HIGHESTMODSEQ",
                "RECENT",
                "APPENDLIMIT",
            ),
        ),
    ),
    (b"A002 IDLE", Idle(tag="A002")),
    # §6.4 selected
    (b"FXXZ CHECK", Check(tag="FXXZ")),
    (b"A341 CLOSE", Close(tag="A341")),
    (b"A342 UNSELECT", Unselect(tag="A342")),
    (b"A202 EXPUNGE", Expunge(tag="A202")),
    (b"A003 UID EXPUNGE 3000:3002", UidExpunge(tag="A003", sequence_set=S("3000:3002"))),
    (
        b'A282 SEARCH FLAGGED SINCE 1-Feb-1994 NOT FROM "Smith"',
        Search(
            tag="A282",
            criteria=SearchAnd(
                (
                    SearchFlag("\\Flagged"),
                    SearchDate("internal", "since", dt.date(1994, 2, 1)),
                    SearchNot(SearchHeader("FROM", b"Smith")),
                )
            ),
        ),
    ),
    (
        b'A283 SEARCH TEXT "string not in mailbox"',
        Search(tag="A283", criteria=SearchText(False, b"string not in mailbox")),
    ),
    # RFC 4731 §3.1
    (
        b'A282 SEARCH RETURN (MIN COUNT) FLAGGED SINCE 1-Feb-1994 NOT FROM "Smith"',
        Search(
            tag="A282",
            return_options=("MIN", "COUNT"),
            criteria=SearchAnd(
                (
                    SearchFlag("\\Flagged"),
                    SearchDate("internal", "since", dt.date(1994, 2, 1)),
                    SearchNot(SearchHeader("FROM", b"Smith")),
                )
            ),
        ),
    ),
    (
        b"A283 SEARCH RETURN () FLAGGED",
        Search(tag="A283", return_options=("ALL",), criteria=SearchFlag("\\Flagged")),
    ),
    # RFC 5182 §2.1
    (
        b"A282 SEARCH RETURN (SAVE) FLAGGED",
        Search(tag="A282", return_options=("SAVE",), criteria=SearchFlag("\\Flagged")),
    ),
    (
        b"A283 FETCH $ (UID INTERNALDATE FLAGS RFC822.HEADER)",
        Fetch(
            tag="A283",
            sequence_set=SequenceSet(saved=True),
            items=(
                FetchAttr("UID"),
                FetchAttr("INTERNALDATE"),
                FetchAttr("FLAGS"),
                FetchAttr("RFC822.HEADER"),
            ),
        ),
    ),
    (
        b"A286 SEARCH CHARSET UTF-8 OR $ 1:10 SENTBEFORE 1-Feb-1994",
        Search(
            tag="A286",
            charset="UTF-8",
            criteria=SearchAnd(
                (
                    SearchOr(SearchSequence(SequenceSet(saved=True)), SearchSequence(S("1:10"))),
                    SearchDate("sent", "before", dt.date(1994, 2, 1)),
                )
            ),
        ),
    ),
    # RFC 7162 §3.1.5
    (
        b'a SEARCH MODSEQ "/flags/\\\\draft" all 620162338',
        Search(tag="a", criteria=SearchModSeq(620162338, "\\Draft", "all")),
    ),
    (b"t UID SEARCH MODSEQ 0", Search(tag="t", uid=True, criteria=SearchModSeq(0))),
    (
        b"A654 FETCH 2:4 (FLAGS BODY[HEADER.FIELDS (DATE FROM)])",
        Fetch(
            tag="A654",
            sequence_set=S("2:4"),
            items=(FetchAttr("FLAGS"), BodySection(Section((), "HEADER.FIELDS", ("DATE", "FROM")))),
        ),
    ),
    (
        b"A999 UID FETCH 4827313:4828442 FLAGS",
        Fetch(tag="A999", uid=True, sequence_set=S("4827313:4828442"), items=(FetchAttr("FLAGS"),)),
    ),
    (
        b"s100 UID FETCH 1:* (FLAGS) (CHANGEDSINCE 12345)",
        Fetch(
            tag="s100",
            uid=True,
            sequence_set=S("1:*"),
            items=(FetchAttr("FLAGS"),),
            changed_since=12345,
        ),
    ),
    (
        b"A03 UID FETCH 1:* (FLAGS) (CHANGEDSINCE 12345 VANISHED)",
        Fetch(
            tag="A03",
            uid=True,
            sequence_set=S("1:*"),
            items=(FetchAttr("FLAGS"),),
            changed_since=12345,
            vanished=True,
        ),
    ),
    (
        b"a FETCH 1 (BINARY.PEEK[1.2]<0.1024> BINARY.SIZE[1.2] BINARY[] MODSEQ)",
        Fetch(
            tag="a",
            sequence_set=S("1"),
            items=(
                BinarySection((1, 2), Partial(0, 1024), peek=True),
                BinarySize((1, 2)),
                BinarySection(),
                FetchAttr("MODSEQ"),
            ),
        ),
    ),
    (
        b"a FETCH 1:3,5 fast",
        Fetch(
            tag="a",
            sequence_set=S("1:3,5"),
            macro="FAST",
            items=(FetchAttr("FLAGS"), FetchAttr("INTERNALDATE"), FetchAttr("RFC822.SIZE")),
        ),
    ),
    (
        b"a FETCH * FULL",
        Fetch(
            tag="a",
            sequence_set=S("*"),
            macro="FULL",
            items=tuple(
                FetchAttr(n) for n in ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY")
            ),
        ),
    ),
    (
        b"a FETCH 1 (body[] BODY.PEEK[1.2.HEADER]<10.20> BODY[TEXT] BODY[3.MIME] "
        b"BODY[HEADER.FIELDS.NOT (Received X-Spam)] BODYSTRUCTURE ENVELOPE RFC822 RFC822.TEXT RFC822.SIZE)",
        Fetch(
            tag="a",
            sequence_set=S("1"),
            items=(
                BodySection(),
                BodySection(Section((1, 2), "HEADER"), Partial(10, 20), peek=True),
                BodySection(Section((), "TEXT")),
                BodySection(Section((3,), "MIME")),
                BodySection(Section((), "HEADER.FIELDS.NOT", ("Received", "X-Spam"))),
                FetchAttr("BODYSTRUCTURE"),
                FetchAttr("ENVELOPE"),
                FetchAttr("RFC822"),
                FetchAttr("RFC822.TEXT"),
                FetchAttr("RFC822.SIZE"),
            ),
        ),
    ),
    (
        b"A003 STORE 2:4 +FLAGS (\\Deleted)",
        Store(tag="A003", sequence_set=S("2:4"), action="add", flags=("\\Deleted",)),
    ),
    (
        b"d105 STORE 7,5,9 (UNCHANGEDSINCE 320162338) +FLAGS.SILENT (\\Deleted)",
        Store(
            tag="d105",
            sequence_set=S("7,5,9"),
            action="add",
            silent=True,
            flags=("\\Deleted",),
            unchanged_since=320162338,
        ),
    ),
    (
        b"a UID STORE 1 -FLAGS \\seen $Forwarded",
        Store(
            tag="a", uid=True, sequence_set=S("1"), action="remove", flags=("\\Seen", "$Forwarded")
        ),
    ),
    (b"a STORE 1 FLAGS ()", Store(tag="a", sequence_set=S("1"), action="set", flags=())),
    (b"A003 COPY 2:4 MEETING", Copy(tag="A003", sequence_set=S("2:4"), mailbox=b"MEETING")),
    (b"a UID MOVE 42:69 foo", Move(tag="a", uid=True, sequence_set=S("42:69"), mailbox=b"foo")),
    # RFC 5256 §3
    (
        b"A282 SORT (SUBJECT) UTF-8 SINCE 1-Feb-1994",
        Sort(
            tag="A282",
            criteria=(SortCriterion("SUBJECT"),),
            charset="UTF-8",
            search=SearchDate("internal", "since", dt.date(1994, 2, 1)),
        ),
    ),
    (
        b"A283 SORT (SUBJECT REVERSE DATE) UTF-8 ALL",
        Sort(
            tag="A283",
            criteria=(SortCriterion("SUBJECT"), SortCriterion("DATE", True)),
            charset="UTF-8",
            search=SearchAll(),
        ),
    ),
    (
        b'A284 SORT (SUBJECT) US-ASCII TEXT "not in mailbox"',
        Sort(
            tag="A284",
            criteria=(SortCriterion("SUBJECT"),),
            charset="US-ASCII",
            search=SearchText(False, b"not in mailbox"),
        ),
    ),
    (
        b"A1 UID SORT RETURN (MIN MAX) (ARRIVAL) UTF-8 ALL",
        Sort(
            tag="A1",
            uid=True,
            criteria=(SortCriterion("ARRIVAL"),),
            charset="UTF-8",
            search=SearchAll(),
            return_options=("MIN", "MAX"),
        ),
    ),
    (
        b"A283 THREAD ORDEREDSUBJECT UTF-8 SINCE 5-MAR-2000",
        Thread(
            tag="A283",
            algorithm="ORDEREDSUBJECT",
            charset="UTF-8",
            search=SearchDate("internal", "since", dt.date(2000, 3, 5)),
        ),
    ),
    (
        b"A285 UID THREAD REFERENCES US-ASCII SINCE 5-MAR-2000",
        Thread(
            tag="A285",
            uid=True,
            algorithm="REFERENCES",
            charset="US-ASCII",
            search=SearchDate("internal", "since", dt.date(2000, 3, 5)),
        ),
    ),
    # RFC 2971 §3.1
    (
        b'a023 ID ("name" "sodr" "version" "19.34" "vendor" "Pink Floyd Music Limited")',
        Id(
            tag="a023",
            parameters=(
                ("name", "sodr"),
                ("version", "19.34"),
                ("vendor", "Pink Floyd Music Limited"),
            ),
        ),
    ),
    (b"a ID NIL", Id(tag="a", parameters=None)),
    (b'a ID ("x" NIL)', Id(tag="a", parameters=(("x", None),))),
    # RFC 9208 §4
    (b'G0001 GETQUOTA "!partition/sda4"', GetQuota(tag="G0001", root=b"!partition/sda4")),
    (b"A003 GETQUOTAROOT INBOX", GetQuotaRoot(tag="A003", mailbox=b"INBOX")),
    (
        b'S0000 SETQUOTA "#user/alice" (STORAGE 510)',
        SetQuota(tag="S0000", root=b"#user/alice", limits=(("STORAGE", 510),)),
    ),
    (b'S1 SETQUOTA "" ()', SetQuota(tag="S1", root=b"", limits=())),
    # RFC 4978 §3
    (b"a COMPRESS DEFLATE", Compress(tag="a", mechanism="DEFLATE")),
    # RFC 7162 §3.1.8 / §3.2.5
    (b"a SELECT INBOX (CONDSTORE)", Select(tag="a", mailbox=b"INBOX", condstore=True)),
    (
        b"A02 SELECT INBOX (QRESYNC (67890007 20050715194045000 41,43:211,214:541))",
        Select(
            tag="A02",
            mailbox=b"INBOX",
            qresync=QresyncParams(67890007, 20050715194045000, S("41,43:211,214:541")),
        ),
    ),
    (
        b"A03 SELECT INBOX (QRESYNC (67890007 90060115194045000 1:29997 "
        b"(5000,7500,9000,9990:9999 15000,22500,27000,29970,29973,29976,29979,29982,29985,29988,29991,29994,29997)))",
        Select(
            tag="A03",
            mailbox=b"INBOX",
            qresync=QresyncParams(
                67890007,
                90060115194045000,
                S("1:29997"),
                S("5000,7500,9000,9990:9999"),
                S("15000,22500,27000,29970,29973,29976,29979,29982,29985,29988,29991,29994,29997"),
            ),
        ),
    ),
    (
        b"B1 EXAMINE INBOX (QRESYNC (1 2) CONDSTORE)",
        Examine(tag="B1", mailbox=b"INBOX", condstore=True, qresync=QresyncParams(1, 2)),
    ),
]


@pytest.mark.parametrize(("line", "expected"), EXAMPLES, ids=[e[0][:40].decode() for e in EXAMPLES])
def test_rfc_examples(line: bytes, expected: Command) -> None:
    assert one(line) == expected


def test_every_search_key() -> None:
    line = (
        b"A SEARCH ALL ANSWERED BCC b BEFORE 2-Jan-2020 BODY x CC c DELETED DRAFT FLAGGED "
        b'FROM f HEADER X-Spam yes KEYWORD $Junk LARGER 100 NEW NOT SEEN OLD ON "3-Mar-2021" '
        b"OR RECENT UNSEEN SEEN SENTBEFORE 1-Jan-2000 SENTON 1-Jan-2000 SENTSINCE 1-Jan-2000 "
        b"SINCE 1-Jan-2000 SMALLER 5 SUBJECT {4}\r\nsubj TEXT t TO to UID 1:* UNANSWERED UNDELETED "
        b"UNDRAFT UNFLAGGED UNKEYWORD foo UNSEEN 1,3 $ (SEEN (DRAFT)) OLDER 10 YOUNGER 20 MODSEQ 5\r\n"
    )
    out = commands(line)
    assert len(out) == 1
    cmd = out[0]
    assert isinstance(cmd, Search)
    assert isinstance(cmd.criteria, SearchAnd)
    d = dt.date
    assert cmd.criteria.keys == (
        SearchAll(),
        SearchFlag("\\Answered"),
        SearchHeader("BCC", b"b"),
        SearchDate("internal", "before", d(2020, 1, 2)),
        SearchText(True, b"x"),
        SearchHeader("CC", b"c"),
        SearchFlag("\\Deleted"),
        SearchFlag("\\Draft"),
        SearchFlag("\\Flagged"),
        SearchHeader("FROM", b"f"),
        SearchHeader("X-SPAM", b"yes"),
        SearchFlag("$Junk"),
        SearchSize(True, 100),
        SearchAnd((SearchFlag("\\Recent"), SearchFlag("\\Seen", False))),
        SearchNot(SearchFlag("\\Seen")),
        SearchFlag("\\Recent", False),
        SearchDate("internal", "on", d(2021, 3, 3)),
        SearchOr(SearchFlag("\\Recent"), SearchFlag("\\Seen", False)),
        SearchFlag("\\Seen"),
        SearchDate("sent", "before", d(2000, 1, 1)),
        SearchDate("sent", "on", d(2000, 1, 1)),
        SearchDate("sent", "since", d(2000, 1, 1)),
        SearchDate("internal", "since", d(2000, 1, 1)),
        SearchSize(False, 5),
        SearchHeader("SUBJECT", b"subj"),
        SearchText(False, b"t"),
        SearchHeader("TO", b"to"),
        SearchUid(S("1:*")),
        SearchFlag("\\Answered", False),
        SearchFlag("\\Deleted", False),
        SearchFlag("\\Draft", False),
        SearchFlag("\\Flagged", False),
        SearchFlag("foo", False),
        SearchFlag("\\Seen", False),
        SearchSequence(S("1,3")),
        SearchSequence(SequenceSet(saved=True)),
        SearchAnd((SearchFlag("\\Seen"), SearchFlag("\\Draft"))),
        SearchWithin(True, 10),
        SearchWithin(False, 20),
        SearchModSeq(5),
    )


def test_utf8_search_with_literal_and_continuation() -> None:
    # RFC 9051 §6.4.4: A284 SEARCH CHARSET UTF-8 TEXT {12}
    word = "тест".encode() + b"\xd0\xb0\xd0\xb1"
    assert len(word) == 12
    p = CommandParser()
    p.feed(b"A284 SEARCH CHARSET UTF-8 TEXT {12}\r\n")
    ev = p.next()
    assert ev == NeedContinuation("A284", 12)
    assert isinstance(ev, NeedContinuation)
    assert ev.response() == b"+ Ready for literal data\r\n"
    assert p.next() is None
    p.feed(word[:5])
    assert p.next() is None
    p.feed(word[5:] + b"\r\n")
    assert p.next() == Search(tag="A284", charset="UTF-8", criteria=SearchText(False, word))
    assert p.next() is None


def test_append_rfc3501_example() -> None:
    msg = (
        b"Date: Mon, 7 Feb 1994 21:52:25 -0800 (PST)\r\n"
        b"From: Fred Foobar <foobar@Blurdybloop.example>\r\n"
        b"Subject: afternoon meeting\r\n"
        b"To: mooch@owatagu.siam.edu.example\r\n"
        b"Message-Id: <B27397-0100000@Blurdybloop.example>\r\n"
        b"MIME-Version: 1.0\r\n"
        b"Content-Type: TEXT/PLAIN; CHARSET=US-ASCII\r\n"
        b"\r\n"
        b"Hello Joe, do you think we can meet at 3:30 tomorrow?\r\n"
    )
    p = CommandParser()
    p.feed(b"A003 APPEND saved-messages (\\Seen) {%d}\r\n" % len(msg))
    assert p.next() == NeedContinuation("A003", len(msg))
    p.feed(msg + b"\r\n")
    assert p.next() == Append(
        tag="A003", mailbox=b"saved-messages", messages=(AppendMessage(msg, ("\\Seen",)),)
    )


def test_multiappend_rfc3502_example() -> None:
    m1, m2 = b"Subject: one\r\n\r\nbody 1\r\n", b"Subject: two\r\n\r\nbody 2\r\n"
    data = (
        b'A003 APPEND saved-messages (\\Seen) {%d}\r\n%s (\\Seen) " 1-Aug-2002 22:00:00 -0700" {%d}\r\n%s'
        b' "17-Jul-1996 02:44:25 +0130" ~{3+}\r\na\x00b UTF8 (~{2}\r\nxy)\r\n'
        % (len(m1), m1, len(m2), m2)
    )
    out = events(data)
    assert out[0] == NeedContinuation("A003", len(m1))
    assert out[1] == NeedContinuation("A003", len(m2))
    assert out[2] == NeedContinuation("A003", 2, binary=True)
    tz = dt.timezone
    assert out[3] == Append(
        tag="A003",
        mailbox=b"saved-messages",
        messages=(
            AppendMessage(m1, ("\\Seen",)),
            AppendMessage(
                m2, ("\\Seen",), dt.datetime(2002, 8, 1, 22, 0, tzinfo=tz(dt.timedelta(hours=-7)))
            ),
            AppendMessage(
                b"a\x00b",
                (),
                dt.datetime(1996, 7, 17, 2, 44, 25, tzinfo=tz(dt.timedelta(hours=1, minutes=30))),
                binary=True,
            ),
            AppendMessage(b"xy", binary=True, utf8=True),
        ),
    )
    assert len(out) == 4


# --- literals -------------------------------------------------------------------------------

TRANSCRIPT = (
    b"a1 LOGIN {5+}\r\nalice {6}\r\nse\r\ncr\r\n"
    b'a2 APPEND "Sent Items" (\\Seen $x) "17-Jul-1996 02:44:25 -0700" {12+}\r\nline1\r\nline2\r\n'
    b"a3 UID FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS ({4}\r\nFrom To)])\r\n"
    b"a4 NOOP\n"
    b'a5 SEARCH CHARSET UTF-8 SUBJECT "caf\xc3\xa9" FROM {0+}\r\n\r\n'
)
TRANSCRIPT_RESULT: list[Event] = [
    Login(tag="a1", username=b"alice", password=b"se\r\ncr"),
    Append(
        tag="a2",
        mailbox=b"Sent Items",
        messages=(
            AppendMessage(
                b"line1\r\nline2",
                ("\\Seen", "$x"),
                dt.datetime(1996, 7, 17, 2, 44, 25, tzinfo=dt.timezone(dt.timedelta(hours=-7))),
            ),
        ),
    ),
    Fetch(
        tag="a3",
        uid=True,
        sequence_set=S("1:*"),
        items=(
            FetchAttr("FLAGS"),
            BodySection(Section((), "HEADER.FIELDS", ("From", "To")), peek=True),
        ),
    ),
    Noop(tag="a4"),
    Search(
        tag="a5",
        charset="UTF-8",
        criteria=SearchAnd((SearchHeader("SUBJECT", "café".encode()), SearchHeader("FROM", b""))),
    ),
]


def test_transcript_in_one_piece() -> None:
    assert commands(TRANSCRIPT) == TRANSCRIPT_RESULT


def test_transcript_split_at_every_position() -> None:
    for cut in range(1, len(TRANSCRIPT)):
        p = CommandParser()
        out: list[Event] = []
        for chunk in (TRANSCRIPT[:cut], TRANSCRIPT[cut:]):
            p.feed(chunk)
            while (e := p.next()) is not None:
                if not isinstance(e, NeedContinuation):
                    out.append(e)
        assert out == TRANSCRIPT_RESULT, cut


def test_transcript_byte_by_byte() -> None:
    p = CommandParser()
    out: list[Event] = []
    conts: list[NeedContinuation] = []
    for i in range(len(TRANSCRIPT)):
        p.feed(TRANSCRIPT[i : i + 1])
        while (e := p.next()) is not None:
            if isinstance(e, NeedContinuation):
                conts.append(e)
            else:
                out.append(e)
    assert out == TRANSCRIPT_RESULT
    assert conts == [NeedContinuation("a1", 6), NeedContinuation("a3", 4)]
    assert not p.in_command


def test_literal_plus_needs_no_continuation() -> None:
    out = events(b"A001 LOGIN {11+}\r\nFRED FOOBAR {7+}\r\nfat man\r\n")
    assert out == [Login(tag="A001", username=b"FRED FOOBAR", password=b"fat man")]


def test_literal_minus_limit() -> None:
    big = b"x" * 4097
    ok = b"y" * 4096
    data = (
        b"a APPEND INBOX {4097+}\r\n"
        + big
        + b"\r\nb APPEND INBOX {4096+}\r\n"
        + ok
        + b"\r\nc NOOP\r\n"
    )
    out = events(data, literal_plus=False)
    assert out[0] == ParseError(
        "a", "Non-synchronizing literal over 4096 octets (LITERAL-)", "APPEND", "TOOBIG", "NO"
    )
    assert out[1] == Append(tag="b", mailbox=b"INBOX", messages=(AppendMessage(ok),))
    assert out[2] == Noop(tag="c")
    # With LITERAL+ the same command is fine.
    assert events(data, literal_plus=True)[0] == Append(
        tag="a", mailbox=b"INBOX", messages=(AppendMessage(big),)
    )


def test_oversize_synchronizing_literal_is_refused_at_once() -> None:
    p = CommandParser(max_literal=1000)
    p.feed(b"A1 APPEND INBOX {1001}\r\n")
    e = p.next()
    assert e == ParseError("A1", "Literal too big", "APPEND", "TOOBIG", "NO")
    assert isinstance(e, ParseError)
    assert e.response() == b"A1 NO [TOOBIG] Literal too big\r\n"
    # The client did not get "+": it sends the next command.
    p.feed(b"A2 LOGIN {2000}\r\nA3 NOOP\r\n")
    e = p.next()
    assert isinstance(e, ParseError)
    assert (e.tag, e.status, e.code) == ("A2", "BAD", "TOOBIG")
    assert p.next() == Noop(tag="A3")


def test_oversize_nonsynchronizing_literal_is_consumed() -> None:
    p = CommandParser(max_literal=100)
    p.feed(b"A1 APPEND INBOX (\\Seen) {500+}\r\n" + b"x" * 300)
    assert p.next() is None
    assert p.buffered == 0  # discarded as it arrives, never buffered
    p.feed(b"{1}x" * 50 + b" {5+}\r\n\r\n{1}\r A2 NOOP\r\nA3 NOOP\r\n")
    e = p.next()
    assert isinstance(e, ParseError)
    assert (e.tag, e.code, e.status) == ("A1", "TOOBIG", "NO")
    assert p.next() == Noop(tag="A3")
    assert p.next() is None


def test_oversize_literal_followed_by_synchronizing_one() -> None:
    # After the dropped literal the command announces a synchronising
    # literal: the client now waits, so the error is due at once.
    out = events(b"A1 LOGIN {50+}\r\n" + b"u" * 50 + b" {3}\r\nA2 NOOP\r\n", max_literal=10)
    assert [type(e) for e in out] == [ParseError, Noop]
    assert isinstance(out[0], ParseError) and out[0].tag == "A1"


def test_max_command_bounds_multiappend() -> None:
    data = b"A1 APPEND INBOX {60+}\r\n" + b"a" * 60 + b" {60+}\r\n" + b"b" * 60 + b"\r\nA2 NOOP\r\n"
    out = events(data, max_literal=100, max_command=100)
    assert isinstance(out[0], ParseError) and out[0].code == "TOOBIG"
    assert out[1:] == [Noop(tag="A2")]


def test_unknown_command_refused_before_literal() -> None:
    p = CommandParser()
    p.feed(b"A1 XFOO {5}\r\n")
    e = p.next()
    assert isinstance(e, ParseError) and e.tag == "A1"
    p.feed(b"A2 NOOP\r\n")
    assert p.next() == Noop(tag="A2")


def test_literal_length_and_placement_errors() -> None:
    assert "literal" in err(b"A1 LOGIN {5}x y").reason.lower()
    e = commands(b"A1 LOGIN ~{1+}\r\nx y\r\n")[0]
    assert isinstance(e, ParseError) and e.tag == "A1"
    e = commands(b"A1 LOGIN a ~{1+}\r\nx\r\n")[0]
    assert isinstance(e, ParseError) and e.tag == "A1"
    e = commands(b"A1 SELECT ~{1+}\r\nx\r\n")[0]
    assert isinstance(e, ParseError) and e.tag == "A1"
    assert err(b'A1 LOGIN "a\rb" c').reason == "Bare CR in command line"


# --- limits and garbage ---------------------------------------------------------------------


def test_line_too_long_then_recovers() -> None:
    p = CommandParser(max_line=100)
    p.feed(b"A1 SEARCH " + b"SEEN " * 100)
    assert p.next() is None
    assert p.buffered == 0  # skipped, not buffered
    p.feed(b"SEEN\r\nA2 NOOP\r\n")
    e = p.next()
    assert isinstance(e, ParseError)
    assert (e.tag, e.code, e.command) == ("A1", "LIMIT", "SEARCH")
    assert p.next() == Noop(tag="A2")


def test_line_too_long_with_complete_line() -> None:
    out = events(b"A1 SEARCH " + b"SEEN " * 100 + b"{3+}\r\nabc\r\nA2 NOOP\r\n", max_line=100)
    assert isinstance(out[0], ParseError) and out[0].code == "LIMIT"
    assert out[1:] == [Noop(tag="A2")]


def test_long_line_ending_with_literal_while_skipping() -> None:
    p = CommandParser(max_line=100)
    p.feed(b"A1 LOGIN " + b"x" * 200)
    assert p.next() is None
    p.feed(b" {4+}\r\n\r\n\r\n rest\r\nA2 NOOP\r\n")
    assert [type(e) for e in iter(p.next, None)] == [ParseError, Noop]


def test_nesting_depth() -> None:
    deep = b"A1 SEARCH " + b"(" * 40 + b"SEEN" + b")" * 40
    assert err(deep).code == "LIMIT"
    ok = b"A1 SEARCH " + b"(" * 10 + b"SEEN" + b")" * 10
    assert one(ok) == Search(tag="A1", criteria=SearchFlag("\\Seen"))
    nots = b"A1 SEARCH " + b"NOT " * 5000 + b"SEEN"
    assert err(nots).code == "LIMIT"
    ors = b"A1 SEARCH " + b"OR SEEN " * 5000 + b"SEEN"
    assert err(ors).code == "LIMIT"


@pytest.mark.parametrize(
    "line",
    [
        b"",
        b"A1",
        b"A1 ",
        b"A1  NOOP",
        b"A1 NOOP extra",
        b"+ hello",
        b"A1 SELECT",
        b"A1 SELECT INBOX (FOO)",
        b"A1 SELECT INBOX (CONDSTORE CONDSTORE)",
        b"A1 FETCH 1:* (FLAGS",
        b"A1 FETCH 0 FLAGS",
        b"A1 FETCH 1 ()",
        b"A1 FETCH 1 (ALL)",
        b"A1 FETCH 1 BODY[4.MIMEX]",
        b"A1 FETCH 1 BODY[MIME]",
        b"A1 FETCH 1 BODY[]<0.0>",
        b"A1 FETCH 1 (FLAGS) (VANISHED)",
        b"A1 UID FETCH 1 (FLAGS) (VANISHED)",
        b"A1 FETCH 4294967296 FLAGS",
        b"A1 FETCH 1:2:3 FLAGS",
        b"A1 FETCH 99999999999999999999999999999 FLAGS",
        b"A1 STORE 1 FLAGS (\\Recent)",
        b"A1 STORE 1 XFLAGS (\\Seen)",
        b"A1 SEARCH",
        b"A1 SEARCH FOO",
        b"A1 SEARCH SINCE 31-Feb-2020",
        b"A1 SEARCH SINCE 1-Foo-2020",
        b"A1 SEARCH RETURN (BOGUS) ALL",
        b'A1 SEARCH HEADER "bad name" x',
        b"A1 SEARCH OR SEEN",
        b"A1 SEARCH (SEEN",
        b'A1 SEARCH MODSEQ "/flags/" all 5',
        b'A1 SEARCH MODSEQ "/flags/\\\\seen" mine 5',
        b'A1 LIST (RECURSIVEMATCH) "" *',
        b'A1 LIST (BOGUS) "" *',
        b'A1 LIST "" * RETURN (BOGUS)',
        b"A1 STATUS INBOX ()",
        b"A1 STATUS INBOX (FOO)",
        b'A1 APPEND INBOX "not a literal"',
        b'A1 APPEND INBOX "31-Feb-2020 00:00:00 +0000" {1+}\r\nx',
        b"A1 LOGIN a",
        b"A1 UID NOOP",
        b"A1 AUTHENTICATE PLAIN !!!",
        b"A1 ENABLE",
        b"A1 SORT (FOO) UTF-8 ALL",
        b"A1 CREATE x (USE (Drafts))",
        b"A1 SELECT INBOX (QRESYNC (1 2 1:*))",
        b"A1 SELECT INBOX (QRESYNC (0 2))",
        b'A1 ID ("a")',
        b'A1 login "unterminated',
        b"A1 LOGIN \x00 x",
        b"A1 COPY 1",
        b"A1 SEARCH \xff\xfe",
        b"\xff\xfe\xfd",
    ],
)
def test_bad_commands(line: bytes) -> None:
    p = CommandParser()
    p.feed(line + b"\r\nZ9 NOOP\r\n")
    out = [e for e in iter(p.next, None) if not isinstance(e, NeedContinuation)]
    if line:
        assert isinstance(out[0], ParseError), out
        assert "Unparsable" not in out[0].reason
        assert out[0].response().endswith(b"\r\n")
        assert out[0].response().count(b"\n") == 1
    # Whatever the error, the session goes on with the next command.
    assert out[-1] == Noop(tag="Z9")


def test_parse_error_tags_and_responses() -> None:
    e = err(b"A1 FOO")
    assert e.tag == "A1" and e.response().startswith(b"A1 BAD ")
    e = err(b"(bad")
    assert e.tag is None and e.response().startswith(b"* BAD ")
    e = err(b"A7 UID FETCH 1 NOPE")
    assert e.command == "UID FETCH"


def test_empty_lines_are_ignored_and_bare_lf_accepted() -> None:
    assert events(b"\r\n\r\n\nA1 NOOP\nA2 NOOP\r\n") == [Noop(tag="A1"), Noop(tag="A2")]


def test_case_insensitivity() -> None:
    assert one(b"a uid fetch 1 (flags body.peek[header])") == Fetch(
        tag="a",
        uid=True,
        sequence_set=S("1"),
        items=(FetchAttr("FLAGS"), BodySection(Section((), "HEADER"), peek=True)),
    )


def test_utf8_in_quoted_and_atoms() -> None:
    assert one('a SELECT "Entwürfe"'.encode()) == Select(tag="a", mailbox="Entwürfe".encode())
    assert one("a SELECT Entwürfe".encode()) == Select(tag="a", mailbox="Entwürfe".encode())
    assert one(b"a SELECT Entw&APw-rfe") == Select(tag="a", mailbox=b"Entw&APw-rfe")


def test_command_name_property() -> None:
    assert one(b"a UID FETCH 1 UID").command_name == "UID FETCH"
    assert one(b"a FETCH 1 UID").command_name == "FETCH"
    assert one(b"a UID EXPUNGE 1").command_name == "UID EXPUNGE"


def test_response_names() -> None:
    cmd = one(
        b'a FETCH 1 (BODY.PEEK[1.HEADER.FIELDS (From "X(Y")]<5.10> BINARY.PEEK[2]<0.3> BINARY.SIZE[2])'
    )
    assert isinstance(cmd, Fetch)
    names = [item.response_name() for item in cmd.items]
    assert names == ['BODY[1.HEADER.FIELDS (From "X(Y")]<5>', "BINARY[2]<0>", "BINARY.SIZE[2]"]


# --- raw lines, buffered data, helpers -------------------------------------------------------


def test_authenticate_exchange_with_read_line() -> None:
    p = CommandParser()
    p.feed(b"A1 AUTHENTICATE PLAIN\r\ndGVzdAB0ZXN0AHRlc3Q=\r\nA2 NOOP\r\n")
    assert p.next() == Authenticate(tag="A1", mechanism="PLAIN")
    line = p.read_line()
    assert line == b"dGVzdAB0ZXN0AHRlc3Q="
    assert isinstance(line, bytes)
    assert decode_sasl_response(line) == b"test\x00test\x00test"
    assert p.next() == Noop(tag="A2")
    assert decode_sasl_response(b"*") is None
    assert decode_sasl_response(b"") == b""
    with pytest.raises(ValueError):
        decode_sasl_response(b"@@@")


def test_idle_done() -> None:
    p = CommandParser()
    p.feed(b"A1 IDLE\r\n")
    assert p.next() == Idle(tag="A1")
    assert p.read_line() is None
    p.feed(b"do")
    assert p.read_line() is None
    p.feed(b"ne\r\nA2 NOOP\r\n")
    line = p.read_line()
    assert isinstance(line, bytes) and is_idle_done(line)
    assert p.next() == Noop(tag="A2")


def test_read_line_too_long() -> None:
    p = CommandParser(max_line=100)
    p.feed(b"x" * 500)
    e = p.read_line()
    assert isinstance(e, ParseError) and e.code == "LIMIT"
    p.feed(b"yyy\r\nDONE\r\n")
    assert p.read_line() == b"DONE"


def test_take_buffered_after_starttls() -> None:
    p = CommandParser()
    p.feed(b"A1 STARTTLS\r\nA2 LOGIN injected cmd\r\n")
    assert p.next() == StartTLS(tag="A1")
    assert p.take_buffered() == b"A2 LOGIN injected cmd\r\n"
    assert p.next() is None
    assert p.buffered == 0


# --- hypothesis ---------------------------------------------------------------------------------

_ALLOWED = (Command, NeedContinuation, ParseError)


def _drain(p: CommandParser) -> list[Event]:
    out: list[Event] = []
    for _ in range(100_000):
        e = p.next()
        if e is None:
            return out
        assert isinstance(e, _ALLOWED)
        if isinstance(e, ParseError):
            assert "Unparsable" not in e.reason, e
            assert e.response().endswith(b"\r\n")
        out.append(e)
    raise AssertionError("parser does not make progress")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.binary(max_size=200), max_size=8))
def test_random_bytes_never_raise(chunks: list[bytes]) -> None:
    p = CommandParser(max_line=256, max_literal=512)
    for chunk in chunks:
        p.feed(chunk)
        _drain(p)
    p.feed(b"\r\n")
    _drain(p)


_TOKENS = [
    b"A1",
    b"UID",
    b"FETCH",
    b"SEARCH",
    b"STORE",
    b"APPEND",
    b"LOGIN",
    b"LIST",
    b"SELECT",
    b"STATUS",
    b"SORT",
    b"THREAD",
    b"ID",
    b"NOT",
    b"OR",
    b"(",
    b")",
    b"[",
    b"]",
    b"<",
    b">",
    b"BODY",
    b"BODY.PEEK[",
    b"HEADER.FIELDS",
    b"1:*",
    b"$",
    b"*",
    b"1",
    b"0",
    b"4294967296",
    b'"',
    b'"x"',
    b"\\",
    b"{",
    b"}",
    b"{3}",
    b"{2+}",
    b"~{1}",
    b"\r\n",
    b"\n",
    b"\r",
    b" ",
    b"  ",
    b"NIL",
    b"RETURN",
    b"(MIN)",
    b"CHANGEDSINCE",
    b"VANISHED",
    b"UNCHANGEDSINCE",
    b"+FLAGS",
    b"\\Seen",
    b"\x00",
    b"\xff",
    b"1-Feb-1994",
    b'" 1-Aug-2002 22:00:00 -0700"',
    b"QRESYNC",
    b"MODSEQ",
    b"CHARSET",
    b"UTF-8",
    b"UTF8",
    b"ALL",
    b"FAST",
    b"BINARY[1]",
    b"<0.5>",
]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(_TOKENS), max_size=40), st.integers(min_value=1, max_value=50))
def test_token_soup_never_raises(tokens: list[bytes], step: int) -> None:
    data = b" ".join(tokens) + b"\r\nZ NOOP\r\n"
    p = CommandParser(max_line=512, max_literal=64, max_depth=8)
    for i in range(0, len(data), step):
        p.feed(data[i : i + step])
        _drain(p)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=300))
def test_literal_content_is_opaque(payload: bytes) -> None:
    data = b"A1 APPEND INBOX {%d+}\r\n%s\r\nA2 NOOP\r\n" % (len(payload), payload)
    assert events(data) == [
        Append(tag="A1", mailbox=b"INBOX", messages=(AppendMessage(payload),)),
        Noop(tag="A2"),
    ]


# --- sequence sets ----------------------------------------------------------------------------


def test_sequence_set_parse_and_str() -> None:
    s = S("1:3,5,7:*")
    assert s.ranges == ((1, 3), (5, 5), (7, STAR))
    assert str(s) == "1:3,5,7:*"
    assert str(S("*:4")) == "4:*"
    assert S("$").saved and str(S("$")) == "$"
    for bad in ("", "0", "1:", ":1", "1,,2", "a", "$,1", "4294967296", "1:0"):
        with pytest.raises(ValueError):
            S(bad)


def test_sequence_set_resolve() -> None:
    # RFC 9051 §9 examples.
    assert S("2,4:7,9,12:*").resolve(15) == [(2, 2), (4, 7), (9, 9), (12, 15)]
    assert S("*:4,5:7").resolve(10) == [(4, 10)]
    # A UID range past the last UID still names the last message.
    assert S("559:*").resolve(500) == [(500, 500)]
    assert S("1:*").resolve(0) == []
    assert S("3,1,2").resolve(10) == [(1, 3)]
    assert S("1:100000").count(100000) == 100000
    assert list(S("2:4").iter_values(3)) == [2, 3]
    assert S("5:*").exceeds(3) and not S("1:*").exceeds(3) and S("*").exceeds(0)
    assert S("1:*").contains(7, 10) and not S("1:5").contains(7, 10)
    with pytest.raises(ValueError):
        S("$").resolve(5)


def test_sequence_set_uid_slices_large() -> None:
    uids = list(range(10, 200_010, 2))  # 100,000 messages
    s = S("1:*")
    assert s.uid_slices(uids) == [(0, 100_000)]
    assert S("11:15").uid_slices(uids) == [(1, 3)]
    assert S("13,12,14").select_uids(uids) == [12, 14]
    assert S("*").select_uids(uids) == [200_008]
    assert S("999999:*").select_uids(uids) == [200_008]
    assert S("1:5").uid_slices(uids) == []
    assert S("10:12,14").uid_slices(uids) == [(0, 3)]
    assert S("1:*").uid_slices([]) == []


def test_format_numbers() -> None:
    assert format_numbers([5, 1, 2, 3, 3]) == "1:3,5"
    assert format_numbers([]) == ""
    assert format_ranges([(5, 6), (1, 2), (3, 3)]) == "1:3,5:6"
    assert SequenceSet.of([1, 2, 3, 7]) == S("1:3,7")


# --- modified UTF-7 -------------------------------------------------------------------------


def test_utf7_rfc3501_example() -> None:
    # RFC 3501 §5.1.3
    name = "~peter/mail/台北/日本語"
    assert encode_modified_utf7(name) == "~peter/mail/&U,BTFw-/&ZeVnLIqe-"
    assert decode_modified_utf7("~peter/mail/&U,BTFw-/&ZeVnLIqe-", strict=True) == name


@pytest.mark.parametrize(
    "name", ["INBOX", "a&b", "&", "Entwürfe", "😀 emoji", "x\x01y", "", "&-&", "Ünïcödé/Ñ"]
)
def test_utf7_round_trip(name: str) -> None:
    enc = encode_modified_utf7(name)
    assert enc.isascii()
    assert decode_modified_utf7(enc) == name
    assert is_modified_utf7(enc)


@pytest.mark.parametrize(
    "bad",
    ["&", "&Jjo", "&Jjo!-", "&AGE-", "&U,BTFw-&ZeVnLIqe-", "&A-", "&AAAA-", "x\x7f", b"\xc3\xa9"],
)
def test_utf7_invalid(bad: str | bytes) -> None:
    assert not is_modified_utf7(bad)
    with pytest.raises(ValueError):
        decode_modified_utf7(bad, strict=True)
    assert isinstance(decode_modified_utf7(bad), str)  # lenient never raises


@given(st.binary(max_size=60))
def test_utf7_decode_never_raises(data: bytes) -> None:
    decode_modified_utf7(data)
    decode_mailbox_name(data, utf8=True)
    decode_mailbox_name(data, utf8=False)


@given(st.text(max_size=40))
def test_utf7_round_trip_property(name: str) -> None:
    assert decode_modified_utf7(encode_modified_utf7(name)) == name


def test_mailbox_name_helpers() -> None:
    assert decode_mailbox_name(b"Entw&APw-rfe", utf8=False) == "Entwürfe"
    assert decode_mailbox_name(b"Entw&APw-rfe", utf8=True) == "Entw&APw-rfe"
    assert decode_mailbox_name("Entwürfe".encode(), utf8=True) == "Entwürfe"
    assert decode_mailbox_name("Entwürfe".encode(), utf8=False) == "Entwürfe"  # lenient
    with pytest.raises(ValueError):
        decode_mailbox_name(b"\xff", utf8=True, strict=True)
    assert encode_mailbox_name("Entwürfe", utf8=False) == b"Entw&APw-rfe"
    assert encode_mailbox_name("Entwürfe", utf8=True) == "Entwürfe".encode()


def test_tag_with_a_non_tag_character_is_no_tag() -> None:
    # "*" and "+" are not tag characters: "a* NOOP" has no tag (untagged BAD).
    for line in (b"a* NOOP", b"a+ NOOP", b"a%b NOOP", b"a(b NOOP"):
        e = err(line)
        assert e.tag is None and e.response() == b"* BAD Missing or invalid tag\r\n", line
    p = CommandParser()
    p.feed(b"a* APPEND INBOX {5}\r\n")
    e = p.next()
    assert isinstance(e, ParseError) and e.tag is None
    assert one(b"a] NOOP") == Noop(tag="a]")  # "]" is an ASTRING-CHAR


def test_id_needs_field_value_pairs() -> None:
    # RFC 2971 §4: id_params_list is (string SP nstring) pairs.
    assert one(b'A1 ID ("a" "b" "c" NIL)') == Id(tag="A1", parameters=(("a", "b"), ("c", None)))
    assert err(b'A1 ID ("a" "b" "c")').tag == "A1"
    assert err(b'A1 ID ("a" "b" )').tag == "A1"
    assert err(b'A1 ID ("a")').tag == "A1"


def test_status_deleted_storage_item() -> None:
    # RFC 9208 §5.1 (QUOTA=RES-STORAGE is advertised).
    cmd = one(b"A1 STATUS INBOX (DELETED DELETED-STORAGE)")
    assert isinstance(cmd, Status) and cmd.items == ("DELETED", "DELETED-STORAGE")
