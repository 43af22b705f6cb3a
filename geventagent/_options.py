"""Every option of the public API in one place: the names each call accepts, their validation with
Node's error codes, and URL parsing.

An unknown keyword argument anywhere (a misspelling, Node's camelCase, another client's name such
as ``json=``) raises :class:`~geventagent.errors.UnknownOptionError` before anything is sent, naming
the nearest valid name: a misspelled cap must never silently become "unlimited".
"""

from __future__ import annotations

import difflib
import functools
import math
import os
import re
from typing import Any, Dict, FrozenSet, Iterable, List, Mapping, Optional, Tuple
from urllib.parse import quote, unquote, urlsplit

from .errors import InvalidArgTypeError, InvalidArgValueError, OutOfRangeError, SocketBadPortError, UnknownOptionError

__all__ = [
    "AGENT_OPTIONS",
    "CONNECT_OPTIONS",
    "TLS_OPTIONS",
    "HTTPS_AGENT_OPTIONS",
    "REQUEST_OPTIONS",
    "check_names",
    "validate_cap",
    "validate_seconds",
    "validate_retry",
    "validate_scheduling",
    "validate_port",
    "validate_connect_options",
    "validate_tls_options",
    "is_pem_content",
    "parse_url",
    "url_template",
]

_INF = math.inf

#: Options of a connection (``net.connect``'s, in snake_case), on an agent or a request.
CONNECT_OPTIONS: FrozenSet[str] = frozenset(
    (
        "local_address",
        "family",
        "socket_path",
        "no_delay",
        "connect_timeout",
        "timeout",
        "auto_select_family",
        "auto_select_family_attempt_timeout",
        "lookup",
    )
)
#: TLS options (Node's ``tls.connect`` / ``https.Agent`` names in snake_case), on an
#: :class:`~geventagent.HttpsAgent` or an https request. ``honor_cipher_order``, ``dhparam`` and
#: ``session_id_context`` only shape a server's context: accepted and unused, as in Node's client.
TLS_OPTIONS: FrozenSet[str] = frozenset(
    (
        "ca",
        "cert",
        "key",
        "passphrase",
        "reject_unauthorized",
        "servername",
        "min_version",
        "max_version",
        "ciphers",
        "ssl_context",
        "ecdh_curve",
        "secure_options",
        "secure_protocol",
        "crl",
        "honor_cipher_order",
        "dhparam",
        "session_id_context",
        "pfx",
        "sigalgs",
        "client_cert_engine",
        "private_key_identifier",
        "private_key_engine",
    )
)
#: Pool options of :class:`~geventagent.Agent` (besides the connect options).
POOL_OPTIONS: FrozenSet[str] = frozenset(
    (
        "keep_alive",
        "keep_alive_initial_delay",
        "max_sockets",
        "max_total_sockets",
        "max_free_sockets",
        "scheduling",
        "free_socket_timeout",
        "keep_alive_timeout_buffer",
        "socket_ttl",
        "max_requests_per_socket",
        "retry",
        "queue_timeout",
        "max_queued",
        "proxy",
        "proxy_env",
        "proxy_tls",
    )
)
AGENT_OPTIONS: FrozenSet[str] = POOL_OPTIONS | CONNECT_OPTIONS
HTTPS_AGENT_OPTIONS: FrozenSet[str] = AGENT_OPTIONS | TLS_OPTIONS | {"max_cached_sessions"}
#: Options of one request (``ClientRequest``; Node's ``http.request`` options in snake_case).
REQUEST_OPTIONS: FrozenSet[str] = (
    frozenset(
        (
            "protocol",
            "hostname",
            "host",
            "port",
            "path",
            "method",
            "headers",
            "agent",
            "auth",
            "set_host",
            "default_port",
            "max_header_size",
            "retry",
            "queue_timeout",
            "proxy",
        )
    )
    | CONNECT_OPTIONS
    | TLS_OPTIONS
)

_RETRY_HINT = (
    "retry ('idempotent', 'always' or False: a policy, not a count; a request found on a stale "
    "keep-alive socket goes out once more on a new one)"
)
#: Names other clients use, and what to use here instead.
_FOREIGN = {
    "data": "body",
    "content": "body",
    "json": "body (or request(..., json=obj))",
    "params": "a query string in the URL (or request(..., params=...))",
    "files": "body",
    "verify": "reject_unauthorized",
    "allow_redirects": "nothing: geventagent does not follow redirects",
    "follow_redirects": "nothing: geventagent does not follow redirects",
    "keepalive": "keep_alive",
    "pool_maxsize": "max_sockets",
    "maxsize": "max_sockets",
    "pool_timeout": "queue_timeout",
    "max_queue": "max_queued",
    "keep_alive_msecs": "keep_alive_initial_delay (seconds)",
    "keep_alive_m_secs": "keep_alive_initial_delay (seconds)",
    "agent_keep_alive_timeout_buffer": "keep_alive_timeout_buffer (seconds)",
    "stream": "nothing: a response's body is always streamed (read(size), iteration)",
    # the peers' pool settings (reference/peers.md): per-origin cap, total cap, idle cap and limit
    "concurrency": "max_sockets",  # geventhttpclient, FastHttpUser
    "connections": "max_sockets",  # undici Pool
    "limit_per_host": "max_sockets",  # aiohttp
    "max_connections": "max_total_sockets",  # httpx (across origins)
    "limit": "max_total_sockets",  # aiohttp
    "max_keepalive_connections": "max_free_sockets",  # httpx
    "keepalive_expiry": "free_socket_timeout",  # httpx
    "keepalive_timeout": "free_socket_timeout",  # aiohttp
    "keep_alive_timeout": "free_socket_timeout",  # undici keepAliveTimeout
    "idle_timeout": "free_socket_timeout",
    "socket_active_ttl": "socket_ttl",  # agentkeepalive socketActiveTTL
    "client_ttl": "socket_ttl",  # undici
    "max_requests_per_client": "max_requests_per_socket",  # undici
    "connection_timeout": "connect_timeout",  # geventhttpclient
    "network_timeout": "timeout",  # geventhttpclient
    "body_timeout": "timeout",  # undici
    "headers_timeout": "timeout",  # undici
    "retries": _RETRY_HINT,  # urllib3
    "max_retries": _RETRY_HINT,  # requests, FastHttpUser
    "cookies": "nothing: send a Cookie header, headers={'Cookie': 'a=1; b=2'}",
    # Node's own request options that have no counterpart here, each with what to do instead
    # (a near spelling would mislead: localPort is not default_port, signal is not sigalgs)
    "create_connection": "nothing: subclass Agent and override its create_connection(options, callback)",
    "hints": "nothing: family= picks the family; lookup=(hostname, family) resolves names your way",
    "local_port": "nothing: local_address= binds the address; the kernel picks the port",
    "signal": "nothing: to abort, call req.destroy() or wrap the call in gevent.Timeout(seconds)",
    "insecure_http_parser": "nothing: responses are always parsed strictly (llhttp, as Node's default)",
    "insecure_httpparser": "nothing: responses are always parsed strictly (llhttp, as Node's default)",
    "join_duplicate_headers": "nothing: res.raw_headers has every value of every header as received",
    "unique_headers": "nothing: a header given once (a str, not a list) goes out as one line",
    "high_water_mark": "nothing: a response is read in the sizes its reader asks for (read(size))",
}
_CAMEL = re.compile(r"(?<=[a-z0-9])([A-Z])")


def _snake(name: str) -> str:
    return _CAMEL.sub(r"_\1", name).lower()


def suggest(name: str, valid: Iterable[str]) -> Optional[str]:
    """The valid name a caller most likely meant by ``name``, or None."""
    valid = sorted(valid)
    snake = _snake(name)
    if snake in _FOREIGN:
        return _FOREIGN[snake]
    if snake in valid:
        return snake
    close = difflib.get_close_matches(snake, valid, n=1, cutoff=0.6)
    return close[0] if close else None


def _placement(snake: str, valid: FrozenSet[str]) -> Optional[str]:
    """Where an option given in the wrong place belongs (``max_sockets`` on a request, ``ca`` on
    a plain Agent, ``method`` on an agent), or None. Node ignores such options without a word;
    here they raise, so they must not be answered with a near spelling of another option
    (``free_socket_timeout`` is not ``connect_timeout``)."""
    if snake in valid:
        return None
    given_as = "agent=" if "agent" in valid else ""  # (a request's options name its agent)
    if snake in POOL_OPTIONS:
        return "%s is an Agent option: use %sAgent(%s=...)" % (snake, given_as, snake)
    if snake in HTTPS_AGENT_OPTIONS:
        return "%s is an HttpsAgent option: use %sHttpsAgent(%s=...)" % (snake, given_as, snake)
    if snake in REQUEST_OPTIONS:
        return "%s is a request option: pass it to request(), get() or ClientRequest()" % snake
    return None


#: Node TLS options geventagent knows but cannot honour (Python's ``ssl`` has no equivalent).
UNSUPPORTED_TLS_OPTIONS = {
    "pfx": "convert the PKCS#12 file to PEM and pass cert= and key=",
    "sigalgs": "Python's ssl module cannot restrict signature algorithms",
    "client_cert_engine": "OpenSSL engines are not available from Python's ssl module",
    "private_key_engine": "OpenSSL engines are not available from Python's ssl module",
    "private_key_identifier": "OpenSSL engines are not available from Python's ssl module",
}


def check_names(given: Iterable[str], valid: FrozenSet[str], where: str) -> None:
    """Raise for the first name in ``given`` that is not in ``valid``, or that names a Node TLS
    option geventagent cannot honour.

    Raises:
        UnknownOptionError (``ERR_INVALID_ARG_VALUE``, also a ``TypeError``): e.g. ``Agent() got
        an unknown option 'maxSockets': did you mean 'max_sockets'?``.
        InvalidArgValueError: a known but unsupported option (``pfx``, ``sigalgs``, engines).
    """
    for name in given:
        if name not in valid:
            message = "%s got an unknown option %r" % (where, name)
            meant = _snake(str(name))
            meant = _FOREIGN.get(meant, meant)  # (another client's name: ours, e.g. keepalive)
            place = _placement(meant, valid)
            if place is not None:
                raise UnknownOptionError(message + ": " + place, option=str(name), suggestion=meant)
            hint = suggest(str(name), valid)
            if hint and hint.startswith("nothing:"):
                message += ": " + hint
            elif hint:
                message += ": did you mean %s?" % (repr(hint) if hint in valid else hint)
            raise UnknownOptionError(message, option=str(name), suggestion=hint)
        if name in UNSUPPORTED_TLS_OPTIONS:
            raise InvalidArgValueError(
                "%s: the option %r is not supported: %s" % (where, name, UNSUPPORTED_TLS_OPTIONS[name])
            )


# -- values ---------------------------------------------------------------------------------------
def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def validate_cap(name: str, value: Any, minimum: int) -> float:
    """A socket cap: a number >= ``minimum``; ``None`` or ``math.inf`` mean unlimited.

    Raises:
        InvalidArgTypeError: not a number (``ERR_INVALID_ARG_TYPE``).
        OutOfRangeError: NaN or below ``minimum`` (``ERR_OUT_OF_RANGE``).
    """
    if value is None:
        return _INF
    if not is_number(value):
        raise InvalidArgTypeError(
            'The "%s" argument must be of type number. Received type %s (%r)' % (name, type(value).__name__, value)
        )
    if value != value or value < minimum:
        raise OutOfRangeError(
            'The value of "%s" is out of range. It must be >= %d. Received %r' % (name, minimum, value)
        )
    return value


#: Methods retried on a stale reused socket by default (RFC 9110 idempotent methods, as urllib3).
IDEMPOTENT_METHODS = frozenset(("GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"))
RETRY_POLICIES = ("idempotent", "always", False)


def validate_retry(value: Any) -> Any:
    """A retry policy: ``"idempotent"``, ``"always"`` or False (None means False, True "idempotent").

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


def validate_scheduling(value: Any) -> str:
    """``"fifo"`` or ``"lifo"`` (case-sensitive, as Node).

    Raises:
        InvalidArgValueError: anything else, with Node's exact message.
    """
    if value not in ("fifo", "lifo"):
        raise InvalidArgValueError("The argument 'scheduling' must be one of: 'fifo', 'lifo'. Received %r" % (value,))
    return value


def validate_seconds(name: str, value: Any, allow_inf: bool = False) -> Optional[float]:
    """A duration in seconds: ``None`` or a non-negative number (finite unless ``allow_inf``).

    Raises:
        InvalidArgTypeError / OutOfRangeError, as Node's ``validateNumber`` for ``msecs``.
    """
    if value is None:
        return None
    if not is_number(value):
        pair = isinstance(value, (tuple, list)) and len(value) == 2 and name == "timeout"
        raise InvalidArgTypeError(
            'The "%s" argument must be of type number. Received type %s (%r)%s'
            % (
                name,
                type(value).__name__,
                value,
                ": for requests' (connect, read) pair, use connect_timeout= and timeout=" if pair else "",
            )
        )
    if value != value or value < 0 or (value == _INF and not allow_inf):
        raise OutOfRangeError(
            'The value of "%s" is out of range. It must be a non-negative finite number. Received %r' % (name, value)
        )
    return float(value)


#: The connect options with values to check (the rest are passed on as given).
CHECKED_CONNECT_OPTIONS: FrozenSet[str] = frozenset(
    ("connect_timeout", "auto_select_family", "auto_select_family_attempt_timeout", "lookup")
)


def validate_connect_options(options: Mapping[str, Any]) -> None:
    """Check an agent's or a request's connect limits before anything is sent (a bad one would
    fail later, in the connect, as a TypeError, or not at all).

    Raises:
        InvalidArgTypeError / OutOfRangeError: ``connect_timeout`` or
            ``auto_select_family_attempt_timeout`` not None or seconds >= 0;
            ``auto_select_family`` not a bool; ``lookup`` not callable.
    """
    for name in ("connect_timeout", "auto_select_family_attempt_timeout"):
        if name in options:
            validate_seconds(name, options[name])
    lookup = options.get("lookup")
    if lookup is not None and not callable(lookup):
        raise InvalidArgTypeError(
            'The "options.lookup" property must be of type function. Received type %s (%r)'
            % (type(lookup).__name__, lookup)
        )
    if not isinstance(options.get("auto_select_family", True), bool):
        raise InvalidArgTypeError(
            'The "auto_select_family" argument must be of type boolean. Received type %s'
            % type(options["auto_select_family"]).__name__
        )


def validate_port(value: Any, name: str = "options.port") -> int:
    """A TCP port: an integer (or an integral float, or a string of ASCII digits) from 0 to 65535
    (Node ``validatePort``).

    Raises:
        SocketBadPortError (``ERR_SOCKET_BAD_PORT``): anything else, bools included.
    """
    port = None
    if isinstance(value, int) and not isinstance(value, bool):
        port = value
    elif isinstance(value, float) and value.is_integer():
        port = int(value)
    elif isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        port = int(value.strip())
    if port is None or not 0 <= port <= 65535:
        raise SocketBadPortError(
            "%s should be >= 0 and < 65536. Received type %s (%r)." % (name, type(value).__name__, value)
        )
    return port


#: ``min_version`` / ``max_version`` names (Node's); a ``ssl.TLSVersion`` is taken as well.
TLS_VERSIONS = ("TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3")


def is_pem_content(value: Any) -> bool:
    """Whether a ``ca`` / ``cert`` / ``key`` / ``crl`` value is PEM content (bytes, or text with a
    ``-----BEGIN`` line) rather than a path (any other str, or an ``os.PathLike``)."""
    return isinstance(value, (bytes, bytearray)) or (isinstance(value, str) and "-----BEGIN" in value)


def _pem_items(name: str, value: Any, many: bool) -> None:
    items = value if many and isinstance(value, (list, tuple)) else [value]
    for item in items:
        if is_pem_content(item):
            continue
        if not isinstance(item, (str, os.PathLike)):
            hint = ""
            if name == "cert" and isinstance(value, (list, tuple)):
                hint = ": for requests' (cert, key) pair, pass cert= and key="
            raise InvalidArgTypeError(
                'The "%s" option must be a path or PEM text or bytes%s. Received type %s%s'
                % (name, " (or a list of them)" if many else "", type(item).__name__, hint)
            )
        if not os.path.exists(item):
            raise InvalidArgValueError('The "%s" option names no file: %r' % (name, os.fspath(item)))


def validate_tls_options(options: Dict[str, Any], whole: bool = True) -> None:
    """Check the TLS options' values without building a context (``ssl`` is imported at the
    first https connection, not before): what a context build would fail on later, at a request,
    as a confusing connect error.

    Raises:
        InvalidArgTypeError (``ERR_INVALID_ARG_TYPE``): ``ca`` / ``cert`` / ``key`` / ``crl`` not a
            path, PEM text or bytes (``cert=(cert, key)``, requests' pair, included); ``servername``
            not a str. ``ERR_TLS_INVALID_PROTOCOL_VERSION`` (Node's): an unknown ``min_version`` /
            ``max_version`` name.
        InvalidArgValueError (``ERR_INVALID_ARG_VALUE``): a path that names no file; ``key``
            without ``cert`` (when ``whole``: an agent's options, not a request's, which the
            agent's complete).
    """
    for name, many in (("ca", True), ("crl", True), ("cert", False), ("key", False)):
        value = options.get(name)
        if value is not None:
            _pem_items(name, value, many)
    if whole and options.get("key") is not None and options.get("cert") is None:
        raise InvalidArgValueError('The "key" option needs "cert" (the certificate it is the key of)')
    for name in ("min_version", "max_version"):
        version = options.get(name)
        if isinstance(version, str) and version not in TLS_VERSIONS:
            raise InvalidArgTypeError(
                "%s is not a valid TLS protocol version (%s: one of %s)" % (version, name, ", ".join(TLS_VERSIONS)),
                code="ERR_TLS_INVALID_PROTOCOL_VERSION",
            )
    servername = options.get("servername")
    if servername is not None and not isinstance(servername, str):
        raise InvalidArgTypeError(
            'The "servername" option must be of type string. Received type %s (%r)'
            % (type(servername).__name__, servername)
        )


# -- URLs -----------------------------------------------------------------------------------------
INVALID_PATH = re.compile(r"[^\u0021-\u00ff]")
#: The parts of a URL a request needs: protocol, hostname, port or None, path (with the query),
#: auth (``user:password``, percent-decoded) or None.
Template = Tuple[str, str, Optional[int], str, Optional[str]]
_TEMPLATES: Dict[str, Template] = {}


# What a URL string's path and query keep as they are (WHATWG URL, as Node v20's parser applies
# it): printable ASCII but for the percent-encode sets; anything else (space, controls, non-ASCII as
# UTF-8) is percent-encoded. An escape already there ("%C3%A9", or a stray "%zz") is left alone.
_PRINTABLE = "".join(map(chr, range(0x21, 0x7F)))
_C0_OR_SPACE = "".join(map(chr, range(0x21)))
_PATH_SAFE = "".join(c for c in _PRINTABLE if c not in '"#<>?`{}')
_QUERY_SAFE = "".join(c for c in _PRINTABLE if c not in "\"#<>'")
# outside either safe set, or a backslash (one class: an alternation costs twice the search)
_NEEDS_QUOTING = re.compile(r"[^!$-&(-;=@-\[\]-_a-z|~]")
_SURROGATE = re.compile("[\ud800-\udfff]")
# WHATWG's forbidden host code points ("%" aside, which Node decodes first; ":" is an IPv6 literal's)
_FORBIDDEN_HOST = re.compile(r"[\x00-\x20\x7f#/<>?@\[\\\]^|]")


_DOT_SEGMENT = re.compile(r"/(?:\.|%2e){1,2}(?:/|$)", re.IGNORECASE)  # "/./", "/..", "/%2e%2E/", ...
_SINGLE_DOT = frozenset((".", "%2e"))
_DOUBLE_DOT = frozenset(("..", ".%2e", "%2e.", "%2e%2e"))


def _remove_dot_segments(path: str) -> str:
    """``/a/./b/../c`` -> ``/a/c`` (WHATWG's path state, as Node's ``new URL()``, and urllib3's
    parse_url: RFC 3986 §5.2.4; ``%2e`` counts as a dot); a last ``.`` or ``..`` leaves a slash."""
    segments = path.split("/")[1:]
    out: List[str] = []
    last = len(segments) - 1
    for index, segment in enumerate(segments):
        lower = segment.lower()
        if lower in _DOUBLE_DOT:
            if out:
                out.pop()
            if index == last:
                out.append("")
        elif lower in _SINGLE_DOT:
            if index == last:
                out.append("")
        else:
            out.append(segment)
    return "/" + "/".join(out)


def _quote(part: str, safe: str) -> str:
    # (a lone surrogate becomes U+FFFD first, as in a USVString)
    return quote(_SURROGATE.sub("\ufffd", part), safe=safe)


def _ascii_hostname(hostname: str, url: str) -> str:
    """A host name as it goes on the wire and to the resolver: as given when ASCII, else
    UTS #46-mapped and Punycode-encoded per label (``bücher.example`` ->
    ``xn--bcher-kva.example``, ``faß.de`` -> ``xn--fa-hia.de``: WHATWG's nontransitional
    processing, as Node's ``new URL()``). ASCII labels keep what IDNA 2008 would refuse
    (``my_service``), as Node's do."""
    if hostname.isascii():
        if _FORBIDDEN_HOST.search(hostname):
            raise InvalidArgValueError("Invalid URL: %r" % (url,), code="ERR_INVALID_URL")
        return hostname
    import idna  # (only for a non-ASCII host: most processes never import it)

    def label_to_ascii(label: str) -> str:
        if label.isascii():
            return label
        try:
            return idna.alabel(label).decode("ascii")
        except idna.InvalidCodepoint:
            # a symbol UTS #46 keeps and IDNA 2008 refuses ("☃.net"): Node encodes it
            return "xn--" + label.encode("punycode").decode("ascii")

    try:
        mapped = idna.uts46_remap(hostname, std3_rules=False, transitional=False)
        return ".".join(map(label_to_ascii, mapped.split(".")))
    except (idna.IDNAError, UnicodeError) as exc:  # a disallowed code point, a bad joiner or bidi label
        raise InvalidArgValueError("Invalid URL: %r (host: %s)" % (url, exc), code="ERR_INVALID_URL") from exc


@functools.lru_cache(maxsize=2048)
def _parse_url(url: str) -> Dict[str, Any]:
    parts = urlsplit(url.strip(_C0_OR_SPACE))  # (WHATWG strips them at both ends; urlsplit the leading)
    if not parts.scheme or not parts.netloc:
        raise InvalidArgValueError("Invalid URL: %r" % (url,), code="ERR_INVALID_URL")
    hostname = _ascii_hostname(parts.hostname or "localhost", url)
    opts: Dict[str, Any] = {"protocol": parts.scheme.lower() + ":", "hostname": hostname}
    try:
        port = parts.port
    except ValueError as exc:
        raise InvalidArgValueError("Invalid URL: %r" % (url,), code="ERR_INVALID_URL") from exc
    if port:
        opts["port"] = port
    path, query = parts.path or "/", parts.query
    if _NEEDS_QUOTING.search(path):
        # http(s) URLs are "special": a backslash in the path is a slash (WHATWG; Node sends
        # "/a/b" for "http://h/a\\b")
        path = _quote(path.replace("\\", "/"), _PATH_SAFE)
    if ("/." in path or "%2" in path) and _DOT_SEGMENT.search(path):
        path = _remove_dot_segments(path)
    if query:
        path += "?" + (_quote(query, _QUERY_SAFE) if _NEEDS_QUOTING.search(query) else query)
    opts["path"] = path
    if parts.username is not None:
        auth = unquote(parts.username)
        if parts.password is not None:
            auth += ":" + unquote(parts.password)
        opts["auth"] = auth
    return opts


def parse_url(url: str) -> Dict[str, Any]:
    """Node-style request options (``protocol``, ``hostname``, ``port``, ``path``, ``auth``) from a
    URL: a new dict each call (parsing is cached: services call the same URLs again and again).

    Raises:
        InvalidArgValueError (``ERR_INVALID_URL``): no scheme or host, or a bad port.
    """
    return _parse_url(url).copy()


def url_template(url: str) -> Template:
    """``(protocol, hostname, port or None, path, auth or None)`` of a URL, validated once and cached.

    Raises:
        InvalidArgValueError (``ERR_INVALID_URL``), UnescapedCharactersError (a bad path).
    """
    template = _TEMPLATES.get(url)
    if template is None:
        opts = _parse_url(url)
        path = opts["path"]
        if INVALID_PATH.search(path):
            from .errors import UnescapedCharactersError

            raise UnescapedCharactersError("Request path contains unescaped characters")
        template = (opts["protocol"], opts["hostname"], opts.get("port"), path, opts.get("auth"))
        if len(_TEMPLATES) >= 2048:
            _TEMPLATES.clear()
        _TEMPLATES[url] = template
    return template
