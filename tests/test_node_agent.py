"""Conformance: Node v20's test/parallel/test-http-*agent*/keepalive tests, mirrored.

Each test is named after the Node file it mirrors (node-agent.md §9). Where the blocking API
changes the shape of a test (no callbacks), the assertions Node makes are kept.
"""

from __future__ import annotations

import os
import socket as stdsocket
import tempfile
import time

import gevent
import pytest
from gevent.server import StreamServer

import geventagent as ga
from geventagent.testing import Response

from .conftest import spawn_all


def delayed(seconds, body=b"ok"):
    def handler(req):
        gevent.sleep(seconds)
        return Response(200, body)

    return handler


def name_of(server):
    return "127.0.0.1:%d:" % server.port


# 4 ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("scheduling", ["lifo", "fifo", None])
def test_http_agent_scheduling(make_server, make_agent, scheduling):
    server = make_server(lambda req: (gevent.sleep(int(req.path[1:]) * 0.01), Response(200, b"x"))[1])
    kw = {"scheduling": scheduling} if scheduling else {}
    agent = make_agent(keep_alive=True, max_sockets=5, **kw)
    freed = []
    agent.on("free", lambda socket, options: freed.append(socket))
    spawn_all(*[(lambda i=i: agent.get(server.url("/%d" % i)).read()) for i in range(5)])
    assert len(freed) == 5 and len(agent.free_sockets[name_of(server)]) == 5
    got = []
    req = ga.ClientRequest(server.url("/0"), agent=agent)
    req.on("socket", got.append)
    req.end().read()
    expected = freed[0] if scheduling == "fifo" else freed[-1]
    assert got == [expected]
    assert req.reused_socket


# 5 ---------------------------------------------------------------------------------------------
def test_http_agent_maxtotalsockets(make_server, make_agent):
    servers = [make_server(delayed(0.02)), make_server(delayed(0.02))]
    agent = make_agent(keep_alive=True, max_total_sockets=2, max_sockets=3)
    peaks = {"total": 0, "origin": 0}

    def check(*_):
        peaks["total"] = max(peaks["total"], agent.total_socket_count)
        for name in set(agent.sockets) | set(agent.free_sockets):
            count = len(agent.sockets.get(name, ())) + len(agent.free_sockets.get(name, ()))
            peaks["origin"] = max(peaks["origin"], count)

    def one(server):
        req = ga.ClientRequest(server.url("/"), agent=agent)
        req.on("socket", check)
        res = req.end()
        check()
        assert res.read() == b"ok"

    spawn_all(*[(lambda s=s: one(s)) for s in servers for _ in range(6)])
    assert peaks["total"] <= 2 and peaks["origin"] <= 2
    assert agent.requests == {} and agent.sockets == {}
    assert agent.total_socket_count <= 2


# 6 ---------------------------------------------------------------------------------------------
def test_http_agent_maxsockets(make_server, make_agent):
    server = make_server(delayed(0.02))
    agent = make_agent(keep_alive=True, max_sockets=2, max_free_sockets=2)
    spawn_all(lambda: agent.get(server.url("/")).read(), lambda: agent.get(server.url("/")).read())
    assert len(agent.free_sockets[name_of(server)]) == 2
    assert agent.sockets == {}


# 7 ---------------------------------------------------------------------------------------------
def test_http_agent_maxsockets_respected(make_server, make_agent):
    server = make_server(delayed(0.02))
    agent = make_agent(max_sockets=2)
    seen = []

    def one(i):
        req = ga.ClientRequest(server.url("/"), agent=agent)

        def on_response(res):
            seen.append(len(agent.sockets.get(name_of(server), ())))
            if i % 2:
                req.destroy()

        req.on("response", on_response)
        res = req.end()
        if i % 2 == 0:
            assert res.read() == b"ok"

    spawn_all(*[(lambda i=i: one(i)) for i in range(6)])
    assert len(seen) == 6 and max(seen) <= 2
    assert server.connections_peak <= 2


# 8 ---------------------------------------------------------------------------------------------
def test_http_keepalive_maxsockets(make_server, make_agent):
    server = make_server(delayed(0.02))
    agent = make_agent(keep_alive=True, max_sockets=5, max_free_sockets=2)
    spawn_all(*[(lambda: agent.get(server.url("/")).read()) for _ in range(10)])
    assert len(agent.free_sockets[name_of(server)]) == 2
    assert agent.sockets == {}
    assert server.connections_total == 5
    spawn_all(*[(lambda: agent.get(server.url("/")).read()) for _ in range(10)])
    assert server.connections_total == 8
    assert server.connections_peak <= 5


# 9 ---------------------------------------------------------------------------------------------
def test_http_agent_keepalive(make_server, make_agent):
    def handler(req):
        if req.path == "/remote_close":
            gevent.spawn_later(0.05, req.conn.close)
        if req.path == "/error":
            req.conn.reset()
            return None
        return Response(200, b"hello world")

    server = make_server(handler)
    agent = make_agent(keep_alive=True, max_sockets=5, max_free_sockets=5)
    name = name_of(server)
    at_end = []
    req = ga.ClientRequest(server.url("/first"), agent=agent)
    req.on(
        "response",
        lambda res: res.on(
            "end", lambda: at_end.append((len(agent.sockets.get(name, ())), len(agent.free_sockets.get(name, ()))))
        ),
    )
    res = req.end()
    assert res.read() == b"hello world"
    assert at_end == [(1, 0)]  # still active at 'end'
    assert name not in agent.sockets and len(agent.free_sockets[name]) == 1
    assert req.reused_socket is False
    socket = agent.free_sockets[name][0]
    # listener-leak check: one agent listener of each kind on a pooled socket
    for event in ("error", "free", "close", "agentRemove"):
        assert socket.listener_count(event) == 1, event

    req2 = ga.ClientRequest(server.url("/second"), agent=agent)
    res2 = req2.end()
    assert res2.read() == b"hello world" and req2.reused_socket is True
    assert server.connections_total == 1

    # remote close: the free pool empties without any request
    agent.get(server.url("/remote_close")).read()
    assert len(agent.free_sockets[name]) == 1
    gevent.sleep(0.2)
    assert agent.free_sockets == {} and agent.total_socket_count == 0

    # server destroys the connection before answering: socket hang up
    with pytest.raises(ConnectionResetError) as info:
        agent.get(server.url("/error"))
    assert info.value.code == "ECONNRESET"
    assert agent.total_socket_count == 0 and agent.sockets == {}


# 10 --------------------------------------------------------------------------------------------
def test_http_agent_keepalive_delay(server, make_agent):
    seen = []

    class Spy(ga.Agent):
        def create_connection(self, options, callback=None):
            seen.append(dict(options))
            return super().create_connection(options, callback)

    agent = make_agent(Spy, keep_alive=True, keep_alive_initial_delay=1.5)
    agent.get(server.url("/")).read()
    assert seen[0]["keep_alive"] is True
    assert seen[0]["keep_alive_initial_delay"] == agent.keep_alive_initial_delay == 1.5


# 11 --------------------------------------------------------------------------------------------
def test_http_agent_timeout(server, make_agent):
    agent = make_agent(keep_alive=True)
    first = ga.ClientRequest(server.url("/"), agent=agent)
    first.end().read()
    second = ga.ClientRequest(server.url("/"), agent=agent)
    second.end().read()
    assert second.reused_socket and server.connections_total == 1

    # an idle free socket times out (agent timeout) and is destroyed
    agent2 = make_agent(keep_alive=True, timeout=0.05)
    sockets = []
    req = ga.ClientRequest(server.url("/"), agent=agent2)
    req.on("socket", sockets.append)
    req.end().read()
    gevent.sleep(0.2)
    assert sockets[0].destroyed and sockets[0].close_reason == "idle_timeout"
    assert agent2.free_sockets == {}
    req = ga.ClientRequest(server.url("/"), agent=agent2)
    req.on("socket", sockets.append)
    req.end().read()
    assert sockets[1] is not sockets[0] and not req.reused_socket

    # a socket destroyed while free is not reused
    pooled = agent.free_sockets[name_of(server)][-1]
    pooled.destroy()
    req = ga.ClientRequest(server.url("/"), agent=agent)
    got = []
    req.on("socket", got.append)
    req.end().read()
    assert got[0] is not pooled and not req.reused_socket


# 12 --------------------------------------------------------------------------------------------
def test_http_agent_timeout_option(make_server, make_agent):
    server = make_server(lambda req: gevent.sleep(5))  # never answers in time
    agent = make_agent(timeout=0.1)
    req = ga.ClientRequest(server.url("/"), agent=agent)
    timeouts = []
    req.on("timeout", lambda: timeouts.append(1))
    with pytest.raises(TimeoutError) as info:
        req.end()
    assert info.value.code == "ETIMEDOUT"
    assert timeouts == [1] and req.destroyed
    assert agent.total_socket_count == 0


# 13 --------------------------------------------------------------------------------------------
def test_http_client_timeout_option_with_agent(make_server, make_agent):
    server = make_server(lambda req: gevent.sleep(5))
    agent = make_agent(timeout=0.05)
    req = ga.ClientRequest(server.url("/"), agent=agent, timeout=0.3)
    fired = []
    req.on("timeout", lambda: fired.append(gevent.get_hub().loop.now()))
    start = gevent.get_hub().loop.now()
    with pytest.raises(TimeoutError):
        req.end()
    assert len(fired) == 1 and fired[0] - start >= 0.29


# 14 --------------------------------------------------------------------------------------------
def test_http_client_timeout_agent(make_server, make_agent):
    def handler(req):
        if int(req.path[1:]) % 2:
            gevent.sleep(2)
            return None
        return Response(200, b"ok")

    server = make_server(handler)
    agent = make_agent(keep_alive=True)
    timeouts = {}

    def one(i):
        req = ga.ClientRequest(server.url("/%d" % i), agent=agent)
        req.set_timeout(0.05)
        req.on("timeout", lambda: timeouts.__setitem__(i, timeouts.get(i, 0) + 1))
        try:
            return req.end().read()
        except TimeoutError:
            return "timeout"

    results = spawn_all(*[(lambda i=i: one(i)) for i in range(30)])
    assert results == [b"ok" if i % 2 == 0 else "timeout" for i in range(30)]
    assert timeouts == {i: 1 for i in range(1, 30, 2)}


# 15 --------------------------------------------------------------------------------------------
def test_http_client_timeout_connect_listener(server, make_agent):
    agent = make_agent(keep_alive=True)
    agent.get(server.url("/")).read()
    req = ga.ClientRequest(server.url("/"), agent=agent)
    counts = []
    req.on("socket", lambda s: (req.set_timeout(1.0), counts.append(s.listener_count("connect"))))
    req.end().read()
    assert req.reused_socket and counts == [0]


# 16 --------------------------------------------------------------------------------------------
def test_http_agent_error_on_idle(server, make_agent):
    agent = make_agent(keep_alive=True)
    agent.get(server.url("/")).read()
    socket = agent.free_sockets[name_of(server)][0]
    socket.emit("error", OSError("ECONNRESET"))
    assert agent.free_sockets == {} and socket.destroyed
    assert agent.total_socket_count == 0
    req = ga.ClientRequest(server.url("/"), agent=agent)
    assert req.end().read() == b"Hello World"
    assert not req.reused_socket


# 17 --------------------------------------------------------------------------------------------
def test_http_agent_destroyed_socket(make_server, make_agent):
    server = make_server(delayed(0.05))
    agent = make_agent(keep_alive=True, max_sockets=1)
    first_socket = []

    def first():
        req = ga.ClientRequest(server.url("/1"), agent=agent)
        req.on("socket", first_socket.append)
        with pytest.raises(ConnectionResetError):
            req.end().read()

    def second():
        gevent.sleep(0.01)
        req = ga.ClientRequest(server.url("/2"), agent=agent)
        got = []
        req.on("socket", got.append)
        body = req.end().read()
        assert got[0] is not first_socket[0] and not got[0].destroyed or got[0].requests == 1
        return body

    def killer():
        gevent.sleep(0.02)
        first_socket[0].destroy()

    results = spawn_all(first, second, killer)
    assert results[1] == b"ok"
    assert agent.requests == {}


# 18 --------------------------------------------------------------------------------------------
def test_http_agent_reuse_drained_socket_only(make_server, make_agent):
    big = b"x" * (1 << 20)
    server = make_server(lambda req: Response(200, big if req.path == "/big" else b"small"))
    agent = make_agent(keep_alive=True)
    res1 = agent.get(server.url("/big"))  # body not drained: its socket stays with it
    req2 = ga.ClientRequest(server.url("/small"), agent=agent)
    assert req2.end().read() == b"small"
    assert not req2.reused_socket and server.connections_total == 2
    assert res1.read() == big
    sockets = agent.free_sockets[name_of(server)]
    assert len(sockets) == 2
    req3 = ga.ClientRequest(server.url("/small"), agent=agent)
    req3.end().read()
    assert req3.reused_socket and server.connections_total == 2


# 19 --------------------------------------------------------------------------------------------
def test_http_client_keep_alive_release_before_finish(make_agent):
    """The server answers a POST before its body is finished; the queued GET waits for the POST's
    end and still succeeds on the same connection."""
    log = []

    def handle(sock, address):
        buf = b""
        served = 0
        while served < 2:
            data = sock.recv(65536)
            if not data:
                return
            buf += data
            while b"\r\n\r\n" in buf:
                head, _, rest = buf.partition(b"\r\n\r\n")
                if head.startswith(b"POST") and not log:
                    log.append("post-head")
                    sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nearl")
                    # wait for the whole chunked body before reading the next request
                    while b"0\r\n\r\n" not in rest:
                        more = sock.recv(65536)
                        if not more:
                            return
                        rest += more
                    rest = rest.split(b"0\r\n\r\n", 1)[1]
                    log.append("post-body")
                else:
                    log.append("get")
                    sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nget")
                served += 1
                buf = rest

    server = StreamServer(("127.0.0.1", 0), handle)
    server.start()
    try:
        agent = make_agent(keep_alive=True, max_sockets=1)
        url = "http://127.0.0.1:%d/" % server.server_port

        def post():
            req = ga.ClientRequest(url, method="POST", agent=agent)
            req.write(b"part one")
            gevent.sleep(0.05)
            res = req.end(b"part two")
            return res.read()

        def get():
            gevent.sleep(0.01)
            return agent.get(url).read()

        assert spawn_all(post, get) == [b"earl", b"get"]
        assert log == ["post-head", "post-body", "get"]
    finally:
        server.stop()


# 20 --------------------------------------------------------------------------------------------
def test_http_keepalive_free(server, make_agent):
    agent = make_agent(keep_alive=True)
    for method in ("destroy", "abort"):
        req = ga.ClientRequest(server.url("/"), agent=agent)
        state = {}

        def on_end(req=req, method=method):
            state["destroyed"] = req.destroyed
            getattr(req, method)()

        req.on("response", lambda res, on_end=on_end: res.on("end", on_end))
        sockets = []
        req.on("socket", sockets.append)
        frees = []
        req.on("socket", lambda s: s.once("free", lambda: frees.append(1)))
        req.end().read()
        assert state["destroyed"] is True
        assert frees == [1] and not sockets[0].destroyed
    assert server.connections_total == 1


# 21 --------------------------------------------------------------------------------------------
def test_http_client_abort_keep_alive_destroy_res(server, make_agent):
    agent = make_agent(keep_alive=True)
    res = agent.get(server.url("/"))
    res.read()
    res.destroy()
    req = ga.ClientRequest(server.url("/"), agent=agent)
    req.end().read()
    assert req.reused_socket and agent.counters["sockets_created"] == 1


# 22, 23 ----------------------------------------------------------------------------------------
def _abort_queued(agent, url_or_opts, server):
    def first():
        return ga.get(url_or_opts, agent=agent).read()

    def queued_then_aborted():
        gevent.sleep(0.01)
        req = ga.ClientRequest(url_or_opts, agent=agent)
        events = []
        req.on("socket", lambda s: events.append("socket"))
        req.on("close", lambda: events.append("close"))
        g = gevent.spawn(req.end)
        gevent.sleep(0.01)
        assert sum(len(q) for q in agent.requests.values()) == 1
        req.destroy()
        g.join()
        assert isinstance(g.exception, ConnectionResetError) or g.exception is None
        assert events == ["close"]
        return "aborted"

    def third():
        gevent.sleep(0.05)
        req = ga.ClientRequest(url_or_opts, agent=agent)
        req.end().read()
        return req.reused_socket

    results = spawn_all(first, queued_then_aborted, third)
    assert results[1] == "aborted"
    assert agent.counters["sockets_created"] == 1
    assert server.connections_total == 1


def test_http_client_abort_keep_alive_queued_tcp_socket(make_server, make_agent):
    server = make_server(delayed(0.05))
    agent = make_agent(keep_alive=True, max_sockets=1)
    _abort_queued(agent, server.url("/"), server)


def test_http_client_abort_keep_alive_queued_unix_socket(make_server, make_agent):
    path = os.path.join(tempfile.mkdtemp(), "s.sock")
    server = make_server(delayed(0.05), unix_path=path)
    agent = make_agent(keep_alive=True, max_sockets=1)
    _abort_queued(agent, {"socket_path": path, "path": "/"}, server)


# 24 --------------------------------------------------------------------------------------------
def test_http_client_agent_abort_close_event(make_server, make_agent):
    server = make_server(delayed(0.05))
    agent = make_agent(keep_alive=True, max_sockets=1)
    busy = gevent.spawn(lambda: agent.get(server.url("/")).read())
    gevent.sleep(0.01)
    req = ga.ClientRequest(server.url("/"), agent=agent)
    events = []
    for event in ("socket", "response", "close"):
        req.on(event, lambda *a, event=event: events.append(event))
    waiter = gevent.spawn(req.end)
    gevent.sleep(0.005)
    req.abort()
    waiter.join()
    busy.join()
    assert events == ["close"]
    assert agent.requests == {}


# 25 --------------------------------------------------------------------------------------------
def test_http_client_agent_end_close_event(server, make_agent):
    agent = make_agent(keep_alive=True)
    req = ga.ClientRequest(server.url("/"), agent=agent)
    events = []

    def on_response(res):
        res.on("data", lambda chunk: events.append(("data", chunk)))
        res.on("end", lambda: events.append("end"))
        res.on("close", lambda: events.append("res close"))

    req.on("response", on_response)
    req.on("close", lambda: events.append("req close"))
    req.end()
    assert events == [("data", b"Hello World"), "end", "req close", "res close"]


# 26 --------------------------------------------------------------------------------------------
def test_http_keepalive_override(server, make_agent):
    calls = {"keep": 0, "reuse": []}

    class Custom(ga.Agent):
        def keep_socket_alive(self, socket):
            calls["keep"] += 1
            if calls["keep"] == 1:
                return False
            return super().keep_socket_alive(socket)

        def reuse_socket(self, socket, req):
            calls["reuse"].append(socket)
            super().reuse_socket(socket, req)

    agent = make_agent(Custom, keep_alive=True)
    sockets = []
    for _ in range(3):
        req = ga.ClientRequest(server.url("/"), agent=agent)
        req.on("socket", sockets.append)
        req.end().read()
    assert sockets[0].destroyed and sockets[0].close_reason == "keep_alive_refused"
    assert sockets[1] is sockets[2] and calls["reuse"] == [sockets[1]]
    assert server.connections_total == 2


# 27 --------------------------------------------------------------------------------------------
def test_http_keepalive_client(server, make_agent):
    agent = make_agent(keep_alive=True)
    sockets = set()
    for _ in range(10):
        req = ga.ClientRequest(server.url("/"), agent=agent)
        req.on("socket", sockets.add)
        assert req.end().read() == b"Hello World"
    assert len(sockets) == 1 and server.connections_total == 1


def test_http_keepalive_request(server, make_agent):
    agent = make_agent(keep_alive=True)
    for _ in range(10):
        assert ga.request("GET", server.url("/"), agent=agent).read() == b"Hello World"
    assert agent.counters["sockets_created"] == 1 and server.connections_total == 1


# 28 --------------------------------------------------------------------------------------------
def test_http_keep_alive(make_server, make_agent):
    server = make_server(delayed(0.03))
    agent = make_agent(max_sockets=1)  # no keep_alive: Connection keep-alive, reuse for queued only
    name = name_of(server)
    lengths = []

    def one():
        req = ga.ClientRequest(server.url("/"), agent=agent)
        req.on(
            "response",
            lambda res: lengths.append(
                (
                    len(agent.requests.get(name, ())) if name in agent.requests else None,
                    len(agent.sockets.get(name, ())),
                )
            ),
        )
        return req.end().read()

    greenlets = [gevent.spawn(one) for _ in range(3)]
    gevent.sleep(0.01)
    assert len(agent.requests[name]) == 2 and len(agent.sockets[name]) == 1
    gevent.joinall(greenlets, raise_error=True, timeout=5)
    assert lengths == [(2, 1), (1, 1), (None, 1)]
    assert server.connections_total == 1
    assert agent.free_sockets == {}  # never pooled: keep_alive is False


# 29 --------------------------------------------------------------------------------------------
def test_http_keep_alive_close_on_header(make_server, make_agent):
    server = make_server(lambda req: Response(200, b"ok", close=True))
    agent = make_agent(keep_alive=True, max_sockets=1)
    for _ in range(3):
        assert agent.get(server.url("/")).read() == b"ok"
    assert server.connections_total == 3
    assert agent.total_socket_count == 0


# 30 --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "raw,pooled",
    [
        (b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", False),
        (b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok", True),
        (b"HTTP/1.0 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok", False),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", True),
        (b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok", True),
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok", False),
    ],
)
def test_http_should_keep_alive(make_server, make_agent, raw, pooled):
    server = make_server(lambda req: raw)
    agent = make_agent(keep_alive=True, max_sockets=5)
    req = ga.ClientRequest(server.url("/"), agent=agent)
    assert req.end().read() == b"ok"
    assert req.should_keep_alive is pooled
    assert bool(agent.free_sockets) is pooled


# 31 --------------------------------------------------------------------------------------------
def test_http_client_keep_alive_hint(make_server):
    server = make_server(lambda req: Response(200, b"ok", headers=[("Keep-Alive", "timeout=1")]))
    res = ga.get(server.url("/"))  # the global agent
    assert res.read() == b"ok"
    assert ga.global_agent.free_sockets == {}  # hint <= buffer: not pooled
    assert ga.global_agent.close_reasons.get("keep_alive_refused") == 1


# 32 --------------------------------------------------------------------------------------------
def test_http_client_close_with_default_agent(make_server):
    server = make_server(keep_alive_timeout=0.1, hint=False)
    assert ga.get(server.url("/")).read() == b"Hello World"
    assert len(ga.global_agent.free_sockets) == 1
    # an idle pooled socket does not keep gevent.wait() waiting (Node's unref); the in-process
    # server would, so look at the watchers (test_gevent.py checks gevent.wait() out of process)
    socket = next(iter(ga.global_agent.free_sockets.values()))[0]
    state = socket.status()
    assert state["idle_timer"] == "list" and state["timer_ref"] is False
    assert state["watched"] and state["watcher_ref"] is False
    gevent.sleep(0.3)
    assert ga.global_agent.free_sockets == {}  # the server closed it; it left the pool at once
    assert ga.global_agent.total_socket_count == 0


# 33 --------------------------------------------------------------------------------------------
def test_http_agent_keep_alive_timeout_buffer(make_server, make_agent):
    server = make_server(lambda req: Response(200, b"ok", headers=[("Keep-Alive", "timeout=3")]))
    agent = make_agent(keep_alive=True, keep_alive_timeout_buffer=1.5)
    agent.get(server.url("/")).read()
    socket = agent.free_sockets[name_of(server)][0]
    assert socket.status()["idle_limit"] == 1.5
    default = make_agent(keep_alive=True)
    default.get(server.url("/")).read()
    assert default.free_sockets[name_of(server)][0].status()["idle_limit"] == 2.0


# 34 --------------------------------------------------------------------------------------------
def test_http_upgrade_agent(make_server, make_agent):
    server = make_server(
        lambda req: b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nHEAD"
    )
    agent = make_agent(keep_alive=True)
    req = ga.ClientRequest(server.url("/"), agent=agent, headers={"Connection": "Upgrade", "Upgrade": "websocket"})
    seen = {}
    req.on("socket", lambda s: seen.setdefault("at_socket", agent.total_socket_count))

    def on_upgrade(res, socket, head):
        seen.update(
            at_upgrade=agent.total_socket_count,
            head=head,
            status=res.status_code,
            in_sockets=any(socket in v for v in agent.sockets.values()),
        )
        socket.destroy()

    req.on("upgrade", on_upgrade)
    req.end()
    assert seen == {"at_socket": 1, "at_upgrade": 0, "head": b"HEAD", "status": 101, "in_sockets": False}


# 35 --------------------------------------------------------------------------------------------
def test_http_agent_remove(server, make_agent):
    agent = make_agent(keep_alive=True)
    req = ga.ClientRequest(server.url("/"), agent=agent)
    state = {}

    def on_socket(socket):
        socket.emit("agentRemove")
        state["message"] = socket._http_message
        state["total"] = agent.total_socket_count
        state["socket"] = socket

    req.on("socket", on_socket)
    assert req.end().read() == b"Hello World"
    assert state["message"] is req and state["total"] == 0
    assert agent.free_sockets == {} and agent.sockets == {}
    assert state["socket"].destroyed  # detached sockets are closed when their request ends


# 36 --------------------------------------------------------------------------------------------
def test_http_agent_close(make_agent):
    err = OSError("createSocket failed")

    class Failing(ga.Agent):
        def create_socket(self, req, options, cb):
            cb(err, None)

    agent = make_agent(Failing)
    req = ga.ClientRequest("http://127.0.0.1:1/", agent=agent)
    events = []
    req.on("error", lambda e: events.append(("error", e)))
    req.on("close", lambda: events.append("close"))
    with pytest.raises(OSError) as info:
        req.end()
    assert info.value is err
    assert events == [("error", err), "close"] and req.destroyed


# 37 --------------------------------------------------------------------------------------------
def test_http_agent(server, make_agent):
    results = spawn_all(*[(lambda i=i: ga.get(server.url("/%d" % i)).read()) for i in range(16)])
    assert results == [b"Hello World"] * 16

    class Broken(ga.Agent):
        def create_connection(self, options, callback=None):
            gevent.get_hub().loop.run_callback(callback, OSError("Connection refused"), None)
            return None

    agent = make_agent(Broken, keep_alive=True)
    errors = []

    def one():
        req = ga.ClientRequest(server.url("/"), agent=agent)
        req.on("error", errors.append)
        with pytest.raises(OSError):
            req.end()

    spawn_all(*[one for _ in range(16)])
    assert len(errors) == 16 and agent.total_socket_count == 0


# 39 --------------------------------------------------------------------------------------------
def test_http_agent_null(server):
    req = ga.ClientRequest(server.url("/"), agent=None)
    assert req.agent is ga.global_agent
    assert req.end().read() == b"Hello World"


# 40 --------------------------------------------------------------------------------------------
def test_http_agent_false(server):
    req = ga.ClientRequest({"hostname": "127.0.0.1", "port": server.port, "path": "/", "agent": False})
    assert req.agent is not ga.global_agent and req.agent.keep_alive is False
    assert req.end().read() == b"Hello World"
    assert server.requests[-1].headers["connection"] == "close"
    assert req.agent.total_socket_count == 0
    # port None does not crash: it yields an error or a response
    req = ga.ClientRequest({"host": "127.0.0.1", "port": None, "agent": False, "connect_timeout": 1})
    try:
        req.end().read()
    except OSError as exc:
        assert exc.code


# 41 --------------------------------------------------------------------------------------------
def test_http_agent_no_protocol(server, make_agent):
    agent = make_agent()
    agent.protocol = None
    assert ga.get(server.url("/"), agent=agent).read() == b"Hello World"


# 42 --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [True, "agent", {}, 1, lambda: None, object()])
def test_http_client_reject_unexpected_agent(bad):
    with pytest.raises(TypeError) as info:
        ga.ClientRequest("http://127.0.0.1/", agent=bad)
    assert info.value.code == "ERR_INVALID_ARG_TYPE"
    assert 'The "options.agent" property must be one of Agent-like Object, None, or False' in str(info.value)


def test_a_timeout_around_a_request_an_agent_like_object_never_answers_stays_a_timeout(server):
    # An Agent-like object (Node accepts any object with addRequest) that never hands a socket over:
    # the request waits, as in Node; a gevent.Timeout around it came out as AttributeError
    # ("'Lazy' object has no attribute '_dequeue'"), the cleanup calling the Agent's own method.
    class Lazy:
        protocol = "http:"
        default_port = 80
        keep_alive = True
        max_sockets = 1

        def __init__(self):
            self.requests = []

        def add_request(self, req, options):
            self.requests.append(req)

    lazy = Lazy()
    with pytest.raises(gevent.Timeout):
        with gevent.Timeout(0.2):
            ga.get(server.url("/"), agent=lazy)
    assert len(lazy.requests) == 1 and lazy.requests[0].destroyed


def test_http_client_accepts_expected_agents(server):
    for agent in (False, None, ga.Agent()):
        assert ga.get(server.url("/"), agent=agent).read() == b"Hello World"


# 43 --------------------------------------------------------------------------------------------
def test_http_client_override_global_agent(server):
    agent = ga.Agent(keep_alive=True)
    ga.global_agent = agent
    req = ga.ClientRequest(server.url("/"))
    assert req.agent is agent
    req.end().read()
    assert agent.total_socket_count == 1
    agent.destroy()


# 44 --------------------------------------------------------------------------------------------
def test_http_client_agent(make_server):
    server = make_server(lambda req: Response(200, b"ok", close=True))
    name = name_of(server)
    agent = ga.global_agent
    checks = []

    def one(i):
        req = ga.ClientRequest(server.url("/%d" % i))
        req.on("socket", lambda s: s.on("close", lambda had_error: checks.append(s not in agent.sockets.get(name, ()))))
        return req.end().read()

    spawn_all(*[(lambda i=i: one(i)) for i in range(5)])
    assert checks == [True] * 5
    assert name not in agent.sockets and name not in agent.requests


# 45 --------------------------------------------------------------------------------------------
def test_http_unix_socket_keep_alive(make_server, make_agent):
    path = os.path.join(tempfile.mkdtemp(), "ka.sock")
    server = make_server(unix_path=path)
    agent = make_agent(keep_alive=True)
    for _ in range(10):
        assert ga.get({"socket_path": path, "path": "/"}, agent=agent).read() == b"Hello World"
    assert server.connections_total == 1
    assert list(agent.free_sockets) == ["localhost:80::" + path]


# 46 --------------------------------------------------------------------------------------------
def test_http_agent_uninitialized(server, make_agent):
    agent = make_agent(keep_alive=True)
    name = name_of(server)
    foreign = ga.Socket({"host": "127.0.0.1", "port": server.port})  # never connected
    agent.free_sockets[name] = __import__("collections").deque([foreign])
    req = ga.ClientRequest(server.url("/"), agent=agent)
    got = []
    req.on("socket", got.append)
    assert req.end().read() == b"Hello World"
    assert got == [foreign] and req.reused_socket
    foreign.destroy()


def test_http_agent_uninitialized_with_handle(server, make_agent):
    from gevent import socket as gsocket

    agent = make_agent(keep_alive=True)
    raw = gsocket.create_connection(("127.0.0.1", server.port))
    foreign = ga.Socket({"host": "127.0.0.1", "port": server.port}, sock=raw)
    agent.free_sockets[name_of(server)] = __import__("collections").deque([foreign])
    req = ga.ClientRequest(server.url("/"), agent=agent)
    assert req.end().read() == b"Hello World"
    assert req.socket is foreign and server.connections_total == 1
    foreign.destroy()


# -- net.connect's autoSelectFamily (Node v20 default): a silent address gives way to the next ----
@pytest.fixture
def silent_and_live(make_server, monkeypatch):
    """A host name "dual.test" whose first address (127.0.0.2) swallows SYNs (its listen backlog is
    full, so Linux drops them: an AAAA record without IPv6 routing) and whose second (127.0.0.1,
    same port) is an HTTP server."""
    import geventagent.socket as gasocket

    server = make_server()
    silent = stdsocket.socket()
    silent.bind(("127.0.0.2", server.port))
    silent.listen(0)
    filler = stdsocket.socket()
    filler.setblocking(False)
    filler.connect_ex(("127.0.0.2", server.port))  # fills the backlog: later SYNs are dropped
    real = gasocket.gsocket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        if host == "dual.test":
            return [(stdsocket.AF_INET, stdsocket.SOCK_STREAM, 6, "", (ip, port)) for ip in ("127.0.0.2", "127.0.0.1")]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(gasocket.gsocket, "getaddrinfo", getaddrinfo)
    yield server
    filler.close()
    silent.close()


def test_an_address_that_never_answers_gives_way_to_the_next_after_the_attempt_timeout(silent_and_live, make_agent):
    # Before: the first address took the whole connect_timeout and the request failed (ETIMEDOUT);
    # Node v20 (autoSelectFamily, 250 ms attempts) reaches the second address.
    url = "http://dual.test:%d/" % silent_and_live.port
    agent = make_agent(keep_alive=True, connect_timeout=3)
    started = time.monotonic()
    assert agent.get(url).read() == b"Hello World"  # (the silent address never answers)
    assert 0.2 < time.monotonic() - started < 2  # ~0.25 s on the silent address, then the live one
    fast = make_agent(connect_timeout=3, auto_select_family_attempt_timeout=0.05)
    started = time.monotonic()
    assert fast.get(url).read() == b"Hello World" and time.monotonic() - started < 1
    off = make_agent(connect_timeout=0.5, auto_select_family=False)  # as before: the first address only
    with pytest.raises(ga.errors.RequestTimeout) as info:
        off.get(url)
    assert (info.value.code, info.value.syscall) == ("ETIMEDOUT", "connect")
    assert agent.get(url, auto_select_family_attempt_timeout=None).read() == b"Hello World"  # None: 0.25 s
    # a request's own values are checked before anything is sent (they failed in the connect, as a
    # TypeError wrapped in a NetworkError, or were taken as true)
    for bad, error in (
        ({"connect_timeout": "1"}, ga.errors.InvalidArgTypeError),
        ({"auto_select_family_attempt_timeout": -1}, ga.errors.OutOfRangeError),
        ({"auto_select_family": "no"}, ga.errors.InvalidArgTypeError),
    ):
        with pytest.raises(error):
            agent.get(url, **bad)
    with pytest.raises(ga.errors.InvalidArgTypeError):
        make_agent(auto_select_family=1)
    # the connect limit still bounds every attempt together: 0.1 s, under the 0.25 s attempt timeout
    limited = make_agent(connect_timeout=0.1)
    started = time.monotonic()
    with pytest.raises(ga.errors.RequestTimeout):
        limited.get(url)
    assert time.monotonic() - started < 1
