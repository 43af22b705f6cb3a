"""``ClientRequest``, ``request()`` and ``get()``: Node's ``http.ClientRequest`` as blocking calls.

``request()``/``end()`` block the calling greenlet (never the hub) until the response head has
arrived. The flow ports ``lib/_http_client.js``: agent selection (§4.1), ``on_socket`` (§4.5), the
keep-alive decision (§6.1, §6.2) and the end of an exchange (§4.6). Every failure path releases the
request's queue slot and socket in ``finally``-style handlers that also run for ``gevent.Timeout``
and ``GreenletExit``.
"""

from __future__ import annotations

import base64
import functools
import io
import math
import os
import re
import sys
import time
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional, Tuple, Union
from urllib.parse import unquote, urlsplit

import gevent
from gevent.hub import Waiter

from ._http import MAX_HEADER_SIZE, ResponseParser, check_header_name, check_header_value, encode_head
from .agent import IDEMPOTENT_METHODS, validate_retry, validate_seconds
from .errors import (
    ConnectionReset,
    GeventAgentError,
    InvalidArgTypeError,
    InvalidProtocolError,
    RequestTimeout,
    StaleSocket,
    UnescapedCharactersError,
    socket_hang_up,
)
from .events import EventEmitter
from .incoming import IncomingMessage
from .socket import Socket

__all__ = ["ClientRequest", "request", "get"]

_INVALID_PATH = re.compile(r"[^\u0021-\u00ff]")
_INVALID_HOST = re.compile(r"[^\t\x20-\x7e\x80-\xff]")
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
    )
)
_METHODS: Dict[str, str] = {}
_UNSET = object()
_CLOSE_TOKEN = re.compile(r"(?:^|\W)close(?:$|\W)", re.I)
#: Methods Node sends without a body framing header when none is given.
_NO_DEFAULT_BODY = frozenset(("GET", "HEAD", "DELETE", "OPTIONS", "TRACE", "CONNECT"))
_CHUNK = 64 * 1024
#: First read of a response: most heads (and small bodies) fit; larger bodies are read 64 KiB at a time.
HEAD_READ_SIZE = 16 * 1024
#: Seconds to wait for ``100 Continue`` before sending the body anyway (as curl does).
EXPECT_CONTINUE_SECONDS = 1.0

Body = Union[None, bytes, bytearray, memoryview, str, Iterable[Any], io.IOBase]


def _default_agent(protocol: Optional[str]) -> Any:
    pkg = sys.modules["geventagent"]
    if protocol == "https:" and getattr(pkg, "https_global_agent", None) is not None:
        return pkg.https_global_agent
    return pkg.global_agent


def _url_template(url: str) -> Tuple[str, str, Optional[int], str, Optional[str]]:
    """``(protocol, hostname, port or None, path, auth or None)`` of a URL, validated once and cached."""
    template = _TEMPLATES.get(url)
    if template is None:
        opts = _parse_url(url)
        path = opts["path"]
        if _INVALID_PATH.search(path):
            raise UnescapedCharactersError("Request path contains unescaped characters")
        template = (opts["protocol"], opts["hostname"], opts.get("port"), path, opts.get("auth"))
        if len(_TEMPLATES) >= 2048:
            _TEMPLATES.clear()
        _TEMPLATES[url] = template
    return template


_TEMPLATES: Dict[str, Tuple[str, str, Optional[int], str, Optional[str]]] = {}
#: Encoded request heads of requests whose only header is the Host header we set.
_HEADS: Dict[Tuple[Any, ...], bytes] = {}


def _options_from_url(url: str) -> Dict[str, Any]:
    """Node-style options from a URL (cached: services call the same URLs again and again)."""
    return _parse_url(url).copy()


@functools.lru_cache(maxsize=2048)
def _parse_url(url: str) -> Dict[str, Any]:
    parts = urlsplit(url)
    if not parts.scheme or not parts.netloc:
        from .errors import InvalidArgValueError

        raise InvalidArgValueError("Invalid URL: %r" % (url,), code="ERR_INVALID_URL")
    opts: Dict[str, Any] = {"protocol": parts.scheme.lower() + ":", "hostname": parts.hostname or "localhost"}
    try:
        port = parts.port
    except ValueError as exc:
        from .errors import InvalidArgValueError

        raise InvalidArgValueError("Invalid URL: %r" % (url,), code="ERR_INVALID_URL") from exc
    if port:
        opts["port"] = port
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    opts["path"] = path
    if parts.username is not None:
        auth = unquote(parts.username)
        if parts.password is not None:
            auth += ":" + unquote(parts.password)
        opts["auth"] = auth
    return opts


class ClientRequest(EventEmitter):
    """An outgoing request. Sends nothing until :meth:`write`, :meth:`end` or :meth:`flush_headers`.

    Args:
        url (str | Mapping | None): a URL, or Node-style options in snake_case (``protocol``,
            ``hostname``, ``host``, ``port``, ``path``, ``method``, ``headers``, ``agent``,
            ``socket_path``, ``local_address``, ``family``, ``auth``, ``timeout``, ``set_host``,
            ``default_port``, ``max_header_size``); keyword arguments override it.
        method (str): default ``"GET"``; upper-cased; must be an HTTP token.
        headers (Mapping | list of pairs | None): request headers; validated here.
        agent (Agent | False | None): None = the global agent for the scheme (read at call time);
            False = a one-shot ``Agent()`` with default options.
        timeout (float | None): socket inactivity limit in seconds (else the agent's).

    Raises (at construction, nothing sent):
        InvalidArgTypeError (``ERR_INVALID_ARG_TYPE``): bad ``agent``, ``url`` or option types.
        InvalidProtocolError (``ERR_INVALID_PROTOCOL``): a scheme the agent does not serve.
        InvalidHttpTokenError / InvalidCharError: bad method or header.
        UnescapedCharactersError: a path with spaces or control characters.

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
        "max_header_size",
        "method",
        "path",
        "_headers",
        "_head_sent",
        "should_keep_alive",
        "_connect_options",
        "retry",
        "reused_socket",
        "retried",
        "destroyed",
        "finished",
        "socket",
        "res",
        "_fresh",
        "_stale_check_at_write",
        "_dispatched",
        "_chunked",
        "_ended",
        "_closed",
        "_released",
        "_socket_result",
        "_waiter",
        "_queue_name",
        "_queue_seq",
        "_agent_options",
        "_parser",
        "_t_dispatch",
        "_t_socket",
        "_t_connected",
        "_t_sent",
        "_t_first_byte",
        "_t_headers",
    )
    socket: Optional[Socket]
    res: Optional[IncomingMessage]
    _socket_result: Optional[Tuple[Optional[Socket], Optional[BaseException]]]
    _waiter: Optional[Waiter]
    _queue_name: Optional[str]
    _agent_options: Optional[Dict[str, Any]]
    _parser: Optional[ResponseParser]

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
        self.socket = self.res = None
        self._fresh = self._stale_check_at_write = self._dispatched = self._chunked = False
        self._ended = self._closed = self._released = False
        self._socket_result = self._waiter = self._queue_name = self._agent_options = self._parser = None
        self._queue_seq = 0
        self._t_dispatch = self._t_socket = self._t_connected = 0.0
        self._t_sent = self._t_first_byte = self._t_headers = 0.0
        if not options and type(url) is str:
            # The common case, a URL and nothing else: its parts come parsed and validated from a
            # per-URL cache, and no options dict is built.
            template = _url_template(url)
            protocol, host, port, path, auth = template
            default_agent = _default_agent(protocol)
            opts: Any = None
            set_host = True
            default_port = None
            max_header_size = None
            retry = _UNSET
        else:
            opts = self._gather(url, method, headers, agent, timeout, options)
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
            if _INVALID_PATH.search(path):
                raise UnescapedCharactersError("Request path contains unescaped characters")
            auth = opts.get("auth")
            set_host = opts.get("set_host", True)
            default_port = opts.get("default_port")
            max_header_size = opts.get("max_header_size")
            retry = opts.get("retry", _UNSET)

        if agent is False:
            agent = type(default_agent)()
        elif agent is None:
            agent = default_agent
        elif isinstance(agent, bool) or not callable(getattr(agent, "add_request", None)):
            raise InvalidArgTypeError(
                'The "options.agent" property must be one of Agent-like Object, None, or False. '
                "Received type %s (%r)" % (type(agent).__name__, agent)
            )
        self.agent = agent
        protocol = protocol or default_agent.protocol
        expected = getattr(agent, "protocol", None) or default_agent.protocol
        if protocol != expected:
            raise InvalidProtocolError('Protocol "%s" not supported. Expected "%s"' % (protocol, expected))
        self.protocol = protocol

        default_port = default_port or getattr(agent, "default_port", None) or 80
        port = port or default_port or 80
        try:
            port = int(port)
        except (TypeError, ValueError) as exc:
            raise InvalidArgTypeError('The "options.port" property must be a number. Received %r' % (port,)) from exc
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        self.host = host
        self.port = port
        self.timeout = None if timeout is None else validate_seconds("timeout", timeout)
        self.max_header_size = max_header_size or MAX_HEADER_SIZE

        method = method or "GET"
        if not isinstance(method, str):
            raise InvalidArgTypeError('The "method" argument must be of type string. Received %r' % (method,))
        upper = _METHODS.get(method)
        if upper is None:
            upper = check_header_name(method).upper()
            if len(_METHODS) < 64:
                _METHODS[method] = upper
        self.method = upper
        self.path = path

        self._headers: Dict[str, Tuple[str, Any]] = {}
        self._head_sent = False
        if headers:
            items = headers.items() if isinstance(headers, Mapping) else headers
            for name, value in items:
                self.set_header(name, value)
        if set_host and "host" not in self._headers:
            host_header = "[%s]" % host if ":" in host else host
            if port != default_port:
                host_header += ":%d" % port
            if _INVALID_HOST.search(host_header):
                raise UnescapedCharactersError("Invalid host: %r" % (host,))
            self._headers["host"] = ("Host", host_header)
        if auth and "authorization" not in self._headers:
            token = base64.b64encode(auth.encode("utf-8") if isinstance(auth, str) else auth).decode("ascii")
            self.set_header("Authorization", "Basic " + token)

        # §4.1 step 7: a keep_alive=False agent with unlimited max_sockets sends Connection: close.
        self.should_keep_alive = not (
            not getattr(agent, "keep_alive", False) and getattr(agent, "max_sockets", math.inf) == math.inf
        )

        if opts is None:
            conn: Dict[str, Any] = {"host": host, "port": port}
            if timeout is not None:
                conn["timeout"] = timeout
        else:
            conn = {key: value for key, value in opts.items() if key not in _NOT_CONNECT_OPTIONS}
            conn["host"] = host
            conn["port"] = port
        self._connect_options = conn

        self.retry = getattr(agent, "retry", "idempotent") if retry is _UNSET else validate_retry(retry)

    @staticmethod
    def _gather(
        url: Any, method: Any, headers: Any, agent: Any, timeout: Any, options: Dict[str, Any]
    ) -> Dict[str, Any]:
        """One options dict from a URL or Node-style options and the keyword arguments."""
        opts: Dict[str, Any]
        if url is None:
            opts = {}
        elif isinstance(url, str):
            opts = _options_from_url(url)
        elif isinstance(url, Mapping):
            opts = dict(url)
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

    def __repr__(self) -> str:
        return "<ClientRequest %s %s%s>" % (self.method, self.host, self.path)

    def timings(self) -> Dict[str, float]:
        """Phase durations in seconds (``time.perf_counter``): ``queue`` (waiting for a socket),
        ``connect`` (TCP + TLS; 0 on a reused socket), ``send`` (writing the request),
        ``ttfb`` (request written to the first response byte), ``headers`` (to the end of the head).
        Phases not reached are 0."""

        def span(a: float, b: float) -> float:
            return b - a if a and b else 0.0

        return {
            "queue": span(self._t_dispatch, self._t_socket),
            "connect": span(self._t_socket, self._t_connected),
            "send": span(self._t_connected, self._t_sent),
            "ttfb": span(self._t_sent, self._t_first_byte),
            "headers": span(self._t_dispatch, self._t_headers),
        }

    # -- headers --------------------------------------------------------------------------------
    def set_header(self, name: str, value: Any) -> "ClientRequest":
        """Set a header (a list value sends one line per item).

        Raises:
            InvalidHttpTokenError, InvalidCharError; GeventAgentError ``ERR_HTTP_HEADERS_SENT``.
        """
        if self._head_sent:
            raise GeventAgentError("Cannot set headers after they are sent to the client", code="ERR_HTTP_HEADERS_SENT")
        check_header_name(name)
        if isinstance(value, (list, tuple)):
            value = [check_header_value(name, v) for v in value]
        else:
            value = check_header_value(name, value)
        self._headers[name.lower()] = (name, value)
        return self

    def get_header(self, name: str) -> Any:
        """The value set for ``name`` (case-insensitive), or None."""
        item = self._headers.get(name.lower())
        return item[1] if item else None

    def has_header(self, name: str) -> bool:
        return name.lower() in self._headers

    def remove_header(self, name: str) -> None:
        """Remove a header before the head is sent."""
        if self._head_sent:
            raise GeventAgentError("Cannot remove headers after they are sent", code="ERR_HTTP_HEADERS_SENT")
        self._headers.pop(name.lower(), None)

    def get_headers(self) -> Dict[str, Any]:
        """``{lower-case name: value}`` of the headers set so far."""
        return {key: value for key, (_, value) in self._headers.items()}

    def get_header_names(self) -> List[str]:
        return list(self._headers)

    def _head_pairs(self, length: Optional[int], chunked: bool) -> List[Tuple[str, str]]:
        pairs: List[Tuple[str, str]] = []
        headers = self._headers
        for name, value in headers.values():
            if isinstance(value, list):
                pairs.extend((name, v) for v in value)
            else:
                pairs.append((name, value))
        if "connection" not in headers:
            pairs.append(("Connection", "keep-alive" if self.should_keep_alive else "close"))
        elif _CLOSE_TOKEN.search(str(headers["connection"][1])):
            # The caller asked the server to close: never pool this socket, whatever the reply says
            # (Node keeps shouldKeepAlive and lets the reply decide; a server may close anyway).
            self.should_keep_alive = False
        if "content-length" not in headers and "transfer-encoding" not in headers:
            if chunked:
                pairs.append(("Transfer-Encoding", "chunked"))
            elif length is not None and (length > 0 or self.method not in _NO_DEFAULT_BODY):
                pairs.append(("Content-Length", str(length)))
        return pairs

    # -- the socket (§4.5) ----------------------------------------------------------------------
    def on_socket(self, socket: Optional[Socket], err: Optional[BaseException] = None) -> None:
        """Called by the agent with the socket for this request (or an error). Never blocks; wakes
        the waiting greenlet from the hub (Node defers ``onSocket`` to the next tick)."""
        if self.destroyed and err is None and socket is not None and not socket.destroyed:
            # Node onSocketNT: a socket handed to a destroyed request goes straight back.
            gevent.get_hub().loop.run_callback(socket.emit, "free")
            return
        self._socket_result = (socket, err)
        waiter = self._waiter
        if waiter is not None:
            gevent.get_hub().loop.run_callback(waiter.switch, None)

    def _dispatch(self) -> None:
        if self._dispatched:
            return
        self._dispatched = True
        self.agent.add_request(self, self._connect_options)

    def _acquire_socket(self) -> Socket:
        self._t_dispatch = _now()
        self._dispatch()
        if self._socket_result is None:
            waiter = self._waiter = Waiter()
            try:
                waiter.get()
            finally:
                self._waiter = None
            if self._socket_result is None:  # destroyed by another greenlet while queued
                raise socket_hang_up()
        socket, err = self._socket_result
        if err is not None:
            raise err
        assert socket is not None
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
        socket.requests += 1
        return socket

    # -- writing --------------------------------------------------------------------------------
    def _send_head(self, length: Optional[int], chunked: bool, first: bytes = b"", whole: bool = False) -> None:
        """Acquire a socket and write the head (and ``first`` body bytes). ``whole``: that is the
        entire request, so the write may be corked with other greenlets' (``Socket.send_corked``)."""
        socket = self._acquire_socket()
        headers = self._headers
        if len(headers) == 1 and "host" in headers:
            # Only the Host header we set: the head is a function of a few values; cache it.
            key = (self.method, self.path, headers["host"][1], self.should_keep_alive, length, chunked)
            head = _HEADS.get(key)
            if head is None:
                head = encode_head(self.method, self.path, self._head_pairs(length, chunked))
                if len(_HEADS) >= 4096:
                    _HEADS.clear()
                _HEADS[key] = head
        else:
            head = encode_head(self.method, self.path, self._head_pairs(length, chunked))
        self._head_sent = True
        self._chunked = chunked
        if whole:
            socket.send_corked(head + first if first else head)
        else:
            socket.send(head + first if first else head)

    def flush_headers(self) -> None:
        """Send the head now (with ``Transfer-Encoding: chunked`` unless a length was set)."""
        if not self._head_sent:
            self._guard(self._send_head, None, self._wants_chunked())

    def _wants_chunked(self) -> bool:
        headers = self._headers
        if "content-length" in headers:
            return False
        te = headers.get("transfer-encoding")
        if te is not None:
            return "chunked" in str(te[1]).lower()
        return True

    def write(self, chunk: Union[bytes, str]) -> bool:
        """Send a body chunk (the head first, chunked unless ``Content-Length`` was set). Blocks
        until written. Returns True."""
        if self._ended:
            raise GeventAgentError("write after end", code="ERR_STREAM_WRITE_AFTER_END")
        data = chunk.encode("utf-8") if isinstance(chunk, str) else bytes(chunk)
        self._guard(self._write, data)
        return True

    def _write(self, data: bytes) -> None:
        if not self._head_sent:
            self._send_head(None, self._wants_chunked())
        if data:
            assert self.socket is not None
            self.socket.send(b"%x\r\n%s\r\n" % (len(data), data) if self._chunked else data)

    def end(self, data: Body = None) -> IncomingMessage:
        """Finish the request (optionally with a last body part) and block until the response head.

        ``data`` may be bytes, str, a file object or an iterable of bytes/str (sent chunked when
        its length is unknown).

        Returns:
            IncomingMessage: its body is streamed by ``read()``/iteration.
        Raises:
            ConnectionRefused, ConnectionReset (``"socket hang up"``), RequestTimeout (``ETIMEDOUT``,
            after ``'timeout'``), HttpParseError (``HPE_*``), NetworkError. The request is destroyed
            and its socket never pooled.
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
        if isinstance(exc, GeventAgentError):
            if isinstance(exc, RequestTimeout):
                self._emit_timeout()
            self._fail(exc)
        elif isinstance(exc, Exception):
            self._fail(exc)
        else:
            self._fail(None)

    def _end(self, data: Body) -> IncomingMessage:
        if self.destroyed:
            raise socket_hang_up()
        if self._head_sent:
            body, _ = _prepare_body(data)
            for part in body:
                self._write(part)
            if self._chunked:
                self.socket.send(b"0\r\n\r\n")  # type: ignore[union-attr]
            return self._finish_and_read()
        replay = _replayable(data)
        self._stale_check_at_write = True
        try:
            try:
                return self._exchange(data)
            except StaleSocket:
                # Nothing was written: go again on a new connection, whatever the method (as if
                # the agent's peek had found the socket stale before handing it over).
                if self.destroyed:
                    raise
                self._reset_for_retry(count=False)
                counters = getattr(self.agent, "counters", None)
                if counters is not None:
                    counters["redispatched"] = counters.get("redispatched", 0) + 1
                return self._exchange(data)
        except ConnectionReset as exc:
            if not self._may_retry(exc, replay):
                raise
            self._reset_for_retry()
            return self._exchange(data if replay is True else replay())

    def _exchange(self, data: Body) -> IncomingMessage:
        body, length = _prepare_body(data)
        headers = self._headers
        chunked = length is None and self._wants_chunked()
        expect = headers.get("expect")
        if expect is not None and str(expect[1]).lower() == "100-continue" and length != 0:
            self._send_head(length, chunked)
            if not self._await_continue():
                return self._read_response()
            self._send_body(body, chunked)
        elif isinstance(body, list) and len(body) <= 1 and (not body or len(body[0]) <= _CHUNK):
            last = b"0\r\n\r\n" if chunked else b""
            self._send_head(length, chunked, _frame(body[0], chunked) + last if body else last, whole=True)
        else:
            self._send_head(length, chunked)
            self._send_body(body, chunked)
        return self._finish_and_read()

    def _finish_and_read(self) -> IncomingMessage:
        self._t_sent = _now()
        self.finished = True
        if self._events and "finish" in self._events:
            self.emit("finish")
        return self._read_response()

    # -- safe retry on a stale reused socket (a difference from Node) -----------------------------
    def _may_retry(self, exc: BaseException, replay: Any) -> bool:
        """Retry once, on a fresh connection, only when: the socket was reused, no byte of the
        response arrived, the request is not destroyed, its body can be replayed, and the policy
        allows the method."""
        if not self.reused_socket or self.retried or self.destroyed or replay is None:
            return False
        parser = self._parser
        if parser is not None and parser.bytes_received:
            return False
        policy = self.retry
        if policy == "always":
            return True
        return policy == "idempotent" and self.method in IDEMPOTENT_METHODS

    def _reset_for_retry(self, count: bool = True) -> None:
        """Drop the socket and start over on a new connection. ``count``: this is a retry of a
        request that may have been written (counted, and allowed once); else nothing was written."""
        socket = self.socket
        if socket is not None and not socket.destroyed:
            if count or not socket.close_reason:  # a stale socket found before the write keeps its reason
                socket.close_reason = "stale"
            socket.destroy()
        if count:
            counters = getattr(self.agent, "counters", None)
            if counters is not None:
                counters["retries"] = counters.get("retries", 0) + 1
            self.retried = True
        self.reused_socket = False
        self.socket = None
        self._socket_result = None
        self._dispatched = False
        self._head_sent = False
        self._parser = None
        self._fresh = True  # the agent creates a new connection instead of taking a free one

    def _send_body(self, body: Iterable[bytes], chunked: bool) -> None:
        socket = self.socket
        assert socket is not None
        for part in body:
            if part:
                socket.send(_frame(part, chunked))
        if chunked:
            socket.send(b"0\r\n\r\n")

    def _await_continue(self) -> bool:
        """After an ``Expect: 100-continue`` head: True to send the body (100 arrived, or nothing
        within ``EXPECT_CONTINUE_SECONDS``); False if the final response came first."""
        socket = self.socket
        assert socket is not None
        parser = self._parser = ResponseParser(self.method, self.max_header_size)
        previous = socket.timeout
        socket.set_timeout(min(EXPECT_CONTINUE_SECONDS, previous or EXPECT_CONTINUE_SECONDS))
        try:
            while not parser.informational and not parser.headers_complete:
                data = socket.recv(65536)
                if not data:
                    raise socket_hang_up()
                parser.feed(data)
        except RequestTimeout:
            return True
        finally:
            if not socket.destroyed:
                socket.set_timeout(previous)
        if parser.headers_complete:
            self.should_keep_alive = False  # the body was never sent: do not reuse
            return False
        return True

    # -- reading (§4.6) -------------------------------------------------------------------------
    def _read_response(self) -> IncomingMessage:
        socket = self.socket
        assert socket is not None
        parser = self._parser
        if parser is None:
            parser = self._parser = ResponseParser(self.method, self.max_header_size)
        seen = 0
        while True:
            informational = parser.informational
            while seen < len(informational):
                status, message, version, raw = informational[seen]
                seen += 1
                if status == 100 and self._events and "continue" in self._events:
                    self.emit("continue")
                if self._events and "information" in self._events:
                    from .incoming import build_headers

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
            if parser.headers_complete:
                break
            data = socket.recv(HEAD_READ_SIZE)
            if not data:
                raise socket_hang_up()
            if not self._t_first_byte:
                self._t_first_byte = _now()
            parser.feed(data)
        self._t_headers = _now()
        res = IncomingMessage(self, parser, socket)
        self.res = res
        upgrade = parser.upgrade_head is not None
        if self.should_keep_alive and not parser.keep_alive and not upgrade:
            self.should_keep_alive = False
        if upgrade:
            return self._on_upgrade(res, socket)
        if self._events and "response" in self._events:
            self.emit("response", res)
        res._deliver()
        return res

    def _on_upgrade(self, res: IncomingMessage, socket: Socket) -> IncomingMessage:
        event = "connect" if self.method == "CONNECT" else "upgrade"
        if self._events and event in self._events:
            socket.emit("agentRemove")
            socket._http_message = None
            res.socket = socket
            res.complete = True
            self.emit(event, res, socket, res.upgrade_head or b"")
        else:
            res.complete = True
            res.socket = None
            socket.close_reason = "upgrade_unhandled"
            socket.destroy()
        self._emit_close()
        return res

    def _response_on_end(self, res: IncomingMessage) -> None:
        """The response was fully parsed: emit res ``'end'``, then pool the socket (req ``'close'``,
        socket ``'free'``) or close it, then res ``'close'`` (Node's order, §4.6 and §8)."""
        if self._released:
            return
        self._released = True
        socket = self.socket
        parser = self._parser
        res.socket = None
        reusable = (
            socket is not None
            and not socket.destroyed
            and self.should_keep_alive
            and parser is not None
            and parser.keep_alive
            and not parser.stray
            and self.finished
            and socket._agent is not None
        )
        if socket is not None and not socket.destroyed:
            socket._before_release()
        if reusable:
            self.destroyed = True  # Node: a later req.destroy() cannot touch the pooled socket
        if res._events and "end" in res._events:
            res.emit("end")
        if socket is not None and not socket.destroyed:
            if reusable:
                self._emit_close()
                socket.emit("free")
            else:
                if socket.close_reason is None:
                    if parser is not None and parser.stray:
                        socket.close_reason = "unexpected_data"
                    elif socket._agent is None:
                        socket.close_reason = "agent_remove"
                    elif not self.should_keep_alive or not (parser and parser.keep_alive):
                        socket.close_reason = "server_close" if self.agent.keep_alive else "not_keep_alive"
                    else:
                        socket.close_reason = "not_reusable"
                socket.destroy()
        self._emit_close()
        res._emit_close()
        self.res = None  # res.req stays; dropping this side frees both without the cycle collector

    # -- failure and teardown -------------------------------------------------------------------
    def _emit_timeout(self) -> None:
        if self._events and "timeout" in self._events:
            self.emit("timeout")

    def _emit_close(self) -> None:
        if not self._closed:
            self._closed = True
            if self._events and "close" in self._events:
                self.emit("close")

    def _fail(self, exc: Optional[BaseException]) -> None:
        """Release everything this request holds; emit ``'error'`` (if listened to) and ``'close'``."""
        if isinstance(exc, GeventAgentError):
            exc.reused_socket = self.reused_socket
        already = self.destroyed
        self.destroyed = True
        agent = self.agent
        waiter = self._waiter
        if waiter is not None:  # another greenlet destroyed us while the owner waits in the queue
            gevent.get_hub().loop.run_callback(waiter.switch, None)
        if self._queue_name is not None:
            agent._dequeue(self)
        result = self._socket_result
        socket = self.socket
        if socket is None and result is not None and result[0] is not None:
            pending = result[0]
            if not pending.destroyed:
                # handed over but never used: give it back (Node's onSocketNT on a destroyed req)
                pending.emit("free")
        elif socket is not None and not socket.destroyed and not self._released:
            socket.close_reason = socket.close_reason or ("error" if exc is not None else "aborted")
            socket.destroy()
        if self.res is not None and not self.res.complete and not self.res.aborted:
            self.res._abort(exc)
        if not already and isinstance(exc, Exception) and self._events and "error" in self._events:
            self.emit("error", exc)
        self._emit_close()

    def destroy(self, exc: Optional[BaseException] = None) -> "ClientRequest":
        """Abort the request: leave the queue, destroy its socket (unless already back in the pool).
        Idempotent. Emits ``'error'(exc)`` if given and listened to, then ``'close'``."""
        if not self.destroyed:
            self._fail(exc)
        return self

    abort = destroy

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


def _frame(data: bytes, chunked: bool) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data) if chunked and data else data


def _prepare_body(data: Body) -> Tuple[Iterable[bytes], Optional[int]]:
    """``(parts, length)``: length None means unknown (send chunked)."""
    if data is None:
        return [], 0
    if isinstance(data, str):
        data = data.encode("utf-8")
    if isinstance(data, (bytes, bytearray, memoryview)):
        data = bytes(data)
        return ([data] if data else []), len(data)
    read = getattr(data, "read", None)
    if callable(read):
        length = None
        try:
            fileno = data.fileno()  # type: ignore[union-attr]
            stat = os.fstat(fileno)
            import stat as _stat

            if _stat.S_ISREG(stat.st_mode):
                length = stat.st_size - data.tell()  # type: ignore[union-attr]
        except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
            length = None
        return _read_blocks(read), length
    if isinstance(data, Mapping) or not hasattr(data, "__iter__"):
        raise InvalidArgTypeError(
            'The "body" argument must be bytes, str, a file object or an iterable of bytes. Received type %s'
            % type(data).__name__
        )
    return _iter_parts(data), None


def _replayable(data: Body) -> Any:
    """True if ``data`` can simply be sent again; for a seekable file, a function that rewinds it
    and returns it; None if it cannot be replayed."""
    if data is None or isinstance(data, (bytes, bytearray, memoryview, str)):
        return True
    seek = getattr(data, "seek", None)
    tell = getattr(data, "tell", None)
    if callable(getattr(data, "read", None)) and callable(seek) and callable(tell):
        try:
            if data.seekable():  # type: ignore[union-attr]
                position = tell()

                def again() -> Body:
                    seek(position)
                    return data

                return again
        except (AttributeError, OSError, ValueError):
            return None
    return None


def _read_blocks(read: Any) -> Iterator[bytes]:
    while True:
        block = read(_CHUNK)
        if not block:
            return
        yield block.encode("utf-8") if isinstance(block, str) else bytes(block)


def _iter_parts(data: Iterable[Any]) -> Iterator[bytes]:
    for part in data:
        if isinstance(part, str):
            part = part.encode("utf-8")
        elif not isinstance(part, (bytes, bytearray, memoryview)):
            raise InvalidArgTypeError("body iterables must yield bytes or str, not %s" % type(part).__name__)
        if part:
            yield bytes(part)


def request(
    method: str,
    url: Any,
    *,
    headers: Any = None,
    body: Body = None,
    agent: Any = None,
    timeout: Optional[float] = None,
    **options: Any,
) -> IncomingMessage:
    """Send a request and block the calling greenlet until the response head arrives.

    Args:
        method (str): the HTTP method.
        url (str | Mapping): a URL or Node-style options (see :class:`ClientRequest`).
        headers, agent, timeout, **options: as for :class:`ClientRequest`.
        body: bytes, str, a file object or an iterable of bytes/str (chunked when the length is unknown).

    Returns:
        IncomingMessage (read its body with ``read()``, iteration, ``text()`` or ``json()``).
    Raises:
        See :meth:`ClientRequest.end`.
    """
    req = ClientRequest(url, method=method, headers=headers, agent=agent, timeout=timeout, **options)
    return req.end(body)


def get(url: Any, **kw: Any) -> IncomingMessage:
    """``request("GET", url, **kw)`` (Node's ``http.get``)."""
    return request("GET", url, **kw)
