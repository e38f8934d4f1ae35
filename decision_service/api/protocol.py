"""uvicorn's httptools protocol with deadlines for incomplete requests.

uvicorn closes idle keep-alive connections (``timeout_keep_alive``) and answers 503 beyond
``limit_concurrency``, but it has no deadline for a request that is started and never finished:
a client that connects and sends half the headers, or the headers and half the body, holds its
connection (and a slot of the concurrency limit) forever. This subclass adds two deadlines:

- headers: from the connection (or the first byte of the next keep-alive request) to the end of
  the headers → ``408 Request Timeout`` and close;
- body: from the end of the headers to the end of the body → close (the app sees a disconnect).

Timer handles on the event loop, armed and cancelled per request: no task, no thread. The
timeouts come from the settings (environment), read once per process.
"""

from __future__ import annotations

import asyncio
import functools
import logging

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger("decision_service.protocol")

_408 = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"content-length: 35\r\nconnection: close\r\n\r\nrequest not received in time; bye.\n"
)


@functools.cache
def _timeouts() -> tuple[float, float]:
    from decision_service.settings import load_settings

    settings = load_settings()
    return settings.request_header_timeout, settings.request_body_timeout


class DeadlineHttpToolsProtocol(HttpToolsProtocol):
    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self._header_timeout, self._body_timeout = _timeouts()
        self._deadline: asyncio.TimerHandle | None = None

    def _arm(self, seconds: float, handler: object) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, handler)  # type: ignore[arg-type]

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self._header_timeout, self._headers_late)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._deadline is None:  # a keep-alive connection's next request
            self._arm(self._header_timeout, self._headers_late)

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()
        self._arm(self._body_timeout, self._body_late)  # cancelled by on_message_complete

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    def _headers_late(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        log.debug(
            "request headers not complete in %ss: closing %s", self._header_timeout, self.client
        )
        if self.cycle is None or self.cycle.response_complete:
            self.transport.write(_408)  # no response in progress on this connection
        self.transport.close()

    def _body_late(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        log.debug("request body not complete in %ss: closing %s", self._body_timeout, self.client)
        self.transport.close()
