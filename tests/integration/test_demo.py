"""`mailhouse demo`: the seed's story, end to end, as a newcomer runs it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


def demo(tmp_path: Path, *flags: str) -> str:
    r = subprocess.run([sys.executable, "-m", "mailhouse", "demo", "--once", *flags], cwd=tmp_path,
                       capture_output=True, timeout=180)
    out = r.stdout.decode()
    assert r.returncode == 0, out + r.stderr.decode()
    return out


def test_demo_story(tmp_path: Path) -> None:
    out = demo(tmp_path)
    for n in range(1, 7):
        assert f"Step {n}." in out
    assert "MX of hamburger.edu is mail.hamburger.edu (preference 10)" in out
    for line in ("S: 220 mail.hamburger.edu ESMTP mailhouse", "C: EHLO mail.crepes.fr", "C: STARTTLS",
                 "C: MAIL FROM:<alice@crepes.fr>", "C: RCPT TO:<bob@hamburger.edu>", "S: 250 2.0.0 Message accepted"):
        assert line in out, line
    assert "delivered to bob@hamburger.edu, folder INBOX, UID 1" in out
    assert "Do you like ketchup?" in out and "How about pickles?" in out


def test_demo_down_then_up(tmp_path: Path) -> None:
    out = demo(tmp_path, "--down")
    assert "retry interval is shortened" in out
    assert out.count("attempt failed: connect to mail.hamburger.edu") >= 2
    assert "hamburger.edu comes up now." in out
    assert "outcome: delivered" in out and "How about pickles?" in out


@pytest.mark.slow
def test_demo_never(tmp_path: Path) -> None:
    out = demo(tmp_path, "--down", "--never")
    assert "gives up" in out and "failure notice" in out
    assert "Action: failed" in out and "Final-Recipient: rfc822; bob@hamburger.edu" in out
