"""The master's HTTP edge: waitress, hardened so that slow, idle or oversized clients cannot lock others out.

waitress already keeps a connection that is only *receiving* off the worker threads (its event loop buffers a
request and hands it to a thread only once complete), spools request bodies beyond a threshold to temporary
files, and refuses bodies over `max_request_body_size` as soon as the headers declare them. What it lacks,
and what this module adds by subclassing its server and channel (waitress 3.0, pinned):

- **A header-read deadline and a whole-request deadline.** waitress's `channel_timeout` closes a connection
  only after that long with *no bytes at all*; a slowloris client that dribbles a header byte every few
  seconds kept it forever. Here each request remembers when its first byte arrived, and the periodic
  maintenance (every `cleanup_interval_s`) closes a connection whose headers are not complete within
  `header_timeout_s`, or whose body is not complete within `request_timeout_s`.
- **A connection cap that sheds idle connections instead of refusing new ones.** At `connection_limit`
  waitress stops accepting: 1,100 idle connections locked every client out. Here, when the cap is reached,
  the connections that hold no request in flight (idle keep-alives first, then half-received requests,
  oldest activity first) are closed to make room, so only connections doing real work (a request being
  served, such as an agent's long poll) can fill the server. Clients re-open idle keep-alives transparently.
- **The poll() event loop**, so more than 1,024 descriptors work (waitress's default is select()).
- **Its own refusals in the API's JSON error shape** (`{"error": ..., "fields": []}`), e.g. 413 for a body
  over the limit, 431 for oversized headers, 400 for a malformed request line.

Why not another server: the master's long polls need threads (each waits on the manager's conditions),
`titus dev` embeds the master in-process (no fork), and the rest of waitress's behaviour (pure Python,
request buffering off the threads, body spooling) is what an edge should do. gunicorn forks workers (state
lives in one process here); cheroot reads requests on its worker threads, so slow clients pin threads;
uvicorn/hypercorn are ASGI servers that run WSGI apps on a small executor and would need the long polls
rewritten. The subclass touches only waitress's documented extension points (`channel_class`,
`parser_class`, `error_task_class`, `maintenance`, `readable`).
"""

from __future__ import annotations

import errno
import json
import logging
import resource
import ssl
import time
from dataclasses import dataclass
from typing import Any

from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.parser import HTTPRequestParser
from waitress.server import TcpWSGIServer
from waitress.task import ErrorTask

log = logging.getLogger("titus.edge")


@dataclass(frozen=True)
class EdgeLimits:
    """The edge's limits; every field is a MasterConfig setting (TITUS_* variables, see `titus master`)."""

    max_body_bytes: int = 1 << 20
    connection_limit: int = 1000
    idle_timeout_s: float = 60.0
    header_timeout_s: float = 10.0
    request_timeout_s: float = 60.0
    cleanup_interval_s: float = 1.0
    max_header_bytes: int = 64 << 10
    # Request bodies beyond this are spooled to a temporary file while they arrive, so many concurrent
    # uploads cost disk pages rather than the master's memory.
    body_in_memory_bytes: int = 64 << 10


class _TimedParser(HTTPRequestParser):  # type: ignore[misc]
    """A request parser that remembers when the request's first byte arrived."""

    def __init__(self, adj: Adjustments) -> None:
        super().__init__(adj)
        self.started_at = time.time()


class _JsonErrorTask(ErrorTask):  # type: ignore[misc]
    """waitress's own refusals (413, 431, 400 ...) in the API's JSON error shape."""

    def execute(self) -> None:
        e = self.request.error
        message = f"{e.reason}: {e.body}".strip().rstrip(":")
        body = json.dumps({"error": message, "fields": []}).encode()
        self.status = f"{e.code} {e.reason}"
        self.response_headers.append(("Content-Type", "application/json"))
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)


class _EdgeChannel(HTTPChannel):  # type: ignore[misc]
    parser_class = _TimedParser
    error_task_class = _JsonErrorTask


class _TlsChannel(_EdgeChannel):
    """The same channel over TLS: a non-blocking handshake first, then records read until none is pending.

    waitress has no TLS. The socket is an `ssl.SSLSocket` in non-blocking mode; its want-read/want-write
    conditions mean "try again when the socket is ready", never a closed connection (which is what
    waitress's plain recv/send would make of them). Bytes already decrypted inside the SSL object do not
    wake poll(), so a read drains `pending()` before it returns. The header and idle deadlines cover the
    handshake too: a client that connects and never finishes it is closed like any idle one.
    """

    handshaking = True

    def _handshake(self) -> bool:
        try:
            self.socket.do_handshake()
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return False
        except (ssl.SSLError, OSError):
            self.handle_close()
            return False
        self.handshaking = False
        self.last_activity = time.time()
        return True

    def readable(self) -> bool:
        return True if self.handshaking else bool(super().readable())

    def handle_read(self) -> None:
        if self.handshaking and not self._handshake():
            return
        while True:
            try:
                data = self.socket.recv(self.adj.recv_bytes)
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                return
            except (ssl.SSLError, OSError):
                self.handle_close()
                return
            if not data:
                self.connected = False  # as waitress does: the peer closed its side
                return
            self.last_activity = time.time()
            self.received(data)
            if not self.socket.pending():
                return

    def handle_write(self) -> None:
        if self.handshaking and not self.will_close:  # a deadline may close it mid-handshake
            self._handshake()
            return
        super().handle_write()

    def send(self, data: bytes, do_close: bool = True) -> int:
        try:
            return int(self.socket.send(data))
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return 0
        except OSError as why:
            if why.args and why.args[0] == errno.EWOULDBLOCK:
                return 0
            if do_close:
                self.handle_close()
            return 0


class EdgeServer(TcpWSGIServer):  # type: ignore[misc]
    """waitress's TCP server with deadlines per request and idle shedding at the connection cap."""

    channel_class = _EdgeChannel

    def __init__(self, app: Any, limits: EdgeLimits, tls: ssl.SSLContext | None = None,
                 **adjustments: Any) -> None:
        """`tls`: serve HTTPS with this server context (every connection; there is no plain port)."""
        self.limits = limits
        self.tls = tls
        if tls is not None:
            self.channel_class = _TlsChannel
        _raise_fd_limit(limits.connection_limit + 256)
        adj = Adjustments(
            connection_limit=limits.connection_limit,
            channel_timeout=int(max(1, limits.idle_timeout_s)),
            cleanup_interval=int(max(1, limits.cleanup_interval_s)),
            max_request_body_size=limits.max_body_bytes,
            max_request_header_size=limits.max_header_bytes,
            inbuf_overflow=limits.body_in_memory_bytes,
            asyncore_use_poll=True,
            **adjustments,
        )
        super().__init__(app, map={}, adj=adj)
        self.shed = 0  # connections closed to make room at the cap (for tests and logs)
        self.timed_out = 0  # connections closed for a header or request deadline

    def run_once(self, timeout: float) -> None:
        """One pass of the event loop (poll(), not select(): more than 1,024 descriptors)."""
        self.asyncore.loop(timeout=timeout, map=self._map, use_poll=True, count=1)

    def maintenance(self, now: float) -> None:
        """waitress's idle timeout, plus the header-read and whole-request deadlines."""
        super().maintenance(now)
        for channel in list(self.active_channels.values()):
            partial = channel.request
            if partial is None or channel.will_close:
                continue
            age = now - getattr(partial, "started_at", now)
            limits = self.limits
            limit = limits.request_timeout_s if partial.headers_finished else limits.header_timeout_s
            if age > limit:
                self.timed_out += 1
                channel.will_close = True

    def readable(self) -> bool:
        if self.accepting and len(self._map) >= self.adj.connection_limit:
            self._shed_idle()
        result: bool = super().readable()
        return result

    def handle_accept(self) -> None:
        """Accept a burst, not one connection per loop pass: a pass polls every descriptor, so one at a time
        left a normal client waiting behind a backlog of a thousand attackers' connections."""
        for _ in range(64):
            before = len(self._map)
            if before >= self.adj.connection_limit:
                return
            if self.tls is None:
                super().handle_accept()
            else:
                self._accept_tls()
            if len(self._map) == before:
                return  # nothing more waiting (or a bogus socket, which waitress logs)

    def _accept_tls(self) -> None:
        """waitress's accept, with the connection wrapped for a server-side TLS handshake."""
        try:
            accepted = self.accept()
            if accepted is None:
                return
            conn, addr = accepted
            self.set_socket_options(conn)
            assert self.tls is not None
            conn = self.tls.wrap_socket(conn, server_side=True, do_handshake_on_connect=False)
        except OSError:
            return
        self.channel_class(self, conn, self.fix_addr(addr), self.adj, map=self._map)

    def _shed_idle(self) -> None:
        """Close connections without a request in flight until there is room for a few new ones."""
        room = max(1, self.adj.connection_limit // 100)
        excess = len(self._map) - self.adj.connection_limit + room
        idle = [c for c in self.active_channels.values() if not c.requests and not c.will_close]
        # Idle keep-alives (nothing half-received) go before half-received requests; oldest first in each.
        idle.sort(key=lambda c: (c.request is not None, c.last_activity))
        # Marked, not closed here: the loop closes them in this pass, after its poll() (closing now could
        # hand a stale poll event for a reused descriptor to a new connection).
        for channel in idle[:excess]:
            self.shed += 1
            channel.will_close = True
        if idle[:excess]:
            log.warning("connection cap %d reached: closed %d idle connection(s)",
                        self.adj.connection_limit, len(idle[:excess]))


def server_tls_context(cert_file: str, key_file: str, client_ca_file: str = "") -> ssl.SSLContext:
    """TLS 1.2+ with the stdlib's default ciphers; with `client_ca_file`, clients must show a certificate
    signed by that CA (mutual TLS)."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert_file, key_file)
    if client_ca_file:
        ctx.load_verify_locations(client_ca_file)
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def _raise_fd_limit(wanted: int) -> None:
    """Raise the soft descriptor limit towards the hard one, so the connection cap is what binds."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    if target < wanted:
        log.warning("descriptor limit %d is below the connection cap %d plus headroom", target, wanted)
