"""A loopback HTTP/1.1 server for tests, demos and load tests (gevent, httptools).

It counts TCP connections (total, concurrent, peak), keeps connections alive like Node's server
(``keep_alive_timeout``, default 5 s, with a ``Keep-Alive: timeout=N`` hint), and lets a handler
shape each response or misbehave on purpose (close, reset, stall, send raw bytes).

    with HttpTestServer() as server:
        ga.get(server.url("/"))

Only binds 127.0.0.1 (port 0 by default) or a Unix socket path.
"""

from __future__ import annotations

import socket as _stdsocket
import struct
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import gevent
import httptools
from gevent import socket as gsocket
from gevent.pool import Pool
from gevent.server import StreamServer

__all__ = ["HttpTestServer", "ServerRequest", "Response", "fault", "fault_server"]


class Response:
    """What a handler returns: status, headers (list of pairs or dict), body, and framing."""

    def __init__(
        self,
        status: int = 200,
        body: Union[bytes, str] = b"",
        headers: Any = None,
        *,
        version: str = "1.1",
        chunked: bool = False,
        reason: Optional[str] = None,
        content_length: bool = True,
        close: bool = False,
    ) -> None:
        self.status = status
        self.body = body.encode() if isinstance(body, str) else body
        self.headers: List[Tuple[str, str]] = (
            list(headers.items()) if isinstance(headers, dict) else list(headers or [])
        )
        self.version = version
        self.chunked = chunked
        self.reason = reason or _REASONS.get(status, "OK")
        self.content_length = content_length
        self.close = close


_REASONS = {
    100: "Continue",
    101: "Switching Protocols",
    200: "OK",
    204: "No Content",
    304: "Not Modified",
    404: "Not Found",
    500: "Internal Server Error",
}


class ServerRequest:
    """One request as the server saw it: ``method``, ``path``, ``headers`` (lower-case dict),
    ``raw_headers``, ``body`` (bytes), ``version``, ``conn`` (the :class:`Connection`)."""

    def __init__(self, conn: "Connection") -> None:
        self.conn = conn
        self.method = ""
        self.path = ""
        self.version = "1.1"
        self.raw_headers: List[Tuple[str, str]] = []
        self.headers: Dict[str, str] = {}
        self.body = b""
        self.keep_alive = True


class Connection:
    """The server side of one TCP connection."""

    def __init__(self, server: "HttpTestServer", sock: Any, index: int) -> None:
        self.server = server
        self.sock = sock
        self.index = index
        self.requests = 0
        self.closed = False

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def close(self) -> None:
        """Close gracefully (FIN)."""
        if not self.closed:
            self.closed = True
            try:
                self.sock.close()
            except OSError:
                pass

    def reset(self) -> None:
        """Close with an RST (SO_LINGER 0)."""
        if not self.closed:
            try:
                self.sock.setsockopt(_stdsocket.SOL_SOCKET, _stdsocket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
            self.close()


Handler = Callable[[ServerRequest], Any]


def _default_handler(req: ServerRequest) -> Response:
    return Response(200, b"Hello World")


class _RequestCollector:
    def __init__(self) -> None:
        self.done: List[ServerRequest] = []
        self.current: Optional[ServerRequest] = None
        self.url = b""
        self.body: List[bytes] = []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        assert self.current is not None
        self.current.raw_headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_body(self, body: bytes) -> None:
        self.body.append(body)


class HttpTestServer:
    """A gevent HTTP/1.1 server on 127.0.0.1 (port 0) or a Unix socket.

    Args:
        handler: ``handler(request) -> Response | bytes | None``. ``bytes`` are sent raw; ``None``
            means the handler already answered or closed ``request.conn`` itself.
        keep_alive_timeout (float): idle seconds before the server closes a kept-alive connection
            (Node's server: 5 s). ``hint`` sends ``Keep-Alive: timeout=N`` (Node's server does).
        unix_path (str | None): listen on this Unix socket path instead of TCP.

    Attributes: ``port``, ``connections_total``, ``connections_active``, ``connections_peak``,
    ``requests_total``, ``requests`` (list of :class:`ServerRequest`), ``connections``.
    """

    def __init__(
        self,
        handler: Optional[Handler] = None,
        *,
        keep_alive_timeout: float = 5.0,
        hint: bool = True,
        unix_path: Optional[str] = None,
        keep_requests: bool = True,
        ssl_context: Any = None,
    ) -> None:
        self.handler = handler or _default_handler
        self.keep_alive_timeout = keep_alive_timeout
        self.hint = hint
        self.unix_path = unix_path
        self.keep_requests = keep_requests
        self.connections_total = 0
        self.connections_active = 0
        self.connections_peak = 0
        self.requests_total = 0
        self.requests: List[ServerRequest] = []
        self.connections: List[Connection] = []
        self.ssl_context = ssl_context
        self.tls_handshakes = 0
        self.tls_resumed = 0
        self.tls_failures = 0
        self._server: Optional[StreamServer] = None

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> "HttpTestServer":
        if self.unix_path:
            listener = gsocket.socket(_stdsocket.AF_UNIX, _stdsocket.SOCK_STREAM)
            listener.bind(self.unix_path)
            listener.listen(1024)
            self._server = StreamServer(listener, self._handle, spawn=Pool())
        else:
            self._server = StreamServer(("127.0.0.1", 0), self._handle, backlog=2048, spawn=Pool())
        self._server.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(timeout=0)
            self._server = None
        for conn in self.connections:
            conn.close()

    def __enter__(self) -> "HttpTestServer":
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None
        return (self._server.server_port or 0) if not self.unix_path else 0

    def url(self, path: str = "/", host: str = "127.0.0.1") -> str:
        scheme = "https" if self.ssl_context is not None else "http"
        return "%s://%s:%d%s" % (scheme, host, self.port, path)

    def reset_counts(self) -> None:
        self.connections_total = self.connections_peak = self.requests_total = 0
        self.connections_peak = self.connections_active
        self.requests = []

    # -- serving --------------------------------------------------------------------------------
    def _handle(self, sock: Any, address: Any) -> None:
        self.connections_total += 1
        self.connections_active += 1
        if self.connections_active > self.connections_peak:
            self.connections_peak = self.connections_active
        if self.ssl_context is not None:
            # (the handshake apart from the wrap: a failed one inside gevent's wrap_socket leaves
            # the TLS socket, which took the fd, open until it is collected)
            sock = self.ssl_context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
            try:
                sock.do_handshake()
            except BaseException as error:  # (a stop() mid-handshake kills with GreenletExit)
                self.connections_active -= 1
                sock.close()
                if not isinstance(error, OSError):  # ssl.SSLError is an OSError
                    raise
                self.tls_failures += 1
                return
            self.tls_handshakes += 1
            if sock.session_reused:
                self.tls_resumed += 1
        conn = Connection(self, sock, self.connections_total)
        if self.keep_requests:
            self.connections.append(conn)
        try:
            self._serve(conn)
        except OSError:
            pass
        finally:
            self.connections_active -= 1
            conn.close()
            self.connection_closed(conn)

    def connection_closed(self, conn: Connection) -> None:
        """Hook: a connection ended (subclasses count per-client concurrency here)."""

    def _serve(self, conn: Connection) -> None:
        sock = conn.sock
        collector = _RequestCollector()
        pending: List[ServerRequest] = []

        def on_message_begin() -> None:
            collector.current = ServerRequest(conn)
            collector.url = b""
            collector.body = []

        def on_headers_complete() -> None:
            req = collector.current
            assert req is not None
            req.method = parser.get_method().decode()
            req.path = collector.url.decode("latin-1")
            req.version = parser.get_http_version()
            for name, value in req.raw_headers:
                req.headers.setdefault(name.lower(), value)

        def on_message_complete() -> None:
            req = collector.current
            assert req is not None
            req.body = b"".join(collector.body)
            req.keep_alive = parser.should_keep_alive()
            pending.append(req)

        collector.on_message_begin = on_message_begin  # type: ignore[attr-defined]
        collector.on_headers_complete = on_headers_complete  # type: ignore[attr-defined]
        collector.on_message_complete = on_message_complete  # type: ignore[attr-defined]
        parser = httptools.HttpRequestParser(collector)
        idle = self.keep_alive_timeout
        while not conn.closed:
            sock.settimeout(idle if conn.requests else max(idle, 5.0))
            try:
                data = sock.recv(65536)
            except (_stdsocket.timeout, TimeoutError):
                return
            if not data:
                return
            try:
                parser.feed_data(data)
            except httptools.HttpParserUpgrade:
                pass
            except httptools.HttpParserError:
                conn.send(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
                return
            while pending:
                req = pending.pop(0)
                conn.requests += 1
                self.requests_total += 1
                if self.keep_requests:
                    self.requests.append(req)
                result = self.handler(req)
                if conn.closed:
                    return
                if result is None:
                    continue
                if isinstance(result, (bytes, bytearray)):
                    conn.send(bytes(result))
                    continue
                close = self._respond(conn, req, result)
                if close:
                    conn.close()
                    return

    def _respond(self, conn: Connection, req: ServerRequest, res: Response) -> bool:
        names = {name.lower() for name, _ in res.headers}
        close = res.close or not req.keep_alive or res.version == "1.0" and "connection" not in names
        lines = ["HTTP/%s %d %s\r\n" % (res.version, res.status, res.reason)]
        headers = list(res.headers)
        if "connection" not in names:
            if close:
                headers.append(("Connection", "close"))
            elif res.version == "1.1":
                headers.append(("Connection", "keep-alive"))
                if self.hint and "keep-alive" not in names:
                    headers.append(("Keep-Alive", "timeout=%d" % int(self.keep_alive_timeout)))
        else:
            value = dict((n.lower(), v) for n, v in res.headers)["connection"].lower()
            close = close or "close" in value
        body = res.body if req.method != "HEAD" else b""
        if res.chunked:
            headers.append(("Transfer-Encoding", "chunked"))
        elif res.content_length and "content-length" not in names and res.status not in (204, 304):
            headers.append(("Content-Length", str(len(res.body))))
        for name, value in headers:
            lines.append("%s: %s\r\n" % (name, value))
        lines.append("\r\n")
        head = "".join(lines).encode("latin-1")
        if res.chunked and body:
            body = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
        elif res.chunked:
            body = b"0\r\n\r\n"
        conn.send(head + body)
        if not res.content_length and not res.chunked:
            return True  # EOF-delimited body
        return close


# -- fault injection ---------------------------------------------------------------------------------
def _raw_response(body: bytes = b"ok", extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s%s" % (len(body), body, extra)


def fault(name: str, **params: Any) -> Tuple[Handler, Dict[str, Any]]:
    """A misbehaving handler and the :class:`HttpTestServer` options it needs.

    Faults (``params`` in brackets, seconds for durations):

    ``idle_close`` [t]: close a kept-alive connection after exactly ``t`` idle (no hint sent).
    ``reset_after`` [n]: answer ``n`` requests per connection, then reset (RST) on the next one.
    ``close_after`` [n]: answer ``n`` requests per connection as keep-alive, then close it without a
    word (no ``Connection: close``: what a server with a per-connection request limit does).
    ``stray_bytes``: bytes after a complete response.  ``trickle`` [delay]: the body a byte at a time.
    ``half_close``: answer, then shut down the write side (FIN) and keep reading.
    ``close_mid_body``: half a body, then close.  ``close_on_nth`` [n]: ``Connection: close`` on every
    ``n``-th response.  ``garbage_status``: not an HTTP status line.  ``oversized_headers``: a 20 KiB
    header.  ``slow_headers`` [delay]: each header line ``delay`` apart.  ``info_flood`` [n]: ``n``
    ``102 Processing`` responses before the final one.  ``never_answer`` [t]: read, say nothing.
    """
    options: Dict[str, Any] = {}
    if name == "idle_close":
        options.update(keep_alive_timeout=params.get("t", 0.1), hint=False)
        return (lambda req: Response(200, b"ok")), options
    if name == "close_after":
        limit = int(params.get("n", 3))

        def close_after(req: ServerRequest) -> None:
            req.conn.send(_raw_response(req.path.encode()))
            if req.conn.requests % limit == 0:
                req.conn.close()

        return close_after, options
    if name == "reset_after":
        limit = params.get("n", 1)

        def reset_after(req: ServerRequest) -> Any:
            if req.conn.requests > limit:
                req.conn.reset()
                return None
            return Response(200, b"ok")

        return reset_after, options
    if name == "stray_bytes":
        return (lambda req: _raw_response(b"ok", b"STRAY")), options
    if name == "trickle":
        delay = params.get("delay", 0.005)

        def trickle(req: ServerRequest) -> None:
            body = params.get("body", b"trickled")
            req.conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body))
            for i in range(len(body)):
                gevent.sleep(delay)
                req.conn.send(body[i : i + 1])

        return trickle, options
    if name == "half_close":

        def half_close(req: ServerRequest) -> None:
            req.conn.send(_raw_response(b"ok"))
            req.conn.sock.shutdown(_stdsocket.SHUT_WR)

        return half_close, options
    if name == "close_mid_body":

        def close_mid_body(req: ServerRequest) -> None:
            req.conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nhalf")
            req.conn.close()

        return close_mid_body, options
    if name == "close_on_nth":
        nth = params.get("n", 2)
        return (lambda req: Response(200, b"ok", close=req.conn.requests % nth == 0)), options
    if name == "garbage_status":
        return (lambda req: b"HTTP/1.1 OK 200 garbage\r\n\r\n"), options
    if name == "oversized_headers":
        return (lambda req: b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 20480 + b"\r\nContent-Length: 0\r\n\r\n"), options
    if name == "slow_headers":
        delay = params.get("delay", 0.1)

        def slow_headers(req: ServerRequest) -> None:
            req.conn.send(b"HTTP/1.1 200 OK\r\n")
            for i in range(params.get("lines", 10)):
                gevent.sleep(delay)
                req.conn.send(b"X-Slow-%d: 1\r\n" % i)
            req.conn.send(b"Content-Length: 2\r\n\r\nok")

        return slow_headers, options
    if name == "info_flood":
        count = params.get("n", 200)
        return (lambda req: b"HTTP/1.1 102 Processing\r\n\r\n" * count + _raw_response(b"ok")), options
    if name == "never_answer":
        return (lambda req: gevent.sleep(params.get("t", 30))), options
    raise ValueError("unknown fault %r" % (name,))


def fault_server(name: str, **params: Any) -> HttpTestServer:
    """An (unstarted) :class:`HttpTestServer` that misbehaves as :func:`fault` ``name`` says."""
    handler, options = fault(name, **params)
    return HttpTestServer(handler, **options)


def _stats_handler(server: "HttpTestServer", close_after: int = 0) -> Handler:
    import json

    def handler(req: ServerRequest) -> Any:
        if req.path == "/__reset":
            server.reset_counts()
            return Response(200, b"reset")
        if req.path == "/__stats":
            body = json.dumps(
                {
                    "connections_total": server.connections_total,
                    "connections_peak": server.connections_peak,
                    "connections_active": server.connections_active,
                    "requests_total": server.requests_total,
                }
            )
            return Response(200, body, headers=[("Content-Type", "application/json")])
        delay = req.headers.get("x-delay")
        if delay:
            gevent.sleep(float(delay))
        if close_after and req.conn.requests % close_after == 0:
            req.conn.send(_raw_response(b"Hello World"))  # a keep-alive answer, then a silent close
            req.conn.close()
            return None
        return Response(200, b"Hello World")

    return handler


def main(argv: Optional[List[str]] = None) -> None:
    """``python -m geventagent.testing [keep_alive_timeout] [--no-hint] [--close-after N]``: serve on
    127.0.0.1:0, print the port, stop when stdin closes. ``GET /__stats`` returns the connection
    counts as JSON; ``GET /__reset`` zeroes them. ``--close-after N``: close each connection,
    without ``Connection: close``, right after its N-th response."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m geventagent.testing")
    parser.add_argument("keep_alive_timeout", nargs="?", type=float, default=5.0)
    parser.add_argument("--no-hint", action="store_true", help="do not send Keep-Alive: timeout=N")
    parser.add_argument("--close-after", type=int, default=0, help="close silently after N responses")
    args = parser.parse_args(argv)
    server = HttpTestServer(keep_alive_timeout=args.keep_alive_timeout, hint=not args.no_hint, keep_requests=False)
    server.handler = _stats_handler(server, args.close_after)
    serve_until_stdin_closes(server)


def serve_until_stdin_closes(server: HttpTestServer) -> None:
    """Start ``server``, print its port on stdout, and serve until standard input is closed (how
    tests, benchmarks and load tests run a server in a child process that cannot outlive them)."""
    import sys

    from gevent.os import make_nonblocking, nb_read

    server.start()
    print(server.port, flush=True)
    make_nonblocking(sys.stdin.fileno())
    while nb_read(sys.stdin.fileno(), 1024):
        pass
    server.stop()


if __name__ == "__main__":
    main()
