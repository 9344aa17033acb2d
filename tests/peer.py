"""A test SMTP peer that misbehaves on command, for the outbound client's fault tests.

    with FaultyPeer("rcpt5xx") as peer:     # listens on 127.0.0.1:peer.port
        ...                                  # peer.messages holds what it accepted
    peer.mode = "accept"                     # change behaviour mid-test

Modes: accept, greet421, stall (never greets), mail4xx, mail5xx, rcpt4xx, rcpt5xx,
data4xx, data5xx, eod4xx, eod5xx (after the final dot), drop_mid_data,
starttls_fail (offers STARTTLS, says 220, then breaks the handshake), garbage
(an unparsable greeting), long_line (an endless reply line).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

from tests.loopthread import LoopThreadServer


@dataclass
class Received:
    sender: str
    recipients: list[str]
    data: bytes
    ehlo: str = ""


@dataclass
class FaultyPeer(LoopThreadServer):
    mode: str = "accept"
    host: str = "127.0.0.1"
    port: int = 0
    pipelining: bool = True
    messages: list[Received] = field(default_factory=list)
    connections: int = 0

    # ------------------------------------------------------------------ one session
    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        mode = self.mode
        try:
            await self._dialogue(mode, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, OSError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def _dialogue(self, mode: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        def say(line: str) -> None:
            writer.write(line.encode() + b"\r\n")

        if mode == "stall":
            await asyncio.sleep(3600)
        if mode == "greet421":
            say("421 4.3.2 peer.test busy, try later")
            await writer.drain()
            return
        if mode == "garbage":
            writer.write(b"\x00\xffHELLO?? not smtp\r\n")
            await writer.drain()
            await asyncio.sleep(1)
            return
        if mode == "long_line":
            writer.write(b"220 " + b"x" * 200_000)
            await writer.drain()
            await asyncio.sleep(1)
            return
        say("220 peer.test ESMTP faulty peer")
        sender, rcpts, ehlo = "", [], ""
        while True:
            line = await reader.readline()
            if not line:
                return
            mode = self.mode  # a cached connection sees the mode of the moment
            if mode in ("greet421", "stall", "garbage", "long_line", "starttls_fail"):
                return  # a fault of connection time: hang up so the client reconnects
            cmd = line.decode("utf-8", "replace").strip()
            verb = cmd.split(" ", 1)[0].upper()
            if verb in ("EHLO", "HELO"):
                ehlo = cmd[5:]
                exts = ["peer.test", "8BITMIME", "SIZE 100000000", "ENHANCEDSTATUSCODES"]
                if self.pipelining:
                    exts.append("PIPELINING")
                if mode == "starttls_fail":
                    exts.append("STARTTLS")
                for i, e in enumerate(exts):
                    say(f"250{'-' if i < len(exts) - 1 else ' '}{e}")
            elif verb == "STARTTLS":
                say("220 2.0.0 go ahead")
                await writer.drain()
                writer.write(b"this is not a TLS record\r\n" * 4)
                await writer.drain()
                return
            elif verb == "MAIL":
                if mode == "mail4xx":
                    say("451 4.3.0 sender check temporarily failed")
                elif mode == "mail5xx":
                    say("550 5.7.1 sender refused")
                else:
                    sender, rcpts = cmd.split(":", 1)[1].split(">")[0].strip(" <"), []
                    say("250 2.1.0 ok")
            elif verb == "RCPT":
                addr = cmd.split(":", 1)[1].split(">")[0].strip(" <")
                if mode == "rcpt4xx":
                    say("450 4.2.0 mailbox busy")
                elif mode == "rcpt5xx":
                    say(f"550 5.1.1 <{addr}>: no such user")
                else:
                    rcpts.append(addr)
                    say("250 2.1.5 ok")
            elif verb == "DATA":
                if mode == "data4xx":
                    say("451 4.3.0 not now")
                elif mode == "data5xx":
                    say("554 5.3.0 no data for you")
                elif not rcpts:
                    say("554 5.5.1 no valid recipients")
                else:
                    say("354 go on")
                    await writer.drain()
                    data = b""
                    while True:
                        chunk = await reader.readline()
                        if not chunk:
                            return
                        if mode == "drop_mid_data" and len(data) > 10:
                            return
                        if chunk == b".\r\n":
                            break
                        data += chunk[1:] if chunk.startswith(b".") else chunk
                    if mode == "eod4xx":
                        say("452 4.3.1 insufficient storage")
                    elif mode == "eod5xx":
                        say("554 5.6.0 content rejected")
                    else:
                        self.messages.append(Received(sender, rcpts, data, ehlo))
                        say("250 2.0.0 accepted")
            elif verb == "RSET":
                sender, rcpts = "", []
                say("250 2.0.0 ok")
            elif verb == "NOOP":
                say("250 2.0.0 ok")
            elif verb == "QUIT":
                say("221 2.0.0 bye")
                await writer.drain()
                return
            else:
                say("500 5.5.2 what?")
            await writer.drain()
