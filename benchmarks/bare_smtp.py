#!/usr/bin/env python3
"""The Python floor for smtp_receive.py: an SMTP responder with nothing behind it.

It answers the dialogue the load generators speak (EHLO/HELO, MAIL, RCPT, DATA,
RSET, NOOP, QUIT) on a uvloop `BufferedProtocol`, finds the end of DATA and
discards the message: no grammar, no parse, no store, no log. What it reaches is
what the SMTP dialogue alone costs a Python server on this machine, the part of
smtp-sink's figure that CPython could match; a durable server's cost is on top.
Not a server for anything else: it never checks a command's arguments.

    python3 benchmarks/bare_smtp.py PORT
"""

from __future__ import annotations

import asyncio
import signal
import sys
from typing import cast

EHLO = b"250-floor.bench.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SIZE 104857600\r\n"


class Floor(asyncio.BufferedProtocol):
    def __init__(self) -> None:
        self.buf = bytearray(65536)
        self.view = memoryview(self.buf)
        self.pending = b""
        self.in_data = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's does not subclass it
        self.transport.write(b"220 floor.bench.test ESMTP\r\n")

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.view

    def buffer_updated(self, nbytes: int) -> None:
        assert self.transport is not None
        data = self.pending + bytes(self.view[:nbytes])
        out: list[bytes] = []
        pos = 0
        while True:
            if self.in_data:
                # The dot line may straddle reads: look back over the last 4 bytes kept.
                end = data.find(b"\r\n.\r\n", max(pos - 2, 0))
                if end < 0:
                    pos = max(pos, len(data) - 4)
                    break
                pos = end + 5
                self.in_data = False
                out.append(b"250 2.0.0 Ok: discarded\r\n")
                continue
            eol = data.find(b"\r\n", pos)
            if eol < 0:
                break
            verb = data[pos : pos + 4].upper()
            pos = eol + 2
            if verb in (b"EHLO", b"HELO"):
                out.append(EHLO if verb == b"EHLO" else b"250 floor.bench.test\r\n")
            elif verb == b"DATA":
                out.append(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                self.in_data = True
                pos -= 2  # "\r\n.\r\n" right after DATA's line is an empty message
            elif verb == b"QUIT":
                out.append(b"221 2.0.0 Bye\r\n")
                self.transport.write(b"".join(out))
                self.transport.close()
                return
            else:
                out.append(b"250 2.0.0 Ok\r\n")
        self.pending = data[pos:]
        if out:
            self.transport.write(b"".join(out))


async def main(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Floor, "127.0.0.1", port, backlog=1024)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


if __name__ == "__main__":
    try:
        import uvloop
    except ImportError:
        asyncio.run(main(int(sys.argv[1])))
    else:
        uvloop.run(main(int(sys.argv[1])))
