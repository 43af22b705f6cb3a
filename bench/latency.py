"""Open-loop latency (``make bench`` runs it): tiny keep-alive GETs scheduled at a fixed rate,
each in a greenlet of its own (Node: a callback of its own), through 10 connections; the latency
of a request runs from its *scheduled* start, so a client that falls behind pays for the queue it
builds (no coordinated omission). Prints one JSON line per run: p50 / p99 / p99.9 in ms.

    python bench/latency.py CLIENT PORT RATE SECONDS [--hog | --busy-hog]

CLIENT: ``geventagent``, ``geventhttpclient``, ``noop`` (the scheduler alone: how late a
scheduled start is on this machine, the floor of every figure), ``rawpool`` (the minimal gevent
pool: the floor with the network and nginx in it) or ``node`` (bench/latency.js).
The scheduler sleeps to about 1 ms before each start and then waits a hub iteration at a time
(``gevent.idle()``): epoll's timeouts are whole milliseconds, and a timer alone added up to 1 ms
to every figure. (Yielding with ``gevent.sleep(0)`` instead keeps the hub's callbacks busy, so its
poll comes late, and geventagent's writes on reused sockets wait for that poll: 39 ms at p50.)
``--hog``: a greenlet meanwhile computes 1 ms at a time without yielding and then waits 1 ms
(``gevent.sleep(0.001)``), about half the core, as a handler that alternates work and I/O does:
every greenlet that becomes ready during a slice, and every corked write (the cork's worst case),
waits for the slice to end. ``--busy-hog``: the greenlet never waits, it yields with
``gevent.sleep(0)`` between slices; gevent then runs callbacks for up to 50 of them (its switch
interval is checked every 50 callbacks) before it polls for I/O again, about 48 ms without I/O for
every client, so every client's queue grows for the whole run.
"""

from __future__ import annotations

import json
import sys
import time

import gevent
from gevent.pool import Group

CONNS = 10


def percentiles(values: list) -> dict:
    values = sorted(values)
    if not values:
        return {}

    def at(q: float) -> float:
        return values[min(len(values) - 1, int(q * len(values)))] * 1000

    return {"p50": at(0.50), "p99": at(0.99), "p99.9": at(0.999), "max": values[-1] * 1000, "n": len(values)}


def make(client: str, port: int):
    url = "http://127.0.0.1:%d/tiny" % port
    if client == "geventagent":
        import geventagent as ga

        agent = ga.Agent(keep_alive=True, max_sockets=CONNS, max_free_sockets=CONNS)
        return lambda: agent.get(url).read()
    if client == "geventhttpclient":
        from geventhttpclient import HTTPClient

        http = HTTPClient("127.0.0.1", port, concurrency=CONNS, connection_timeout=30, network_timeout=30)

        def fetch():
            res = http.get("/tiny")
            res.read()
            res.release()

        return fetch
    if client == "rawpool":
        return _rawpool(port)
    if client == "noop":
        return lambda: None
    raise SystemExit("unknown client %s" % client)


def _rawpool(port: int):
    """The floor with the network and the server in it: the minimal gevent pool
    (``rawpool.py``, as ``clients.py`` runs it) in this open-loop shape."""
    import rawpool

    request = b"GET /tiny HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    head_len, body_len = rawpool.probe_response(port, request)
    pool = rawpool.make_pool(CONNS, request, head_len + body_len)
    return lambda: pool(port)


def main() -> None:
    client, port, rate, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
    busy = "--busy-hog" in sys.argv
    hog = busy or "--hog" in sys.argv
    fetch = make(client, port)
    # Warm-up before the clock: all the connections open (CONNS at once), and the hot paths run
    # (2,000 requests, as latency.js warms Node's JIT).
    for _ in range(200):
        gevent.joinall([gevent.spawn(fetch) for _ in range(CONNS)], raise_error=True)
    latencies: list = []
    errors = [0]
    group = Group()

    def one(scheduled: float) -> None:
        try:
            fetch()
            latencies.append(time.perf_counter() - scheduled)
        except Exception:  # noqa: BLE001
            errors[0] += 1

    stop = [False]

    def hogger() -> None:
        while not stop[0]:
            end = time.perf_counter() + 0.001
            while time.perf_counter() < end:  # 1 ms of CPU without yielding
                pass
            gevent.sleep(0 if busy else 0.001)

    if hog:
        hog_greenlet = gevent.spawn(hogger)
    total = int(rate * seconds)
    interval = 1.0 / rate
    start = time.perf_counter() + 0.05
    i = 0
    while i < total:
        scheduled = start + i * interval
        now = time.perf_counter()
        if scheduled > now:
            # epoll waits in whole milliseconds: a timer alone would start requests up to 1 ms
            # late. Sleep to ~1 ms before the slot, then wait one hub iteration at a time
            # (gevent.idle: after the hub has polled and run what was ready) until it comes.
            if scheduled - now > 0.0015:
                gevent.sleep(scheduled - now - 0.001)
            elif busy:
                gevent.sleep(0)  # (with the hog always ready, the hub is never idle)
            else:
                gevent.idle()
            continue
        group.spawn(one, scheduled)  # every request whose time has come, each in its own greenlet
        i += 1
    group.join(timeout=30)
    stop[0] = True
    if hog:
        hog_greenlet.join(1)
    result = percentiles(latencies)
    result.update(client=client, rate=rate, errors=errors[0], hog=("busy" if busy else "half") if hog else None)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
