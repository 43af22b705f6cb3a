"""Idle limits of free sockets in per-hub timer lists (Node's timer lists: one list and one timer
per duration): order, reuse before the deadline, ref(), the fallback to a timer per socket, and
a failing listener that must not stop the others. Also: a free socket's read watcher."""

from __future__ import annotations

import time

import gevent

import geventagent as ga
import geventagent.socket as gasocket
from geventagent.testing import Response


def idle_socket(seconds: float, fired: list, ref: bool = False) -> ga.Socket:
    sock = ga.Socket({"host": "127.0.0.1", "port": 9})
    if not ref:
        sock.unref()
    sock.on("timeout", lambda: fired.append((sock, time.monotonic())))
    sock._start_idle_timer(seconds)
    return sock


def test_sockets_with_one_limit_share_a_timer_and_expire_in_order():
    fired: list = []
    start = time.monotonic()
    first = idle_socket(0.2, fired)
    gevent.sleep(0.1)
    second = idle_socket(0.2, fired)
    assert first._idle_list is second._idle_list and first._timer is None and second._timer is None
    gevent.sleep(0.15)  # t = 0.25: only the first is due
    assert [s for s, _ in fired] == [first]
    gevent.sleep(0.15)  # t = 0.4
    assert [s for s, _ in fired] == [first, second]
    assert 0.19 <= fired[0][1] - start <= 0.3
    assert 0.29 <= fired[1][1] - start <= 0.4


def test_a_socket_taken_before_its_deadline_does_not_expire_and_restarts_in_full():
    fired: list = []
    sock = idle_socket(0.15, fired)
    gevent.sleep(0.1)
    sock._stop_idle_timer()  # reused
    assert sock._idle_list is None
    gevent.sleep(0.1)
    assert fired == []
    started = time.monotonic()
    sock._start_idle_timer(0.15)  # pooled again: the full limit from now
    gevent.sleep(0.1)
    assert fired == []
    gevent.sleep(0.1)
    assert len(fired) == 1 and fired[0][1] - started >= 0.14


def test_ref_moves_a_listed_socket_to_a_timer_of_its_own():
    fired: list = []
    sock = idle_socket(0.1, fired)
    assert sock._idle_list is not None
    sock.ref()
    assert sock._idle_list is None and sock._timer is not None and sock._timer.ref is True
    gevent.sleep(0.15)
    assert [s for s, _ in fired] == [sock]


def test_limits_beyond_the_list_cap_get_a_timer_each_and_still_expire():
    fired: list = []
    socks = [idle_socket(0.05 + i * 0.003, fired) for i in range(gasocket._HubState.MAX_LISTS + 4)]
    own = [s for s in socks if s._timer is not None]
    assert own and all(s._idle_list is None for s in own)
    gevent.sleep(0.25)
    assert sorted(id(s) for s, _ in fired) == sorted(id(s) for s in socks)


def test_a_failing_timeout_listener_does_not_stop_the_other_sockets(monkeypatch):
    errors: list = []
    monkeypatch.setattr(gevent.get_hub(), "handle_error", lambda *args: errors.append(args))
    fired: list = []
    bad = idle_socket(0.05, fired)
    bad.on("timeout", lambda: 1 / 0)
    good = idle_socket(0.05, fired)
    gevent.sleep(0.12)
    assert [s for s, _ in fired] == [bad, good]
    assert len(errors) == 1 and errors[0][1] is ZeroDivisionError


def test_destroy_takes_a_free_socket_off_its_lists(make_server, make_agent):
    server = make_server(lambda req: Response(200, b"ok"))
    agent = make_agent(keep_alive=True, free_socket_timeout=0.2)
    ga.get(server.url("/"), agent=agent).read()
    sock = next(iter(agent.free_sockets.values()))[0]
    idle = sock._idle_list
    assert sock in idle.entries and sock._watcher.active
    sock.destroy()
    assert sock not in idle.entries and sock._watcher is None


def test_pool_idle_timeout_closes_many_free_sockets_with_one_timer(make_server, make_agent):
    server = make_server(lambda req: (gevent.sleep(0.05), Response(200, b"ok"))[1])
    agent = make_agent(keep_alive=True, max_sockets=50, max_free_sockets=50, free_socket_timeout=0.3)
    gevent.joinall([gevent.spawn(lambda: ga.get(server.url("/"), agent=agent).read()) for _ in range(30)])
    free = [s for group in agent.free_sockets.values() for s in group]
    assert len(free) == 30
    assert len({id(s._idle_list) for s in free}) == 1 and all(s._timer is None for s in free)
    gevent.sleep(0.5)
    assert agent.free_sockets == {} and agent.close_reasons.get("idle_timeout") == 30
