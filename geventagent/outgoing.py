"""``OutgoingMessage``: a request's header store, its framing decision and its encoded head
(Node's ``lib/_http_outgoing.js``, the base of ``ClientRequest``).

The framing decision never lets the head disagree with the body: a caller's own
``Transfer-Encoding: chunked`` is honoured by chunk-encoding whatever the body is (Node does the
same), and a caller's ``Content-Length`` that disagrees with a body of known length, or that is
combined with ``Transfer-Encoding``, raises before anything is sent (Node v20 sends such heads).
"""

from __future__ import annotations

import io
import os
import re
import stat
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional, Tuple, Union

from ._http import HeaderPairs, check_header_name, check_header_value, encode_head
from .errors import ContentLengthMismatch, GeventAgentError, InvalidArgTypeError, InvalidArgValueError
from .events import EventEmitter

__all__ = ["OutgoingMessage", "decide_framing", "prepare_body", "replayable", "Body", "NO_DEFAULT_BODY"]

#: Methods Node sends without a body framing header when the body is empty.
NO_DEFAULT_BODY = frozenset(("GET", "HEAD", "DELETE", "OPTIONS", "TRACE", "CONNECT"))
_CLOSE_TOKEN = re.compile(r"(?:^|\W)close(?:$|\W)", re.I)
_CHUNKED_LAST = re.compile(r"(?:^|,)\s*chunked\s*$", re.I)
#: Encoded heads of requests whose only header is the Host header we set (a function of a few values).
_HEADS: Dict[Tuple[Any, ...], bytes] = {}


class _HeaderValueError(InvalidArgValueError):
    code = "ERR_HTTP_INVALID_HEADER_VALUE"


def decide_framing(headers: Dict[str, Tuple[str, Any]], method: str, length: Optional[int]) -> Tuple[bool, bool]:
    """How to frame a request body: ``(chunked, add_length)``.

    Args:
        headers: the header store (``{lower-case name: (name, value)}``).
        method: the upper-case method.
        length: the body's length in bytes, or None when unknown (an iterable, a pipe, ``write()``).

    Returns:
        ``chunked``: chunk-encode the body (the caller's ``Transfer-Encoding`` ends with
        ``chunked``, or no framing header was given and the length is unknown; we then add
        ``Transfer-Encoding: chunked``). ``add_length``: add ``Content-Length: <length>`` (a known
        length and no framing header, unless the body is empty and the method has none by default).

    Raises (nothing is sent):
        ContentLengthMismatch (``ERR_HTTP_CONTENT_LENGTH_MISMATCH``): the caller's ``Content-Length``
            disagrees with a body of known length.
        InvalidArgValueError (``ERR_HTTP_INVALID_HEADER_VALUE``): both ``Content-Length`` and
            ``Transfer-Encoding``, a ``Transfer-Encoding`` whose last coding is not ``chunked``
            (RFC 9112 §6.1: the server cannot find the body's end), or a bad ``Content-Length``.
    """
    te = headers.get("transfer-encoding")
    cl = headers.get("content-length")
    if te is not None:
        value = _joined(te[1])
        if cl is not None:
            raise _HeaderValueError("A request cannot carry both Content-Length and Transfer-Encoding")
        if not _CHUNKED_LAST.search(value):
            raise _HeaderValueError(
                "Transfer-Encoding %r does not end with chunked: the server could not find the body's end" % value
            )
        return True, False
    if cl is not None:
        value = _joined(cl[1]).strip()
        if not value.isdigit():
            raise _HeaderValueError("Invalid Content-Length %r" % value)
        if length is not None and int(value) != length:
            raise ContentLengthMismatch(
                "Request body's length of %d byte(s) does not match the Content-Length of %s byte(s) set in the header"
                % (length, value)
            )
        return False, False
    if length is None:
        return True, False
    return False, length > 0 or method not in NO_DEFAULT_BODY


def _joined(value: Any) -> str:
    return ", ".join(value) if isinstance(value, list) else str(value)


def body_limit(headers: Dict[str, Tuple[str, Any]], chunked: bool, length: Optional[int]) -> Optional[int]:
    """What a body must come to, enforced as it is written: the caller's ``Content-Length``
    (checked by :func:`decide_framing` first) when the body's own length is unknown (an iterable,
    ``write()``) and it is not chunked; else None."""
    if chunked or length is not None:
        return None
    cl = headers.get("content-length")
    return None if cl is None else int(_joined(cl[1]).strip())


def is_text_file(data: Any) -> bool:
    """A file object whose ``read()`` gives str (opened in text mode, a ``StringIO``): its size on
    disk is not the length of its text as sent (newlines translated, another encoding than UTF-8)."""
    return isinstance(data, io.TextIOBase) or (hasattr(data, "encoding") and callable(getattr(data, "read", None)))


class OutgoingMessage(EventEmitter):
    """The header store of an outgoing message (Node's ``OutgoingMessage``): names are matched
    case-insensitively, the case given is sent, a list value sends one line per item.

    Subclasses set ``_headers = {}``, ``headers_sent = False``, ``should_keep_alive`` and
    ``method`` / ``path`` before use.
    """

    __slots__ = ("_headers", "headers_sent", "should_keep_alive", "method", "path")

    _headers: Dict[str, Tuple[str, Any]]
    headers_sent: bool
    should_keep_alive: bool
    method: str
    path: str

    def set_header(self, name: str, value: Any) -> "OutgoingMessage":
        """Set a header (a list value sends one line per item). Returns ``self``.

        Raises:
            InvalidHttpTokenError (``ERR_INVALID_HTTP_TOKEN``), InvalidCharError (``ERR_INVALID_CHAR``),
            GeventAgentError (``ERR_HTTP_HEADERS_SENT``) once the head is sent.
        """
        if self.headers_sent:
            raise GeventAgentError("Cannot set headers after they are sent to the client", code="ERR_HTTP_HEADERS_SENT")
        if isinstance(name, (bytes, bytearray)):  # (as requests and http.client take them)
            name = bytes(name).decode("latin-1")
        check_header_name(name)
        if isinstance(value, (list, tuple)):
            value = [check_header_value(name, v) for v in value]
        else:
            value = check_header_value(name, value)
        self._headers[name.lower()] = (name, value)
        return self

    def get_header(self, name: str) -> Any:
        """The value set for ``name`` (case-insensitive), or None."""
        item = self._headers.get(name.lower())
        return item[1] if item else None

    def has_header(self, name: str) -> bool:
        return name.lower() in self._headers

    def remove_header(self, name: str) -> None:
        """Remove a header before the head is sent.

        Raises:
            GeventAgentError (``ERR_HTTP_HEADERS_SENT``) once the head is sent.
        """
        if self.headers_sent:
            raise GeventAgentError("Cannot remove headers after they are sent", code="ERR_HTTP_HEADERS_SENT")
        self._headers.pop(name.lower(), None)

    def get_headers(self) -> Dict[str, Any]:
        """``{lower-case name: value}`` of the headers set so far."""
        return {key: value for key, (_, value) in self._headers.items()}

    def get_header_names(self) -> List[str]:
        """The lower-case names of the headers set so far (Node's ``getHeaderNames``)."""
        return list(self._headers)

    def get_raw_header_names(self) -> List[str]:
        """The names of the headers set so far, in the case given (Node's ``getRawHeaderNames``)."""
        return [name for name, _ in self._headers.values()]

    def _head_pairs(self, length: Optional[int], chunked: bool, add_length: bool) -> HeaderPairs:
        pairs: HeaderPairs = []
        headers = self._headers
        for name, value in headers.values():
            if isinstance(value, list):
                pairs.extend((name, v) for v in value)
            else:
                pairs.append((name, value))
        if "connection" not in headers:
            pairs.append(("Connection", "keep-alive" if self.should_keep_alive else "close"))
        elif _CLOSE_TOKEN.search(_joined(headers["connection"][1])):
            # The caller asked the server to close: never pool this socket, whatever the reply says
            # (Node keeps shouldKeepAlive and lets the reply decide; a server may close anyway).
            self.should_keep_alive = False
        if chunked and "transfer-encoding" not in headers:
            pairs.append(("Transfer-Encoding", "chunked"))
        elif add_length:
            pairs.append(("Content-Length", str(length)))
        return pairs

    def _encode_head(self, length: Optional[int], chunked: bool, add_length: bool, proxy: Any = None) -> bytes:
        """The request line and header fields, encoded (latin-1); marks the head as sent.
        ``proxy``: a :class:`~geventagent.proxy.Proxy` the request goes to as is: the request
        target is then in absolute form, with ``Proxy-Authorization`` when the proxy has one."""
        headers = self._headers
        if proxy is not None:
            host = headers["host"][1] if "host" in headers else getattr(self, "host", "localhost")
            pairs = self._head_pairs(length, chunked, add_length)
            if proxy.authorization and "proxy-authorization" not in headers:
                pairs.append(("Proxy-Authorization", proxy.authorization))
            self.headers_sent = True
            return encode_head(self.method, "http://%s%s" % (host, self.path), pairs)
        if len(headers) == 1 and "host" in headers:
            # Only the Host header we set: the head is a function of a few values; cache it.
            key = (self.method, self.path, headers["host"][1], self.should_keep_alive, length, chunked, add_length)
            head = _HEADS.get(key)
            if head is None:
                head = encode_head(self.method, self.path, self._head_pairs(length, chunked, add_length))
                if len(_HEADS) >= 4096:
                    _HEADS.clear()
                _HEADS[key] = head
        else:
            head = encode_head(self.method, self.path, self._head_pairs(length, chunked, add_length))
        self.headers_sent = True
        return head


# -- bodies -----------------------------------------------------------------------------------------
_CHUNK = 64 * 1024
Body = Union[None, bytes, bytearray, memoryview, str, Iterable[Any], io.IOBase]


def prepare_body(data: Body) -> Tuple[Iterable[bytes], Optional[int]]:
    """``(parts, length)`` of a request body; ``length`` None means unknown (sent chunked unless
    the caller framed it).

    Raises:
        InvalidArgTypeError: not bytes, str, a file object or an iterable of bytes/str (nothing sent).
    """
    if data is None:
        return [], 0
    if isinstance(data, str):
        data = data.encode("utf-8")
    if isinstance(data, (bytes, bytearray, memoryview)):
        data = bytes(data)
        return ([data] if data else []), len(data)
    read = getattr(data, "read", None)
    if callable(read):
        length = None
        if is_text_file(data):  # its length as sent is unknown: chunked unless the caller framed it
            return _read_blocks(read), None
        try:
            fileno = data.fileno()  # type: ignore[union-attr]
            info = os.fstat(fileno)
            if stat.S_ISREG(info.st_mode):
                length = info.st_size - data.tell()  # type: ignore[union-attr]
        except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
            length = None
        return _read_blocks(read), length
    if isinstance(data, Mapping) or not hasattr(data, "__iter__"):
        raise InvalidArgTypeError(
            'The "body" argument must be bytes, str, a file object or an iterable of bytes. Received type %s'
            % type(data).__name__
        )
    if isinstance(data, (list, tuple)):  # all here already: checked whole before anything is sent
        return list(_iter_parts(data)), None
    return _iter_parts(data), None


def replayable(data: Body) -> Any:
    """True if ``data`` can simply be sent again; for a seekable file, a function that rewinds it
    and returns it; None if it cannot be replayed (an iterator, a pipe)."""
    if data is None or isinstance(data, (bytes, bytearray, memoryview, str)):
        return True
    seek = getattr(data, "seek", None)
    tell = getattr(data, "tell", None)
    if callable(getattr(data, "read", None)) and callable(seek) and callable(tell):
        try:
            if data.seekable():  # type: ignore[union-attr]
                position = tell()

                def again() -> Body:
                    seek(position)
                    return data

                return again
        except (AttributeError, OSError, ValueError):
            return None
    return None


def _read_blocks(read: Any) -> Iterator[bytes]:
    while True:
        block = read(_CHUNK)
        if not block:
            return
        yield block.encode("utf-8") if isinstance(block, str) else bytes(block)


def _iter_parts(data: Iterable[Any]) -> Iterator[bytes]:
    for part in data:
        if isinstance(part, str):
            part = part.encode("utf-8")
        elif not isinstance(part, (bytes, bytearray, memoryview)):
            raise InvalidArgTypeError("body iterables must yield bytes or str, not %s" % type(part).__name__)
        if part:
            yield bytes(part)
