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


def check_method(method: str) -> str:
    """Validate a request method, as Node's ``ClientRequest`` does (``checkIsHttpToken``).

    Raises:
        InvalidHttpTokenError: ``method`` is not a non-empty HTTP token (``ERR_INVALID_HTTP_TOKEN``).
    """
    if not _TOKEN.match(method):
        raise InvalidHttpTokenError('Method must be a valid HTTP token ["%s"]' % (method,))
    return method


def check_header_value(name: str, value: Any) -> str:
    """Validate and stringify a header value (Node ``validateHeaderValue``).

    Raises:
        InvalidArgValueError: ``value`` is None.
        InvalidArgTypeError: a mapping, a set, or a list inside a list (its repr() is no value).
        InvalidCharError: the value holds CR, LF, NUL or another control character (``ERR_INVALID_CHAR``).
    """
    if value is None:
        from .errors import InvalidArgValueError

        raise InvalidArgValueError('Invalid value "None" for header "%s"' % name)
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    elif not isinstance(value, str):
        if isinstance(value, bool):
            value = "true" if value else "false"  # (JavaScript's String(true), as Node sends it)
        elif isinstance(value, (dict, set, frozenset, list, tuple)) or hasattr(value, "keys"):
            # a mapping, a set, a list inside a list: its repr() is no header value (Node would
            # send "[object Object]")
            from .errors import InvalidArgTypeError

            raise InvalidArgTypeError(
                'Invalid value for header "%s": a str, bytes, number (or another object with a str()) '
                "or a list of them. Received type %s" % (name, type(value).__name__)
            )
        else:
            value = str(value)  # numbers, UUIDs, Decimals, ... as Node's String(value)
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


#: The chunk extensions of one chunk, at most (Node's limit: ``HPE_CHUNK_EXTENSIONS_OVERFLOW``).
MAX_CHUNK_EXTENSIONS = 16 * 1024
#: The interim (1xx) heads of one response, all together, at most (``HPE_HEADER_OVERFLOW``):
#: each is emitted as ``'information'`` and kept by nobody, but a flood must end somewhere.
MAX_INTERIM_BYTES = 4 * 1024 * 1024
_HTTP_VERSIONS = {b"1.1": "1.1", b"1.0": "1.0"}
_FINAL_OR_UPGRADE = frozenset((b"2", b"3", b"4", b"5"))


def _overflow(what: str = "Header overflow", code: str = "HPE_HEADER_OVERFLOW") -> HttpParseError:
    return HttpParseError("Parse Error: %s" % what, code=code)


class ResponseParser:
    """Parse one HTTP/1.1 response (after any 1xx interim responses) with llhttp.

    Feed it with :meth:`feed` and :meth:`feed_eof`; read the attributes. A malformed head raises
    :class:`~geventagent.errors.HttpParseError` with Node's ``HPE_*`` code; an error after a valid
    head is kept in :attr:`error` for the body's reader (Node delivers the response, then fails
    its body).

    Every part is bounded as in Node: the head and, separately, the trailers at
    ``max_header_size`` (``HPE_HEADER_OVERFLOW``), one chunk's extensions at 16 KiB
    (``HPE_CHUNK_EXTENSIONS_OVERFLOW``). Each 1xx other than 101 ends at its head whatever framing
    it announces (Node tells llhttp so): its heads are split off before llhttp sees them.

    Attributes:
        headers_complete / message_complete (bool): progress of the final (non-1xx) response.
        keep_alive (bool): llhttp's ``should_keep_alive`` for a complete message, False for an
            EOF-delimited body, a HEAD/CONNECT oddity, stray bytes or conflicting framing.
        body (deque[bytes]): body chunks parsed and not yet taken by the reader.
        informational (list): ``(status, message, version, raw_headers)`` of the 1xx responses
            (not 101) parsed and not yet taken by the reader (the exchange takes them at once).
        upgrade_head (bytes | None): bytes after a 101 (or a 2xx to CONNECT) head.
        stray (bool): bytes arrived after the message ended; the connection must not be reused.
        error (HttpParseError | None): the body could not be parsed (raised to its reader).
        slow_read (bool): the next read takes the careful path: the last bytes fed ended inside
            framing (a chunk's size line or its extensions, or the trailers), which must complete
            within the socket's timeout, or :attr:`error` is set.
    """

    # Slots for what every response sets: as ~26 keys of an instance dict, they outgrew CPython's
    # shared-key dicts and the dict was rebuilt for every response (~1 us of a small request's
    # ~30). What only rare responses set (chunk and trailer counts, interim bytes, decoded
    # headers) keeps a class default, in a __dict__ made when one is first written.
    __slots__ = (
        "_parser",
        "method",
        "max_header_size",
        "_raw",
        "_raw_trailers",
        "body",
        "informational",
        "_status_parts",
        "_connect_head",
        "headers_complete",
        "message_complete",
        "keep_alive",
        "stray",
        "slow_read",
        "_chunked",
        "body_bytes",
        "bytes_received",
        "_head_bytes",
        "upgrade_head",
        "error",
        "keep_alive_hint",
        "_scan",
        "_version",
        "status_code",
        "status_message",
        "http_version",
        "__dict__",
    )
    # Set by __init__ (read on every response: CPython 3.11 specializes a read of an instance
    # attribute, not a class default read through an instance).
    headers_complete: bool
    message_complete: bool
    keep_alive: bool
    stray: bool
    slow_read: bool
    body_bytes: int
    bytes_received: int
    _head_bytes: int
    upgrade_head: Optional[bytes]
    error: Optional[HttpParseError]
    keep_alive_hint: Optional[bytes]  # the first Keep-Alive header's value, if any
    _connect_head: Optional[bytearray]  # a CONNECT's head bytes (its tunnel's first bytes follow)
    # interim heads not yet split off: b"" (scanning, nothing held), bytes held, or None (done)
    _scan: Optional[bytes]
    _version: bytes  # the status line's "1.1" / "1.0" when the head came with no interim one first
    _chunked: bool
    status_code: int
    status_message: str
    http_version: str
    # Class-level defaults: written before they are read, or read on rare paths only.
    _interim_bytes = 0
    _decoded: Optional[HeaderPairs] = None
    # chunked bodies: chunk headers seen, whether one was the last event, size-line and trailer bytes
    _chunk_headers = 0
    _body_at_chunk_header = -1  # body_bytes when the last chunk header ended
    _size_line = 0
    _in_trailers = False
    _trailer_bytes = 0
    _trailer_fields = 0

    def __init__(self, method: str = "GET", max_header_size: int = MAX_HEADER_SIZE) -> None:
        self._parser: Any = httptools.HttpResponseParser(self)  # None once the message ended
        self.method = method
        self.max_header_size = max_header_size
        self._raw: List[bytes] = []  # name, value, name, value, ... as received (decoded lazily)
        self._raw_trailers: List[bytes] = []
        self.body: Deque[bytes] = deque()
        self.informational: List[Tuple[int, str, str, HeaderPairs]] = []
        self._status_parts: List[bytes] = []
        self._connect_head = bytearray() if method == "CONNECT" else None
        self.headers_complete = self.message_complete = self.keep_alive = False
        self.stray = self.slow_read = self._chunked = False
        self.body_bytes = self.bytes_received = self._head_bytes = 0
        self.upgrade_head = self.error = self.keep_alive_hint = None
        self._scan = self._version = b""
        self.status_code = 0
        self.status_message = ""
        self.http_version = "1.1"

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
        """The body is delimited by the end of the connection: no length, and ``chunked`` is not
        the final transfer coding (RFC 9112 §6.3: ``chunked, gzip`` is read until close)."""
        if not self.headers_complete or self.method == "HEAD" or self.status_code in (101, 204, 304):
            return False
        if self.header(b"content-length") is not None:
            return False
        te = self.header(b"transfer-encoding")
        return te is None or not te.lower().rstrip().endswith(b"chunked")

    # -- llhttp callbacks -----------------------------------------------------------------------
    def on_status(self, status: bytes) -> None:
        if self.message_complete:
            raise _Stray()
        self._status_parts.append(status)

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.headers_complete:
            self._raw_trailers += (name, value)
            self._in_trailers = True
            self._trailer_fields += len(name) + len(value)
            if self._trailer_fields >= self.max_header_size:  # Node counts field bytes, per section
                raise _overflow()
        else:
            raw = self._raw
            raw.append(name)  # (two appends: specialized, where += of a tuple builds one)
            raw.append(value)

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
            raise _overflow()
        # (llhttp's get_http_version() formats a new string each time: ~0.5 us)
        version = _HTTP_VERSIONS.get(self._version) if self._version else None
        self.http_version = version if version is not None else parser.get_http_version()
        if 100 <= status < 200 and status != 101:
            return  # interim response; on_message_complete records it
        self.headers_complete = True
        self.keep_alive = parser.should_keep_alive()
        # One C-level scan of the names per response. (find(), not `in`: bytes' `in` first tries
        # its operand as an integer and raises and clears a TypeError, ~2k instructions each.)
        names = b"\n".join(raw[::2]).lower()
        if names.find(b"keep-alive") >= 0:
            self.keep_alive_hint = self.header(b"keep-alive")
        method = self.method
        if method == "HEAD":
            # llhttp cannot be told this answers a HEAD: the message ends with its head.
            self.message_complete = True
            return
        if method == "CONNECT" and 200 <= status < 300:
            self.keep_alive = False
            raise httptools.HttpParserUpgrade(-1)
        if names.find(b"transfer-encoding") >= 0:
            te = self.header(b"transfer-encoding")
            if te is not None and te.lower().rstrip().endswith(b"chunked"):
                self._chunked = True

    def on_body(self, body: bytes) -> None:
        if self.message_complete:
            raise _Stray()
        self.body.append(body)
        self.body_bytes += len(body)

    def on_chunk_header(self) -> None:
        self._chunk_headers += 1
        self._body_at_chunk_header = self.body_bytes
        self._size_line = 0

    @property
    def _after_chunk_header(self) -> bool:
        """No body byte came since the last chunk header (so a byte that is not body is trailers)."""
        return self._body_at_chunk_header == self.body_bytes

    def on_message_complete(self) -> None:
        status = self.status_code
        if not self.headers_complete and 100 <= status < 200:
            self._interim_done()
            return
        if not self.message_complete:
            self.message_complete = True
            self.keep_alive = self.keep_alive and self._parser.should_keep_alive()

    def _interim_done(self) -> None:
        self.informational.append((self.status_code, self.status_message, self.http_version, _pairs(self._raw)))
        self._raw = []
        self.keep_alive_hint = None
        self.status_code = 0
        self._head_bytes = 0

    # -- feeding --------------------------------------------------------------------------------
    def feed(self, data: bytes) -> None:
        """Parse ``data``.

        Raises:
            HttpParseError: a malformed head (``HPE_*``), or a head over ``max_header_size``. (An
                error after the head is kept in :attr:`error` instead.)
        """
        self.bytes_received += len(data)
        parser = self._parser
        if parser is None:  # the message ended earlier: anything more is stray
            self.stray = True
            self.keep_alive = False
            return
        if self.headers_complete:
            if self._chunked:
                self._feed_chunked(data)
                return
            try:  # a body with a length, or to the connection's end: the hot path, inline
                parser.feed_data(data)
            except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
                try:
                    self._feed_error(exc, data)
                except HttpParseError as err:
                    self._fail_body(err)
                    return
            if self.message_complete:
                self._parser = None
            return
        elif self._scan is not None:
            if not self._scan and data[9:10] in _FINAL_OR_UPGRADE and data[:7] == b"HTTP/1.":
                self._scan = None  # the final response's status line: no interim head to split off
                self._version = data[5:8]
            else:
                rest = self._split_interim(data)
                if rest is None:
                    return
                data = rest
                parser = self._parser  # (a fresh llhttp parser after a 1xx that announced a body)
        # the head (and whatever follows it in these bytes): _feed's steps, inline (the hot path)
        self._head_bytes += len(data)
        if self._connect_head is not None:
            self._connect_head += data
        try:
            try:
                parser.feed_data(data)
            except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
                self._feed_error(exc, data)
        except HttpParseError as err:
            if not self.headers_complete or self.message_complete:
                raise
            self._fail_body(err)
            return
        if self.message_complete:
            self._parser = None  # (the cycle between llhttp's parser and this one, broken)
        elif not self.headers_complete and self._head_bytes > self.max_header_size:
            raise _overflow()

    def _feed(self, data: bytes) -> None:
        if not self.headers_complete:
            self._head_bytes += len(data)
        if self._connect_head is not None and not self.headers_complete:
            self._connect_head += data
        try:
            self._parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            self._feed_error(exc, data)
        if self.message_complete:
            # llhttp's parser and this object refer to each other: let go now, so both are freed
            # by reference counting instead of waiting for the cycle collector.
            self._parser = None
        elif not self.headers_complete and self._head_bytes > self.max_header_size:
            raise _overflow()

    def _feed_error(self, exc: BaseException, data: bytes) -> None:
        """What llhttp's exception means: an upgrade, stray bytes, or an error with Node's code."""
        if isinstance(exc, httptools.HttpParserUpgrade):
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
        elif isinstance(exc, httptools.HttpParserCallbackError):
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
        elif self.message_complete:
            self.stray = True
            self.keep_alive = False
        else:
            raise from_parser_error(exc) from exc

    def _fail_body(self, err: HttpParseError) -> None:
        self.error = err
        self.keep_alive = False
        self.slow_read = True  # the next read raises it
        self._parser = None

    def _feed_chunked(self, data: bytes) -> None:
        """A chunked body: feed, then bound what is not body (extensions, trailers) per feed.
        After a chunk header any byte of a chunk with data is body, so a feed that brings none
        is trailers; a feed with no event at all is inside a size line (its extensions)."""
        body0, heads0, after0 = self.body_bytes, self._chunk_headers, self._after_chunk_header
        try:
            self._feed(data)
            if self.message_complete:
                if self.error is None:
                    self.slow_read = False
                return
            body = self.body_bytes - body0
            heads = self._chunk_headers - heads0
            if self._in_trailers or (after0 and self._after_chunk_header and not heads and not body):
                self._in_trailers = True
                self._trailer_bytes += len(data)
                if self._trailer_bytes > 2 * self.max_header_size:  # a field still arriving
                    raise _overflow()
                self.slow_read = True
            elif not heads and not body:
                self._size_line += len(data)
                if self._size_line > MAX_CHUNK_EXTENSIONS:
                    raise _overflow("Chunk extensions overflow", "HPE_CHUNK_EXTENSIONS_OVERFLOW")
                self.slow_read = True
            else:
                if len(data) - body > (heads + 1) * (MAX_CHUNK_EXTENSIONS + 64):
                    raise _overflow("Chunk extensions overflow", "HPE_CHUNK_EXTENSIONS_OVERFLOW")
                self.slow_read = self._after_chunk_header and not body and self.error is None
        except HttpParseError as err:
            self._fail_body(err)

    def _split_interim(self, data: bytes) -> Optional[bytes]:
        """Feed llhttp each interim (1xx, not 101) head alone, so each ends at its head whatever
        framing it announces, and a fresh llhttp parser reads what follows. Returns the bytes left
        for llhttp once the final response's status line shows, or None (all consumed or held)."""
        buf = self._scan + data if self._scan else data
        while True:
            if len(buf) < 12:  # "HTTP/1.1 1xx" not known yet
                if not b"HTTP/1."[: len(buf)].startswith(buf[:7]):
                    self._scan = None
                    return buf
                self._scan = buf
                return None
            if buf[9:10] in _FINAL_OR_UPGRADE or buf[9:12] == b"101" or not buf.startswith(b"HTTP/1."):
                self._scan = None
                return buf  # the final response (or an upgrade, or garbage for llhttp to name)
            end = buf.find(b"\r\n\r\n")
            lf = buf.find(b"\n")
            if lf > 0 and buf[lf - 1 : lf] != b"\r":
                self._scan = None
                return buf  # a bare LF: llhttp reports it
            if end < 0:
                if len(buf) > self.max_header_size:
                    raise _overflow()
                self._scan = buf
                return None
            head, buf = buf[: end + 4], buf[end + 4 :]
            self._interim_bytes += len(head)
            if self._interim_bytes > MAX_INTERIM_BYTES:
                raise _overflow("Header overflow (interim responses)")
            self._feed(head)
            if self.status_code:  # llhttp waits for a body the 1xx announced: it ends here
                self._interim_done()
                self._parser = httptools.HttpResponseParser(self)
            if not buf:
                self._scan = b""
                return None

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
