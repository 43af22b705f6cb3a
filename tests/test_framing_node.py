"""Issue 13: HTTP/1.1 framing hardened to llhttp's and Node's standard.

Each hostile response was run through Node v20's http client on this machine (the outcome is in
the table); each case asserts the error and its code, that the socket was not pooled, what the
server received, and that the next request on the same agent gets its own body. Loopback servers
on 127.0.0.1:0; every wait is bounded."""

from __future__ import annotations

import socket as stdsocket
import time
import tracemalloc

import gevent
import pytest
from gevent.server import StreamServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import geventagent as ga
from geventagent._http import ResponseParser
from geventagent.errors import (
    LLHTTP_REASONS,
    ContentLengthMismatch,
    GeventAgentError,
    HttpParseError,
    InvalidCharError,
    RequestTimeout,
)
from geventagent.testing import Response

from .conftest import server_context

BIG = 1024 * 1024
CHUNKED = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
# path -> (raw response, Node v20's outcome: ("head", code) | ("body", status, code) | ("ok", status, body))
CASES = {
    "/cl_te": (
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        ("head", "HPE_INVALID_TRANSFER_ENCODING"),
    ),
    "/te_cl": (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        ("head", "HPE_INVALID_CONTENT_LENGTH"),
    ),
    "/empty_cl": (b"HTTP/1.1 200 OK\r\nContent-Length: \r\n\r\nhello", ("head", "HPE_INVALID_CONTENT_LENGTH")),
    "/ext_badchar": (CHUNKED + b"5;a=\x01\r\nhello\r\n0\r\n\r\n", ("body", 200, "HPE_STRICT")),
    "/no_crlf_after_data": (CHUNKED + b"5\r\nhelloX0\r\n\r\n", ("body", 200, "HPE_STRICT")),
    "/bare_lf_chunk_size": (CHUNKED + b"5\nhello\r\n0\r\n\r\n", ("body", 200, "HPE_CR_EXPECTED")),
    "/obs_fold": (
        b"HTTP/1.1 200 OK\r\nX-A: 1\r\n 2\r\nContent-Length: 2\r\n\r\nok",
        ("head", "HPE_INVALID_HEADER_TOKEN"),
    ),
    "/space_first_header": (
        b"HTTP/1.1 200 OK\r\n X-A: 1\r\nContent-Length: 2\r\n\r\nok",
        ("head", "HPE_UNEXPECTED_SPACE"),
    ),
    "/big_trailers": (
        CHUNKED + b"2\r\nok\r\n0\r\nX-T: " + b"t" * BIG + b"\r\n\r\n",
        ("body", 200, "HPE_HEADER_OVERFLOW"),
    ),
    "/many_trailers": (
        CHUNKED + b"2\r\nok\r\n0\r\n" + b"".join(b"X-T%d: v\r\n" % i for i in range(20000)) + b"\r\n",
        ("body", 200, "HPE_HEADER_OVERFLOW"),
    ),
    "/trailer_17k": (
        CHUNKED + b"2\r\nok\r\n0\r\nX-T: " + b"t" * 17000 + b"\r\n\r\n",
        ("body", 200, "HPE_HEADER_OVERFLOW"),
    ),
    "/trailer_15k": (CHUNKED + b"2\r\nok\r\n0\r\nX-T: " + b"t" * 15000 + b"\r\n\r\n", ("ok", 200, b"ok")),
    "/head_15k_trailer_2k": (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-H: "
        + b"h" * 15000
        + b"\r\n\r\n2\r\nok\r\n0\r\nX-T: "
        + b"t" * 2000
        + b"\r\n\r\n",
        ("ok", 200, b"ok"),
    ),
    "/interim_body": (
        b"HTTP/1.1 150 Weird\r\nContent-Length: 5\r\n\r\nhelloHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        ("head", "HPE_INVALID_CONSTANT"),  # the 1xx ends at its head: "hello" is not a status line
    ),
    "/interim_chunked": (
        b"HTTP/1.1 103 Early\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        ("head", "HPE_INVALID_CONSTANT"),
    ),
    "/big_ext": (
        CHUNKED + b"2;x=" + b"e" * BIG + b"\r\nok\r\n0\r\n\r\n",
        ("body", 200, "HPE_CHUNK_EXTENSIONS_OVERFLOW"),
    ),
    "/ext_ok": (CHUNKED + b"2;x=y\r\nok\r\n0\r\n\r\n", ("ok", 200, b"ok")),
    "/big_head": (
        b"HTTP/1.1 200 OK\r\nX-H: " + b"h" * 20000 + b"\r\nContent-Length: 2\r\n\r\nok",
        ("head", "HPE_HEADER_OVERFLOW"),
    ),
}


def hostile(req):
    if req.path == "/next":
        return Response(200, b"next body")
    if req.path == "/te_not_final":  # chunked is not the final coding: the body runs to the close
        req.conn.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\nsome bytes until close")
        req.conn.close()
        return None
    return CASES[req.path][0]


def outcome(agent, url):
    try:
        res = agent.get(url, timeout=5)
    except GeventAgentError as exc:
        return ("head", exc.code)
    try:
        body = res.read()
    except GeventAgentError as exc:
        return ("body", res.status_code, exc.code)
    return ("ok", res.status_code, body)


@pytest.mark.parametrize("path", sorted(CASES))
def test_hostile_responses_end_as_in_node(make_server, make_agent, path):
    server = make_server(hostile)
    agent = make_agent(keep_alive=True)
    expected = CASES[path][1]
    assert outcome(agent, server.url(path)) == expected
    assert server.requests_total == 1  # a malformed response is never a reason to send again
    if expected[0] != "ok":
        assert agent.free_sockets == {} and agent.total_socket_count == 0  # never pooled after doubt
        assert agent.close_reasons.get("error") == 1
    assert agent.get(server.url("/next")).read() == b"next body"  # the next one gets its own body
    assert agent.status()["free"] == 1


def test_chunked_that_is_not_the_final_coding_is_read_until_close(make_server, make_agent):
    server = make_server(hostile)
    agent = make_agent(keep_alive=True)
    assert outcome(agent, server.url("/te_not_final")) == ("ok", 200, b"some bytes until close")
    assert agent.close_reasons == {"server_close": 1}
    assert agent.get(server.url("/next")).read() == b"next body"


def test_every_llhttp_reason_maps_to_one_node_code():
    codes = set(LLHTTP_REASONS.values())
    assert all(code.startswith("HPE_") for code in codes)
    assert len(LLHTTP_REASONS) == len(set(LLHTTP_REASONS))  # one code per reason (a dict: by design)
    for raw, code in [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", "HPE_UNEXPECTED_CONTENT_LENGTH"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 1x\r\n\r\n", "HPE_INVALID_CONTENT_LENGTH"),
        (b"HTTP/1.1 2000 OK\r\n\r\n", "HPE_INVALID_STATUS"),
        (b"HTTP/9.9 200 OK\r\n\r\n", "HPE_INVALID_VERSION"),
    ]:
        with pytest.raises(HttpParseError) as info:
            ResponseParser().feed(raw)
        assert info.value.code == code, raw
        assert str(info.value)[len("Parse Error: ") :] in LLHTTP_REASONS


def test_a_flood_of_interim_responses_is_emitted_and_kept_by_nobody(make_server, make_agent):
    flood = b"HTTP/1.1 103 Early Hints\r\nLink: </s>; rel=preload\r\n\r\n" * 20000  # 1.1 MB
    server = make_server(lambda req: flood + b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    agent = make_agent(keep_alive=True)
    seen = []
    req = ga.ClientRequest(server.url("/"), agent=agent)
    req.on("information", lambda info: seen.append(info["status_code"]))
    tracemalloc.start()
    try:
        res = req.end()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert res.read() == b"ok" and len(seen) == 20000 and set(seen) == {103}
    assert peak < 2 * 1024 * 1024  # 1.1 MB on the wire; none of it kept
    assert agent.status()["free"] == 1


# -- requests: the head never disagrees with the body ---------------------------------------------
SMUGGLE = b"0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest.mark.parametrize(
    "body", [SMUGGLE, SMUGGLE.decode(), "file", [SMUGGLE]], ids=["bytes", "str", "file", "iterable"]
)
def test_a_callers_transfer_encoding_chunked_is_framed_whatever_the_body(make_server, make_agent, body, tmp_path):
    if body == "file":
        path = tmp_path / "b.bin"
        path.write_bytes(SMUGGLE)
        body = open(path, "rb")
    server = make_server(lambda req: Response(200, req.body))
    agent = make_agent(keep_alive=True)
    try:
        res = ga.request("POST", server.url("/"), agent=agent, body=body, headers={"Transfer-Encoding": "chunked"})
    finally:
        if hasattr(body, "close"):
            body.close()  # (the caller's file: the agent reads it, the caller closes it)
    assert res.read() == SMUGGLE  # the server read it as a body, chunk-framed
    assert [r.path for r in server.requests] == ["/"]  # and saw no second request
    assert server.requests[0].headers["transfer-encoding"] == "chunked"
    assert "content-length" not in server.requests[0].headers


@pytest.mark.parametrize(
    "headers,error",
    [
        ({"Content-Length": "3"}, ContentLengthMismatch),
        ({"Content-Length": "9"}, ContentLengthMismatch),
        ({"Content-Length": "5", "Transfer-Encoding": "chunked"}, GeventAgentError),
        ({"Transfer-Encoding": "gzip"}, GeventAgentError),
        ({"Content-Length": "five"}, GeventAgentError),
    ],
    ids=["short", "long", "both", "te-not-chunked", "bad-length"],
)
def test_a_head_that_would_lie_raises_before_anything_is_sent(server, make_agent, headers, error):
    agent = make_agent(keep_alive=True)
    with pytest.raises(error) as info:
        ga.request("POST", server.url("/"), agent=agent, body=b"hello", headers=headers)
    assert info.value.code in ("ERR_HTTP_CONTENT_LENGTH_MISMATCH", "ERR_HTTP_INVALID_HEADER_VALUE")
    assert server.connections_total == 0 and agent.total_socket_count == 0  # no socket taken either
    assert agent.get(server.url("/")).read() == b"Hello World"


def test_a_streamed_body_is_held_to_the_callers_content_length(make_server, make_agent):
    server = make_server(lambda req: Response(200, req.body))
    agent = make_agent(keep_alive=True)
    req = ga.ClientRequest(server.url("/"), method="POST", agent=agent, headers={"Content-Length": "4"})
    req.write(b"ab")
    with pytest.raises(ContentLengthMismatch):
        req.write(b"cde")  # one byte too many: none of it goes out
    assert agent.total_socket_count == 0  # the half-sent request's socket is destroyed
    short = ga.ClientRequest(server.url("/"), method="POST", agent=agent, headers={"Content-Length": "4"})
    short.write(b"ab")
    with pytest.raises(ContentLengthMismatch):
        short.end()
    ok = ga.ClientRequest(server.url("/"), method="POST", agent=agent, headers={"Content-Length": "4"})
    ok.write(b"ab")
    assert ok.end(b"cd").read() == b"abcd"
    assert [r.body for r in server.requests] == [b"abcd"]


@pytest.mark.parametrize("kind", ["generator", "list", "expect-100"])
def test_an_iterable_body_is_held_to_the_callers_content_length(make_server, make_agent, kind):
    # write() was held to it; request(body=<iterable>) was not: a body past the header's length
    # went out whole (the rest reaches a server that answers in order as the start of the next
    # request), and a short one waited for the server until the timeout (ETIMEDOUT, 1 s here).
    server = make_server(lambda req: Response(200, req.body))
    agent = make_agent(keep_alive=True, max_sockets=1, timeout=3)
    headers = {"Content-Length": "4"}
    if kind == "expect-100":
        headers["Expect"] = "100-continue"

    def body(*parts):
        return list(parts) if kind == "list" else (part for part in parts)

    long_message, short_message = (
        ("length of 5 byte\\(s\\) does not match", "length of 2 byte\\(s\\) does not match")
        if kind == "list"
        else ("exceeds the Content-Length set in the header by 1 byte", "is 2 byte\\(s\\) short of the Content-Length")
    )
    with pytest.raises(ContentLengthMismatch, match=long_message):
        ga.request("POST", server.url("/"), agent=agent, body=body(b"ab", b"cde"), headers=headers)
    started = time.monotonic()
    with pytest.raises(ContentLengthMismatch, match=short_message) as info:
        ga.request("POST", server.url("/"), agent=agent, body=body(b"ab"), headers=headers)
    assert info.value.code == "ERR_HTTP_CONTENT_LENGTH_MISMATCH"
    assert time.monotonic() - started < 2.5  # raised at the body's end (after Expect's 1 s), not by the timeout
    assert agent.total_socket_count == 0  # a half-sent request's socket is never pooled
    assert agent.status()["sockets_created"] == (0 if kind == "list" else 2)  # a list: nothing sent
    res = ga.request("POST", server.url("/"), agent=agent, body=body(b"ab", b"cd"), headers=headers)
    assert res.read() == b"abcd"
    assert [r.body for r in server.requests] == [b"abcd"]  # the two that lied never reached a handler


def test_get_and_delete_with_a_body_send_its_length(make_server, make_agent):
    server = make_server(lambda req: Response(200, req.body))
    agent = make_agent(keep_alive=True)
    for method in ("GET", "DELETE"):
        assert ga.request(method, server.url("/"), agent=agent, body=b"q=1").read() == b"q=1"
        assert server.requests[-1].headers["content-length"] == "3"  # Node sends it unframed
    assert agent.get(server.url("/")).read() == b""  # and the next request gets its own body


@pytest.mark.parametrize("host", ["exa\r\nmple.test", "exa\nmple.test", "exa\x00mple.test"])
def test_a_host_with_control_characters_is_err_invalid_char_and_sends_nothing(server, host):
    with pytest.raises(InvalidCharError) as info:
        ga.request("GET", {"hostname": host, "port": server.port, "path": "/"})
    assert info.value.code == "ERR_INVALID_CHAR"
    assert server.connections_total == 0


def test_connect_errors_carry_nodes_syscall_address_and_port():
    probe = stdsocket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens there now
    with pytest.raises(ConnectionRefusedError) as info:
        ga.get("http://127.0.0.1:%d/" % port, agent=False)
    err = info.value
    assert (err.code, err.syscall, err.address, err.port) == ("ECONNREFUSED", "connect", "127.0.0.1", port)


# -- drips are bounded by the timeout -------------------------------------------------------------
def dripping(prefix, drip, end):
    def handler(req):
        req.conn.send(prefix)
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and not req.conn.closed:
            try:
                req.conn.send(drip)
            except OSError:
                return None
            gevent.sleep(0.02)
        req.conn.send(end)
        return None

    return handler


@pytest.mark.parametrize(
    "handler,what",
    [
        (dripping(b"", b"HTTP/1.1 102 Processing\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"), "head"),
        (dripping(b"HTTP/1.1 200 OK\r\nX-Slow: ", b"a", b"\r\nContent-Length: 0\r\n\r\n"), "head"),
        (dripping(CHUNKED + b"2\r\nok\r\n0\r\nX-T: ", b"t", b"\r\n\r\n"), "trailers"),
        (dripping(CHUNKED + b"2;x=", b"e", b"\r\nok\r\n0\r\n\r\n"), "extensions"),
    ],
    ids=["1xx-heads", "a-header", "trailers", "chunk-extensions"],
)
def test_a_dripped_head_or_framing_ends_within_the_timeout(make_server, make_agent, handler, what):
    server = make_server(handler)
    agent = make_agent(keep_alive=True, timeout=0.3)
    started = time.monotonic()
    with pytest.raises(RequestTimeout) as info:
        agent.get(server.url("/")).read()  # each byte alone comes well within 0.3 s
    assert info.value.code == "ETIMEDOUT"
    assert 0.25 <= time.monotonic() - started < 1.2, what
    assert agent.total_socket_count == 0


# -- early responses are delivered ----------------------------------------------------------------
class EarlyAnswer:
    """Reads a request's head, answers 413 and closes: the body is never read (RFC 9112 §9.5)."""

    def __init__(self, drain: int = 0, ssl_context=None) -> None:
        self.drain = drain
        self.received = 0
        self.ssl_context = ssl_context
        self.server = StreamServer(("127.0.0.1", 0), self.handle)
        self.server.start()
        self.port = self.server.server_port

    def handle(self, conn, address):
        if self.ssl_context is not None:  # (closed without close_notify: a TCP close under TLS)
            conn = self.ssl_context.wrap_socket(conn, server_side=True)
        data = b""
        while b"\r\n\r\n" not in data:
            part = conn.recv(65536)
            if not part:
                return
            data += part
        self.received += len(data)
        conn.sendall(b"HTTP/1.1 413 Payload Too Large\r\nConnection: close\r\nContent-Length: 8\r\n\r\ntoo big!")
        if self.drain:
            conn.shutdown(stdsocket.SHUT_WR)
            while self.received < self.drain:
                part = conn.recv(65536)
                if not part:
                    break
                self.received += len(part)
        conn.close()


@pytest.mark.parametrize("size", [8 << 20, 20000], ids=["body-blocks", "body-taken-whole"])
@pytest.mark.parametrize("drain", [0, 100 * 1024], ids=["close-at-once", "fin-then-close"])
def test_an_answer_sent_before_the_body_is_read_is_delivered(make_agent, server, drain, size):
    # 8 MiB: the write blocks and fails (the answer is taken after it); 20 KB: the kernel takes
    # the request whole and the read waits for the answer. Node v20 delivers the 413 in every
    # case too (100 of 100 runs of the 20 KB one, both server endings).
    early = EarlyAnswer(drain)
    try:
        agent = make_agent(keep_alive=True)
        res = ga.request("POST", "http://127.0.0.1:%d/upload" % early.port, body=b"x" * size, agent=agent)
        assert res.status_code == 413 and res.read() == b"too big!"
        if size == 8 << 20:
            assert early.received < 8 << 20  # the server never read the whole body
        assert agent.free_sockets == {} and agent.total_socket_count == 0  # never pooled
        assert agent.get(server.url("/")).read() == b"Hello World"
    finally:
        early.server.stop()


@pytest.mark.parametrize("body", ["bytes", "iterable"])
@pytest.mark.parametrize("size", [8 << 20, 20000], ids=["body-blocks", "body-taken-whole"])
def test_an_answer_sent_before_the_body_is_read_is_delivered_over_tls(ca, body, size):
    # The write fails under TLS as ssl.SSLEOFError ("EOF occurred in violation of protocol"),
    # whose errno is OpenSSL's SSL_ERROR_EOF (8), not an OS errno: it came out as NetworkError
    # "write ENOEXEC", the 413 lost. Node v20's https.request delivers the 413 (as over TCP).
    # The server sends FIN, then reads 100 KiB and closes. (Closing at once, with TLS records
    # unread, is a RST, which this in-process server sends before the client reads: Linux then
    # drops the 413 ahead of it. From a server in a process of its own the 413 arrives, for
    # geventagent and Node alike, 5 MiB and 20 KB bodies.)
    early = EarlyAnswer(100 * 1024, ssl_context=server_context(ca))
    agent = ga.HttpsAgent(keep_alive=True, ca=ca.cert_pem.bytes())
    try:
        data = b"x" * size if body == "bytes" else iter([b"y" * 65536] * (size // 65536 or 1))
        res = agent.request("POST", "https://127.0.0.1:%d/upload" % early.port, body=data, timeout=5)
        assert res.status_code == 413 and res.read() == b"too big!"
        assert agent.free_sockets == {} and agent.total_socket_count == 0  # never pooled
    finally:
        agent.destroy()
        early.server.stop()


# -- Node's events ---------------------------------------------------------------------------------
def _slow(req):
    gevent.sleep(0.3)
    return Response(200, b"late")


def test_destroy_before_the_response_emits_socket_hang_up_then_close(make_server, make_agent):
    server = make_server(_slow)
    agent = make_agent(keep_alive=True)
    events = []
    req = ga.ClientRequest(server.url("/"), agent=agent)
    req.on("error", lambda e: events.append(("error", e.code, str(e))))
    req.on("close", lambda: events.append("close"))
    glet = gevent.spawn(req.end)
    gevent.sleep(0.05)
    req.destroy()
    glet.join(2)
    assert events == [("error", "ECONNRESET", "socket hang up"), "close"]  # as Node v20


def test_destroy_from_a_timeout_listener_emits_timeout_error_close(make_server, make_agent):
    server = make_server(_slow)
    agent = make_agent(keep_alive=True)
    events = []
    req = ga.ClientRequest(server.url("/"), agent=agent, timeout=0.05)
    req.on("timeout", lambda: (events.append("timeout"), req.destroy()))
    req.on("error", lambda e: events.append(("error", e.code)))
    req.on("close", lambda: events.append("close"))
    with pytest.raises(GeventAgentError):
        req.end()
    assert events == ["timeout", ("error", "ECONNRESET"), "close"]


def test_destroy_mid_body_aborts_the_response_as_node_does(make_server, make_agent):
    def half(req):
        req.conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf")
        gevent.sleep(0.3)
        req.conn.send(b"123456")

    server = make_server(half)
    agent = make_agent(keep_alive=True)
    events = []
    req = ga.ClientRequest(server.url("/"), agent=agent)
    req.on("error", lambda e: events.append("req error"))
    req.on("close", lambda: events.append("req close"))
    res = req.end()
    res.on("aborted", lambda: events.append("res aborted"))
    res.on("error", lambda e: events.append("res error %s %s" % (e.code, e)))
    res.on("close", lambda: events.append("res close"))
    req.destroy()
    assert events == ["res aborted", "req close", "res error ECONNRESET aborted", "res close"]


@pytest.mark.parametrize(
    "agent_kw,headers",
    [({"keep_alive": False}, None), ({"keep_alive": True}, {"Connection": "close"}), (None, None)],
    ids=["keep-alive-off", "connection-close", "agent-false"],
)
def test_an_unpooled_socket_closes_the_response_before_the_request(make_server, make_agent, agent_kw, headers):
    server = make_server(lambda req: (gevent.sleep(0.02), Response(200, b"ok"))[1])
    agent = make_agent(**agent_kw) if agent_kw is not None else False
    events = []
    req = ga.ClientRequest(server.url("/"), agent=agent, headers=headers)
    req.on("close", lambda: events.append("req close"))
    req.on(
        "response",
        lambda res: (
            res.on("end", lambda: events.append("res end")),
            res.on("close", lambda: events.append("res close")),
        ),
    )
    assert req.end().read() == b"ok"
    assert events == ["res end", "res close", "req close"]  # Node v20's order


def test_a_pooled_socket_keeps_nodes_order_too(make_server, make_agent):
    server = make_server(lambda req: (gevent.sleep(0.02), Response(200, b"ok"))[1])
    agent = make_agent(keep_alive=True)
    events = []
    req = ga.ClientRequest(server.url("/"), agent=agent)
    req.on("close", lambda: events.append("req close"))
    req.on(
        "response",
        lambda res: (
            res.on("end", lambda: events.append("res end")),
            res.on("close", lambda: events.append("res close")),
        ),
    )
    assert req.end().read() == b"ok"
    assert events == ["res end", "req close", "res close"]


# -- fuzzing: mutated and fragmented responses ----------------------------------------------------
SEEDS = [
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
    CHUNKED + b"5;e=1\r\nhello\r\n0\r\nX-T: 1\r\n\r\n",
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n",
]


@st.composite
def mutated(draw):
    raw = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(0, 4))):
        kind = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "duplicate"]))
        at = draw(st.integers(0, max(len(raw) - 1, 0)))
        if kind == "flip" and raw:
            raw[at] = draw(st.sampled_from(b"\r\n :;0Zx\x00\x7f9"))
        elif kind == "insert":
            raw[at:at] = draw(st.sampled_from([b"\r\n", b"\n", b" ", b"0\r\n\r\n", b"HTTP/1.1 200 OK\r\n", b"9"]))
        elif kind == "delete" and raw:
            del raw[at : at + draw(st.integers(1, 4))]
        elif kind == "truncate":
            del raw[at:]
        elif kind == "duplicate":
            raw += raw[at:]
    cuts = sorted(set(draw(st.lists(st.integers(1, max(len(raw), 1)), max_size=4))))
    return bytes(raw), cuts


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=mutated())
def test_fuzzed_responses_fail_cleanly_and_never_poison_the_pool(make_server, make_agent, case):
    raw, cuts = case

    def handler(req):
        if req.path == "/next":
            return Response(200, b"next body")
        start = 0
        for cut in cuts + [len(raw)]:  # fragmented
            req.conn.send(raw[start:cut])
            start = cut
            gevent.sleep(0)
        req.conn.close()
        return None

    server = make_server(handler)
    agent = make_agent(keep_alive=True, timeout=1.0)
    started = time.monotonic()
    failed = False
    try:
        res = agent.get(server.url("/fuzz"))
        res.read()
    except GeventAgentError:  # only the library's own errors escape
        failed = True
    assert time.monotonic() - started < 3  # nothing hangs past its timeout
    counted = sum(len(v) for v in agent.sockets.values()) + sum(len(v) for v in agent.free_sockets.values())
    assert agent.total_socket_count == counted
    if failed:
        assert agent.free_sockets == {}  # nothing pooled after a malformed exchange
    assert agent.get(server.url("/next")).read() == b"next body"


@pytest.mark.parametrize("value", [{"k": "v"}, {"a"}, [["a"]], [("a", "b")]])
def test_a_header_value_that_is_a_container_raises_and_sends_nothing(server, value):
    with pytest.raises(ga.errors.InvalidArgTypeError, match='Invalid value for header "X-V"') as info:
        ga.get(server.url("/"), headers={"X-V": value})
    assert info.value.code == "ERR_INVALID_ARG_TYPE" and server.connections_total == 0


def test_header_values_are_stringified_as_node_does(make_server):
    import uuid

    server = make_server(lambda req: Response(200, b""))
    ident = uuid.UUID(int=1)
    ga.get(server.url("/"), headers={"X-B": True, "X-F": False, "X-N": 1.5, "X-U": ident, "X-L": [1, b"b"]}).read()
    seen = [(name.lower(), value) for name, value in server.requests[-1].raw_headers if name.lower().startswith("x-")]
    assert seen == [("x-b", "true"), ("x-f", "false"), ("x-n", "1.5"), ("x-u", str(ident)), ("x-l", "1"), ("x-l", "b")]
