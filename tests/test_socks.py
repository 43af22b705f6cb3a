"""SOCKS proxies (socks5, socks5h, socks4): a real SOCKS server (PyPI ``pproxy``) on 127.0.0.1,
with and without username/password, and a server of the test's own for the failure cases."""

from __future__ import annotations

import socket as stdsocket
import subprocess
import sys
import time

import gevent
import pytest
from gevent.server import StreamServer

import geventagent as ga
from geventagent.errors import ProxyTunnelError
from geventagent.proxy import parse_proxy
from geventagent.testing import Response

from .test_proxy import _free_port, _stop_all


@pytest.fixture(scope="module")
def pproxy():
    """``start(scheme="socks5", auth=None) -> port``: pproxy listening on 127.0.0.1."""
    pytest.importorskip("pproxy")
    procs = []

    def start(scheme: str = "socks5", auth: str = "") -> int:
        port = _free_port()
        listen = "%s://127.0.0.1:%d" % (scheme, port) + ("#" + auth if auth else "")
        proc = subprocess.Popen(
            [sys.executable, "-m", "pproxy", "-l", listen],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        procs.append(proc)
        deadline = time.monotonic() + 15
        while True:
            try:
                stdsocket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                return port
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("pproxy did not start") from None
                time.sleep(0.05)

    yield start
    _stop_all(procs)


def test_socks_urls_parse():
    proxy = parse_proxy("socks5h://u%40x:p%3A@127.0.0.1")
    assert (proxy.scheme, proxy.port, proxy.username, proxy.password, proxy.socks) == (
        "socks5h",
        1080,
        "u@x",
        "p:",
        True,
    )
    assert proxy.key == "socks5h://u@x@127.0.0.1:1080"
    assert parse_proxy("http://127.0.0.1:3128").socks is False


@pytest.mark.parametrize("scheme", ["socks5", "socks5h"])
def test_http_through_socks5_in_origin_form_over_kept_alive_connections(make_server, make_agent, pproxy, scheme):
    port = pproxy("socks5")
    origin = make_server(lambda req: Response(200, req.path.encode()))
    agent = make_agent(keep_alive=True, proxy="%s://127.0.0.1:%d" % (scheme, port))
    for i in range(5):
        assert ga.get("http://localhost:%d/p%d" % (origin.port, i), agent=agent).read() == b"/p%d" % i
    assert origin.connections_total == 1  # one connection through the proxy, kept alive
    assert agent.status()["proxies"]["%s://127.0.0.1:%d" % (scheme, port)]["free"] == 1


def test_https_through_socks5_with_username_and_password(tls_server, https_agent, pproxy):
    port = pproxy("socks5", auth="user:secret")  # pproxy then trusts the client's address for a while:
    origin = tls_server(lambda req: Response(200, b"secure"))  # so the wrong password goes first
    wrong = https_agent(keep_alive=True, proxy="socks5h://user:nope@127.0.0.1:%d" % port)
    with pytest.raises(ProxyTunnelError):
        ga.get("https://localhost:%d/" % origin.port, agent=wrong)
    assert wrong.total_socket_count == 0
    agent = https_agent(keep_alive=True, proxy="socks5h://user:secret@127.0.0.1:%d" % port)
    assert ga.get("https://localhost:%d/" % origin.port, agent=agent).read() == b"secure"


def test_socks4_resolves_the_name_here(make_server, make_agent, pproxy):
    port = pproxy("socks4")  # (pproxy has no SOCKS4a: socks4a:// is not tested against a real server)
    origin = make_server(lambda req: Response(200, b"four"))
    agent = make_agent(keep_alive=True, proxy="socks4://127.0.0.1:%d" % port)
    assert ga.get("http://localhost:%d/" % origin.port, agent=agent).read() == b"four"


@pytest.fixture
def bad_socks():
    """A SOCKS5 server of our own that misbehaves as told: ``mode`` in close / refuse."""
    servers = []

    def start(mode: str) -> int:
        def handle(sock, _addr):
            try:
                sock.recv(64)
                if mode == "close":
                    return
                sock.sendall(b"\x05\x00")
                sock.recv(300)
                sock.sendall(b"\x05\x05\x00\x01\x00\x00\x00\x00\x00\x00")  # 5: connection refused
                gevent.sleep(0.5)
            finally:
                sock.close()

        server = StreamServer(("127.0.0.1", 0), handle)
        server.start()
        servers.append(server)
        return server.server_port

    yield start
    for server in servers:
        server.stop()


@pytest.mark.parametrize("mode,message", [("close", "closed the connection"), ("refuse", "connection refused")])
def test_a_socks_proxy_that_closes_or_refuses_raises_and_leaves_nothing(make_agent, bad_socks, mode, message):
    agent = make_agent(keep_alive=True, proxy="socks5h://127.0.0.1:%d" % bad_socks(mode))
    with pytest.raises(ProxyTunnelError, match=message):
        ga.get("http://origin.invalid/", agent=agent)
    assert agent.total_socket_count == 0


def test_requests_adapter_sends_through_socks(make_server, pproxy):
    requests = pytest.importorskip("requests")
    from geventagent.contrib.requests import AgentAdapter

    port = pproxy("socks5")
    origin = make_server(lambda req: Response(200, b"via socks"))
    session = requests.Session()
    adapter = AgentAdapter()
    session.mount("http://", adapter)
    r = session.get("http://localhost:%d/" % origin.port, proxies={"http": "socks5h://127.0.0.1:%d" % port})
    assert r.text == "via socks"
    adapter.agent.destroy()


def test_socks4a_sends_the_name_for_the_proxy_to_resolve(make_agent):
    seen = []

    def handle(sock, _addr):  # a SOCKS4a server that answers the HTTP request itself
        try:
            data = b""
            while data.count(b"\0") < 2:
                data += sock.recv(256)
            seen.append(data)
            sock.sendall(b"\x00\x5a\x00\x00\x00\x00\x00\x00")
            request = b""
            while b"\r\n\r\n" not in request:
                request += sock.recv(4096)
            seen.append(request)
            sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            gevent.sleep(0.2)
        finally:
            sock.close()

    server = StreamServer(("127.0.0.1", 0), handle)
    server.start()
    try:
        agent = make_agent(keep_alive=False, proxy="socks4a://alice@127.0.0.1:%d" % server.server_port)
        assert ga.get("http://origin.test:8080/x", agent=agent).read() == b"ok"
    finally:
        server.stop()
    handshake, request = seen
    assert handshake == b"\x04\x01\x1f\x90\x00\x00\x00\x01alice\x00origin.test\x00"
    assert request.startswith(b"GET /x HTTP/1.1\r\n")  # origin form through SOCKS


@pytest.mark.parametrize("scheme", ["socks5", "socks4"])
def test_a_lookup_resolves_the_origin_for_a_socks_proxy_that_resolves_here(make_server, make_agent, pproxy, scheme):
    # socks5:// and socks4:// resolve the origin's name on this side: through the agent's
    # lookup when it has one (it was gevent's resolver whatever the lookup said).
    port = pproxy(scheme)
    origin = make_server(lambda req: Response(200, b"looked up"))
    asked = []

    def lookup(hostname, family):
        asked.append((hostname, family))
        return "127.0.0.1"

    agent = make_agent(keep_alive=True, proxy="%s://127.0.0.1:%d" % (scheme, port), lookup=lookup)
    assert ga.get("http://svc.internal:%d/" % origin.port, agent=agent).read() == b"looked up"
    assert asked == [("svc.internal", 4 if scheme == "socks4" else 0)]  # (the proxy's own name is an IP)
