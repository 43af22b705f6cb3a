"""geventagent.contrib.requests: requests' API over geventagent agents (AgentAdapter, install()).

Runs unpatched, as the core's tests do: the adapter needs no monkey-patching (gevent sockets), and
requests' own code does no I/O of its own."""

from __future__ import annotations

import gzip
import pickle
import socket
import time
import zlib

import gevent
import gevent.event
import pytest

import geventagent as ga
from geventagent.testing import Response, fault

from .conftest import spawn_all
from .test_proxy import relay  # noqa: F401  (fixture)

requests = pytest.importorskip("requests")
import urllib3  # noqa: E402
from requests.adapters import HTTPAdapter  # noqa: E402
from urllib3.util.retry import Retry  # noqa: E402

from geventagent.contrib import requests as ga_requests  # noqa: E402


@pytest.fixture
def installed():
    ga_requests.install(max_sockets=3)
    yield ga_requests.installed()
    ga_requests.uninstall()


@pytest.fixture
def session():
    s = requests.Session()
    adapter = ga_requests.AgentAdapter(max_sockets=4)
    s.mount("http://", adapter)
    s.mount("https://", adapter)
    yield s
    s.close()
    for agent in (adapter.agent, adapter.https_agent):
        agent.destroy()


def test_install_sends_every_session_through_one_capped_pool(make_server, installed):
    def slow(req):
        gevent.sleep(0.02)
        return Response(200, b"hi")

    server = make_server(slow)
    agent, _ = installed
    assert isinstance(requests.Session().adapters["http://"], HTTPAdapter)  # isinstance keeps working
    # 30 greenlets, each through requests.get (a new Session per call): the cap holds across sessions
    bodies = spawn_all(*[lambda: requests.get(server.url("/x")).content for _ in range(30)])
    assert bodies == [b"hi"] * 30
    assert server.connections_peak <= 3
    assert server.connections_total <= 3  # kept alive across requests.get calls
    assert agent.status()["requests"] == 30
    ga_requests.uninstall()
    assert type(requests.Session().adapters["http://"]) is HTTPAdapter  # uninstall restores


def test_status_headers_cookies_and_json_as_requests_gives_them(make_server, session):
    def handler(req):
        if req.path == "/set":
            return Response(200, b'{"a": 1}', [("Set-Cookie", "k=v; Path=/"), ("X-Two", "1"), ("X-Two", "2")])
        return Response(200, req.headers.get("cookie", "").encode())

    server = make_server(handler)
    r = session.get(server.url("/set"))
    assert (r.status_code, r.reason, r.json()) == (200, "OK", {"a": 1})
    assert r.headers["x-two"] == "1, 2" and r.headers["X-TWO"] == "1, 2"  # urllib3's joining
    assert r.raw.headers.getlist("X-Two") == ["1", "2"]
    assert session.cookies["k"] == "v"
    assert session.get(server.url("/echo")).text == "k=v"  # sent back


def test_stream_false_releases_the_connection_and_stream_true_holds_it_until_read(make_server, session):
    server = make_server(lambda req: Response(200, b"x" * 100_000))
    adapter = session.adapters["http://"]
    r = session.get(server.url("/"))
    assert len(r.content) == 100_000
    assert adapter.agent.status()["free"] == 1
    r = session.get(server.url("/"), stream=True)
    assert adapter.agent.status()["active"] == 1
    chunks = list(r.iter_content(4096))
    assert sum(map(len, chunks)) == 100_000
    assert adapter.agent.status()["active"] == 0 and adapter.agent.status()["free"] == 1


def test_an_unread_streamed_response_closed_never_returns_its_socket_half_read(make_server, session):
    big = b"y" * (4 << 20)
    server = make_server(lambda req: Response(200, big))
    adapter = session.adapters["http://"]
    r = session.get(server.url("/"), stream=True)
    assert r.raw.read(10) == b"y" * 10
    r.close()  # far more than the drain limit left: the socket is closed, the slot released
    status = adapter.agent.status()
    assert (status["active"], status["free"]) == (0, 0), status
    assert session.get(server.url("/")).content == big  # the next request gets a fresh connection


def test_streamed_responses_dropped_unread_free_their_slots_at_once(make_server):
    # requests.get(url, stream=True).status_code, the response never closed: urllib3's
    # HTTPResponse is an io.IOBase, whose finalizer called close(), which drained the rest of the
    # body (up to 1 s) in the greenlet that dropped it while the queue waited: with a body that
    # takes 1.5 s, 2 sockets served 2 requests a second and the rest hit queue_timeout.
    def slow(req):
        req.conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n")
        gevent.sleep(1.5)
        req.conn.send(b"ok")

    server = make_server(slow)
    s = requests.Session()
    adapter = ga_requests.AgentAdapter(max_sockets=2, queue_timeout=2.0)
    s.mount("http://", adapter)
    statuses = spawn_all(*[lambda: s.get(server.url("/"), stream=True).status_code for _ in range(20)])
    assert statuses == [200] * 20
    status = adapter.agent.status()
    assert status["queue_timeouts"] == 0 and status["close_reasons"].get("unread") == 20
    assert (status["active"], status["queued"]) == (0, 0)
    adapter.agent.destroy()


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_content_encoding_is_decoded_and_raw_reads_can_skip_it(make_server, session, encoding):
    text = b"hello " * 1000
    packed = gzip.compress(text) if encoding == "gzip" else zlib.compress(text)
    server = make_server(lambda req: Response(200, packed, [("Content-Encoding", encoding)]))
    assert session.get(server.url("/")).content == text
    r = session.get(server.url("/"), stream=True)
    assert r.raw.read(decode_content=False) == packed


def test_a_short_body_raises_chunked_encoding_error_and_drops_the_socket(make_server, session):
    handler, options = fault("close_mid_body")
    server = make_server(handler, **options)
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        session.get(server.url("/"))
    status = session.adapters["http://"].agent.status()
    assert (status["active"], status["free"]) == (0, 0)


def chunk(data):
    return b"%x\r\n%s\r\n" % (len(data), data)


def test_a_chunked_body_streams_to_iter_content_and_iter_lines_as_it_arrives(make_server, session):
    # A server that streams (events, logs, progress) in chunks: urllib3's stream() reads a
    # chunked body chunk by chunk through http.client's fp, which AgentResponse has not; its
    # fallback, read(amt), waits for amt bytes, so iter_content() and iter_lines() gave nothing
    # until the body ended. Here the server sends its second chunk only once the client has the
    # first (or after 3 s).
    asked = gevent.event.Event()

    def handler(req):
        req.conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n%s\r\n"
        encoding = req.path == "/gzip"
        compressor = zlib.compressobj(wbits=31)
        body = (lambda d: compressor.compress(d) + compressor.flush(zlib.Z_SYNC_FLUSH)) if encoding else bytes
        req.conn.send(head % (b"Content-Encoding: gzip\r\n" if encoding else b""))
        req.conn.send(chunk(body(b"event one\n")))
        on_time = asked.wait(3)
        req.conn.send(chunk(body(b"event two\n" if on_time else b"late\n")))
        req.conn.send((chunk(compressor.flush()) if encoding else b"") + b"0\r\n\r\n")
        asked.clear()

    server = make_server(handler)
    for path in ("/plain", "/gzip"):
        for read in (
            lambda r: r.iter_content(None),
            lambda r: r.iter_content(1024),
            lambda r: r.raw.stream(1024, decode_content=True),
        ):
            r = session.get(server.url(path), stream=True)
            pieces = read(r)
            first = next(pieces)
            asked.set()
            assert (first, b"".join(pieces)) == (b"event one\n", b"event two\n"), path
        r = session.get(server.url(path), stream=True)
        lines = r.iter_lines()
        assert next(lines) == b"event one"
        asked.set()
        assert list(lines) == [b"event two"]
    assert session.adapters["http://"].agent.status()["free"] == 1  # each ended cleanly: pooled


def test_a_break_out_of_a_chunked_stream_closes_it_at_once(make_server, session):
    # for chunk in r.iter_content(None): break -- the generator's close reached urllib3, which
    # closed the body, and ours drained it: on a stream that goes on, the break took the whole
    # drain limit (1 s), where urllib3 over http.client closes the connection at once.
    def endless(req):
        req.conn.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
        gevent.sleep(3)

    server = make_server(endless)
    r = session.get(server.url("/"), stream=True)
    started = time.monotonic()
    for piece in r.iter_content(None):
        assert piece == b"first"
        break
    assert time.monotonic() - started < 0.5
    status = session.adapters["http://"].agent.status()
    assert status["close_reasons"] == {"destroyed": 1} and status["active"] == 0


def test_raw_read_n_gives_n_bytes_unless_the_body_ends_and_read1_what_arrived(make_server, session):
    # http.client's read(n) (and so urllib3's raw.read(n), which requests' r.raw is) gives n bytes
    # unless the body ends first; the adapter gave what had arrived, so a body in several writes
    # came out short: pickle.load(r.raw) failed ("pickle data was truncated") and fixed-size
    # records split. read1() (urllib3 >= 2.3) gives what has arrived.
    payload = pickle.dumps(list(range(3000)))

    def handler(req):
        req.conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # each write its own segment
        req.conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(payload))
        for start in range(0, len(payload), 1000):
            gevent.sleep(0.005)
            req.conn.send(payload[start : start + 1000])

    server = make_server(handler)
    r = session.get(server.url("/"), stream=True)
    assert pickle.load(r.raw) == list(range(3000))
    r = session.get(server.url("/"), stream=True)
    assert r.raw.read(1500) == payload[:1500]
    assert r.raw.read(len(payload)) == payload[1500:]  # what is left: the body ended
    assert r.raw.read(10) == b""
    r = session.get(server.url("/"), stream=True)
    read1 = r.raw.read1 if hasattr(urllib3.HTTPResponse, "read1") else r.raw._fp.read1  # (urllib3 1.x: none)
    assert read1(4096) == payload[:1000]
    assert r.raw._fp.read1(4096) == payload[1000:2000]  # http.client's shape: one write
    r.close()


@pytest.mark.filterwarnings("ignore:Requests has determined the content-length")  # requests' own FileModeWarning
def test_a_text_mode_file_goes_out_whole_though_requests_measured_its_size_on_disk(make_server, session, tmp_path):
    # requests sets Content-Length from the file's size on disk (super_len): for a CRLF file read
    # in text mode the body is shorter (stock requests: ReadTimeout), for a non-UTF-8 one longer
    # (stock: the server gets a cut body). The adapter drops that length and sends it chunked.
    server = make_server(lambda req: Response(200, req.body))
    (tmp_path / "crlf.csv").write_bytes(b"a,b\r\n1,2\r\n")
    (tmp_path / "latin.txt").write_bytes("caf\xe9".encode("latin-1"))
    with open(tmp_path / "crlf.csv") as f:
        assert session.post(server.url("/"), data=f, timeout=2).content == b"a,b\n1,2\n"
    with open(tmp_path / "latin.txt", encoding="latin-1") as f:
        assert session.post(server.url("/"), data=f, timeout=2).content == "caf\xe9".encode()
    with open(tmp_path / "crlf.csv", "rb") as f:  # a binary file keeps requests' length
        assert session.post(server.url("/"), data=f).content == b"a,b\r\n1,2\r\n"
    assert [r.headers.get("content-length") for r in server.requests] == [None, None, "10"]
    # a Content-Length the body does not come to is the caller's header: InvalidHeader, never retried
    mismatch = ga.errors.ContentLengthMismatch("Request body is 2 byte(s) short of the Content-Length")
    assert isinstance(ga_requests._requests_error(mismatch, None, False), requests.exceptions.InvalidHeader)


def test_the_request_target_goes_out_as_requests_prepared_it(make_server, session):
    # requests quotes a URL its own way; ga.request() of a URL string encodes the WHATWG way (as
    # Node), which differs on a query's "'": the adapter sent "%27" where stock requests sends "'".
    server = make_server(lambda req: Response(200, b"ok"))
    for tail in ("/caf\u00e9 x'?q=it's a\u00e9\"b{}|\\", "/a'b?c=d", "/?q='", "/b\u00fccher?x=1&y=%27"):
        url = server.url(tail)
        assert session.get(url).content == b"ok"
        assert server.requests[-1].path == requests.Request("GET", url).prepare().path_url, tail


def test_errors_are_requests_with_the_geventagent_error_as_cause(make_server, session):
    server = make_server()
    port = server.port
    server.stop()
    with pytest.raises(requests.exceptions.ConnectionError) as info:
        session.get("http://127.0.0.1:%d/" % port)
    assert isinstance(info.value.__cause__, ga.errors.ConnectionRefused)

    handler, options = fault("never_answer", t=5)
    silent = make_server(handler, **options)
    with pytest.raises(requests.exceptions.ReadTimeout) as timeout_info:
        session.get(silent.url("/"), timeout=(2, 0.2))
    assert "Read timed out" in str(timeout_info.value)
    # urllib3 prints its pool there (HTTPConnectionPool(host=..., port=...)); no pool read "None:"
    assert str(timeout_info.value).startswith("Agent(host='127.0.0.1', port=%d): Read timed out" % silent.port)
    assert isinstance(timeout_info.value.__cause__, ga.errors.RequestTimeout)
    assert isinstance(timeout_info.value, requests.exceptions.Timeout)

    with pytest.raises(ValueError, match="must be an int, float or None"):
        session.get(silent.url("/"), timeout="soon")
    with pytest.raises(ValueError, match=r"\(connect, read\)"):
        session.get(silent.url("/"), timeout=(1, 2, 3))
    with pytest.raises(requests.exceptions.InvalidURL):
        session.get("http://:80/")


def test_max_retries_follows_urllib3s_retry(make_server):
    seen = []

    def flaky(req):
        seen.append(req.path)
        return Response(503 if len(seen) < 3 else 200, b"done")

    server = make_server(flaky)
    s = requests.Session()
    s.mount("http://", ga_requests.AgentAdapter(max_retries=Retry(total=3, status_forcelist=[503], backoff_factor=0)))
    assert s.get(server.url("/r")).text == "done"
    assert len(seen) == 3
    seen.clear()
    s.mount("http://", ga_requests.AgentAdapter(max_retries=Retry(total=1, status_forcelist=[503], backoff_factor=0)))
    with pytest.raises(requests.exceptions.RetryError):
        s.get(server.url("/r"))
    assert len(seen) == 2

    port = server.port
    server.stop()
    s.mount("http://", ga_requests.AgentAdapter(max_retries=2))
    with pytest.raises(requests.exceptions.ConnectionError):
        s.get("http://127.0.0.1:%d/" % port)


def test_verify_and_cert_map_onto_tls_options(tls_server, ca, tmp_path, session):
    server = tls_server(lambda req: Response(200, b"secure"))
    url = server.url("/", host="localhost").replace("http://", "https://")
    with pytest.raises(requests.exceptions.SSLError) as info:
        session.get(url)  # requests' bundle (certifi) does not trust the test CA
    assert isinstance(info.value.__cause__, ga.tls.TlsError)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    assert session.get(url, verify=str(ca_file)).text == "secure"
    assert session.get(url, verify=False).text == "secure"
    with pytest.raises(OSError, match="invalid path"):
        session.get(url, verify=str(tmp_path / "missing.pem"))
    with pytest.raises(OSError, match="certificate file"):
        session.get(url, verify=str(ca_file), cert=str(tmp_path / "nope.pem"))


def test_a_bad_proxy_url_raises_and_sends_nothing_direct(make_server, session):
    server = make_server()
    with pytest.raises(requests.exceptions.InvalidSchema):
        session.get(server.url("/"), proxies={"http": "ftp://127.0.0.1:1"})
    with pytest.raises(requests.exceptions.InvalidProxyURL):
        session.get(server.url("/"), proxies={"http": "http://:8080"})
    with pytest.raises(requests.exceptions.ProxyError):  # a SOCKS proxy that is not there
        session.get(server.url("/"), proxies={"http": "socks5h://127.0.0.1:1"})
    assert server.requests_total == 0


def test_options_are_strict_and_sessions_pickle(make_server):
    with pytest.raises(ga.errors.UnknownOptionError, match="max_sockets"):
        ga_requests.AgentAdapter(maxSockets=3)
    adapter = ga_requests.AgentAdapter(pool_maxsize=7)
    assert adapter.agent.max_sockets == 7  # pool_maxsize is a hard cap here
    s = requests.Session()
    s.mount("http://", adapter)
    copy = pickle.loads(pickle.dumps(s))
    server = make_server()
    assert copy.get(server.url("/")).status_code == 200
    assert copy.adapters["http://"].agent.max_sockets == 7


def test_uploads_bodies_of_every_kind(make_server, session):
    server = make_server(
        lambda req: Response(200, b"%d:%s" % (len(req.body), req.headers.get("transfer-encoding", "-").encode()))
    )
    assert session.post(server.url("/"), data=b"abc").text == "3:-"
    assert session.post(server.url("/"), data=iter([b"ab", b"cd"])).text == "4:chunked"
    assert session.post(server.url("/"), json={"k": "v"}).text == "10:-"
    assert session.post(server.url("/"), files={"f": ("a.txt", b"hello")}).text.endswith(":-")


# -- install() remembers requests' environment proxy lookup while os.environ is unchanged ----------
def test_installed_requests_see_proxy_environment_changes_at_once(make_server, installed, relay, monkeypatch):  # noqa: F811
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    server = make_server(lambda req: Response(200, req.path.encode()))
    proxy = relay()
    assert requests.get(server.url("/direct")).content == b"/direct" and proxy.heads == []
    monkeypatch.setenv("http_proxy", proxy.url)  # set between two requests, nothing else changed
    assert requests.get(server.url("/proxied")).content == b"/proxied"
    assert [head[0] for head in proxy.heads] == ["GET %s HTTP/1.1" % server.url("/proxied")]
    monkeypatch.setenv("no_proxy", "127.0.0.1")  # the same URL's origin, now bypassed
    assert requests.get(server.url("/bypassed")).content == b"/bypassed" and len(proxy.heads) == 1
    monkeypatch.delenv("no_proxy")
    monkeypatch.delenv("http_proxy")
    assert requests.get(server.url("/direct-again")).content == b"/direct-again" and len(proxy.heads) == 1


def test_the_environment_proxy_memo_answers_as_requests_does_and_uninstall_restores_it(monkeypatch):
    from requests.utils import get_environ_proxies

    ga_requests.install()
    try:
        memo = requests.sessions.get_environ_proxies
        if not ga_requests._environment_only_proxies():
            assert memo is get_environ_proxies  # system proxy settings: no memo
            return
        assert isinstance(memo, ga_requests._EnvironProxies)
        monkeypatch.setenv("https_proxy", "http://proxy.example:3128")
        monkeypatch.setenv("no_proxy", "internal.example,10.0.0.0/8")
        urls = [
            "https://api.example/v1?x=1",
            "https://api.example:8443/",
            "https://svc.internal.example/a",
            "http://10.1.2.3/b",
            "https://u:p@api.example/c",
            "https://api.example?q=/x",
        ]
        for url in urls:
            for no_proxy in (None, "api.example"):
                assert memo(url, no_proxy=no_proxy) == get_environ_proxies(url, no_proxy=no_proxy), (url, no_proxy)
                answer = memo(url, no_proxy=no_proxy)
                answer["mutated"] = "by the caller"
                assert "mutated" not in memo(url, no_proxy=no_proxy)  # each caller gets its own copy
        monkeypatch.setenv("https_proxy", "http://other.example:3128")
        assert memo(urls[0]) == {"https": "http://other.example:3128", "no": "internal.example,10.0.0.0/8"}
    finally:
        ga_requests.uninstall()
    assert requests.sessions.get_environ_proxies is get_environ_proxies
