"""``make demo``: the keep-alive experiment of seed 003, through geventagent, on a local server.

A local gevent HTTP server counts the TCP connections it accepts. Its keep-alive timeout is scaled
down from Node's 5 s to 2 s (and raised to 4 s for the last scenario) so the demo finishes in
seconds. Each scenario sends rounds of requests from 20 greenlets; the pause scenarios wait longer
than the server's keep-alive timeout between rounds. Then 1000 greenlets go through
``max_sockets=10`` and the server reports how many connections it ever had at once.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Dict, List, Optional

import gevent

import geventagent as ga
from geventagent.testing import HttpTestServer, Response

GREENLETS = 20
PER_GREENLET = 5
SERVER_KEEP_ALIVE = 2.0  # Node's server default is 5 s; scaled down for the demo
PAUSE = 2.5


def _handler(req: Any) -> Response:
    return Response(200, b"Hello World")


def run_scenario(label: str, agent: ga.Agent, keep_alive_timeout: float, rounds: int, pause: float) -> Dict[str, Any]:
    with HttpTestServer(_handler, keep_alive_timeout=keep_alive_timeout, keep_requests=False) as server:
        url = server.url("/")

        def worker() -> None:
            for _ in range(PER_GREENLET):
                res = agent.get(url)
                assert res.read() == b"Hello World"

        started = time.perf_counter()
        busy = 0.0
        for number in range(rounds):
            if number:
                gevent.sleep(pause)
            t0 = time.perf_counter()
            gevent.joinall([gevent.spawn(worker) for _ in range(GREENLETS)], raise_error=True, timeout=30)
            busy += time.perf_counter() - t0
        requests = rounds * GREENLETS * PER_GREENLET
        created = agent.counters["sockets_created"]
        row = {
            "scenario": label,
            "requests": requests,
            "connections": server.connections_total,
            "reused": requests - created,
            "peak": server.connections_peak,
            "req_s": requests / busy if busy else 0.0,
            "seconds": time.perf_counter() - started,
        }
        agent.destroy()
        return row


def cap_check(total: int = 1000, cap: int = 10) -> Dict[str, Any]:
    with HttpTestServer(_handler, keep_requests=False) as server:
        agent = ga.Agent(keep_alive=True, max_sockets=cap)
        url = server.url("/")
        t0 = time.perf_counter()
        jobs = [gevent.spawn(lambda: agent.get(url).read()) for _ in range(total)]
        gevent.joinall(jobs, raise_error=True, timeout=60)
        elapsed = time.perf_counter() - t0
        ok = sum(1 for job in jobs if job.value == b"Hello World")
        status = agent.status()
        agent.destroy()
        return {
            "greenlets": total,
            "ok": ok,
            "cap": cap,
            "peak": server.connections_peak,
            "connections": server.connections_total,
            "req_s": total / elapsed,
            "status": status,
        }


def https_scenarios() -> Optional[List[Dict[str, Any]]]:
    """HTTPS with local certificates (trustme): pooling over TLS, then TLS session resumption."""
    try:
        import ssl

        import trustme
        from gevent import ssl as gssl
    except ImportError:
        return None
    ca = trustme.CA()
    ctx = gssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("localhost", "127.0.0.1").configure_cert(ctx)
    rows = []
    for label, agent, greenlets, per in (
        ("https keep_alive=True, max_sockets=5", ga.HttpsAgent(keep_alive=True, max_sockets=5), 20, 5),
        ("https no keep-alive: a handshake per request", ga.HttpsAgent(), 1, 50),
        ("https no keep-alive, max_cached_sessions=0", ga.HttpsAgent(max_cached_sessions=0), 1, 50),
    ):
        agent.options["ca"] = ca.cert_pem.bytes()
        with HttpTestServer(_handler, ssl_context=ctx, keep_requests=False) as server:
            url = server.url("/", host="localhost")

            def worker(agent: ga.HttpsAgent = agent, url: str = url, per: int = per) -> None:
                for _ in range(per):
                    assert agent.get(url).read() == b"Hello World"

            t0 = time.perf_counter()
            gevent.joinall([gevent.spawn(worker) for _ in range(greenlets)], raise_error=True, timeout=60)
            elapsed = time.perf_counter() - t0
            rows.append(
                {
                    "scenario": label,
                    "requests": greenlets * per,
                    "connections": server.connections_total,
                    "handshakes": server.tls_handshakes,
                    "resumed": server.tls_resumed,
                    "peak": server.connections_peak,
                    "req_s": greenlets * per / elapsed,
                }
            )
        agent.destroy()
    return rows


def print_table(rows: List[Dict[str, Any]]) -> None:
    header = "%-44s %8s %12s %7s %5s %9s" % ("scenario", "requests", "connections", "reused", "peak", "req/s")
    print(header)
    print("-" * len(header))
    for row in rows:
        print(
            "%-44s %8d %12d %7d %5d %9.0f"
            % (row["scenario"], row["requests"], row["connections"], row["reused"], row["peak"], row["req_s"])
        )


def main(argv: Optional[List[str]] = None) -> int:
    print("geventagent %s demo: seed 003's keep-alive experiment on a local server" % ga.__version__)
    print(
        "(%d greenlets x %d GETs per round; server keep-alive timeout %.0f s, scaled down from Node's 5 s)\n"
        % (GREENLETS, PER_GREENLET, SERVER_KEEP_ALIVE)
    )
    rows = [
        run_scenario("no keep-alive (Agent())", ga.Agent(), SERVER_KEEP_ALIVE, 2, 0.0),
        run_scenario("keep_alive=True", ga.Agent(keep_alive=True), SERVER_KEEP_ALIVE, 2, 0.0),
        run_scenario(
            "keep_alive=True, max_sockets=1", ga.Agent(keep_alive=True, max_sockets=1), SERVER_KEEP_ALIVE, 2, 0.0
        ),
        run_scenario(
            "pause %.1f s > server keep-alive %.0f s" % (PAUSE, SERVER_KEEP_ALIVE),
            ga.Agent(keep_alive=True, max_sockets=1),
            SERVER_KEEP_ALIVE,
            2,
            PAUSE,
        ),
        run_scenario(
            "server keep-alive raised to 4 s > pause", ga.Agent(keep_alive=True, max_sockets=1), 4.0, 2, PAUSE
        ),
    ]
    print_table(rows)
    tls = https_scenarios()
    if tls is not None:
        print()
        header = "%-44s %8s %12s %10s %8s %9s" % (
            "scenario",
            "requests",
            "connections",
            "handshakes",
            "resumed",
            "req/s",
        )
        print(header)
        print("-" * len(header))
        for row in tls:
            print(
                "%-44s %8d %12d %10d %8d %9.0f"
                % (
                    row["scenario"],
                    row["requests"],
                    row["connections"],
                    row["handshakes"],
                    row["resumed"],
                    row["req_s"],
                )
            )
    else:
        print("\n(https scenarios skipped: trustme is not installed)")
    check = cap_check()
    print(
        "\n%(greenlets)d greenlets through max_sockets=%(cap)d: %(ok)d ok, server saw %(connections)d "
        "connections, at most %(peak)d at once, %(req_s).0f req/s" % check
    )
    held = check["peak"] <= check["cap"] and check["ok"] == check["greenlets"]
    print("cap held: %s" % ("yes" if held else "NO"))
    expectations = [
        rows[0]["connections"] == rows[0]["requests"],
        rows[2]["connections"] == 1,
        rows[3]["connections"] == 2,
        rows[4]["connections"] == 1,
    ]
    if not all(expectations):
        print("unexpected connection counts: %r" % expectations)
    if tls is not None:
        expectations += [
            tls[0]["connections"] <= 5,
            tls[1]["resumed"] >= tls[1]["handshakes"] - 1,
            tls[2]["resumed"] == 0,
        ]
    return 0 if held and all(expectations) else 1


if __name__ == "__main__":
    sys.exit(main())
