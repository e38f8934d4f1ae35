"""A TCP proxy in front of PostgreSQL that can lose a COMMIT's answer, for real.

It relays the wire protocol and reads the client's messages; when armed, on the next COMMIT
(a simple Query or a Parse whose text starts with COMMIT) it either forwards the COMMIT and
then drops the connection before the server's reply can come back ("after": the server
commits, the client never hears), or drops the connection instead of forwarding it
("before": the transaction dies with its session). With ``refuse`` set it closes every new
connection at once (the store cannot be reached); with ``refuse_after_cut`` it does so
from the cut on, and aborts the connections already open. One-shot: after a cut it relays again.

Runs its own event loop on a thread, so tests can use it from sync code and from a server
process. Connect with ``sslmode=disable`` (an encrypted stream cannot be read): ``url()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import threading
from typing import Literal

import sqlalchemy as sa

Mode = Literal["relay", "after", "before"]


class CommitCutter:
    def __init__(self, host: str = "127.0.0.1", port: int = 5432) -> None:
        self.target = (host, port)
        self.mode: Mode = "relay"
        self.refuse = False
        self.refuse_after_cut = False  # after the cut, the database is unreachable
        self.cuts = 0  # COMMITs cut so far
        self.cut = threading.Event()
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._open: set[asyncio.StreamWriter] = set()  # client sides of live connections

    def __enter__(self) -> CommitCutter:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._handle, "127.0.0.1", 0), self._loop
        ).result(10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def __exit__(self, *exc: object) -> None:
        async def _stop() -> None:
            assert self._server is not None
            self._server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(_stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def arm(self, mode: Mode) -> None:
        self.cut.clear()
        self.mode = mode

    def url(self, database_url: str) -> str:
        """``database_url`` through this proxy."""
        url = sa.make_url(database_url).set(host="127.0.0.1", port=self.port)
        url = url.update_query_dict({"sslmode": "disable", "gssencmode": "disable"})
        return url.render_as_string(hide_password=False)

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        if self.refuse:
            client_w.close()
            return
        try:
            server_r, server_w = await asyncio.open_connection(*self.target)
        except OSError:
            client_w.close()
            return
        back = asyncio.ensure_future(self._relay(server_r, client_w))
        self._open.add(client_w)
        try:
            await self._forward(client_r, server_w, client_w, back)
        finally:
            self._open.discard(client_w)
            back.cancel()
            with contextlib.suppress(Exception):
                await back
            for w in (client_w, server_w):
                w.close()

    @staticmethod
    async def _relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()

    async def _forward(
        self,
        client: asyncio.StreamReader,
        server: asyncio.StreamWriter,
        client_w: asyncio.StreamWriter,
        back: asyncio.Future[None],
    ) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            # The startup packet (and any SSL/GSS request before it) has no type byte.
            while True:
                head = await client.readexactly(8)
                (length,) = struct.unpack("!I", head[:4])
                body = await client.readexactly(length - 8)
                server.write(head + body)
                code = struct.unpack("!I", head[4:8])[0]
                if code not in (80877103, 80877104):  # SSLRequest, GSSENCRequest: answered 'N'
                    break
            while True:
                kind = await client.readexactly(1)
                size = await client.readexactly(4)
                payload = await client.readexactly(struct.unpack("!I", size)[0] - 4)
                if self.mode != "relay" and _is_commit(kind, payload):
                    mode, self.mode = self.mode, "relay"
                    back.cancel()  # nothing the server says reaches the client any more
                    if mode == "after":
                        server.write(kind + size + payload)
                        await server.drain()
                    # The client loses its connection before any answer reaches it; the
                    # server gets EOF after the COMMIT ("after") or instead of it ("before").
                    client_w.transport.abort()
                    if self.refuse_after_cut:
                        self.refuse = True
                        for other in list(self._open):
                            other.transport.abort()
                    self.cuts += 1
                    self.cut.set()
                    return
                server.write(kind + size + payload)
                await server.drain()


def _is_commit(kind: bytes, payload: bytes) -> bool:
    if kind == b"Q":
        text = payload
    elif kind == b"P":  # Parse: statement name, NUL, query text
        text = payload.split(b"\0", 2)[1] if payload.count(b"\0") >= 2 else b""
    else:
        return False
    return text.lstrip().upper().startswith((b"COMMIT", b"END"))
