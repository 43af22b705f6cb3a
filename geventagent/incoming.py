"""``IncomingMessage``: a response's status, headers and streamed body (Node's ``http.IncomingMessage``).

The body is parsed as it arrives, through the socket's :class:`~geventagent.exchange.Exchange`.
When the last byte of the message has been parsed (even if the caller has not consumed the
buffered chunks yet) the response tells its owner (the request, through :class:`ResponseOwner`),
which hands the socket back. This module imports neither the agent nor the request.
"""

from __future__ import annotations

import functools
import json as _json
import weakref
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Optional, Protocol, Tuple, Union

import gevent
from gevent.exceptions import ConcurrentObjectUseError

from .errors import ConnectionReset, GeventAgentError, InvalidArgTypeError, RequestTimeout
from .events import EventEmitter
from .exchange import RECV_DONE

if TYPE_CHECKING:  # pragma: no cover
    from ._http import ResponseParser
    from .exchange import Exchange
    from .socket import Socket

__all__ = ["IncomingMessage", "ResponseOwner", "build_headers"]

# Node's _http_incoming.js matchKnownFields: for these a duplicate is discarded.
_SINGLE = frozenset(
    (
        "age",
        "authorization",
        "content-length",
        "content-type",
        "etag",
        "expires",
        "from",
        "host",
        "if-modified-since",
        "if-unmodified-since",
        "last-modified",
        "location",
        "max-forwards",
        "proxy-authorization",
        "referer",
        "retry-after",
        "server",
        "user-agent",
    )
)

#: ``close()`` drains at most this many unread body bytes, within ``_DRAIN_SECONDS``.
_DRAIN_LIMIT = 64 * 1024
_DRAIN_SECONDS = 1.0


_MISSING: Any = object()


class Headers(Dict[str, Any]):
    """Node's ``res.headers``: a dict with lower-case names (iterated, compared and serialised as
    the plain dict it is) where a name in another case is found too, as requests' users write it:
    ``headers["Content-Type"]``, ``headers.get("ETag")``, ``"Set-Cookie" in headers``."""

    __slots__ = ()

    def __missing__(self, key: Any) -> Any:
        if isinstance(key, str):
            lower = key.lower()
            if lower != key and dict.__contains__(self, lower):
                return dict.__getitem__(self, lower)
        raise KeyError(key)

    def get(self, key: Any, default: Any = None) -> Any:
        value = dict.get(self, key, _MISSING)
        if value is _MISSING:
            if isinstance(key, str):
                return dict.get(self, key.lower(), default)
            return default
        return value

    def __contains__(self, key: Any) -> bool:
        return dict.__contains__(self, key) or (isinstance(key, str) and dict.__contains__(self, key.lower()))


def build_headers(raw: List[Tuple[str, str]]) -> Dict[str, Union[str, List[str]]]:
    """Node's rules: lower-case names; ``set-cookie`` a list; ``cookie`` joined with ``"; "``;
    duplicates of single-valued fields dropped; others joined with ``", "``. A :class:`Headers`."""
    headers: Dict[str, Any] = Headers()
    for name, value in raw:
        key = name.lower()
        if key not in headers:
            headers[key] = [value] if key == "set-cookie" else value
        elif key == "set-cookie":
            headers[key].append(value)
        elif key in _SINGLE:
            continue
        elif key == "cookie":
            headers[key] += "; " + value
        else:
            headers[key] += ", " + value
    return headers


class ResponseOwner(Protocol):
    """What a response needs of the request it answers (``res.req``)."""

    reused_socket: bool

    def _response_complete(self, res: "IncomingMessage") -> None:
        """The whole message was parsed: emit ``'end'`` and release the socket (Node's order)."""

    def _response_aborted(self, res: "IncomingMessage") -> None:
        """The message will not complete (its socket is destroyed): the request's ``'close'``."""

    def _emit_timeout(self) -> None:
        """The socket was inactive for ``timeout`` seconds while the body was read."""


class IncomingMessage(EventEmitter):
    """A response. Blocking reads (:meth:`read`, iteration, :meth:`text`, :meth:`json`) let other
    greenlets run.

    Attributes:
        status_code (int), status_message (str), http_version (str, ``"1.1"``),
        headers (dict: lower-case names; Node's duplicate rules), raw_headers (list of
        ``(name, value)`` as received), trailers (dict, after the end), complete (bool: the whole
        message arrived), aborted (bool), socket (:class:`Socket` | None: None once released),
        upgrade_head (bytes | None: bytes after a 101 / CONNECT head).

    Events: ``'data'(chunk)``, ``'end'``, ``'aborted'``, ``'error'(exc)``, ``'close'``.
    """

    # Slots for what every response sets (reads and writes of an array; user attributes still go
    # to the __dict__ EventEmitter has).
    __slots__ = (
        "_events",
        "_unread",
        "_failure",
        "req",
        "_exchange",
        "_parser",
        "socket",
        "status_code",
        "status_message",
        "http_version",
        "upgrade_head",
        "complete",
        "aborted",
        "_closed",
        "_headers",
        "_consumed",
        "_emitted",
        "_whole",
    )
    _unread: Any  # the unread-timeout timer while the caller holds it, its body to come
    _failure: Optional[BaseException]  # why it was aborted while nobody read

    def __init__(self, req: ResponseOwner, exchange: "Exchange", parser: "ResponseParser") -> None:
        # (on the instance, not class defaults: CPython 3.11 specializes instance attribute reads)
        self._events = None
        self._unread = self._failure = None
        self.req = req
        self._exchange = exchange
        self._parser = parser
        self.socket: Optional["Socket"] = exchange.socket
        self.status_code = parser.status_code
        self.status_message = parser.status_message
        self.http_version = parser.http_version
        self.upgrade_head: Optional[bytes] = parser.upgrade_head
        self.complete = False
        self.aborted = False
        self._closed = False
        self._headers: Optional[Dict[str, Any]] = None
        self._consumed = 0
        self._emitted = 0
        self._whole: Optional[bytes] = None  # the body, when one read() took all of it

    def __repr__(self) -> str:
        return "<IncomingMessage %d %s>" % (self.status_code, "complete" if self.complete else "streaming")

    # -- headers --------------------------------------------------------------------------------
    @property
    def headers(self) -> Dict[str, Any]:
        headers = self._headers
        if headers is None:
            headers = self._headers = build_headers(self.raw_headers)
        return headers

    @property
    def raw_headers(self) -> List[Tuple[str, str]]:
        return self._parser.raw_headers

    @property
    def trailers(self) -> Dict[str, Any]:
        return build_headers(self._parser.raw_trailers)

    @property
    def raw_trailers(self) -> List[Tuple[str, str]]:
        return self._parser.raw_trailers

    def get_header(self, name: str) -> Optional[Any]:
        """The value of header ``name`` (case-insensitive) as :attr:`headers` shows it, or None."""
        lower = name.lower()
        headers = self._headers
        if headers is not None or lower == "set-cookie":
            return self.headers.get(lower)
        values = self._parser.header_values(lower.encode("latin-1"))
        if not values:
            return None
        if len(values) == 1 or lower in _SINGLE:
            return values[0].decode("latin-1")
        return self.headers.get(lower)  # a joined duplicate

    # -- body -----------------------------------------------------------------------------------
    def _deliver(self) -> None:
        """Emit ``'data'`` for newly parsed chunks (if anybody listens) and finish the message."""
        if self.aborted:
            return
        parser = self._parser
        fresh = parser.body_bytes - self._emitted
        if fresh > 0:
            self._emitted = parser.body_bytes
            events = self._events
            if events and "data" in events:
                chunks = []
                for chunk in reversed(parser.body):
                    if fresh <= 0:
                        break
                    chunks.append(chunk)
                    fresh -= len(chunk)
                for chunk in reversed(chunks):
                    self.emit("data", chunk)
        if parser.message_complete and not self.complete:
            # the message ended
            self.complete = True
            if self._unread is not None:
                self._unwatch()
            self.req._response_complete(self)  # emits 'end' at Node's point in the sequence
        elif parser.error is not None:  # the body is malformed: what came before it stays readable
            self._failure = parser.error
            self._abort(parser.error)

    # -- a response the caller holds unread -----------------------------------------------------
    def _watch_unread(self, seconds: float) -> "weakref.ReferenceType[IncomingMessage]":
        """The request returned this response before its body ended; returns the weak reference
        the request keeps to it. If the caller drops the response unread, that reference's
        callback destroys the socket (``close_reason="unread"``) so the slot is free again (no
        ``__del__``: nothing can resurrect it; the request drops the reference, and with it the
        callback, once the response ended). If nobody reads for ``seconds`` (the socket's
        inactivity timeout; 0: none), the request emits ``'timeout'``, the socket is destroyed
        (``close_reason="timeout"``) and a later read raises ``ETIMEDOUT``."""
        exchange = self._exchange
        loop = gevent.get_hub().loop
        timer = None
        if seconds:
            timer = loop.timer(seconds, seconds, ref=True)  # a waiter for this slot is woken by it
            timer.start(_unread_timeout, weakref.ref(self))
        self._unread = timer
        return weakref.ref(self, functools.partial(_unread_dropped, loop, exchange, exchange.cycle, timer))

    def _unwatch(self) -> None:
        timer = self._unread
        self._unread = None
        if timer is not None:
            timer.close()

    def _fill(self) -> None:
        """Read once from the socket and parse. Raises on timeout, reset or a parse error; the
        socket is then destroyed, never pooled."""
        socket = self.socket
        if socket is None or socket.destroyed:
            err = self._failure or ConnectionReset("aborted")
            self._abort(err)
            raise err
        timer = self._unread
        if timer is not None:
            timer.stop()  # reading: the socket's own timeout applies now
        try:
            self._exchange.read_more()
        except BaseException as exc:
            if isinstance(exc, ConcurrentObjectUseError):
                raise  # another greenlet waits for this body already: nothing read, nothing lost
            if isinstance(exc, RequestTimeout):
                try:
                    self.req._emit_timeout()
                finally:  # (a 'timeout' listener that raises must not keep the socket)
                    self._abort(exc)
            else:
                self._abort(exc)
            raise
        self._deliver()
        timer = self._unread
        if timer is not None:
            timer.again(_unread_timeout, weakref.ref(self))

    def _abort(self, exc: Optional[BaseException], reason: str = "error") -> None:
        """The message cannot complete: destroy the socket (never pooled) and emit Node's events:
        ``'aborted'``, the request's ``'close'``, ``'error'`` (if listened to), ``'close'``."""
        if self.complete or self.aborted:
            return
        self.aborted = True
        self.socket = None
        if self._unread is not None:
            self._unwatch()
        self._exchange.fail(reason, exc)
        if isinstance(exc, GeventAgentError):
            exc.reused_socket = self.req.reused_socket
        self.emit("aborted")
        self.req._response_aborted(self)
        if isinstance(exc, Exception) and self._events and "error" in self._events:
            self.emit("error", exc)
        self._emit_close()

    def _emit_close(self) -> None:
        if not self._closed:
            self._closed = True
            if self._events and "close" in self._events:
                self.emit("close")

    def _take(self, amt: Optional[int]) -> bytes:
        body = self._parser.body
        if amt is None or amt >= self._parser.body_bytes - self._consumed:
            data = b"".join(body) if len(body) != 1 else body[0]
            body.clear()
            if not self._consumed and self.complete:
                self._whole = data  # one read took the whole body: content / text() / json() keep it
        else:
            parts = []
            need = amt
            while need > 0 and body:
                chunk = body.popleft()
                if len(chunk) > need:
                    parts.append(chunk[:need])
                    body.appendleft(chunk[need:])
                    need = 0
                else:
                    parts.append(chunk)
                    need -= len(chunk)
            data = b"".join(parts)
        self._consumed += len(data)
        return data

    def read(self, amt: Optional[int] = None) -> bytes:
        """Read the body: all of what is left (``amt`` None or negative, as Python's files), or up
        to ``amt`` bytes; ``b""`` at the end (a stream: what was read is not read again, but a
        body one read took whole stays for :attr:`content`, :meth:`text` and :meth:`json`).

        Raises:
            InvalidArgTypeError (``ERR_INVALID_ARG_TYPE``): ``amt`` is not an int or None.
            RequestTimeout (``ETIMEDOUT``), ConnectionReset (``"aborted"``), HttpParseError (``HPE_*``).
        """
        parser = self._parser
        if amt is None:
            while not self.complete:
                self._fill()
            return self._take(None)
        if type(amt) is not int and (isinstance(amt, bool) or not isinstance(amt, int)):
            raise InvalidArgTypeError(
                'The "amt" argument must be an int, or None for all of it. Received type %s (%r)'
                % (type(amt).__name__, amt)
            )
        if amt <= 0:
            return self.read(None) if amt < 0 else b""
        while not self.complete and parser.body_bytes - self._consumed < amt:
            if parser.body:
                break  # return what we have, like a socket read
            self._fill()
        return self._take(amt)

    def __iter__(self) -> Iterator[bytes]:
        """Yield body chunks (bytes) as they arrive."""
        body = self._parser.body
        while True:
            while body:
                chunk = body.popleft()
                self._consumed += len(chunk)
                yield chunk
            if self.complete:
                return
            self._fill()

    iter_chunks = __iter__

    @property
    def content(self) -> bytes:
        """The whole body: read now, or kept from the read that took it whole (so ``content``
        after ``read()``, or twice, gives the body again, as requests' ``content`` does); what
        is left of it after partial reads."""
        whole = self._whole
        return whole if whole is not None else self.read()

    def text(self, encoding: Optional[str] = None) -> str:
        """The body (:attr:`content`) decoded with ``encoding``, else the Content-Type charset
        (UTF-8 when it names one Python does not know, as requests does), else UTF-8; bytes that
        do not decode are replaced. Raises LookupError for an unknown ``encoding`` given here."""
        data = self.content
        if encoding is None:
            ctype = self.get_header("content-type") or ""
            for part in ctype.split(";")[1:]:
                key, _, value = part.strip().partition("=")
                if key.lower() == "charset" and value:
                    encoding = value.strip('"')
            if encoding:
                try:
                    return data.decode(encoding, errors="replace")
                except LookupError:  # the server's charset, not the caller's: fall back
                    pass
            encoding = "utf-8"
        return data.decode(encoding, errors="replace")

    def json(self) -> Any:
        """The body parsed as JSON (``json.JSONDecodeError`` if it is not); UTF-8 unless the
        Content-Type names a charset."""
        if "charset=" in (self.get_header("content-type") or "").lower():
            return _json.loads(self.text())
        return _json.loads(self.content)

    # -- teardown -------------------------------------------------------------------------------
    def close(self) -> None:
        """Release the response: a short unread remainder (64 KiB, 1 s) is drained so the socket can
        be pooled; otherwise the socket is destroyed. Idempotent."""
        parser = self._parser
        if not self.complete and not self.aborted:
            drained = 0
            try:
                with gevent.Timeout(_DRAIN_SECONDS, False):  # type: ignore[arg-type]  # False: exit silently
                    while not self.complete and drained < _DRAIN_LIMIT:
                        before = parser.body_bytes
                        self._fill()
                        drained += parser.body_bytes - before
                        parser.body.clear()
                        self._consumed = parser.body_bytes
            except (GeventAgentError, ConcurrentObjectUseError):  # (the latter: another greenlet reads)
                pass
            if not self.complete:
                self._abort_quietly("unread_body")  # (a greenlet still reading gets "aborted")
        parser.body.clear()
        self._consumed = parser.body_bytes
        self._emit_close()

    def _abort_quietly(self, reason: str) -> None:
        self.socket = None
        self.aborted = True
        if self._unread is not None:
            self._unwatch()
        self._exchange.fail(reason)
        self.req._response_aborted(self)

    def destroy(self, exc: Optional[BaseException] = None) -> None:
        """Destroy the response: the socket is destroyed unless the message already completed
        (then it is already back in the pool, as in Node)."""
        if not self.complete:
            self._abort_quietly("destroyed")
        if exc is not None and self._events and "error" in self._events:
            self.emit("error", exc)
        self._emit_close()

    def __enter__(self) -> "IncomingMessage":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


def _unread_dropped(loop: Any, exchange: "Exchange", cycle: int, timer: Any, ref: Any = None) -> None:
    """A response dropped unread: destroy its socket, from the hub's next round (the garbage
    collector may run this in the middle of the agent's bookkeeping)."""
    if timer is not None:
        timer.close()
    loop.run_callback(_release_unread, exchange, cycle)


def _release_unread(exchange: "Exchange", cycle: int) -> None:
    if exchange.cycle == cycle and exchange.recv is not RECV_DONE:
        exchange.fail("unread")


def _unread_timeout(ref: "weakref.ReferenceType[IncomingMessage]") -> None:
    res = ref()
    if res is None or res.complete or res.aborted:
        return
    seconds = res._exchange.socket.timeout
    err = RequestTimeout("read ETIMEDOUT (the response body was not read for %g s)" % seconds)
    err.reused_socket = res.req.reused_socket
    res._failure = err
    try:
        res.req._emit_timeout()
    finally:
        res._abort(err, reason="timeout")
