"""``Agent``: Node's ``http.Agent`` pool (``lib/_http_agent.js``, v20) on gevent, and ``global_agent``.

Three maps and one counter, as in Node: ``requests`` (waiting requests per origin), ``sockets``
(sockets assigned to requests), ``free_sockets`` (idle, pooled sockets) and ``total_socket_count``.
Sockets leave the agent in one place: their ``'close'`` or ``'agentRemove'`` listener.
The bookkeeping never yields: connecting, reading and writing happen in the requesting greenlet,
and what to do with a socket is decided by the pure functions of ``_policy`` before any I/O.

The agent knows a request only through :class:`PoolRequest`, and keeps its own record of each
waiting one (:class:`Waiting`, httpcore's ``PoolRequest``).

Deliberate differences from Node (README, "Differences from Node"): ``max_sockets`` and
``max_total_sockets`` are hard caps on every path; waiting requests of all origins are served in
arrival order; a queued request handed a used socket is protected as one taken from the pool
(stale check, safe retry, ``reused_socket``); options are validated and unknown ones raise;
``free_socket_timeout`` closes idle sockets; the server's ``Keep-Alive: timeout=N`` hint is
honoured without an agent ``timeout``; waiting can be bounded (``queue_timeout``, ``max_queued``).
"""

from __future__ import annotations

import itertools
import logging
import math
import time
import weakref
from collections import deque
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Deque,
    Dict,
    FrozenSet,
    List,
    NamedTuple,
    Optional,
    Protocol,
    Set,
    Tuple,
)

import gevent
from gevent.monkey import get_original

from . import _hub, _options, _policy
from . import proxy as _proxy
from ._options import AGENT_OPTIONS, is_number, validate_cap, validate_retry, validate_scheduling, validate_seconds
from .errors import QueueFull, QueueTimeout, ThreadError, socket_hang_up
from .events import EventEmitter
from .socket import STALE_AFTER_POLL, STALE_AT_WRITE, Socket, fork_generation

if TYPE_CHECKING:  # pragma: no cover
    from .incoming import IncomingMessage

__all__ = ["Agent", "PoolRequest", "Waiting", "global_agent", "live_agents"]

_real_get_ident = get_original("_thread", "get_ident")
_queue_seq = itertools.count()
_INF = math.inf
_log = logging.getLogger("geventagent")
_DEBUG = logging.DEBUG
_COUNTERS = (
    "sockets_created",
    "create_errors",
    "sockets_closed",
    "socket_errors",
    "timeouts",
    "requests",
    "reused",
    "retries",
    "redispatched",
    "queue_timeouts",
    "queue_full",
)


class PoolRequest(Protocol):
    """What the agent needs of a request (a :class:`~geventagent.ClientRequest` is one).

    Attributes:
        timeout: the request's socket inactivity limit in seconds (None: the agent's).
        queue_timeout: seconds it may wait for a socket (None: the agent's ``queue_timeout``;
            ``math.inf``: as long as it takes).
        reused_socket: set True when it is given a socket that served a request before.
        fresh_connection: True to never take a free socket (a retry after a lost reuse).
        stale_check_at_write: True when the request checks a reused socket right before its
            write (and goes out again elsewhere if stale); else the agent peeks before handing it.
    """

    timeout: Optional[float]
    queue_timeout: Optional[float]
    reused_socket: bool
    fresh_connection: bool
    stale_check_at_write: bool

    def on_socket(self, socket: Optional[Socket], err: Optional[BaseException] = None) -> None:
        """The socket for this request, or the error that stops it (never blocks)."""


class Waiting(NamedTuple):
    """The agent's record of a request waiting for a socket (httpcore's ``PoolRequest``).

    ``options`` are the caller's, not the merged copy: ``create_socket`` merges the agent's
    again, and a request parked for long holds one cold dict fewer. (A tuple, made with
    ``tuple.__new__``: a queued request costs no Python-level constructor call.)"""

    req: PoolRequest
    name: str
    seq: int  # arrival order across origins
    options: Dict[str, Any]
    since: float  # time.monotonic() when it started waiting


_new_waiting = tuple.__new__


class _AgentOptions(dict):
    """``Agent.options``: a dict that also holds the origin keys worked out from it, by request
    ``(host, port, servername)``, and forgets them whenever it changes (a changed
    ``local_address``, ``family`` or TLS option changes every key)."""

    __slots__ = ("names",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.names: Dict[Tuple[Any, Any, Any], str] = {}

    def __setitem__(self, key: Any, value: Any) -> None:
        self.names.clear()
        super().__setitem__(key, value)

    def __delitem__(self, key: Any) -> None:
        self.names.clear()
        super().__delitem__(key)

    def __ior__(self, other: Any) -> "_AgentOptions":  # type: ignore[misc]
        self.update(other)
        return self

    def __reduce__(self) -> Any:  # a copy or a pickle is a plain dict
        return (dict, (dict(self),))

    def update(self, *args: Any, **kwargs: Any) -> None:
        self.names.clear()
        super().update(*args, **kwargs)

    def setdefault(self, key: Any, default: Any = None) -> Any:
        self.names.clear()
        return super().setdefault(key, default)

    def pop(self, key: Any, *default: Any) -> Any:
        self.names.clear()
        return super().pop(key, *default)

    def popitem(self) -> Tuple[Any, Any]:
        self.names.clear()
        return super().popitem()

    def clear(self) -> None:
        self.names.clear()
        super().clear()


# Every agent of this process, held weakly (for gunicorn's hooks: geventagent.contrib.gunicorn).
_live_agents: "weakref.WeakSet[Agent]" = weakref.WeakSet()


def live_agents() -> List["Agent"]:
    """Every :class:`Agent` (and :class:`~geventagent.HttpsAgent`) of this process that is still
    referenced, including ``global_agent`` and ``https_global_agent``; a new list each call."""
    return list(_live_agents)


# DEBUG lines on? ``_log_cache.get(_DEBUG, True) and _log.isEnabledFor(_DEBUG)``: the logger's
# own cache of isEnabledFor (setLevel() and logging.disable() clear it in place) answers False
# with one dict lookup, so the lines cost nothing measurable when DEBUG is off.
_log_cache: Dict[int, bool] = getattr(_log, "_cache", {})

#: The ``get_name`` implementations whose key is a function of the request's host, port and
#: servername and of ``agent.options`` alone, so ``add_request`` may cache it per origin:
#: ``Agent``'s and ``HttpsAgent``'s own (a subclass's override may read anything, and is called
#: for every request, as Node calls ``getName()``).
_CACHEABLE_GET_NAMES: Set[Any] = set()
#: The request options such a cached key may be taken for (the cache key is host, port and
#: servername; a timeout changes no origin key).
_KEY_CACHE_OPTIONS = frozenset(("host", "port", "servername", "timeout"))


#: Agent options checked when set, at construction and later (``agent.max_sockets = 5``): each
#: value's check and normal form, as the constructor documents them.
_RUNTIME_OPTIONS: Dict[str, Callable[[Any], Any]] = {
    "max_sockets": lambda v: validate_cap("max_sockets", v, 1),
    "max_total_sockets": lambda v: validate_cap("max_total_sockets", v, 1),
    "max_free_sockets": lambda v: validate_cap("max_free_sockets", v, 0),
    "max_requests_per_socket": lambda v: validate_cap("max_requests_per_socket", v, 1),
    "max_queued": lambda v: validate_cap("max_queued", v, 0),
    "scheduling": validate_scheduling,
    "retry": validate_retry,
    "queue_timeout": lambda v: validate_seconds("queue_timeout", v),
    # (0 and None mean no limit)
    "free_socket_timeout": lambda v: validate_seconds("free_socket_timeout", v, allow_inf=True) or _INF,
    "socket_ttl": lambda v: validate_seconds("socket_ttl", v, allow_inf=True) or _INF,
    "keep_alive_initial_delay": lambda v: validate_seconds("keep_alive_initial_delay", v) or 1.0,
    # Node (v24.7, PR #59315): anything but a finite number >= 0 silently becomes the default.
    "keep_alive_timeout_buffer": lambda v: float(v) if is_number(v) and 0 <= v < _INF else 1.0,
}
_CAPS = frozenset(("max_sockets", "max_total_sockets"))


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
        queue_timeout (float | None): seconds a request may wait for a socket before it fails with
            ``QueueTimeout`` (``ERR_AGENT_QUEUE_TIMEOUT``, a ``TimeoutError``), having sent
            nothing; per request too. None (default): as long as it takes.
        max_queued (int | None): requests that may wait for a socket, all origins together; one
            more fails at once with ``QueueFull`` (``ERR_AGENT_QUEUE_FULL``). Default unlimited.
        proxy (str | None): ``http://[user:password@]host[:port]`` or ``https://...``: requests go
            through it (``http:`` ones in absolute form, ``https:`` ones through a CONNECT
            tunnel); a request's own ``proxy=`` wins (``""``: no proxy for it).
        proxy_env (bool): take the proxy from ``HTTP_PROXY`` / ``HTTPS_PROXY`` / ``NO_PROXY``
            (read once, now; the lower-case names win). Default False, as Node's ``proxyEnv``.
        proxy_tls (Mapping | None): TLS options (``ca``, ``cert``, ``key``, ``reject_unauthorized``,
            ...) for the connection to an ``https://`` proxy.
        local_address, family (4/6), socket_path, no_delay (default True), connect_timeout,
            auto_select_family (default True), auto_select_family_attempt_timeout (seconds,
            default 0.25): connect options (Node's ``net.connect`` options in snake_case). With
            ``auto_select_family``, a host name's addresses are tried families alternating, each
            attempt but the last for at most the attempt timeout (Node v20's default).
        lookup (callable | None): ``lookup(hostname, family) -> address(es)``, a resolver in
            place of gevent's (Node's ``lookup``, synchronous: it may block its greenlet
            cooperatively); ``family`` is 0, 4 or 6; the answer an IP address, an
            ``(address, family)`` pair or a list of them. Not asked for IP literals.

    Raises:
        UnknownOptionError (a ``TypeError``, ``ERR_INVALID_ARG_VALUE``): an unknown option name
            (``maxSockets``, ``max_socket``): names the nearest valid one.
        InvalidArgTypeError / OutOfRangeError / InvalidArgValueError: a bad value (Node's codes).

    Ports Node's ``Agent`` constructor (node-agent.md §1), with the caps validated.
    """

    default_port = 80
    protocol = "http:"
    # The options' normal forms (what __setattr__ stores; caps and limits: math.inf for none).
    max_sockets: float
    max_total_sockets: float
    max_free_sockets: float
    max_requests_per_socket: float
    max_queued: float
    free_socket_timeout: float
    socket_ttl: float
    keep_alive_initial_delay: float
    keep_alive_timeout_buffer: float
    queue_timeout: Optional[float]
    scheduling: str
    retry: Any
    #: The option names this class accepts (``HttpsAgent`` adds the TLS ones).
    OPTION_NAMES: FrozenSet[str] = AGENT_OPTIONS

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
        queue_timeout: Optional[float] = None,
        max_queued: Optional[float] = None,
        proxy: Optional[str] = None,
        proxy_env: bool = False,
        proxy_tls: Optional[Dict[str, Any]] = None,
        **connect_options: Any,
    ) -> None:
        if connect_options:
            _options.check_names(connect_options, self.OPTION_NAMES, "%s()" % type(self).__name__)
        self._over_cap = False  # a cap was lowered below what is open (see __setattr__)
        # (each validated and normalised by __setattr__, here and when set later: _RUNTIME_OPTIONS)
        self.max_sockets = max_sockets
        self.max_total_sockets = max_total_sockets
        self.max_free_sockets = max_free_sockets
        self.scheduling = scheduling
        timeout = validate_seconds("timeout", timeout)
        self.keep_alive_initial_delay = keep_alive_initial_delay
        self.free_socket_timeout = free_socket_timeout  # type: ignore[assignment]  # (None -> inf)
        self.keep_alive_timeout_buffer = keep_alive_timeout_buffer
        _options.validate_connect_options(connect_options)
        self.socket_ttl = socket_ttl  # type: ignore[assignment]  # (None -> inf)
        self.max_requests_per_socket = max_requests_per_socket  # type: ignore[assignment]  # (None -> inf)
        self.retry = retry
        self.queue_timeout = queue_timeout
        self.max_queued = max_queued  # type: ignore[assignment]  # (None -> inf)
        self.keep_alive = keep_alive
        self.proxy = proxy or None
        self._proxy = _proxy.parse_proxy(proxy) if proxy else None
        self._proxy_env = _proxy.ProxyEnv() if proxy_env else None
        if proxy_tls:
            _options.check_names(proxy_tls, _options.TLS_OPTIONS, "proxy_tls")
        self.proxy_tls: Dict[str, Any] = dict(proxy_tls or {})
        self.options: Dict[str, Any] = _AgentOptions(connect_options)
        self.options.setdefault("no_delay", True)
        if timeout:
            self.options["timeout"] = timeout
        self._queues: Dict[str, Deque[Waiting]] = {}
        self._waiting: Dict[PoolRequest, Waiting] = {}
        self._queue_timers: Dict[PoolRequest, Any] = {}  # queue_timeout timers of waiting requests
        # The hooks Node lets users override: the default ones are inlined on the hot paths.
        # Node sets defaultPort and protocol on the instance; so do we (from the class's values),
        # and CPython 3.11 then specializes their per-request reads.
        self.default_port = self.default_port
        self.protocol = self.protocol
        cls = type(self)
        # Origin keys are cached per request (host, port, servername) when no override may read
        # anything else and no proxy decides per request (see add_request).
        self._names_cacheable = cls.get_name in _CACHEABLE_GET_NAMES and self._proxy is None and self._proxy_env is None
        self._own_reuse_hook = cls.reuse_socket is not Agent.reuse_socket
        self._own_keep_hook = cls.keep_socket_alive is not Agent.keep_socket_alive
        self.sockets: Dict[str, List[Socket]] = {}
        self.free_sockets: Dict[str, Deque[Socket]] = {}
        self.total_socket_count = 0
        self.counters: Dict[str, int] = dict.fromkeys(_COUNTERS, 0)
        self.close_reasons: Dict[str, int] = {}
        self._queue_wait = [0, 0.0, 0.0]  # count, total and max seconds (a list: no __setattr__ per request)
        self._thread_id: Optional[int] = None  # bound on first use
        self._generation = fork_generation()
        self._own_free = self._on_free  # the agent's own 'free' listener (see _SocketHooks.onfree)
        self.on("free", self._own_free)
        _live_agents.add(self)

    def __repr__(self) -> str:
        self._check_fork()
        return "<%s total=%d active=%d free=%d queued=%d>" % (
            type(self).__name__,
            self.total_socket_count,
            sum(len(v) for v in self.sockets.values()),
            sum(len(v) for v in self.free_sockets.values()),
            len(self._waiting),
        )

    @property
    def requests(self) -> Dict[str, List[PoolRequest]]:
        """Waiting requests per origin key, in arrival order (Node's ``agent.requests``; a snapshot)."""
        return {name: [entry.req for entry in queue] for name, queue in self._queues.items()}

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
        proxy = options.get("_proxy")
        if proxy is not None:
            name += ":proxy=" + proxy.key
        return name

    def _with_proxy(self, options: Dict[str, Any]) -> None:
        """Which proxy, if any, carries a request with these (merged) options: its own ``proxy``
        (``""`` or None-like: none), else the agent's, else the environment's rule for its origin.
        Sets ``options["_proxy"]``: a :class:`~geventagent.proxy.Proxy`, or None (decided: direct)."""
        if "_proxy" in options:
            return
        if "proxy" in options:
            given = options.pop("proxy")
            chosen = _proxy.parse_proxy(given) if given else None
        elif self._proxy is not None:
            chosen = self._proxy
        elif self._proxy_env is not None:
            chosen = self._proxy_env.for_target(
                self.protocol, options.get("host") or "localhost", int(options.get("port") or self.default_port)
            )
        else:
            return
        if options.get("socket_path"):
            chosen = None
        options["_proxy"] = chosen
        if chosen is not None and chosen.scheme == "https":
            options["_proxy_tls"] = self.proxy_tls

    # -- guards -----------------------------------------------------------------------------------
    def _check_context(self) -> None:
        if self._generation != _hub._generation:
            self._reset_after_fork()
        ident = _real_get_ident()
        if ident != self._thread_id:
            if self._thread_id is None:
                self._thread_id = ident
                return
            raise ThreadError(
                "This Agent belongs to the OS thread (and gevent hub) that created it; create one Agent per thread"
            )

    def _check_fork(self) -> None:
        if self._generation != fork_generation():
            self._reset_after_fork()

    def _reset_after_fork(self) -> None:
        """In a fork child: close inherited sockets (fd only, never written to) and start clean,
        with counters of its own (``close_reasons["fork"]`` counts the inherited sockets closed)."""
        closed = 0
        for group in list(self.free_sockets.values()) + list(self.sockets.values()):
            for sock in list(group):
                sock._close_quietly("fork")
                closed += 1
        waiting = list(self._waiting)
        self.free_sockets.clear()
        self.sockets.clear()
        self._queues.clear()
        self._waiting.clear()
        for timer in self._queue_timers.values():
            timer.close()
        self._queue_timers.clear()
        self.total_socket_count = 0
        self.counters = dict.fromkeys(_COUNTERS, 0)
        self.counters["sockets_closed"] = closed
        self.close_reasons = {"fork": closed} if closed else {}
        self._queue_wait = [0, 0.0, 0.0]
        self._thread_id = None
        self._generation = fork_generation()
        for req in waiting:  # the parent's waiting greenlets, resumed in the child
            req.on_socket(None, socket_hang_up())

    # -- Node addRequest (§4.2) --------------------------------------------------------------------
    def add_request(self, req: PoolRequest, options: Any, port: Any = None, local_address: Any = None) -> None:
        """Give ``req`` a socket: reuse a free one, create one under the caps, or queue it.

        The socket (or the error that stops the request) reaches it through
        ``req.on_socket(socket, err=None)``. Ports Node's ``addRequest`` (node-agent.md §4.2);
        also accepts the legacy ``(req, host, port, local_address)`` form.
        """
        if isinstance(options, str):
            options = {"host": options, "port": port, "local_address": local_address}
        if self._generation != _hub._generation or _real_get_ident() != self._thread_id:
            self._check_context()
        given = options
        own = self.options
        options = {**options, **own}
        size = len(given)
        if (
            self._names_cacheable
            and (size == 2 or (size <= 4 and given.keys() <= _KEY_CACHE_OPTIONS))
            and "proxy" not in options
        ):
            # The common case, a request's host and port (and its timeout, and through an
            # HttpsAgent its servername) and nothing else, and no proxy: its key once per origin
            # (formatting it was a tenth of a small request's own work; an HttpsAgent's 20 TLS
            # fields, 1.5 us). A timeout is in no key.
            key = (given.get("host"), given.get("port"), given.get("servername"))
            try:
                names = own.names  # type: ignore[attr-defined]
            except AttributeError:  # options replaced by a plain dict: nothing is cached
                names = {}
            name = names.get(key)
            if name is None:
                name = self.get_name(options)
                if key[0] is not None and key[1] is not None:  # (the two keys are host and port)
                    if len(names) >= 1024:
                        names.clear()
                    names[key] = name
        else:
            if self._proxy is not None or self._proxy_env is not None or "proxy" in options:
                self._with_proxy(options)
            name = self.get_name(options)
        self.counters["requests"] += 1
        if not req.fresh_connection and name in self.free_sockets:
            socket = self._take_free(name, req)
            if socket is not None:
                if socket._agent is not self:  # a foreign socket put in free_sockets: adopt it
                    self.total_socket_count += 1
                    self._install_listeners(socket, name, options)
                self.sockets.setdefault(name, []).append(socket)
                if _log_cache.get(_DEBUG, True) and _log.isEnabledFor(_DEBUG):
                    _log.debug("socket reused %s (%d requests before)", name, socket.requests)
                self.reuse_socket(socket, req)
                self._set_request_socket(req, socket)
                return
        if name not in self._queues and self._origin_count(name) < self.max_sockets:
            if self.total_socket_count >= self.max_total_sockets:
                self._evict_idle()
            if self.total_socket_count < self.max_total_sockets:
                self.create_socket(req, options, self._handoff(req))
                return
        self._enqueue(req, name, given)

    def _take_free(self, name: str, req: PoolRequest) -> Optional[Socket]:
        """Pop a usable free socket of ``name`` (Node's scheduling); drop the ones past their TTL
        or found closed while idle."""
        free = self.free_sockets.get(name)
        while free:
            socket = free.popleft() if self.scheduling == "fifo" else free.pop()
            if not free:
                del self.free_sockets[name]
                free = None
            if socket.destroyed:
                continue
            if self.socket_ttl != _INF and time.monotonic() - socket.created_at >= self.socket_ttl:
                socket.destroy(reason="ttl")
                free = self.free_sockets.get(name)
                continue
            if socket.connected and not self._protect(socket, req):
                free = self.free_sockets.get(name)
                continue
            return socket
        return None

    def _protect(self, socket: Socket, req: PoolRequest) -> bool:
        """A socket that served a request before is about to carry ``req``: have it checked right
        before the write (``stale_check_at_write``: a pooled socket's idle watcher runs on until
        then; one handed straight over is peeked at the write), or peek now. False (and the
        socket destroyed) if it is already closed, reset or holds stray bytes."""
        if req.stale_check_at_write:
            socket._check_stale = STALE_AFTER_POLL if socket._idle_limit is not None else STALE_AT_WRITE
            return True
        stale = socket._peek()
        if stale is None:
            return True
        socket.destroy(reason=stale)  # its 'close' serves the waiting requests
        return False

    def _enqueue(self, req: PoolRequest, name: str, options: Dict[str, Any]) -> None:
        waiting = self._waiting
        if len(waiting) >= self.max_queued:
            self.counters["queue_full"] += 1
            req.on_socket(None, QueueFull("%d requests already wait for a socket (max_queued)" % len(waiting)))
            return
        entry = _new_waiting(Waiting, (req, name, next(_queue_seq), options, time.monotonic()))
        queue = self._queues.get(name)
        if queue is None:
            queue = self._queues[name] = deque()
        queue.append(entry)
        waiting[req] = entry
        limit = req.queue_timeout
        if limit is None:
            limit = self.queue_timeout
        if limit is not None and limit != _INF:
            timer = self._queue_timers[req] = gevent.get_hub().loop.timer(limit, 0.0, ref=True)  # wakes the waiter
            timer.start(self._on_queue_timeout, entry)
        if _log_cache.get(_DEBUG, True) and _log.isEnabledFor(_DEBUG):
            _log.debug("request queued %s (%d waiting)", name, len(waiting))

    def _unqueue(self, entry: Waiting) -> None:
        """Forget a waiting request (timed out or destroyed): its queue entry and timer."""
        self._waiting.pop(entry.req, None)
        queue = self._queues.get(entry.name)
        if queue is not None:
            if queue and queue[0] is entry:
                queue.popleft()
            else:
                try:
                    queue.remove(entry)
                except ValueError:
                    pass
            if not queue:
                del self._queues[entry.name]
        if self._queue_timers:
            timer = self._queue_timers.pop(entry.req, None)
            if timer is not None:
                timer.close()

    def _on_queue_timeout(self, entry: Waiting) -> None:
        if self._waiting.get(entry.req) is not entry:
            return
        self._unqueue(entry)
        self.counters["queue_timeouts"] += 1
        waited = time.monotonic() - entry.since
        entry.req.on_socket(
            None,
            QueueTimeout(
                "waited %.3f s for a socket to %s (queue_timeout): nothing was sent" % (waited, entry.name),
                waited=waited,
            ),
        )

    def _handoff(self, req: PoolRequest) -> Callable[[Optional[BaseException], Optional[Socket]], None]:
        def oncreate(err: Optional[BaseException], socket: Optional[Socket]) -> None:
            if err is not None or socket is None:
                req.on_socket(socket, err)
            else:
                self._set_request_socket(req, socket)

        return oncreate

    def _origin_count(self, name: str) -> int:
        active = self.sockets.get(name)
        free = self.free_sockets.get(name)
        return (len(active) if active else 0) + (len(free) if free else 0)

    def _heads(self) -> List[Tuple[str, int, int]]:
        """``(origin, arrival of its first waiting request, sockets it has open)`` per waiting origin."""
        return [(name, queue[0].seq, self._origin_count(name)) for name, queue in self._queues.items() if queue]

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
        oldest.destroy(reason="evicted")
        return True

    # -- Node createSocket (§4.3) ------------------------------------------------------------------
    def create_socket(
        self,
        req: PoolRequest,
        options: Dict[str, Any],
        cb: Callable[[Optional[BaseException], Optional[Socket]], None],
    ) -> None:
        """Create a socket for ``req`` via :meth:`create_connection`, count it, then ``cb(err, socket)``.

        Exceptions raised by ``create_connection`` propagate (as in Node).
        """
        options = {**options, **self.options}
        if self._proxy is not None or self._proxy_env is not None or "proxy" in options:
            self._with_proxy(options)
        name = self.get_name(options)
        options["_agent_key"] = name
        if self.keep_alive:
            options["keep_alive"] = True
            options["keep_alive_initial_delay"] = self.keep_alive_initial_delay
        done: List[bool] = []

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
            if _log_cache.get(_DEBUG, True) and _log.isEnabledFor(_DEBUG):
                _log.debug("socket created %s (%d open)", name, self.total_socket_count)
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
        name = socket._agent_name
        if socket._agent is not self or name is None:
            name = self.get_name(options)
        if socket.destroyed:
            return
        queues = self._queues
        queue = queues.get(name) if queues else None
        if queue:
            if self._over_cap and self._still_over_cap(name):
                # A cap lowered at run time: this socket is not handed on; the queue is served by
                # the sockets within the cap (its 'close' opens none while the origin is at it).
                socket.destroy(reason="over_cap")
                return
            entry = queue[0]
            if self.max_total_sockets != _INF and _policy.older_waiter_elsewhere(
                self._heads(), name, entry.seq, self.max_sockets
            ):
                socket.destroy(reason="rebalance")  # its 'close' serves the oldest waiting request
                return
            req, _, _, _, since = entry  # (unpacked: CPython 3.11 does not specialize field reads)
            used = socket.requests > 0
            if used:
                # Handed over from the request before: the same protection as a socket taken
                # from the pool (a difference from Node, which leaves reusedSocket false here).
                if req.stale_check_at_write:
                    socket._check_stale = STALE_AT_WRITE
                elif not self._protect(socket, req):
                    return  # destroyed: its 'close' made a new socket for the queue's head
            queue.popleft()
            if not queue:
                del queues[name]
            del self._waiting[req]
            if self._queue_timers:
                timer = self._queue_timers.pop(req, None)
                if timer is not None:
                    timer.close()
            waited = time.monotonic() - since
            stats = self._queue_wait
            stats[0] += 1
            stats[1] += waited
            if waited > stats[2]:
                stats[2] = waited
            if _log_cache.get(_DEBUG, True) and _log.isEnabledFor(_DEBUG):
                _log.debug("request dequeued %s after %.3f s, on a %s socket", name, waited, "used" if used else "new")
            if used:
                if self._own_reuse_hook:
                    self.reuse_socket(socket, req)
                else:
                    req.reused_socket = True  # reuse_socket()'s effect: nothing of a pool to stop here
            self._set_request_socket(req, socket)
            return
        # No request of this origin waits: pool the socket or close it.
        free = self.free_sockets.get(name)
        free_len = len(free) if free else 0
        active = self.sockets.get(name)
        reason = _policy.pool_verdict(
            self.keep_alive,
            self.total_socket_count,
            self.max_total_sockets,
            free_len,
            len(active) if active else 0,
            self.max_sockets,
            self.max_free_sockets,
            bool(queues)
            and self.max_total_sockets != _INF
            and _policy.older_waiter_elsewhere(self._heads(), name, _INF, self.max_sockets),
        )
        limit, limit_reason = _INF, "idle_timeout"
        if reason is None and not (socket.connected and socket.requests):
            reason = "unused"  # never carried a request (handed to a request destroyed meanwhile)
        if reason is None:
            reason, limit, limit_reason = self._lifetime(socket)
        if reason is None and self._own_keep_hook:
            if not self.keep_socket_alive(socket):  # a user hook (Node's keepSocketAlive)
                reason = "keep_alive_refused"
        elif reason is None:
            socket.set_keep_alive(True, self.keep_alive_initial_delay)
            socket.unref()
        if reason is not None:
            socket.destroy(reason=reason)
            return
        if free is None:
            free = self.free_sockets[name] = deque()
        socket._http_message = None
        self.remove_socket(socket, options)
        if socket.destroyed:
            return
        socket._pool(limit, limit_reason)
        free.append(socket)
        if _log_cache.get(_DEBUG, True) and _log.isEnabledFor(_DEBUG):
            _log.debug("socket freed %s (%d free; idle limit %s s)", name, len(free), limit)

    def _still_over_cap(self, name: str) -> bool:
        """Whether origin ``name`` (or the agent) holds more sockets than its lowered caps allow;
        when no origin does any more, the check is off again."""
        sockets, free_sockets = self.sockets, self.free_sockets

        def held(key: str) -> int:
            return len(sockets.get(key) or ()) + len(free_sockets.get(key) or ())

        if held(name) > self.max_sockets or self.total_socket_count > self.max_total_sockets:
            return True
        if all(held(key) <= self.max_sockets for key in set(sockets) | set(free_sockets)):
            self._over_cap = False
        return False

    def __setattr__(self, name: str, value: Any) -> None:
        """Options set after construction are checked as the constructor checks them (Node's
        ``agent.maxSockets = 0`` would leave queued requests waiting forever; ``"5"`` fail each
        request with a bare TypeError). A cap lowered below what is open is held from then on: a
        socket freed over it is closed, not handed to the next queued request."""
        check = _RUNTIME_OPTIONS.get(name)
        if check is not None:
            value = check(value)
            previous = getattr(self, name, None)  # (None: the constructor's first set)
            if name in _CAPS and previous is not None and value < previous:
                object.__setattr__(self, "_over_cap", True)
        object.__setattr__(self, name, value)

    def _lifetime(self, socket: Socket) -> Tuple[Optional[str], float, str]:
        ttl = self.socket_ttl
        return _policy.keep_alive_limit(
            socket.requests,
            self.max_requests_per_socket,
            self.free_socket_timeout,
            self.options.get("timeout") or 0,
            ttl - (time.monotonic() - socket.created_at) if ttl != _INF else _INF,
            socket.keep_alive_hint,
            self.keep_alive_timeout_buffer,
        )

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
        if self._queues:
            self._serve_waiting()

    def _serve_waiting(self) -> None:
        queues = self._queues
        for _ in range(len(queues) + 8):
            if not queues or self.total_socket_count >= self.max_total_sockets:
                return
            best = _policy.oldest_waiting_origin(self._heads(), self.max_sockets)
            if best is None:
                return
            entry = queues[best][0]

            def oncreate(err: Optional[BaseException], socket: Optional[Socket], entry: Waiting = entry) -> None:
                if err is not None or socket is None:
                    if self._waiting.get(entry.req) is entry:
                        self._unqueue(entry)
                    entry.req.on_socket(None, err)
                else:
                    socket._emit_all("free")  # §4.8: the queue head takes it

            self.create_socket(entry.req, entry.options, oncreate)

    def _dequeue(self, req: PoolRequest) -> None:
        """Take a destroyed request out of its queue (Node leaves it there; we release it now)."""
        entry = self._waiting.get(req)
        if entry is not None:
            self._unqueue(entry)

    # -- hooks (§5) --------------------------------------------------------------------------------
    def keep_socket_alive(self, socket: Socket) -> bool:
        """Hook: may this socket be pooled? Default: TCP keep-alive on, ``unref()``, and True unless
        a lifetime refuses (the server's ``Keep-Alive`` hint at or below the buffer, or ``max=0``;
        ``socket_ttl`` spent; ``max_requests_per_socket`` reached). The idle limit is
        min(``free_socket_timeout``, agent ``timeout``, time left under ``socket_ttl``, the hint's
        ``timeout=N`` minus ``keep_alive_timeout_buffer``). An override decides after those
        lifetimes. Ports Node's ``keepSocketAlive`` (§5.2, §6.3), which reads only ``timeout=``
        and only when it starts the header."""
        socket.set_keep_alive(True, self.keep_alive_initial_delay)
        socket.unref()
        return self._lifetime(socket)[0] is None

    def reuse_socket(self, socket: Socket, req: PoolRequest) -> None:
        """Hook: a socket that served a request before is given to ``req`` (from the pool, or
        handed over from the request before it): stop its idle timer, mark
        ``req.reused_socket = True`` and ``ref()`` it. Ports Node's ``reuseSocket`` (§5.3), which
        Node calls for pooled sockets only."""
        socket._reuse()  # idle timer stopped, ref()'d; the idle watcher runs on until a stale check
        req.reused_socket = True

    def _set_request_socket(self, req: PoolRequest, socket: Socket) -> None:
        timeout = req.timeout
        if timeout is None:
            timeout = self.options.get("timeout") or 0
        if socket.timeout != timeout:
            socket.set_timeout(timeout)
        req.on_socket(socket)

    # -- teardown and inspection -------------------------------------------------------------------
    def destroy(self, *, reason: str = "agent_destroy") -> None:
        """Destroy every free, then every active socket (Node's ``agent.destroy()``, §7.1).

        Requests that were using a socket fail with ``ECONNRESET``. Like Node, the agent stays usable
        and queued requests are served on new sockets. Synchronous: it needs no running hub (gunicorn's
        master calls it before each fork).

        Args:
            reason (str): the close reason counted in ``status()["close_reasons"]``.
        """
        self._check_fork()
        for free in list(self.free_sockets.values()):
            for socket in list(free):
                socket.destroy(reason=reason)
        for active in list(self.sockets.values()):
            for socket in list(active):
                socket.destroy(reason=reason)

    close = destroy

    def __enter__(self) -> "Agent":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.destroy()

    def status(self) -> Dict[str, Any]:
        """Counters and gauges of this agent (of this process after a fork).

        Returns:
            dict: the counters (``sockets_created``, ``create_errors``, ``sockets_closed``,
            ``socket_errors``, ``timeouts``, ``requests``, ``reused`` (requests served on a
            connection that served one before, on every path), ``retries``, ``redispatched``,
            ``queue_timeouts``, ``queue_full``), ``total_socket_count``, the gauges ``active`` /
            ``free`` / ``queued``, ``queue_wait`` (``{"count", "total_seconds",
            "max_seconds"}`` of the requests served after waiting), ``close_reasons``
            (``{reason: n}``), ``origins`` (``{name: {"active", "free", "queued"}}``) and
            ``proxies`` (the same counts per proxy, keyed like ``proxy.key``).
        """
        self._check_fork()
        origins: Dict[str, Dict[str, int]] = {}
        proxies: Dict[str, Dict[str, int]] = {}
        for key, attr in (("active", self.sockets), ("free", self.free_sockets), ("queued", self._queues)):
            for name, group in attr.items():
                origins.setdefault(name, {"active": 0, "free": 0, "queued": 0})[key] = len(group)
                if ":proxy=" in name:
                    via = name.rpartition(":proxy=")[2]
                    counts = proxies.setdefault(via, {"active": 0, "free": 0, "queued": 0})
                    counts[key] += len(group)
        result: Dict[str, Any] = dict(self.counters)
        result.update(
            total_socket_count=self.total_socket_count,
            active=sum(o["active"] for o in origins.values()),
            free=sum(o["free"] for o in origins.values()),
            queued=len(self._waiting),
            queue_wait={
                "count": self._queue_wait[0],
                "total_seconds": self._queue_wait[1],
                "max_seconds": self._queue_wait[2],
            },
            close_reasons=dict(self.close_reasons),
            origins=origins,
            proxies=proxies,
        )
        return result

    # -- convenience -------------------------------------------------------------------------------
    def request(self, method: str, url: Any, **kw: Any) -> "IncomingMessage":
        """``geventagent.request(method, url, agent=self, **kw)``: blocks until the response head.

        Raises:
            UnknownOptionError for an unknown keyword; see :func:`geventagent.request`.
        """
        return (_client_request or _load_client_request())(method, url, agent=self, **kw)

    def get(self, url: Any, **kw: Any) -> "IncomingMessage":
        """``geventagent.get(url, agent=self, **kw)``."""
        return (_client_request or _load_client_request())("GET", url, agent=self, **kw)


_CACHEABLE_GET_NAMES.add(Agent.get_name)

#: ``client.request``, bound on first use (client imports this module). A function-level
#: ``from .client import request`` ran the import machinery on every ``agent.get()``: ~0.75 us.
_client_request: Optional[Callable[..., "IncomingMessage"]] = None


def _load_client_request() -> Callable[..., "IncomingMessage"]:
    global _client_request
    from .client import request

    _client_request = request
    return request


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
        agent = self.agent
        events = agent._events
        if events is not None and events.get("free") is agent._own_free:
            agent._on_free(self.socket, self.options)  # the agent's 'free' listener alone: emit()'s effect
        else:
            agent._emit_all("free", self.socket, self.options)  # (a listener put first must not skip _on_free)

    def onclose(self, had_error: bool = False) -> None:
        agent, socket = self.agent, self.socket
        agent.total_socket_count -= 1
        counters = agent.counters
        counters["sockets_closed"] += 1
        if had_error:
            counters["socket_errors"] += 1
        reason = socket.close_reason or "closed"
        if reason == "connect_error":
            counters["create_errors"] += 1
        agent.close_reasons[reason] = agent.close_reasons.get(reason, 0) + 1
        if _log_cache.get(_DEBUG, True) and _log.isEnabledFor(_DEBUG):
            _log.debug("socket closed %s: %s (%d open)", self.name, reason, agent.total_socket_count)
        agent.remove_socket(socket, self.options)

    def ontimeout(self) -> None:
        if self._is_free():
            self.agent.counters["timeouts"] += 1
            self.socket.destroy(reason=self.socket._idle_reason)

    def onerror(self, exc: Any = None) -> None:
        # Node's freeSocketErrorListener: an error on an idle socket drops it from the pool.
        if self._is_free():
            self.socket.destroy(reason="error")

    def onremove(self) -> None:
        agent, socket, name = self.agent, self.socket, self.name
        agent.total_socket_count -= 1
        if self._is_free():
            free = agent.free_sockets[name]
            free.remove(socket)
            if not free:
                del agent.free_sockets[name]
            socket._unpool()
        reason = "agent_remove"
        agent.close_reasons[reason] = agent.close_reasons.get(reason, 0) + 1
        agent.remove_socket(socket, self.options)
        for event in ("close", "free", "agentRemove", "timeout", "error"):
            for handler in socket.raw_listeners(event):
                if getattr(handler, "__self__", None) is self:
                    socket.remove_listener(event, handler)
        socket._agent = None


#: The default agent (Node >= 19): keep-alive, LIFO, 5 s socket timeout. Assign
#: ``geventagent.global_agent`` to replace it (read at call time, as Node's ``http.globalAgent``).
global_agent = Agent(keep_alive=True, scheduling="lifo", timeout=5.0)
