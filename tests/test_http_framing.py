"""HTTP/1.1 framing over httptools, and the rule that a socket is pooled only after a complete,
unambiguous exchange (never after an error, an unread body, a parse error or conflicting framing)."""

from __future__ import annotations

import io
import json
import os
import tempfile

import gevent
import pytest

import geventagent as ga
from geventagent._http import ResponseParser
from geventagent.errors import ConnectionReset, HttpParseError
from geventagent.testing import Response


def raw_server(make_server, raw):
    return make_server(lambda req: raw)


def pooled(agent):
    return sum(len(v) for v in agent.free_sockets.values())


# -- sans-I/O parser -----------------------------------------------------------------------------
def test_parser_content_length_in_pieces():
    p = ResponseParser()
    data = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\n\r\nhello"
    for i in range(len(data)):
        p.feed(data[i : i + 1])
    assert p.headers_complete and p.message_complete and p.keep_alive
    assert b"".join(p.body) == b"hello" and p.raw_headers == [("Content-Length", "5"), ("X-A", "1")]


@pytest.mark.parametrize(
    "head, version",
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", "1.1"),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", "1.0"),
        (b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", "1.0"),
    ],
    ids=["1.1", "1.0", "1.1-interim-then-1.0"],
)
@pytest.mark.parametrize("pieces", [False, True], ids=["whole", "byte-by-byte"])
def test_parser_http_version_is_the_final_responses(head, version, pieces):
    p = ResponseParser()
    for part in [head[i : i + 1] for i in range(len(head))] if pieces else [head]:
        p.feed(part)
    assert p.headers_complete and p.http_version == version


def test_parser_chunked_with_trailers():
    p = ResponseParser()
    p.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\nX-Sum: 9\r\n\r\n")
    assert b"".join(p.body) == b"abcde" and p.raw_trailers == [("X-Sum", "9")] and p.keep_alive


def test_parser_informational_then_final():
    p = ResponseParser()
    p.feed(
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </s>\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
    )
    assert [i[0] for i in p.informational] == [100, 103]
    assert p.informational[1][3] == [("Link", "</s>")]
    assert p.status_code == 200 and p.message_complete


def test_parser_eof_delimited_body():
    p = ResponseParser()
    p.feed(b"HTTP/1.1 200 OK\r\n\r\nsome")
    p.feed(b" more")
    assert not p.message_complete and p.eof_body
    assert p.feed_eof() is True
    assert p.message_complete and not p.keep_alive and b"".join(p.body) == b"some more"


@pytest.mark.parametrize(
    "raw,code",
    [
        (b"HTTX/1.1 200 OK\r\n\r\n", "HPE_INVALID_CONSTANT"),
        (  # Node v20: HPE_INVALID_TRANSFER_ENCODING "Transfer-Encoding can't be present with Content-Length"
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n",
            "HPE_INVALID_TRANSFER_ENCODING",
        ),
        (  # Node v20: HPE_INVALID_CONTENT_LENGTH "Content-Length can't be present with Transfer-Encoding"
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n",
            "HPE_INVALID_CONTENT_LENGTH",
        ),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n", "HPE_UNEXPECTED_CONTENT_LENGTH"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "HPE_INVALID_CHUNK_SIZE"),
        (b"HTTP/1.1 200 OK\r\nBad Header: x\r\n\r\n", "HPE_INVALID_HEADER_TOKEN"),
    ],
)
def test_parser_errors_carry_node_codes(raw, code):
    p = ResponseParser()
    try:
        p.feed(raw)
        err = p.error  # after a valid head the error is kept for the body's reader
        assert p.headers_complete
    except HttpParseError as exc:
        err = exc
    assert err is not None and err.code == code


def test_parser_header_overflow():
    p = ResponseParser()
    with pytest.raises(HttpParseError) as info:
        p.feed(b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 17000 + b"\r\n\r\n")
    assert info.value.code == "HPE_HEADER_OVERFLOW"
    p = ResponseParser()
    with pytest.raises(HttpParseError) as info:  # a slow, endless head is caught too
        p.feed(b"HTTP/1.1 200 OK\r\n")
        for _ in range(20):
            p.feed(b"X-A: " + b"b" * 1000 + b"\r\n")
    assert info.value.code == "HPE_HEADER_OVERFLOW"


def test_parser_stray_bytes_after_message():
    p = ResponseParser()
    p.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA")
    assert p.message_complete and p.stray and not p.keep_alive


def test_parser_head_response_ends_at_head():
    p = ResponseParser("HEAD")
    p.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
    assert p.message_complete and p.keep_alive and not p.body


# -- responses over sockets ----------------------------------------------------------------------
def test_content_length_and_chunked_responses(make_server, make_agent):
    server = make_server(lambda req: Response(200, b"x" * 100000, chunked=req.path == "/chunked"))
    agent = make_agent(keep_alive=True)
    for path in ("/cl", "/chunked"):
        res = agent.get(server.url(path))
        assert res.read() == b"x" * 100000 and res.complete
    assert server.connections_total == 1 and pooled(agent) == 1


def test_read_amt_and_iteration(make_server, make_agent):
    server = make_server(lambda req: Response(200, b"0123456789" * 10000))
    agent = make_agent(keep_alive=True)
    res = agent.get(server.url("/"))
    first = res.read(5)
    assert first == b"01234"
    rest = b"".join(res)
    assert first + rest == b"0123456789" * 10000
    assert res.read() == b"" and res.read(10) == b""


def test_eof_delimited_response_is_not_pooled(make_server, make_agent):
    server = make_server(lambda req: Response(200, b"until close", content_length=False))
    agent = make_agent(keep_alive=True)
    res = agent.get(server.url("/"))
    assert res.read() == b"until close"
    assert pooled(agent) == 0 and agent.total_socket_count == 0


@pytest.mark.parametrize("status", [204, 304])
def test_no_body_statuses_are_pooled(make_server, make_agent, status):
    server = make_server(lambda req: Response(status))
    agent = make_agent(keep_alive=True)
    for _ in range(2):
        res = agent.get(server.url("/"))
        assert res.status_code == status and res.read() == b""
    assert server.connections_total == 1


def test_head_request_with_content_length(make_server, make_agent):
    server = make_server(lambda req: Response(200, b"x" * 50))
    agent = make_agent(keep_alive=True)
    res = agent.request("HEAD", server.url("/"))
    assert res.headers["content-length"] == "50" and res.read() == b"" and res.complete
    assert agent.get(server.url("/")).read() == b"x" * 50  # the connection is still in sync
    assert server.connections_total == 1


def test_information_and_continue_events(make_server, make_agent):
    server = make_server(
        lambda req: (
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 102 Processing\r\n\r\n"
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
        )
    )
    agent = make_agent(keep_alive=True)
    req = ga.ClientRequest(server.url("/"), agent=agent)
    events = []
    req.on("continue", lambda: events.append("continue"))
    req.on("information", lambda info: events.append(info["status_code"]))
    req.on("response", lambda res: events.append("response"))
    assert req.end().read() == b"ok"
    assert events == ["continue", 100, 102, "response"]


def test_expect_100_continue_waits_then_sends_body(make_server, make_agent):
    import socket as stdsocket

    from gevent.server import StreamServer

    got = {}

    def handle(sock, address):
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(4096)
        got["before_continue"] = head.split(b"\r\n\r\n", 1)[1]
        sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        body = b""
        while len(body) < 5:
            body += sock.recv(4096)
        got["body"] = body
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        sock.recv(1)

    server = StreamServer(("127.0.0.1", 0), handle)
    server.start()
    try:
        req = ga.ClientRequest(
            "http://127.0.0.1:%d/" % server.server_port,
            method="POST",
            headers={"Expect": "100-continue"},
            agent=make_agent(),
        )
        events = []
        req.on("continue", lambda: events.append("continue"))
        assert req.end(b"hello").read() == b"ok"
        assert got == {"before_continue": b"", "body": b"hello"} and events == ["continue"]
    finally:
        server.stop()
    del stdsocket


def test_trailers_are_exposed(make_server, make_agent):
    server = make_server(
        lambda req: b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nX-Checksum: abc\r\n\r\n"
    )
    res = make_agent(keep_alive=True).get(server.url("/"))
    assert res.read() == b"ok" and res.trailers == {"x-checksum": "abc"}


def test_duplicate_header_rules_like_node(make_server):
    server = make_server(
        lambda req: (
            b"HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n"
            b"X-Multi: 1\r\nX-Multi: 2\r\nContent-Type: text/plain\r\n"
            b"Content-Type: text/html\r\nContent-Length: 0\r\n\r\n"
        )
    )
    res = ga.get(server.url("/"))
    assert res.headers["set-cookie"] == ["a=1", "b=2"]
    assert res.headers["x-multi"] == "1, 2"
    assert res.headers["content-type"] == "text/plain"
    assert res.raw_headers[0] == ("Set-Cookie", "a=1")


def test_text_and_json_helpers(make_server):
    server = make_server(
        lambda req: Response(
            200, '{"a": "é"}'.encode("latin-1"), headers=[("Content-Type", "application/json; charset=latin-1")]
        )
    )
    assert ga.get(server.url("/")).text() == '{"a": "é"}'
    assert ga.get(server.url("/")).json() == {"a": "é"}


def test_a_charset_python_does_not_know_reads_as_utf8_as_in_requests(make_server):
    # The server's charset: LookupError ("unknown encoding: x-unknown") lost the caller the text.
    body = '{"a": "é"}'.encode("utf-8")
    server = make_server(
        lambda req: Response(200, body, headers=[("Content-Type", "application/json; charset=x-unknown")])
    )
    assert ga.get(server.url("/")).text() == '{"a": "é"}'
    assert ga.get(server.url("/")).json() == {"a": "é"}
    with pytest.raises(LookupError):  # one the caller names is the caller's to get right
        ga.get(server.url("/")).text("x-unknown")


def test_headers_are_nodes_lower_case_dict_and_find_other_cases(make_server):
    server = make_server(lambda req: Response(200, b"", headers=[("Content-Type", "text/plain"), ("ETag", '"x"')]))
    headers = ga.get(server.url("/")).headers
    assert isinstance(headers, dict) and "content-type" in list(headers) and "Content-Type" not in list(headers)
    assert headers["Content-Type"] == headers["content-type"] == "text/plain"  # as requests' users write it
    assert headers.get("ETAG") == '"x"' and "Etag" in headers and headers.get("X-None", 5) == 5
    with pytest.raises(KeyError):
        headers["X-None"]
    assert json.loads(json.dumps(headers)) == dict(headers)


def test_a_body_read_whole_stays_for_content_text_and_json(make_server):
    server = make_server(lambda req: Response(200, b'{"a": 1}', headers=[("Content-Type", "application/json")]))
    res = ga.get(server.url("/"))
    assert res.read() == b'{"a": 1}' and res.read() == b""  # a stream: read once
    assert (
        res.content == b'{"a": 1}' and res.text() == '{"a": 1}' and res.json() == {"a": 1}
    )  # (was b"" / "" / a JSONDecodeError)
    res = ga.get(server.url("/"))
    assert res.read(2) == b'{"' and res.content == b'a": 1}'  # partial reads: what is left


def test_read_takes_python_file_sizes(make_server):
    server = make_server(lambda req: Response(200, b"0123456789"))
    res = ga.get(server.url("/"))
    assert res.read(0) == b"" and res.read(3) == b"012" and res.read(-1) == b"3456789"  # (-1 gave b"")
    for amt in ("10", 1.5, True):
        with pytest.raises(ga.errors.InvalidArgTypeError, match='"amt" argument'):
            ga.get(server.url("/")).read(amt)


# -- request bodies ------------------------------------------------------------------------------
def test_request_bodies_bytes_str_file_iterable(server, make_agent):
    agent = make_agent(keep_alive=True)
    ga.request("POST", server.url("/"), body=b"bytes", agent=agent).read()
    assert server.requests[-1].body == b"bytes" and server.requests[-1].headers["content-length"] == "5"
    ga.request("PUT", server.url("/"), body="stré", agent=agent).read()
    assert server.requests[-1].body == "stré".encode()
    with tempfile.NamedTemporaryFile() as f:
        f.write(b"f" * 200000)
        f.flush()
        f.seek(0)
        ga.request("POST", server.url("/"), body=f, agent=agent).read()
    assert server.requests[-1].body == b"f" * 200000 and server.requests[-1].headers["content-length"] == "200000"
    ga.request("POST", server.url("/"), body=io.BytesIO(b"stream"), agent=agent).read()
    assert server.requests[-1].body == b"stream" and "chunked" in server.requests[-1].headers["transfer-encoding"]
    ga.request("POST", server.url("/"), body=(p for p in [b"a", "b", b""]), agent=agent).read()
    assert server.requests[-1].body == b"ab" and server.requests[-1].headers["transfer-encoding"] == "chunked"
    ga.request("POST", server.url("/"), agent=agent).read()
    assert server.requests[-1].headers["content-length"] == "0"
    ga.request("GET", server.url("/"), agent=agent).read()
    assert "content-length" not in server.requests[-1].headers
    assert server.connections_total == 1


@pytest.mark.parametrize(
    "on_disk,encoding,sent",
    [(b"a,b\r\n1,2\r\n", "utf-8", b"a,b\n1,2\n"), ("caf\xe9".encode("latin-1"), "latin-1", "caf\xe9".encode())],
    ids=["crlf", "latin-1"],
)
def test_a_text_mode_file_is_sent_as_its_text_not_its_size_on_disk(
    server, make_agent, tmp_path, on_disk, encoding, sent
):
    # open(path) of a CRLF file reads "\n" line ends, a latin-1 one text longer as UTF-8: the file's
    # size on disk went out as Content-Length, so the body was short (the server waited: ETIMEDOUT)
    # or long (its tail reached the server as the start of the next request).
    path = tmp_path / "upload.txt"
    path.write_bytes(on_disk)
    agent = make_agent(keep_alive=True, timeout=2)
    with open(path, encoding=encoding) as f:
        assert ga.request("POST", server.url("/"), body=f, agent=agent).status_code == 200
    assert server.requests[-1].body == sent and server.requests[-1].headers["transfer-encoding"] == "chunked"
    assert agent.get(server.url("/next")).read() == b"Hello World"
    assert [r.path for r in server.requests] == ["/", "/next"] and server.connections_total == 1


def test_streaming_write_is_chunked(server, make_agent):
    req = ga.ClientRequest(server.url("/"), method="POST", agent=make_agent(keep_alive=True))
    req.write(b"one,")
    req.write("two,")
    req.end(b"three").read()
    assert server.requests[-1].body == b"one,two,three"
    with pytest.raises(ga.GeventAgentError) as info:
        req.write(b"late")
    assert info.value.code == "ERR_STREAM_WRITE_AFTER_END"


@pytest.mark.parametrize("when", ["before the head", "after the head"])
def test_write_after_destroy_raises_err_stream_destroyed_and_never_waits(server, make_agent, when):
    # Before the head, write() asked the agent for a socket for a destroyed request, which the agent
    # hands straight back (Node's onSocketNT), and then waited for it forever. Node v20: the write's
    # callback gets ERR_STREAM_DESTROYED "Cannot call write after a stream was destroyed".
    agent = make_agent(keep_alive=True)
    req = ga.ClientRequest(server.url("/"), method="POST", agent=agent)
    if when == "after the head":
        req.write(b"first,")
    req.destroy()
    with gevent.Timeout(5):
        with pytest.raises(ga.GeventAgentError) as info:
            req.write(b"late")
        assert info.value.code == "ERR_STREAM_DESTROYED"
        assert str(info.value) == "Cannot call write after a stream was destroyed"
        if when == "before the head":
            with pytest.raises(ConnectionReset):  # the head alone: no waiting for a socket either
                req.flush_headers()
        with pytest.raises(ConnectionReset):  # Node's 'error' after destroy(): socket hang up
            req.end()
    gevent.sleep(0.05)
    assert agent.total_socket_count == 0 and not agent.sockets and not agent.requests
    assert all(r.body != b"late" for r in server.requests)


def test_bad_body_type_sends_nothing(server):
    with pytest.raises(TypeError) as info:
        ga.request("POST", server.url("/"), body={"a": 1})
    assert info.value.code == "ERR_INVALID_ARG_TYPE"
    assert server.requests == []


def test_header_sent_once_and_cannot_change_after(server, make_agent):
    req = ga.ClientRequest(server.url("/"), method="POST", agent=make_agent(), headers=[("X-List", ["a", "b"])])
    req.flush_headers()
    with pytest.raises(ga.GeventAgentError) as info:
        req.set_header("X-Late", "1")
    assert info.value.code == "ERR_HTTP_HEADERS_SENT"
    req.end().read()
    assert [v for n, v in server.requests[-1].raw_headers if n == "X-List"] == ["a", "b"]


# -- never pool after trouble ----------------------------------------------------------------------
@pytest.mark.parametrize(
    "raw,code",
    [
        (b"garbage\r\n\r\n", "HPE_INVALID_CONSTANT"),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\nok",
            "HPE_INVALID_TRANSFER_ENCODING",
        ),
        (b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n", "HPE_HEADER_OVERFLOW"),
    ],
)
def test_malformed_response_raises_and_never_pools(make_server, make_agent, raw, code):
    server = raw_server(make_server, raw)
    agent = make_agent(keep_alive=True)
    req = ga.ClientRequest(server.url("/"), agent=agent)
    errors = []
    req.on("error", errors.append)
    with pytest.raises(HttpParseError) as info:
        req.end()
    assert info.value.code == code and errors == [info.value]
    assert agent.total_socket_count == 0 and agent.free_sockets == {}


def test_stray_bytes_after_response_are_not_pooled(make_server, make_agent):
    server = raw_server(make_server, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n")
    agent = make_agent(keep_alive=True)
    assert agent.get(server.url("/")).read() == b"ok"
    assert agent.total_socket_count == 0


def test_close_mid_body_raises_aborted(make_server, make_agent):
    def handler(req):
        req.conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
        req.conn.close()

    server = make_server(handler)
    agent = make_agent(keep_alive=True)
    res = agent.get(server.url("/"))
    events = []
    res.on("aborted", lambda: events.append("aborted"))
    res.on("close", lambda: events.append("close"))
    with pytest.raises(ConnectionResetError) as info:
        res.read()
    assert str(info.value) == "aborted" and info.value.code == "ECONNRESET"
    assert events == ["aborted", "close"] and agent.total_socket_count == 0


def test_server_closes_before_response_socket_hang_up(make_server, make_agent):
    server = make_server(lambda req: req.conn.close())
    with pytest.raises(ConnectionResetError) as info:
        make_agent(keep_alive=True).get(server.url("/"))
    assert str(info.value) == "socket hang up"


def test_connection_refused(make_agent):
    from gevent import socket as gsocket

    probe = gsocket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    agent = make_agent(keep_alive=True)
    with pytest.raises(ConnectionRefusedError) as info:
        agent.get("http://127.0.0.1:%d/" % port)
    assert info.value.code == "ECONNREFUSED" and isinstance(info.value, ga.GeventAgentError)
    assert agent.total_socket_count == 0 and agent.sockets == {}


def test_unread_large_body_close_destroys_small_remainder_drains(make_server, make_agent):
    big = b"z" * (4 << 20)
    server = make_server(lambda req: Response(200, big if req.path == "/big" else b"y" * 20000))
    agent = make_agent(keep_alive=True)
    with agent.get(server.url("/big")) as res:
        res.read(10)
    assert agent.total_socket_count == 0  # too much left: destroyed, not drained
    with agent.get(server.url("/small")) as res:
        pass
    assert pooled(agent) == 1


def test_unix_socket_and_local_address(make_server, make_agent):
    path = os.path.join(tempfile.mkdtemp(), "u.sock")
    make_server(unix_path=path)
    assert ga.get({"socket_path": path, "path": "/"}, agent=make_agent()).read() == b"Hello World"
    server = make_server()
    req = ga.ClientRequest(server.url("/"), agent=make_agent(), local_address="127.0.0.1", family=4)
    req.end().read()
    assert req.socket.local_address == "127.0.0.1"


def test_user_connection_close_is_never_pooled(make_server, make_agent):
    server = make_server(lambda req: b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok")
    agent = make_agent(keep_alive=True)
    req = ga.ClientRequest(server.url("/"), agent=agent, headers={"Connection": "close"})
    assert req.end().read() == b"ok"
    assert server.requests[-1].headers["connection"] == "close"
    assert agent.free_sockets == {} and agent.total_socket_count == 0


def test_cached_request_heads_follow_every_input(make_server, make_agent):
    # Heads of requests whose only header is Host are cached; each input of the head must still
    # show in what the server receives.
    server = make_server()
    keep = make_agent(keep_alive=True)
    close = make_agent(keep_alive=False)
    calls = [
        ("GET", "/a", None, keep),
        ("GET", "/a", None, keep),
        ("POST", "/a", b"abc", keep),
        ("POST", "/a", b"abcde", keep),
        ("POST", "/a", b"", keep),
        ("DELETE", "/b?q=1", None, keep),
        ("GET", "/a", None, close),
        ("GET", "/a", (b for b in [b"x", b"y"]), keep),
    ]
    for method, path, body, agent in calls:
        ga.request(method, server.url(path), body=body, agent=agent).read()
    seen = [
        (
            r.method,
            r.path,
            r.headers.get("connection"),
            r.headers.get("content-length"),
            r.headers.get("transfer-encoding"),
        )
        for r in server.requests
    ]
    assert seen == [
        ("GET", "/a", "keep-alive", None, None),
        ("GET", "/a", "keep-alive", None, None),
        ("POST", "/a", "keep-alive", "3", None),
        ("POST", "/a", "keep-alive", "5", None),
        ("POST", "/a", "keep-alive", "0", None),
        ("DELETE", "/b?q=1", "keep-alive", None, None),
        ("GET", "/a", "close", None, None),
        ("GET", "/a", "keep-alive", None, "chunked"),
    ]
    assert [r.body for r in server.requests][2:5] == [b"abc", b"abcde", b""]
    assert all(r.headers["host"] == "127.0.0.1:%d" % server.port for r in server.requests)
