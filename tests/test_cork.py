"""Corked request writes (``Socket.send_corked``): a whole small request is held until the hub's
current round ends and sent back to back with the other greenlets' writes. These tests pin what
must not change: order, errors, partial writes, kill and destroy before the flush, fork."""

from __future__ import annotations

import socket as stdsocket
import struct
import time
import types

import gevent
import pytest
from gevent import socket as gsocket
from gevent.server import StreamServer

import geventagent as ga
import geventagent.socket as gasocket
from geventagent import _hub
from geventagent.errors import ConnectionReset, RequestTimeout
from geventagent.testing import Response

from .conftest import spawn_all


class RawServer:
    """A TCP server on 127.0.0.1:0 that records what each connection sent (no HTTP). ``rst``:
    reset each connection as soon as it is accepted; ``answer``: bytes sent back, once,
    ``answer_delay`` seconds after ``answer_at`` bytes have arrived."""

    def __init__(
        self,
        rcvbuf: int = 0,
        read_delay: float = 0.0,
        rst: bool = False,
        answer: bytes = b"",
        answer_at: int = 0,
        answer_delay: float = 0.0,
    ) -> None:
        self.received: list = []
        self.read_delay = read_delay
        self.rst = rst
        self.answer, self.answer_at, self.answer_delay = answer, answer_at, answer_delay
        listener = gsocket.socket()
        listener.setsockopt(stdsocket.SOL_SOCKET, stdsocket.SO_REUSEADDR, 1)
        if rcvbuf:
            listener.setsockopt(stdsocket.SOL_SOCKET, stdsocket.SO_RCVBUF, rcvbuf)
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        self.server = StreamServer(listener, self.handle)
        self.server.start()
        self.port = self.server.server_port

    def handle(self, conn, address) -> None:
        got = bytearray()
        self.received.append(got)
        if self.rst:
            conn.setsockopt(stdsocket.SOL_SOCKET, stdsocket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()
            return
        if self.read_delay:
            gevent.sleep(self.read_delay)
        answered = False
        while True:
            data = conn.recv(65536)
            if not data:
                return
            got += data
            if self.answer and not answered and len(got) >= self.answer_at:
                answered = True
                gevent.sleep(self.answer_delay)
                conn.sendall(self.answer)

    def stop(self) -> None:
        self.server.stop()


@pytest.fixture
def raw_server():
    servers = []

    def make(**kw):
        srv = RawServer(**kw)
        servers.append(srv)
        return srv

    yield make
    for srv in servers:
        srv.stop()


def connected(port: int) -> ga.Socket:
    sock = ga.Socket({"host": "127.0.0.1", "port": port})
    sock.connect()
    return sock


def wait_for(predicate, seconds: float = 2.0) -> None:
    with gevent.Timeout(seconds):
        while not predicate():
            gevent.sleep(0.005)


def test_corked_write_waits_for_the_round_then_goes_out(raw_server):
    srv = raw_server()
    sock = connected(srv.port)
    sock.send_corked(b"hello")
    assert sock.status()["corked"] == 5 and _hub.status()["corked"] == 1  # held: nothing written until the hub runs
    assert sock.bytes_written == 0
    gevent.sleep(0)
    wait_for(lambda: srv.received and bytes(srv.received[0]) == b"hello")
    assert sock.bytes_written == 5 and sock.status()["corked"] == 0
    sock.destroy()


def test_a_send_after_a_corked_write_keeps_the_order(raw_server):
    srv = raw_server()
    sock = connected(srv.port)
    sock.send_corked(b"first,")
    sock.send(b"second")
    wait_for(lambda: srv.received and bytes(srv.received[0]) == b"first,second")
    assert sock.bytes_written == 12
    sock.destroy()


def test_writes_of_one_round_share_one_flush(raw_server, monkeypatch):
    srv = raw_server()
    socks = [connected(srv.port) for _ in range(8)]
    flushes = []
    original = _hub.Cork.flush

    def counting(self):
        flushes.append(len(self.pending))
        original(self)

    monkeypatch.setattr(_hub.Cork, "flush", counting)
    for i, sock in enumerate(socks):
        sock.send_corked(b"w%d" % i)
    gevent.sleep(0)
    wait_for(lambda: len(srv.received) == 8 and all(len(r) == 2 for r in srv.received))
    assert flushes == [8]
    for sock in socks:
        sock.destroy()


def test_destroyed_before_the_flush_writes_nothing(raw_server):
    srv = raw_server()
    sock = connected(srv.port)
    sock.send_corked(b"never")
    sock.destroy()
    gevent.sleep(0.05)
    wait_for(lambda: srv.received)
    assert bytes(srv.received[0]) == b""
    with pytest.raises(ConnectionReset):
        sock.recv()


def test_inherited_socket_is_never_written_by_the_flush(raw_server):
    srv = raw_server()
    sock = connected(srv.port)
    sock.generation -= 1  # as if inherited from the parent of a fork
    sock.send_corked(b"never")
    gevent.sleep(0.05)
    assert bytes(srv.received[0]) == b""
    with pytest.raises(ConnectionReset):
        sock.recv()
    sock.destroy()


def test_partial_corked_write_is_finished_by_the_greenlet(raw_server):
    # A small receive buffer and a server that starts reading late: the flush writes part of
    # the 16 KiB, the greenlet writes the rest (waiting, as a blocking send does).
    srv = raw_server(rcvbuf=2048, read_delay=0.2)
    sock = connected(srv.port)
    sock._sock.setsockopt(stdsocket.SOL_SOCKET, stdsocket.SO_SNDBUF, 2048)
    payload = bytes(range(256)) * 64  # 16384 bytes = CORK_MAX
    sock.send_corked(payload)
    gevent.sleep(0)
    state = sock.status()
    assert state["corked"] == 0
    assert state["write_pending"] == "rest", "the kernel took it all: the test cannot see a partial write"
    sock.send(b"")  # finishes the corked write first
    wait_for(lambda: srv.received and len(srv.received[0]) == len(payload), 5)
    assert bytes(srv.received[0]) == payload
    assert sock.bytes_written == len(payload)
    sock.destroy()


def test_partial_corked_write_wakes_the_greenlet_waiting_for_its_response(raw_server):
    srv = raw_server(rcvbuf=2048, read_delay=0.2)
    sock = connected(srv.port)
    sock._sock.setsockopt(stdsocket.SOL_SOCKET, stdsocket.SO_SNDBUF, 2048)
    sock.set_timeout(1.0)
    payload = bytes(range(256)) * 64
    sock.send_corked(payload)
    with pytest.raises(RequestTimeout):
        sock.recv()  # woken to write the rest, then waits for a response that never comes
    assert srv.received and bytes(srv.received[0]) == payload
    sock.destroy()


@pytest.mark.parametrize("head_size", [1, 5000], ids=["partial-in-body", "partial-in-head"])
def test_a_body_over_cork_max_follows_its_head_in_one_write_and_partial_writes_finish_in_order(raw_server, head_size):
    # send_corked(head, body) over CORK_MAX is one sendmsg of both (the body is not copied onto
    # the head); a small buffer and a late reader make the kernel take part of it, in the head or
    # in the body, and the greenlet writes the rest, in order.
    srv = raw_server(rcvbuf=2048, read_delay=0.2)
    sock = connected(srv.port)
    sock._sock.setsockopt(stdsocket.SOL_SOCKET, stdsocket.SO_SNDBUF, 2048)
    head = bytes(range(97, 123)) * (head_size // 26 + 1)
    body = bytes(range(256)) * 400  # 102400 bytes
    started = time.monotonic()
    sock.send_corked(head, body)
    assert time.monotonic() - started > 0.1, "the kernel took it all: the test cannot see a partial write"
    assert sock.status()["corked"] == 0 and sock.bytes_written == len(head) + len(body)  # written, not held
    wait_for(lambda: srv.received and len(srv.received[0]) == len(head) + len(body), 5)
    assert bytes(srv.received[0]) == head + body
    sock.destroy()


def test_a_small_head_and_body_are_corked_as_one_write(raw_server):
    srv = raw_server()
    sock = connected(srv.port)
    head = b"POST / HTTP/1.1\r\nContent-Length: 4\r\n\r\n"
    sock.send_corked(head, b"body")
    assert sock.status()["corked"] == len(head) + 4 and sock.bytes_written == 0
    gevent.sleep(0)
    wait_for(lambda: srv.received and bytes(srv.received[0]) == head + b"body")
    assert sock.bytes_written == len(head) + 4
    sock.destroy()


@pytest.mark.parametrize("waiting", [False, True], ids=["error-left-for-greenlet", "greenlet-woken"])
def test_write_error_in_the_flush_is_raised_in_the_greenlet(raw_server, waiting):
    srv = raw_server(rst=True)
    sock = connected(srv.port)
    wait_for(lambda: srv.received)
    gevent.sleep(0.05)  # the RST has arrived
    sock.send_corked(b"GET / HTTP/1.1\r\n\r\n")
    if not waiting:
        gevent.sleep(0)  # the flush fails in the hub; the error waits for the greenlet
        state = sock.status()
        assert state["corked"] == 0 and state["write_pending"] == "error"
    with pytest.raises(ConnectionReset) as info:
        sock.recv()  # waiting: the greenlet waits while the flush fails
    assert info.value.code in ("ECONNRESET", "EPIPE")
    sock.destroy()


def test_kill_while_waiting_for_a_corked_response_releases_the_slot(make_server, make_agent):
    server = make_server(lambda req: (gevent.sleep(1), Response(200, b"late"))[1])
    agent = make_agent(keep_alive=True, max_sockets=1)
    glet = gevent.spawn(ga.get, server.url("/slow"), agent=agent)
    gevent.sleep(0.1)
    glet.kill()
    assert agent.total_socket_count == 0
    res = ga.get(server.url("/again"), agent=agent, timeout=3)  # the slot is free again
    assert res.status_code == 200


def test_many_greenlets_corked_through_few_sockets_get_their_own_responses(make_server, make_agent):
    server = make_server(lambda req: Response(200, req.path.encode()))
    agent = make_agent(keep_alive=True, max_sockets=5)

    def one(i):
        return lambda: ga.get(server.url("/r%d" % i), agent=agent).read()

    bodies = spawn_all(*[one(i) for i in range(200)])
    assert bodies == [b"/r%d" % i for i in range(200)]
    assert server.connections_total <= 5


@pytest.mark.parametrize("case", ["answer-later", "answer-before-the-read", "no-answer", "destroyed-while-waiting"])
def test_the_read_after_a_write_sent_whole_waits_for_readability_first(raw_server, monkeypatch, case):
    # A write over CORK_MAX that the kernel takes whole: the next read waits for the answer
    # instead of trying a read that fails with EAGAIN. It still returns what is already there,
    # keeps the socket's timeout (and its 'timeout' event) and ends when the socket is destroyed.
    payload = bytes(range(256)) * 80  # 20480 bytes
    srv = raw_server(answer=b"answer", answer_at=len(payload), answer_delay=0.05 if case == "answer-later" else 0)
    if case in ("no-answer", "destroyed-while-waiting"):
        srv.answer = b""
    sock = connected(srv.port)
    sock.set_timeout(0.2 if case == "no-answer" else 5)
    timeouts = []
    sock.on("timeout", lambda: timeouts.append(1))
    tried = []  # the reads of the C socket that geventagent's socket makes itself
    c_socket = gasocket._socket.socket

    class CountingCSocket:
        send, sendmsg = c_socket.send, c_socket.sendmsg

        @staticmethod
        def recv(raw, size, *flags):
            tried.append(size)
            return c_socket.recv(raw, size, *flags)

    # geventagent.socket's view of the _socket module only (the server's sockets stay real)
    monkeypatch.setattr(gasocket, "_socket", types.SimpleNamespace(socket=CountingCSocket))
    sock.send_corked(payload)
    assert sock.status()["corked"] == 0 and sock.bytes_written == len(payload)  # sent at once, whole
    if case == "answer-before-the-read":
        wait_for(lambda: srv.received and len(srv.received[0]) == len(payload))
        gevent.sleep(0.05)
    started = time.monotonic()
    if case == "no-answer":
        with pytest.raises(RequestTimeout):
            sock.recv()
        assert timeouts == [1] and time.monotonic() - started >= 0.15
        assert tried == []  # it waited; it never read
    elif case == "destroyed-while-waiting":
        gevent.spawn_later(0.05, sock.destroy)
        with pytest.raises(ConnectionReset):
            sock.recv()
        assert tried == []
    else:
        assert sock.recv() == b"answer"
        assert len(tried) == 1  # one read, after the wait: no attempt that failed with EAGAIN
    sock.destroy()


def test_cork_max_zero_writes_every_request_at_once(raw_server, monkeypatch):
    monkeypatch.setattr(gasocket, "CORK_MAX", 0)
    srv = raw_server()
    sock = connected(srv.port)
    sock.send_corked(b"now")
    assert sock.status()["corked"] == 0 and sock.bytes_written == 3  # written before any yield
    wait_for(lambda: srv.received and bytes(srv.received[0]) == b"now")
    sock.destroy()


# -- a reused socket found stale right before the write ------------------------------------------
@pytest.mark.parametrize("size", [100, 20000], ids=["corked", "written-at-once"])
def test_post_on_a_socket_the_server_just_closed_goes_out_once_on_a_new_connection(make_server, make_agent, size):
    # The server closes the idle connection and the POST is made before the hub has polled, so
    # neither the idle watcher nor anything else has seen the FIN: only the check at the write
    # (one poll for the round's corked writes, a peek for a write sent at once) can.
    bodies = []
    server = make_server(lambda req: (bodies.append(req.body), Response(200, b"%d" % len(req.body)))[1])
    agent = make_agent(keep_alive=True, max_sockets=1, retry=False)
    assert ga.get(server.url("/first"), agent=agent).read() == b"0"
    [conn] = [c for c in server.connections if not c.closed]
    conn.sock.shutdown(stdsocket.SHUT_WR)  # FIN now (close() would defer it to the hub); no yield before the POST
    res = ga.request("POST", server.url("/post"), agent=agent, body=b"p" * size)
    assert res.read() == b"%d" % size
    assert bodies == [b"", b"p" * size]  # the POST arrived once
    assert agent.counters["redispatched"] == 1 and agent.counters["retries"] == 0
    assert agent.close_reasons.get("server_close") == 1
    assert server.connections_total == 2


@pytest.mark.skipif("libev" not in type(gevent.get_hub().loop).__module__, reason="libev's pending state")
def test_healthy_reused_sockets_are_written_after_one_poll_without_a_peek(make_server, make_agent, monkeypatch):
    server = make_server(lambda req: Response(200, b"ok"))
    agent = make_agent(keep_alive=True, max_sockets=8)
    gevent.joinall([gevent.spawn(lambda: ga.get(server.url("/"), agent=agent).read()) for _ in range(8)])
    assert sum(len(g) for g in agent.free_sockets.values()) == 8
    peeks, rounds = [], []
    original_peek, original_after_poll = ga.Socket._peek, _hub.Cork._after_poll
    monkeypatch.setattr(ga.Socket, "_peek", lambda self: peeks.append(self) or original_peek(self))
    monkeypatch.setattr(
        _hub.Cork, "_after_poll", lambda self: rounds.append(len(self.after_poll)) or original_after_poll(self)
    )
    results = spawn_all(*[lambda: ga.get(server.url("/"), agent=agent).read() for _ in range(8)])
    assert results == [b"ok"] * 8
    # eight reused sockets: their writes went out together after the hub's poll, and their idle
    # watchers (still running) showed nothing to read, so no socket was peeked
    assert rounds == [8] and peeks == []
    assert agent.counters["reused"] >= 8 and server.connections_total == 8


def test_a_fin_seen_by_the_idle_watcher_after_reuse_makes_the_write_go_out_on_a_new_connection(make_server, make_agent):
    # The request has the socket but has not written when the hub polls and the idle watcher
    # reports the FIN: its write becomes StaleSocket and the POST goes out once, elsewhere.
    bodies = []
    server = make_server(lambda req: (bodies.append(req.body), Response(200, b"%d" % len(req.body)))[1])
    agent = make_agent(keep_alive=True, max_sockets=1, retry=False)
    assert ga.get(server.url("/first"), agent=agent).read() == b"0"
    [conn] = [c for c in server.connections if not c.closed]
    conn.sock.shutdown(stdsocket.SHUT_WR)
    req = ga.ClientRequest(server.url("/post"), method="POST", agent=agent)
    seen = []
    req.on("socket", lambda sock: (seen.append(sock), gevent.sleep(0.05)))  # the hub polls meanwhile
    res = req.end(b"body")
    assert res.read() == b"4"
    assert seen[0].destroyed and seen[0].close_reason == "server_close"
    assert bodies == [b"", b"body"]
    assert agent.counters["redispatched"] == 1 and agent.counters["retries"] == 0


def test_a_destroyed_socket_in_the_round_does_not_hold_back_the_others(raw_server):
    srv = raw_server()
    gone, kept = connected(srv.port), connected(srv.port)
    wait_for(lambda: len(srv.received) == 2)
    for sock in (gone, kept):
        sock._check_stale = gasocket.STALE_AFTER_POLL  # as if both were taken from the pool
        sock.send_corked(b"req")
    gone.destroy()
    gevent.sleep(0)
    wait_for(lambda: sum(len(r) for r in srv.received) == 3)
    assert sorted(bytes(r) for r in srv.received) == [b"", b"req"]
    assert kept.bytes_written == 3 and gone.bytes_written == 0
    with pytest.raises(ConnectionReset):
        gone.recv()
    kept.destroy()
