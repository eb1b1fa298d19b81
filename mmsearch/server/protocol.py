"""uvicorn settings that keep one slow or silent client from holding the server.

uvicorn's keep-alive timeout starts only after a response, so a connection that never sends a request
(or sends its headers a byte at a time) is otherwise held open forever. :class:`TimelyHttpToolsProtocol`
(httptools' C parser: ~1 ms less CPU a request than h11's pure Python one, measured) and
:class:`TimelyH11Protocol` (where httptools is missing) give every request's headers a deadline;
:func:`server_config` is what `mmsearch serve` and the tests run.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # httptools missing: h11 it is
    HttpToolsProtocol = H11Protocol  # type: ignore[misc,assignment]

HEADER_TIMEOUT_S = 10.0  # from connecting (or the last response) to a request's complete headers
KEEP_ALIVE_S = 5.0
MAX_CONNECTIONS = 512  # more at once are answered 503


class _HeaderDeadline:
    """The deadline itself, shared by both parsers: armed on connect and after each response, disarmed
    once a request's headers are in (each parser says when: :meth:`_headers_in`)."""

    _header_deadline: asyncio.TimerHandle | None = None
    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport
    cycle: Any

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        self._arm()

    def _arm(self) -> None:
        self._disarm()
        self._header_deadline = self.loop.call_later(HEADER_TIMEOUT_S, self._too_slow)

    def _disarm(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _too_slow(self) -> None:
        self._header_deadline = None
        waiting = self.cycle is None or self.cycle.response_complete  # no request in progress
        if waiting and not self.transport.is_closing():
            self.transport.close()

    def _headers_in(self) -> None:
        self._disarm()  # a request's headers are in: the app's own limits apply from here

    def on_response_complete(self) -> None:
        super().on_response_complete()  # type: ignore[misc]
        if not self.transport.is_closing():
            self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)  # type: ignore[misc]


class TimelyH11Protocol(_HeaderDeadline, H11Protocol):
    """h11 with a deadline for request headers: silent or dripping connections are closed."""

    def handle_events(self) -> None:
        super().handle_events()
        if self.cycle is not None and not self.cycle.response_complete:
            self._headers_in()


class TimelyHttpToolsProtocol(_HeaderDeadline, HttpToolsProtocol):
    """httptools with the same deadline for request headers."""

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self._headers_in()


def server_options(host: str, port: int, **kw: Any) -> dict[str, Any]:
    """The keyword arguments of ``uvicorn.Config`` (and ``uvicorn.run``): the timeouts and limits above."""
    return {
        "host": host,
        "port": port,
        "http": TimelyHttpToolsProtocol if HttpToolsProtocol is not H11Protocol else TimelyH11Protocol,
        "timeout_keep_alive": int(KEEP_ALIVE_S),
        "limit_concurrency": MAX_CONNECTIONS,
        "log_level": kw.pop("log_level", "warning"),
        **kw,
    }


def server_config(app: Any, host: str, port: int, **kw: Any) -> Any:
    """A ``uvicorn.Config`` with the timeouts and limits above."""
    import uvicorn

    return uvicorn.Config(app, **server_options(host, port, **kw))
