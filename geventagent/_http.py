"""HTTP/1.1 framing over httptools (llhttp): bytes in, state out. No sockets here.

- :class:`ResponseParser` turns the bytes of one response into status, headers, body chunks and
  trailers, skips 1xx interim responses (keeping them for ``'information'``), and decides whether
  the connection may be reused.
- :func:`check_header_name` / :func:`check_header_value` / :func:`encode_head` validate and serialise
  a request head the way Node's ``_http_outgoing.js`` does.
"""

from __future__ import annotations

import re
from collections import deque
from typing import Any, Deque, List, Optional, Tuple

import httptools

from .errors import (
    HttpParseError,
    InvalidCharError,
    InvalidHttpTokenError,
    from_parser_error,
)

#: Node's default ``maxHeaderSize`` (bytes of status line plus header fields).
MAX_HEADER_SIZE = 16 * 1024

_TOKEN = re.compile(r"^[\^_`a-zA-Z\-0-9!#$%&'*+.|~]+$")
_INVALID_VALUE = re.compile(r"[^\t\x20-\x7e\x80-\xff]")

HeaderPairs = List[Tuple[str, str]]


def check_header_name(name: Any) -> str:
    """Validate a header name (Node ``validateHeaderName``).

    Raises:
        InvalidHttpTokenError: ``name`` is not a non-empty HTTP token (``ERR_INVALID_HTTP_TOKEN``).
    """
    if not isinstance(name, str) or not _TOKEN.match(name):
        raise InvalidHttpTokenError('Header name must be a valid HTTP token ["%s"]' % (name,))
    return name


def check_header_value(name: str, value: Any) -> str:
    """Validate and stringify a header value (Node ``validateHeaderValue``).

    Raises:
        InvalidArgValueError: ``value`` is None.
        InvalidCharError: the value holds CR, LF, NUL or another control character (``ERR_INVALID_CHAR``).
    """
    if value is None:
        from .errors import InvalidArgValueError

        raise InvalidArgValueError('Invalid value "None" for header "%s"' % name)
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    elif not isinstance(value, str):
        value = str(value)
    if _INVALID_VALUE.search(value):
        raise InvalidCharError('Invalid character in header content ["%s"]' % name)
    return value


def encode_head(method: str, path: str, headers: HeaderPairs) -> bytes:
    """Serialise a request line and header fields (already validated) to bytes (latin-1)."""
    parts = ["%s %s HTTP/1.1\r\n" % (method, path)]
    for name, value in headers:
        parts.append("%s: %s\r\n" % (name, value))
    parts.append("\r\n")
    return "".join(parts).encode("latin-1")


class _Stray(Exception):
    """Raised inside a parser callback: bytes arrived after the response was complete."""


class ResponseParser:
    """Parse one HTTP/1.1 response (after any 1xx interim responses) with llhttp.

    Feed it with :meth:`feed` and :meth:`feed_eof`; read the attributes. A parse error raises
    :class:`~geventagent.errors.HttpParseError` with Node's ``HPE_*`` code.

    Attributes:
        headers_complete / message_complete (bool): progress of the final (non-1xx) response.
        keep_alive (bool): llhttp's ``should_keep_alive`` for a complete message, False for an
            EOF-delimited body, a HEAD/CONNECT oddity, stray bytes or conflicting framing.
        body (deque[bytes]): body chunks parsed and not yet taken by the reader.
        informational (list): ``(status, message, version, raw_headers)`` of each 1xx except 101.
        upgrade_head (bytes | None): bytes after a 101 (or a 2xx to CONNECT) head.
        stray (bool): bytes arrived after the message ended; the connection must not be reused.
    """

    __slots__ = (
        "_parser",
        "method",
        "max_header_size",
        "status_code",
        "status_message",
        "http_version",
        "raw_headers",
        "raw_trailers",
        "headers_complete",
        "message_complete",
        "keep_alive",
        "body",
        "body_bytes",
        "informational",
        "upgrade_head",
        "stray",
        "eof_body",
        "bytes_received",
        "_head_bytes",
        "_status_parts",
        "_connect_head",
    )

    def __init__(self, method: str = "GET", max_header_size: int = MAX_HEADER_SIZE) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self.method = method
        self.max_header_size = max_header_size
        self.status_code = 0
        self.status_message = ""
        self.http_version = "1.1"
        self.raw_headers: HeaderPairs = []
        self.raw_trailers: HeaderPairs = []
        self.headers_complete = False
        self.message_complete = False
        self.keep_alive = False
        self.body: Deque[bytes] = deque()
        self.body_bytes = 0
        self.informational: List[Tuple[int, str, str, HeaderPairs]] = []
        self.upgrade_head: Optional[bytes] = None
        self.stray = False
        self.eof_body = False
        self.bytes_received = 0
        self._head_bytes = 0
        self._status_parts: List[bytes] = []
        self._connect_head: Optional[bytearray] = bytearray() if method == "CONNECT" else None

    # -- llhttp callbacks -----------------------------------------------------------------------
    def on_message_begin(self) -> None:
        if self.message_complete:
            raise _Stray()

    def on_status(self, status: bytes) -> None:
        self._status_parts.append(status)
        self._head_bytes += len(status)

    def on_header(self, name: bytes, value: bytes) -> None:
        pair = (name.decode("latin-1"), value.decode("latin-1"))
        if self.headers_complete:
            self.raw_trailers.append(pair)
            return
        self._head_bytes += len(name) + len(value) + 4
        if self._head_bytes > self.max_header_size:
            raise HttpParseError("Parse Error: Header overflow", code="HPE_HEADER_OVERFLOW")
        self.raw_headers.append(pair)

    def on_headers_complete(self) -> None:
        parser = self._parser
        status = parser.get_status_code()
        self.status_code = status
        self.status_message = b"".join(self._status_parts).decode("latin-1")
        self._status_parts = []
        self.http_version = parser.get_http_version()
        if 100 <= status < 200 and status != 101:
            return  # interim response; on_message_complete records it
        self.headers_complete = True
        self.keep_alive = parser.should_keep_alive()
        method = self.method
        if method == "HEAD":
            # llhttp cannot be told this answers a HEAD: the message ends with its head.
            self.message_complete = True
            return
        if method == "CONNECT" and 200 <= status < 300:
            self.keep_alive = False
            raise httptools.HttpParserUpgrade(-1)
        if status in (204, 304):
            return
        has_length = has_chunked = False
        for name, value in self.raw_headers:
            lower = name.lower()
            if lower == "content-length":
                has_length = True
            elif lower == "transfer-encoding" and "chunked" in value.lower():
                has_chunked = True
        if not has_length and not has_chunked and status != 101:
            self.eof_body = True
            self.keep_alive = False

    def on_body(self, body: bytes) -> None:
        if self.message_complete:
            raise _Stray()
        self.body.append(body)
        self.body_bytes += len(body)

    def on_message_complete(self) -> None:
        status = self.status_code
        if not self.headers_complete and 100 <= status < 200:
            self.informational.append((status, self.status_message, self.http_version, self.raw_headers))
            self.raw_headers = []
            self.status_code = 0
            self._head_bytes = 0
            return
        if not self.message_complete:
            self.message_complete = True
            self.keep_alive = self.keep_alive and self._parser.should_keep_alive()

    # -- feeding --------------------------------------------------------------------------------
    def feed(self, data: bytes) -> None:
        """Parse ``data``.

        Raises:
            HttpParseError: malformed response (``HPE_*``), or a head over ``max_header_size``.
        """
        self.bytes_received += len(data)
        if self._connect_head is not None and not self.headers_complete:
            self._connect_head += data
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            offset = exc.args[0] if exc.args else -1
            if isinstance(offset, int) and offset >= 0:
                self.upgrade_head = bytes(data[offset:])
            elif self._connect_head is not None:
                end = self._connect_head.find(b"\r\n\r\n")
                self.upgrade_head = bytes(self._connect_head[end + 4 :]) if end >= 0 else b""
            else:
                self.upgrade_head = b""
            self.message_complete = True
            self.keep_alive = False
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, _Stray):
                self.stray = True
                self.keep_alive = False
            elif isinstance(cause, HttpParseError):
                raise cause from None
            elif isinstance(cause, httptools.HttpParserUpgrade):
                self.upgrade_head = b""
                if self._connect_head is not None:
                    end = self._connect_head.find(b"\r\n\r\n")
                    self.upgrade_head = bytes(self._connect_head[end + 4 :]) if end >= 0 else b""
                self.message_complete = True
                self.keep_alive = False
            else:
                raise from_parser_error(exc) from exc
        except httptools.HttpParserError as exc:
            if self.message_complete:
                self.stray = True
                self.keep_alive = False
                return
            raise from_parser_error(exc) from exc
        if not self.headers_complete and self._head_bytes + len(b"".join(self._status_parts)) > (self.max_header_size):
            raise HttpParseError("Parse Error: Header overflow", code="HPE_HEADER_OVERFLOW")

    def feed_eof(self) -> bool:
        """The peer closed the connection. Returns True if that ended the message cleanly
        (an EOF-delimited body); False if the message is incomplete (the caller raises
        ``ECONNRESET``) or was already complete."""
        if self.message_complete:
            return False
        if self.headers_complete and self.eof_body:
            self.message_complete = True
            self.keep_alive = False
            return True
        return False
