"""The geventagent exception tree: every error carries Node's error code in ``.code``.

Only the socket, TLS and parser layers see ``OSError`` or parser errors; they translate them here
with :func:`from_os_error` and :func:`from_parser_error` (``raise ... from exc``).
"""

from __future__ import annotations

import errno as _errno
import socket as _stdsocket
from typing import Any, Optional

__all__ = [
    "GeventAgentError",
    "InvalidArgTypeError",
    "InvalidArgValueError",
    "OutOfRangeError",
    "SocketBadPortError",
    "InvalidProtocolError",
    "InvalidHttpTokenError",
    "InvalidCharError",
    "UnescapedCharactersError",
    "UnknownOptionError",
    "ContentLengthMismatch",
    "QueueTimeout",
    "QueueFull",
    "ProxyConfigError",
    "ProxyTunnelError",
    "NetworkError",
    "ConnectionRefused",
    "ConnectionReset",
    "StaleSocket",
    "RequestTimeout",
    "HttpParseError",
    "ThreadError",
    "socket_hang_up",
    "from_os_error",
    "from_parser_error",
]


class GeventAgentError(Exception):
    """Root of every error geventagent raises.

    Attributes:
        code (str | None): Node's error code, e.g. ``"ECONNRESET"`` or ``"ERR_INVALID_ARG_TYPE"``.
        reused_socket (bool): True when the request that failed ran on a socket taken from the pool
            (Node's ``req.reusedSocket``); False otherwise.
    """

    code: Optional[str] = None
    reused_socket: bool = False

    def __init__(self, message: str = "", code: Optional[str] = None, **context: Any) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
        for key, value in context.items():
            setattr(self, key, value)

    def __str__(self) -> str:  # OSError subclasses would otherwise print "[Errno None] ..."
        return str(self.args[0]) if self.args else ""


class InvalidArgTypeError(GeventAgentError, TypeError):
    """A value of the wrong type (Node ``ERR_INVALID_ARG_TYPE``, a ``TypeError``)."""

    code = "ERR_INVALID_ARG_TYPE"


class InvalidArgValueError(GeventAgentError, ValueError, TypeError):
    """A value of the right type but not allowed (Node ``ERR_INVALID_ARG_VALUE``; Node makes it a
    ``TypeError``, Python users expect ``ValueError``: it is both)."""

    code = "ERR_INVALID_ARG_VALUE"


class OutOfRangeError(GeventAgentError, ValueError):
    """A number outside its range (Node ``ERR_OUT_OF_RANGE``)."""

    code = "ERR_OUT_OF_RANGE"


class SocketBadPortError(InvalidArgTypeError, ValueError):
    """A port that is not an integer from 0 to 65535, or a string of one (Node
    ``ERR_SOCKET_BAD_PORT``, a ``RangeError`` there): raised when the request is made, before
    anything is sent. A ``ValueError``, and a ``TypeError`` as the ``InvalidArgTypeError`` raised
    for ports before it was."""

    code = "ERR_SOCKET_BAD_PORT"


class InvalidProtocolError(GeventAgentError, ValueError):
    """A URL scheme the chosen agent does not serve (Node ``ERR_INVALID_PROTOCOL``)."""

    code = "ERR_INVALID_PROTOCOL"


class InvalidHttpTokenError(GeventAgentError, ValueError):
    """A header name or method that is not an HTTP token (Node ``ERR_INVALID_HTTP_TOKEN``)."""

    code = "ERR_INVALID_HTTP_TOKEN"


class InvalidCharError(GeventAgentError, ValueError):
    """A header value with a CR, LF, NUL or other control character (Node ``ERR_INVALID_CHAR``)."""

    code = "ERR_INVALID_CHAR"


class UnescapedCharactersError(GeventAgentError, ValueError):
    """A request path with spaces or control characters (Node ``ERR_UNESCAPED_CHARACTERS``)."""

    code = "ERR_UNESCAPED_CHARACTERS"


class UnknownOptionError(InvalidArgValueError):
    """A keyword argument that no part of the API knows (a misspelling, Node's camelCase, another
    client's name such as ``json=``): raised before anything is sent, naming the option and the
    nearest valid one in ``.suggestion`` (``ERR_INVALID_ARG_VALUE``; a ``TypeError`` too, as
    Python raises for an unexpected keyword argument)."""

    def __init__(self, message: str, option: str = "", suggestion: Optional[str] = None) -> None:
        super().__init__(message)
        self.option = option
        self.suggestion = suggestion


class ProxyConfigError(InvalidArgValueError):
    """A proxy URL that cannot be used: unparsable, no host, or a scheme other than http/https
    (Node ``ERR_PROXY_INVALID_CONFIG``); raised when the agent or request is made."""

    code = "ERR_PROXY_INVALID_CONFIG"


class ContentLengthMismatch(GeventAgentError, ValueError):
    """The caller's ``Content-Length`` header disagrees with the body's length (Node
    ``ERR_HTTP_CONTENT_LENGTH_MISMATCH``): nothing was sent."""

    code = "ERR_HTTP_CONTENT_LENGTH_MISMATCH"


class ThreadError(GeventAgentError, RuntimeError):
    """An agent was used from an OS thread other than the one (and hub) that created it."""

    code = "ERR_WRONG_THREAD"


class NetworkError(GeventAgentError, OSError):
    """A socket-level failure; ``.code`` is the errno name (``EHOSTUNREACH``, ``EPIPE``, ...).

    Connect errors also carry Node's ``syscall`` (``"connect"``), ``address`` (the host or
    Unix socket path) and ``port`` (None for a Unix socket)."""

    syscall: Optional[str] = None
    address: Optional[str] = None
    port: Optional[int] = None


class ConnectionRefused(NetworkError, ConnectionRefusedError):
    """The server refused the connection (``ECONNREFUSED``)."""

    code = "ECONNREFUSED"


class ConnectionReset(NetworkError, ConnectionResetError):
    """The connection was reset or closed early (``ECONNRESET``; ``"socket hang up"`` when the server
    closed before any response byte, ``"aborted"`` when it closed in the middle of a response)."""

    code = "ECONNRESET"


class RequestTimeout(NetworkError, TimeoutError):
    """The socket was inactive for longer than ``timeout`` / ``connect_timeout`` (``ETIMEDOUT``)."""

    code = "ETIMEDOUT"


class ProxyTunnelError(NetworkError, ConnectionError):
    """A proxy would not open a ``CONNECT`` tunnel (Node ``ERR_PROXY_TUNNEL``): ``.status_code``
    is its answer (407: authentication required; 502, 503: the origin unreachable), None when it
    closed or misbehaved instead; ``.proxy`` names the proxy."""

    code = "ERR_PROXY_TUNNEL"
    status_code: Optional[int] = None
    proxy: Optional[str] = None


class QueueTimeout(GeventAgentError, TimeoutError):
    """A request waited ``queue_timeout`` seconds for a socket and left the queue, having sent
    nothing (``ERR_AGENT_QUEUE_TIMEOUT``)."""

    code = "ERR_AGENT_QUEUE_TIMEOUT"


class QueueFull(GeventAgentError, RuntimeError):
    """The agent already has ``max_queued`` requests waiting for a socket: this one was refused at
    once, having sent nothing (``ERR_AGENT_QUEUE_FULL``)."""

    code = "ERR_AGENT_QUEUE_FULL"


class HttpParseError(GeventAgentError, ValueError):
    """A malformed response; ``.code`` is llhttp's ``HPE_*`` name, as in Node."""

    code = "HPE_INVALID_CONSTANT"


class StaleSocket(ConnectionReset):
    """A reused keep-alive socket was found closed, reset or sent stray bytes by the server just
    before the request was written: nothing of the request left. The request goes out again on
    a new connection whatever its method (it is not a retry), so this reaches callers only from
    :class:`~geventagent.Socket` used directly. ``reason`` is the socket's close reason."""

    unwritten = True

    def __init__(self, reason: str) -> None:
        super().__init__("socket hang up (stale keep-alive socket: %s; nothing was written)" % reason)
        self.reason = reason


def socket_hang_up(**context: Any) -> ConnectionReset:
    """Node's ``ConnResetException('socket hang up')``."""
    return ConnectionReset("socket hang up", **context)


#: getaddrinfo's errors by number -> Node's code: its name, except that a name with no address
#: (EAI_NONAME, EAI_NODATA) is ENOTFOUND (Node's lib/internal/errors.js dnsException).
_GETADDRINFO_CODES = {
    getattr(_stdsocket, name): "ENOTFOUND" if name in ("EAI_NONAME", "EAI_NODATA") else name
    for name in dir(_stdsocket)
    if name.startswith("EAI_")
}


def from_os_error(exc: BaseException, action: str = "", address: str = "") -> GeventAgentError:
    """Translate an ``OSError`` (or gevent/socket timeout) into the matching geventagent error.

    Args:
        exc: the error raised by the socket layer.
        action: Node's syscall word for the message (``"connect"``, ``"write"``, ``"read"``).
        address: ``"host:port"`` or a Unix socket path, for the message.
    """
    if isinstance(exc, GeventAgentError):
        return exc
    where = " ".join(part for part in (action, "%s", address) if part)
    if isinstance(exc, (TimeoutError, _stdsocket.timeout)):
        return RequestTimeout(where % "ETIMEDOUT")
    if type(exc).__module__ == "ssl":  # (an ssl error exists only once ssl is imported)
        return _from_ssl_error(exc, where)
    err = getattr(exc, "errno", None)
    name = _errno.errorcode.get(err, "") if isinstance(err, int) else ""
    if isinstance(exc, ConnectionRefusedError) or name == "ECONNREFUSED":
        return ConnectionRefused(where % "ECONNREFUSED", errno=err)
    if isinstance(exc, (ConnectionResetError, BrokenPipeError)) or name in ("ECONNRESET", "EPIPE"):
        code = name or "ECONNRESET"
        if code == "EPIPE":
            return ConnectionReset(where % code, code=code, errno=err)
        return ConnectionReset(where % code, errno=err)
    if isinstance(exc, _stdsocket.gaierror):
        code = _GETADDRINFO_CODES.get(err, "ENOTFOUND") if isinstance(err, int) else "ENOTFOUND"
        return NetworkError("getaddrinfo %s %s" % (code, address.rsplit(":", 1)[0]), code=code)
    code = name or type(exc).__name__
    detail = getattr(exc, "strerror", None) or str(exc)
    return NetworkError((where % code) + (" (%s)" % detail if detail else ""), code=code, errno=err)


def _from_ssl_error(exc: BaseException, where: str) -> GeventAgentError:
    """An error of the ssl module after the handshake. Its errno is OpenSSL's ``SSL_ERROR_*``
    number, not an OS errno (``SSL_ERROR_EOF`` is 8, which is ``ENOEXEC``): the connection's end
    under TLS (a TCP close or reset without ``close_notify``, or after one) is ``ECONNRESET``, as
    for a plain socket and in Node; an alert or a broken record is ``ERR_SSL_<reason>``
    (:func:`geventagent.tls.from_ssl_error`)."""
    if type(exc).__name__ in ("SSLEOFError", "SSLZeroReturnError", "SSLSyscallError"):
        return ConnectionReset(where % "ECONNRESET", errno=_errno.ECONNRESET)
    from .tls import from_ssl_error

    return from_ssl_error(exc)


#: llhttp's reason strings -> its error code, from llhttp 9.3.0's ``src/llhttp/http.ts`` (the
#: version httptools 0.9 bundles; the strings are the same through 9.4.2), as a response parser
#: meets them. httptools reports the reason, not the code; Node reports ``HPE_<code>``.
LLHTTP_REASONS = {
    "Chunk size overflow": "HPE_INVALID_CHUNK_SIZE",
    "Content-Length can't be present with Transfer-Encoding": "HPE_INVALID_CONTENT_LENGTH",
    "Content-Length overflow": "HPE_INVALID_CONTENT_LENGTH",
    "Data after `Connection: close`": "HPE_CLOSED_CONNECTION",
    "Duplicate Content-Length": "HPE_UNEXPECTED_CONTENT_LENGTH",
    "Empty Content-Length": "HPE_INVALID_CONTENT_LENGTH",
    "Expected HTTP/, RTSP/ or ICE/": "HPE_INVALID_CONSTANT",
    "Expected LF after CR": "HPE_STRICT",
    "Expected LF after chunk data": "HPE_STRICT",
    "Expected LF after chunk size": "HPE_STRICT",
    "Expected LF after headers": "HPE_STRICT",
    "Expected dot": "HPE_INVALID_VERSION",
    "Expected space after version": "HPE_INVALID_VERSION",
    "Invalid HTTP version": "HPE_INVALID_VERSION",
    "Invalid `Transfer-Encoding` header value": "HPE_INVALID_TRANSFER_ENCODING",
    "Invalid character in Content-Length": "HPE_INVALID_CONTENT_LENGTH",
    "Invalid character in chunk extensions": "HPE_STRICT",
    "Invalid character in chunk extensions name": "HPE_STRICT",
    "Invalid character in chunk extensions quote value": "HPE_STRICT",
    "Invalid character in chunk extensions quoted value": "HPE_STRICT",
    "Invalid character in chunk extensions value": "HPE_STRICT",
    "Invalid character in chunk size": "HPE_INVALID_CHUNK_SIZE",
    "Invalid header field char": "HPE_INVALID_HEADER_TOKEN",
    "Invalid header token": "HPE_INVALID_HEADER_TOKEN",
    "Invalid header value char": "HPE_INVALID_HEADER_TOKEN",
    "Invalid major version": "HPE_INVALID_VERSION",
    "Invalid minor version": "HPE_INVALID_VERSION",
    "Invalid quoted-pair in chunk extensions quoted value": "HPE_STRICT",
    "Invalid response status": "HPE_INVALID_STATUS",
    "Invalid status code": "HPE_INVALID_STATUS",
    "Invalid word encountered": "HPE_INVALID_CONSTANT",
    "Missing expected CR after chunk data": "HPE_CR_EXPECTED",
    "Missing expected CR after chunk extension name": "HPE_CR_EXPECTED",
    "Missing expected CR after chunk extension value": "HPE_CR_EXPECTED",
    "Missing expected CR after chunk size": "HPE_CR_EXPECTED",
    "Missing expected CR after header value": "HPE_CR_EXPECTED",
    "Missing expected CR after response line": "HPE_CR_EXPECTED",
    "Missing expected LF after header value": "HPE_LF_EXPECTED",
    "Transfer-Encoding can't be present with Content-Length": "HPE_INVALID_TRANSFER_ENCODING",
    "Unexpected space after start line": "HPE_UNEXPECTED_SPACE",
    "Unexpected whitespace after header value": "HPE_INVALID_HEADER_TOKEN",
    "Invalid EOF state": "HPE_INVALID_EOF_STATE",  # llhttp_finish (api.c)
}
#: httptools' exception classes -> the code, for reasons the table does not hold.
_PARSER_CLASSES = {
    "HttpParserInvalidStatusError": "HPE_INVALID_STATUS",
    "HttpParserInvalidMethodError": "HPE_INVALID_METHOD",
    "HttpParserInvalidURLError": "HPE_INVALID_URL",
}


def from_parser_error(exc: BaseException) -> HttpParseError:
    """Translate an httptools/llhttp parse error into :class:`HttpParseError` with Node's code:
    llhttp's reason string looked up in :data:`LLHTTP_REASONS` (exact match), else the exception
    class, else ``HPE_INVALID_CONSTANT``."""
    message = str(exc)
    code = LLHTTP_REASONS.get(message) or _PARSER_CLASSES.get(type(exc).__name__) or "HPE_INVALID_CONSTANT"
    return HttpParseError("Parse Error: %s" % (message or code), code=code)
