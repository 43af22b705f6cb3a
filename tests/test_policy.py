"""The pool's decisions (``geventagent._policy``) driven with plain facts: no socket, no sleep."""

from __future__ import annotations

import math

import pytest

from geventagent import _policy

INF = math.inf


@pytest.mark.parametrize(
    "value,expected",
    [
        (None, (None, None)),
        (b"", (None, None)),
        (b"timeout=5", (5, None)),
        (b"timeout=5, max=100", (5, 100)),
        (b"max=5, timeout=3", (3, 5)),  # Node's anchored regex misses this one
        (b"MAX=0;Timeout=9", (9, 0)),
        (b"timeout=2.5", (2, None)),  # integer seconds, as Node reads them
        (b"xtimeout=5, remax=2", (None, None)),  # not a parameter of its own
    ],
)
def test_parse_keep_alive_hint(value, expected):
    assert _policy.parse_keep_alive_hint(value) == expected


def limit(requests=1, max_requests=INF, free=4.0, agent_timeout=0, ttl_left=INF, hint=None, buffer=1.0):
    return _policy.keep_alive_limit(requests, max_requests, free, agent_timeout, ttl_left, hint, buffer)


def test_idle_limit_is_the_smallest_of_the_limits():
    assert limit() == (None, 4.0, "idle_timeout")
    assert limit(agent_timeout=2.0) == (None, 2.0, "idle_timeout")
    assert limit(agent_timeout=9.0) == (None, 4.0, "idle_timeout")  # the agent timeout never lengthens it
    assert limit(free=INF) == (None, INF, "idle_timeout")  # kept until the server closes it
    assert limit(ttl_left=1.5) == (None, 1.5, "ttl")  # the TTL comes first: its reason
    assert limit(hint=b"timeout=3") == (None, 2.0, "idle_timeout")  # the hint minus the buffer
    assert limit(hint=b"timeout=3", buffer=2.5) == (None, 0.5, "idle_timeout")
    assert limit(hint=b"timeout=60") == (None, 4.0, "idle_timeout")
    assert limit(ttl_left=1.5, hint=b"timeout=2") == (None, 1.0, "idle_timeout")


def test_lifetimes_that_refuse_pooling():
    assert limit(requests=3, max_requests=3)[0] == "max_requests"
    assert limit(requests=2, max_requests=3)[0] is None
    assert limit(ttl_left=0)[0] == "ttl"
    assert limit(ttl_left=-1)[0] == "ttl"
    assert limit(hint=b"timeout=1")[0] == "keep_alive_refused"  # at or below the buffer: Node never pools
    assert limit(hint=b"timeout=9, max=0")[0] == "max_requests"
    assert limit(hint=b"max=1")[0] is None


def verdict(
    keep_alive=True, total=1, max_total=INF, free_len=0, active_len=1, max_sockets=INF, max_free=256, older=False
):
    return _policy.pool_verdict(keep_alive, total, max_total, free_len, active_len, max_sockets, max_free, older)


def test_pool_verdict_follows_nodes_free_handler():
    assert verdict() is None
    assert verdict(keep_alive=False) == "not_keep_alive"
    assert verdict(total=3, max_total=2) == "over_cap"  # strictly greater, as Node
    assert verdict(total=2, max_total=2) is None
    assert verdict(free_len=1, active_len=2, max_sockets=2) == "over_cap"
    assert verdict(free_len=1, active_len=1, max_sockets=2) is None
    assert verdict(free_len=2, max_free=2) == "free_overflow"
    assert verdict(max_free=0) == "free_overflow"  # max_free_sockets=0 keeps nothing idle
    assert verdict(older=True) == "rebalance"
    # the first failing test decides, in Node's order
    assert verdict(keep_alive=False, total=9, max_total=1, older=True) == "not_keep_alive"
    assert verdict(total=9, max_total=1, free_len=5, max_free=1) == "over_cap"


def test_oldest_waiting_origin_in_arrival_order_among_origins_with_room():
    heads = [("a", 5, 1), ("b", 2, 2), ("c", 3, 0)]
    assert _policy.oldest_waiting_origin(heads, INF) == "b"
    assert _policy.oldest_waiting_origin(heads, 2) == "c"  # b is at its cap
    assert _policy.oldest_waiting_origin(heads, 0) is None
    assert _policy.oldest_waiting_origin([], 5) is None


def test_older_waiter_elsewhere():
    heads = [("a", 5, 1), ("b", 2, 2)]
    assert _policy.older_waiter_elsewhere(heads, "a", 5, INF) is True
    assert _policy.older_waiter_elsewhere(heads, "a", 5, 2) is False  # b has no room anyway
    assert _policy.older_waiter_elsewhere(heads, "b", 2, INF) is False  # a came later
    assert _policy.older_waiter_elsewhere(heads, "a", INF, INF) is True  # no request of a waits
    assert _policy.older_waiter_elsewhere([("a", 1, 0)], "a", INF, INF) is False
