"""The connection-level bounds that uvicorn lacks, as an h11 protocol for uvicorn.Config(http=...); bounded_config()
builds the whole uvicorn.Config. Every message names the caller's own settings (SettingNames), never a fixed key.

Measured on uvicorn 0.54 with h11 (tests/test_server.py holds each case): a connection that sends nothing, or
trickles its request line and headers a byte at a time, is kept open for ever (timeout_keep_alive only runs between
requests and any byte resets it); limit_concurrency answers 503 only once a whole request head has arrived, so a
silent connection over the limit gets nothing, and it counts the asking connection too (limit_concurrency=N serves
N-1); a client that half-closes after part of its body loses its answer (the transport closes on EOF). This protocol
adds:

- two deadlines per request, both counted from the connection opening or the previous answer: the request line and
  headers within header_timeout (short: they are a few hundred bytes), the whole request, body included, within
  read_timeout; else a 408 (or, for a connection that sent nothing, a plain close), and the route reading the body
  sees a disconnect, so nothing is stored;
- at most max_per_client connections from one address (the next one is answered 503 at once), and at most
  max_connections in all: at that cap a newcomer is served and the oldest connection whose request has not arrived
  whole (first one still waiting for its head, else one still sending its body) is answered 503 and closed, so
  sockets that hold connections open without sending a request, from however many addresses, never keep out a
  client whose request comes whole; only when every connection has its request in hand is the newcomer refused;
- EOF in the middle of a body ends the body (the route answers 400), the answer still goes out;
- a client that does not read its answers: dropped (abort) once they pile up past the deadline.
"""
from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from utils import ConfigError, get_logger

log = get_logger("facematch.serving")
REFUSED_LINGER = 1.0  # seconds a refused connection is read and dropped before it is closed


class SettingNames(NamedTuple):
    """The names of the settings behind each bound, as refusals and errors cite them."""
    read_timeout: str
    header_timeout: str
    max_connections: str
    max_per_client: str

    @classmethod
    def of(cls, section: str) -> SettingNames:
        """The names under one config section: SECTION.read_timeout, .header_timeout, .max_connections and
        .max_connections_per_client."""
        return cls(f"{section}.read_timeout", f"{section}.header_timeout", f"{section}.max_connections",
                   f"{section}.max_connections_per_client")


def _positive(value: Any, key: str, whole: bool = False) -> float | int:
    """`value` as a positive number (a whole one with `whole`), else a ConfigError naming the setting `key`."""
    if (isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf")
            or (whole and not float(value).is_integer())):
        raise ConfigError(f"{key} must be a positive {'whole number' if whole else 'number'}, got {value!r}")
    return int(value) if whole else float(value)


@dataclass(frozen=True)
class Bounds:
    """A server's connection bounds (seconds and counts) and the names of the settings that set them; a bound that
    would leave the server unbounded or closed is refused here, by its setting's name."""
    read_timeout: float = 10.0
    header_timeout: float = 2.0
    max_connections: int = 64
    max_per_client: int = 8
    names: SettingNames = field(default_factory=lambda: SettingNames.of("server"))

    def __post_init__(self) -> None:
        for key, whole in (("read_timeout", False), ("header_timeout", False), ("max_connections", True),
                           ("max_per_client", True)):
            object.__setattr__(self, key, _positive(getattr(self, key), getattr(self.names, key), whole))


def _raw_answer(status: int, reason: str, message: str, extra: str = "") -> bytes:
    """A whole JSON error answer that closes the connection, written outside h11's state machine."""
    body = json.dumps({"error": status, "message": message}).encode()
    head = (f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            f"{extra}Connection: close\r\n\r\n")
    return head.encode() + body


class BoundedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with the head and request deadlines, the connection caps and half-close handling;
    bounded_protocol() sets `bounds` on a subclass."""
    bounds: Bounds = Bounds()

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.deadline: asyncio.TimerHandle | None = None
        self.heard = False  # bytes arrived since the deadline was armed
        self.refused = False
        self.started = 0.0  # loop time the current request's deadlines count from

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Refuse the connection at once (503) past the per-address cap; at the total cap make room by closing the
        oldest connection whose request has not arrived whole (or refuse, when every one has); start its deadlines."""
        super().connection_made(transport)
        bounds, names = self.bounds, self.bounds.names
        address = self.client[0] if self.client else None
        mine = sum(1 for c in self.connections if c.client and c.client[0] == address)
        if address is not None and mine > bounds.max_per_client:
            self._refuse(f"{address} has {bounds.max_per_client} connections open, the most one address may "
                         f"({names.max_per_client}); finish one first")
            return
        if sum(1 for c in self.connections if not c.transport.is_closing()) > bounds.max_connections:
            victim = self._incomplete()
            if victim is None:
                self._refuse(f"the server is serving its limit of {bounds.max_connections} connections "
                             f"({names.max_connections}), each with its request in hand; try again shortly")
                return
            victim._refuse(f"the server is at its limit of {bounds.max_connections} connections "
                           f"({names.max_connections}) and this one's request had not arrived whole: it was closed "
                           "to make room; send the whole request as soon as the connection opens")
        self._arm()

    def _waiting(self) -> bool:
        """Waiting for a request's line and headers (none yet, or the last one answered)."""
        return self.cycle is None or self.cycle.response_complete

    def _sending_body(self) -> bool:
        """A request's head came and its body is still coming (no answer begun)."""
        return self.cycle is not None and self.cycle.more_body and not self.cycle.response_started

    def _incomplete(self) -> BoundedH11Protocol | None:
        """The oldest other connection still waiting for its request head, else the oldest still sending its body;
        None when every connection has its request in hand (one already closing counts for none)."""
        others = [c for c in self.connections
                  if c is not self and isinstance(c, BoundedH11Protocol) and not c.transport.is_closing()]
        for state in (BoundedH11Protocol._waiting, BoundedH11Protocol._sending_body):
            found = [c for c in others if state(c)]
            if found:
                return min(found, key=lambda c: c.started)
        return None

    def _refuse(self, why: str) -> None:
        """Answer 503, half-close, drop what the client sends for a moment, close: closing at once on unread bytes
        would reset the connection and the client might never read the 503. A route reading its body sees a
        disconnect, so nothing of it is stored."""
        self.refused = True
        self.connections.discard(self)
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.disconnected = True
            self.cycle.message_event.set()
        self.transport.write(_raw_answer(503, "Service Unavailable", why, "Retry-After: 1\r\n"))
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(REFUSED_LINGER, self._close_refused)
        log.warning(f"refused a connection from {self.client[0] if self.client else '?'}: {why}")

    def _close_refused(self) -> None:
        """Close a refused connection; drop it outright if its client never reads the 503."""
        self.transport.close()
        self.loop.call_later(REFUSED_LINGER, self.transport.abort)

    def _arm(self) -> None:
        """(Re)start the deadlines of the next request: its head first."""
        if self.deadline is not None:
            self.deadline.cancel()
        self.heard = False
        self.started = self.loop.time()
        bounds = self.bounds
        self.deadline = self.loop.call_later(min(bounds.header_timeout, bounds.read_timeout), self._head_due)

    def _cut(self, why: str) -> None:
        """Close a connection whose request is late: a 408 saying `why` once the client has sent anything."""
        if self.heard or not self._waiting():
            self.transport.write(_raw_answer(408, "Request Timeout", why))
            log.info(f"closed a connection from {self.client[0] if self.client else '?'}: {why}")
        self.transport.close()  # the route still reading the body sees a disconnect

    def _head_due(self) -> None:
        """The head's deadline: close a connection still waiting for its request line and headers; else wait for
        the whole request's deadline."""
        self.deadline = None
        bounds = self.bounds
        if self._waiting() and not self.transport.is_closing():
            self._cut(f"the request line and headers did not arrive within {bounds.names.header_timeout} "
                      f"({bounds.header_timeout:g} s)")
            self._arm()  # once closing, abort if the close never completes
            return
        self.deadline = self.loop.call_at(self.started + bounds.read_timeout, self._deadline_passed)

    def _deadline_passed(self) -> None:
        """The whole request's deadline: close a connection whose request has not arrived whole (408); drop one
        whose answers are not being read; leave one whose answer is being worked out."""
        self.deadline = None
        if self.transport.is_closing() or self.flow.write_paused:
            # answers pile up unread (close() would wait for them to be read, for ever): drop them
            self.transport.abort()
            return
        if self._waiting() or self._sending_body():
            self._cut(f"the request did not arrive within {self.bounds.names.read_timeout} "
                      f"({self.bounds.read_timeout:g} s)")
        self._arm()  # the answer is being worked out; or, once closing, abort if it is never read

    def data_received(self, data: bytes) -> None:
        """Drop what a refused connection sends; else note that bytes came and parse them."""
        if self.refused:
            return
        self.heard = True
        super().data_received(data)

    def eof_received(self) -> bool | None:  # type: ignore[override]
        """The client stopped sending: mid-body, the body ends there (the route sees it short and answers); with a
        request in hand, keep the connection for its answer; else close."""
        cycle = self.cycle
        if self.refused or cycle is None or cycle.response_complete:
            return None
        if cycle.more_body:
            cycle.more_body = False
            cycle.message_event.set()
        return True

    def on_response_complete(self) -> None:
        """An answer went out: the next request on this connection has its own deadlines (and a closing connection
        some time for the client to read the answer)."""
        super().on_response_complete()
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        """Stop the deadline with the connection."""
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None
        super().connection_lost(exc)


def bounded_protocol(bounds: Bounds) -> type[BoundedH11Protocol]:
    """A BoundedH11Protocol subclass holding these bounds, for uvicorn.Config(http=...)."""
    return type("BoundedH11Protocol", (BoundedH11Protocol,), {"bounds": bounds})


def bounded_config(app: Any, bounds: Bounds, **options: Any) -> uvicorn.Config:
    """A uvicorn.Config serving `app` within `bounds` (asyncio, h11); `options` are uvicorn.Config's own. The
    client's address is the socket's: X-Forwarded-For is not believed (uvicorn believes it from 127.0.0.1 by
    default), so no client names its own address to a per-address limit."""
    return uvicorn.Config(
        app, http=bounded_protocol(bounds), loop="asyncio", proxy_headers=False,
        # uvicorn's own cap counts the requests in progress (and the asking one): a backstop for work that outlives
        # its connection, with room for the routes of connections just closed to make room (the protocol refuses or
        # makes room as a connection opens)
        limit_concurrency=2 * bounds.max_connections + 1, timeout_keep_alive=bounds.read_timeout,
        timeout_graceful_shutdown=bounds.read_timeout, backlog=1024, **options)
