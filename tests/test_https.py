"""HttpsAgent: verified, cooperative TLS with session reuse (trustme certificates on loopback).
Mirrors Node's https tests of node-agent.md §9 (items 2, 3, 47-52)."""

from __future__ import annotations

import socket
import ssl

import gevent
import pytest
import trustme
from gevent import socket as gsocket
from gevent import ssl as gssl
from gevent.server import StreamServer

import geventagent as ga
from geventagent.testing import Response, fault

from .conftest import record_calls, server_context, spawn_all


def test_verified_request_with_ca_bytes_text_and_path(tls_server, https_agent, ca, tmp_path):
    server = tls_server()
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    for value in (ca.cert_pem.bytes(), ca.cert_pem.bytes().decode(), str(path)):
        res = ga.get(server.url("/", host="localhost"), agent=https_agent(ca=value))
        assert res.read() == b"Hello World"
    assert server.tls_handshakes == 3


def test_https_urls_use_the_https_global_agent(tls_server, ca):
    server = tls_server()
    saved = ga.https_global_agent
    ga.https_global_agent = ga.HttpsAgent(keep_alive=True, ca=ca.cert_pem.bytes())
    try:
        req = ga.ClientRequest(server.url("/", host="localhost"))
        assert req.agent is ga.https_global_agent and req.port == server.port
        assert req.end().read() == b"Hello World"
    finally:
        ga.https_global_agent.destroy()
        ga.https_global_agent = saved


def test_http_agent_for_https_url_is_invalid_protocol():
    with pytest.raises(ValueError) as info:
        ga.ClientRequest("https://localhost/", agent=ga.Agent())
    assert info.value.code == "ERR_INVALID_PROTOCOL"
    assert str(info.value) == 'Protocol "https:" not supported. Expected "http:"'
    with pytest.raises(ValueError) as info:
        ga.ClientRequest("http://localhost/", agent=ga.HttpsAgent())
    assert info.value.code == "ERR_INVALID_PROTOCOL"
    assert ga.ClientRequest("https://example.com/").port == 443


def test_untrusted_ca_is_rejected_with_node_code(tls_server, https_agent):
    server = tls_server()
    agent = https_agent(ca=trustme.CA().cert_pem.bytes())
    with pytest.raises(ga.GeventAgentError) as info:
        ga.get(server.url("/", host="localhost"), agent=agent)
    # Node v20 on this machine, for a lone certificate whose issuer is unknown (OpenSSL's code 21)
    assert info.value.code == "UNABLE_TO_VERIFY_LEAF_SIGNATURE" and info.value.verify_code == 21
    assert agent.total_socket_count == 0
    ok = https_agent(reject_unauthorized=False, ca=None)
    assert ga.get(server.url("/", host="localhost"), agent=ok).read() == b"Hello World"


def test_self_signed_leaf_is_depth_zero(tls_server, https_agent, ca, tmp_path):
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    ca.cert_pem.write_to_path(str(cert))
    ca.private_key_pem.write_to_path(str(key))
    ctx = gssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(cert), str(key))
    server = tls_server(ctx=ctx)
    with pytest.raises(ga.GeventAgentError) as info:
        ga.get(server.url("/", host="localhost"), agent=https_agent(ca=None))
    assert info.value.code == "DEPTH_ZERO_SELF_SIGNED_CERT"


def test_hostname_mismatch_is_altname_invalid(tls_server, https_agent, ca):
    server = tls_server(ctx=server_context(ca, "example.org"))
    with pytest.raises(ga.GeventAgentError) as info:
        ga.get(server.url("/", host="localhost"), agent=https_agent())
    assert info.value.code == "ERR_TLS_CERT_ALTNAME_INVALID"


def test_sni_rules(tls_server, https_agent):
    server = tls_server()
    agent = https_agent()
    ga.get(server.url("/", host="localhost"), agent=agent).read()
    ga.get(server.url("/"), agent=agent).read()  # IP literal: no SNI
    ga.get(server.url("/"), agent=agent, headers={"Host": "sni.test"}).read()  # Node's Host-header rule
    ga.get(server.url("/"), agent=agent, servername="sni.test").read()
    assert server.sni_names == ["localhost", None, "sni.test", "sni.test"]


def test_session_resumption_seen_by_server(tls_server, https_agent):
    server = tls_server()
    agent = https_agent()  # keep_alive False: a new connection each time
    for _ in range(3):
        assert ga.get(server.url("/", host="localhost"), agent=agent).read() == b"Hello World"
    assert server.tls_handshakes == 3 and server.tls_resumed >= 1
    assert len(agent.status()["tls_sessions"]) == 1


def test_https_agent_disable_session_reuse(tls_server, https_agent):
    server = tls_server()
    agent = https_agent(max_cached_sessions=0)
    for _ in range(3):
        ga.get(server.url("/", host="localhost"), agent=agent).read()
    assert server.tls_resumed == 0 and agent.status()["tls_sessions"] == []


def test_https_agent_session_reuse_cache_is_fifo_and_keyed(tls_server, https_agent):
    one, two = tls_server(), tls_server()
    agent = https_agent(max_cached_sessions=1)
    ga.get(one.url("/", host="localhost"), agent=agent).read()
    [key_one] = agent.status()["tls_sessions"]
    ga.get(two.url("/", host="localhost"), agent=agent).read()
    assert agent.status()["tls_sessions"] != [key_one] and len(agent.status()["tls_sessions"]) == 1
    # a cipher change gives a different key
    assert agent.get_name({"host": "a", "port": 1, "ciphers": "AES256-SHA"}) != agent.get_name({"host": "a", "port": 1})


def test_https_agent_session_eviction(tls_server, https_agent, ca):
    server = tls_server()
    agent = https_agent()
    ga.get(server.url("/", host="localhost"), agent=agent).read()
    assert len(agent.status()["tls_sessions"]) == 1
    server.ssl_context = server_context(trustme.CA())  # now the handshake fails
    with pytest.raises(ga.GeventAgentError):
        ga.get(server.url("/", host="localhost"), agent=agent)
    assert agent.status()["tls_sessions"] == []


def test_handshake_is_cooperative(https_agent):
    """A peer that accepts TCP but never answers the handshake: other greenlets keep running."""
    held = []

    def silent(sock, address):
        held.append(sock)
        gevent.sleep(2)

    server = StreamServer(("127.0.0.1", 0), silent)
    server.start()
    ticks = []
    ticker = gevent.spawn(lambda: [ticks.append(1) or gevent.sleep(0.02) for _ in range(100)])
    try:
        with pytest.raises(TimeoutError) as info:
            ga.get("https://127.0.0.1:%d/" % server.server_port, agent=https_agent(connect_timeout=0.3))
        assert info.value.code == "ETIMEDOUT"
        assert len(ticks) >= 8
    finally:
        ticker.kill()
        server.stop()


def test_caps_and_pooling_over_tls(tls_server, https_agent):
    server = tls_server()
    agent = https_agent(keep_alive=True, max_sockets=2)
    results = spawn_all(*[(lambda: ga.get(server.url("/", host="localhost"), agent=agent).read()) for _ in range(40)])
    assert results == [b"Hello World"] * 40
    assert server.connections_total == 2 and server.connections_peak <= 2


def test_tls13_session_tickets_do_not_discard_healthy_free_sockets(tls_server, https_agent):
    server = tls_server()
    agent = https_agent(keep_alive=True, min_version="TLSv1.3")
    ga.get(server.url("/", host="localhost"), agent=agent).read()
    gevent.sleep(0.1)  # tickets have arrived and woken the idle watcher
    req = ga.ClientRequest(server.url("/", host="localhost"), agent=agent)
    assert req.end().read() == b"Hello World"
    assert req.reused_socket and server.connections_total == 1
    assert agent.close_reasons == {}


# -- Node's https tests ---------------------------------------------------------------------------
def test_https_agent_getname():
    agent = ga.HttpsAgent()
    assert agent.get_name({}) == "localhost::" + ":" * 20
    name = agent.get_name(
        {
            "host": "0.0.0.0",
            "port": 443,
            "ca": "ca",
            "cert": "cert",
            "ciphers": "ciphers",
            "key": "key",
            "pfx": "pfx",
            "reject_unauthorized": False,
            "servername": "localhost",
            "min_version": "TLSv1.2",
            "max_version": "TLSv1.3",
            "crl": ["c1", "c2"],
            "secure_options": 0,
            "sigalgs": "sigalgs",
        }
    )
    assert name == ('0.0.0.0:443::ca:cert::ciphers:key:pfx:false:localhost:TLSv1.2:TLSv1.3::c1,c2::::0::"sigalgs"::')


def test_https_origin_keys_are_worked_out_once_per_origin_and_follow_changed_options(
    tls_server, https_agent, monkeypatch
):
    """An HttpsAgent's key (the HTTP key and Node's 20 TLS fields, ~1.5 us to build) is cached per
    request (host, port, servername), as an Agent's is per (host, port): worked out when the first
    request to an origin asks for a socket and when that socket is made, not per request, with or
    without a timeout. A TLS option changed in agent.options gives the next request a new key
    (Node's getName() reads the options on every request), and each servername keeps a key of
    its own."""
    server = tls_server()
    agent = https_agent(keep_alive=True)
    calls = record_calls(monkeypatch, ga.HttpsAgent, "get_name")
    by_name, by_ip = server.url("/", host="localhost"), server.url("/", host="127.0.0.1")
    for _ in range(5):
        assert ga.get(by_name, agent=agent).read() == b"Hello World"
    assert len(calls) == 2  # add_request's and create_socket's, for the first request only
    assert agent.counters["reused"] == 4
    for _ in range(3):
        assert ga.get(by_ip, agent=agent).read() == b"Hello World"
    assert len(calls) == 4 and len(agent.free_sockets) == 2  # no SNI for an IP: a key of its own
    for _ in range(3):  # a request's timeout is in no key
        assert ga.get(by_name, agent=agent, timeout=5).read() == b"Hello World"
    assert len(calls) == 4
    agent.options["ciphers"] = "ECDHE+AESGCM"
    assert ga.get(by_name, agent=agent).read() == b"Hello World"
    assert len(calls) == 6
    [changed] = [name for name in agent.free_sockets if "ECDHE+AESGCM" in name]
    assert len(agent.free_sockets) == 3 and server.tls_handshakes == 3


def test_https_agent_additional_options():
    agent = ga.HttpsAgent()
    base = agent.get_name({"host": "h", "port": 1})
    for field, value in (
        ("dhparam", "d"),
        ("ecdh_curve", "c"),
        ("honor_cipher_order", True),
        ("secure_options", 1),
        ("secure_protocol", "p"),
        ("session_id_context", "s"),
    ):
        assert agent.get_name({"host": "h", "port": 1, field: value}) != base


def test_https_agent_sockets_leak(tls_server, https_agent):
    server = tls_server()
    agent = https_agent(keep_alive=True)
    names = []
    for _ in range(2):
        req = ga.ClientRequest(server.url("/"), agent=agent, headers={"Host": "sni.test"})
        req.on("socket", lambda s: names.append(s.status()["origin"]))
        req.end().read()
    assert len(set(names)) == 1 and names[0].count("sni.test") == 1
    agent.destroy()
    assert agent.sockets == {} and agent.free_sockets == {}


def test_https_agent_create_connection_does_not_mutate_options(https_agent):
    agent = https_agent()
    options = {"host": "127.0.0.1", "port": 1, "servername": "x"}
    snapshot = dict(options)
    socket = agent.create_connection(options)
    assert isinstance(socket, ga.Socket) and options == snapshot
    socket.destroy()


def test_https_agent_constructor():
    agent = ga.HttpsAgent()
    assert agent.default_port == 443 and agent.protocol == "https:" and agent.max_cached_sessions == 100
    with pytest.raises(ValueError):
        ga.HttpsAgent(max_cached_sessions=-1)


def test_leaf_without_its_intermediate_is_rejected(tls_server, https_agent, ca, tmp_path):
    leaf = ca.create_child_ca().issue_cert("localhost")
    cert, key = tmp_path / "leaf.pem", tmp_path / "leaf.key"
    leaf.cert_chain_pems[0].write_to_path(str(cert))  # the server omits the intermediate
    leaf.private_key_pem.write_to_path(str(key))
    ctx = gssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(cert), str(key))
    server = tls_server(ctx=ctx)
    with pytest.raises(ga.GeventAgentError) as info:
        ga.get(server.url("/", host="localhost"), agent=https_agent())
    assert info.value.code == "UNABLE_TO_VERIFY_LEAF_SIGNATURE"  # as Node v20 reports it


def test_a_chain_from_an_unknown_ca_is_unable_to_get_issuer_locally(tls_server, https_agent, ca, tmp_path):
    leaf = ca.create_child_ca().issue_cert("localhost")
    cert, key = tmp_path / "chain.pem", tmp_path / "leaf.key"
    cert.write_bytes(b"".join(p.bytes() for p in leaf.cert_chain_pems))  # leaf and intermediate
    leaf.private_key_pem.write_to_path(str(key))
    ctx = gssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(cert), str(key))
    server = tls_server(ctx=ctx)
    with pytest.raises(ga.GeventAgentError) as info:
        ga.get(server.url("/", host="localhost"), agent=https_agent(ca=trustme.CA().cert_pem.bytes()))
    assert info.value.code == "UNABLE_TO_GET_ISSUER_CERT_LOCALLY"  # as Node v20 reports it (chain of 2)


@pytest.mark.parametrize("size", [3, 20000, 100000], ids=["corked", "ssl-object", "gevent-sendall"])
def test_post_on_a_tls_socket_the_server_just_closed_goes_out_once_on_a_new_connection(tls_server, https_agent, size):
    # A small request is corked (one poll(0) for the round's handed-over sockets before the
    # write), a larger one is written to the SSL object at once and the largest through gevent's
    # sendall (both peek first, TLS-aware): each finds the FIN and the POST goes out once, on a
    # new connection, whatever its method and retry policy.
    bodies = []
    server = tls_server(lambda req: (bodies.append(req.body), Response(200, b"%d" % len(req.body)))[1])
    agent = https_agent(keep_alive=True, max_sockets=1, retry=False)
    assert ga.get(server.url("/first", host="localhost"), agent=agent).read() == b"0"
    [conn] = [c for c in server.connections if not c.closed]
    conn.sock.shutdown(socket.SHUT_WR)  # FIN now; no yield before the POST
    res = ga.request("POST", server.url("/post", host="localhost"), agent=agent, body=b"t" * size)
    assert res.read() == b"%d" % size
    assert bodies == [b"", b"t" * size]
    assert agent.counters["redispatched"] == 1 and server.connections_total == 2


# -- TLS I/O on the SSL object, and corked TLS writes ----------------------------------------------
def test_queued_tls_requests_handed_a_socket_the_server_closed_are_not_lost(tls_server, https_agent):
    # 3 answers per connection, then a silent close; 30 GETs and 12 POSTs (no retries) through
    # one TLS socket: each is queued and handed the socket the one before freed.
    handler, options = fault("close_after", n=3)
    server = tls_server(handler, **options)
    agent = https_agent(keep_alive=True, max_sockets=1, retry=False)
    gets = spawn_all(
        *[lambda i=i: ga.get(server.url("/g%d" % i, host="localhost"), agent=agent).read() for i in range(30)]
    )
    assert gets == [b"/g%d" % i for i in range(30)]
    posts = spawn_all(
        *[
            lambda i=i: ga.request("POST", server.url("/p%d" % i, host="localhost"), body=b"x" * i, agent=agent).read()
            for i in range(12)
        ]
    )
    assert posts == [b"/p%d" % i for i in range(12)]
    assert sorted(r.body for r in server.requests if r.method == "POST") == sorted(b"x" * i for i in range(12))
    assert server.requests_total == 42 and agent.counters["retries"] == 0  # each went out once
    assert agent.counters["redispatched"] == 13 and agent.close_reasons.get("server_close") == 13


def test_a_small_tls_request_is_corked_and_its_response_read(tls_server, https_agent):
    server = tls_server(lambda req: Response(200, req.path.encode()))
    agent = https_agent(keep_alive=True)
    sock = agent.create_connection(dict(agent.options, host="localhost", port=server.port, servername="localhost"))
    sock.connect()
    try:
        sock.send_corked(b"GET /corked HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert sock.status()["corked"] > 0 and sock.bytes_written == 0  # held until the round ends
        head = b""
        with gevent.Timeout(5):
            while b"/corked" not in head:
                data = sock.recv()
                assert data, "EOF before the response"
                head += data
        assert head.startswith(b"HTTP/1.1 200") and sock.bytes_written > 0
    finally:
        sock.destroy()


def test_a_blocked_corked_tls_write_is_finished_whole_by_the_greenlet(ca, https_agent):
    # The server reads nothing for 0.3 s through small buffers: OpenSSL cannot write the 16 KiB
    # record in the hub, and the greenlet writes the same bytes again, waiting (as OpenSSL
    # requires); the server then decrypts every byte in order.
    got = bytearray()

    def slow(sock, address):
        gevent.sleep(0.3)
        try:
            while True:
                data = sock.recv(65536)
                if not data:
                    return
                got.extend(data)
        except OSError:
            return

    ctx = server_context(ca)
    listener = gsocket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    server = StreamServer(listener, slow, ssl_context=ctx)
    server.start()
    agent = https_agent()
    sock = agent.create_connection(
        dict(agent.options, host="localhost", port=server.server_port, servername="localhost")
    )
    try:
        sock.connect()
        sock._sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 2048)
        payload = bytes(range(256)) * 64  # 16384 bytes = CORK_MAX
        sock.send_corked(payload)
        gevent.sleep(0)
        assert sock.status()["write_pending"] == "rest", "OpenSSL wrote it all: the test cannot see a blocked write"
        sock.send(b"")  # finishes the corked write first
        with gevent.Timeout(5):
            while len(got) < len(payload):
                gevent.sleep(0.01)
        assert bytes(got) == payload and sock.bytes_written >= len(payload)
    finally:
        sock.destroy()
        server.stop()


def test_a_tls_response_that_never_comes_times_out_cooperatively(tls_server, https_agent):
    server = tls_server(lambda req: (gevent.sleep(3), Response(200, b"late"))[1])
    agent = https_agent(keep_alive=True, timeout=0.3)
    ticks = []
    ticker = gevent.spawn(lambda: [ticks.append(1) or gevent.sleep(0.02) for _ in range(100)])
    try:
        with pytest.raises(ga.errors.RequestTimeout) as info:
            ga.get(server.url("/slow", host="localhost"), agent=agent)
        assert info.value.code == "ETIMEDOUT" and len(ticks) >= 8
        assert agent.total_socket_count == 0  # destroyed, not pooled
    finally:
        ticker.kill()


@pytest.mark.parametrize(
    "options,code,says",
    [
        ({"cert": ("cert.pem", "key.pem")}, "ERR_INVALID_ARG_TYPE", "pass cert= and key="),
        ({"ca": True}, "ERR_INVALID_ARG_TYPE", '"ca" option must be a path or PEM'),
        ({"ca": "/nonexistent/ca.pem"}, "ERR_INVALID_ARG_VALUE", "names no file: '/nonexistent/ca.pem'"),
        ({"ca": ["/nonexistent/ca.pem"]}, "ERR_INVALID_ARG_VALUE", "names no file"),
        ({"min_version": "TLS1.2"}, "ERR_TLS_INVALID_PROTOCOL_VERSION", "TLS1.2 is not a valid TLS protocol version"),
        ({"servername": 5}, "ERR_INVALID_ARG_TYPE", '"servername" option must be of type string'),
        ({"key": __file__}, "ERR_INVALID_ARG_VALUE", '"key" option needs "cert"'),
    ],
    ids=["cert-pair", "ca-bool", "ca-missing", "ca-list-missing", "min_version", "servername", "key-alone"],
)
def test_bad_tls_option_values_raise_at_construction_not_as_connect_errors(tls_server, options, code, says):
    # Before, each was found building the context at the first request and came out as a
    # NetworkError "connect AttributeError / ENOENT / KeyError 127.0.0.1:PORT", one per request.
    with pytest.raises(ga.GeventAgentError) as info:
        ga.HttpsAgent(**options)
    assert info.value.code == code and says in str(info.value)
    if "key" not in options:  # (a request's key is completed by its agent's cert)
        server = tls_server()
        with pytest.raises(ga.GeventAgentError) as info:
            ga.get(server.url("/"), agent=ga.HttpsAgent(), **options)
        assert info.value.code == code and server.connections_total == 0


def test_tls_options_a_context_refuses_fail_the_request_as_bad_input_and_release_the_slot(tls_server, https_agent):
    server = tls_server()
    agent = https_agent(ciphers="NO-SUCH-CIPHER", max_sockets=1)
    for _ in range(2):
        with pytest.raises(ga.errors.InvalidArgValueError, match="do not make a context") as info:
            ga.get(server.url("/"), agent=agent)
        assert not isinstance(info.value, ga.errors.NetworkError) and info.value.code == "ERR_INVALID_ARG_VALUE"
    assert not agent.sockets and not agent.requests and server.connections_total == 2  # (TCP first)


def test_client_certificates_as_paths_pathlike_or_pem_content(tls_server, ca, tmp_path):
    ctx = server_context(ca)
    ctx.verify_mode = ssl.CERT_REQUIRED  # the server asks for a client certificate
    ca.configure_trust(ctx)
    server = tls_server(ctx=ctx)
    client = ca.issue_cert("client.test")
    cert_path, key_path = tmp_path / "client.pem", tmp_path / "client.key"
    client.cert_chain_pems[0].write_to_path(str(cert_path))
    client.private_key_pem.write_to_path(str(key_path))
    forms = [
        (str(cert_path), str(key_path)),
        (cert_path, key_path),  # os.PathLike: was taken for PEM content and failed to write it out
        (client.cert_chain_pems[0].bytes(), client.private_key_pem.bytes()),
    ]
    for cert, key in forms:
        agent = ga.HttpsAgent(ca=ca.cert_pem.bytes(), cert=cert, key=key)
        assert ga.get(server.url("/", host="localhost"), agent=agent).read() == b"Hello World"
        agent.destroy()
    with pytest.raises(ga.GeventAgentError):  # (and without one, the server refuses)
        ga.get(server.url("/", host="localhost"), agent=ga.HttpsAgent(ca=ca.cert_pem.bytes())).read()


def test_ssl_errors_after_the_handshake_get_node_codes_not_openssl_numbers_as_errnos():
    # ssl errors carry OpenSSL's SSL_ERROR_* number as errno (SSL_ERROR_EOF is 8, ENOEXEC's
    # number): a TLS connection's end read as "write ENOEXEC", an alert as "read EPERM".
    from geventagent.errors import ConnectionReset, from_os_error
    from geventagent.tls import TlsError

    for exc in (
        ssl.SSLEOFError(8, "EOF occurred in violation of protocol"),
        ssl.SSLZeroReturnError(6, "TLS/SSL connection has been closed (EOF)"),
        ssl.SSLSyscallError(5, "Some I/O error occurred"),
    ):
        err = from_os_error(exc, "write")
        assert isinstance(err, ConnectionReset), exc
        assert err.code == "ECONNRESET" and str(err) == "write ECONNRESET"
    alert = ssl.SSLError(1, "[SSL: DECRYPTION_FAILED_OR_BAD_RECORD_MAC] decryption failed or bad record mac")
    alert.reason = "DECRYPTION_FAILED_OR_BAD_RECORD_MAC"
    err = from_os_error(alert, "read")
    assert isinstance(err, TlsError) and err.code == "ERR_SSL_DECRYPTION_FAILED_OR_BAD_RECORD_MAC"
    assert not isinstance(err, ConnectionReset)  # (never retried as a stale socket's reset)


def test_a_server_that_closes_during_the_handshake_is_econnreset_as_in_node(https_agent):
    # A load balancer or an overloaded server dropping the connection before the handshake ends.
    # Node v20: ECONNRESET "Client network socket disconnected before secure TLS connection was
    # established"; it was TlsError ERR_SSL_UNEXPECTED_EOF_WHILE_READING, which no caller
    # checking for a reset would recognise.
    from geventagent.errors import ConnectionReset

    def read_the_hello_and_close(sock, address):
        sock.recv(65536)
        sock.close()

    server = StreamServer(("127.0.0.1", 0), read_the_hello_and_close)
    server.start()
    try:
        agent = https_agent(keep_alive=True)
        with pytest.raises(ConnectionReset) as info:
            agent.get("https://127.0.0.1:%d/" % server.server_port, timeout=5)
        assert info.value.code == "ECONNRESET" and info.value.syscall == "connect"
        assert str(info.value) == "Client network socket disconnected before secure TLS connection was established"
        assert agent.total_socket_count == 0 and agent.counters["create_errors"] == 1
        # requests through the adapter: a connect error, which urllib3's Retry(connect=1) retries
        requests = pytest.importorskip("requests")
        from urllib3.util.retry import Retry

        from geventagent.contrib.requests import AgentAdapter

        session = requests.Session()
        session.mount("https://", AgentAdapter(https_agent=agent, max_retries=Retry(total=None, connect=1, read=0)))
        with pytest.raises(requests.exceptions.ConnectionError):
            session.get("https://127.0.0.1:%d/" % server.server_port, timeout=5)
        assert agent.counters["create_errors"] == 3  # the first attempt and its one retry
    finally:
        server.stop()
