"""One client x one workload, in its own process (``python bench/clients.py CLIENT WORKLOAD PORT
[ORIGIN_PORTS]``). Prints one JSON line: requests, bytes, seconds (wall), cpu_seconds (user +
sys of this process over the same span: steadier than wall time on a shared machine), errors,
peak RSS.

Python peers that need it are monkey-patched first (gevent), as their users run them."""

from __future__ import annotations

import json
import os
import resource
import sys
import time

CLIENT, WORKLOAD, PORT = sys.argv[1], sys.argv[2], int(sys.argv[3])
ORIGIN_BASE = int(sys.argv[4]) if len(sys.argv) > 4 else PORT

if CLIENT in ("urllib3", "requests", "requests_ga", "requests_floor", "httpx"):
    from gevent import monkey

    monkey.patch_all()

import gevent  # noqa: E402
import rawpool  # noqa: E402  (bench/, this script's directory)
from gevent.event import Event  # noqa: E402
from gevent.pool import Pool  # noqa: E402

# workload: (path, method, body, greenlets, requests, connections per origin, origins, keep-alive)
# wait10k: each of the 10,000 greenlets makes 10 requests, so the figure is the pool's queue and
# not greenlet creation and exit (2 requests each: a third of the time went to spawning).
WORKLOADS = {
    "tiny": ("/tiny", "GET", None, 50, 20000, 10, 1, True),
    "1mib": ("/1mib", "GET", None, 10, 2000, 10, 1, True),
    "post64k": ("/post", "POST", b"p" * 65536, 50, 4000, 10, 1, True),
    "no_keepalive": ("/tiny", "GET", None, 10, 3000, 10, 1, False),
    "wait10k": ("/tiny", "GET", None, 10000, 100000, 10, 1, True),
    "origins1k": ("/tiny", "GET", None, 50, 20000, 10, 1000, True),
    # a new greenlet per request, 50 at a time (a gunicorn worker's shape)
    "spawn_tiny": ("/tiny", "GET", None, 50, 20000, 10, 1, True),
    # nginx's TLS listener, a local CA: kept alive, and a handshake per request (sessions resumed)
    "https_tiny": ("/tiny", "GET", None, 50, 10000, 10, 1, True),
    "https_no_keepalive": ("/tiny", "GET", None, 10, 1500, 10, 1, False),
}
PATH, METHOD, BODY, GREENLETS, REQUESTS, CONNS, ORIGINS, KEEP_ALIVE = WORKLOADS[WORKLOAD]
SPAWN = WORKLOAD == "spawn_tiny"
HTTPS = WORKLOAD.startswith("https")
CA = os.environ.get("GA_BENCH_CA")
if HTTPS:
    PORT = int(os.environ["GA_BENCH_TLS_PORT"])


def url_for(g: int, i: int) -> str:
    """Greenlet ``g``'s ``i``-th request. With many origins greenlet g visits g, g+G, g+2G, ...
    (mod the origin count), so two greenlets never share an origin at once: each origin keeps
    the one connection the warm-up opened, and the figure is pooled reuse across origins, not
    connection setup (that is the no_keepalive workload)."""
    port = PORT if ORIGINS == 1 else ORIGIN_BASE + (g + GREENLETS * i) % ORIGINS
    return "%s://127.0.0.1:%d%s" % ("https" if HTTPS else "http", port, PATH)


def make_geventagent():
    import geventagent as ga

    if HTTPS:
        agent = ga.HttpsAgent(keep_alive=KEEP_ALIVE, max_sockets=CONNS, max_free_sockets=CONNS, ca=CA)
    else:
        agent = ga.Agent(keep_alive=KEEP_ALIVE, max_sockets=CONNS, max_free_sockets=CONNS)
    headers = None if KEEP_ALIVE else {"Connection": "close"}

    def fetch(url):
        res = ga.request(METHOD, url, body=BODY, agent=agent, headers=headers)
        data = res.read()
        if res.status_code != 200:
            raise ValueError(res.status_code)
        return len(data)

    return fetch


def make_geventhttpclient():
    from geventhttpclient import HTTPClient
    from geventhttpclient.url import URL

    clients = {}
    headers = {} if KEEP_ALIVE else {"Connection": "close"}

    def fetch(url):
        u = URL(url)
        client = clients.get(u.port)
        if client is None:
            tls = {}
            if HTTPS:
                import ssl

                import gevent.ssl

                def context(cafile=None):  # cooperative unpatched (create_default_context is not)
                    ctx = gevent.ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
                    ctx.load_verify_locations(cafile=cafile or CA)
                    return ctx

                tls = {"ssl": True, "ssl_context_factory": context, "ssl_options": {"ca_certs": CA}}
            client = clients[u.port] = HTTPClient(
                u.host, u.port, concurrency=CONNS, connection_timeout=30, network_timeout=30, **tls
            )
        res = client.request(METHOD, u.request_uri, body=BODY, headers=headers)
        data = res.read()
        res.release()
        if res.status_code != 200:
            raise ValueError(res.status_code)
        return len(data)

    return fetch


def make_urllib3():
    import urllib3

    pool = urllib3.PoolManager(maxsize=CONNS, block=True, num_pools=max(ORIGINS, 10), ca_certs=CA if HTTPS else None)
    headers = None if KEEP_ALIVE else {"Connection": "close"}

    def fetch(url):
        res = pool.request(METHOD, url, body=BODY, headers=headers)
        if res.status != 200:
            raise ValueError(res.status)
        return len(res.data)

    return fetch


def _requests_fetch(session):
    """One workload request through a requests ``session`` (stock or through install())."""
    # verify per request: requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE override session.verify
    verify = CA if HTTPS else True
    headers = None if KEEP_ALIVE else {"Connection": "close"}

    def fetch(url):
        res = session.request(METHOD, url, data=BODY, headers=headers, verify=verify)
        if res.status_code != 200:
            raise ValueError(res.status_code)
        return len(res.content)

    return fetch


def make_requests():
    import requests

    session = requests.Session()
    adapter = requests.adapters.HTTPAdapter(pool_connections=max(ORIGINS, 10), pool_maxsize=CONNS, pool_block=True)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return _requests_fetch(session)


def make_requests_ga():
    """An unchanged monkey-patched requests app, through geventagent.contrib.requests.install()."""
    from geventagent.contrib import requests as ga_requests

    ga_requests.install(max_sockets=CONNS)
    import requests

    session = requests.Session()
    return _requests_fetch(session)


def make_requests_floor():
    """requests' own cost per request, with no network: an adapter that answers from memory (the
    ceiling of any transport's speed-up under requests: stock req/s over this one's)."""
    import io

    import requests
    import urllib3

    class Canned(requests.adapters.HTTPAdapter):
        def send(self, request, **kw):
            raw = urllib3.HTTPResponse(
                body=io.BytesIO(b"hello"), headers={"Content-Length": "5"}, status=200, preload_content=False
            )
            return self.build_response(request, raw)

    session = requests.Session()
    session.mount("http://", Canned())

    def fetch(url):
        res = session.request(METHOD, url, data=BODY)
        if res.status_code != 200:
            raise ValueError(res.status_code)
        return len(res.content)

    return fetch


def make_httpx():
    import httpx

    client = httpx.Client(
        limits=httpx.Limits(max_connections=CONNS * ORIGINS, max_keepalive_connections=CONNS * ORIGINS),
        timeout=30,
        verify=CA if HTTPS else True,
    )
    headers = None if KEEP_ALIVE else {"Connection": "close"}

    def fetch(url):
        res = client.request(METHOD, url, content=BODY, headers=headers)
        if res.status_code != 200:
            raise ValueError(res.status_code)
        return len(res.content)

    return fetch


def make_rawpool():
    """The floor of a pool on gevent (``rawpool.py``): a semaphore and a list of free sockets per
    origin, a fixed request written, a fixed-size response read; no HTTP parsing, no checks, no
    timers. Its ratios between workloads show what 10,000 parked greenlets or 1,000 live
    connections cost on this machine whatever the client does (tiny-body workloads only)."""
    if PATH != "/tiny" or not KEEP_ALIVE:
        raise SystemExit("rawpool: tiny-body keep-alive workloads only")
    request = ("%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" % (METHOD, PATH)).encode()
    head_len, body_len = rawpool.probe_response(PORT, request)  # every origin serves the same response
    pool = rawpool.make_pool(CONNS, request, head_len + body_len)

    def fetch(url):
        pool(int(url.split(":")[2].split("/")[0]))
        return body_len

    return fetch


def run_raw() -> dict:
    from gevent import socket

    head = (
        "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\n%s" % (METHOD, PATH, "Content-Length: %d\r\n" % len(BODY) if BODY else "")
    ).encode()
    request = head + (b"Connection: keep-alive\r\n\r\n" if KEEP_ALIVE else b"Connection: close\r\n\r\n") + (BODY or b"")
    head_end, length = rawpool.probe_response(PORT, request)
    expected = head_end + length
    done = [0, 0]
    per = REQUESTS // CONNS

    def conn_loop():
        sock = socket.create_connection(("127.0.0.1", PORT))
        for _ in range(per):
            if not KEEP_ALIVE:
                sock = socket.create_connection(("127.0.0.1", PORT))
            sock.sendall(request)
            got = 0
            while got < expected:
                chunk = sock.recv(262144)
                if not chunk:
                    break
                got += len(chunk)
            done[0] += 1
            done[1] += got - head_end
            if not KEEP_ALIVE:
                sock.close()
        sock.close()

    start, cpu = time.perf_counter(), _cpu()
    gevent.joinall([gevent.spawn(conn_loop) for _ in range(CONNS)])
    return {
        "requests": done[0],
        "bytes": done[1],
        "seconds": time.perf_counter() - start,
        "cpu_seconds": _cpu() - cpu,
        "errors": 0,
    }


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run(fetch) -> dict:
    counters = {"requests": 0, "bytes": 0, "errors": 0}
    per = REQUESTS // GREENLETS

    go = Event()

    def worker(g):
        go.wait()
        for i in range(max(per, 1)):
            try:
                size = fetch(url_for(g, i))  # not `counters[...] += fetch()`: fetch switches
                counters["bytes"] += size
                counters["requests"] += 1
            except Exception:  # noqa: BLE001
                counters["errors"] += 1

    # Warm-up: code paths hot, and the connections the timed run reuses are open (one per
    # origin; the pool's other connections open as the run starts, as before).
    for g in range(max(min(GREENLETS, 50), ORIGINS)):
        fetch(url_for(g, 0))
    if SPAWN:  # a greenlet per request, at most GREENLETS at once: spawning is part of the shape
        pool = Pool(GREENLETS)

        def one(i):
            try:
                size = fetch(url_for(0, i))  # (not `counters["bytes"] += fetch()`: fetch switches)
                counters["bytes"] += size
                counters["requests"] += 1
            except Exception:  # noqa: BLE001
                counters["errors"] += 1

        start, cpu = time.perf_counter(), _cpu()
        for i in range(REQUESTS):
            pool.spawn(one, i)
        pool.join()
        counters["seconds"] = time.perf_counter() - start
        counters["cpu_seconds"] = _cpu() - cpu
        return counters
    pool = Pool()
    for g in range(GREENLETS):
        pool.spawn(worker, g)
    # Every greenlet starts (its first switch, its frame stack) and waits for the signal before
    # the clock: wait10k measures 10,000 greenlets waiting behind 10 connections, not their start.
    gevent.sleep(0)
    start, cpu = time.perf_counter(), _cpu()
    go.set()
    pool.join()
    counters["seconds"] = time.perf_counter() - start
    counters["cpu_seconds"] = _cpu() - cpu
    return counters


def main() -> None:
    if CLIENT == "raw":
        if WORKLOAD in ("wait10k", "origins1k"):
            raise SystemExit("raw: a connection per greenlet does not apply (see rawpool)")
        result = run_raw()
    else:
        result = run(globals()["make_" + CLIENT]())
    result["rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
