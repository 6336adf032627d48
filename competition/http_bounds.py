"""The connection-level bounds of the competition server that uvicorn lacks, as an h11 protocol
for uvicorn.Config(http=...).

Measured on uvicorn 0.54 with h11 (tests/test_server.py holds each case): a connection that sends
nothing, or trickles its request line and headers a byte at a time, is kept open for ever
(timeout_keep_alive only runs between requests and any byte resets it); limit_concurrency answers
503 only once a whole request head has arrived, so a silent connection over the limit gets nothing,
and it counts the asking connection too (limit_concurrency=N serves N-1); a client that half-closes
after part of its body loses its answer (the transport closes on EOF). This protocol adds:

- a deadline per request: the request line, headers and body must all arrive within read_timeout
  seconds of the connection opening or of the previous answer; else a 408 (or, for a connection
  that sent nothing, a plain close), and the route reading the body sees a disconnect, so nothing
  is stored;
- at most max_connections connections, and at most max_per_client from one address: the next one is answered 503
  at once, before it sends a byte (so one address trickling bytes into many sockets cannot keep the others out);
- EOF in the middle of a body ends the body (the route answers 400), the answer still goes out;
- a client that does not read its answers: dropped (abort) once they pile up past the deadline.
"""
from __future__ import annotations

import asyncio
import json
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

from utils import get_logger

log = get_logger("facematch.server")
REFUSED_LINGER = 1.0  # seconds a refused connection is read and dropped before it is closed


def _raw_answer(status: int, reason: str, message: str, extra: str = "") -> bytes:
    """A whole JSON error answer that closes the connection, written outside h11's state machine."""
    body = json.dumps({"error": status, "message": message}).encode()
    head = (f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            f"{extra}Connection: close\r\n\r\n")
    return head.encode() + body


class BoundedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a per-request deadline, a connection cap and half-close handling;
    bounded_protocol() sets read_timeout and max_connections on a subclass."""
    read_timeout: float = 10.0
    max_connections: int = 64
    max_per_client: int = 8

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.deadline: asyncio.TimerHandle | None = None
        self.heard = False  # bytes arrived since the deadline was armed
        self.refused = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Refuse the connection at once (503) when max_connections are open; else start its deadline."""
        super().connection_made(transport)
        address = self.client[0] if self.client else None
        mine = sum(1 for c in self.connections if c.client and c.client[0] == address)
        if len(self.connections) > self.max_connections:
            self._refuse(f"the server is serving its limit of {self.max_connections} connections "
                         "(server.max_connections); try again shortly")
        elif address is not None and mine > self.max_per_client:
            self._refuse(f"{address} has {self.max_per_client} connections open, the most one address may "
                         "(server.max_connections_per_client); finish one first")
        else:
            self._arm()

    def _refuse(self, why: str) -> None:
        """Answer 503, half-close, drop what the client sends for a moment, close. Closing at once on
        unread bytes would reset the connection and the client might never read the 503."""
        self.refused = True
        self.connections.discard(self)
        self.transport.write(_raw_answer(503, "Service Unavailable", why, "Retry-After: 1\r\n"))
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(REFUSED_LINGER, self.transport.close)
        log.warning(f"refused a connection from {self.client[0] if self.client else '?'}: {why}")

    def _arm(self) -> None:
        """(Re)start the deadline for the next request to arrive whole."""
        if self.deadline is not None:
            self.deadline.cancel()
        self.heard = False
        self.deadline = self.loop.call_later(self.read_timeout, self._deadline_passed)

    def _deadline_passed(self) -> None:
        """Close a connection whose request has not arrived whole in time (408 once it sent bytes);
        drop one whose answers are not being read; leave one whose answer is being worked out."""
        self.deadline = None
        if self.transport.is_closing() or self.flow.write_paused:
            # answers pile up unread (close() would wait for them to be read, for ever): drop them
            self.transport.abort()
            return
        cycle = self.cycle
        waiting = cycle is None or cycle.response_complete  # for a next request's line and headers
        if waiting or (cycle.more_body and not cycle.response_started):
            if self.heard or not waiting:
                self.transport.write(_raw_answer(408, "Request Timeout", "the request did not arrive within "
                                                 f"server.read_timeout ({self.read_timeout:g} s)"))
                log.info(f"closed a connection from {self.client[0] if self.client else '?'}: its request did not "
                         f"arrive within server.read_timeout ({self.read_timeout:g} s)")
            self.transport.close()  # the route still reading the body sees a disconnect
        self._arm()  # the answer is being worked out; or, once closing, abort if it is never read

    def data_received(self, data: bytes) -> None:
        """Drop what a refused connection sends; else note that bytes came and parse them."""
        if self.refused:
            return
        self.heard = True
        super().data_received(data)

    def eof_received(self) -> bool | None:  # type: ignore[override]
        """The client stopped sending: mid-body, the body ends there (the route sees it short and
        answers); with a request in hand, keep the connection for its answer; else close."""
        cycle = self.cycle
        if self.refused or cycle is None or cycle.response_complete:
            return None
        if cycle.more_body:
            cycle.more_body = False
            cycle.message_event.set()
        return True

    def on_response_complete(self) -> None:
        """An answer went out: the next request on this connection has its own deadline (and a
        closing connection read_timeout for the client to read the answer)."""
        super().on_response_complete()
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        """Stop the deadline with the connection."""
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None
        super().connection_lost(exc)


def bounded_protocol(read_timeout: float, max_connections: int, max_per_client: int = 8) -> type[BoundedH11Protocol]:
    """A BoundedH11Protocol subclass with these bounds, for uvicorn.Config(http=...)."""
    return type("BoundedH11Protocol", (BoundedH11Protocol,),
                {"read_timeout": float(read_timeout), "max_connections": int(max_connections),
                 "max_per_client": int(max_per_client)})
