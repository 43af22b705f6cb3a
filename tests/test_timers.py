"""Idle limits of free sockets in per-hub timer lists (Node's timer lists: one list and one timer
per duration): order, reuse before the deadline, ref(), the fallback to a timer per socket, and
a failing listener that must not stop the others. Also: a free socket's read watcher, and the
one timer an active socket's waits for I/O share."""

from __future__ import annotations

import time

import gevent
import pytest

import geventagent as ga
from geventagent import _hub
from geventagent.errors import RequestTimeout
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
    # one list (and its one timer) for both; neither has a timer of its own
    assert first.status()["idle_timer"] == second.status()["idle_timer"] == "list"
    assert _hub.status()["timer_lists"].get(0.2) == 2
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
    assert sock.status()["idle_timer"] is None
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
    assert sock.status()["idle_timer"] == "list"
    sock.ref()
    state = sock.status()
    assert state["idle_timer"] == "own" and state["timer_ref"] is True
    gevent.sleep(0.15)
    assert [s for s, _ in fired] == [sock]


def test_limits_beyond_the_list_cap_get_a_timer_each_and_still_expire():
    fired: list = []
    socks = [idle_socket(0.05 + i * 0.003, fired) for i in range(_hub.HubState.MAX_LISTS + 4)]
    kinds = [s.status()["idle_timer"] for s in socks]
    assert "own" in kinds and set(kinds) == {"own", "list"}  # a socket is on a list or has its own timer
    assert len(_hub.status()["timer_lists"]) <= _hub.HubState.MAX_LISTS
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
    state = sock.status()
    assert state["idle_timer"] == "list" and state["watched"]
    listed = _hub.status()["timer_lists"].get(0.2, 0)
    sock.destroy()
    state = sock.status()
    assert state["idle_timer"] is None and not state["watched"] and state["watcher_ref"] is None
    assert _hub.status()["timer_lists"].get(0.2, 0) == listed - 1


def test_pool_idle_timeout_closes_many_free_sockets_with_one_timer(make_server, make_agent):
    server = make_server(lambda req: (gevent.sleep(0.05), Response(200, b"ok"))[1])
    agent = make_agent(keep_alive=True, max_sockets=50, max_free_sockets=50, free_socket_timeout=0.3)
    gevent.joinall([gevent.spawn(lambda: ga.get(server.url("/"), agent=agent).read()) for _ in range(30)])
    free = [s for group in agent.free_sockets.values() for s in group]
    assert len(free) == 30
    assert all(s.status()["idle_timer"] == "list" for s in free)  # none has a timer of its own
    assert _hub.status()["timer_lists"] == {0.3: 30}  # one list, one timer
    gevent.sleep(0.5)
    assert agent.free_sockets == {} and agent.close_reasons.get("idle_timeout") == 30


def test_a_waits_timeout_is_one_timer_per_socket_and_still_times_out(make_server, make_agent, monkeypatch):
    """A request's wait for its response under a timeout uses the socket's own timer, made once
    and restarted per wait, not a gevent ``Timeout`` per wait (a new libev timer each: ~4 us of a
    small request); each wait gets the whole limit (waits that add up to more than it are fine);
    it still raises ETIMEDOUT after the socket's inactivity limit, emits ``'timeout'``, and the
    timer goes with the destroyed socket."""

    def handler(req):
        if req.path == "/slow":
            gevent.sleep(1.0)
        elif req.path == "/delay":
            gevent.sleep(0.1)
        return Response(200, b"ok")

    server = make_server(handler)
    agent = make_agent(keep_alive=True, max_sockets=1)
    made = []
    real = gevent.Timeout._start_new_or_dummy  # (a staticmethod: gevent's wait calls it per wait)

    def counting(*args, **kwargs):
        made.append(args[0] if args else kwargs.get("seconds"))
        return real(*args, **kwargs)

    monkeypatch.setattr(gevent.Timeout, "_start_new_or_dummy", staticmethod(counting))
    timers = set()
    for i in range(4):
        if i == 1:
            del made[:]  # (the first request's connect waits under gevent's Timeout)
        res = agent.get(server.url("/"), timeout=0.3)
        assert res.read() == b"ok"
        [sock] = agent.free_sockets[next(iter(agent.free_sockets))]
        timers.add(id(sock._io_timer))
    assert 0.3 not in made  # (the in-process server's own reads may make theirs)
    assert len(timers) == 1 and sock._io_timer is not None
    assert not sock._io_timer.active  # stopped between waits: nothing holds the hub
    # every wait gets the full limit: 0.6 s of waiting in all on this socket, 0.1 s at a time
    for _ in range(6):
        assert agent.get(server.url("/delay"), timeout=0.3).read() == b"ok"
    assert agent.counters["sockets_created"] == 1
    events = []
    req = ga.ClientRequest(server.url("/slow"), agent=agent, timeout=0.3)
    req.on("timeout", lambda: events.append("timeout"))
    start = time.monotonic()
    with pytest.raises(RequestTimeout) as info:
        req.end()
    assert info.value.code == "ETIMEDOUT" and 0.25 <= time.monotonic() - start < 0.9
    assert events == ["timeout"] and sock.destroyed and sock._io_timer is None
    assert agent.get(server.url("/"), timeout=0.3).read() == b"ok"
