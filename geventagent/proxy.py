"""Proxies: HTTP forward proxies and CONNECT tunnels, from options or from the environment.

- An ``http:`` request through a proxy goes to the proxy in absolute form
  (``GET http://origin/path HTTP/1.1``) with ``Proxy-Authorization``, over keep-alive connections
  to the proxy.
- An ``https:`` request opens a ``CONNECT origin:port`` tunnel; the proxy's reply is parsed whole
  (status line, headers, a body), any status but 2xx raises :class:`~geventagent.errors.ProxyTunnelError`,
  and TLS then runs to the origin, with SNI and verification against the origin's name.
- An ``https://`` proxy gets TLS of its own first (``proxy_tls`` options), and the tunnel's TLS
  runs inside it.

``proxy_env=True`` reads ``HTTP_PROXY`` / ``HTTPS_PROXY`` / ``NO_PROXY`` (either case; the
lower-case name wins, as curl), as Node 24.5's ``proxyEnv`` does.
"""

from __future__ import annotations

import base64
import ipaddress
import os
from typing import Any, List, Mapping, NamedTuple, Optional, Tuple
from urllib.parse import unquote, urlsplit

from ._http import ResponseParser
from .errors import GeventAgentError, ProxyConfigError, ProxyTunnelError, RequestTimeout, from_os_error

__all__ = ["Proxy", "parse_proxy", "NoProxy", "ProxyEnv", "tunnel", "socks_connect"]

_DEFAULT_PORTS = {"http": 80, "https": 443, "socks5": 1080, "socks5h": 1080, "socks4": 1080, "socks4a": 1080}
SOCKS_SCHEMES = frozenset(("socks5", "socks5h", "socks4", "socks4a"))


class Proxy(NamedTuple):
    """A proxy: ``scheme`` (``"http"``, ``"https"``, or SOCKS: ``"socks5"`` (names resolved here),
    ``"socks5h"`` (by the proxy), ``"socks4"``, ``"socks4a"``), ``host``, ``port``,
    ``authorization`` (the ``Proxy-Authorization`` value, ``Basic ...``, or None), ``key`` (what it
    adds to the agent's origin keys: the URL without its password), and the decoded ``username`` /
    ``password`` (SOCKS5's username/password method, SOCKS4's user id)."""

    scheme: str
    host: str
    port: int
    authorization: Optional[str]
    key: str
    username: Optional[str] = None
    password: Optional[str] = None

    @property
    def socks(self) -> bool:
        """Whether this is a SOCKS proxy (requests go through it in origin form, as in a tunnel)."""
        return self.scheme in SOCKS_SCHEMES


def parse_proxy(url: Any) -> Proxy:
    """A :class:`Proxy` from ``http://[user:password@]host[:port]`` or ``https://...``; the user
    information is percent-decoded.

    Raises:
        ProxyConfigError (``ERR_PROXY_INVALID_CONFIG``): not a string, no host, a bad port, or a
            scheme other than http/https (SOCKS is not supported).
    """
    if isinstance(url, Proxy):
        return url
    if not isinstance(url, str) or not url.strip():
        raise ProxyConfigError("A proxy must be a URL string such as 'http://proxy:3128'. Received %r" % (url,))
    text = url.strip()
    if "://" not in text:
        text = "http://" + text  # as curl and Node read "proxy:3128"
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise ProxyConfigError(
            "Unsupported proxy scheme %r in %r: geventagent supports http://, https://, socks5://, socks5h://, "
            "socks4:// and socks4a:// proxies" % (scheme, url)
        )
    try:
        port = parts.port or _DEFAULT_PORTS[scheme]
    except ValueError as exc:
        raise ProxyConfigError("Invalid port in proxy URL %r" % (url,)) from exc
    host = parts.hostname
    if not host:
        raise ProxyConfigError("No host in proxy URL %r" % (url,))
    authorization = None
    user = ""
    password = None
    if parts.username is not None:
        user = unquote(parts.username)
        password = unquote(parts.password or "")
        credentials = user + ":" + password
        authorization = "Basic " + base64.b64encode(credentials.encode("utf-8")).decode("ascii")
    shown = "[%s]" % host if ":" in host else host
    key = "%s://%s%s:%d" % (scheme, user + "@" if user else "", shown, port)
    return Proxy(scheme, host, port, authorization, key, user or None, password)


class NoProxy:
    """``NO_PROXY`` rules: ``*`` (never proxy), host names and domain suffixes (``example.com``
    and ``.example.com`` match ``example.com`` and its subdomains), ``host:port``, IP addresses and
    CIDR ranges (``10.0.0.0/8``, ``::1``); comma or space separated."""

    def __init__(self, value: str = "") -> None:
        self.all = False
        self.names: List[Tuple[str, Optional[int]]] = []
        self.networks: List[Tuple[Any, Optional[int]]] = []
        for entry in value.replace(" ", ",").split(","):
            entry = entry.strip().lower()
            if not entry:
                continue
            if entry == "*":
                self.all = True
                continue
            port: Optional[int] = None
            host = entry
            if entry.startswith("["):  # [::1]:8080
                end = entry.find("]")
                host, rest = entry[1:end], entry[end + 1 :]
                if rest.startswith(":") and rest[1:].isdigit():
                    port = int(rest[1:])
            elif entry.count(":") == 1:
                name, _, maybe = entry.partition(":")
                if maybe.isdigit():
                    host, port = name, int(maybe)
            try:
                self.networks.append((ipaddress.ip_network(host, strict=False), port))
                continue
            except ValueError:
                pass
            self.names.append((host.lstrip("*").lstrip("."), port))

    def matches(self, host: str, port: int) -> bool:
        """True when ``host:port`` must be reached directly."""
        if self.all:
            return True
        host = host.lower().strip("[]").rstrip(".")
        try:
            address: Any = ipaddress.ip_address(host)
        except ValueError:
            address = None
        for network, wanted in self.networks:
            if address is not None and address in network and (wanted is None or wanted == port):
                return True
        for name, wanted in self.names:
            if (host == name or host.endswith("." + name)) and (wanted is None or wanted == port):
                return True
        return False


class ProxyEnv:
    """The proxies the environment names: ``http_proxy``/``HTTP_PROXY`` for ``http:`` requests,
    ``https_proxy``/``HTTPS_PROXY`` for ``https:`` ones, ``no_proxy``/``NO_PROXY`` for exceptions
    (the lower-case name wins when both are set, as curl). Read once, when the agent is made."""

    def __init__(self, environ: Optional[Mapping[str, str]] = None) -> None:
        env = os.environ if environ is None else environ

        def get(name: str) -> str:
            lower = env.get(name.lower())
            return (lower if lower is not None else env.get(name.upper(), "")).strip()

        self.http = parse_proxy(get("http_proxy")) if get("http_proxy") else None
        self.https = parse_proxy(get("https_proxy")) if get("https_proxy") else None
        self.no_proxy = NoProxy(get("no_proxy"))

    def for_target(self, protocol: str, host: str, port: int) -> Optional[Proxy]:
        """The proxy for a request to ``host:port`` (``protocol`` ``"http:"`` or ``"https:"``), or None."""
        proxy = self.https if protocol == "https:" else self.http
        if proxy is None or self.no_proxy.matches(host, port):
            return None
        return proxy


#: Bytes of a proxy's refusal (its body) read before the tunnel error is raised.
_REFUSAL_LIMIT = 64 * 1024


def tunnel(sock: Any, host: str, port: int, proxy: Proxy, max_header_size: int) -> None:
    """Open a ``CONNECT host:port`` tunnel through ``proxy`` on the connected (gevent) ``sock``;
    blocks the calling greenlet, bounded by the socket's timeout. Returns when the proxy answered
    2xx with nothing after its head.

    Raises:
        ProxyTunnelError (``ERR_PROXY_TUNNEL``): any other status (``.status_code``: 407, 502, ...),
            bytes after a 2xx head, or the proxy closing mid-reply.
        RequestTimeout (``ETIMEDOUT``): the proxy did not answer in time.
        HttpParseError: a malformed reply.
    """
    target = "[%s]:%d" % (host, port) if ":" in host else "%s:%d" % (host, port)
    lines = ["CONNECT %s HTTP/1.1" % target, "Host: %s" % target]
    if proxy.authorization:
        lines.append("Proxy-Authorization: %s" % proxy.authorization)
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    where = "%s:%d" % (proxy.host, proxy.port)
    parser = ResponseParser("CONNECT", max_header_size)
    try:
        sock.sendall(head)
        while not parser.headers_complete:
            data = sock.recv(16384)
            if not data:
                raise ProxyTunnelError(
                    "The proxy %s closed the connection before answering CONNECT %s" % (where, target), proxy=proxy.key
                )
            parser.feed(data)
        status = parser.status_code
        if 200 <= status < 300:
            if parser.upgrade_head:
                raise ProxyTunnelError(
                    "The proxy %s sent %d bytes after its 2xx answer to CONNECT %s"
                    % (where, len(parser.upgrade_head), target),
                    status_code=status,
                    proxy=proxy.key,
                )
            return
        got = parser.body_bytes
        while not parser.message_complete and got < _REFUSAL_LIMIT:  # the refusal, whole
            data = sock.recv(16384)
            if not data:
                parser.feed_eof()
                break
            parser.feed(data)
            got = parser.body_bytes
    except GeventAgentError:
        raise
    except OSError as exc:
        err = from_os_error(exc, "proxy connect", where)
        if isinstance(err, RequestTimeout):
            raise RequestTimeout(
                "The proxy %s did not answer CONNECT %s in time (ETIMEDOUT)" % (where, target)
            ) from exc
        raise err from exc
    raise ProxyTunnelError(
        "The proxy %s refused CONNECT %s: %d %s" % (where, target, status, parser.status_message),
        status_code=status,
        proxy=proxy.key,
    )


# -- SOCKS (RFC 1928 SOCKS5, RFC 1929 username/password; SOCKS4 and its 4a extension) -------------
_SOCKS5_REPLIES = {
    1: "general SOCKS server failure",
    2: "connection not allowed by ruleset",
    3: "network unreachable",
    4: "host unreachable",
    5: "connection refused",
    6: "TTL expired",
    7: "command not supported",
    8: "address type not supported",
}


def _recv_exactly(sock: Any, n: int, proxy: Proxy, what: str) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ProxyTunnelError(
                "The SOCKS proxy %s:%d closed the connection during %s" % (proxy.host, proxy.port, what),
                proxy=proxy.key,
            )
        data += chunk
    return data


def _first_address(lookup: Any, host: str, port: int, family: int) -> str:
    """``host``'s first address (``family``: an ``AF_*`` constant or 0), as the connect resolves
    it: gevent's resolver, or the agent's ``lookup``."""
    from .socket import resolve

    return str(resolve(lookup, host, port, family)[0][1][0])


def socks_connect(sock: Any, host: str, port: int, proxy: Proxy, lookup: Any = None) -> None:
    """Ask the SOCKS ``proxy`` (connected on the gevent ``sock``) to connect to ``host:port``;
    blocks the calling greenlet, bounded by the socket's timeout. ``socks5`` and ``socks4`` resolve
    the name here (cooperatively; through ``lookup(hostname, family)`` when given, the agent's
    ``lookup`` option); ``socks5h`` and ``socks4a`` let the proxy resolve it.

    Raises:
        ProxyTunnelError (``ERR_PROXY_TUNNEL``): the proxy refused (its reply in the message), asked
            for an authentication method we cannot offer, or closed the connection.
        RequestTimeout (``ETIMEDOUT``): the proxy did not answer in time.
    """
    import ipaddress
    import struct

    from gevent import socket as gsocket

    where = "%s:%d" % (proxy.host, proxy.port)
    try:
        if proxy.scheme in ("socks4", "socks4a"):
            user = (proxy.username or "").encode("utf-8") + b"\0"
            try:
                address = ipaddress.IPv4Address(host).packed
                name = b""
            except ValueError:
                if proxy.scheme == "socks4":
                    address = ipaddress.IPv4Address(_first_address(lookup, host, port, gsocket.AF_INET)).packed
                    name = b""
                else:  # 4a: 0.0.0.x and the name after the user id
                    address, name = b"\0\0\0\1", host.encode("idna") + b"\0"
            sock.sendall(struct.pack(">BBH", 4, 1, port) + address + user + name)
            reply = _recv_exactly(sock, 8, proxy, "the SOCKS4 reply")
            if reply[1] != 0x5A:
                raise ProxyTunnelError(
                    "The SOCKS4 proxy %s refused to connect to %s:%d (reply %d)" % (where, host, port, reply[1]),
                    proxy=proxy.key,
                )
            return
        methods = b"\0\2" if proxy.username is not None else b"\0"
        sock.sendall(b"\5" + bytes([len(methods)]) + methods)
        version, method = _recv_exactly(sock, 2, proxy, "the SOCKS5 greeting")
        if version != 5:
            raise ProxyTunnelError("%s is not a SOCKS5 proxy (version %d)" % (where, version), proxy=proxy.key)
        if method == 2:
            user = (proxy.username or "").encode("utf-8")
            password = (proxy.password or "").encode("utf-8")
            sock.sendall(b"\1" + bytes([len(user)]) + user + bytes([len(password)]) + password)
            if _recv_exactly(sock, 2, proxy, "SOCKS5 authentication")[1] != 0:
                raise ProxyTunnelError("The SOCKS5 proxy %s rejected the username/password" % where, proxy=proxy.key)
        elif method != 0:
            raise ProxyTunnelError(
                "The SOCKS5 proxy %s accepts no authentication method we offer (%s)"
                % (where, "none, username/password" if proxy.username is not None else "none; give user:password"),
                proxy=proxy.key,
            )
        try:
            ip = ipaddress.ip_address(host)
            target = (b"\1" if ip.version == 4 else b"\4") + ip.packed
        except ValueError:
            if proxy.scheme == "socks5":  # resolve here, as curl's socks5:// does
                ip = ipaddress.ip_address(_first_address(lookup, host, port, 0))
                target = (b"\1" if ip.version == 4 else b"\4") + ip.packed
            else:
                name = host.encode("idna")
                target = b"\3" + bytes([len(name)]) + name
        sock.sendall(b"\5\1\0" + target + struct.pack(">H", port))
        head = _recv_exactly(sock, 4, proxy, "the SOCKS5 reply")
        if head[1] != 0:
            raise ProxyTunnelError(
                "The SOCKS5 proxy %s could not connect to %s:%d: %s"
                % (where, host, port, _SOCKS5_REPLIES.get(head[1], "reply %d" % head[1])),
                proxy=proxy.key,
            )
        kind = head[3]
        size = 4 if kind == 1 else 16 if kind == 4 else _recv_exactly(sock, 1, proxy, "the SOCKS5 reply")[0]
        _recv_exactly(sock, size + 2, proxy, "the SOCKS5 reply")  # the bound address and port
    except GeventAgentError:
        raise
    except OSError as exc:
        err = from_os_error(exc, "connect", where)
        if isinstance(err, RequestTimeout):
            raise err from exc
        raise ProxyTunnelError("SOCKS proxy %s: %s" % (where, err), proxy=proxy.key) from exc
