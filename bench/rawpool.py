"""The minimal gevent pool, the floor ``clients.py`` (throughput) and ``latency.py`` (open loop)
both measure against: a semaphore and a list of free sockets per origin, a fixed request written,
a fixed-size response read; no HTTP parsing, no checks, no timers."""

from __future__ import annotations

from typing import Callable, Dict, List, Tuple


def probe_response(port: int, request: bytes) -> Tuple[int, int]:
    """``(head length, body length)`` of the server's answer to ``request`` on 127.0.0.1:``port``
    (the floors read fixed-size responses)."""
    from gevent import socket

    probe = socket.create_connection(("127.0.0.1", port))
    probe.sendall(request)
    first = b""
    while b"\r\n\r\n" not in first:
        first += probe.recv(65536)
    probe.close()
    head_end = first.index(b"\r\n\r\n") + 4
    lines = first[:head_end].split(b"\r\n")
    length = int([line.split(b":")[1] for line in lines if line.lower().startswith(b"content-length")][0])
    return head_end, length


def make_pool(conns: int, request: bytes, expected: int) -> Callable[[int], None]:
    """``fetch(port)``: ``request`` through at most ``conns`` kept-alive connections to
    127.0.0.1:``port``, reading ``expected`` bytes back."""
    from gevent import socket
    from gevent.lock import Semaphore

    pools: Dict[int, Tuple[Semaphore, List]] = {}

    def fetch(port: int) -> None:
        pool = pools.get(port)
        if pool is None:
            pool = pools[port] = (Semaphore(conns), [])
        slots, free = pool
        slots.acquire()
        try:
            sock = free.pop() if free else socket.create_connection(("127.0.0.1", port))
            sock.sendall(request)
            data = sock.recv(65536)
            while len(data) < expected:
                data += sock.recv(65536)
            free.append(sock)
        finally:
            slots.release()

    return fetch
