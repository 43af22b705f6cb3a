"""``Socket``: one cooperative gevent socket and Node's ``net.Socket`` events.

Connecting is lazy: an agent's ``create_connection()`` returns an unconnected ``Socket`` without
blocking (the pool's bookkeeping never yields), and the greenlet that is handed the socket connects
it. Events: ``'connect'``, ``'free'``, ``'agentRemove'``, ``'timeout'``, ``'error'(exc)``,
``'close'(had_error)``.

What the sockets of one hub share (the cork, the idle-limit timer lists, the fork generation) is
in ``_hub``; this module is the transport: connect, send, receive, the idle timer and watcher of a
pooled socket, and teardown. ``close_reason`` is set in one place, :meth:`Socket._closing`.
"""

from __future__ import annotations

import _socket
import socket as _stdsocket
import time
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

import gevent
from gevent import socket as gsocket

from . import _hub
from .errors import (
    GeventAgentError,
    InvalidArgValueError,
    NetworkError,
    RequestTimeout,
    StaleSocket,
    from_os_error,
    socket_hang_up,
)
from .events import EventEmitter

if TYPE_CHECKING:  # pragma: no cover
    from .exchange import Exchange

__all__ = ["Socket", "fork_generation", "CORK_MAX"]

fork_generation = _hub.fork_generation


def _is_ip(host: str) -> int:
    """The address family of an IP literal, or 0 for a name (no resolver round trip)."""
    try:
        _stdsocket.inet_pton(_stdsocket.AF_INET, host)
        return _stdsocket.AF_INET
    except (OSError, ValueError):
        pass
    try:
        _stdsocket.inet_pton(_stdsocket.AF_INET6, host)
        return _stdsocket.AF_INET6
    except (OSError, ValueError):
        return 0


_PEEK_FLAGS = _stdsocket.MSG_PEEK | _stdsocket.MSG_DONTWAIT
_INF = float("inf")
_FAMILIES = {4: _stdsocket.AF_INET, 6: _stdsocket.AF_INET6}
_FAMILY_NUMBERS: Dict[int, int] = {af: number for number, af in _FAMILIES.items()}


def resolve(lookup: Any, host: str, port: int, family: int) -> List[Tuple[int, Any]]:
    """``[(family, sockaddr), ...]`` for a host name (``family``: an ``AF_*`` constant or 0), from
    gevent's resolver or, given one, a ``lookup`` hook (Node's ``lookup`` connect option,
    synchronous here: the hook may block its greenlet cooperatively): ``lookup(hostname,
    family)`` with ``family`` 0, 4 or 6, returning an IP address string, an ``(address,
    family)`` pair, or a list of either. An OSError either raises (``socket.gaierror``
    included) is the connect's error.

    Raises:
        InvalidArgValueError (Node's ``ERR_INVALID_IP_ADDRESS``): a lookup's answer that is not an
            IP address; ``socket.gaierror`` (``ENOTFOUND``): no address of the family asked for."""
    if lookup is None:
        return [(info[0], info[4]) for info in gsocket.getaddrinfo(host, port, family, _stdsocket.SOCK_STREAM)]
    wanted = _FAMILY_NUMBERS.get(family, 0)
    answer = lookup(host, wanted)
    items = [answer] if isinstance(answer, (str, tuple)) else list(answer or ())
    candidates: List[Tuple[int, Any]] = []
    for item in items:
        address = item[0] if isinstance(item, tuple) else item
        fam = _is_ip(address) if isinstance(address, str) else 0
        if not fam:
            raise InvalidArgValueError("Invalid IP address: %r (from lookup)" % (item,), code="ERR_INVALID_IP_ADDRESS")
        if not wanted or _FAMILY_NUMBERS[fam] == wanted:
            candidates.append((fam, (address, port) if fam == _stdsocket.AF_INET else (address, port, 0, 0)))
    if not candidates:
        raise _stdsocket.gaierror(_stdsocket.EAI_NONAME, "lookup gave no address for %s" % host)
    return candidates


#: Node v20's ``net.getDefaultAutoSelectFamilyAttemptTimeout()`` (250 ms), in seconds.
AUTO_SELECT_FAMILY_ATTEMPT_TIMEOUT = 0.25


def _alternate_families(candidates: List[Tuple[int, Any]]) -> List[Tuple[int, Any]]:
    """``[(family, sockaddr), ...]`` with the families alternating, the first address's family
    first, each IP once (Node's ``lookupAndConnectMultiple``)."""
    first_family = candidates[0][0]
    same: List[Tuple[int, Any]] = []
    other: List[Tuple[int, Any]] = []
    seen = set()
    for fam, addr in candidates:
        if addr[0] not in seen:
            seen.add(addr[0])
            (same if fam == first_family else other).append((fam, addr))
    ordered: List[Tuple[int, Any]] = []
    for index in range(max(len(same), len(other))):
        ordered.extend(group[index] for group in (same, other) if index < len(group))
    return ordered


#: ``Socket._check_stale``: how a socket that served a request before is checked before its
#: next write. AFTER_POLL: taken from the pool with its idle watcher running; the corked write
#: waits for the hub's next poll and only a socket whose watcher became ready is peeked.
#: AT_WRITE: handed straight from one request to the next (no watcher); right before the write,
#: one poll(0) over the round's such sockets, and only a readable one is peeked (a write sent
#: at once, not corked, peeks).
STALE_AFTER_POLL = 1
STALE_AT_WRITE = 2

#: Writes up to this many bytes may be corked (see ``Socket.send_corked``); 0 turns corking off.
CORK_MAX = 16384
#: TLS writes up to this size go to the SSL object directly (gevent's sendall takes larger ones).
TLS_DIRECT_MAX = 65536


class _CorkWake(Exception):
    """Thrown into a greenlet waiting on a corked socket whose write needs it (error or rest)."""


def _throw_timeout(glet: Any) -> None:
    """A socket wait's timer expired (in the hub): raise ``socket.timeout`` in the waiting greenlet,
    as gevent's ``Timeout`` does for its own waits."""
    glet.throw(_stdsocket.timeout("timed out"))


class Socket(EventEmitter):
    """One connection (plain TCP or a Unix socket), an :class:`EventEmitter`.

    Args:
        options (dict): connect options in snake_case: ``host`` (str), ``port`` (int),
            ``socket_path`` (str), ``local_address`` (str), ``family`` (4 or 6),
            ``connect_timeout`` / ``timeout`` (seconds), ``no_delay`` (bool, default True),
            ``keep_alive`` (bool) and ``keep_alive_initial_delay`` (seconds).
        sock: an already connected gevent socket to wrap (optional).

    Attributes:
        destroyed (bool), connecting (bool), connected (bool), timeout (float seconds, 0 = none),
        bytes_read / bytes_written (int), close_reason (str | None: why it was closed),
        requests (int: requests it carried), created_at (``time.monotonic()`` seconds),
        keep_alive_hint (bytes | None: the last response's ``Keep-Alive`` header).
    """

    # Slots keep an idle pooled socket small (a __dict__ is still created if user code sets
    # attributes of its own on a socket).
    __slots__ = (
        "_events",
        "_max_listeners",
        "_warned",
        "options",
        "_sock",
        "connected",
        "connecting",
        "destroyed",
        "timeout",
        "bytes_read",
        "bytes_written",
        "requests",
        "close_reason",
        "created_at",
        "freed_at",
        "generation",
        "keep_alive_hint",
        "_refed",
        "_timer",
        "_timer_after",
        "_io_timer",
        "_io_timer_after",
        "_watcher",
        "_raw",
        "_ssl",
        "_http_message",
        "_exchange",
        "_agent",
        "_agent_name",
        "_agent_options",
        "_peer",
        "_local",
        "_idle_limit",
        "_idle_reason",
        "_corked",
        "_cork_after",
        "_cork_waiting",
        "_sent_whole",
        "_keep_alive_state",
        "_check_stale",
        "_stale_reason",
        "_hub",
        "_idle_list",
        "_fd",
        "plain_proxy",
        "_release_hook",
    )

    def __init__(self, options: Optional[Dict[str, Any]] = None, sock: Any = None) -> None:
        self._events = None
        self._max_listeners = None
        self._warned = None
        self.options: Dict[str, Any] = options if options is not None else {}
        self._sock = sock
        self.connected = sock is not None
        self.connecting = False
        self.destroyed = False
        self.timeout = 0.0
        self.bytes_read = 0
        self.bytes_written = 0
        self.requests = 0
        self.close_reason: Optional[str] = None
        self.created_at = time.monotonic()
        self.freed_at = 0.0
        self.generation = _hub._generation
        self.keep_alive_hint: Optional[bytes] = None
        self._refed = True
        self._timer: Any = None
        self._timer_after = -1.0
        self._io_timer: Any = None  # the timeout of this socket's waits for I/O (see _wait_read)
        self._io_timer_after = -1.0
        self._watcher: Any = None
        self._hub: Optional[_hub.HubState] = None  # this hub's cork and timer lists
        self._idle_list: Optional[_hub.TimerList] = None  # the list this free socket's idle limit is in
        self._idle_limit: Optional[float] = None  # seconds, while pooled (None: not pooled)
        self._idle_reason = "idle_timeout"
        self._keep_alive_state: Any = None
        self._raw: Any = None  # the C socket of a plain (non-TLS) gevent socket, for fast writes
        # The C SSL object of a TLS socket (gevent's SSLSocket over a non-blocking fd): its reads and
        # writes go to it directly, as _raw's do, and only a blocked one takes gevent's waiting path.
        self._ssl: Any = None
        self._corked: Any = None  # bytes waiting in the hub's cork (see send_corked)
        self._cork_after: Any = None  # after the flush: an error, or the bytes it could not write
        self._cork_waiting = False
        self._sent_whole = False
        self._check_stale = 0  # reused without a peek: STALE_AFTER_POLL or STALE_AT_WRITE
        self._stale_reason: Optional[str] = None  # found stale after a request took it
        self._http_message: Any = None  # Node's socket._httpMessage: the request using it
        self._exchange: Optional["Exchange"] = None  # the request/response cycle on it (exchange.py)
        self._agent: Any = None
        self._agent_name: Optional[str] = None
        self._agent_options: Optional[Dict[str, Any]] = None
        self._peer: Any = None
        self._local: Any = None
        self._fd = -1  # the file descriptor once connected (for the cork's readiness check)
        self._release_hook = self._RELEASE_HOOK  # (a slot: read per response)
        # the proxy this socket's requests go to as they are (absolute form), when it does not tunnel
        proxy = self.options.get("_proxy")
        self.plain_proxy: Any = proxy if not self.tunnels and proxy is not None and not proxy.socks else None

    def __repr__(self) -> str:
        state = self.status()
        extra = "".join(
            " %s=%s" % (key, state[key]) for key in ("idle_limit", "idle_timer", "corked") if state.get(key)
        )
        return "<%s %s %s requests=%d%s>" % (
            type(self).__name__,
            self._agent_name or self.options.get("host"),
            state["state"],
            self.requests,
            extra,
        )

    def status(self) -> Dict[str, Any]:
        """A summary of this socket's state (for tests, logs and debugging).

        Returns:
            dict: ``state`` (``"new"``, ``"connecting"``, ``"active"``, ``"free"`` (pooled) or
            ``"destroyed"``), ``origin`` (its agent's ``get_name()`` key, None when detached or
            never pooled), ``requests``, ``bytes_read``, ``bytes_written``, ``close_reason``,
            ``idle_limit`` (seconds a pooled socket may stay idle, else None), ``idle_timer``
            (``"list"``: on the hub's shared timer list for its limit; ``"own"``: a timer of its
            own; None), ``timer_ref`` (whether that timer keeps ``gevent.wait()`` waiting),
            ``watched`` (an idle read watcher is running), ``watcher_ref`` (whether it would keep
            ``gevent.wait()`` waiting; None without a watcher), ``corked`` (bytes held by the cork),
            ``write_pending`` (``"error"``, ``"rest"`` or ``"stale"``: what the cork left for the
            owning greenlet) and ``check_stale`` (a staleness check is due before the write).
        """
        if self.destroyed:
            state = "destroyed"
        elif self._idle_limit is not None:
            state = "free"
        elif self.connected:
            state = "active"
        else:
            state = "connecting" if self.connecting else "new"
        timer = self._timer
        if self._idle_list is not None:
            idle_timer: Optional[str] = "list"
            timer_ref: Optional[bool] = False
        elif timer is not None and timer.active:
            idle_timer, timer_ref = "own", bool(timer.ref)
        else:
            idle_timer, timer_ref = None, None
        after = self._cork_after
        pending = None
        if isinstance(after, StaleSocket):
            pending = "stale"
        elif isinstance(after, BaseException):
            pending = "error"
        elif after is not None:
            pending = "rest"
        watcher = self._watcher
        return {
            "state": state,
            "origin": self._agent_name,
            "requests": self.requests,
            "bytes_read": self.bytes_read,
            "bytes_written": self.bytes_written,
            "close_reason": self.close_reason,
            "idle_limit": self._idle_limit,
            "idle_timer": idle_timer,
            "timer_ref": timer_ref,
            "watched": bool(watcher is not None and watcher.active),
            "watcher_ref": bool(watcher.ref) if watcher is not None else None,
            "corked": len(self._corked) if self._corked is not None else 0,
            "write_pending": pending,
            "check_stale": bool(self._check_stale),
        }

    # -- state ----------------------------------------------------------------------------------
    @property
    def writable(self) -> bool:
        """False once the socket is destroyed (Node's ``socket.writable``)."""
        return not self.destroyed

    def fileno(self) -> int:
        """The file descriptor, or -1 when not connected or destroyed."""
        sock = self._sock
        return sock.fileno() if sock is not None and not self.destroyed else -1

    @property
    def remote_address(self) -> Optional[str]:
        peer = self._peer
        return peer[0] if isinstance(peer, tuple) else peer

    @property
    def remote_port(self) -> Optional[int]:
        peer = self._peer
        return peer[1] if isinstance(peer, tuple) else None

    @property
    def local_address(self) -> Optional[str]:
        local = self._local
        return local[0] if isinstance(local, tuple) else local

    @property
    def local_port(self) -> Optional[int]:
        local = self._local
        return local[1] if isinstance(local, tuple) else None

    # -- connecting -----------------------------------------------------------------------------
    def connect(self) -> "Socket":
        """Connect (blocking the calling greenlet only), then emit ``'connect'``.

        Raises:
            ConnectionRefused / NetworkError / RequestTimeout (``ETIMEDOUT``): the socket is
            destroyed first (``close_reason="connect_error"``); the error carries Node's
            ``syscall`` (``"connect"``), ``address`` and ``port``.
        """
        if self.connected:
            return self
        if self.destroyed:
            raise GeventAgentError("Socket is destroyed", code="ERR_SOCKET_CLOSED")
        opts = self.options
        self.connecting = True
        limit = opts.get("connect_timeout") or opts.get("timeout") or None
        path = opts.get("socket_path")
        proxy = opts.get("_proxy")
        address = ""
        host: Optional[str] = None
        port: Optional[int] = None
        try:
            if path:
                address = path
                sock = gsocket.socket(_stdsocket.AF_UNIX, _stdsocket.SOCK_STREAM)
                self._sock = sock
                sock.settimeout(limit)
                sock.connect(path)
            elif proxy is not None:
                host, port = proxy.host, proxy.port
                address = "%s:%s" % (host, port)
                sock = self._via_proxy(self._connect_tcp(host, port, limit), proxy, limit)
            else:
                host = opts.get("host") or "localhost"
                port = int(opts.get("port") or 80)
                address = "%s:%s" % (host, port)
                sock = self._connect_tcp(host, port, limit)
            self._after_connect(sock)
        except BaseException as exc:
            self.connecting = False
            if isinstance(exc, Exception):
                err = from_os_error(exc, "connect", address)
                if isinstance(err, NetworkError) and err.syscall is None:
                    err.syscall = "connect"  # Node's system-error fields (TLS's and a proxy's too)
                    err.address = path or host
                    err.port = port
                tunnel_failed = proxy is not None and getattr(err, "code", "") == "ERR_PROXY_TUNNEL"
                try:
                    if isinstance(err, RequestTimeout):
                        self.emit("timeout")
                finally:  # (a 'timeout' listener that raises must not keep the socket)
                    self.destroy(err, reason="proxy_tunnel" if tunnel_failed else "connect_error")
                raise err from exc
            self.destroy(reason="connect_error")
            raise
        self.emit("connect")
        return self

    #: Whether this kind of socket reaches its origin through a proxy with a CONNECT tunnel (TLS
    #: sockets do; a plain one sends its requests to the proxy in absolute form instead).
    tunnels = False

    def _via_proxy(self, sock: Any, proxy: Any, limit: Optional[float]) -> Any:
        """Connected to ``proxy``: TLS to it when it is an ``https://`` proxy, then the CONNECT
        tunnel to the origin when this socket :attr:`tunnels`. Returns the socket to use."""
        if proxy.scheme == "https":
            from .tls import proxy_tls

            sock = proxy_tls(sock, proxy, self.options.get("_proxy_tls") or {}, limit)
            self._sock = sock
        if proxy.socks:  # a SOCKS proxy carries http and https alike: origin-form, like a tunnel
            from .proxy import socks_connect

            sock.settimeout(limit)
            opts = self.options
            socks_connect(
                sock,
                opts.get("host") or "localhost",
                int(opts.get("port") or (443 if self.tunnels else 80)),
                proxy,
                opts.get("lookup"),
            )
            return sock
        if self.tunnels:
            from .proxy import tunnel

            sock.settimeout(limit)
            opts = self.options
            tunnel(sock, opts.get("host") or "localhost", int(opts.get("port") or 443), proxy, 16 * 1024)
        return sock

    def _connect_tcp(self, host: str, port: int, limit: Optional[float]) -> Any:
        """A connected gevent socket to ``host:port``, each of its addresses tried in turn.

        Node v20's ``autoSelectFamily`` (on by default; off with ``auto_select_family=False``, a
        ``family`` or a ``local_address``): the addresses alternate families, starting with the
        first one's, each given once, and every attempt but the last gives up after
        ``auto_select_family_attempt_timeout`` seconds (Node's 250 ms; at least 10 ms) for the
        next, so an address that swallows SYNs (an AAAA record without IPv6 routing) costs that
        much and not the whole connect. ``limit`` (seconds or None) bounds all of it."""
        opts = self.options
        family = _FAMILIES.get(opts.get("family"), 0)  # type: ignore[arg-type]
        ip_family = _is_ip(host)
        if ip_family:
            if family and family != ip_family:
                raise OSError(97, "Address family not supported for %s" % host)
            candidates: List[Tuple[int, Any]] = [(ip_family, (host, port))]
        else:
            candidates = resolve(opts.get("lookup"), host, port, family)
        local = opts.get("local_address")
        attempt: Optional[float] = None
        if len(candidates) > 1 and not family and not local and opts.get("auto_select_family", True):
            candidates = _alternate_families(candidates)
            given = opts.get("auto_select_family_attempt_timeout")
            attempt = max(0.01, AUTO_SELECT_FAMILY_ATTEMPT_TIMEOUT if given is None else given)  # None: Node's
        deadline = None if limit is None else time.monotonic() + limit
        last: Optional[BaseException] = None
        final = len(candidates) - 1
        for index, (fam, addr) in enumerate(candidates):
            timeout = limit if deadline is None else max(0.0, deadline - time.monotonic())
            if attempt is not None and index < final and (timeout is None or attempt < timeout):
                timeout, gives_way = attempt, True  # this attempt's own limit: then the next address
            else:
                gives_way = False
            sock = gsocket.socket(fam, _stdsocket.SOCK_STREAM)
            self._sock = sock
            try:
                sock.settimeout(timeout)
                if local:
                    sock.bind((local, 0))
                sock.connect(addr)
                return sock
            except OSError as exc:
                last = exc
                sock.close()
                self._sock = None
                if isinstance(exc, (TimeoutError, _stdsocket.timeout)) and not gives_way:
                    raise
        raise last if last is not None else OSError("no address for %s" % host)

    def _after_connect(self, sock: Any) -> None:
        if type(sock) is gsocket.socket:
            self._raw = sock._sock  # type: ignore[attr-defined]  # the C socket under gevent's
        self._fd = sock.fileno()
        opts = self.options
        self.connecting = False
        self.connected = True
        if sock.family != _stdsocket.AF_UNIX:
            if opts.get("no_delay", True):
                sock.setsockopt(_stdsocket.IPPROTO_TCP, _stdsocket.TCP_NODELAY, 1)
            if opts.get("keep_alive"):
                self.set_keep_alive(True, opts.get("keep_alive_initial_delay", 1.0))
        try:
            self._peer = sock.getpeername()
            self._local = sock.getsockname()
        except OSError:
            pass
        sock.settimeout(self.timeout or None)

    # -- I/O (used by the exchange, one greenlet at a time) ----------------------------------------
    def send(self, data: Any, more: Any = None) -> None:
        """Write all of ``data``, and then all of ``more`` when given (on plain TCP one
        ``sendmsg()`` of both: a large body is written after its head without being copied
        onto it).

        Raises:
            StaleSocket: the socket was taken from the pool and found closed just before this
                write (nothing was written).
            RequestTimeout (after ``'timeout'``), ConnectionReset (``EPIPE``/``ECONNRESET``), NetworkError.
        """
        if self._corked is not None or self._cork_after is not None:
            self._await_cork(False)
        self._sent_whole = False
        if self._check_stale:
            self._check_stale = 0
            self._unwatch_idle()
            # One poll(0) first: a peek of a healthy socket fails with EAGAIN, and that OSError
            # (its message decoded from the C library's) costs more than the poll.
            reason = self._peek() if self.destroyed or self._sock is None or _hub.readable_now(self._fd) else None
            if reason is not None:
                self._stale_reason = reason
                raise StaleSocket(reason)
        try:
            raw = self._raw
            if raw is not None:
                # Fast path: the kernel usually takes a request whole; only a partial or blocked
                # write goes through gevent's waiting sendall.
                if more is None:
                    try:
                        sent = _socket.socket.send(raw, data)
                    except BlockingIOError:
                        sent = 0
                    if sent < len(data):
                        self._sock.sendall(memoryview(data)[sent:])
                    else:
                        self._sent_whole = True
                else:
                    try:
                        sent = _socket.socket.sendmsg(raw, (data, more))
                    except BlockingIOError:
                        sent = 0
                    if sent < len(data):
                        self._sock.sendall(memoryview(data)[sent:])
                        sent = len(data)
                    if sent - len(data) < len(more):
                        self._sock.sendall(memoryview(more)[sent - len(data) :])
                    else:
                        self._sent_whole = True
                    self.bytes_written += len(more)
            elif more is not None:
                self.send(data + more)
                return
            elif self._ssl is not None and len(data) <= TLS_DIRECT_MAX:
                self._tls_write(data)
            else:
                self._sock.sendall(data)
        except (OSError, AttributeError) as exc:
            if self._sock is None or self.destroyed:
                raise socket_hang_up() from exc
            err = from_os_error(exc, "write")
            if isinstance(err, RequestTimeout):
                self.emit("timeout")
            raise err from exc
        self.bytes_written += len(data)

    # TLS I/O on the SSL object itself (``_ssl``, set by tls.TlsSocket, which has the versions that
    # know the ssl module's errors; importing geventagent must not import ssl).
    def _tls_write(self, data: Any) -> None:
        self._sock.sendall(data)

    def _tls_write_nowait(self, data: Any) -> int:
        raise BlockingIOError

    def _tls_read(self, size: int) -> bytes:
        return self._sock.recv(size)

    def send_corked(self, data: bytes, more: bytes = b"") -> None:
        """Write all of ``data`` and then ``more`` (a request's head and body), held back until
        this hub's current round ends and then sent together with the other greenlets' corked
        writes (see :class:`geventagent._hub.Cork`). The next :meth:`recv` waits for
        readability without a first read attempt; it, or the next :meth:`send`, raises the
        write's error (as :meth:`send` would). Writes over ``CORK_MAX`` bytes, and sockets
        that are neither plain nor gevent's TLS over a plain one (TLS in a TLS proxy tunnel),
        are sent at once (with ``more`` not copied onto ``data``: see :meth:`send`)."""
        if (
            (self._raw is None and self._ssl is None)
            or len(data) + len(more) > CORK_MAX
            or self._corked is not None
            or self._cork_after is not None
        ):
            self.send(data, more or None)
            return
        if more:
            data += more
        self._corked = data
        hub = self._hub
        if hub is None:
            hub = self._hub = _hub.hub_state()
        if self._check_stale == STALE_AT_WRITE:
            hub.cork.add_check(self)  # handed over: the round's one poll(0) comes first
        else:
            hub.cork.add(self)

    # the cork's side (_hub.Corked): in the hub, never raising
    def _cork_checked(self) -> None:
        self._check_stale = 0
        if self._corked is not None:
            reason = self._peek()  # a spurious readiness is None
            if reason is not None:
                self._mark_stale(reason)
        self._cork_flush(True)

    def _cork_flush(self, polled: bool) -> int:
        check = self._check_stale
        if check:
            if check == STALE_AT_WRITE:
                if not polled and self._corked is not None and not self.destroyed:
                    return _hub.CHECK  # one poll(0) for the round's handed-over sockets first
                self._check_stale = 0
            elif not polled:
                if self._corked is not None:
                    return _hub.AFTER_POLL  # the idle watcher answers after the next poll
            else:
                self._check_stale = 0
                watcher = self._watcher
                # Ready in this poll, or not watched through it: peek (a spurious wake-up is None).
                # (libuv's watchers have no ``pending``: there every reused socket is peeked.)
                if watcher is None or not watcher.active or getattr(watcher, "pending", True):
                    reason = self._peek()
                    if reason is not None and self._corked is not None:
                        self._mark_stale(reason)
                if watcher is not None:
                    watcher.stop()
        # The write, in the hub, without waiting: an error, or what the kernel did not take, is
        # left in _cork_after for the owning greenlet, which is woken if it waits.
        data = self._corked
        if data is None:
            if isinstance(self._cork_after, StaleSocket):
                self._wake_corked()
            return _hub.WRITTEN
        self._corked = None
        after: Any = None
        try:
            if self.destroyed or self.generation != _hub._generation or (self._raw is None and self._ssl is None):
                after = socket_hang_up()  # never write to a destroyed or inherited socket
            else:
                try:
                    if self._raw is not None:
                        sent = _socket.socket.send(self._raw, data)
                    else:
                        sent = self._tls_write_nowait(data)
                except BlockingIOError:
                    sent = 0
                except OSError as exc:
                    sent = -1
                    after = exc
                if sent >= 0:
                    self.bytes_written += sent
                    if sent < len(data):
                        after = memoryview(data)[sent:]  # the greenlet writes the rest, waiting as send() does
        except Exception as exc:  # noqa: BLE001  (one socket's failure must not hold the others)
            after = exc
        if after is not None:
            self._cork_after = after
            self._wake_corked()
        return _hub.WRITTEN

    def _wake_corked(self) -> None:
        sock = self._sock
        if self._cork_waiting and sock is not None:
            sock.hub.cancel_wait(sock._read_event, _CorkWake())

    def _await_cork(self, for_read: bool) -> bool:
        """In the owning greenlet, before its next I/O on this socket: if the cork has not been
        flushed yet, wait (for readability when ``for_read``: the flush comes first, then the
        response); then finish the write or raise its error (mapped as :meth:`send` maps it)."""
        sock = self._sock
        readable = False
        if (
            self._corked is not None
            and for_read
            and sock is not None
            and not self.destroyed
            and not (self._ssl is not None and self._ssl.pending())  # decrypted bytes wait already
        ):
            self._cork_waiting = True
            try:
                self._wait_read(sock)  # the socket's timeout; close() and the cork's wake-up cancel it
                readable = True
            except _CorkWake:
                pass
            except BaseException as exc:
                self._corked = None  # not flushed: nothing of it is written
                if isinstance(exc, Exception):
                    if self.destroyed or self._sock is None:
                        raise socket_hang_up() from exc
                    err = from_os_error(exc, "read")
                    if isinstance(err, RequestTimeout):
                        self.emit("timeout")
                    raise err from exc
                raise
            finally:
                self._cork_waiting = False
        data = self._corked
        if data is not None:  # readable (or a write is due) before the hub flushed: send it now
            self._corked = None
            self.send(data)
        after = self._cork_after
        if after is not None:
            self._cork_after = None
            if isinstance(after, BaseException):
                if isinstance(after, GeventAgentError):
                    raise after
                if self.destroyed:
                    raise socket_hang_up() from after
                raise from_os_error(after, "write") from after
            self.send(after)
        return readable

    def _wait_read(self, sock: Any) -> None:
        """Wait until ``sock`` (this socket's gevent socket) is readable, as gevent's
        ``sock._wait(sock._read_event)`` does: ``socket.timeout`` after the socket's timeout,
        and whatever ``hub.cancel_wait()`` throws (``close()``, the cork's wake-up). The timeout
        is one libev timer kept for this socket's waits; gevent's wait makes a ``Timeout`` (pure
        Python, with a new libev timer) for every wait, about 150 bytecodes and 4 us of a small
        request that has a timeout."""
        seconds = sock.timeout
        watcher = sock._read_event
        if not seconds or watcher.callback is not None:  # (gevent's wait raises for the latter)
            sock._wait(watcher)
            return
        timer = self._io_timer
        if timer is None or self._io_timer_after != seconds:
            if timer is not None:
                timer.close()
            # priority -1, as gevent's Timeout: I/O ready in the same loop iteration wins. A
            # repeating timer restarted with again(), which counts the full time from now: a
            # libev timer stopped and start()ed again resumes with what was left of it, so each
            # wait would get only what the earlier ones left.
            timer = self._io_timer = sock.hub.loop.timer(seconds, seconds, priority=-1)
            self._io_timer_after = seconds
        timer.again(_throw_timeout, gevent.getcurrent(), update=True)
        try:
            sock.hub.wait(watcher)
        finally:
            timer.stop()

    def recv(self, size: int = 65536, within: Optional[float] = None) -> bytes:
        """Read up to ``size`` bytes; ``b""`` at EOF.

        Args:
            within: seconds this read may wait, instead of the socket's :attr:`timeout` (a
                deadline's remainder: a head the server drips must still end in time).
        Raises:
            RequestTimeout (after ``'timeout'``), ConnectionReset, NetworkError.
        """
        readable = False
        if self._corked is not None or self._cork_after is not None:
            readable = self._await_cork(True)
        sock = self._sock
        just_sent, self._sent_whole = self._sent_whole, False
        try:
            if within is None:
                if self._ssl is not None:
                    data = self._tls_read(size)
                elif self._raw is not None:
                    if just_sent and not readable:
                        # Written whole just now, without waiting: the answer is rarely here
                        # yet, so wait for it first instead of a read that fails with EAGAIN
                        # (an exception raised and caught, ~2 us, on most large requests).
                        self._wait_read(sock)  # the socket's timeout; close() cancels it
                    # gevent's recv, on the C socket directly (one Python frame less) and with
                    # _wait_read's timer for the waits (not a gevent Timeout per wait).
                    raw = self._raw
                    while True:
                        try:
                            data = _socket.socket.recv(raw, size)
                            break
                        except BlockingIOError:
                            self._wait_read(sock)
                else:
                    data = sock.recv(size)
            else:
                sock.settimeout(within)
                try:
                    data = sock.recv(size)
                finally:
                    if not self.destroyed:
                        sock.settimeout(self.timeout or None)
        except (OSError, AttributeError) as exc:
            if self._sock is None or self.destroyed:
                raise socket_hang_up() from exc
            err = from_os_error(exc, "read")
            if isinstance(err, RequestTimeout):
                self.emit("timeout")
            raise err from exc
        self.bytes_read += len(data)
        return data

    # -- options --------------------------------------------------------------------------------
    def set_timeout(self, seconds: Optional[float], callback: Any = None) -> "Socket":
        """Inactivity limit for blocking reads/writes (``0``/``None``: none); Node's ``setTimeout``.

        ``callback`` is added as a ``once('timeout')`` listener.
        """
        seconds = float(seconds or 0)
        self.timeout = seconds
        sock = self._sock
        if sock is not None and self.connected and not self.destroyed:
            sock.settimeout(seconds or None)
        if callback is not None:
            self.once("timeout", callback)
        return self

    def set_keep_alive(self, enable: bool = False, initial_delay: float = 0.0) -> "Socket":
        """Turn TCP keep-alive on or off; ``initial_delay`` in seconds (Node's ``setKeepAlive``)."""
        sock = self._sock
        state = (enable, initial_delay)
        if sock is None or self.destroyed or self._keep_alive_state == state or sock.family == _stdsocket.AF_UNIX:
            return self  # unchanged: no system call (the agent asks on every pooling, as Node does)
        self._keep_alive_state = state
        try:
            sock.setsockopt(_stdsocket.SOL_SOCKET, _stdsocket.SO_KEEPALIVE, 1 if enable else 0)
            if enable and initial_delay and hasattr(_stdsocket, "TCP_KEEPIDLE"):
                sock.setsockopt(_stdsocket.IPPROTO_TCP, _stdsocket.TCP_KEEPIDLE, max(1, int(initial_delay)))
        except OSError:
            pass
        return self

    def set_no_delay(self, flag: bool = True) -> "Socket":
        """Disable (True) or enable Nagle's algorithm."""
        sock = self._sock
        if sock is not None and not self.destroyed and sock.family != _stdsocket.AF_UNIX:
            sock.setsockopt(_stdsocket.IPPROTO_TCP, _stdsocket.TCP_NODELAY, 1 if flag else 0)
        return self

    def ref(self) -> "Socket":
        """Let this socket's idle timer keep ``gevent.wait()`` waiting (Node's ``ref()``)."""
        self._refed = True
        if self._timer is not None:
            self._timer.ref = True
        lst = self._idle_list
        if lst is not None:  # a shared list's timer is unref'd: move to a timer of its own
            self._idle_list = None
            lst.discard(self)
            self._start_idle_timer(lst.seconds)
        return self

    def unref(self) -> "Socket":
        """Do not let this socket's idle timer keep ``gevent.wait()`` waiting (Node's ``unref()``)."""
        self._refed = False
        if self._timer is not None:
            self._timer.ref = False
        return self

    # -- idle timer (used by the agent while the socket is free) ---------------------------------
    def _start_idle_timer(self, seconds: float, now: Optional[float] = None) -> None:
        """(Re)start the idle timer for the full ``seconds``; ``'timeout'`` is emitted when it ends.

        An unref'd socket (the agent's free sockets) joins this hub's timer list for ``seconds``
        (:class:`geventagent._hub.TimerList`). A ref'd one has a timer of its own: a libev timer
        that is stopped resumes with its *remaining* time and one that fired restarts at once,
        so it repeats with ``repeat=seconds`` and is restarted with ``again()``, which always
        counts from now. ``now``: ``time.monotonic()`` if the caller has just read it."""
        if seconds is None or seconds <= 0 or seconds == _INF:
            return
        lst = self._idle_list
        if lst is not None:
            self._idle_list = None
            lst.discard(self)
        if not self._refed:
            hub = self._hub
            if hub is None:
                hub = self._hub = _hub.hub_state()
            lst = hub.idle_list(seconds)
            if lst is not None:
                timer = self._timer
                if timer is not None:
                    timer.stop()
                self._idle_list = lst
                lst.add(self, now)
                return
        timer = self._timer
        if timer is None or self._timer_after != seconds:
            if timer is not None:
                timer.close()
            timer = self._timer = gevent.get_hub().loop.timer(seconds, seconds, ref=self._refed)
            self._timer_after = seconds
        timer.again(self._on_idle_timer, update=True)

    def _pool(self, seconds: float, reason: str = "idle_timeout") -> None:
        """The agent pools this socket: idle from now, ``'timeout'`` after ``seconds`` (none if
        not positive or infinite), watched for FIN, RST or stray bytes. ``reason``: its close
        reason when that limit expires (``"idle_timeout"`` or ``"ttl"``)."""
        now = self.freed_at = time.monotonic()
        self._idle_limit = seconds
        self._idle_reason = reason
        self._check_stale = 0
        self._start_idle_timer(seconds, now)
        self._watch_idle()

    def _reuse(self) -> None:
        """The agent takes this socket for a request: what :meth:`_stop_idle_timer`,
        :meth:`_unwatch_idle` and :meth:`ref` do, in one call."""
        self._idle_limit = None
        lst = self._idle_list
        if lst is not None:
            self._idle_list = None
            lst.entries.pop(self, None)
        timer = self._timer
        if timer is not None:
            timer.stop()
            timer.ref = True
        watcher = self._watcher
        if watcher is not None and not self._check_stale:
            watcher.stop()  # else it watches on until the write (see _cork_flush)
        self._refed = True

    def _unpool(self) -> None:
        """Off the pool without a request (``'agentRemove'`` on a free socket): timers and watcher stop."""
        self._idle_limit = None
        self._stop_idle_timer()
        self._unwatch_idle()

    def _stop_idle_timer(self) -> None:
        lst = self._idle_list
        if lst is not None:
            self._idle_list = None
            lst.discard(self)
        timer = self._timer
        if timer is not None:
            timer.stop()

    def _on_idle_expired(self, lst: _hub.TimerList) -> None:
        if self._idle_list is lst:  # else taken or listed again by an earlier socket's listener
            self._on_idle_timer()

    def _on_idle_timer(self) -> None:
        self._idle_list = None
        timer = self._timer
        if timer is not None:
            timer.stop()
        if not self.destroyed:
            self.emit("timeout")

    #: Whether :meth:`_before_release` does anything (a TLS socket that has a session to cache).
    _RELEASE_HOOK = False

    def _before_release(self) -> None:
        """Called when a response ended, before the socket is pooled or closed (TLS: cache the session)."""

    # -- liveness of an idle socket ----------------------------------------------------------------
    def _peek(self) -> Optional[str]:
        """Non-blocking check of an idle socket: None if healthy, else why it is not
        (``"server_close"``: FIN seen; ``"unexpected_data"``; ``"reset_while_idle"``)."""
        sock = self._sock
        if sock is None or self.destroyed:
            return "destroyed"
        try:
            data = _socket.socket.recv(sock._sock, 1, _PEEK_FLAGS)  # the unpatched C method
        except BlockingIOError:
            return None
        except OSError:
            return "reset_while_idle"
        return "unexpected_data" if data else "server_close"

    def _watch_idle(self) -> None:
        """While free: an unref'd read watcher notices FIN, RST or stray bytes at once (Node reads
        its free sockets). It starts in the same hub round as the response's read ends and stops
        in the round the socket is reused, so the fd's epoll interest never drops to nothing and
        libev makes no epoll_ctl call per request (with a 20 ms delay it made one: ``EEXIST``)."""
        sock = self._sock
        if sock is None or self.destroyed:
            return
        watcher = self._watcher
        if watcher is None:
            watcher = self._watcher = gevent.get_hub().loop.io(sock.fileno(), 1, ref=False)
        watcher.start(self._on_idle_readable)

    def _unwatch_idle(self) -> None:
        watcher = self._watcher
        if watcher is not None:
            watcher.stop()

    def _on_idle_readable(self) -> None:
        reason = self._peek()
        if reason is None:
            return  # spurious wake-up
        self._unwatch_idle()
        if self._check_stale:  # taken for a request that has not written yet: it never will here
            self._check_stale = 0
            self._mark_stale(reason)
            return
        if not self.destroyed:
            if reason == "server_close" and self._events and "end" in self._events:
                self.emit("end")
            self.destroy(reason=reason)

    def _mark_stale(self, reason: str) -> None:
        """Found closed (or with stray bytes) after a request took it, before its write: the
        write is dropped and raises :class:`StaleSocket`, and the request goes out again on a
        new connection (nothing of it reached the server)."""
        self._stale_reason = reason
        self._corked = None
        self._cork_after = StaleSocket(reason)
        # A greenlet waiting in _await_cork is woken when the cork flushes (see _uncork).

    # -- teardown -------------------------------------------------------------------------------
    def _closing(self, reason: Optional[str], had_error: bool) -> None:
        """The one place ``close_reason`` is set: the first reason given wins; a socket found
        stale keeps that reason; otherwise ``"error"`` or ``"closed"``."""
        if self.close_reason is None:
            self.close_reason = self._stale_reason or reason or ("error" if had_error else "closed")

    def destroy(self, exc: Optional[BaseException] = None, *, reason: Optional[str] = None) -> None:
        """Close the connection now (idempotent). Emits ``'error'(exc)`` when ``exc`` is given and
        somebody listens, then ``'close'(had_error)``; never writes to the peer.

        Args:
            exc: the error that caused it (Node's ``destroy(err)``).
            reason (str | None): why, for :attr:`close_reason` and ``agent.status()["close_reasons"]``
                (``"idle_timeout"``, ``"server_close"``, ``"stale"``, ...); the first one given wins.
        """
        if self.destroyed:
            return
        self.destroyed = True
        self.connecting = False
        self._closing(reason, exc is not None)
        self._idle_limit = None
        timer = self._timer
        if timer is not None:
            timer.close()
            self._timer = None
        timer = self._io_timer
        if timer is not None:
            timer.close()
            self._io_timer = None
        watcher = self._watcher
        if watcher is not None:
            watcher.close()
            self._watcher = None
        self._unlist()
        sock = self._sock
        self._raw = self._ssl = None
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass
        try:
            if exc is not None and self._events and "error" in self._events:
                self.emit("error", exc)
        finally:  # ('close' keeps the agent's counts: an 'error' listener that raises must not skip it)
            self._emit_all("close", exc is not None)

    close = destroy

    def _close_quietly(self, reason: str) -> None:
        """Close the fd and watchers without events or writes (an inherited socket after fork)."""
        self.destroyed = True
        self._closing(reason, False)
        self._idle_limit = None
        self._unlist()
        for name in ("_timer", "_watcher"):
            watcher = getattr(self, name)
            setattr(self, name, None)
            if watcher is not None:
                watcher.close()
        sock, self._sock, self._raw, self._ssl = self._sock, None, None, None
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass

    def _unlist(self) -> None:
        lst = self._idle_list
        if lst is not None:
            self._idle_list = None
            lst.discard(self)

    def __enter__(self) -> "Socket":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.destroy()
