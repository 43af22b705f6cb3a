"""A good gevent citizen: hard caps under concurrency, release on gevent.Timeout and kill(),
unref'd idle sockets, thread and fork safety, and behaviour under monkey-patching (subprocess)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading

import gevent
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import geventagent as ga
from geventagent.errors import ThreadError
from geventagent.testing import Response

from .conftest import spawn_all

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def delayed(seconds):
    def handler(req):
        gevent.sleep(seconds)
        return Response(200, b"ok")

    return handler


class CapWatch:
    """Records the largest per-origin and total socket counts an agent ever had."""

    def __init__(self, agent):
        self.agent = agent
        self.origin = 0
        self.total = 0
        original = agent.create_socket

        def create_socket(req, options, cb):
            def checked(err, socket):
                self.sample()
                cb(err, socket)

            original(req, options, checked)

        agent.create_socket = create_socket

    def sample(self):
        agent = self.agent
        self.total = max(self.total, agent.total_socket_count)
        for name in set(agent.sockets) | set(agent.free_sockets):
            count = len(agent.sockets.get(name, ())) + len(agent.free_sockets.get(name, ()))
            self.origin = max(self.origin, count)


def test_thousand_greenlets_through_ten_sockets(make_server, make_agent):
    server = make_server(delayed(0.001))
    agent = make_agent(keep_alive=True, max_sockets=10)
    watch = CapWatch(agent)
    results = spawn_all(*[(lambda: agent.get(server.url("/")).read()) for _ in range(1000)], timeout=30)
    assert results == [b"ok"] * 1000
    assert server.connections_peak <= 10 and server.connections_total <= 10
    assert watch.origin <= 10 and watch.total <= 10
    assert agent.requests == {} and agent.sockets == {}


@pytest.mark.parametrize("cap", ["max_sockets", "max_total_sockets"])
def test_a_cap_lowered_under_a_saturated_pool_holds_from_then_on(make_server, make_agent, cap):
    server = make_server(delayed(0.002))
    agent = make_agent(keep_alive=True, max_sockets=10)
    held_after = []

    def lower_then_watch():
        while agent.total_socket_count < 10:  # every socket busy, the queue long
            gevent.sleep(0.005)
        setattr(agent, cap, 3)
        gevent.sleep(0.05)  # the sockets over the cap close as they are freed
        for _ in range(20):
            held_after.append(agent.total_socket_count)
            gevent.sleep(0.005)

    calls = [(lambda: agent.get(server.url("/")).read()) for _ in range(600)]
    results = spawn_all(lower_then_watch, *calls, timeout=30)
    assert results[1:] == [b"ok"] * 600  # no request lost to the closing
    assert held_after and max(held_after) <= 3
    assert agent.close_reasons.get("over_cap") == 7
    assert server.connections_total == 10  # handed on within the cap: no new connection


def test_max_total_sockets_is_hard_across_origins(make_server, make_agent):
    servers = [make_server(delayed(0.005)) for _ in range(4)]
    agent = make_agent(keep_alive=True, max_sockets=3, max_total_sockets=4)
    watch = CapWatch(agent)
    calls = [(lambda s=s: agent.get(s.url("/")).read()) for s in servers for _ in range(25)]
    assert spawn_all(*calls, timeout=30) == [b"ok"] * 100
    assert watch.total <= 4 and watch.origin <= 3
    assert agent.total_socket_count <= 4 and agent.requests == {}


def test_waiting_requests_across_origins_served_in_arrival_order(make_server, make_agent):
    a, b, c = make_server(delayed(0.05)), make_server(delayed(0.0)), make_server(delayed(0.0))
    agent = make_agent(keep_alive=True, max_total_sockets=1)
    order = []

    def one(server, tag, delay):
        gevent.sleep(delay)
        agent.get(server.url("/")).read()
        order.append(tag)

    spawn_all(lambda: one(a, "a0", 0), lambda: one(b, "b", 0.01), lambda: one(c, "c", 0.02), lambda: one(a, "a1", 0.03))
    # Node would serve a1 first (same origin as the freed socket); we keep arrival order.
    assert order == ["a0", "b", "c", "a1"]


def test_idle_socket_of_another_origin_is_evicted_at_total_cap(make_server, make_agent):
    a, b = make_server(), make_server()
    agent = make_agent(keep_alive=True, max_total_sockets=1)
    agent.get(a.url("/")).read()
    assert agent.total_socket_count == 1
    agent.get(b.url("/")).read()  # would wait forever in a naive pool
    assert agent.total_socket_count == 1 and agent.close_reasons == {"evicted": 1}


def test_gevent_timeout_mid_request_releases_slot(make_server, make_agent):
    server = make_server(lambda req: (gevent.sleep(1 if req.path == "/slow" else 0), Response(200, b"ok"))[1])
    agent = make_agent(keep_alive=True, max_sockets=1)
    with pytest.raises(gevent.Timeout):
        with gevent.Timeout(0.05):
            agent.get(server.url("/slow"))
    assert agent.total_socket_count == 0 and agent.sockets == {}
    assert agent.get(server.url("/fast")).read() == b"ok"


def test_kill_while_queued_and_while_reading(make_server, make_agent):
    server = make_server(delayed(0.1))
    agent = make_agent(keep_alive=True, max_sockets=1)
    first = gevent.spawn(lambda: agent.get(server.url("/")).read())
    gevent.sleep(0.01)
    queued = gevent.spawn(lambda: agent.get(server.url("/")).read())
    gevent.sleep(0.01)
    assert sum(len(q) for q in agent.requests.values()) == 1
    queued.kill()
    assert agent.requests == {}
    first.kill()  # in the middle of reading: the socket is destroyed, never pooled
    assert agent.total_socket_count == 0 and agent.sockets == {}
    assert agent.get(server.url("/")).read() == b"ok"


def test_kill_after_handoff_before_wakeup_returns_socket(make_server, make_agent):
    """A queued request killed after the agent handed it a socket, before its greenlet woke to
    use it: the socket goes back to the pool (Node's onSocketNT on a destroyed request), no
    second connection is made and no slot is left taken."""
    server = make_server(delayed(0.02))
    agent = make_agent(keep_alive=True, max_sockets=1)
    agent.get(server.url("/")).read()  # one pooled socket
    holder = gevent.spawn(lambda: agent.get(server.url("/")).read())
    gevent.sleep(0.005)
    waiter = gevent.spawn(lambda: agent.get(server.url("/")).read())
    gevent.sleep(0.005)
    assert len(agent.requests) == 1  # the waiter is queued behind the holder

    handed = []
    set_request_socket = agent._set_request_socket

    def kill_then_hand_over(req, socket):
        # The kill is scheduled first, so it lands before the wake-up that on_socket schedules.
        handed.append(socket)
        waiter.kill(block=False)
        set_request_socket(req, socket)

    agent._set_request_socket = kill_then_hand_over
    holder.join()
    waiter.join()
    gevent.sleep(0.01)
    assert len(handed) == 1  # the hand-over (and so the kill) happened
    assert isinstance(waiter.value, gevent.GreenletExit)  # killed, not served
    assert agent.total_socket_count == 1 and agent.sockets == {} and agent.requests == {}
    assert [s for free in agent.free_sockets.values() for s in free] == handed
    assert server.connections_total == 1
    assert agent.get(server.url("/")).read() == b"ok"  # the returned socket serves the next request
    assert server.connections_total == 1


@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    plan=st.lists(st.tuples(st.integers(0, 2), st.integers(0, 3), st.booleans()), min_size=1, max_size=30),
    max_sockets=st.integers(1, 3),
    max_total=st.integers(1, 4),
    keep_alive=st.booleans(),
)
def test_caps_hold_and_pool_drains_property(plan, max_sockets, max_total, keep_alive):
    """Random bursts to 3 origins with random kills: caps never exceeded, every slot released."""
    servers = [ga.testing.HttpTestServer(delayed(0.002)).start() for _ in range(3)]
    agent = ga.Agent(keep_alive=keep_alive, max_sockets=max_sockets, max_total_sockets=max_total)
    watch = CapWatch(agent)
    try:
        greenlets = []
        for origin, delay_ms, kill in plan:
            g = gevent.spawn_later(delay_ms / 1000.0, lambda o=origin: agent.get(servers[o].url("/")).read())
            greenlets.append((g, kill))
        gevent.sleep(0.002)
        for g, kill in greenlets:
            if kill:
                g.kill(block=False)
        gevent.joinall([g for g, _ in greenlets], timeout=20)
        assert all(g.ready() for g, _ in greenlets)
        for g, kill in greenlets:
            if not kill:
                assert g.successful() and g.value == b"ok", g.exception
        assert watch.total <= max_total and watch.origin <= max_sockets
        assert agent.requests == {} and agent.sockets == {}
        assert agent.total_socket_count == sum(len(v) for v in agent.free_sockets.values())
    finally:
        agent.destroy()
        for s in servers:
            s.stop()
    assert agent.total_socket_count == 0


def test_use_from_a_foreign_thread_raises(server, make_agent):
    agent = make_agent(keep_alive=True)
    agent.get(server.url("/")).read()
    errors = []

    def worker():
        try:
            agent.get(server.url("/"))
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join(5)
    assert len(errors) == 1 and isinstance(errors[0], ThreadError)
    assert errors[0].code == "ERR_WRONG_THREAD"


def run_python(code, timeout=60):
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=ROOT,
    )


@pytest.fixture
def external_server():
    proc = subprocess.Popen(
        [sys.executable, "-m", "geventagent.testing", "5"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PYTHONPATH=ROOT),
    )
    try:
        port = int(proc.stdout.readline())
        yield port
    finally:
        proc.stdin.close()
        proc.wait(10)
        proc.stdout.close()


def test_import_is_free_of_asyncio_futures_and_threads():
    out = run_python(
        """
        import sys, threading
        before = threading.active_count()
        import geventagent
        bad = [m for m in ("asyncio", "concurrent.futures", "ssl") if m in sys.modules]
        print(bad, threading.active_count() - before)
        """
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["[]", "0"]


def test_idle_pooled_sockets_do_not_keep_gevent_wait_waiting(external_server):
    out = run_python(
        """
        import time, gevent, geventagent as ga
        res = ga.get("http://127.0.0.1:%d/")
        res.read()
        assert ga.global_agent.total_socket_count == 1
        start = time.monotonic()
        gevent.wait(timeout=3)
        print(round(time.monotonic() - start, 2), ga.global_agent.total_socket_count)
        """
        % external_server
    )
    assert out.returncode == 0, out.stderr
    elapsed, total = out.stdout.split()
    assert float(elapsed) < 0.5 and total == "1"


def test_behaviour_under_patch_all(external_server):
    out = run_python(
        """
        from gevent import monkey
        monkey.patch_all()
        import json, gevent, socket, geventagent as ga
        agent = ga.Agent(keep_alive=True, max_sockets=5)
        url = "http://127.0.0.1:%d/"
        jobs = [gevent.spawn(lambda: agent.get(url, headers={"X-Delay": "0.01"}).read()) for _ in range(50)]
        gevent.joinall(jobs, raise_error=True)
        stats = agent.get(url + "__stats").json()
        print(json.dumps({"ok": all(j.value == b"Hello World" for j in jobs), "stats": stats,
                          "patched": socket.socket.__module__}))
        agent.destroy()
        """
        % external_server
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["ok"] and result["patched"].startswith("gevent")
    assert result["stats"]["connections_peak"] <= 5


def test_fork_child_never_writes_to_inherited_sockets(external_server):
    out = run_python(
        """
        import os, json, gevent, geventagent as ga
        url = "http://127.0.0.1:%d/"
        agent = ga.Agent(keep_alive=True)
        agent.get(url).read()
        inherited = next(iter(agent.free_sockets.values()))[0]
        pid = gevent.fork()
        if pid == 0:
            res = agent.get(url)
            ok = res.read() == b"Hello World" and inherited.destroyed and not res.req.reused_socket
            os._exit(0 if ok else 3)
        _, status = os.waitpid(pid, 0)
        res = agent.get(url)
        res.read()
        stats = agent.get(url + "__stats").json()
        print(json.dumps({"child": os.waitstatus_to_exitcode(status), "parent_reused": res.req.reused_socket,
                          "connections": stats["connections_total"]}))
        """
        % external_server
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result == {"child": 0, "parent_reused": True, "connections": 2}


def dripping(pieces, size, delay, length=None):
    """A handler that sends a head for ``length`` bytes (all the pieces by default) and then the
    body, ``pieces`` writes of ``size`` bytes ``delay`` seconds apart."""

    def handler(req):
        req.conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (length or pieces * size))
        for _ in range(pieces):
            gevent.sleep(delay)
            req.conn.send(b"y" * size)

    return handler


def test_a_second_greenlet_reading_a_body_another_waits_for_loses_nothing(make_server, make_agent):
    # Two greenlets reading one response: the second gets gevent's ConcurrentObjectUseError, as a
    # socket used by two greenlets does; that error also failed the response, so the first reader
    # got "socket hang up" and the body was lost to both.
    from gevent.exceptions import ConcurrentObjectUseError

    server = make_server(dripping(pieces=5, size=10000, delay=0.02))
    agent = make_agent(keep_alive=True, max_sockets=1)
    res = agent.get(server.url("/"))
    first = gevent.spawn(res.read)
    gevent.sleep(0.01)  # the first reader waits on the socket now
    with pytest.raises(ConcurrentObjectUseError):
        res.read(4096)
    assert first.get(timeout=5) == b"y" * 50000
    assert agent.sockets == {} and len(agent.free_sockets) == 1  # pooled, not failed


def test_close_from_another_greenlet_while_one_reads_releases_the_response(make_server, make_agent):
    # close() drains a short remainder, and draining while another greenlet waits on the socket
    # raised gevent's ConcurrentObjectUseError out of close(), the response left open.
    server = make_server(dripping(pieces=10, size=100, delay=0.05, length=100000))
    agent = make_agent(keep_alive=True, max_sockets=1)
    res = agent.get(server.url("/"))
    reader = gevent.spawn(res.read)
    gevent.sleep(0.02)  # the reader waits on the socket now
    res.close()  # returns: the socket is destroyed, the reader woken with an error
    with pytest.raises(ga.GeventAgentError) as info:
        reader.get(timeout=5)
    assert info.value.code == "ECONNRESET"
    assert agent.sockets == {} and agent.total_socket_count == 0
