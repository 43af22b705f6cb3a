"""``AgentUser``: a drop-in for locust's ``FastHttpUser`` whose HTTP client is a geventagent
:class:`~geventagent.Agent` (hard connection caps, keep-alive, stale-socket safety).

Change the class name and keep the locustfile::

    from locust import task
    from geventagent.contrib.locust import AgentUser

    class Api(AgentUser):
        host = "http://127.0.0.1:8080"
        concurrency = 10            # FastHttpUser's name for the per-user connection cap (max_sockets)

        @task
        def index(self):
            self.client.get("/")

The client is :class:`AgentSession`, with FastHttpSession's constructor, methods (``request``,
``get`` ... ``options``, ``iter_lines``, ``rename_request``), ``catch_response``, ``rest()`` and a
cookie jar per user; each request fires ``environment.events.request`` with exactly locust's nine
keyword arguments and the ``context`` as given. What differs from FastHttpUser is listed in the
README's locust section.
"""

from __future__ import annotations

import codecs
import difflib
import http.client
import importlib
import json as _json
import re
import time
import urllib.request
import weakref
import zlib
from base64 import b64encode
from contextlib import contextmanager
from http.cookiejar import CookieJar
from typing import Any, Callable, Dict, Generator, Iterator, Optional, Tuple, cast
from urllib.parse import unquote, urlencode, urljoin, urlsplit, urlunsplit

import gevent
from locust import User
from locust.exception import CatchResponseError, LocustError, ResponseError

try:  # locust >= 2.27: a missing host stops the test
    from locust.exception import StopTest
except ImportError:  # pragma: no cover - exercised with an older locust
    StopTest = LocustError  # type: ignore[misc, assignment]

import geventagent as ga
from geventagent.errors import (
    GeventAgentError,
    HttpParseError,
    InvalidArgTypeError,
    InvalidArgValueError,
    InvalidCharError,
    InvalidHttpTokenError,
    InvalidProtocolError,
    UnescapedCharactersError,
    UnknownOptionError,
)

try:  # locust >= 2.46.6; older versions define rest() on FastHttpUser itself
    from locust.user.users import RestMixin as _RestBase
except ImportError:  # pragma: no cover - exercised with an older locust
    from ._locust_rest import RestMixin as _RestBase  # type: ignore[assignment]

__all__ = ["AgentUser", "AgentSession", "AgentResponse", "ResponseContextManager", "BadStatusCode"]

VALID_STATUS_CODES = frozenset((200, 201, 202, 203, 204, 205, 206, 207, 208, 226, 301, 302, 303, 304, 307, 308))
REDIRECT_STATUS_CODES = frozenset((301, 302, 303, 307, 308))
#: Errors raised by bad input in the task itself: never recorded, always re-raised (as locust does
#: for errors outside FastHttpUser's FAILURE_EXCEPTIONS).
_PROGRAMMING_ERRORS = (
    InvalidArgTypeError,
    InvalidArgValueError,
    InvalidCharError,
    InvalidHttpTokenError,
    InvalidProtocolError,
    UnescapedCharactersError,
)
FAILURE_EXCEPTIONS = (GeventAgentError, OSError, gevent.Timeout, HttpParseError, zlib.error)
_ACCEPT_ENCODING = "gzip, deflate, br"
#: The keyword arguments of AgentSession.request (FastHttpSession's, plus requests' params/timeout/files).
_REQUEST_ARGS = (
    "name",
    "data",
    "catch_response",
    "stream",
    "headers",
    "auth",
    "json",
    "allow_redirects",
    "context",
    "params",
    "timeout",
    "files",
)


class BadStatusCode(GeventAgentError, ConnectionError):
    """A status code outside locust's valid set; ``str()`` is FastHttpUser's ``URL <url>: code=<n>``."""

    code = "ERR_BAD_STATUS"

    def __init__(self, url: str, status: int) -> None:
        super().__init__("URL %s: code=%d" % (url, status))
        self.url = url
        self.status = status
        self.original = None


def _with_original(error: BaseException) -> BaseException:
    """geventhttpclient's errors carry ``.original`` (the socket-level error); ours too: the
    cause when it is an ``OSError``, else the error itself (a ``RequestTimeout`` is a ``socket.timeout``)."""
    if getattr(error, "original", None) is None:
        cause = error.__cause__
        try:
            error.original = cause if isinstance(cause, OSError) else error  # type: ignore[attr-defined]
        except AttributeError:  # pragma: no cover - an exception type without a __dict__
            pass
    return error


class _Request:
    """What was sent (FastHttpUser's ``response.request``): ``method``, ``url``, ``headers``, ``body``."""

    def __init__(self, method: str, url: str, headers: Dict[str, str], body: Any) -> None:
        self.method = method
        self.url = url
        self.headers = headers
        self.body = body


class _Headers(dict):
    """Response headers: case-insensitive ``[]``, ``get`` and ``in``, repeated fields joined with ``", "``."""

    def __init__(self, raw: Any) -> None:
        super().__init__()
        self._names: Dict[str, str] = {}
        for name, value in raw:
            key = name.lower()
            if key in self._names:
                dict.__setitem__(self, self._names[key], dict.__getitem__(self, self._names[key]) + ", " + value)
            else:
                self._names[key] = name
                dict.__setitem__(self, name, value)

    def __getitem__(self, name: Any) -> Any:
        return dict.__getitem__(self, self._names[str(name).lower()])

    def get(self, name: Any, default: Any = None) -> Any:
        key = self._names.get(str(name).lower())
        return default if key is None else dict.__getitem__(self, key)

    def __contains__(self, name: Any) -> bool:
        return str(name).lower() in self._names


def _decoder(encoding: str) -> Optional[Callable[[bytes], bytes]]:
    """A streaming decoder for a Content-Encoding (gzip, deflate, br when ``brotli`` is installed)."""
    encoding = encoding.strip().lower()
    if encoding in ("gzip", "x-gzip"):
        return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress
    if encoding == "deflate":
        state: Dict[str, Any] = {}

        def deflate(data: bytes) -> bytes:
            obj = state.get("obj")
            if obj is None:  # zlib-wrapped (RFC 1950) as it should be, or raw deflate as some servers send
                try:
                    obj = zlib.decompressobj()
                    out = obj.decompress(data)
                except zlib.error:
                    obj = zlib.decompressobj(-zlib.MAX_WBITS)
                    out = obj.decompress(data)
                state["obj"] = obj
                return out
            return cast(bytes, obj.decompress(data))

        return deflate
    if encoding == "br":
        try:
            brotli: Any = importlib.import_module("brotli")  # optional (geventhttpclient installs it)
        except ImportError:
            return None
        return cast(Callable[[bytes], bytes], brotli.Decompressor().process)
    return None


class AgentResponse:
    """A response as locust users expect it (FastResponse's surface).

    ``status_code`` (0 on a connection error), ``headers`` (case-insensitive), ``content`` (bytes,
    decoded per ``Content-Encoding``; None on an error), ``text`` (with ``encoding``, settable;
    else the Content-Type charset, else detected), ``json()``, ``ok``, ``url``, ``request``,
    ``error``, ``raise_for_status()``, ``iter_content()``, ``stream`` / ``read()`` / ``readline()``
    for ``stream=True``, ``release()``; and, beyond FastResponse, ``reused_socket`` and ``timings``
    (phase durations in ms: ``queue``, ``connect``, ``ttfb``)."""

    encoding: Optional[str] = None

    def __init__(self, request: _Request, message: Optional[ga.IncomingMessage] = None, error: Any = None) -> None:
        self.request = request
        self._message = message
        self.error = error
        self.status_code = message.status_code if message is not None else 0
        self.headers: Optional[_Headers] = _Headers(message.raw_headers) if message is not None else None
        self.reused_socket = bool(message is not None and message.req.reused_socket)
        self.timings: Dict[str, float] = {}
        self._content: Optional[bytes] = None
        self._read = message is None
        self._decode: Optional[Callable[[bytes], bytes]] = None
        self._buffer = b""
        if message is not None:
            coding = message.headers.get("content-encoding")
            if isinstance(coding, str) and coding:
                self._decode = _decoder(coding)

    # -- the body ---------------------------------------------------------------------------------
    def _arrived(self) -> Iterator[bytes]:
        """The (decoded) body as it arrives: what is buffered, then each piece as the socket
        delivers it."""
        if self._buffer:
            data, self._buffer = self._buffer, b""
            yield data
        message = self._message
        if message is None or self._read:
            return
        for raw in message:
            data = self._decode(raw) if self._decode else raw
            if data:
                yield data

    def _chunk(self, size: int) -> bytes:
        """Up to ``size`` decoded bytes; b"" at the end."""
        message = self._message
        if message is None:
            return b""
        while len(self._buffer) < size:
            raw = message.read(size)
            if not raw:
                break
            self._buffer += self._decode(raw) if self._decode else raw
        out, self._buffer = self._buffer[:size], self._buffer[size:]
        return out

    @property
    def content(self) -> Optional[bytes]:
        if self._message is None:
            return None
        if not self._read:
            self._read = True
            raw = self._buffer + (self._decode(self._message.read()) if self._decode else self._message.read())
            self._buffer = b""
            self._content = raw
        return self._content

    @property
    def stream(self) -> "AgentResponse":
        """The body as a file (``read(n)``, ``readline()``): FastResponse's ``stream`` with ``stream=True``."""
        return self

    def read(self, amt: Optional[int] = None) -> bytes:
        """Read (decoded) body bytes: all that is left, or up to ``amt``."""
        if amt is None:
            if self._read:
                data, self._content = self._content or b"", b""
                return data
            return self.content or b""
        return self._chunk(amt)

    def readline(self) -> bytes:
        line = b""
        while not line.endswith(b"\n"):
            part = self._chunk(1)
            if not part:
                break
            line += part
        return line

    def __iter__(self) -> Iterator[bytes]:
        while True:
            line = self.readline()
            if not line:
                return
            yield line

    def release(self) -> None:
        """Give the connection back (a short unread remainder is drained, a long one closes it)."""
        if self._message is not None:
            self._message.close()

    @property
    def text(self) -> Optional[str]:
        content = self.content
        if content is None:
            return None
        if self.encoding is None:
            from requests.utils import get_encoding_from_headers

            self.encoding = get_encoding_from_headers(cast(Any, self.headers)) if self.headers else None
            if not self.encoding:
                from charset_normalizer import detect

                self.encoding = detect(content)["encoding"] or "utf-8"
        return str(content, str(self.encoding), errors="replace")

    def json(self) -> Any:
        return _json.loads(self.text)  # type: ignore[arg-type]

    @property
    def ok(self) -> bool:
        return 0 < self.status_code < 400

    @property
    def url(self) -> Optional[str]:
        return self.request.url if self.request is not None else None

    def iter_content(self, chunk_size: int = 1024, decode_content: bool = True) -> Iterator[Any]:
        if self._message is None:
            raise LocustError("Cannot iterate content on a response without a body")
        while True:
            chunk = self._chunk(chunk_size)
            if not chunk:
                return
            if decode_content:
                try:
                    yield chunk.decode("utf-8")
                    continue
                except UnicodeDecodeError:
                    pass
            yield chunk

    def raise_for_status(self) -> None:
        if self.error is not None:
            raise self.error

    def success(self) -> None:
        raise LocustError("If you want to change the state of the request, you must pass catch_response=True.")

    def failure(self, *args: Any, **kwargs: Any) -> None:
        raise LocustError("If you want to change the state of the request, you must pass catch_response=True.")

    def __enter__(self) -> "AgentResponse":
        raise LocustError("In order to use a with-block for requests, you must also pass catch_response=True")

    def __exit__(self, *exc_info: Any) -> None:  # pragma: no cover - __enter__ always raises
        return None


class ResponseContextManager(AgentResponse):
    """``catch_response=True``: nothing is recorded until the ``with`` block exits; ``success()`` /
    ``failure()`` decide (the last call wins), as in locust."""

    _manual_result: Any = None
    _entered = False

    def __init__(self, response: AgentResponse, request_event: Any, request_meta: Dict[str, Any]) -> None:
        self.__dict__.update(response.__dict__)
        self._request_event = request_event
        self.request_meta = request_meta

    def __enter__(self) -> "ResponseContextManager":
        self._entered = True
        return self

    def __exit__(self, exc: Any, value: Any, traceback: Any) -> bool:  # type: ignore[override]
        if self._manual_result is not None:
            self.request_meta["exception"] = None if self._manual_result is True else self._manual_result
            self._report()
            return exc is None
        if exc:
            if isinstance(value, ResponseError):
                self.request_meta["exception"] = value
                self._report()
                return True
            return False
        try:
            self.raise_for_status()
        except FAILURE_EXCEPTIONS as error:
            self.request_meta["exception"] = error
        self._report()
        return True

    def _report(self) -> None:
        self._request_event.fire(**self.request_meta)

    def success(self) -> None:
        if not self._entered:
            raise LocustError("Tried to set status on a request that has not yet been made. Use a with-block.")
        self._manual_result = True

    def failure(self, exc: Any) -> None:
        if not self._entered:
            raise LocustError("Tried to set status on a request that has not yet been made. Use a with-block.")
        if not isinstance(exc, Exception):
            exc = CatchResponseError(exc)
        self._manual_result = exc

    def raise_for_status(self) -> None:
        if not self._manual_result:
            super().raise_for_status()
        elif isinstance(self._manual_result, Exception):
            raise self._manual_result


class _CookieResponse:
    """What ``CookieJar.extract_cookies`` reads: ``info()`` (an ``http.client.HTTPMessage``)."""

    def __init__(self, message: ga.IncomingMessage) -> None:
        msg = http.client.HTTPMessage()
        msg._headers = list(message.raw_headers)  # type: ignore[attr-defined]  # as email's parser stores them
        self._msg = msg

    def info(self) -> http.client.HTTPMessage:
        return self._msg


#: geventhttpclient pools (FastHttpUser's ``client_pool``) -> the agents that stand for them.
_shared_pools: "weakref.WeakKeyDictionary[Any, Tuple[ga.Agent, ga.HttpsAgent]]" = weakref.WeakKeyDictionary()

#: FastHttpSession's keyword arguments (geventhttpclient's client options) and what they become.
_SESSION_OPTIONS = (
    "network_timeout",
    "connection_timeout",
    "max_redirects",
    "max_retries",
    "concurrency",
    "proxy_host",
    "proxy_port",
    "compress",
    "default_headers",
    "agent",
    "https_agent",
    # the older names of this module
    "timeout",
    "connect_timeout",
)


class AgentSession:
    """The ``client`` of an :class:`AgentUser`: FastHttpSession's interface over geventagent agents.

    Args:
        base_url (str): prefixed to paths that are not absolute URLs (``user.host``; credentials in
            it become Basic auth, percent-decoded).
        request_event: ``environment.events.request`` (fired once per request).
        user: the User (its ``context()`` is merged under each request's ``context``).
        insecure (bool): False (the default here; FastHttpSession's is True) verifies TLS certificates.
        client_pool: a geventagent ``Agent`` shared by several sessions (or a geventhttpclient
            ``HTTPClientPool``, for which one shared agent pair is made).
        ssl_context_factory: a callable returning the ``ssl.SSLContext`` for https (called once, on
            the first https request; its errors are raised to the caller).
        network_timeout (float): seconds of socket inactivity (FastHttpUser's; default 60).
        connection_timeout (float): seconds to connect (default 60). max_redirects (int, default 30).
        max_retries (int): extra attempts of a request whose connection was refused (default 0).
        concurrency (int): connections per origin (``max_sockets``; default 10).
        proxy_host / proxy_port: an http proxy. compress (bool): send ``Accept-Encoding`` and decode
            (default True). agent / https_agent: agents to use as they are.
    Raises:
        UnknownOptionError: an unknown keyword argument (naming the nearest valid one).
    """

    def __init__(
        self,
        base_url: Any,
        request_event: Any = None,
        user: Any = None,
        insecure: bool = False,
        client_pool: Any = None,
        ssl_context_factory: Optional[Callable[[], Any]] = None,
        **kwargs: Any,
    ) -> None:
        if hasattr(base_url, "events"):  # the older form: AgentSession(environment, base_url, user)
            base_url, request_event = request_event, base_url.events.request
        for key in kwargs:
            if key not in _SESSION_OPTIONS:
                near = difflib.get_close_matches(key, _SESSION_OPTIONS, 1)
                raise UnknownOptionError(
                    "AgentSession() got an unknown option %r%s" % (key, "; did you mean %r?" % near[0] if near else "")
                )
        self.request_event = request_event
        self.user = user
        self.cookiejar = CookieJar()
        self.insecure = insecure
        self.timeout = kwargs.get("network_timeout", kwargs.get("timeout", 60.0))
        self.connect_timeout = kwargs.get("connection_timeout", kwargs.get("connect_timeout", 60.0))
        self.max_redirects = kwargs.get("max_redirects", 30)
        self.max_retries = kwargs.get("max_retries", 0)
        self.compress = kwargs.get("compress", True)
        self.default_headers = dict(kwargs.get("default_headers") or {})
        self.request_name: Optional[str] = None
        self._ssl_context_factory = ssl_context_factory
        proxy_host, proxy_port = kwargs.get("proxy_host"), kwargs.get("proxy_port")
        self.proxy = "http://%s:%s" % (proxy_host, proxy_port or 8080) if proxy_host else None
        self._own_agents: list = []
        agent, https_agent = kwargs.get("agent"), kwargs.get("https_agent")
        options: Dict[str, Any] = dict(keep_alive=True, max_sockets=kwargs.get("concurrency", 10))
        if self.connect_timeout:
            options["connect_timeout"] = self.connect_timeout
        if self.proxy:
            options["proxy"] = self.proxy
        if client_pool is not None:
            if isinstance(client_pool, ga.Agent):
                agent = agent or (client_pool if not isinstance(client_pool, ga.HttpsAgent) else None)
                https_agent = https_agent or (client_pool if isinstance(client_pool, ga.HttpsAgent) else None)
            else:  # a geventhttpclient HTTPClientPool: one agent pair per pool, as shared as the pool
                pair = _shared_pools.get(client_pool)
                if pair is None:
                    shared = dict(options, max_sockets=getattr(client_pool, "concurrency", None) or 10)
                    pair = (ga.Agent(**shared), ga.HttpsAgent(reject_unauthorized=not insecure, **shared))
                    _shared_pools[client_pool] = pair
                agent, https_agent = agent or pair[0], https_agent or pair[1]
        if agent is None:
            agent = ga.Agent(**options)
            self._own_agents.append(agent)
        self.agent = agent
        self._https_agent = https_agent
        self._https_options = options
        self.auth_header: Optional[str] = None
        self.base_url = base_url or ""
        if base_url:
            parts = urlsplit(base_url)
            if parts.username is not None:
                self.auth_header = _basic(unquote(parts.username), unquote(parts.password or ""))
                netloc = parts.netloc.rpartition("@")[2]  # keeps an IPv6 host's brackets
                self.base_url = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))

    @property
    def https_agent(self) -> ga.HttpsAgent:
        agent = self._https_agent
        if agent is None:
            tls: Dict[str, Any] = {"reject_unauthorized": not self.insecure}
            if self._ssl_context_factory is not None:
                tls = {"ssl_context": self._ssl_context_factory()}
            agent = self._https_agent = ga.HttpsAgent(**tls, **self._https_options)
            self._own_agents.append(agent)
        return agent

    def close(self) -> None:
        """Destroy the agents this session made (shared ones are left alone)."""
        for agent in self._own_agents:
            agent.destroy()

    def _build_url(self, path: str) -> str:
        if re.match(r"^https?://", path, re.I):
            return path
        return self.base_url + path  # FastHttpSession's: the path is appended as given ("?x=1" too)

    def _agent_for(self, url: str) -> Any:
        return self.https_agent if url[:6].lower() == "https:" else self.agent

    def _cookie_header(self, method: str, url: str, headers: Dict[str, str]) -> None:
        if not len(self.cookiejar):
            return
        probe = urllib.request.Request(url, method=method)
        self.cookiejar.add_cookie_header(probe)
        cookie = probe.get_header("Cookie")
        if cookie and not any(k.lower() == "cookie" for k in headers):
            headers["Cookie"] = cookie

    def _send(
        self,
        method: str,
        url: str,
        headers: Dict[str, str],
        body: Any,
        stream: bool,
        allow_redirects: bool,
        timeout: Optional[float],
    ) -> AgentResponse:
        request = _Request(method, url, headers, body)
        redirects = 0
        attempts = 0
        try:
            while True:
                sent = dict(headers)
                self._cookie_header(method, url, sent)
                try:
                    message = ga.request(
                        method, url, headers=sent, body=body, agent=self._agent_for(url), timeout=timeout
                    )
                except (ga.errors.ConnectionRefused, ga.errors.ConnectionReset) as error:
                    if attempts >= (self.max_retries or 0) or not getattr(error, "syscall", None) == "connect":
                        raise
                    attempts += 1
                    continue
                if message.raw_headers:
                    self.cookiejar.extract_cookies(
                        _CookieResponse(message),  # type: ignore[arg-type]
                        urllib.request.Request(url, method=method),
                    )
                status = message.status_code
                location = message.headers.get("location")
                if allow_redirects and status in REDIRECT_STATUS_CODES and location:
                    message.close()
                    if redirects >= self.max_redirects:
                        return AgentResponse(request, None, _with_original(BadStatusCode(url, status)))
                    redirects += 1
                    url = urljoin(url, location)
                    if status == 303 or (status in (301, 302) and method == "POST"):
                        method, body = ("GET" if method != "HEAD" else "HEAD"), None
                        headers = {
                            k: v for k, v in headers.items() if k.lower() not in ("content-type", "content-length")
                        }
                    continue
                response = AgentResponse(request, message)
                req = cast(ga.ClientRequest, message.req)
                phases = req.timings()
                response.timings = {
                    "queue": phases["queue"] * 1000,
                    "connect": phases["connect"] * 1000,
                    "ttfb": phases["ttfb"] * 1000,
                }
                if not stream:
                    response.content  # noqa: B018  (read the body now, inside the timing)
                if status not in VALID_STATUS_CODES:
                    response.error = BadStatusCode(request.url, status)
                return response
        except _PROGRAMMING_ERRORS:
            raise
        except FAILURE_EXCEPTIONS as error:
            return AgentResponse(request, None, _with_original(error))

    def request(self, method: str, url: str, **kwargs: Any) -> Any:
        """Send a request, record it, return an :class:`AgentResponse` (or a
        :class:`ResponseContextManager` with ``catch_response=True``).

        Keyword arguments: FastHttpSession's ``name``, ``data`` (bytes, str or a dict: form-encoded),
        ``catch_response``, ``stream``, ``headers``, ``auth`` ((user, password): Basic), ``json``,
        ``allow_redirects``, ``context`` (passed to the event as given), and ``params`` (a query),
        ``timeout`` (seconds), ``files`` (requests' form: multipart). Connection errors are recorded
        as failures and returned (``status_code`` 0, ``content`` None), never raised into the task.

        Raises:
            UnknownOptionError: an unknown keyword argument (nothing sent), naming the nearest.
        """
        for key in kwargs:
            if key not in _REQUEST_ARGS:
                near = difflib.get_close_matches(key, _REQUEST_ARGS, 1)
                raise UnknownOptionError(
                    "request() got an unknown keyword argument %r%s"
                    % (key, "; did you mean %r?" % near[0] if near else "")
                )
        name = kwargs.get("name")
        data = kwargs.get("data")
        json = kwargs.get("json")
        stream = bool(kwargs.get("stream"))
        if self.request_name and not name:
            name = self.request_name
        built_url = self._build_url(url)
        params = kwargs.get("params")
        if params:
            query = urlencode(params, doseq=True) if not isinstance(params, str) else params
            built_url += ("&" if "?" in built_url else "?") + query
        context = kwargs.get("context") or {}
        if self.user is not None:
            context = {**self.user.context(), **context}
        request_headers = {**self.default_headers, **(kwargs.get("headers") or {})}
        lower = {k.lower() for k in request_headers}
        auth = kwargs.get("auth")
        if auth:
            request_headers["Authorization"] = _basic(_text(auth[0]), _text(auth[1]))
        elif self.auth_header and "authorization" not in lower:
            request_headers["Authorization"] = self.auth_header
        if self.compress and "accept-encoding" not in lower:
            request_headers["Accept-Encoding"] = _ACCEPT_ENCODING
        body = data
        files = kwargs.get("files")
        if files:
            body, content_type = _multipart(data, files)
            request_headers["Content-Type"] = content_type
        elif isinstance(body, dict):
            body = urlencode(body, doseq=True)
            if "content-type" not in lower:
                request_headers["Content-Type"] = "application/x-www-form-urlencoded"
        elif not data and json is not None:
            body = _json.dumps(json)
            if "content-type" not in lower:
                request_headers["Content-Type"] = "application/json"
            if "accept" not in lower:
                request_headers["Accept"] = "application/json"
        timeout = kwargs.get("timeout")
        start_time = time.time()
        start = time.perf_counter()
        response = self._send(
            method.upper(),
            built_url,
            request_headers,
            body,
            stream,
            kwargs.get("allow_redirects", True),
            timeout if timeout is not None else self.timeout,
        )
        error = response.error
        length = 0
        if stream:
            length = int(response.headers.get("content-length") or 0) if response.headers else 0
        else:
            try:
                length = len(response.content or b"")
            except FAILURE_EXCEPTIONS as exc:  # the body failed (cut short, bad encoding)
                error = response.error = _with_original(exc)
        request_meta = {
            "request_type": method,
            "name": name or url,
            "response_time": (time.perf_counter() - start) * 1000,
            "response_length": length,
            "response": response,
            "context": context,
            "exception": error,
            "start_time": start_time,
            "url": built_url,
        }
        if kwargs.get("catch_response"):
            return ResponseContextManager(response, self.request_event, request_meta)
        self.request_event.fire(**request_meta)
        return response

    def get(self, url: str, **kwargs: Any) -> Any:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, data: Any = None, **kwargs: Any) -> Any:
        return self.request("POST", url, data=data, **kwargs)

    def put(self, url: str, data: Any = None, **kwargs: Any) -> Any:
        return self.request("PUT", url, data=data, **kwargs)

    def patch(self, url: str, data: Any = None, **kwargs: Any) -> Any:
        return self.request("PATCH", url, data=data, **kwargs)

    def delete(self, url: str, **kwargs: Any) -> Any:
        return self.request("DELETE", url, **kwargs)

    def head(self, url: str, **kwargs: Any) -> Any:
        return self.request("HEAD", url, **kwargs)

    def options(self, url: str, **kwargs: Any) -> Any:
        return self.request("OPTIONS", url, **kwargs)

    def iter_lines(self, url: str, method: str = "GET", **kwargs: Any) -> Generator[str, None, None]:
        """Stream the response and yield its lines (str, UTF-8, without the newline), as
        FastHttpSession; each line as soon as it has arrived (FastHttpSession reads 1 KiB at a
        time, so a stream of short events, an LLM's tokens, comes out a kilobyte late), and a
        character split between two reads is decoded whole (FastHttpSession decodes each read
        alone: U+FFFD in its place)."""
        response = self.request(method, url, stream=True, **kwargs)
        response.raise_for_status()
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        buffer = ""
        for piece in response._arrived():
            buffer += decoder.decode(piece)
            while "\n" in buffer:
                line, buffer = buffer.split("\n", 1)
                yield line
        buffer += decoder.decode(b"", final=True)
        if buffer:
            yield buffer

    @contextmanager
    def rename_request(self, name: str) -> Iterator[None]:
        """``with client.rename_request("name"):`` groups requests under one name."""
        self.request_name = name
        try:
            yield
        finally:
            self.request_name = None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _basic(user: str, password: str) -> str:
    return "Basic " + b64encode(("%s:%s" % (user, password)).encode("latin-1", "replace")).decode()


def _multipart(data: Any, files: Any) -> Tuple[bytes, str]:
    """requests' ``files=`` (and form ``data``) as a multipart body, by urllib3's encoder."""
    from urllib3 import encode_multipart_formdata

    fields: list = []
    for key, value in data.items() if isinstance(data, dict) else []:
        fields.append((key, _text(value)))
    for key, value in files.items() if isinstance(files, dict) else files:
        if isinstance(value, (tuple, list)):
            filename, content = value[0], value[1]
            mime = value[2] if len(value) > 2 else None
        else:
            filename, content, mime = getattr(value, "name", key), value, None
        if hasattr(content, "read"):
            content = content.read()
        fields.append((key, (filename, content, mime) if mime else (filename, content)))
    return encode_multipart_formdata(fields)


class AgentUser(User, _RestBase):
    """An abstract locust User whose ``client`` is an :class:`AgentSession` (FastHttpUser's drop-in).

    Class attributes, FastHttpUser's names first (read once per user):
        network_timeout (60.0 s, socket inactivity), connection_timeout (60.0 s), max_redirects (30),
        max_retries (0), concurrency (10 connections per origin), client_pool (a shared ``Agent``,
        or a geventhttpclient ``HTTPClientPool``), insecure (False: certificates are verified),
        ssl_context_factory, proxy_host / proxy_port, default_headers; and geventagent's:
        keep_alive (True), max_total_sockets (None = unlimited), max_free_sockets (256),
        compress (True: ``Accept-Encoding: gzip, deflate, br`` and decoding), agent / https_agent
        (None: each user has its own; set to share), and the older names max_sockets, timeout,
        connect_timeout (used when FastHttpUser's are not set).
    """

    abstract = True
    keep_alive = True
    network_timeout: Optional[float] = None
    connection_timeout: Optional[float] = None
    concurrency: Optional[int] = None
    client_pool: Any = None
    ssl_context_factory: Optional[Callable[[], Any]] = None
    max_retries = 0
    proxy_host: Optional[str] = None
    proxy_port: Optional[int] = None
    compress = True
    max_sockets: Any = 10
    max_total_sockets: Any = None
    max_free_sockets: Any = 256
    timeout: Optional[float] = 60.0
    connect_timeout: Optional[float] = 60.0
    max_redirects = 30
    insecure = False
    default_headers: Optional[Dict[str, str]] = None
    agent: Optional[ga.Agent] = None
    https_agent: Optional[ga.HttpsAgent] = None

    def __init__(self, environment: Any) -> None:
        super().__init__(environment)
        if self.host is None:
            raise StopTest(
                "You must specify the base host. Either in the host attribute in the User class, "
                "or on the command line using the --host option."
            )
        cls = type(self)
        options: Dict[str, Any] = dict(
            keep_alive=self.keep_alive,
            max_sockets=self.concurrency or self.max_sockets,
            max_total_sockets=self.max_total_sockets,
            max_free_sockets=self.max_free_sockets,
        )
        connect_timeout = self.connection_timeout if self.connection_timeout is not None else self.connect_timeout
        if connect_timeout:
            options["connect_timeout"] = connect_timeout
        if self.proxy_host:
            options["proxy"] = "http://%s:%s" % (self.proxy_host, self.proxy_port or 8080)
        agent, https_agent = cls.agent, cls.https_agent
        own = []
        if agent is None and self.client_pool is None:
            agent = ga.Agent(**options)
            own.append(agent)
        if https_agent is None and self.client_pool is None:
            tls: Dict[str, Any] = {"reject_unauthorized": not self.insecure}
            if self.ssl_context_factory is not None:
                tls = {"ssl_context": type(self).ssl_context_factory()}  # type: ignore[misc]
            https_agent = ga.HttpsAgent(**tls, **options)
            own.append(https_agent)
        self.client = AgentSession(
            self.host,
            environment.events.request,
            self,
            insecure=self.insecure,
            client_pool=self.client_pool,
            agent=agent,
            https_agent=https_agent,
            network_timeout=self.network_timeout if self.network_timeout is not None else self.timeout,
            connection_timeout=connect_timeout,
            max_redirects=self.max_redirects,
            max_retries=self.max_retries,
            compress=self.compress,
            default_headers=self.default_headers,
        )
        self.client._own_agents.extend(own)

    def on_stop(self) -> None:
        """Destroy the agents this user created (a shared agent is left alone)."""
        self.client.close()

    def run(self) -> None:  # type: ignore[misc]  # locust marks run() final; on_stop is the user's
        try:
            super().run()
        finally:  # also when the user is killed mid-request (GreenletExit)
            self.client.close()
