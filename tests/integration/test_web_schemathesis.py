"""schemathesis against /api/openapi.json: every documented operation, bounded examples.

It checks that responses match the document (status codes, content types,
schemas, Allow headers), that no request is a server error, that invalid input
is refused and that valid input is not.
"""

from __future__ import annotations

import base64
import shutil
import smtplib
import subprocess
import sys
from collections.abc import Iterator
from email.message import EmailMessage

import pytest

from tests.integration.test_web_api import login
from tests.world import MailServer

pytest.importorskip("schemathesis")

USER = ("st@fuzz.test", "fuzz-password-1")


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MailServer]:
    s = MailServer(tmp_path_factory.mktemp("st"), "fuzz.test", listeners=("smtp", "http"))
    s.cli("user", "add", USER[0], "--password", USER[1])
    with s:
        with smtplib.SMTP("127.0.0.1", s.port("smtp"), timeout=10) as c:
            for i in range(3):
                m = EmailMessage()
                m["From"] = "x@example.org"
                m["To"] = USER[0]
                m["Subject"] = f"fuzz {i}"
                m.set_content("body")
                m.add_attachment(b"data", maintype="application", subtype="octet-stream", filename="f.bin")
                c.send_message(m)
        yield s


@pytest.mark.slow
def test_schemathesis(srv: MailServer) -> None:
    exe = shutil.which("schemathesis") or shutil.which("st")
    if exe is None:
        pytest.skip("schemathesis command not found")
    c, csrf = login(srv, USER)
    page = c.post("/settings/tokens", data={"_csrf": csrf, "name": "schemathesis"}).text
    token = page.split('id="new-token">', 1)[1].split("<", 1)[0]
    base = f"http://127.0.0.1:{srv.port('http')}"
    r = subprocess.run(
        [exe, "run", f"{base}/api/openapi.json", "-H", f"Authorization: Bearer {token}",
         "--max-examples", "8", "--checks", "all", "--generation-deterministic",
         # The event stream never ends by design; tests/integration/test_web_api.py covers it.
         "--exclude-path", "/api/events", "--request-timeout", "20"],
        capture_output=True, text=True, timeout=240,
    )
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-6000:]
    # Basic works too (one request: failures are rate-limited per client address).
    auth = base64.b64encode(f"{USER[0]}:{USER[1]}".encode()).decode()
    probe = subprocess.run(
        [sys.executable, "-c", "import sys, urllib.request as u; r = u.urlopen(u.Request(sys.argv[1], "
         "headers={'Authorization': sys.argv[2]})); print(r.status)", f"{base}/api/mailboxes", f"Basic {auth}"],
        capture_output=True, text=True, timeout=30,
    )
    assert probe.stdout.strip() == "200", probe.stderr
