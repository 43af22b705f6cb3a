"""The pool's decisions as pure functions: facts in, a decision out; no socket, no clock, no I/O.

The agent gathers the facts under its bookkeeping, asks these functions, and does what they say
afterwards (httpcore's ``_assign_requests_to_connections`` is the model). Close reasons are the
strings ``agent.status()["close_reasons"]`` counts.

Ports the decisions of Node's ``_http_agent.js``: the ``'free'`` handler (§4.7), ``keepSocketAlive``
(§5.2, §6.3) and the choice of the next waiting request in ``removeSocket`` (§4.8), with this
project's deliberate differences (hard caps, arrival order across origins, lifetimes).
"""

from __future__ import annotations

import math
import re
from typing import Iterable, Optional, Tuple

__all__ = [
    "parse_keep_alive_hint",
    "keep_alive_limit",
    "pool_verdict",
    "oldest_waiting_origin",
    "older_waiter_elsewhere",
]

_INF = math.inf
_HINT_TIMEOUT = re.compile(rb"(?:^|[\s,;])timeout=(\d+)", re.I)
_HINT_MAX = re.compile(rb"(?:^|[\s,;])max=(\d+)", re.I)


def parse_keep_alive_hint(value: Optional[bytes]) -> Tuple[Optional[int], Optional[int]]:
    """``(timeout, max)`` of a ``Keep-Alive`` header value (``b"timeout=5, max=100"``), each None
    when absent. Read whole, in any order (Node's anchored regex misses ``max=5, timeout=5`` and
    ignores ``max=``); integer seconds, as Node reads them (``timeout=2.5`` is 2)."""
    if not value:
        return None, None
    timeout = _HINT_TIMEOUT.search(value)
    most = _HINT_MAX.search(value)
    return (int(timeout.group(1)) if timeout else None), (int(most.group(1)) if most else None)


def keep_alive_limit(
    requests: int,
    max_requests: float,
    free_socket_timeout: float,
    agent_timeout: float,
    ttl_left: float,
    hint: Optional[bytes],
    buffer: float,
) -> Tuple[Optional[str], float, str]:
    """May a socket that just served a response be kept idle, and for how long?

    Args (positional; seconds):
        requests: requests the socket carried. max_requests: ``max_requests_per_socket`` (inf).
        free_socket_timeout: the agent's idle limit (inf: none). agent_timeout: its ``timeout``
        (0: none). ttl_left: ``socket_ttl`` minus the socket's age (inf: no TTL).
        hint: the response's ``Keep-Alive`` header value. buffer: ``keep_alive_timeout_buffer``.

    Returns:
        ``(refusal, limit, limit_reason)``: ``refusal`` is None to pool, else the close reason
        (``"max_requests"``, ``"ttl"``, ``"keep_alive_refused"``: a hint at or below the buffer);
        ``limit`` the idle seconds (inf: until the server closes it); ``limit_reason`` the close
        reason when it expires (``"idle_timeout"``, or ``"ttl"`` when the TTL comes first).
        The limit is min(free_socket_timeout, agent_timeout, ttl_left, hint timeout - buffer).
    """
    if requests >= max_requests:
        return "max_requests", 0.0, ""
    limit = free_socket_timeout
    if agent_timeout and agent_timeout < limit:
        limit = agent_timeout
    reason = "idle_timeout"
    if ttl_left != _INF:
        if ttl_left <= 0:
            return "ttl", 0.0, ""
        if ttl_left < limit:
            limit, reason = ttl_left, "ttl"
    if hint:
        timeout, most = parse_keep_alive_hint(hint)
        if timeout is not None:
            seconds = timeout - buffer
            if seconds <= 0:
                return "keep_alive_refused", 0.0, ""
            if seconds < limit:
                limit, reason = seconds, "idle_timeout"
        if most is not None and most < 1:
            return "max_requests", 0.0, ""
    return None, limit, reason


def pool_verdict(
    keep_alive: bool,
    total: int,
    max_total: float,
    free_len: int,
    active_len: int,
    max_sockets: float,
    max_free: float,
    older_waiter: bool,
) -> Optional[str]:
    """Pool a socket that no request of its origin waits for, or close it (Node's ``'free'``
    handler, §4.7 step 3)? ``active_len`` includes the socket being freed.

    Returns:
        None to pool; else the close reason: ``"not_keep_alive"`` (the agent does not pool),
        ``"over_cap"`` (the caps were lowered below what is open), ``"free_overflow"``
        (``max_free_sockets`` idle already), ``"rebalance"`` (another origin's request waits
        for a slot under ``max_total_sockets``: closing this frees one for it).
    """
    if not keep_alive:
        return "not_keep_alive"
    if total > max_total or free_len + active_len > max_sockets:
        return "over_cap"
    if free_len >= max_free:
        return "free_overflow"
    if older_waiter:
        return "rebalance"
    return None


def oldest_waiting_origin(heads: Iterable[Tuple[str, int, int]], max_sockets: float) -> Optional[str]:
    """The origin whose first waiting request arrived first, among those with a free slot
    (fewer than ``max_sockets`` sockets): arrival order across origins, where Node looks only at
    the first waiting origin (§4.8). ``heads``: ``(origin, arrival sequence of its first waiting
    request, sockets it has open)``."""
    best = None
    best_seq: float = _INF
    for name, seq, count in heads:
        if seq < best_seq and count < max_sockets:
            best, best_seq = name, seq
    return best


def older_waiter_elsewhere(heads: Iterable[Tuple[str, int, int]], name: str, seq: float, max_sockets: float) -> bool:
    """Does another origin than ``name`` have a request that arrived before ``seq`` and that only
    the total cap keeps waiting? (Then a socket of ``name`` should make room for it.)"""
    for other, head_seq, count in heads:
        if other != name and head_seq < seq and count < max_sockets:
            return True
    return False
