"""``ClientRequest``, ``request()`` and ``get()``: Node's ``http.ClientRequest`` as blocking calls.

``request()``/``end()`` block the calling greenlet (never the hub) until the response head has
arrived. The flow ports ``lib/_http_client.js``: agent selection (§4.1), ``onSocket`` (§4.5), the
end of an exchange (§4.6) and the events of §8. The cycle on the socket (writing, framing,
reading, the pool-or-close verdict) is the socket's :class:`~geventagent.exchange.Exchange`;
this module chooses the agent, waits for a socket, drives the exchange, emits Node's events and
retries a request that a reused keep-alive socket lost. Every failure path releases the request's
queue slot and socket, also for ``gevent.Timeout`` and ``GreenletExit``.
"""

from __future__ import annotations

import base64
import enum
import json as _json
import math
import re
import time
import weakref
from typing import Any, Dict, Mapping, Optional, Tuple
from urllib.parse import urlencode

import gevent
from gevent.hub import Waiter

from . import _options
from . import agent as _agent
from . import https as _https
from ._http import MAX_HEADER_SIZE, check_method
from ._options import IDEMPOTENT_METHODS, REQUEST_OPTIONS, validate_port, validate_retry, validate_seconds
from .agent import _DEBUG, _log, _log_cache
from .errors import (
    ConnectionReset,
    GeventAgentError,
    InvalidArgTypeError,
    InvalidCharError,
    InvalidProtocolError,
    RequestTimeout,
    StaleSocket,
    UnescapedCharactersError,
    socket_hang_up,
)
from .exchange import CHUNK_MAX, Exchange, Interim
from .incoming import IncomingMessage, build_headers
from .outgoing import NO_DEFAULT_BODY, Body, OutgoingMessage, body_limit, decide_framing, prepare_body, replayable
from .socket import Socket

__all__ = ["ClientRequest", "request", "get"]

_INVALID_HOST_CHARS = re.compile(r"[^\t\x20-\x7e\x80-\xff]")
#: ``(host, port, default_port) -> ("Host", value)``: the Host header we build, validated once.
_HOST_HEADERS: Dict[Tuple[str, int, int], Tuple[str, str]] = {}


def _host_header(host: str, port: int, default_port: int) -> Tuple[str, str]:
    """The Host header for ``host:port`` (brackets for IPv6, no port when it is the default).

    Raises:
        InvalidCharError (``ERR_INVALID_CHAR``): CR, LF, NUL or another control character in the
            host (Node validates the Host header it builds; nothing is sent).
    """
    value = "[%s]" % host if ":" in host else host
    if port != default_port:
        value += ":%d" % port
    if _INVALID_HOST_CHARS.search(value):
        raise InvalidCharError('Invalid character in header content ["Host"]: %r' % (host,))
    return ("Host", value)


_NOT_CONNECT_OPTIONS = frozenset(
    (
        "headers",
        "method",
        "path",
        "agent",
        "auth",
        "hostname",
        "protocol",
        "set_host",
        "default_port",
        "max_header_size",
        "retry",
        "queue_timeout",
    )
)
_METHODS: Dict[str, str] = {}
_UNSET: Any = object()
#: A request whose write finds its reused socket closed goes out again on another; at most this often.
MAX_REDISPATCH = 8


class _Stage(enum.IntEnum):
    """Where a request is with its agent (``destroyed`` is Node's flag, kept beside it)."""

    NEW = 0  # the agent has not been asked for a socket
    WAITING = 1  # add_request() called: queued, or a socket is on its way
    ASSIGNED = 2  # a socket is the request's (connecting, exchanging)
    RELEASED = 3  # the response ended: the socket went back to the agent, or was closed


_NEW, _WAITING, _ASSIGNED, _RELEASED = _Stage  # module constants: one global load on the hot path


def _default_agent(protocol: Optional[str]) -> Any:
    """The global agent for ``protocol``, read at call time (``ga.global_agent = ...`` takes effect)."""
    if protocol == "https:":
        return _https.https_global_agent
    return _agent.global_agent


class ClientRequest(OutgoingMessage):
    """An outgoing request. Sends nothing until :meth:`write`, :meth:`end` or :meth:`flush_headers`.

    Args:
        url (str | Mapping | None): a URL, or Node-style options in snake_case (``protocol``,
            ``hostname``, ``host``, ``port``, ``path``, ``method``, ``headers``, ``agent``,
            ``socket_path``, ``local_address``, ``family``, ``auth``, ``timeout``, ``set_host``,
            ``default_port``, ``max_header_size``, ``retry``, ``queue_timeout``, TLS options);
            keyword arguments override it. A URL string is encoded as Node's ``new URL()`` does
            (WHATWG): its path and query percent-encoded (space, ``"<>`{}`` and non-ASCII as
            UTF-8; ``'`` in the query; escapes already there kept), a non-ASCII host name in
            Punycode (UTS #46). The ``path`` option is sent as given and must be escaped already.
        method (str): default ``"GET"``; upper-cased; must be an HTTP token.
        headers (Mapping | list of pairs | None): request headers; validated here.
        agent (Agent | False | None): None = the global agent for the scheme (read at call time);
            False = a one-shot ``Agent()`` with default options.
        timeout (float | None): socket inactivity limit in seconds (else the agent's).

    Raises (at construction, nothing sent):
        UnknownOptionError (``ERR_INVALID_ARG_VALUE``, a ``TypeError``): an unknown option name.
        InvalidArgTypeError (``ERR_INVALID_ARG_TYPE``): bad ``agent`` (a class, not an instance,
            included), ``url``, ``headers`` (a str, items that are not pairs), ``auth`` (not a
            ``"user:password"`` str, bytes or a ``(user, password)`` pair) or other option types.
        SocketBadPortError (``ERR_SOCKET_BAD_PORT``): a port that is not 0-65535.
        InvalidProtocolError (``ERR_INVALID_PROTOCOL``): a scheme the agent does not serve.
        InvalidHttpTokenError / InvalidCharError: bad method or header.
        UnescapedCharactersError: a ``path`` option with spaces, control characters or characters
            past U+00FF (Node's ``ERR_UNESCAPED_CHARACTERS``).
        InvalidArgValueError (``ERR_INVALID_URL``): a URL with no scheme or host, a bad port, or a
            host name Node's URL parser refuses (a space, ``<>^|``, a bad IDNA label).

    Events, in Node's order: ``'socket'``, ``'information'``, ``'continue'``, ``'finish'``,
    ``'response'``, ``'upgrade'``, ``'connect'``, ``'timeout'``, ``'error'``, ``'close'``.
    """

    # Slots: a request's state is an array, not a dict of 30-odd keys (which outgrows CPython's
    # shared-key dicts and is rebuilt per request); a __dict__ is still there for user attributes.
    __slots__ = (
        "_events",
        "_max_listeners",
        "_warned",
        "agent",
        "protocol",
        "host",
        "port",
        "timeout",
        "queue_timeout",
        "max_header_size",
        "_connect_options",
        "retry",
        "reused_socket",
        "retried",
        "destroyed",
        "finished",
        "socket",
        "_res",
        "fresh_connection",
        "stale_check_at_write",
        "_stage",
        "_ended",
        "_closed",
        "_socket_result",
        "_waiter",
        "_exchange",
        "_t_dispatch",
        "_t_socket",
        "_t_connected",
        "_t_sent",
        "_t_first_byte",
        "_t_headers",
    )
    socket: Optional[Socket]
    _res: Any  # the IncomingMessage while it is delivered; a weakref once the caller has it unread
    _socket_result: Optional[Tuple[Optional[Socket], Optional[BaseException]]]
    _waiter: Optional[Waiter]
    _exchange: Optional[Exchange]

    def __init__(
        self,
        url: Any = None,
        *,
        method: Optional[str] = None,
        headers: Any = None,
        agent: Any = None,
        timeout: Optional[float] = None,
        **options: Any,
    ) -> None:
        self._events = self._max_listeners = self._warned = None
        self.reused_socket = self.retried = self.destroyed = self.finished = False
        self.fresh_connection = self.stale_check_at_write = False
        self.socket = self._res = None
        self._stage = _NEW
        self._ended = self._closed = False
        self._socket_result = self._waiter = self._exchange = None
        # (the _t_* timestamps are set as the request reaches each phase; timings() reads 0 before)
        queue_timeout: Any = _UNSET
        if not options and type(url) is str:
            # The common case, a URL and nothing else: its parts come parsed and validated from a
            # per-URL cache, and no options dict is built.
            protocol, host, port, path, auth = _options.url_template(url)
            default_agent = _https.https_global_agent if protocol == "https:" else _agent.global_agent
            opts: Any = None
            set_host = True
            default_port = None
            max_header_size = None
            retry = _UNSET
        else:
            if options:
                _options.check_names(options, REQUEST_OPTIONS, "ClientRequest()")
            opts = _gather(url, method, headers, agent, timeout, options)
            method, headers, timeout = opts.get("method"), opts.get("headers"), opts.get("timeout")
            agent = opts.pop("agent", None)
            default_agent = opts.pop("_default_agent", None) or _default_agent(opts.get("protocol"))
            protocol = opts.get("protocol")
            for key in ("hostname", "host"):
                value = opts.get(key)
                if value is not None and not isinstance(value, str):
                    raise InvalidArgTypeError(
                        'The "options.%s" property must be of type string. Received type %s'
                        % (key, type(value).__name__)
                    )
            host = opts.get("hostname") or opts.get("host") or "localhost"
            port = opts.get("port")
            path = opts.get("path") or "/"
            if not isinstance(path, str):
                raise InvalidArgTypeError('The "options.path" property must be of type string. Received %r' % (path,))
            if _options.INVALID_PATH.search(path):
                raise UnescapedCharactersError("Request path contains unescaped characters")
            auth = opts.get("auth")
            set_host = opts.get("set_host", True)
            default_port = opts.get("default_port")
            max_header_size = opts.get("max_header_size")
            retry = opts.get("retry", _UNSET)
            if "queue_timeout" in opts:
                queue_timeout = validate_seconds("queue_timeout", opts["queue_timeout"], allow_inf=True)

        if agent is False:
            agent = type(default_agent)()
        elif agent is None:
            agent = default_agent
        elif not isinstance(agent, _agent.Agent) and (
            isinstance(agent, (bool, type)) or not callable(getattr(agent, "add_request", None))
        ):
            raise InvalidArgTypeError(
                'The "options.agent" property must be one of Agent-like Object, None, or False. '
                + (
                    "Received the class %s: pass an instance, %s(...)" % (agent.__name__, agent.__name__)
                    if isinstance(agent, type)
                    else "Received type %s (%r)" % (type(agent).__name__, agent)
                )
            )
        self.agent: _agent.Agent = agent
        real = isinstance(agent, _agent.Agent)  # else an Agent-like object: its attributes may be missing
        protocol = protocol or default_agent.protocol
        expected = (agent.protocol if real else getattr(agent, "protocol", None)) or default_agent.protocol
        if protocol != expected:
            raise InvalidProtocolError('Protocol "%s" not supported. Expected "%s"' % (protocol, expected))
        self.protocol = protocol

        default_port = default_port or (agent.default_port if real else getattr(agent, "default_port", None)) or 80
        port = port or default_port or 80
        if opts is not None and (type(port) is not int or not 0 <= port <= 65535):
            port = validate_port(port)  # (a URL's port is checked when the URL is parsed)
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        self.host = host
        self.port = port
        self.timeout = None if timeout is None else validate_seconds("timeout", timeout)
        self.queue_timeout = None if queue_timeout is _UNSET else queue_timeout  # None: the agent's
        self.max_header_size = max_header_size or MAX_HEADER_SIZE

        method = method or "GET"
        if not isinstance(method, str):
            raise InvalidArgTypeError('The "method" argument must be of type string. Received %r' % (method,))
        upper = _METHODS.get(method)
        if upper is None:
            upper = check_method(method).upper()
            if len(_METHODS) < 64:
                _METHODS[method] = upper
        self.method = upper
        self.path = path

        self._headers = {}
        self.headers_sent = False
        if headers:
            if type(headers) is dict:  # (a name once each; case variants replace, as in Node)
                for name, value in headers.items():
                    self.set_header(name, value)
            else:
                # Pairs, or a multi-valued mapping (urllib3's HTTPHeaderDict yields a pair per
                # value): a name given twice sends a line for each value (Node's array headers).
                given: set = set()
                pairs = headers.items() if isinstance(headers, Mapping) else _header_pairs(headers)
                for name, value in pairs:
                    if isinstance(name, (bytes, bytearray)):
                        name = bytes(name).decode("latin-1")
                    lower = name.lower() if isinstance(name, str) else None  # (else set_header raises)
                    if lower is not None and lower in given:
                        before = self._headers[lower][1]
                        value = (before if isinstance(before, list) else [before]) + (
                            list(value) if isinstance(value, (list, tuple)) else [value]
                        )
                    given.add(lower)
                    self.set_header(name, value)
        if set_host and "host" not in self._headers:
            host_key = (host, port, default_port)
            host_item = _HOST_HEADERS.get(host_key)
            if host_item is None:
                host_item = _host_header(host, port, default_port)
                if len(_HOST_HEADERS) >= 4096:
                    _HOST_HEADERS.clear()
                _HOST_HEADERS[host_key] = host_item
            self._headers["host"] = host_item
        if auth and "authorization" not in self._headers:
            self.set_header("Authorization", "Basic " + _basic_credentials(auth))

        # §4.1 step 7: a keep_alive=False agent with unlimited max_sockets sends Connection: close.
        if real:
            self.should_keep_alive = bool(agent.keep_alive) or agent.max_sockets != math.inf
        else:
            self.should_keep_alive = bool(getattr(agent, "keep_alive", False)) or (
                getattr(agent, "max_sockets", math.inf) != math.inf
            )

        if opts is None:
            conn: Dict[str, Any] = {"host": host, "port": port}
            if timeout is not None:
                conn["timeout"] = timeout
        else:
            conn = {key: value for key, value in opts.items() if key not in _NOT_CONNECT_OPTIONS}
            conn["host"] = host
            conn["port"] = port
            if not conn.keys().isdisjoint(_options.CHECKED_CONNECT_OPTIONS):
                _options.validate_connect_options(conn)  # (an agent's are checked when it is made)
            if protocol == "https:" and not conn.keys().isdisjoint(_options.TLS_OPTIONS):
                _options.validate_tls_options(conn, whole=False)
        self._connect_options = conn

        if retry is not _UNSET:
            self.retry = validate_retry(retry)
        else:
            self.retry = agent.retry if real else getattr(agent, "retry", "idempotent")

    def __repr__(self) -> str:
        return "<ClientRequest %s %s%s %s>" % (self.method, self.host, self.path, self._stage.name.lower())

    @property
    def connect_options(self) -> Dict[str, Any]:
        """The options this request hands the agent's ``add_request()`` (host, port, connect and TLS
        options; Node's ``optsWithoutSignal``): a copy."""
        return dict(self._connect_options)

    def timings(self) -> Dict[str, float]:
        """Phase durations in seconds (``time.perf_counter``): ``queue`` (waiting for a socket),
        ``connect`` (TCP + TLS; 0 on a reused socket), ``send`` (writing the request),
        ``ttfb`` (request written to the first response byte), ``headers`` (to the end of the head).
        Phases not reached are 0."""

        def at(name: str) -> float:
            return getattr(self, name, 0.0)

        def span(a: str, b: str) -> float:
            start, end = at(a), at(b)
            return end - start if start and end else 0.0

        return {
            "queue": span("_t_dispatch", "_t_socket"),
            "connect": span("_t_socket", "_t_connected"),
            "send": span("_t_connected", "_t_sent"),
            "ttfb": span("_t_sent", "_t_first_byte"),
            "headers": span("_t_dispatch", "_t_headers"),
        }

    # -- the socket (§4.5) ----------------------------------------------------------------------
    def on_socket(self, socket: Optional[Socket], err: Optional[BaseException] = None) -> None:
        """Called by the agent with the socket for this request (or an error). Never blocks; wakes
        the waiting greenlet from the hub (Node defers ``onSocket`` to the next tick)."""
        if self.destroyed and err is None and socket is not None and not socket.destroyed:
            # Node onSocketNT: a socket handed to a destroyed request goes straight back.
            gevent.get_hub().loop.run_callback(socket._emit_all, "free")
            return
        self._socket_result = (socket, err)
        waiter = self._waiter
        if waiter is not None:
            gevent.get_hub().loop.run_callback(waiter.switch, None)

    def _acquire(self) -> Exchange:
        """Ask the agent for a socket, wait for it, connect it; start its exchange."""
        self._t_dispatch = _now()
        if self.destroyed:  # (the agent would hand a destroyed request's socket straight back)
            raise socket_hang_up()
        if self._stage is _NEW:
            self._stage = _WAITING
            self.agent.add_request(self, self._connect_options)
        if self._socket_result is None:
            waiter = self._waiter = Waiter()
            try:
                waiter.get()
            finally:
                self._waiter = None
            if self._socket_result is None:  # destroyed by another greenlet while queued
                raise socket_hang_up()
        socket, err = self._socket_result
        if err is not None or socket is None:
            raise err or socket_hang_up()
        self._stage = _ASSIGNED
        self.socket = socket
        socket._http_message = self
        if self._events and "socket" in self._events:
            self.emit("socket", socket)
        if self.destroyed:
            raise socket_hang_up()
        self._t_socket = _now()
        if not socket.connected:
            socket.connect()
            self._t_connected = _now()
        else:
            self._t_connected = self._t_socket
        exchange = socket._exchange
        if exchange is None:
            exchange = socket._exchange = Exchange(socket)
        exchange.start(self.method, self.max_header_size)
        self._exchange = exchange
        return exchange

    # -- writing --------------------------------------------------------------------------------
    def _start_streaming(self) -> Exchange:
        """Acquire a socket and write the head for a body written piece by piece."""
        chunked, _ = decide_framing(self._headers, self.method, None)
        exchange = self._acquire()
        head = self._encode_head(None, chunked, False, exchange.socket.plain_proxy)
        exchange.keep_alive = self.should_keep_alive
        exchange.send_head(head, chunked, body_limit(self._headers, chunked, None))
        return exchange

    def flush_headers(self) -> None:
        """Send the head now (with ``Transfer-Encoding: chunked`` unless a length was set)."""
        if not self.headers_sent:
            self._guard(self._start_streaming)

    def write(self, chunk: Any) -> bool:
        """Send a body chunk (the head first, chunked unless ``Content-Length`` was set). Blocks
        until written. Returns True.

        Raises:
            GeventAgentError (``ERR_STREAM_WRITE_AFTER_END``) after :meth:`end`,
            (``ERR_STREAM_DESTROYED``) after :meth:`destroy`; InvalidArgTypeError
            (``ERR_INVALID_ARG_TYPE``, nothing of it sent) for a chunk that is not str or bytes-like;
            ContentLengthMismatch past the caller's ``Content-Length``; the errors of :meth:`end`.
        """
        if self._ended:
            raise GeventAgentError("write after end", code="ERR_STREAM_WRITE_AFTER_END")
        if self.destroyed:
            raise GeventAgentError("Cannot call write after a stream was destroyed", code="ERR_STREAM_DESTROYED")
        if isinstance(chunk, str):
            data = chunk.encode("utf-8")
        elif isinstance(chunk, (bytes, bytearray, memoryview)):
            data = bytes(chunk)
        else:  # (bytes(5) would be five NUL bytes, bytes([1, 2]) two: Node raises, and so does this)
            raise InvalidArgTypeError(
                'The "chunk" argument must be of type str or bytes-like. Received type %s' % type(chunk).__name__
            )
        self._guard(self._write, data)
        return True

    def _write(self, data: bytes) -> None:
        exchange = self._exchange if self.headers_sent else self._start_streaming()
        if data:
            if exchange is None:
                raise socket_hang_up()
            exchange.send_body((data,))

    def end(self, data: Body = None) -> IncomingMessage:
        """Finish the request (optionally with a last body part) and block until the response head.

        ``data`` may be bytes, str, a file object or an iterable of bytes/str (sent chunked when
        its length is unknown).

        Returns:
            IncomingMessage: its body is streamed by ``read()``/iteration.
        Raises:
            ConnectionRefused, ConnectionReset (``"socket hang up"``), RequestTimeout (``ETIMEDOUT``,
            after ``'timeout'``), QueueTimeout / QueueFull (nothing sent), HttpParseError (``HPE_*``),
            ContentLengthMismatch, NetworkError. The request is destroyed and its socket never pooled.
        """
        if self._ended:
            raise GeventAgentError("end() was already called", code="ERR_STREAM_WRITE_AFTER_END")
        self._ended = True
        try:
            return self._end(data)  # a plain call, not _guard's func(*args): no C-level frame
        except BaseException as exc:  # (each C frame is stack a parked greenlet saves and restores)
            self._failed(exc)
            raise

    def _guard(self, func: Any, *args: Any) -> Any:
        try:
            return func(*args)
        except BaseException as exc:
            self._failed(exc)
            raise

    def _failed(self, exc: BaseException) -> None:
        """The request failed with ``exc``: destroy it (``'timeout'`` first for a timeout);
        a ``BaseException`` such as ``gevent.Timeout`` or ``GreenletExit`` releases it too."""
        if isinstance(exc, Exception):
            if isinstance(exc, RequestTimeout):
                try:
                    self._emit_timeout()
                finally:  # (a 'timeout' listener that raises must not keep the request's socket)
                    self._fail(exc)
            else:
                self._fail(exc)
        else:
            self._fail(None)

    def _end(self, data: Body) -> IncomingMessage:
        if self.destroyed:
            raise socket_hang_up()
        if self.headers_sent:  # after write() / flush_headers(): the head went out already
            exchange = self._exchange
            if exchange is None:
                raise socket_hang_up()
            parts, _ = prepare_body(data)
            exchange.send_body(parts)
            exchange.end_body()
            return self._finish_and_read(exchange)
        replay: Any = True if data is None else replayable(data)
        self.stale_check_at_write = True
        redispatched = 0
        while True:
            try:
                return self._attempt(data)
            except StaleSocket:
                # Nothing was written: go again on another connection, whatever the method (as if
                # the agent's peek had found the socket stale before handing it over).
                if self.destroyed or redispatched >= MAX_REDISPATCH:
                    raise
                redispatched += 1
                if _log_cache.get(_DEBUG, True) and _log.isEnabledFor(_DEBUG):
                    _log.debug(
                        "redispatch %s %s%s: its reused socket was found closed before the write",
                        self.method,
                        self.host,
                        self.path,
                    )
                self._reset_for_retry(count=False)
                self._count("redispatched")
            except ConnectionReset as exc:
                if not self._may_retry(exc, replay):
                    raise
                if _log_cache.get(_DEBUG, True) and _log.isEnabledFor(_DEBUG):
                    _log.debug(
                        "retry %s %s%s on a new connection after %s on a reused socket",
                        self.method,
                        self.host,
                        self.path,
                        exc,
                    )
                self._reset_for_retry()
                if replay is not True:
                    data = replay()

    def _attempt(self, data: Body) -> IncomingMessage:
        parts, length = ((), 0) if data is None else prepare_body(data)
        headers = self._headers
        if "content-length" in headers or "transfer-encoding" in headers:
            chunked, add_length = decide_framing(headers, self.method, length)  # raises before a slot is taken
            if length is None and type(parts) is list:  # every part is here: hold them to the caller's length now
                decide_framing(headers, self.method, sum(map(len, parts)))
        else:  # no framing header of the caller's: decide_framing's last rule, inline (hot path)
            chunked = length is None
            add_length = not chunked and (length > 0 or self.method not in NO_DEFAULT_BODY)  # type: ignore[operator]
        exchange = self._acquire()
        if self._events and "socket" in self._events:  # a 'socket' listener may have set headers
            chunked, add_length = decide_framing(headers, self.method, length)
        head = self._encode_head(length, chunked, add_length, exchange.socket.plain_proxy)
        exchange.keep_alive = self.should_keep_alive
        expect = headers.get("expect")
        if expect is not None and str(expect[1]).lower() == "100-continue" and length != 0:
            exchange.send_head(head, chunked, body_limit(headers, chunked, length), True)
            if not exchange.await_continue(self._on_interim):
                return self._read_response(exchange)
            exchange.send_body(parts)
            exchange.end_body()
        elif not parts:  # (an empty tuple or list: no body)
            exchange.send_whole(head, b"", chunked)
        elif isinstance(parts, (list, tuple)) and len(parts) == 1 and len(parts[0]) <= CHUNK_MAX:
            exchange.send_whole(head, parts[0], chunked)
        else:
            # an iterable's length is unknown: the caller's Content-Length, if any, is enforced as
            # it is written (past it, the rest would reach the server as the next request)
            exchange.send_head(head, chunked, body_limit(headers, chunked, length))
            try:
                exchange.send_body(parts)
                exchange.end_body()
            except StaleSocket:
                raise
            except ConnectionReset:
                # the server stopped reading the body: deliver the answer it may have sent first
                if not exchange.take_early_response(self._on_interim):
                    raise
                return self._read_response(exchange)
        # _finish_and_read(), inline (the hot path: one call fewer per request)
        self._t_sent = _now()
        self.finished = True
        if self._events and "finish" in self._events:
            self.emit("finish")
        return self._read_response(exchange)

    def _finish_and_read(self, exchange: Exchange) -> IncomingMessage:
        self._t_sent = _now()
        self.finished = True
        if self._events and "finish" in self._events:
            self.emit("finish")
        return self._read_response(exchange)

    def _count(self, counter: str) -> None:
        counters = getattr(self.agent, "counters", None)
        if counters is not None:
            counters[counter] = counters.get(counter, 0) + 1

    # -- safe retry on a stale reused socket (a difference from Node) -----------------------------
    def _may_retry(self, exc: BaseException, replay: Any) -> bool:
        """Retry once, on a fresh connection, only when: the socket was reused, no byte of the
        response arrived, the request is not destroyed, its body can be replayed, and the policy
        allows the method."""
        if not self.reused_socket or self.retried or self.destroyed or replay is None:
            return False
        exchange = self._exchange
        if exchange is not None and exchange.response_bytes:
            return False
        policy = self.retry
        if policy == "always":
            return True
        return policy == "idempotent" and self.method in IDEMPOTENT_METHODS

    def _reset_for_retry(self, count: bool = True) -> None:
        """Drop the socket and start over on another connection. ``count``: this is a retry of a
        request that may have been written (counted, and allowed once); else nothing was written
        (a redispatch)."""
        exchange, self._exchange = self._exchange, None
        if exchange is not None:
            exchange.fail("stale")  # a socket found stale keeps the reason it was found with
        elif self.socket is not None and not self.socket.destroyed:
            self.socket.destroy(reason="stale")
        if count:
            self._count("retries")
            self.retried = True
            self.fresh_connection = True  # the agent creates a new connection instead of taking a free one
        self.reused_socket = False
        self.socket = None
        self._socket_result = None
        self._stage = _NEW
        self.headers_sent = False

    # -- reading (§4.6) -------------------------------------------------------------------------
    def _on_interim(self, info: Interim) -> None:
        status, message, version, raw = info
        events = self._events
        if not events:
            return
        if status == 100 and "continue" in events:
            self.emit("continue")
        if "information" in events:
            self.emit(
                "information",
                {
                    "status_code": status,
                    "status_message": message,
                    "http_version": version,
                    "headers": build_headers(raw),
                    "raw_headers": raw,
                },
            )

    def _read_response(self, exchange: Exchange) -> IncomingMessage:
        parser = exchange.read_head(self._on_interim)
        if exchange.socket.requests > 1:  # served on a connection that served one before
            try:
                self.agent.counters["reused"] += 1
            except (AttributeError, KeyError):  # an Agent-like object without our counters
                pass
        self._t_first_byte = exchange.t_first_byte
        self._t_headers = _now()
        res = IncomingMessage(self, exchange, parser)
        self._res = res
        if parser.upgrade_head is not None:
            return self._on_upgrade(res, exchange)
        if self.should_keep_alive and not parser.keep_alive:
            self.should_keep_alive = False  # Node §6.2
        if self._events and "response" in self._events:
            self.emit("response", res)
        res._deliver()
        if not res.complete and not res.aborted:
            # Handed to the caller with its body still to come: the caller may never read or
            # close it. Hold it weakly (dropping it unread then frees it by reference counting,
            # and its finalizer closes the socket), and let the socket's inactivity timeout run
            # while nobody reads (see IncomingMessage._watch_unread).
            self._res = res._watch_unread(exchange.socket.timeout)
        return res

    @property
    def res(self) -> Optional[IncomingMessage]:
        """The response, once its head arrived and until its body ended (Node's ``req.res``)."""
        res = self._res
        return res() if isinstance(res, weakref.ref) else res

    def _on_upgrade(self, res: IncomingMessage, exchange: Exchange) -> IncomingMessage:
        socket = exchange.socket
        event = "connect" if self.method == "CONNECT" else "upgrade"
        res.complete = True
        self._exchange = None
        self._stage = _RELEASED
        if self._events and event in self._events:
            socket._emit_all("agentRemove")
            socket._http_message = None
            self.emit(event, res, socket, res.upgrade_head or b"")
        else:
            res.socket = None
            socket.destroy(reason="upgrade_unhandled")
        self._emit_close()
        return res

    def _response_complete(self, res: IncomingMessage) -> None:
        """The response was fully parsed: emit res ``'end'``, then pool the socket (req ``'close'``,
        socket ``'free'``) or close it, then res ``'close'`` (Node's order, §4.6 and §8)."""
        exchange, self._exchange = self._exchange, None
        if exchange is None:
            return
        self._stage = _RELEASED
        socket = exchange.socket
        res.socket = None
        reason = exchange.verdict()
        exchange.parser = None  # the response holds it now: an idle pooled socket keeps no buffers
        if socket._release_hook and not socket.destroyed:
            socket._before_release()
        if reason is None:
            self.destroyed = True  # Node: a later req.destroy() cannot touch the pooled socket
        released = False
        try:
            if res._events and "end" in res._events:
                res.emit("end")
            if reason is None:
                self._emit_close()
                released = True
                if not socket.destroyed:  # (a 'close' listener may have destroyed it)
                    socket._emit_all("free")
                res._emit_close()
            else:  # not pooled: the response closes, then the request (Node's order)
                released = True
                if not socket.destroyed:
                    socket.destroy(reason=reason)
                res._emit_close()
                self._emit_close()
        finally:
            # A listener before the socket's release raised (res 'end', req 'close'): release it
            # all the same, or it stays active for good and its slot with it.
            if not released and not socket.destroyed:
                if reason is None:
                    socket._emit_all("free")
                else:
                    socket.destroy(reason=reason)
            self._res = None  # res.req stays; dropping this side frees both without the cycle collector

    def _response_aborted(self, res: IncomingMessage) -> None:
        self._res = None  # (an unread one's weak reference: its callback has nothing left to do)
        self._exchange = None
        self._stage = _RELEASED
        self._emit_close()

    # -- failure and teardown -------------------------------------------------------------------
    def _emit_timeout(self) -> None:
        if self._events and "timeout" in self._events:
            self.emit("timeout")

    def _emit_close(self) -> None:
        if not self._closed:
            self._closed = True
            if self._events and "close" in self._events:
                self.emit("close")

    def _fail(self, exc: Optional[BaseException], res_exc: Optional[BaseException] = None) -> None:
        """Release everything this request holds; emit ``'error'`` (if listened to) and ``'close'``.
        ``res_exc``: what an unfinished response reports instead of ``exc``."""
        if isinstance(exc, GeventAgentError):
            exc.reused_socket = self.reused_socket
        already = self.destroyed
        self.destroyed = True
        waiter = self._waiter
        if waiter is not None:  # another greenlet destroyed us while the owner waits in the queue
            gevent.get_hub().loop.run_callback(waiter.switch, None)
        stage = self._stage
        if stage is _WAITING:
            dequeue = getattr(self.agent, "_dequeue", None)  # (an Agent-like object may have none)
            if dequeue is not None:
                dequeue(self)
        result = self._socket_result
        exchange, self._exchange = self._exchange, None
        reason = "error" if exc is not None else "aborted"
        if exchange is not None:
            exchange.fail(reason, exc)
        elif stage is _WAITING and result is not None and result[0] is not None:
            pending = result[0]
            if not pending.destroyed:
                # handed over but never used: give it back (Node's onSocketNT on a destroyed req)
                pending._emit_all("free")
        elif stage is _ASSIGNED and self.socket is not None and not self.socket.destroyed:
            self.socket.destroy(reason=reason)
        if stage is not _RELEASED:
            self._stage = _RELEASED
        res = self.res
        if res is not None and not res.complete and not res.aborted:
            res._abort(res_exc or exc)
        if not already and isinstance(exc, Exception) and self._events and "error" in self._events:
            self.emit("error", exc)
        self._emit_close()

    def destroy(self, exc: Optional[BaseException] = None) -> "ClientRequest":
        """Abort the request: leave the queue, destroy its socket (unless already back in the pool).
        Idempotent. Emits, as Node does: ``'error'(exc)`` (if listened to), or without ``exc``
        ``'error'`` ECONNRESET ``"socket hang up"`` before the response and, in the middle of its
        body, the response's ``'aborted'`` and ``'error'`` ECONNRESET ``"aborted"``; then ``'close'``."""
        if not self.destroyed:
            if exc is not None:
                self._fail(exc)
            else:
                res = self.res
                if res is not None and not res.complete and not res.aborted:
                    self._fail(None, ConnectionReset("aborted"))
                else:
                    self._fail(socket_hang_up())
        return self

    abort = destroy

    def __enter__(self) -> "ClientRequest":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        """The end of a ``with`` block: a request that was not ended, or that the block left by
        an exception, is destroyed (as :meth:`destroy`: its queue place or socket released,
        nothing more sent; a chunked upload left unfinished is not terminated, so the server
        cannot take it for a whole body). An ended request is left as it is: its response has a
        ``with`` of its own, and one already complete is not touched. (Node has no equivalent.)"""
        if exc is not None or not self._ended:
            self.destroy()

    def set_timeout(self, seconds: Optional[float], callback: Any = None) -> "ClientRequest":
        """Socket inactivity limit for this request, in seconds (``0`` disables)."""
        self.timeout = validate_seconds("timeout", seconds) or 0.0
        if callback is not None:
            self.once("timeout", callback)
        if self.socket is not None and not self.socket.destroyed:
            self.socket.set_timeout(self.timeout)
        return self

    def set_no_delay(self, flag: bool = True) -> None:
        if self.socket is not None:
            self.socket.set_no_delay(flag)

    def set_socket_keep_alive(self, enable: bool = False, initial_delay: float = 0.0) -> None:
        if self.socket is not None:
            self.socket.set_keep_alive(enable, initial_delay)


_now = time.perf_counter


def _gather(url: Any, method: Any, headers: Any, agent: Any, timeout: Any, options: Dict[str, Any]) -> Dict[str, Any]:
    """One options dict from a URL or Node-style options and the keyword arguments.

    Raises:
        InvalidArgTypeError: ``url`` is neither a str nor a mapping; UnknownOptionError: a
        mapping with an unknown option name.
    """
    opts: Dict[str, Any]
    if url is None:
        opts = {}
    elif isinstance(url, str):
        opts = _options.parse_url(url)
    elif isinstance(url, Mapping):
        opts = dict(url)
        _options.check_names(opts, REQUEST_OPTIONS | {"_default_agent"}, "ClientRequest() options")
    else:
        raise InvalidArgTypeError(
            'The "url" argument must be of type str or a mapping. Received type %s' % type(url).__name__
        )
    for key, value in options.items():
        opts[key] = value
    if method is not None:
        opts["method"] = method
    if headers is not None:
        opts["headers"] = headers
    if agent is not None:
        opts["agent"] = agent
    if timeout is not None:
        opts["timeout"] = timeout
    return opts


def request(
    method: str,
    url: Any,
    *,
    headers: Any = None,
    body: Body = None,
    agent: Any = None,
    timeout: Optional[float] = None,
    json: Any = _UNSET,
    params: Any = None,
    **options: Any,
) -> IncomingMessage:
    """Send a request and block the calling greenlet until the response head arrives.

    Args:
        method (str): the HTTP method.
        url (str | Mapping): a URL or Node-style options (see :class:`ClientRequest`).
        headers, agent, timeout, **options: as for :class:`ClientRequest`.
        body: bytes, str, a file object or an iterable of bytes/str (chunked when the length is unknown).
        json: an object sent as the JSON body (``Content-Type: application/json`` unless given),
            as requests' ``json=``; not with ``body``; None sends none (as requests).
        params (Mapping | list of pairs | str | None): appended to the URL's query string
            (percent-encoded), as requests' ``params=``: a None value is left out, as requests does.

    Returns:
        IncomingMessage (read its body with ``read()``, iteration, ``text()`` or ``json()``).
    Raises:
        See :meth:`ClientRequest.end`; UnknownOptionError for an unknown keyword argument (nothing
        sent); InvalidArgValueError for ``json`` together with ``body``; InvalidArgTypeError for a
        ``json`` that cannot be serialized (nothing sent).
    """
    if json is not _UNSET and json is not None:  # (None: no JSON body, as in requests)
        if body is not None:
            from .errors import InvalidArgValueError

            raise InvalidArgValueError("Pass either body= or json=, not both")
        try:
            body = _json.dumps(json, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        except (TypeError, ValueError) as exc:  # not serializable, or a circular reference
            raise InvalidArgTypeError('The "json" argument cannot be sent as JSON: %s' % exc) from exc
        headers = _with_default_header(headers, "Content-Type", "application/json")
    if params:
        url = _with_params(url, params)
    req = ClientRequest(url, method=method, headers=headers, agent=agent, timeout=timeout, **options)
    return req.end(body)


def get(url: Any, **kw: Any) -> IncomingMessage:
    """``request("GET", url, **kw)`` (Node's ``http.get``)."""
    return request("GET", url, **kw)


def _with_default_header(headers: Any, name: str, value: str) -> Any:
    if not headers:
        return {name: value}
    items = list(headers.items()) if isinstance(headers, Mapping) else list(headers)
    if any(str(n).lower() == name.lower() for n, _ in items):
        return headers
    return items + [(name, value)]


def _header_pairs(headers: Any) -> Any:
    """The ``(name, value)`` pairs of headers given as a list (or another iterable) of pairs.

    Raises:
        InvalidArgTypeError: a str or bytes (a header block), or items that are not pairs.
    """
    if isinstance(headers, (str, bytes, bytearray)) or not hasattr(headers, "__iter__"):
        raise InvalidArgTypeError(
            'The "options.headers" property must be a mapping or a list of (name, value) pairs. '
            "Received type %s (%r)" % (type(headers).__name__, headers)
        )
    for item in headers:
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise InvalidArgTypeError(
                'The "options.headers" property must be a mapping or a list of (name, value) pairs. '
                "Received an item %r" % (item,)
            )
        yield item


def _basic_credentials(auth: Any) -> str:
    """Base64 of ``user:password`` for ``Authorization: Basic`` (Node's ``auth``: a
    ``"user:password"`` string; also bytes, or requests' ``(user, password)`` pair).

    Raises:
        InvalidArgTypeError: anything else (before anything is sent).
    """
    if isinstance(auth, (tuple, list)) and len(auth) == 2 and all(isinstance(x, (str, bytes)) for x in auth):
        user, password = (x.encode("utf-8") if isinstance(x, str) else x for x in auth)
        auth = user + b":" + password
    elif isinstance(auth, str):
        auth = auth.encode("utf-8")
    elif not isinstance(auth, (bytes, bytearray)):
        raise InvalidArgTypeError(
            'The "options.auth" property must be a "user:password" string or a (user, password) pair. '
            "Received type %s" % type(auth).__name__  # (not the value: it may be a secret)
        )
    return base64.b64encode(auth).decode("ascii")


def _without_none(params: Any) -> Any:
    """``params`` without its None values (requests leaves them out; urlencode sends "None")."""
    if isinstance(params, Mapping):
        pairs: Any = list(params.items())
    elif isinstance(params, (list, tuple)):
        pairs = params
    else:
        return params  # (urlencode says what is wrong with it)
    kept = []
    for item in pairs:
        if not isinstance(item, (list, tuple)) or len(item) != 2:
            return params
        name, value = item
        if value is None:
            continue
        if isinstance(value, (list, tuple)):
            value = [v for v in value if v is not None]
        kept.append((name, value))
    return kept


def _with_params(url: Any, params: Any) -> Any:
    try:  # (urlencode refuses what is neither a mapping nor a sequence of pairs, bytes included)
        query = params if isinstance(params, str) else urlencode(_without_none(params), doseq=True)
    except (TypeError, ValueError) as exc:
        raise InvalidArgTypeError(
            'The "params" argument must be a mapping, a list of (name, value) pairs or a str. '
            "Received type %s (%r)" % (type(params).__name__, params)
        ) from exc
    if not query:
        return url
    if isinstance(url, Mapping):
        url = dict(url)
        path = url.get("path") or "/"
        url["path"] = path + ("&" if "?" in path else "?") + query
        return url
    if not isinstance(url, str):
        return url
    base, sep, fragment = url.partition("#")
    joined = base + ("&" if "?" in base else "?") + query
    return joined + sep + fragment
