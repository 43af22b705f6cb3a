"""A ``requests`` transport adapter that sends through geventagent: requests' whole API, with
geventagent's hard connection caps, keep-alive pool and stale-socket safety underneath.

One line at start-up, for every ``requests.Session`` (and ``requests.get`` & co.)::

    from gevent import monkey; monkey.patch_all()
    from geventagent.contrib import requests as ga_requests
    ga_requests.install(max_sockets=20, queue_timeout=5.0)

or per session::

    session = requests.Session()
    session.mount("http://", AgentAdapter(max_sockets=20))
    session.mount("https://", AgentAdapter(max_sockets=20))

What requests passes to a transport adapter maps as follows:

- ``timeout``: a number (connect and read), a ``(connect, read)`` tuple, or a ``urllib3.Timeout``;
  the read timeout is the socket inactivity limit (``timeout``), the connect one ``connect_timeout``,
  both in seconds.
- ``verify`` (True: requests' own CA bundle, certifi; False; a CA file or a folder of hashed CA
  files) and ``cert`` (a path, or ``(cert, key)``) onto the request's TLS options.
- ``stream``: the response is a :class:`AgentResponse` (a ``urllib3.HTTPResponse``) over the
  geventagent :class:`~geventagent.IncomingMessage`; the connection goes back to the pool when the
  body has been read, and closing an unread response drains a short remainder or closes it. A
  chunked body streams as it arrives (``iter_content()``, ``iter_lines()``, ``raw.stream()``), and
  ``raw.read(n)`` gives ``n`` bytes unless the body ends first, as over http.client.
- ``proxies``: requests' choice for the URL (``select_proxy``, environment and ``NO_PROXY`` already
  applied by the session) as the request's ``proxy``; http:// and https:// proxies (CONNECT tunnels
  for https:// targets) and SOCKS proxies (``socks5://``, ``socks5h://``, ``socks4://``,
  ``socks4a://``, as requests[socks] names them); another scheme raises ``InvalidSchema``.
- ``max_retries`` (an int or a ``urllib3.Retry``): requests' meaning (connect / read / status
  retries with backoff), on top of geventagent's own safe retry of stale keep-alive sockets.
- ``pool_maxsize`` onto ``max_sockets`` of the adapter's own agents (a hard cap, unlike urllib3's);
  ``pool_block`` has no meaning here: a request waits for a connection, bounded by ``queue_timeout``
  and ``max_queued``.

Errors are requests' (``ConnectionError``, ``ConnectTimeout``, ``ReadTimeout``, ``SSLError``,
``ProxyError``, ``ChunkedEncodingError``, ``ContentDecodingError``, ``InvalidHeader``,
``InvalidURL``, ``RetryError``), with the geventagent error as ``__cause__``.
"""

from __future__ import annotations

import http.client
import inspect
import os
from typing import Any, Dict, Generator, List, Optional, Tuple, Union
from urllib.parse import urlsplit

import requests
import urllib3
from requests import exceptions as rex
from requests.adapters import HTTPAdapter
from requests.utils import DEFAULT_CA_BUNDLE_PATH, extract_zipped_paths, prepend_scheme_if_needed, select_proxy
from urllib3._collections import HTTPHeaderDict  # urllib3.HTTPHeaderDict from 2.0 on; here in 1.x too
from urllib3.exceptions import MaxRetryError, ResponseNotChunked
from urllib3.util import parse_url
from urllib3.util.retry import Retry

import geventagent as ga

from .. import errors as gaerr
from ..outgoing import is_text_file
from ..tls import TlsError

__all__ = ["AgentAdapter", "AgentResponse", "install", "uninstall", "installed"]

_DEFAULT = object()
_STATUS_RETRY_DRAIN = 1 << 16
# What the installed urllib3 has (requests takes 1.21.1 to 2.x): 2.x's response carries its
# status line's version string; >= 2.6 bounds each decoded piece (decompression bombs).
_VERSION_STRING = "version_string" in inspect.signature(urllib3.HTTPResponse.__init__).parameters
_DECODE_MAX_LENGTH = "max_length" in inspect.signature(urllib3.HTTPResponse._decode).parameters


class _Body:
    """What urllib3's ``HTTPResponse`` reads from (its ``_fp``) and keeps as the "original response"
    (http.client's shape): ``read(amt)``, ``close()``, ``isclosed()``, ``msg`` (an
    ``http.client.HTTPMessage``, which cookie extraction reads). Errors come out as the socket
    layer's (``OSError``, ``TimeoutError``, ``http.client.HTTPException``), which urllib3 turns into
    its own and requests into ``ChunkedEncodingError`` / ``ConnectionError``."""

    def __init__(self, message: ga.IncomingMessage) -> None:
        self.message = message
        self._closed = False
        msg = http.client.HTTPMessage()
        msg._headers = list(message.raw_headers)  # type: ignore[attr-defined]  # as email's parser stores them
        self.msg = msg
        self.status = message.status_code
        self.reason = message.status_message

    def read(self, amt: Optional[int] = None) -> bytes:
        """http.client's ``read(amt)``: ``amt`` bytes unless the body ends first (urllib3 hands a
        caller's ``raw.read(n)`` this result; ``pickle.load(raw)``, fixed-size records and the
        like count on it), all of the rest for None; ``b""`` at the end."""
        if self._closed:
            return b""
        message = self.message
        try:
            data = message.read(amt)
            if amt is None or len(data) >= amt or not data:  # (amt < 0: all of it already)
                return data
            parts = [data]  # a piece of what was asked has arrived: wait for the rest
            need = amt - len(data)
            while need > 0:
                more = message.read(need)
                if not more:
                    break
                parts.append(more)
                need -= len(more)
            return b"".join(parts)
        except gaerr.HttpParseError as exc:  # a malformed body (chunk framing): http.client's class
            raise http.client.HTTPException(str(exc)) from exc

    def read1(self, amt: Optional[int] = -1) -> bytes:
        """http.client's ``read1``: one piece of the body as it arrived (for a chunked body, about
        one of the server's chunks), at most ``amt`` bytes (None or negative: no limit), waiting
        only when nothing has arrived; ``b""`` at the end."""
        if self._closed:
            return b""
        message = self.message
        body = message._parser.body
        try:
            while not body and not message.complete:
                message._fill()
            if not body:
                return b""
            size = len(body[0])
            return message.read(size if amt is None or amt < 0 or amt > size else amt)
        except gaerr.HttpParseError as exc:
            raise http.client.HTTPException(str(exc)) from exc

    def readable(self) -> bool:
        return True

    def isclosed(self) -> bool:
        message = self.message
        return self._closed or (message.complete and not message._parser.body)

    @property
    def closed(self) -> bool:
        return self.isclosed()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.message.close()

    def abandon(self) -> None:
        """Closed without the drain: an unread remainder closes the connection."""
        if not self._closed:
            self._closed = True
            self.message.destroy()


class _PoolKeys:
    """``adapter.poolmanager``: what urllib3's shows of its pools, the distinct connection settings
    (scheme, host, port, verify, cert, proxy) used since the last ``close()``, as ``pools`` keys.
    The connections themselves are the agents'."""

    def __init__(self) -> None:
        self.pools: Dict[Any, None] = {}

    def clear(self) -> None:
        self.pools.clear()


class _PoolName:
    """What urllib3's timeout errors print for the pool: ``Agent(host='h', port=p): Read timed
    out.``, where urllib3's own pools print ``HTTPConnectionPool(host='h', port=p)`` (and no pool
    printed ``None``). Formatted when printed."""

    __slots__ = ("_url", "_agent")

    def __init__(self, url: str, agent: Any = None) -> None:
        self._url = url
        self._agent = agent

    def __str__(self) -> str:
        parts = urlsplit(self._url)
        https = parts.scheme.lower() == "https"
        name = type(self._agent).__name__ if self._agent is not None else ("HttpsAgent" if https else "Agent")
        return "%s(host=%r, port=%d)" % (name, parts.hostname, parts.port or (443 if https else 80))

    __repr__ = __str__


class AgentResponse(urllib3.HTTPResponse):
    """``response.raw``: urllib3's ``HTTPResponse`` (``stream()``, ``read(amt, decode_content=)``,
    gzip / deflate / br / zstd decoding, ``Content-Length`` enforcement) reading a geventagent
    :class:`~geventagent.IncomingMessage` (``.message``)."""

    def __init__(
        self, message: ga.IncomingMessage, method: str, url: str, retries: Optional[Retry], agent: Any = None
    ) -> None:
        body = _Body(message)
        headers = HTTPHeaderDict()
        for name, value in message.raw_headers:
            headers.add(name, value)
        version = message.http_version
        if _VERSION_STRING:
            extra: Dict[str, Any] = {"version_string": "HTTP/" + version}
        else:
            extra = {}
        super().__init__(
            body=body,  # type: ignore[arg-type]  # file-like: read(), close(), isclosed()
            headers=headers,
            status=message.status_code,
            version=11 if version == "1.1" else 10,
            reason=message.status_message,
            preload_content=False,
            decode_content=False,
            original_response=body,  # type: ignore[arg-type]
            msg=body.msg,
            retries=retries,
            enforce_content_length=True,
            request_method=method,
            request_url=url,
            pool=_PoolName(url, agent),  # type: ignore[arg-type]  # only printed (release_conn is ours)
            **extra,
        )
        self.message = message

    def __del__(self) -> None:
        """Dropped without ``close()``: nothing here. io.IOBase's finalizer would call close(),
        which drains an unread remainder (up to 1 s) in whichever greenlet dropped the response,
        or in the hub, while a queued request waits for the slot; the message's own finalizer
        instead destroys the socket of an unread body from the hub's next round, as for a dropped
        :class:`~geventagent.IncomingMessage` (close reason ``unread``)."""

    def supports_chunked_reads(self) -> bool:
        """True: :meth:`read_chunked` serves every chunked body (urllib3 asks for http.client's
        ``fp``, which only its own reader has)."""
        return True

    def read_chunked(
        self, amt: Optional[int] = None, decode_content: Optional[bool] = None
    ) -> Generator[bytes, None, None]:
        """Yield a chunked body as it arrives, each piece at most ``amt`` bytes (None: as it came),
        decoded when ``decode_content``: what urllib3's ``stream()`` (and so requests'
        ``iter_content()`` / ``iter_lines()``) gives for a chunked response, so a server that
        streams (events, logs, progress) is read piece by piece, not when it ends. The pieces are
        the body as the socket delivered it, not the server's chunk boundaries (Node's ``'data'``
        events).

        Raises:
            urllib3.exceptions.ResponseNotChunked: the response is not chunked.
            urllib3's ``ProtocolError`` / ``ReadTimeoutError`` / ``DecodeError`` (requests' own
            classes through ``iter_content``), as for ``read()``.
        """
        self._init_decoder()
        if not self.chunked:
            raise ResponseNotChunked("Response is not chunked. Header 'transfer-encoding: chunked' is missing.")
        if amt == 0:
            return
        if amt is not None and amt < 0:
            amt = None
        body = self._fp
        assert isinstance(body, _Body)
        with self._error_catcher():
            try:
                yield from self._chunked_pieces(body, amt, decode_content)
            except GeneratorExit:  # the caller stopped (a break out of iter_content): close, no drain
                body.abandon()  # (urllib3 then closes the body: a drain of a stream would block here)
                raise
            body.close()

    def _chunked_pieces(
        self, body: "_Body", amt: Optional[int], decode_content: Optional[bool]
    ) -> Generator[bytes, None, None]:
        while True:
            decoder = self._decoder
            if decoder is not None and getattr(decoder, "has_unconsumed_tail", False):
                piece = b""  # urllib3 >= 2.6 caps each decoded piece at amt: the rest first
            else:
                piece = body.read1(amt)
                self._uncached_read_occurred = True
                if not piece:
                    break
            if _DECODE_MAX_LENGTH:
                decoded = self._decode(piece, decode_content, False, max_length=amt)
            else:
                decoded = self._decode(piece, decode_content, False)
            if decoded:
                yield decoded
        if decode_content:
            decoded = self._flush_decoder()
            if decoded:
                yield decoded

    def release_conn(self) -> None:
        """Give the connection back: at once when the body has been read; otherwise a short unread
        remainder (64 KiB, 1 s) is drained, or the connection closed (never pooled half-read)."""
        self._original_response.close()  # type: ignore[union-attr]


def _check_timeout(value: Any, name: str) -> Optional[float]:
    if value is None or (isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0):
        return value
    raise ValueError("Timeout value %s was %s, but it must be an int, float or None." % (name, value))


def _timeouts(timeout: Any) -> Tuple[Optional[float], Optional[float]]:
    connect, read = _split_timeout(timeout)
    return _check_timeout(connect, "connect"), _check_timeout(read, "read")


def _split_timeout(timeout: Any) -> Tuple[Any, Any]:
    if isinstance(timeout, tuple):
        try:
            connect, read = timeout
        except ValueError:
            raise ValueError(
                "Invalid timeout {}. Pass a (connect, read) timeout tuple, or a single float to set both timeouts "
                "to the same value.".format(timeout)
            ) from None
        return connect, read
    if isinstance(timeout, urllib3.Timeout):
        connect = timeout.connect_timeout
        read = timeout.read_timeout
        return (None if connect is urllib3.Timeout.DEFAULT_TIMEOUT else connect), (
            None if read is urllib3.Timeout.DEFAULT_TIMEOUT else read
        )
    return timeout, timeout


def _tls_options(agent: Any, verify: Any, cert: Any) -> Dict[str, Any]:
    """requests' ``verify`` / ``cert`` as geventagent TLS options (HTTPAdapter.cert_verify's checks)."""
    opts: Dict[str, Any] = {}
    own = agent.options if agent is not None else {}
    if verify is False:
        opts["reject_unauthorized"] = False
    elif "ca" not in own and "ssl_context" not in own:
        location = extract_zipped_paths(DEFAULT_CA_BUNDLE_PATH) if verify is True else verify
        if not location or not os.path.exists(location):
            raise OSError("Could not find a suitable TLS CA certificate bundle, invalid path: {}".format(location))
        opts["ca"] = location
    if cert:
        if isinstance(cert, (tuple, list)):
            cert_file, key_file = cert[0], cert[1]
        else:
            cert_file, key_file = cert, None
        if cert_file and not os.path.exists(cert_file):
            raise OSError("Could not find the TLS certificate file, invalid path: {}".format(cert_file))
        if key_file and not os.path.exists(key_file):
            raise OSError("Could not find the TLS key file, invalid path: {}".format(key_file))
        opts["cert"] = cert_file
        if key_file:
            opts["key"] = key_file
    return opts


def _urllib3_error(exc: BaseException, connect_phase: bool) -> Exception:
    """The urllib3 error standing for a geventagent one, for ``Retry.increment``'s classification."""
    if connect_phase:
        return urllib3.exceptions.NewConnectionError(None, str(exc))  # type: ignore[arg-type]
    if isinstance(exc, TimeoutError):
        return urllib3.exceptions.ReadTimeoutError(None, None, str(exc))  # type: ignore[arg-type]
    return urllib3.exceptions.ProtocolError(str(exc), exc)


def _connect_phase(exc: BaseException) -> bool:
    """Whether the request failed before anything of it was sent (connecting, TLS, a proxy, the queue)."""
    return (
        getattr(exc, "syscall", None) == "connect"
        or isinstance(exc, (TlsError, gaerr.QueueTimeout, gaerr.QueueFull, gaerr.ProxyTunnelError))
        or getattr(exc, "code", "") in ("ENOTFOUND", "ECONNREFUSED")
    )


def _requests_error(exc: BaseException, request: Any, via_proxy: bool) -> Exception:
    """requests' exception for a geventagent error raised while sending or waiting for the head."""
    if isinstance(exc, TlsError):
        return rex.SSLError(exc, request=request)
    if isinstance(exc, gaerr.ProxyTunnelError):
        return rex.ProxyError(exc, request=request)
    if isinstance(exc, gaerr.QueueTimeout):
        return rex.ConnectTimeout(exc, request=request)
    if isinstance(exc, (gaerr.InvalidHttpTokenError, gaerr.InvalidCharError, gaerr.ContentLengthMismatch)):
        return rex.InvalidHeader(exc, request=request)  # (a Content-Length the body does not come to)
    if getattr(exc, "code", "") in ("HPE_UNEXPECTED_CONTENT_LENGTH", "HPE_INVALID_CONTENT_LENGTH"):
        return rex.InvalidHeader(exc, request=request)  # conflicting or bad Content-Length, as urllib3
    if isinstance(exc, (gaerr.UnescapedCharactersError, gaerr.InvalidProtocolError)):
        return rex.InvalidURL(exc, request=request)
    connect = getattr(exc, "syscall", None) == "connect"
    if isinstance(exc, TimeoutError):  # worded as urllib3's, which callers match on
        url = getattr(request, "url", None)
        if connect:
            return rex.ConnectTimeout(
                urllib3.exceptions.ConnectTimeoutError(None, "Connection timed out. (%s)" % exc), request=request
            )
        return rex.ReadTimeout(
            urllib3.exceptions.ReadTimeoutError(
                _PoolName(url or ""),  # type: ignore[arg-type]  # only printed
                url,
                "Read timed out. (%s)" % exc,
            ),
            request=request,
        )
    if via_proxy and connect:
        return rex.ProxyError(exc, request=request)
    if isinstance(exc, (gaerr.NetworkError, gaerr.QueueFull, gaerr.HttpParseError, OSError)):
        return rex.ConnectionError(exc, request=request)
    if isinstance(exc, gaerr.InvalidArgValueError):
        return rex.InvalidURL(exc, request=request)
    return rex.ConnectionError(exc, request=request)


class AgentAdapter(HTTPAdapter):
    """A ``requests.adapters.HTTPAdapter`` that sends through geventagent agents.

    Args:
        agent (geventagent.Agent | None): for http:// URLs; by default one of its own.
        https_agent (geventagent.HttpsAgent | None): for https:// URLs; by default one of its own.
        pool_connections, pool_maxsize, max_retries, pool_block: HTTPAdapter's; ``pool_maxsize``
            given explicitly becomes ``max_sockets`` (per origin) of the adapter's own agents.
        **agent_options: options of the adapter's own agents (``max_sockets``, ``max_total_sockets``,
            ``queue_timeout``, ``max_queued``, ``free_socket_timeout``, ...); ``keep_alive`` is True
            unless given. Unknown names raise ``UnknownOptionError`` naming the nearest valid one.

    ``close()`` (``Session.close()``) closes the idle connections of agents the adapter made (a
    response being read keeps working, as with urllib3); agents passed in are left alone.
    """

    __attrs__ = HTTPAdapter.__attrs__ + ["_agent_options"]

    def __init__(
        self,
        agent: Optional[ga.Agent] = None,
        https_agent: Optional[ga.HttpsAgent] = None,
        pool_connections: int = requests.adapters.DEFAULT_POOLSIZE,
        pool_maxsize: Any = _DEFAULT,
        max_retries: Union[int, Retry, None] = requests.adapters.DEFAULT_RETRIES,
        pool_block: bool = requests.adapters.DEFAULT_POOLBLOCK,
        **agent_options: Any,
    ) -> None:
        options = dict(agent_options)
        if pool_maxsize is not _DEFAULT:
            options.setdefault("max_sockets", pool_maxsize or None)
        options.setdefault("keep_alive", True)
        self._agent_options = options
        self._given = (agent, https_agent)
        self._make_agents()
        super().__init__(
            pool_connections=pool_connections,
            pool_maxsize=requests.adapters.DEFAULT_POOLSIZE if pool_maxsize is _DEFAULT else pool_maxsize,
            max_retries=max_retries,  # type: ignore[arg-type]
            pool_block=pool_block,
        )

    def _make_agents(self) -> None:
        agent, https_agent = self._given
        options = {k: v for k, v in self._agent_options.items() if v is not None}
        self.agent = agent if agent is not None else ga.Agent(**options)
        self.https_agent = https_agent if https_agent is not None else ga.HttpsAgent(**options)
        self._own = (agent is None, https_agent is None)

    def __getstate__(self) -> Dict[str, Any]:
        return {attr: getattr(self, attr, None) for attr in self.__attrs__}

    def __setstate__(self, state: Dict[str, Any]) -> None:
        self._given = (None, None)
        self._agent_options = state.get("_agent_options") or {"keep_alive": True}
        self._make_agents()
        super().__setstate__(state)

    def init_poolmanager(self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any) -> None:
        # HTTPAdapter's attributes kept for code that reads them; urllib3's pool manager is never used.
        self._pool_connections = connections
        self._pool_maxsize = maxsize
        self._pool_block = block
        self._pool_keys = _PoolKeys()
        self.poolmanager = self._pool_keys  # type: ignore[assignment]

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        raise NotImplementedError("AgentAdapter sends through geventagent's proxy support, not urllib3's")

    def close(self) -> None:
        self._pool_keys.clear()
        for manager in self.proxy_manager.values():  # HTTPAdapter's, should a subclass fill it
            manager.clear()
        for agent, own in zip((self.agent, self.https_agent), self._own):
            if own:
                for free in list(agent.free_sockets.values()):
                    for sock in list(free):
                        sock.destroy(reason="adapter_close")

    # -- sending ----------------------------------------------------------------------------------
    def send(
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: Any = None,
        verify: Any = True,
        cert: Any = None,
        proxies: Optional[Dict[str, str]] = None,
    ) -> requests.Response:
        """Send a ``PreparedRequest``; returns a ``requests.Response`` whose ``raw`` is an
        :class:`AgentResponse`. Raises requests' exceptions (see the module docstring)."""
        url = request.url or ""
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https"):
            raise rex.InvalidSchema("No connection adapters were found for {!r}".format(url))
        if not parts.hostname:
            raise rex.InvalidURL("Invalid URL {!r}: No host supplied".format(url), request=request)
        self.add_headers(request, stream=stream, timeout=timeout, verify=verify, cert=cert, proxies=proxies)
        connect_timeout, read_timeout = _timeouts(timeout)
        agent: ga.Agent = self.https_agent if scheme == "https" else self.agent
        options: Dict[str, Any] = {}
        if "'" in parts.query:
            # requests' quoting leaves a query's "'" as it is, which a URL string's would not be
            # (ga.request() percent-encodes it, as Node's WHATWG URL does): the path as prepared
            options["path"] = "%s?%s" % (parts.path or "/", parts.query)
        if scheme == "https":
            options.update(_tls_options(agent, verify, cert))
        if connect_timeout is not None:
            options["connect_timeout"] = connect_timeout
        proxy = select_proxy(url, proxies) if proxies else None
        if proxy:
            proxy = prepend_scheme_if_needed(proxy, "http")
            proxy_url = parse_url(proxy)
            if not proxy_url.host:
                raise rex.InvalidProxyURL("Please check proxy URL. It is malformed and could be missing the host.")
            if (proxy_url.scheme or "").lower() not in ("http", "https", "socks5", "socks5h", "socks4", "socks4a"):
                raise rex.InvalidSchema("Unsupported proxy scheme: {}".format(proxy))
            options["proxy"] = proxy
        key_cert = tuple(cert) if isinstance(cert, list) else cert
        self._pool_keys.pools.setdefault((scheme, parts.hostname, parts.port, verify, key_cert, proxy), None)
        method = (request.method or "GET").upper()
        body: Any = request.body
        if isinstance(body, str):
            body = body.encode("utf-8")
        headers = list(request.headers.items())
        if body is not None and not isinstance(body, bytes) and is_text_file(body):
            # requests' Content-Length for a text-mode file is its size on disk (super_len), not the
            # length of its text as sent: CRLF files came out short (the server waited; stock
            # requests: ReadTimeout) and non-UTF-8 ones long (stock: the server got a cut body and
            # the rest as the next request). Its length unknown, it goes out chunked.
            headers = [(name, value) for name, value in headers if name.lower() != "content-length"]
        retries = self.max_retries
        while True:
            try:
                message = ga.request(
                    method, url, headers=headers, body=body, agent=agent, timeout=read_timeout, **options
                )
            except gaerr.GeventAgentError as exc:
                retries = self._retry_after_error(retries, method, url, exc, request, bool(proxy))
                body = self._rewind(request, body)
                continue
            raw = AgentResponse(message, method, url, retries, agent)
            has_retry_after = bool(raw.headers.get("Retry-After"))
            if retries is not None and retries.is_retry(method, raw.status, has_retry_after):
                try:
                    retries = retries.increment(method, url, response=raw)
                except MaxRetryError as exc:
                    if retries.raise_on_status:
                        raw.release_conn()
                        raise rex.RetryError(exc, request=request) from exc
                    return self.build_response(request, raw)
                raw.drain_conn()
                raw.release_conn()
                retries.sleep(raw)
                body = self._rewind(request, body)
                continue
            return self.build_response(request, raw)

    @staticmethod
    def _retry_after_error(
        retries: Any, method: str, url: str, exc: BaseException, request: Any, via_proxy: bool
    ) -> Any:
        mapped = _requests_error(exc, request, via_proxy)
        if retries is None or isinstance(mapped, (rex.InvalidHeader, rex.InvalidURL)):
            raise mapped from exc
        try:
            retries = retries.increment(method, url, error=_urllib3_error(exc, _connect_phase(exc)))
        except Exception:  # MaxRetryError, or the error itself when it may not be retried
            raise mapped from exc
        retries.sleep()
        return retries

    @staticmethod
    def _rewind(request: Any, body: Any) -> Any:
        """The body for another attempt: bytes as they are; a file rewound (requests' rewind_body)."""
        if body is None or isinstance(body, (bytes, bytearray)):
            return body
        if getattr(request, "_body_position", None) is not None and hasattr(body, "seek"):
            requests.utils.rewind_body(request)
            return request.body
        raise rex.ConnectionError("Cannot retry: the request body (an iterator) cannot be sent again", request=request)


# -- install() -------------------------------------------------------------------------------------
_shared: Dict[str, Any] = {}
_saved: List[Any] = []


class _EnvironProxies:
    """requests' ``get_environ_proxies(url, no_proxy)``, remembered per ``(scheme://netloc,
    no_proxy)`` while ``os.environ`` is unchanged: the same answers, looked up again as soon as
    any environment variable changes. requests makes this lookup for every request it sends
    (``Session.merge_environment_settings``) and it decodes every environment variable twice:
    about a quarter of a small request's CPU time. Used only where urllib's proxy settings come
    from the environment alone (not macOS's or Windows' system settings)."""

    MAX = 256

    def __init__(self, lookup: Any) -> None:
        self.lookup = lookup
        self.environ: Optional[Dict[Any, Any]] = None  # the os.environ the answers were made from
        self.answers: Dict[Tuple[str, Any], Dict[str, str]] = {}

    def __call__(self, url: str, no_proxy: Any = None) -> Dict[str, str]:
        data = getattr(os.environ, "_data", None)
        if not isinstance(data, dict) or not isinstance(url, str):
            return dict(self.lookup(url, no_proxy=no_proxy))
        if data != self.environ:  # (one C-level comparison of a few dozen strings)
            self.environ = dict(data)
            self.answers.clear()
        start = url.find("//")
        end = url.find("/", start + 2) if start >= 0 else -1
        key = (url[:end] if end >= 0 else url, no_proxy)  # the netloc is all of the URL it reads
        answer = self.answers.get(key)
        if answer is None:
            answer = dict(self.lookup(url, no_proxy=no_proxy))
            if len(self.answers) >= self.MAX:
                self.answers.clear()
            self.answers[key] = answer
        return dict(answer)  # the caller's own copy


def _environment_only_proxies() -> bool:
    """True where urllib reads proxy settings from the environment only (Linux and other POSIX
    systems; macOS and Windows also read system settings, which can change unseen)."""
    import sys
    import urllib.request

    return (
        sys.platform not in ("darwin", "win32")
        and urllib.request.getproxies is urllib.request.getproxies_environment
        and urllib.request.proxy_bypass is getattr(urllib.request, "proxy_bypass_environment", None)
    )


class _InstalledAdapter(AgentAdapter):
    """What ``requests.Session()`` mounts after :func:`install`: the process-wide agents."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if not args and not kwargs:
            kwargs = {"agent": _shared["agent"], "https_agent": _shared["https_agent"]}
        super().__init__(*args, **kwargs)

    def __setstate__(self, state: Dict[str, Any]) -> None:
        super().__setstate__(state)
        if _shared:  # unpickled in a process that installed: back onto its shared agents
            self._given = (_shared["agent"], _shared["https_agent"])
            self._make_agents()


def install(**agent_options: Any) -> None:
    """Make every ``requests.Session`` created from now on (``requests.get`` & co. included) send
    through one process-wide pair of agents (http and https) built from ``agent_options``
    (``keep_alive`` True unless given), so the caps hold across sessions. Calling it again replaces
    the agents. Sessions created before keep their adapters."""
    options = dict(agent_options)
    options.setdefault("keep_alive", True)
    if _shared:
        uninstall()
    _shared["agent"] = ga.Agent(**options)
    _shared["https_agent"] = ga.HttpsAgent(**options)
    _saved.append(requests.sessions.HTTPAdapter)
    requests.sessions.HTTPAdapter = _InstalledAdapter  # type: ignore[misc]
    lookup = getattr(requests.sessions, "get_environ_proxies", None)
    if lookup is not None and not isinstance(lookup, _EnvironProxies) and _environment_only_proxies():
        _shared["environ_proxies"] = lookup
        requests.sessions.get_environ_proxies = _EnvironProxies(lookup)


def uninstall() -> None:
    """Undo :func:`install`: new sessions mount requests' own ``HTTPAdapter``; the shared agents'
    sockets are destroyed."""
    if _saved:
        requests.sessions.HTTPAdapter = _saved.pop()  # type: ignore[misc]
    lookup = _shared.pop("environ_proxies", None)
    if lookup is not None:
        requests.sessions.get_environ_proxies = lookup
    for key in ("agent", "https_agent"):
        agent = _shared.pop(key, None)
        if agent is not None:
            agent.destroy()


def installed() -> Optional[Tuple[ga.Agent, ga.HttpsAgent]]:
    """The shared ``(agent, https_agent)`` after :func:`install`, else None."""
    if "agent" not in _shared:
        return None
    return _shared["agent"], _shared["https_agent"]
