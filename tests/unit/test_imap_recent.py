"""\\Recent claims (mailhouse/imap/recent.py): each UID recent in one session only."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

from mailhouse.imap.recent import RecentMarks, SharedRecentMarks


def test_local_marks_claim_each_uid_once() -> None:
    m = RecentMarks()
    assert m.claim(7, 5) == 0  # uids 1-4: this caller's
    assert m.claim(7, 5) == 5  # nothing new for the next one
    assert m.claim(7, 3) == 5 and m.get(7) == 5  # a mark never goes back
    assert m.get(8) == 0



def test_marks_start_from_the_stored_floor() -> None:
    """After a restart the live marks are empty: the folder's saved mark
    (Folder.recent_uid) is where claims start, for both kinds of marks."""
    m = RecentMarks()
    assert m.get(7, floor=4) == 4
    assert m.claim(7, 6, floor=4) == 4  # uids 4-5 only are this caller's
    assert m.claim(7, 6, floor=4) == 6
    assert m.claim(7, 5, floor=9) == 9  # a floor above the live mark wins


def test_shared_marks_start_from_the_stored_floor(tmp_path: Path) -> None:
    path = tmp_path / "recent"
    SharedRecentMarks.create(path)
    m = SharedRecentMarks(path)
    assert m.get(7, floor=4) == 4
    assert m.claim(7, 6, floor=4) == 4
    assert SharedRecentMarks(path).claim(7, 6, floor=4) == 6

def _claimer(path: str, folder: int, uids: int, out: multiprocessing.Queue[int]) -> None:
    marks = SharedRecentMarks(Path(path))
    won = 0
    for uid in range(1, uids + 1):
        won += marks.claim(folder, uid + 1) <= uid
    out.put(won)


def test_shared_marks_claim_each_uid_once_across_processes(tmp_path: Path) -> None:
    path = tmp_path / "recent"
    SharedRecentMarks.create(path)
    out: multiprocessing.Queue[int] = multiprocessing.Queue()
    procs = [multiprocessing.Process(target=_claimer, args=(str(path), 42, 3000, out)) for _ in range(3)]
    for p in procs:
        p.start()
    won = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(30)
    assert sum(won) == 3000, won  # every uid claimed, none twice
    assert SharedRecentMarks(path).get(42) == 3001


def test_shared_marks_keep_many_folders_apart(tmp_path: Path) -> None:
    path = tmp_path / "recent"
    SharedRecentMarks.create(path)
    a, b = SharedRecentMarks(path), SharedRecentMarks(path)
    for folder in range(1, 2001):
        assert a.claim(folder, folder + 10) == 0
    for folder in range(1, 2001):
        assert b.get(folder) == folder + 10 and b.claim(folder, folder + 10) == folder + 10
