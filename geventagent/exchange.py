"""``Exchange``: one request/response cycle on one socket, from the head's first byte to the
verdict "may this socket be pooled, and if not, why".

Everything that affects the cycle's state lives here (h11's ``_state.py`` is the model): the
phases of the request side and of the response side are one :class:`Phase` enum, and
:data:`NEXT` is the table of legal transitions; a move outside it raises. One exchange belongs to
one socket and is reset, not rebuilt, for the next request on it (h11's ``start_next_cycle()``),
so a pooled request allocates nothing here.

The exchange writes (corked when a whole small request fits, see ``Socket.send_corked``), frames
the body (chunked or as is), enforces the caller's ``Content-Length``, waits for
``100 Continue``, reads the head (interim responses included) and the body, and gives **one**
:meth:`Exchange.verdict`. It knows neither the agent nor the request: the request drives it and
emits Node's events; the agent decides what to do with a socket whose verdict is clean.
"""

from __future__ import annotations

import enum
import time
from typing import Callable, Dict, FrozenSet, Iterable, List, Optional, Tuple

from ._http import MAX_HEADER_SIZE, HeaderPairs, ResponseParser
from .errors import ConnectionReset, ContentLengthMismatch, GeventAgentError, RequestTimeout, socket_hang_up
from .socket import Socket

__all__ = ["Exchange", "Phase", "NEXT", "HEAD_READ_SIZE", "BODY_READ_SIZE", "CHUNK_MAX", "EXPECT_CONTINUE_SECONDS"]

#: First read of a response: most heads (and small bodies) fit; larger bodies are read 64 KiB at a time.
HEAD_READ_SIZE = 16 * 1024
#: Body reads (measured: 256 KiB reads were 2x slower, large allocations are mmap-backed).
BODY_READ_SIZE = 64 * 1024
#: A request whose body is at most this long is written with its head in one (corked) write.
CHUNK_MAX = 64 * 1024
#: Seconds each read waits for a response already sent when a body's write failed.
EARLY_RESPONSE_SECONDS = 0.05
#: Seconds to wait for ``100 Continue`` before sending the body anyway (as curl does).
EXPECT_CONTINUE_SECONDS = 1.0

_now = time.perf_counter


class Phase(enum.IntEnum):
    """The phases of one cycle: the request side (``SEND_*``), the response side (``RECV_*``),
    and ``FAILED`` for both once anything went wrong (the socket is then never pooled).
    (An ``IntEnum``: checking a move is a bit test, with no Python-level hashing.)"""

    SEND_IDLE = 0  # nothing of this cycle's request written yet
    SEND_CONTINUE = 1  # head written with Expect: 100-continue; the body waits
    SEND_BODY = 2  # head written; body being written
    SEND_DONE = 3  # the whole request is written
    SEND_SKIPPED = 4  # the final response came first (before 100 Continue, or as the body's write failed)
    RECV_IDLE = 5  # not reading yet
    RECV_HEAD = 6  # reading the head (interim 1xx responses included)
    RECV_BODY = 7  # final head parsed; reading the body
    RECV_DONE = 8  # the response ended
    RECV_UPGRADED = 9  # 101 / CONNECT 2xx: the socket left HTTP
    FAILED = 10


SEND_IDLE = Phase.SEND_IDLE
SEND_CONTINUE = Phase.SEND_CONTINUE
SEND_BODY = Phase.SEND_BODY
SEND_DONE = Phase.SEND_DONE
SEND_SKIPPED = Phase.SEND_SKIPPED
RECV_IDLE = Phase.RECV_IDLE
RECV_HEAD = Phase.RECV_HEAD
RECV_BODY = Phase.RECV_BODY
RECV_DONE = Phase.RECV_DONE
RECV_UPGRADED = Phase.RECV_UPGRADED
FAILED = Phase.FAILED

#: The legal moves of each side. ``SEND_DONE -> SEND_IDLE`` and ``RECV_DONE -> RECV_IDLE`` start the
#: next cycle (only after a clean verdict); ``FAILED`` and ``RECV_UPGRADED`` are final.
NEXT: Dict[Phase, FrozenSet[Phase]] = {
    SEND_IDLE: frozenset((SEND_BODY, SEND_CONTINUE, FAILED)),
    SEND_CONTINUE: frozenset((SEND_BODY, SEND_SKIPPED, FAILED)),
    SEND_BODY: frozenset((SEND_DONE, SEND_SKIPPED, FAILED)),
    SEND_DONE: frozenset((SEND_IDLE, FAILED)),
    SEND_SKIPPED: frozenset((FAILED,)),
    RECV_IDLE: frozenset((RECV_HEAD, FAILED)),
    RECV_HEAD: frozenset((RECV_BODY, RECV_DONE, RECV_UPGRADED, FAILED)),
    RECV_BODY: frozenset((RECV_DONE, FAILED)),
    RECV_DONE: frozenset((RECV_IDLE, FAILED)),
    RECV_UPGRADED: frozenset(),
    FAILED: frozenset(),
}

# NEXT as bit masks, indexed by phase: ``_MASK[old] >> new & 1`` says whether ``old -> new`` is legal.
_MASK = tuple(sum(1 << p for p in NEXT[phase]) for phase in sorted(NEXT))

#: ``(status, message, version, raw_headers)`` of an interim (1xx) response.
Interim = Tuple[int, str, str, HeaderPairs]


class ExchangeStateError(GeventAgentError, RuntimeError):
    """A move the transition table does not allow (a bug in the library, never the caller's)."""

    code = "ERR_INTERNAL_ASSERTION"


_mono = time.monotonic


def _drip_timeout(what: str, seconds: float) -> RequestTimeout:
    return RequestTimeout("read ETIMEDOUT (the %s did not complete within %g s)" % (what, seconds))


def _frame(data: bytes, chunked: bool) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data) if chunked and data else data


class Exchange:
    """The request/response cycle on one :class:`Socket` (``socket._exchange``).

    Attributes:
        socket (Socket), send / recv (:class:`Phase`: each side's phase), reason (str | None: the
        close reason once ``FAILED``), parser (ResponseParser | None: this cycle's response),
        keep_alive (bool: the request asked to keep the connection), chunked (bool: the body is
        chunk-encoded), t_first_byte (``time.perf_counter()`` of the first response byte, 0 before).
    """

    __slots__ = (
        "socket",
        "send",
        "recv",
        "reason",
        "parser",
        "method",
        "max_header_size",
        "keep_alive",
        "chunked",
        "body_left",
        "t_first_byte",
        "cycle",
        "framing_since",
    )

    def __init__(self, socket: Socket) -> None:
        self.socket = socket
        self.send = SEND_IDLE
        self.recv = RECV_IDLE
        self.reason: Optional[str] = None
        self.parser: Optional[ResponseParser] = None
        self.method = "GET"
        self.max_header_size = MAX_HEADER_SIZE
        self.keep_alive = True
        self.chunked = False
        self.body_left: Optional[int] = None
        self.t_first_byte = 0.0
        self.cycle = 0  # how many cycles this socket began (tells a finished one from the current)
        self.framing_since = 0.0  # time.monotonic() when a size line or trailers began to arrive

    def __repr__(self) -> str:
        return "<Exchange %s %s %s%s>" % (
            self.method,
            self.send.name.lower(),
            self.recv.name.lower(),
            " reason=%s" % self.reason if self.reason else "",
        )

    # -- the state machine ----------------------------------------------------------------------
    def _send_to(self, phase: Phase) -> None:
        if not _MASK[self.send] >> phase & 1:
            raise ExchangeStateError("request side: %s -> %s" % (self.send.name, phase.name))
        self.send = phase

    def _recv_to(self, phase: Phase) -> None:
        if not _MASK[self.recv] >> phase & 1:
            raise ExchangeStateError("response side: %s -> %s" % (self.recv.name, phase.name))
        self.recv = phase

    def start(self, method: str, max_header_size: int) -> None:
        """Begin a cycle for a request with ``method``: on a new socket, or after a cycle whose
        verdict was clean (h11's ``start_next_cycle``).

        Raises:
            ExchangeStateError: the previous cycle did not end cleanly (a library bug).
        """
        send, recv = self.send, self.recv
        if send is SEND_DONE and recv is RECV_DONE:
            self.send, self.recv = SEND_IDLE, RECV_IDLE
        elif send is not SEND_IDLE or recv is not RECV_IDLE:
            raise ExchangeStateError("a new request on a socket in %s / %s" % (send.name, recv.name))
        # (parser is None after a clean cycle's end_cycle(); keep_alive, chunked and body_left
        # are set by the owner and send_*() before they are read)
        self.method = method
        self.max_header_size = max_header_size
        self.t_first_byte = 0.0
        self.cycle += 1
        self.socket.requests += 1

    def fail(self, reason: str, exc: Optional[BaseException] = None) -> None:
        """The cycle cannot end cleanly: both sides ``FAILED`` with ``reason`` (the first one
        wins), and the socket is destroyed with it (never pooled). Idempotent."""
        if self.send is not FAILED:
            self.send = self.recv = FAILED
            self.reason = reason
        socket = self.socket
        if not socket.destroyed:
            socket.destroy(reason=self.reason)

    def verdict(self) -> Optional[str]:
        """May the socket be pooled after this cycle? None if so; else its one close reason:
        the failure's, ``"upgrade"``, ``"body_not_sent"`` (a final response before ``100
        Continue``), ``"not_reusable"`` (a side did not finish), ``"unexpected_data"`` (bytes
        after the response), ``"agent_remove"`` (detached from its agent), ``"not_keep_alive"``
        (the request asked to close) or ``"server_close"`` (the response did: ``Connection:
        close``, HTTP/1.0, a body delimited by the connection's end)."""
        parser = self.parser
        if (
            self.send is SEND_DONE
            and self.recv is RECV_DONE
            and parser is not None
            and parser.keep_alive
            and self.keep_alive
            and not parser.stray
            and self.socket._agent is not None
        ):
            return None  # the common case, in one test
        if self.send is FAILED:
            return self.reason or "error"
        recv = self.recv
        if recv is RECV_UPGRADED:
            return "upgrade"
        if self.send is SEND_SKIPPED:
            return "body_not_sent"  # the response came before the body was (whole)
        parser = self.parser
        if recv is not RECV_DONE or self.send is not SEND_DONE or parser is None:
            return "not_reusable"
        if parser.stray:
            return "unexpected_data"
        if self.socket._agent is None:
            return "agent_remove"
        if not self.keep_alive:
            return "not_keep_alive"
        if not parser.keep_alive:
            return "server_close"
        return None

    @property
    def response_bytes(self) -> int:
        """Bytes of this cycle's response received so far (0: the server sent nothing)."""
        parser = self.parser
        return parser.bytes_received if parser is not None else 0

    # -- the request side ---------------------------------------------------------------------
    def send_whole(self, head: bytes, body: bytes, chunked: bool) -> None:
        """Write a whole small request (head and body) in one corked write (``Socket.send_corked``)."""
        if self.send is not SEND_IDLE:
            self._send_to(SEND_BODY)  # raises
        self.chunked = chunked
        if chunked:
            body = _frame(body, True) + b"0\r\n\r\n"
        self.socket.send_corked(head, body)
        self.send = SEND_DONE

    def send_head(self, head: bytes, chunked: bool, length: Optional[int], expect_continue: bool = False) -> None:
        """Write the head now; the body follows through :meth:`send_body` and :meth:`end_body`.
        ``length``: the caller's ``Content-Length`` for a body of unknown length, enforced as it
        is written (None: not enforced)."""
        self._send_to(SEND_CONTINUE if expect_continue else SEND_BODY)
        self.chunked = chunked
        self.body_left = length
        self.socket.send(head)

    def send_body(self, parts: Iterable[bytes]) -> None:
        """Write body parts (chunk-framed when chunked).

        Raises:
            ContentLengthMismatch: more bytes than the caller's ``Content-Length`` (none of that
                part is written; the caller fails the exchange).
        """
        socket, chunked = self.socket, self.chunked
        for part in parts:
            if not part:
                continue
            left = self.body_left
            if left is not None:
                if len(part) > left:
                    raise ContentLengthMismatch(
                        "Request body exceeds the Content-Length set in the header by %d byte(s)" % (len(part) - left)
                    )
                self.body_left = left - len(part)
            socket.send(_frame(part, chunked))

    def end_body(self) -> None:
        """The body is complete: the last chunk when chunked; the request side is done.

        Raises:
            ContentLengthMismatch: fewer bytes than the caller's ``Content-Length``.
        """
        if self.body_left:
            raise ContentLengthMismatch(
                "Request body is %d byte(s) short of the Content-Length set in the header" % self.body_left
            )
        if self.chunked:
            self.socket.send(b"0\r\n\r\n")
        self._send_to(SEND_DONE)

    def await_continue(self, on_interim: Callable[[Interim], None]) -> bool:
        """After an ``Expect: 100-continue`` head: True to send the body (``100`` arrived, or
        nothing within ``EXPECT_CONTINUE_SECONDS``); False if the final response came first (the
        body is never sent and the socket will not be pooled). Interim responses go to
        ``on_interim``."""
        socket = self.socket
        parser = self.parser = ResponseParser(self.method, self.max_header_size)
        self._recv_to(RECV_HEAD)
        previous = socket.timeout
        socket.set_timeout(min(EXPECT_CONTINUE_SECONDS, previous or EXPECT_CONTINUE_SECONDS))
        got_interim = False
        try:
            while not got_interim and not parser.headers_complete:
                data = socket.recv(HEAD_READ_SIZE)
                if not data:
                    raise socket_hang_up()
                if not self.t_first_byte:
                    self.t_first_byte = _now()
                parser.feed(data)
                got_interim = self._take_interim(parser, on_interim)
        except RequestTimeout:
            self._send_to(SEND_BODY)
            return True
        finally:
            if not socket.destroyed:
                socket.set_timeout(previous)
        if parser.headers_complete:
            self._send_to(SEND_SKIPPED)
            return False
        self._send_to(SEND_BODY)
        return True

    def take_early_response(self, on_interim: Callable[[Interim], None]) -> bool:
        """The body's write failed (ECONNRESET, EPIPE): a server that refused the body may have
        answered already (``413``, ``401``; RFC 9112 §9.5), and the kernel still holds that
        answer. Read what the socket has, waiting at most ``EARLY_RESPONSE_SECONDS`` for each
        read; True if a whole head is there (the body is then never sent on: not pooled)."""
        socket = self.socket
        if socket.destroyed or self.send is not SEND_BODY:
            return False
        parser = self.parser
        if parser is None:
            parser = self.parser = ResponseParser(self.method, self.max_header_size)
            self._recv_to(RECV_HEAD)
        try:
            while not parser.headers_complete:
                data = socket.recv(HEAD_READ_SIZE, EARLY_RESPONSE_SECONDS)
                if not data:
                    return False
                if not self.t_first_byte:
                    self.t_first_byte = _now()
                parser.feed(data)
                if parser.informational:
                    self._take_interim(parser, on_interim)
        except GeventAgentError:
            return False
        self._send_to(SEND_SKIPPED)
        return True

    # -- the response side --------------------------------------------------------------------
    def _take_interim(self, parser: ResponseParser, on_interim: Callable[[Interim], None]) -> bool:
        interim = parser.informational
        if not interim:
            return False
        taken: List[Interim] = list(interim)
        interim.clear()  # kept by nobody: a flood of 1xx costs no memory
        for item in taken:
            on_interim(item)
        return True

    def read_head(self, on_interim: Callable[[Interim], None]) -> ResponseParser:
        """Read until the final response's head is parsed (interim responses go to
        ``on_interim`` as they arrive). Returns the parser; the response side is then
        ``RECV_BODY``, ``RECV_DONE`` (the body was in the same reads) or ``RECV_UPGRADED``.

        Raises:
            ConnectionReset (``"socket hang up"``: closed before a response), RequestTimeout,
            HttpParseError (``HPE_*``), NetworkError. The caller fails the exchange.
        """
        socket = self.socket
        parser = self.parser
        if parser is None:
            parser = self.parser = ResponseParser(self.method, self.max_header_size)
            if self.recv is not RECV_IDLE:
                self._recv_to(RECV_HEAD)  # raises
            self.recv = RECV_HEAD
        elif parser.informational:
            self._take_interim(parser, on_interim)
        deadline = 0.0  # the head, interim ones included, ends within `timeout` however it drips
        while not parser.headers_complete:
            if deadline:
                within = deadline - _mono()
                if within <= 0:
                    raise _drip_timeout("response head", socket.timeout)
                data = socket.recv(HEAD_READ_SIZE, within)
            else:
                if socket.timeout:
                    deadline = _mono() + socket.timeout
                data = socket.recv(HEAD_READ_SIZE)
            if not data:
                raise socket_hang_up()
            if not self.t_first_byte:
                self.t_first_byte = _now()
            parser.feed(data)
            if parser.informational:
                self._take_interim(parser, on_interim)
        if parser.upgrade_head is not None:
            self._recv_to(RECV_UPGRADED)
        elif parser.message_complete:  # (RECV_HEAD -> RECV_DONE, inline: the hot path)
            self.recv = RECV_DONE
            self.socket.keep_alive_hint = parser.keep_alive_hint
        else:
            self.recv = RECV_BODY  # (RECV_HEAD -> RECV_BODY)
        return parser

    def read_more(self) -> bool:
        """Read once from the socket and parse the body. Returns True when the response ended.

        Raises:
            ConnectionReset (``"aborted"``: closed mid-body), RequestTimeout, HttpParseError,
            NetworkError. The caller fails the exchange.
        """
        parser = self.parser
        assert parser is not None
        if parser.slow_read:  # framing pending (a drip bound applies), or an error to raise
            data = self._read_framing(parser)
        else:
            if self.framing_since:
                self.framing_since = 0.0
            data = self.socket.recv(BODY_READ_SIZE)
        if data:
            parser.feed(data)
        elif not parser.feed_eof():
            raise ConnectionReset("aborted")
        if parser.message_complete:
            self._recv_done(parser)
            return True
        return False  # (an error found now: the response's _deliver() raises it)

    def _read_framing(self, parser: ResponseParser) -> bytes:
        """A read while framing is pending: a chunk size line (its extensions) or the trailers end
        within the socket's ``timeout`` of their start, however the server drips them."""
        if parser.error is not None:
            raise parser.error
        socket = self.socket
        if not socket.timeout:
            return socket.recv(BODY_READ_SIZE)
        now = _mono()
        since = self.framing_since
        if not since:
            since = self.framing_since = now
        within = since + socket.timeout - now
        if within <= 0:
            raise _drip_timeout("chunk framing or trailers", socket.timeout)
        return socket.recv(BODY_READ_SIZE, within)

    def _recv_done(self, parser: ResponseParser) -> None:
        recv = self.recv
        if recv is not RECV_HEAD and recv is not RECV_BODY:
            self._recv_to(RECV_DONE)  # raises
        self.recv = RECV_DONE
        self.socket.keep_alive_hint = parser.keep_alive_hint
