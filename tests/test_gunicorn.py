"""A real gunicorn (``-k gevent -w 2``) running an app that calls an upstream through geventagent,
with ``geventagent.contrib.gunicorn`` as its config module.

The upstream (a threaded HTTP/1.1 server in this process, 127.0.0.1 only) counts its connections
and, through an ``X-Pid`` header the app sends, which process used each one. Load comes from a
bounded geventagent client in this process.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Dict, List, Set

import gevent
import pytest

import geventagent as ga

gunicorn_config = pytest.importorskip("gunicorn.config")

MAX_SOCKETS = 3
WORKERS = 2

APP = """
import json, os
import geventagent as ga

SCHEME = os.environ.get("UPSTREAM_SCHEME", "http")
UPSTREAM = SCHEME + "://" + os.environ["UPSTREAM"]
if SCHEME == "https":
    upstream = ga.HttpsAgent(
        keep_alive=True, max_sockets=int(os.environ["MAX_SOCKETS"]), queue_timeout=10, ca=os.environ["UPSTREAM_CA"]
    )
else:
    upstream = ga.Agent(keep_alive=True, max_sockets=int(os.environ["MAX_SOCKETS"]), queue_timeout=10)

if os.environ.get("CALL_AT_LOAD"):
    # The app touches its upstream while it loads: with --preload, in the master.
    ga.get(UPSTREAM + "/load", agent=upstream, headers={"X-Pid": str(os.getpid())}).read()

def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/status":
        body = json.dumps({"pid": os.getpid(), "status": upstream.status()}).encode()
    else:
        body = ga.get(UPSTREAM + path, agent=upstream, headers={"X-Pid": str(os.getpid())}).read()
    start_response("200 OK", [("Content-Length", str(len(body))), ("X-Worker-Pid", str(os.getpid()))])
    return [body]
"""


class Upstream(ThreadingHTTPServer):
    """``tls``: a server-side ``ssl.SSLContext``; each connection's handshake runs in its own
    handler thread (a stalled client never holds the accept loop)."""

    daemon_threads = True

    def __init__(self, tls: Any = None) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.tls = tls
        self.ca_path = ""  # the CA's PEM file, for the app, when tls
        self.lock = threading.Lock()
        self.conns: List[Dict[str, Any]] = []  # {"pids": set, "open": bool, "requests": int}
        self.open_now = 0
        self.max_open = 0

    @property
    def address(self) -> str:
        return "127.0.0.1:%d" % self.server_address[1]

    def get_request(self) -> Any:
        sock, address = super().get_request()
        if self.tls is not None:
            sock = self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, address

    def open_by_pid(self) -> Dict[int, int]:
        with self.lock:
            counts: Dict[int, int] = {}
            for conn in self.conns:
                if conn["open"]:
                    for pid in conn["pids"]:
                        counts[pid] = counts.get(pid, 0) + 1
            return counts

    def opened_by_pid(self) -> Dict[int, int]:
        with self.lock:
            counts: Dict[int, int] = {}
            for conn in self.conns:
                for pid in conn["pids"]:
                    counts[pid] = counts.get(pid, 0) + 1
            return counts


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Upstream

    def setup(self) -> None:
        if self.server.tls is not None:
            self.request.settimeout(10)
            self.request.do_handshake()
            self.request.settimeout(None)
        super().setup()
        # Headers and body go out in two writes: without this, Nagle and delayed ACKs cost 40 ms each.
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.conn: Dict[str, Any] = {"pids": set(), "open": True, "requests": 0}
        if self.server.tls is not None:
            self.conn["tls"] = self.request.version()
        with self.server.lock:
            self.server.conns.append(self.conn)
            self.server.open_now += 1
            self.server.max_open = max(self.server.max_open, self.server.open_now)

    def finish(self) -> None:
        with self.server.lock:
            self.conn["open"] = False
            self.server.open_now -= 1
        super().finish()

    def do_GET(self) -> None:
        pid = int(self.headers.get("X-Pid", "0"))
        with self.server.lock:
            self.conn["pids"].add(pid)
            self.conn["requests"] += 1
        if self.path == "/slow":
            time.sleep(1.0)
        body = b"upstream ok"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def upstream(request, tmp_path):
    """The upstream, plain; a test parametrized ``upstream`` with ``"https"`` (indirect) gets it over
    TLS (a trustme CA)."""
    tls = None
    if getattr(request, "param", "http") == "https":
        import ssl

        trustme = pytest.importorskip("trustme")
        ca = trustme.CA()
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ca.issue_cert("127.0.0.1").configure_cert(tls)
    server = Upstream(tls)
    if tls is not None:
        server.ca_path = str(tmp_path / "upstream-ca.pem")
        ca.cert_pem.write_to_path(server.ca_path)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


class Gunicorn:
    """One gunicorn master, started on 127.0.0.1:0; its log goes to a file (never a full pipe)."""

    def __init__(
        self,
        tmp: Path,
        upstream: Upstream,
        args: List[str],
        call_at_load: bool,
        hooks: bool = True,
        workers: int = WORKERS,
    ):
        (tmp / "gapp.py").write_text(APP)
        self.log = tmp / "gunicorn.log"
        env = dict(os.environ, UPSTREAM=upstream.address, MAX_SOCKETS=str(MAX_SOCKETS), PYTHONPATH=str(tmp))
        if upstream.tls is not None:
            env.update(UPSTREAM_SCHEME="https", UPSTREAM_CA=upstream.ca_path)
        if call_at_load:
            env["CALL_AT_LOAD"] = "1"
        cmd = [sys.executable, "-m", "gunicorn", "-k", "gevent", "-w", str(workers), "-b", "127.0.0.1:0"]
        cmd += ["--graceful-timeout", "10", "--log-level", "info", *args]
        if any(s.name == "control_socket_disable" for s in gunicorn_config.KNOWN_SETTINGS):
            cmd.append("--no-control-socket")  # newer gunicorns: no socket shared in ~/.gunicorn
        if hooks:
            cmd += ["-c", "python:geventagent.contrib.gunicorn"]
        cmd.append("gapp:app")
        with self.log.open("wb") as log:  # (the child has its own copy of the fd)
            self.proc = subprocess.Popen(cmd, cwd=str(tmp), env=env, stdout=log, stderr=subprocess.STDOUT)
        self.port = self._wait_listening()
        self._wait_booted(workers)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def _wait_listening(self) -> int:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            found = re.search(r"Listening at: http://127\.0\.0\.1:(\d+)", self.text())
            if found:
                return int(found.group(1))
            assert self.proc.poll() is None, self.text()
            time.sleep(0.05)
        raise AssertionError("gunicorn did not start:\n" + self.text())

    def _wait_booted(self, n: int) -> None:
        deadline = time.monotonic() + 20
        while len(re.findall(r"Booting worker with pid", self.text())) < n:
            assert time.monotonic() < deadline, self.text()
            time.sleep(0.05)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise


def drive(port: int, total: int, concurrency: int = 30, path: str = "/work") -> Dict[str, Any]:
    """``total`` GETs from ``concurrency`` greenlets (bounded in count and time): per-pid counts."""
    # A connection per request, as from many browsers: gunicorn spreads them over its workers.
    agent = ga.Agent(keep_alive=False, max_sockets=concurrency)
    served: Dict[int, int] = {}
    errors: List[str] = []
    left = [total]

    def user() -> None:
        while left[0] > 0:
            left[0] -= 1
            try:
                res = ga.get("http://127.0.0.1:%d%s" % (port, path), agent=agent, timeout=15)
                body = res.read()
                if res.status_code != 200 or body != b"upstream ok":
                    errors.append("%s %r" % (res.status_code, body[:80]))
                pid = int(res.headers["x-worker-pid"])
                served[pid] = served.get(pid, 0) + 1
            except Exception as exc:  # counted, reported by the caller
                errors.append(repr(exc))

    with gevent.Timeout(120):
        gevent.joinall([gevent.spawn(user) for _ in range(concurrency)], raise_error=True)
    agent.destroy()
    return {"served": served, "errors": errors}


def worker_status(port: int, want: int) -> Dict[int, Dict[str, Any]]:
    """``/status`` of up to ``want`` distinct workers (whichever accepts each connection answers)."""
    found: Dict[int, Dict[str, Any]] = {}
    for _ in range(50):
        if len(found) >= want:
            break
        res = ga.get("http://127.0.0.1:%d/status" % port, agent=ga.Agent(keep_alive=False), timeout=10)
        doc = json.loads(res.read())
        found[doc["pid"]] = doc["status"]
    return found


def check_pool(upstream: Upstream, master_pid: int, served: Dict[int, int]) -> None:
    with upstream.lock:
        shared = [sorted(c["pids"]) for c in upstream.conns if len(c["pids"]) > 1]
    assert not shared, "a connection carried two processes' requests: %r" % shared
    assert upstream.max_open <= WORKERS * MAX_SOCKETS, upstream.max_open
    opened = upstream.opened_by_pid()
    for pid in served:  # keep-alive reuse: thousands of requests, at most max_sockets connections
        assert opened.get(pid, 0) <= MAX_SOCKETS, (pid, opened)
    assert master_pid not in upstream.open_by_pid(), "the master holds an upstream connection"


def wait_closed(upstream: Upstream, pid: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pid not in upstream.open_by_pid():
            return True
        time.sleep(0.05)
    return False


@pytest.mark.timeout(120)
@pytest.mark.parametrize("upstream", ["http", "https"], indirect=True)
@pytest.mark.parametrize("preload", [False, True], ids=["no-preload", "preload"])
def test_caps_hold_per_worker_and_the_master_holds_nothing(tmp_path, upstream, preload):
    server = Gunicorn(tmp_path, upstream, ["--preload"] if preload else [], call_at_load=True)
    try:
        if preload:  # the load-time request ran in the master, once
            assert list(upstream.opened_by_pid()) == [server.proc.pid]
            assert wait_closed(upstream, server.proc.pid), "pre_fork did not close the master's connection"
        result = drive(server.port, 2000)
        assert result["errors"] == []
        assert sum(result["served"].values()) == 2000
        assert 1 <= len(result["served"]) <= WORKERS
        check_pool(upstream, server.proc.pid, result["served"])
        if upstream.tls is not None:
            with upstream.lock:
                assert upstream.conns and all(c.get("tls", "").startswith("TLSv1.") for c in upstream.conns)
        statuses = worker_status(server.port, WORKERS)
        for pid, status in statuses.items():
            # Each worker starts with an empty pool and zeroed counters: nothing inherited counts.
            assert status["close_reasons"].get("fork", 0) == 0, status
            assert status["sockets_created"] <= MAX_SOCKETS, status
            own_load_call = 0 if preload else 1
            assert status["requests"] == result["served"][pid] + own_load_call, (status, result["served"])
            if upstream.tls is not None:  # the worker's HttpsAgent cached the upstream's TLS session
                sessions = status["tls_sessions"]
                assert len(sessions) == 1 and sessions[0].startswith(upstream.address + ":"), status
    finally:
        assert server.stop() == 0, server.text()
    # worker_exit destroyed the workers' sockets; gunicorn's worker_exit call in the master was harmless.
    for pid in result["served"]:
        assert wait_closed(upstream, pid), pid
    assert "Exception during worker exit" not in server.text()


@pytest.mark.timeout(120)
def test_without_the_hooks_the_master_keeps_its_connection(tmp_path, upstream):
    # The control: the defect the pre_fork hook exists for, reproduced, so the test above can fail.
    server = Gunicorn(tmp_path, upstream, ["--preload"], call_at_load=True, hooks=False)
    try:
        drive(server.port, 200)
        assert not wait_closed(upstream, server.proc.pid, timeout=1.0)
        assert upstream.open_by_pid()[server.proc.pid] == 1
    finally:
        server.stop()


@pytest.mark.timeout(180)
def test_max_requests_churn_keeps_every_cap(tmp_path, upstream):
    server = Gunicorn(tmp_path, upstream, ["--preload", "--max-requests", "300"], call_at_load=True)
    try:
        # gunicorn's gevent worker notices max_requests in a loop that wakes once a second and
        # serves on meanwhile: enough requests for several seconds however fast the client is.
        result = drive(server.port, 8000)
        assert result["errors"] == []
        assert sum(result["served"].values()) == 8000
        assert len(result["served"]) >= 6, result["served"]  # workers were replaced several times
        check_pool(upstream, server.proc.pid, result["served"])
    finally:
        assert server.stop() == 0, server.text()
    assert "Exception during worker exit" not in server.text()


@pytest.mark.timeout(120)
def test_graceful_sigterm_lets_in_flight_requests_finish(tmp_path, upstream):
    # One worker: the request reaching the upstream proves that worker has booted (a SIGTERM that
    # arrives while a worker is still booting is lost, and the master waits out the graceful timeout).
    server = Gunicorn(tmp_path, upstream, [], call_at_load=False, workers=1)
    outcome: Dict[str, Any] = {}

    def slow() -> None:
        try:
            res = ga.get("http://127.0.0.1:%d/slow" % server.port, agent=ga.Agent(), timeout=15)
            outcome["status"], outcome["body"] = res.status_code, res.read()
        except Exception as exc:
            outcome["error"] = repr(exc)

    try:
        pending = gevent.spawn(slow)
        deadline = time.monotonic() + 5
        while not upstream.conns and time.monotonic() < deadline:  # the request reached the upstream
            gevent.sleep(0.02)
        server.proc.send_signal(signal.SIGTERM)
        pending.join(15)
        assert outcome == {"status": 200, "body": b"upstream ok"}
        assert server.proc.wait(15) == 0
    finally:
        server.stop()
    pids: Set[int] = set().union(*(c["pids"] for c in upstream.conns))
    for pid in pids:
        assert wait_closed(upstream, pid), pid


# -- the hooks themselves, in this process -----------------------------------------------------------
class _Log:
    def __init__(self) -> None:
        self.lines: List[str] = []

    def info(self, msg: str, *args: Any) -> None:
        self.lines.append(msg % args)


class _Arbiter:
    def __init__(self) -> None:
        self.log = _Log()
        self.pid = os.getpid()


class _Worker:
    def __init__(self, pid: int) -> None:
        self.pid = pid


def test_pre_fork_closes_every_live_agents_sockets_without_a_running_hub(server, make_agent):
    from geventagent.contrib import gunicorn as hooks

    agents = [make_agent(keep_alive=True), make_agent(keep_alive=True)]
    for agent in agents:
        ga.get(server.url("/"), agent=agent).read()
        assert agent.status()["free"] == 1
    arbiter = _Arbiter()
    hooks.pre_fork(arbiter, _Worker(0))
    for agent in agents:  # closed synchronously, in the hook: the master's hub never runs between forks
        status = agent.status()
        assert (status["free"], status["total_socket_count"]) == (0, 0), status
        assert status["close_reasons"]["pre_fork"] == 1, status
    closed = re.match(r"geventagent: closed (\d+) connection", arbiter.log.lines[0])
    assert closed and int(closed.group(1)) >= 2, arbiter.log.lines
    assert ga.get(server.url("/"), agent=agents[0]).status_code == 200  # the agents stay usable


def test_worker_exit_acts_in_the_worker_only(server, make_agent):
    from geventagent.contrib import gunicorn as hooks

    agent = make_agent(keep_alive=True)
    ga.get(server.url("/"), agent=agent).read()
    hooks.worker_exit(_Arbiter(), _Worker(os.getpid() + 1))  # gunicorn's call in the master
    assert agent.status()["free"] == 1
    hooks.worker_exit(_Arbiter(), _Worker(os.getpid()))  # in the worker itself
    assert agent.status()["free"] == 0
    assert agent.status()["close_reasons"] == {"worker_exit": 1}


def test_post_fork_resets_inherited_agents_only(make_agent):
    from geventagent.contrib import gunicorn as hooks

    make_agent(keep_alive=True)
    assert hooks.reset_agents() == 0  # nothing inherited in this process
    hooks.post_fork(_Arbiter(), _Worker(os.getpid()))


def test_the_module_works_as_a_gunicorn_config_and_star_import():
    from geventagent.contrib import gunicorn as hooks

    namespace: Dict[str, Any] = {}
    exec("from geventagent.contrib.gunicorn import *", namespace)
    assert {"pre_fork", "post_fork", "worker_exit"} <= set(namespace)
    settings = {s.name for s in gunicorn_config.KNOWN_SETTINGS}
    hook_names = {name for name in hooks.__all__ if name in settings}
    assert hook_names == {"pre_fork", "post_fork", "worker_exit"}
