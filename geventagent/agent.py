"""``Agent``: Node's ``http.Agent`` pool (``lib/_http_agent.js``, v20) on gevent.

Three maps and one counter, as in Node: ``requests`` (waiting requests per origin), ``sockets``
(sockets assigned to requests), ``free_sockets`` (idle, pooled sockets) and ``total_socket_count``.
Sockets leave the agent in one place: their ``'close'`` or ``'agentRemove'`` listener.
The bookkeeping never yields: connecting, reading and writing happen in the requesting greenlet.

Deliberate differences from Node (README, "Differences from Node"): ``max_sockets`` and
``max_total_sockets`` are hard caps on every path; waiting requests of all origins are served in
arrival order; options are validated; ``free_socket_timeout`` closes idle sockets; the server's
``Keep-Alive: timeout=N`` hint is honoured without an agent ``timeout``.
"""

from __future__ import annotations

import itertools
import math
import re
import sys
import time
from collections import deque
from typing import Any, Callable, Deque, Dict, List, Optional

from gevent.monkey import get_original

from .errors import (
    InvalidArgTypeError,
    InvalidArgValueError,
    OutOfRangeError,
    ThreadError,
)
from .events import EventEmitter
from .socket import Socket, fork_generation

__all__ = ["Agent"]

_real_get_ident = get_original("_thread", "get_ident")
_HINT_TIMEOUT = re.compile(r"(?:^|[\s,;])timeout=(\d+)", re.I)
_HINT_MAX = re.compile(r"(?:^|[\s,;])max=(\d+)", re.I)
#: Methods retried on a stale reused socket by default (RFC 9110 idempotent methods, as urllib3).
IDEMPOTENT_METHODS = frozenset(("GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"))
RETRY_POLICIES = ("idempotent", "always", False)
_queue_seq = itertools.count()
_INF = math.inf


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def validate_cap(name: str, value: Any, minimum: int) -> float:
    """A socket cap: a number >= ``minimum``; ``None`` or ``math.inf`` mean unlimited.

    Raises:
        InvalidArgTypeError: not a number (``ERR_INVALID_ARG_TYPE``).
        OutOfRangeError: NaN or below ``minimum`` (``ERR_OUT_OF_RANGE``).
    """
    if value is None:
        return _INF
    if not _is_number(value):
        raise InvalidArgTypeError(
            'The "%s" argument must be of type number. Received type %s (%r)' % (name, type(value).__name__, value)
        )
    if value != value or value < minimum:
        raise OutOfRangeError(
            'The value of "%s" is out of range. It must be >= %d. Received %r' % (name, minimum, value)
        )
    return value


def validate_retry(value: Any) -> Any:
    """A retry policy: ``"idempotent"``, ``"always"`` or False (None means False).

    Raises:
        InvalidArgValueError: anything else (``ERR_INVALID_ARG_VALUE``).
    """
    if value is None:
        return False
    if value is True:
        return "idempotent"
    if value not in RETRY_POLICIES:
        raise InvalidArgValueError(
            "The argument 'retry' must be one of: 'idempotent', 'always', False. Received %r" % (value,)
        )
    return value


def validate_seconds(name: str, value: Any, allow_inf: bool = False) -> Optional[float]:
    """A duration in seconds: ``None`` or a non-negative number (finite unless ``allow_inf``).

    Raises:
        InvalidArgTypeError / OutOfRangeError, as Node's ``validateNumber`` for ``msecs``.
    """
    if value is None:
        return None
    if not _is_number(value):
        raise InvalidArgTypeError(
            'The "%s" argument must be of type number. Received type %s (%r)' % (name, type(value).__name__, value)
        )
    if value != value or value < 0 or (value == _INF and not allow_inf):
        raise OutOfRangeError(
            'The value of "%s" is out of range. It must be a non-negative finite number. Received %r' % (name, value)
        )
    return float(value)


class Agent(EventEmitter):
    """A pool of keep-alive connections with Node's ``http.Agent`` semantics.

    Args (keyword-only; durations in seconds, ``None`` = unlimited where a cap):
        keep_alive (bool): pool sockets after a response instead of closing them. Default False.
        keep_alive_initial_delay (float): TCP keep-alive initial delay on pooled sockets. Default 1.0.
        max_sockets (int): concurrent sockets per origin (``get_name()`` key); a hard cap. Default inf.
        max_total_sockets (int): concurrent sockets across origins; a hard cap. Default inf.
        max_free_sockets (int): idle sockets kept per origin. Default 256.
        scheduling (str): ``"lifo"`` (reuse the most recently freed socket) or ``"fifo"``.
        timeout (float | None): socket inactivity limit; an active socket makes its request emit
            ``'timeout'`` (and a blocking call raise ``ETIMEDOUT``); a free socket is closed.
        free_socket_timeout (float | None): a free socket idle this long is closed. Default 4.0;
            ``None``, ``0`` or ``math.inf`` keep idle sockets until the server closes them.
        socket_ttl (float | None): a socket older than this (since it was created) is not reused.
        max_requests_per_socket (int | None): a socket that carried this many requests is closed.
        retry (``"idempotent"`` | ``"always"`` | False): when a request fails on a *reused* socket
            before any response byte arrived (the server closed it as we reused it), send it once
            more on a fresh connection: for idempotent methods (default), for any method
            (``"always"``: the caller vouches the request may be replayed), or never. Only bodies
            that can be replayed (bytes, str, seekable files) are retried.
        keep_alive_timeout_buffer (float): subtracted from a server's ``Keep-Alive: timeout=N``.
        **connect_options: ``local_address``, ``family`` (4/6), ``socket_path``, ``no_delay``
            (default True), ``connect_timeout`` and any other option handed to ``create_connection``.

    Raises:
        InvalidArgTypeError / OutOfRangeError / InvalidArgValueError: a bad option (Node's codes).

    Ports Node's ``Agent`` constructor (node-agent.md §1), with the caps validated.
    """

    default_port = 80
    protocol = "http:"

    def __init__(
        self,
        *,
        keep_alive: bool = False,
        keep_alive_initial_delay: float = 1.0,
        max_sockets: float = _INF,
        max_total_sockets: float = _INF,
        max_free_sockets: float = 256,
        scheduling: str = "lifo",
        timeout: Optional[float] = None,
        free_socket_timeout: Optional[float] = 4.0,
        keep_alive_timeout_buffer: float = 1.0,
        socket_ttl: Optional[float] = None,
        max_requests_per_socket: Optional[int] = None,
        retry: Any = "idempotent",
        **connect_options: Any,
    ) -> None:
        self.max_sockets = validate_cap("max_sockets", max_sockets, 1)
        self.max_total_sockets = validate_cap("max_total_sockets", max_total_sockets, 1)
        self.max_free_sockets = validate_cap("max_free_sockets", max_free_sockets, 0)
        if scheduling not in ("fifo", "lifo"):
            raise InvalidArgValueError(
                "The argument 'scheduling' must be one of: 'fifo', 'lifo'. Received %r" % (scheduling,)
            )
        self.scheduling = scheduling
        timeout = validate_seconds("timeout", timeout)
        delay = validate_seconds("keep_alive_initial_delay", keep_alive_initial_delay)
        self.keep_alive_initial_delay = delay or 1.0
        idle = validate_seconds("free_socket_timeout", free_socket_timeout, allow_inf=True)
        self.free_socket_timeout = idle if idle else _INF
        buffer = keep_alive_timeout_buffer
        # Node (v24.7, PR #59315): anything but a finite number >= 0 silently becomes the default.
        self.keep_alive_timeout_buffer = float(buffer) if _is_number(buffer) and 0 <= buffer < _INF else 1.0
        for key in ("connect_timeout",):
            if key in connect_options:
                validate_seconds(key, connect_options[key])
        ttl = validate_seconds("socket_ttl", socket_ttl, allow_inf=True)
        self.socket_ttl = ttl if ttl else _INF
        self.max_requests_per_socket = validate_cap("max_requests_per_socket", max_requests_per_socket, 1)
        self.retry = validate_retry(retry)
        self.keep_alive = keep_alive
        self.options: Dict[str, Any] = dict(connect_options)
        self.options.setdefault("no_delay", True)
        if timeout:
            self.options["timeout"] = timeout
        self.requests: Dict[str, Deque[Any]] = {}
        self.sockets: Dict[str, List[Socket]] = {}
        self.free_sockets: Dict[str, Deque[Socket]] = {}
        self.total_socket_count = 0
        self.counters: Dict[str, int] = dict.fromkeys(
            (
                "sockets_created",
                "create_errors",
                "sockets_closed",
                "socket_errors",
                "timeouts",
                "requests",
                "reused",
                "retries",
                "redispatched",
            ),
            0,
        )
        self.close_reasons: Dict[str, int] = {}
        self._thread_id: Optional[int] = None  # bound on first use
        self._generation = fork_generation()
        self.on("free", self._on_free)

    def __repr__(self) -> str:
        return "<%s total=%d active=%d free=%d queued=%d>" % (
            type(self).__name__,
            self.total_socket_count,
            sum(len(v) for v in self.sockets.values()),
            sum(len(v) for v in self.free_sockets.values()),
            sum(len(v) for v in self.requests.values()),
        )

    # -- the origin key (Node getName, §3) ---------------------------------------------------------
    def get_name(self, options: Optional[Dict[str, Any]] = None) -> str:
        """The origin key: ``host:port:local_address[:family][:socket_path]`` (Node's format).

        Args:
            options (dict | None): ``host``, ``port``, ``local_address``, ``family``, ``socket_path``.
        Returns:
            str, e.g. ``"localhost:80:"``.
        """
        if not options:
            return "localhost::"
        port = options.get("port")
        name = "%s:%s:%s" % (
            options.get("host") or "localhost",
            port if port else "",
            options.get("local_address") or "",
        )
        family = options.get("family")
        if family in (4, 6) and not isinstance(family, bool):
            name += ":%d" % family
        path = options.get("socket_path")
        if path:
            name += ":" + path
        return name

    # -- guards -----------------------------------------------------------------------------------
    def _check_context(self) -> None:
        if self._generation != fork_generation():
            self._reset_after_fork()
        ident = _real_get_ident()
        if ident != self._thread_id:
            if self._thread_id is None:
                self._thread_id = ident
                return
            raise ThreadError(
                "This Agent belongs to the OS thread (and gevent hub) that created it; create one Agent per thread"
            )

    def _reset_after_fork(self) -> None:
        """In a fork child: close inherited sockets (fd only, never written to) and start clean."""
        for group in list(self.free_sockets.values()) + list(self.sockets.values()):
            for sock in list(group):
                sock._close_quietly("fork")
        self.free_sockets.clear()
        self.sockets.clear()
        self.requests.clear()
        self.total_socket_count = 0
        self._generation = fork_generation()

    # -- Node addRequest (§4.2) --------------------------------------------------------------------
    def add_request(self, req: Any, options: Any, port: Any = None, local_address: Any = None) -> None:
        """Give ``req`` a socket: reuse a free one, create one under the caps, or queue it.

        The socket reaches the request through ``req.on_socket(socket, err=None)``.
        Ports Node's ``addRequest`` (node-agent.md §4.2); also accepts the legacy
        ``(req, host, port, local_address)`` form.
        """
        if isinstance(options, str):
            options = {"host": options, "port": port, "local_address": local_address}
        self._check_context()
        given = options
        options = {**options, **self.options}
        name = self.get_name(options)
        self.counters["requests"] += 1
        free = self.free_sockets.get(name) if not getattr(req, "_fresh", False) else None
        while free:
            socket = free.popleft() if self.scheduling == "fifo" else free.pop()
            if not free:
                del self.free_sockets[name]
                free = None
            if socket.destroyed:
                continue
            if self.socket_ttl != _INF and time.monotonic() - socket.created_at >= self.socket_ttl:
                socket.close_reason = "ttl"
                socket.destroy()
                free = self.free_sockets.get(name)
                continue
            if socket.connected:
                if getattr(req, "_stale_check_at_write", False):
                    # The request checks right before its write (one poll for a round's corked
                    # writes, Socket._check_stale) and goes out again on a new connection if stale.
                    socket._check_stale = True
                else:
                    stale = socket._peek()
                    if stale is not None:  # closed or reset while idle: never write to it
                        socket.close_reason = stale
                        socket.destroy()
                        free = self.free_sockets.get(name)
                        continue
            if socket._agent is not self:  # a foreign socket put in free_sockets: adopt it
                self.total_socket_count += 1
                self._install_listeners(socket, name, options)
            self.reuse_socket(socket, req)
            self.sockets.setdefault(name, []).append(socket)
            self.counters["reused"] += 1
            self._set_request_socket(req, socket)
            return
        if not self.requests.get(name) and self._origin_count(name) < self.max_sockets:
            if self.total_socket_count >= self.max_total_sockets:
                self._evict_idle()
            if self.total_socket_count < self.max_total_sockets:
                self.create_socket(req, options, self._handoff(req))
                return
        queue = self.requests.get(name)
        if queue is None:
            queue = self.requests[name] = deque()
        req._queue_name = name
        req._queue_seq = next(_queue_seq)
        # The caller's options, not the merged copy: create_socket merges the agent's again, and
        # a request parked for long holds (and finally frees) one cold dict fewer.
        req._agent_options = given
        queue.append(req)

    def _handoff(self, req: Any) -> Callable[[Optional[BaseException], Optional[Socket]], None]:
        def oncreate(err: Optional[BaseException], socket: Optional[Socket]) -> None:
            if err is not None:
                req.on_socket(socket, err)
            else:
                self._set_request_socket(req, socket)  # type: ignore[arg-type]

        return oncreate

    def _origin_count(self, name: str) -> int:
        active = self.sockets.get(name)
        free = self.free_sockets.get(name)
        return (len(active) if active else 0) + (len(free) if free else 0)

    def _evict_idle(self) -> bool:
        """At the total cap: close the longest-idle free socket (of any origin). True if one was."""
        oldest: Optional[Socket] = None
        for group in self.free_sockets.values():
            for sock in group:
                if not sock.destroyed and (oldest is None or sock.freed_at < oldest.freed_at):
                    oldest = sock
                break  # the head of each list is its longest idle (append at the tail)
        if oldest is None:
            return False
        oldest.close_reason = "evicted"
        oldest.destroy()
        return True

    # -- Node createSocket (§4.3) ------------------------------------------------------------------
    def create_socket(
        self,
        req: Any,
        options: Dict[str, Any],
        cb: Callable[[Optional[BaseException], Optional[Socket]], None],
    ) -> None:
        """Create a socket for ``req`` via :meth:`create_connection`, count it, then ``cb(err, socket)``.

        Exceptions raised by ``create_connection`` propagate (as in Node).
        """
        options = {**options, **self.options}
        name = self.get_name(options)
        options["_agent_key"] = name
        if self.keep_alive:
            options["keep_alive"] = True
            options["keep_alive_initial_delay"] = self.keep_alive_initial_delay
        done = []

        def oncreate(err: Optional[BaseException], socket: Optional[Socket] = None) -> None:
            if done:
                return
            done.append(True)
            if err is not None or socket is None:
                self.counters["create_errors"] += 1
                cb(err, None)
                return
            self.sockets.setdefault(name, []).append(socket)
            self.total_socket_count += 1
            self.counters["sockets_created"] += 1
            self._install_listeners(socket, name, options)
            cb(None, socket)

        new_socket = self.create_connection(options, oncreate)
        if new_socket is not None:
            oncreate(None, new_socket)

    def create_connection(self, options: Dict[str, Any], callback: Any = None) -> Optional[Socket]:
        """Hook: make the connection for a new socket. Returns an (unconnected) :class:`Socket`,
        which the requesting greenlet connects; or returns None and calls ``callback(err, socket)``.

        Ports Node's ``createConnection`` (``net.createConnection``), node-agent.md §5.1.
        """
        return Socket(options)

    def _install_listeners(self, socket: Socket, name: str, options: Dict[str, Any]) -> None:
        """Node's ``installListeners`` (§4.4): the agent's own ``'free'``, ``'close'``, ``'error'``,
        ``'timeout'`` and ``'agentRemove'`` listeners, installed before any request's."""
        socket._agent = self
        socket._agent_name = name
        socket._agent_options = options
        hooks = _SocketHooks(self, socket, name, options)
        socket.on("free", hooks.onfree)
        socket.on("close", hooks.onclose)
        socket.on("error", hooks.onerror)
        socket.on("timeout", hooks.ontimeout)
        socket.on("agentRemove", hooks.onremove)

    # -- the 'free' handler (§4.7) -----------------------------------------------------------------
    def _on_free(self, socket: Socket, options: Dict[str, Any]) -> None:
        name = socket._agent_name if socket._agent is self else self.get_name(options)
        if socket.destroyed:
            return
        requests = self.requests
        queue = requests.get(name) if requests else None
        if queue:
            if self._older_waiter_elsewhere(name, queue[0]._queue_seq):
                socket.close_reason = "rebalance"
                socket.destroy()  # its 'close' serves the oldest waiting request
                return
            req = queue.popleft()
            if not queue:
                del self.requests[name]
            req._queue_name = None
            self._set_request_socket(req, socket)
            return
        req = socket._http_message
        free = self.free_sockets.get(name)
        if req is None or not getattr(req, "should_keep_alive", False) or not self.keep_alive:
            reason: Optional[str] = "not_keep_alive"
        else:
            free_len = len(free) if free else 0
            active = self.sockets.get(name)
            if (
                self.total_socket_count > self.max_total_sockets
                or free_len + (len(active) if active else 0) > self.max_sockets
            ):
                reason = "over_cap"
            elif free_len >= self.max_free_sockets:
                reason = "free_overflow"
            elif requests and self._older_waiter_elsewhere(name, _INF):
                reason = "rebalance"
            elif self.keep_socket_alive(socket):
                reason = None
            else:
                reason = socket.close_reason or "keep_alive_refused"
        if reason is not None:
            socket.close_reason = reason
            socket.destroy()
            return
        if free is None:
            free = self.free_sockets[name] = deque()
        socket._http_message = None
        self.remove_socket(socket, options)
        if socket.destroyed:
            return
        socket._pool(getattr(socket, "_free_timeout", self.free_socket_timeout))
        free.append(socket)

    def _older_waiter_elsewhere(self, name: str, seq: float) -> bool:
        """True when another origin has a request that waits longer than ``seq`` and only the
        total cap stops it (arrival order across origins, a difference from Node)."""
        if self.max_total_sockets == _INF:
            return False
        for other, queue in self.requests.items():
            if other != name and queue and queue[0]._queue_seq < seq:
                if self._origin_count(other) < self.max_sockets:
                    return True
        return False

    # -- Node removeSocket (§4.8) ------------------------------------------------------------------
    def remove_socket(self, socket: Socket, options: Dict[str, Any]) -> None:
        """Forget ``socket`` (active list; free list too if destroyed), then give waiting requests
        a new socket where the caps allow, oldest request first. Ports Node's ``removeSocket``."""
        name = socket._agent_name if socket._agent_name is not None else self.get_name(options)
        active = self.sockets.get(name)
        if active:
            try:
                active.remove(socket)
            except ValueError:
                pass
            if not active:
                del self.sockets[name]
        if socket.destroyed:
            free = self.free_sockets.get(name)
            if free:
                try:
                    free.remove(socket)
                except ValueError:
                    pass
                if not free:
                    del self.free_sockets[name]
        if self.requests:
            self._serve_waiting()

    def _serve_waiting(self) -> None:
        requests = self.requests
        for _ in range(len(requests) + 8):
            if not requests or self.total_socket_count >= self.max_total_sockets:
                return
            best = None
            best_seq = _INF
            for name, queue in requests.items():
                if queue and queue[0]._queue_seq < best_seq and self._origin_count(name) < self.max_sockets:
                    best, best_seq = name, queue[0]._queue_seq
            if best is None:
                return
            queue = requests[best]
            req = queue[0]

            def oncreate(
                err: Optional[BaseException], socket: Optional[Socket], req: Any = req, name: str = best
            ) -> None:
                if err is not None:
                    q = self.requests.get(name)
                    if q and q[0] is req:
                        q.popleft()
                        if not q:
                            del self.requests[name]
                    req._queue_name = None
                    req.on_socket(None, err)
                else:
                    socket.emit("free")  # type: ignore[union-attr]  # §4.8: the queue head takes it

            self.create_socket(req, req._agent_options, oncreate)

    def _dequeue(self, req: Any) -> None:
        """Take a destroyed request out of its queue (Node leaves it there; we release it now)."""
        name = getattr(req, "_queue_name", None)
        if name is None:
            return
        req._queue_name = None
        queue = self.requests.get(name)
        if queue is not None:
            try:
                queue.remove(req)
            except ValueError:
                pass
            if not queue:
                del self.requests[name]

    # -- hooks (§5) --------------------------------------------------------------------------------
    def keep_socket_alive(self, socket: Socket) -> bool:
        """Hook: may this socket be pooled? Default: TCP keep-alive on, ``unref()``, and the idle
        limit = min(``free_socket_timeout``, agent ``timeout``, time left under ``socket_ttl``, the
        server's ``Keep-Alive: timeout=N`` minus ``keep_alive_timeout_buffer``). Refused (and
        ``socket.close_reason`` set) when the hint is at or below the buffer, the server's
        ``max=M`` allows no more requests, the TTL is spent or ``max_requests_per_socket`` reached.
        Ports Node's ``keepSocketAlive`` (§5.2, §6.3), which reads only ``timeout=`` and only
        when it starts the header."""
        if socket.requests >= self.max_requests_per_socket:
            socket.close_reason = "max_requests"
            return False
        limit = self.free_socket_timeout
        limit_reason = "idle_timeout"
        agent_timeout = self.options.get("timeout") or 0
        if agent_timeout and agent_timeout < limit:
            limit = agent_timeout
        ttl = self.socket_ttl
        if ttl != _INF:
            left = ttl - (time.monotonic() - socket.created_at)
            if left <= 0:
                socket.close_reason = "ttl"
                return False
            if left < limit:
                limit, limit_reason = left, "ttl"
        raw_hint = getattr(
            getattr(getattr(socket._http_message, "res", None), "_parser", None), "keep_alive_hint", None
        )
        if raw_hint:
            hint = raw_hint.decode("latin-1")
            match = _HINT_TIMEOUT.search(hint)
            if match:
                seconds = int(match.group(1)) - self.keep_alive_timeout_buffer
                if seconds <= 0:
                    socket.close_reason = "keep_alive_refused"
                    return False
                if seconds < limit:
                    limit, limit_reason = seconds, "idle_timeout"
            match = _HINT_MAX.search(hint)
            if match and int(match.group(1)) < 1:
                socket.close_reason = "max_requests"
                return False
        socket.set_keep_alive(True, self.keep_alive_initial_delay)
        socket.unref()
        socket._free_timeout = limit  # type: ignore[attr-defined]
        socket._free_reason = limit_reason  # type: ignore[attr-defined]
        return True

    def reuse_socket(self, socket: Socket, req: Any) -> None:
        """Hook: a free socket is taken for ``req``: stop its idle timer, mark
        ``req.reused_socket = True`` and ``ref()`` it. Ports Node's ``reuseSocket`` (§5.3)."""
        socket._reuse()  # idle timer and watcher stopped, ref()'d
        req.reused_socket = True

    def _set_request_socket(self, req: Any, socket: Socket) -> None:
        timeout = getattr(req, "timeout", None)
        if timeout is None:
            timeout = self.options.get("timeout") or 0
        if socket.timeout != timeout:
            socket.set_timeout(timeout)
        req.on_socket(socket)

    # -- teardown and inspection -------------------------------------------------------------------
    def destroy(self) -> None:
        """Destroy every free, then every active socket (Node's ``agent.destroy()``, §7.1).

        Requests that were using a socket fail with ``ECONNRESET``. Like Node, the agent stays usable
        and queued requests are served on new sockets.
        """
        for group in list(self.free_sockets.values()):
            for socket in list(group):
                socket.close_reason = "agent_destroy"
                socket.destroy()
        for group in list(self.sockets.values()):
            for socket in list(group):
                socket.close_reason = "agent_destroy"
                socket.destroy()

    close = destroy

    def __enter__(self) -> "Agent":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.destroy()

    def status(self) -> Dict[str, Any]:
        """Counters and gauges: ``{"total_socket_count", "active", "free", "queued", counters...,
        "close_reasons": {reason: n}, "origins": {name: {"active", "free", "queued"}}}``."""
        origins: Dict[str, Dict[str, int]] = {}
        for key, attr in (("active", self.sockets), ("free", self.free_sockets), ("queued", self.requests)):
            for name, group in attr.items():
                origins.setdefault(name, {"active": 0, "free": 0, "queued": 0})[key] = len(group)
        result: Dict[str, Any] = dict(self.counters)
        result.update(
            total_socket_count=self.total_socket_count,
            active=sum(o["active"] for o in origins.values()),
            free=sum(o["free"] for o in origins.values()),
            queued=sum(o["queued"] for o in origins.values()),
            close_reasons=dict(self.close_reasons),
            origins=origins,
        )
        return result

    # -- convenience -------------------------------------------------------------------------------
    def request(self, method: str, url: Any, **kw: Any) -> Any:
        """``geventagent.request(method, url, agent=self, **kw)``: blocks until the response head."""
        return _client().request(method, url, agent=self, **kw)

    def get(self, url: Any, **kw: Any) -> Any:
        """``geventagent.get(url, agent=self, **kw)``."""
        return _client().request("GET", url, agent=self, **kw)


def _client() -> Any:
    """The client module (it imports this one, so it is looked up at call time)."""
    return sys.modules["geventagent.client"]


class _SocketHooks:
    """The agent's listeners on one socket (one small object rather than five closures: an idle
    pooled socket should cost little memory)."""

    __slots__ = ("agent", "socket", "name", "options")

    def __init__(self, agent: Agent, socket: Socket, name: str, options: Dict[str, Any]) -> None:
        self.agent = agent
        self.socket = socket
        self.name = name
        self.options = options

    def _is_free(self) -> bool:
        free = self.agent.free_sockets.get(self.name)
        return free is not None and self.socket in free

    def onfree(self) -> None:
        self.agent.emit("free", self.socket, self.options)

    def onclose(self, had_error: bool = False) -> None:
        agent, socket = self.agent, self.socket
        agent.total_socket_count -= 1
        counters = agent.counters
        counters["sockets_closed"] += 1
        if had_error:
            counters["socket_errors"] += 1
        reason = socket.close_reason or ("error" if had_error else "closed")
        if reason == "connect_error":
            counters["create_errors"] += 1
        socket.close_reason = reason
        agent.close_reasons[reason] = agent.close_reasons.get(reason, 0) + 1
        agent.remove_socket(socket, self.options)

    def ontimeout(self) -> None:
        if self._is_free():
            self.agent.counters["timeouts"] += 1
            self.socket.close_reason = self.socket._free_reason
            self.socket.destroy()

    def onerror(self, exc: Any = None) -> None:
        # Node's freeSocketErrorListener: an error on an idle socket drops it from the pool.
        if self._is_free():
            self.socket.close_reason = "error"
            self.socket.destroy()

    def onremove(self) -> None:
        agent, socket, name = self.agent, self.socket, self.name
        agent.total_socket_count -= 1
        if self._is_free():
            free = agent.free_sockets[name]
            free.remove(socket)
            if not free:
                del agent.free_sockets[name]
            socket._stop_idle_timer()
            socket._unwatch_idle()
        socket.close_reason = socket.close_reason or "agent_remove"
        agent.close_reasons[socket.close_reason] = agent.close_reasons.get(socket.close_reason, 0) + 1
        agent.remove_socket(socket, self.options)
        for event in ("close", "free", "agentRemove", "timeout", "error"):
            for handler in socket.raw_listeners(event):
                if getattr(handler, "__self__", None) is self:
                    socket.remove_listener(event, handler)
        socket._agent = None
