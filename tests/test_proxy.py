"""Issue 17: HTTP forward proxies and CONNECT tunnels, from options and from the environment.

Real proxies started on 127.0.0.1 (port 0 or a free port): proxy.py (PyPI ``proxy.py``) with and
without basic auth, Debian's tinyproxy where it is installed, and a raw relay proxy of the test's
own for the failure cases and for an https:// proxy. Every wait is bounded."""

from __future__ import annotations

import os
import shutil
import socket as stdsocket
import ssl
import subprocess
import sys
import tempfile
import time

import gevent
import pytest
import trustme
from gevent import socket as gsocket
from gevent import ssl as gssl
from gevent.server import StreamServer

import geventagent as ga
from geventagent.errors import ProxyConfigError, ProxyTunnelError, RequestTimeout, UnknownOptionError
from geventagent.proxy import NoProxy, ProxyEnv, parse_proxy
from geventagent.testing import Response


def _free_port() -> int:
    probe = stdsocket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    return port


def _stop_all(procs) -> None:
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        if proc.stdout is not None:
            proc.stdout.close()


def _wait_listening(port: int, proc: subprocess.Popen, seconds: float = 15) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("proxy exited: %s" % proc.stdout.read() if proc.stdout else "")
        try:
            stdsocket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("proxy did not listen on %d" % port)


@pytest.fixture(scope="module")
def proxy_py():
    """``start(auth=None) -> url``: proxy.py on 127.0.0.1, stopped at the end of the module."""
    procs = []
    pytest.importorskip("proxy")

    def start(auth=None):
        folder = tempfile.mkdtemp(prefix="ga-proxypy-")
        port_file = os.path.join(folder, "port")
        cmd = [
            sys.executable,
            "-m",
            "proxy",
            "--hostname",
            "127.0.0.1",
            "--port",
            "0",
            "--port-file",
            port_file,
            "--num-workers",
            "1",
            "--num-acceptors",
            "1",
            "--log-level",
            "CRITICAL",
        ]
        if auth:
            cmd += ["--basic-auth", auth]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        procs.append(proc)
        deadline = time.monotonic() + 20

        def read_port():
            if not os.path.exists(port_file):
                return ""
            with open(port_file) as fh:
                return fh.read().strip()

        while not read_port():
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("proxy.py did not start")
            time.sleep(0.05)
        port = int(read_port())
        _wait_listening(port, proc)
        return "http://127.0.0.1:%d" % port

    yield start
    _stop_all(procs)


@pytest.fixture(scope="module")
def tinyproxy():
    binary = shutil.which("tinyproxy")
    if binary is None:
        pytest.skip("tinyproxy is not installed (Debian's package tinyproxy)")
    folder = tempfile.mkdtemp(prefix="ga-tinyproxy-")
    os.chmod(folder, 0o777)
    port = _free_port()
    conf = os.path.join(folder, "tinyproxy.conf")
    with open(conf, "w") as fh:
        fh.write(
            "Port %d\nListen 127.0.0.1\nTimeout 30\nMaxClients 64\nAllow 127.0.0.1\nLogLevel Critical\n"
            "DisableViaHeader Yes\n%s" % (port, "User nobody\nGroup nogroup\n" if os.getuid() == 0 else "")
        )
    proc = subprocess.Popen([binary, "-d", "-c", conf], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        _wait_listening(port, proc)
        yield "http://127.0.0.1:%d" % port
    finally:
        _stop_all([proc])


class RelayProxy:
    """A tiny forward proxy on 127.0.0.1:0 (plain or TLS): CONNECT tunnels and absolute-form
    requests, relayed byte for byte. ``mode`` misbehaves on purpose: ``"407"``, ``"502"``, ``"split"``
    (the 200 in pieces), ``"close_mid"`` (half a reply, then close), ``"hang"``; ``auth``: the
    ``Proxy-Authorization`` value it requires."""

    def __init__(self, mode="ok", auth=None, tls=None):
        self.mode, self.auth = mode, auth
        self.heads = []
        self.connections = 0
        listener = gsocket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        self.tls = tls  # (wrapped in handle(): gevent's StreamServer leaves a failed handshake's socket open)
        self.server = StreamServer(listener, self.handle)
        self.server.start()
        self.port = self.server.server_port
        self.url = "%s://127.0.0.1:%d" % ("https" if tls is not None else "http", self.port)

    def stop(self):
        self.server.stop()

    def handle(self, conn, address):
        self.connections += 1
        if self.tls is not None:
            conn = self.tls.wrap_socket(conn, server_side=True, do_handshake_on_connect=False)
        try:  # (the finally closes conn whatever ends the handshake too)
            if self.tls is not None:
                conn.do_handshake()
            while True:
                data = b""
                while b"\r\n\r\n" not in data:
                    part = conn.recv(65536)
                    if not part:
                        return
                    data += part
                head, _, rest = data.partition(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                self.heads.append(lines)
                method, target, _ = lines[0].split(" ", 2)
                headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
                if self.mode == "hang":
                    gevent.sleep(30)
                    return
                if self.mode == "407" or (self.auth and headers.get("proxy-authorization") != self.auth):
                    conn.sendall(
                        b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic\r\n"
                        b"Content-Length: 12\r\n\r\nauth needed!"
                    )
                    continue
                if self.mode == "502":
                    conn.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 3\r\n\r\nbad")
                    return
                if self.mode == "close_mid":
                    conn.sendall(b"HTTP/1.1 200 Connection Est")
                    return
                if method == "CONNECT":
                    host, _, port = target.rpartition(":")
                    upstream = gsocket.create_connection((host.strip("[]"), int(port)))
                    reply = b"HTTP/1.1 200 Connection Established\r\nX-Proxy: relay\r\n\r\n"
                    if self.mode == "split":
                        for i in range(0, len(reply), 7):
                            conn.sendall(reply[i : i + 7])
                            gevent.sleep(0.01)
                    else:
                        conn.sendall(reply)
                    self._pipe(conn, upstream, rest)
                    return
                # absolute form: http://host:port/path
                without = target.split("://", 1)[1]
                hostport, _, path = without.partition("/")
                host, _, port = hostport.rpartition(":")
                upstream = gsocket.create_connection((host, int(port)))
                kept = [line for line in lines[1:] if not line.lower().startswith("proxy-")]
                upstream.sendall(
                    ("%s /%s HTTP/1.1\r\n" % (method, path) + "\r\n".join(kept) + "\r\n\r\n").encode("latin-1") + rest
                )
                self._pipe(conn, upstream, b"")
                return
        except OSError:
            return
        finally:
            conn.close()

    @staticmethod
    def _pipe(a, b, first):
        if first:
            b.sendall(first)

        def copy(src, dst):
            try:
                while True:
                    data = src.recv(65536)
                    if not data:
                        break
                    dst.sendall(data)
            except OSError:
                pass
            finally:
                for s in (src, dst):
                    try:
                        s.close()
                    except OSError:
                        pass

        jobs = [gevent.spawn(copy, a, b), gevent.spawn(copy, b, a)]
        try:
            gevent.joinall(jobs)
        finally:  # (stop() kills the handler: the copies and both sockets end with it)
            gevent.killall(jobs)
            a.close()
            b.close()


@pytest.fixture
def relay():
    proxies = []

    def make(**kw):
        proxy = RelayProxy(**kw)
        proxies.append(proxy)
        return proxy

    yield make
    for proxy in proxies:
        proxy.stop()


# -- configuration ----------------------------------------------------------------------------------
def test_proxy_urls_are_parsed_with_their_credentials_decoded():
    p = parse_proxy("http://us%3Aer:p%40ss@proxy.test:3128")
    assert (p.scheme, p.host, p.port) == ("http", "proxy.test", 3128)
    assert p.authorization == "Basic dXM6ZXI6cEBzcw=="  # base64("us:er:p@ss")
    assert p.key == "http://us:er@proxy.test:3128"  # the password is not in the key
    assert parse_proxy("proxy.test:8080").scheme == "http"
    assert parse_proxy("https://[::1]").port == 443 and parse_proxy("http://[::1]").key == "http://[::1]:80"


@pytest.mark.parametrize("bad", ["socks6://proxy:1080", "http://", "http://h:99999", 5, "ftp://x"])
def test_an_unusable_proxy_raises_when_the_agent_is_made(bad):
    with pytest.raises(ProxyConfigError) as info:
        ga.Agent(proxy=bad)
    assert info.value.code == "ERR_PROXY_INVALID_CONFIG"


def test_proxy_option_names_are_checked():
    with pytest.raises(UnknownOptionError, match="proxy"):
        ga.Agent(proxies={"http": "http://p:1"})
    with pytest.raises(UnknownOptionError, match="proxy_env"):
        ga.Agent(proxyEnv=True)


def test_no_proxy_rules():
    rules = NoProxy("localhost, .internal.test,example.com:8080, 10.0.0.0/8, ::1, [fd00::1]:443")
    assert rules.matches("localhost", 80) and rules.matches("a.internal.test", 80)
    assert rules.matches("internal.test", 1) and not rules.matches("xinternal.test", 80)
    assert rules.matches("example.com", 8080) and not rules.matches("example.com", 80)
    assert rules.matches("sub.example.com", 8080)
    assert rules.matches("10.1.2.3", 1) and not rules.matches("11.0.0.1", 1)
    assert rules.matches("::1", 1) and rules.matches("[fd00::1]", 443) and not rules.matches("fd00::1", 80)
    assert NoProxy("*").matches("anything", 1) and not NoProxy("").matches("anything", 1)


def test_the_environment_lower_case_name_wins():
    env = ProxyEnv(
        {
            "HTTP_PROXY": "http://upper:1",
            "http_proxy": "http://lower:2",
            "HTTPS_PROXY": "http://s:3",
            "NO_PROXY": "skip.test",
        }
    )
    assert env.for_target("http:", "x.test", 80).host == "lower"
    assert env.for_target("https:", "x.test", 443).host == "s"
    assert env.for_target("http:", "skip.test", 80) is None
    assert ProxyEnv({}).for_target("http:", "x", 80) is None


# -- http:// through proxies -----------------------------------------------------------------------
def _origin(make_server):
    return make_server(lambda req: Response(200, ("%s %s" % (req.method, req.path)).encode()))


def _remote_ports(agent):
    return {s.remote_port for group in list(agent.sockets.values()) + list(agent.free_sockets.values()) for s in group}


@pytest.mark.parametrize("kind", ["proxy.py", "tinyproxy"])
def test_http_requests_go_through_the_proxy_over_kept_alive_connections(make_server, make_agent, request, kind):
    url = request.getfixturevalue("proxy_py")() if kind == "proxy.py" else request.getfixturevalue("tinyproxy")
    origin = _origin(make_server)
    agent = make_agent(keep_alive=True, proxy=url, timeout=10)
    for i in range(3):
        assert agent.get(origin.url("/item/%d?x=1" % i)).read() == b"GET /item/%d?x=1" % i
    status = agent.status()
    if kind == "proxy.py":  # keeps its client connections alive
        assert _remote_ports(agent) == {int(url.rsplit(":", 1)[1])}  # connected to the proxy, not the origin
        assert status["sockets_created"] == 1 and status["reused"] == 2
        [name] = agent.free_sockets
        assert name.endswith(":proxy=" + url) and status["proxies"] == {url: {"active": 0, "free": 1, "queued": 0}}
    else:  # tinyproxy closes each client connection after its response (no Connection: close sent)
        gevent.sleep(0.05)
        assert status["sockets_created"] == 3 and agent.close_reasons.get("server_close", 0) >= 2
    assert origin.requests_total == 3


def test_basic_auth_from_the_proxy_url(make_server, make_agent, proxy_py):
    url = proxy_py(auth="user:p@ss")
    origin = _origin(make_server)
    denied = make_agent(keep_alive=True, proxy=url)
    res = denied.get(origin.url("/"))
    assert res.status_code == 407  # the proxy's answer to an http:// request is the response
    res.read()
    agent = make_agent(keep_alive=True, proxy=url.replace("http://", "http://user:p%40ss@"))
    assert agent.get(origin.url("/ok")).read() == b"GET /ok"


def test_the_raw_relay_sees_absolute_form_and_the_credentials(make_server, make_agent, relay):
    origin = _origin(make_server)
    proxy = relay(auth="Basic dTpw")  # u:p
    agent = make_agent(keep_alive=True, proxy=proxy.url.replace("http://", "http://u:p@"))
    assert ga.request("POST", origin.url("/y"), agent=agent, body=b"hi").read() == b"POST /y"
    first = proxy.heads[-1]
    assert first[0] == "POST %s HTTP/1.1" % origin.url("/y") and "Proxy-Authorization: Basic dTpw" in first


# -- https:// through CONNECT tunnels ---------------------------------------------------------------
@pytest.mark.parametrize("kind", ["proxy.py", "tinyproxy"])
def test_https_goes_through_a_connect_tunnel_verified_against_the_origin(tls_server, ca, make_agent, request, kind):
    url = request.getfixturevalue("proxy_py")() if kind == "proxy.py" else request.getfixturevalue("tinyproxy")
    server = tls_server(lambda req: Response(200, b"secure " + req.path.encode()))
    agent = make_agent(ga.HttpsAgent, keep_alive=True, proxy=url, ca=ca.cert_pem.bytes(), timeout=10)
    for i in range(2):
        assert agent.get(server.url("/t%d" % i, host="localhost")).read() == b"secure /t%d" % i
    assert server.sni_names[0] == "localhost"  # SNI is the origin's name, inside the tunnel
    assert agent.status()["sockets_created"] == 1 and _remote_ports(agent) == {int(url.rsplit(":", 1)[1])}
    wrong = make_agent(ga.HttpsAgent, proxy=url, ca=trustme.CA().cert_pem.bytes())
    with pytest.raises(ga.GeventAgentError) as info:
        wrong.get(server.url("/", host="localhost"))
    assert info.value.code == "UNABLE_TO_VERIFY_LEAF_SIGNATURE"  # the origin's certificate, checked


def test_a_407_to_connect_is_a_tunnel_error_with_its_status(tls_server, ca, make_agent, proxy_py):
    url = proxy_py(auth="user:secret")
    server = tls_server()
    agent = make_agent(ga.HttpsAgent, proxy=url, ca=ca.cert_pem.bytes())
    with pytest.raises(ProxyTunnelError) as info:
        agent.get(server.url("/", host="localhost"))
    err = info.value
    assert err.code == "ERR_PROXY_TUNNEL" and err.status_code == 407 and "407" in str(err)
    assert agent.total_socket_count == 0 and agent.close_reasons == {"proxy_tunnel": 1}
    ok = make_agent(ga.HttpsAgent, proxy=url.replace("://", "://user:secret@"), ca=ca.cert_pem.bytes())
    assert ok.get(server.url("/", host="localhost")).read() == b"Hello World"


@pytest.mark.parametrize(
    "mode,status", [("407", 407), ("502", 502), ("close_mid", None)], ids=["407", "502", "closes-mid-reply"]
)
def test_a_tunnel_the_proxy_refuses_raises_and_leaves_nothing(tls_server, ca, make_agent, relay, mode, status):
    server = tls_server()
    proxy = relay(mode=mode)
    agent = make_agent(ga.HttpsAgent, proxy=proxy.url, ca=ca.cert_pem.bytes())
    with pytest.raises(ProxyTunnelError) as info:
        agent.get(server.url("/", host="localhost"))
    assert info.value.status_code == status and info.value.proxy == proxy.url
    assert agent.total_socket_count == 0 and server.connections_total == 0


def test_a_connect_reply_split_across_writes_is_read_whole(tls_server, ca, make_agent, relay):
    server = tls_server()
    proxy = relay(mode="split")
    agent = make_agent(ga.HttpsAgent, keep_alive=True, proxy=proxy.url, ca=ca.cert_pem.bytes())
    assert agent.get(server.url("/", host="localhost")).read() == b"Hello World"


def test_a_proxy_that_hangs_in_connect_is_bounded_by_connect_timeout(tls_server, ca, make_agent, relay):
    server = tls_server()
    proxy = relay(mode="hang")
    agent = make_agent(ga.HttpsAgent, proxy=proxy.url, ca=ca.cert_pem.bytes(), connect_timeout=0.3)
    started = time.monotonic()
    with pytest.raises(RequestTimeout) as info:
        agent.get(server.url("/", host="localhost"))
    assert info.value.code == "ETIMEDOUT" and time.monotonic() - started < 2
    assert agent.total_socket_count == 0


# -- an https:// proxy ----------------------------------------------------------------------------
@pytest.fixture
def tls_relay(relay, ca):
    ctx = gssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1", "proxy.test").configure_cert(ctx)
    return relay(tls=ctx)


def test_an_https_proxy_carries_http_requests(make_server, make_agent, tls_relay, ca):
    origin = _origin(make_server)
    agent = make_agent(keep_alive=True, proxy=tls_relay.url, proxy_tls={"ca": ca.cert_pem.bytes()})
    assert agent.get(origin.url("/p")).read() == b"GET /p"
    assert tls_relay.heads[-1][0] == "GET %s HTTP/1.1" % origin.url("/p")


def test_an_https_proxy_carries_a_tls_tunnel_inside_its_tls(tls_server, make_agent, tls_relay, ca):
    server = tls_server(lambda req: Response(200, b"inner " + req.path.encode()))
    agent = make_agent(
        ga.HttpsAgent,
        keep_alive=True,
        proxy=tls_relay.url,
        proxy_tls={"ca": ca.cert_pem.bytes()},
        ca=ca.cert_pem.bytes(),
    )
    for i in range(3):
        assert agent.get(server.url("/i%d" % i, host="localhost")).read() == b"inner /i%d" % i
    assert tls_relay.connections == 1 and tls_relay.heads[0][0].startswith("CONNECT localhost:")


def test_an_https_proxy_is_verified(make_server, make_agent, tls_relay):
    origin = _origin(make_server)
    agent = make_agent(keep_alive=True, proxy=tls_relay.url, proxy_tls={"ca": trustme.CA().cert_pem.bytes()})
    with pytest.raises(ga.GeventAgentError) as info:
        agent.get(origin.url("/"))
    assert info.value.code == "UNABLE_TO_VERIFY_LEAF_SIGNATURE" and origin.connections_total == 0
    # The failed TLS socket to the proxy is closed at once, not when the error is dropped: the
    # caller holds it here (it was open, and its fd, for as long as the error and its frames lived).
    import gc

    client_side = [
        obj
        for obj in gc.get_objects()
        if isinstance(obj, gssl.SSLSocket) and not obj.server_side and obj.fileno() != -1
    ]
    assert client_side == [] and info.value is not None


@pytest.mark.parametrize("via", ["direct", "https proxy"])
def test_an_untrusted_origin_has_the_same_code_with_or_without_an_https_proxy(
    tls_server, ca, make_agent, tls_relay, via
):
    # Through an https:// proxy the origin's TLS runs in an SSLObject, whose certificate chain
    # was not read: a lone untrusted leaf came out UNABLE_TO_GET_ISSUER_CERT_LOCALLY there and
    # UNABLE_TO_VERIFY_LEAF_SIGNATURE (Node's code for it) direct.
    import gc

    server = tls_server()
    proxy = {"proxy": tls_relay.url, "proxy_tls": {"ca": ca.cert_pem.bytes()}} if via != "direct" else {}
    agent = make_agent(ga.HttpsAgent, ca=trustme.CA().cert_pem.bytes(), **proxy)
    with pytest.raises(ga.GeventAgentError) as info:
        agent.get(server.url("/"))
    assert info.value.code == "UNABLE_TO_VERIFY_LEAF_SIGNATURE" and server.requests == []
    open_client = [
        o for o in gc.get_objects() if isinstance(o, gssl.SSLSocket) and not o.server_side and o.fileno() != -1
    ]
    assert open_client == [] and agent.total_socket_count == 0


# -- choosing the proxy ------------------------------------------------------------------------------
def test_a_request_overrides_the_agents_proxy(make_server, make_agent, relay):
    origin = _origin(make_server)
    one, two = relay(), relay()
    agent = make_agent(keep_alive=True, proxy=one.url)
    assert agent.get(origin.url("/a")).read() == b"GET /a"
    assert agent.get(origin.url("/b"), proxy=two.url).read() == b"GET /b"
    assert agent.get(origin.url("/c"), proxy="").read() == b"GET /c"  # no proxy for this one
    assert len(one.heads) == 1 and len(two.heads) == 1
    assert set(agent.status()["proxies"]) == {one.url, two.url}
    assert len(agent.free_sockets) == 3  # three pools: via one, via two, direct


def test_proxy_env_reads_http_proxy_and_no_proxy(make_server, make_agent, relay, monkeypatch):
    origin = _origin(make_server)
    proxy = relay()
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:1")  # the upper-case one loses
    monkeypatch.setenv("http_proxy", proxy.url)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    agent = make_agent(keep_alive=True, proxy_env=True)
    assert agent.get(origin.url("/env")).read() == b"GET /env" and len(proxy.heads) == 1
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    direct = make_agent(keep_alive=True, proxy_env=True)
    assert direct.get(origin.url("/direct")).read() == b"GET /direct" and len(proxy.heads) == 1
    plain = make_agent(keep_alive=True)  # proxy_env defaults to False, as Node's
    assert plain.get(origin.url("/plain")).read() == b"GET /plain" and len(proxy.heads) == 1


def test_caps_apply_to_tunnels_as_to_any_socket(tls_server, ca, make_agent, relay):
    server = tls_server(lambda req: (gevent.sleep(0.05), Response(200, b"ok"))[1])
    proxy = relay()
    agent = make_agent(ga.HttpsAgent, keep_alive=True, max_sockets=2, proxy=proxy.url, ca=ca.cert_pem.bytes())
    jobs = [gevent.spawn(lambda: agent.get(server.url("/", host="localhost")).read()) for _ in range(8)]
    gevent.joinall(jobs, timeout=10, raise_error=True)
    assert [j.value for j in jobs] == [b"ok"] * 8 and proxy.connections == 2
