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


def _pairs(raw: List[bytes]) -> HeaderPairs:
    return [(raw[i].decode("latin-1"), raw[i + 1].decode("latin-1")) for i in range(0, len(raw), 2)]


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

    # Scalars start from class-level defaults: a parser is created per response (hot path).
    status_code = 0
    status_message = ""
    http_version = "1.1"
    headers_complete = False
    message_complete = False
    keep_alive = False
    body_bytes = 0
    upgrade_head: Optional[bytes] = None
    stray = False
    bytes_received = 0
    _head_bytes = 0
    _connect_head: Optional[bytearray] = None
    _decoded: Optional[HeaderPairs] = None
    keep_alive_hint: Optional[bytes] = None  # the first Keep-Alive header's value, if any

    def __init__(self, method: str = "GET", max_header_size: int = MAX_HEADER_SIZE) -> None:
        self._parser: Any = httptools.HttpResponseParser(self)  # None once the message ended
        self.method = method
        self.max_header_size = max_header_size
        self._raw: List[bytes] = []  # name, value, name, value, ... as received (decoded lazily)
        self._raw_trailers: List[bytes] = []
        self.body: Deque[bytes] = deque()
        self.informational: List[Tuple[int, str, str, HeaderPairs]] = []
        self._status_parts: List[bytes] = []
        if method == "CONNECT":
            self._connect_head = bytearray()

    # -- headers, decoded on demand ---------------------------------------------------------------
    @property
    def raw_headers(self) -> HeaderPairs:
        """``[(name, value), ...]`` of the final response, as received (latin-1)."""
        decoded = self._decoded
        if decoded is None:
            decoded = self._decoded = _pairs(self._raw)
        return decoded

    @property
    def raw_trailers(self) -> HeaderPairs:
        return _pairs(self._raw_trailers)

    def header(self, lower_name: bytes) -> Optional[bytes]:
        """The first value of a header (``lower_name`` in lower-case bytes), or None; no decoding."""
        raw = self._raw
        size = len(lower_name)
        for index in range(0, len(raw), 2):
            name = raw[index]
            if len(name) == size and name.lower() == lower_name:
                return raw[index + 1]
        return None

    def header_values(self, lower_name: bytes) -> List[bytes]:
        """Every value of a header (``lower_name`` in lower-case bytes), as received."""
        raw = self._raw
        size = len(lower_name)
        return [raw[i + 1] for i in range(0, len(raw), 2) if len(raw[i]) == size and raw[i].lower() == lower_name]

    @property
    def eof_body(self) -> bool:
        """The body is delimited by the end of the connection (no length, not chunked)."""
        if not self.headers_complete or self.method == "HEAD" or self.status_code in (101, 204, 304):
            return False
        if self.header(b"content-length") is not None:
            return False
        te = self.header(b"transfer-encoding")
        return te is None or b"chunked" not in te.lower()

    # -- llhttp callbacks -----------------------------------------------------------------------
    def on_status(self, status: bytes) -> None:
        if self.message_complete:
            raise _Stray()
        self._status_parts.append(status)

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.headers_complete:
            self._raw_trailers += (name, value)
        else:
            self._raw += (name, value)

    def on_headers_complete(self) -> None:
        parser = self._parser
        status = parser.get_status_code()
        self.status_code = status
        parts = self._status_parts
        self.status_message = (parts[0] if len(parts) == 1 else b"".join(parts)).decode("latin-1")
        self._status_parts = []
        raw = self._raw
        # (only a head fed in more bytes than the limit can be over it: count precisely then)
        if self._head_bytes > self.max_header_size and (
            sum(map(len, raw)) + 2 * len(raw) + len(self.status_message) > self.max_header_size
        ):
            raise HttpParseError("Parse Error: Header overflow", code="HPE_HEADER_OVERFLOW")
        self.http_version = parser.get_http_version()
        if 100 <= status < 200 and status != 101:
            return  # interim response; on_message_complete records it
        self.headers_complete = True
        self.keep_alive = parser.should_keep_alive()
        if b"keep-alive" in b"\n".join(raw[::2]).lower():  # one C-level scan per response
            self.keep_alive_hint = self.header(b"keep-alive")
        method = self.method
        if method == "HEAD":
            # llhttp cannot be told this answers a HEAD: the message ends with its head.
            self.message_complete = True
            return
        if method == "CONNECT" and 200 <= status < 300:
            self.keep_alive = False
            raise httptools.HttpParserUpgrade(-1)

    def on_body(self, body: bytes) -> None:
        if self.message_complete:
            raise _Stray()
        self.body.append(body)
        self.body_bytes += len(body)

    def on_message_complete(self) -> None:
        status = self.status_code
        if not self.headers_complete and 100 <= status < 200:
            self.informational.append((status, self.status_message, self.http_version, _pairs(self._raw)))
            self._raw = []
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
        if self._parser is None:  # the message ended earlier: anything more is stray
            self.stray = True
            self.keep_alive = False
            return
        if not self.headers_complete:
            self._head_bytes += len(data)
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
        if self.message_complete:
            # llhttp's parser and this object refer to each other: let go now, so both are freed
            # by reference counting instead of waiting for the cycle collector.
            self._parser = None
        elif not self.headers_complete and self._head_bytes > self.max_header_size:
            raise HttpParseError("Parse Error: Header overflow", code="HPE_HEADER_OVERFLOW")

    def feed_eof(self) -> bool:
        """The peer closed the connection. Returns True if that ended the message cleanly
        (an EOF-delimited body); False if the message is incomplete (the caller raises
        ``ECONNRESET``) or was already complete."""
        if self.message_complete:
            return False
        if self.eof_body:
            self.message_complete = True
            self.keep_alive = False
            return True
        return False
