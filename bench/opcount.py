"""Bytecodes per request, by function: the hot path's own work, counted, not timed.

Runs ``tiny``'s shape (GETs of a small body through ``--sockets`` kept-alive connections, from
``--greenlets`` long-lived greenlets, or with ``--spawn`` a greenlet per request) against ``--url``
or, without one, a ``geventagent.testing.HttpTestServer`` in this process, warms up, then counts
every bytecode executed during ``--requests`` requests (``sys.settrace`` with opcode events) and
prints the per-request count of each function, largest first. The in-process server's greenlets
(whatever runs under ``testing.py``'s frames) are left out. Counts do not depend on the machine's
speed, so a change to the hot path shows as a difference of two runs (a function-level import,
for one, shows up as ``importlib`` frames). Tracing makes the run about 30x slower; its timings
mean nothing.

    .venv/bin/python bench/opcount.py [--url http://127.0.0.1:PORT/tiny] [--spawn] [--top 40]
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
from typing import Any, Callable, Counter

import gevent
from gevent.pool import Pool

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import geventagent as ga  # noqa: E402
from geventagent.testing import HttpTestServer, Response  # noqa: E402


def shape(fetch: Callable[[], int], requests: int, greenlets: int, spawn: bool) -> None:
    if spawn:
        pool = Pool(greenlets)
        for _ in range(requests):
            pool.spawn(fetch)
        pool.join(timeout=120)
        return
    per = max(requests // greenlets, 1)

    def worker() -> None:
        for _ in range(per):
            fetch()

    gevent.joinall([gevent.spawn(worker) for _ in range(greenlets)], timeout=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="the URL to GET (default: an in-process test server)")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--greenlets", type=int, default=50)
    parser.add_argument("--sockets", type=int, default=10)
    parser.add_argument("--spawn", action="store_true", help="a greenlet per request (spawn_tiny's shape)")
    parser.add_argument("--top", type=int, default=40)
    args = parser.parse_args()

    server = None
    url = args.url
    if url is None:
        server = HttpTestServer(lambda req: Response(200, b"hello")).start()
        url = server.url("/tiny")
    agent = ga.Agent(keep_alive=True, max_sockets=args.sockets, max_free_sockets=args.sockets)

    def fetch() -> int:
        res = ga.request("GET", url, agent=agent)
        return len(res.read())

    shape(fetch, 2000, args.greenlets, args.spawn)  # warm: connections open, caches filled

    counts: Counter[str] = collections.Counter()
    skip = os.sep + "testing.py"

    def tracer(frame: Any, event: str, arg: Any) -> Any:
        code = frame.f_code
        caller = frame
        while caller is not None:  # the in-process server's greenlets (testing.py's frames) and all they call
            if caller.f_code.co_filename.endswith(skip):
                return None
            caller = caller.f_back
        key = "%s:%s" % (os.path.basename(code.co_filename), code.co_qualname)
        frame.f_trace_opcodes = True
        frame.f_trace_lines = False

        def local(frame: Any, event: str, arg: Any) -> Any:
            if event == "opcode":
                counts[key] += 1
            return local

        return local

    sys.settrace(tracer)
    try:
        shape(fetch, args.requests, args.greenlets, args.spawn)
    finally:
        sys.settrace(None)
    agent.destroy()
    if server is not None:
        server.stop()
    n = args.requests
    print("bytecodes per request: %.0f (%d requests, %s)" % (sum(counts.values()) / n, n, url))
    for key, value in counts.most_common(args.top):
        print("%8.1f  %s" % (value / n, key))


if __name__ == "__main__":
    main()
