"""The fault matrix: each misbehaving server (geventagent.testing.fault) and its expected outcome,
either transparent recovery or a clear error with Node's code. After each case: no leaked file
descriptor, no leaked greenlet, and agent.status() back to zero after destroy()."""

from __future__ import annotations

import gc
import os
import random
import time

import gevent
import pytest
import trustme
from greenlet import greenlet

import geventagent as ga
from geventagent.errors import GeventAgentError, HttpParseError, NetworkError

from .conftest import spawn_all


def live_greenlets():
    gc.collect()
    return sum(1 for o in gc.get_objects() if isinstance(o, greenlet) and not o.dead and o is not gevent.getcurrent())


def fds():
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture
def leak_check():
    gevent.sleep(0.01)
    before = (fds(), live_greenlets())
    agents = []
    yield agents
    for agent in agents:
        agent.destroy()
        status = agent.status()
        assert status["total_socket_count"] == 0 and status["active"] == 0
        assert status["free"] == 0 and status["queued"] == 0
    gevent.sleep(0.05)
    after = (fds(), live_greenlets())
    assert after[0] <= before[0], "leaked %d fds" % (after[0] - before[0])
    assert after[1] <= before[1], "leaked %d greenlets" % (after[1] - before[1])


def agent_for(leak_check, **kw):
    agent = ga.Agent(keep_alive=True, **kw)
    leak_check.append(agent)
    return agent


def test_idle_close_at_exactly_t_is_transparent(leak_check, ga_fault_server):
    t = 0.05
    server = ga_fault_server("idle_close", t=t)
    agent = agent_for(leak_check, max_sockets=2)
    rng = random.Random(7)
    for _ in range(40):
        assert agent.get(server.url("/")).read() == b"ok"
        gevent.sleep(t + rng.uniform(-0.004, 0.004))
    status = agent.status()
    # a retry, or a request whose reused socket was stale before the write, is dispatched again
    assert status["requests"] == 40 + status["retries"] + status["redispatched"]
    server.stop()


def test_reset_after_n_requests_is_retried_once(leak_check, ga_fault_server):
    server = ga_fault_server("reset_after", n=2)
    agent = agent_for(leak_check, max_sockets=1)
    for _ in range(6):
        assert agent.get(server.url("/")).read() == b"ok"
    assert agent.counters["retries"] >= 2
    assert agent.close_reasons.get("stale", 0) >= 2
    server.stop()


def test_reset_on_reuse_post_is_not_retried_by_default(leak_check, ga_fault_server):
    server = ga_fault_server("reset_after", n=1)
    agent = agent_for(leak_check)
    assert ga.request("POST", server.url("/"), body=b"x", agent=agent).read() == b"ok"
    with pytest.raises(ConnectionResetError) as info:
        ga.request("POST", server.url("/"), body=b"x", agent=agent)
    assert info.value.reused_socket is True and info.value.code == "ECONNRESET"
    # the caller opts in for a replayable body
    assert ga.request("POST", server.url("/"), body=b"x", agent=agent).read() == b"ok"
    assert ga.request("POST", server.url("/"), body=b"x", agent=agent, retry="always").read() == b"ok"
    server.stop()


def test_retry_disabled_surfaces_reused_socket(leak_check, ga_fault_server):
    server = ga_fault_server("reset_after", n=1)
    agent = agent_for(leak_check, retry=False)
    agent.get(server.url("/")).read()
    with pytest.raises(ConnectionResetError) as info:
        agent.get(server.url("/"))
    assert info.value.reused_socket is True
    server.stop()


def test_non_replayable_body_is_never_retried(leak_check, ga_fault_server):
    server = ga_fault_server("reset_after", n=1)
    agent = agent_for(leak_check)
    agent.get(server.url("/")).read()
    with pytest.raises(ConnectionResetError):
        ga.request("PUT", server.url("/"), body=iter([b"once"]), agent=agent)
    server.stop()


def test_stray_bytes_response_ok_socket_dropped(leak_check, ga_fault_server):
    server = ga_fault_server("stray_bytes")
    agent = agent_for(leak_check)
    for _ in range(3):
        assert agent.get(server.url("/")).read() == b"ok"
        gevent.sleep(0.01)
    assert agent.close_reasons.get("unexpected_data", 0) >= 2
    assert agent.free_sockets == {} or all(not s.destroyed for v in agent.free_sockets.values() for s in v)
    server.stop()


def test_trickled_body_arrives_whole_and_is_pooled(leak_check, ga_fault_server):
    server = ga_fault_server("trickle", delay=0.002, body=b"x" * 50)
    agent = agent_for(leak_check, timeout=1.0)
    assert agent.get(server.url("/")).read() == b"x" * 50
    assert agent.status()["free"] == 1
    server.stop()


def test_half_close_drops_the_idle_socket(leak_check, ga_fault_server):
    server = ga_fault_server("half_close")
    agent = agent_for(leak_check)
    assert agent.get(server.url("/")).read() == b"ok"
    gevent.sleep(0.05)
    assert agent.free_sockets == {} and agent.close_reasons == {"server_close": 1}
    assert agent.get(server.url("/")).read() == b"ok"
    server.stop()


def test_close_mid_body_is_econnreset_aborted(leak_check, ga_fault_server):
    server = ga_fault_server("close_mid_body")
    agent = agent_for(leak_check)
    res = agent.get(server.url("/"))
    with pytest.raises(ConnectionResetError) as info:
        res.read()
    assert str(info.value) == "aborted" and res.aborted
    assert agent.total_socket_count == 0
    server.stop()


def test_connection_close_on_nth_response(leak_check, ga_fault_server):
    server = ga_fault_server("close_on_nth", n=2)
    agent = agent_for(leak_check, max_sockets=1)
    for _ in range(6):
        assert agent.get(server.url("/")).read() == b"ok"
    assert server.connections_total == 3 and agent.close_reasons == {"server_close": 3}
    server.stop()


@pytest.mark.parametrize(
    "name,code", [("garbage_status", "HPE_INVALID_STATUS"), ("oversized_headers", "HPE_HEADER_OVERFLOW")]
)
def test_malformed_heads_raise_node_codes(leak_check, ga_fault_server, name, code):
    server = ga_fault_server(name)
    agent = agent_for(leak_check)
    with pytest.raises(HttpParseError) as info:
        agent.get(server.url("/"))
    assert info.value.code == code
    assert agent.total_socket_count == 0
    server.stop()


def test_slow_headers_time_out(leak_check, ga_fault_server):
    server = ga_fault_server("slow_headers", delay=0.2, lines=3)
    agent = agent_for(leak_check, timeout=0.05)
    with pytest.raises(TimeoutError) as info:
        agent.get(server.url("/"))
    assert info.value.code == "ETIMEDOUT"
    server.stop()


def test_information_flood_then_final_response(leak_check, ga_fault_server):
    server = ga_fault_server("info_flood", n=200)
    agent = agent_for(leak_check)
    req = ga.ClientRequest(server.url("/"), agent=agent)
    infos = []
    req.on("information", lambda info: infos.append(info["status_code"]))
    assert req.end().read() == b"ok"
    assert infos == [102] * 200 and agent.status()["free"] == 1
    server.stop()


def test_never_answering_server_times_out(leak_check, ga_fault_server):
    server = ga_fault_server("never_answer", t=5)
    agent = agent_for(leak_check, timeout=0.1)
    with pytest.raises(TimeoutError):
        agent.get(server.url("/"))
    assert agent.total_socket_count == 0
    server.stop()


def test_gevent_timeout_in_the_middle_releases_everything(leak_check, ga_fault_server):
    server = ga_fault_server("never_answer", t=5)
    agent = agent_for(leak_check, max_sockets=1)
    for _ in range(3):
        with pytest.raises(gevent.Timeout):
            with gevent.Timeout(0.05):
                agent.get(server.url("/"))
        assert agent.total_socket_count == 0 and agent.sockets == {}
    server.stop()


def test_kill_in_the_middle_releases_everything(leak_check, ga_fault_server):
    server = ga_fault_server("trickle", delay=0.05, body=b"y" * 20)
    agent = agent_for(leak_check, max_sockets=1)
    readers = [gevent.spawn(lambda: agent.get(server.url("/")).read()) for _ in range(3)]
    gevent.sleep(0.1)
    gevent.killall(readers)
    assert agent.total_socket_count == 0 and agent.requests == {} and agent.sockets == {}
    server.stop()


def test_status_counters_and_close_reasons(leak_check, ga_server):
    agent = agent_for(leak_check, max_requests_per_socket=2)
    for _ in range(5):
        agent.get(ga_server.url("/")).read()
    status = agent.status()
    assert status["requests"] == 5 and status["sockets_created"] == 3
    assert status["close_reasons"] == {"max_requests": 2}
    assert status["origins"] == {"127.0.0.1:%d:" % ga_server.port: {"active": 0, "free": 1, "queued": 0}}


def test_socket_ttl(leak_check, ga_server):
    agent = agent_for(leak_check, socket_ttl=0.1)
    agent.get(ga_server.url("/")).read()
    gevent.sleep(0.15)
    assert agent.free_sockets == {} and agent.close_reasons == {"ttl": 1}
    agent.get(ga_server.url("/")).read()
    assert ga_server.connections_total == 2


def test_keep_alive_hint_timeout_and_max_in_any_order(leak_check, ga_make_server):
    server = ga_make_server(
        lambda req: ga.testing.Response(
            200,
            b"ok",
            headers=[("Keep-Alive", "max=5, timeout=3") if req.path == "/a" else ("Keep-Alive", "timeout=9, max=0")],
        )
    )
    agent = agent_for(leak_check)
    agent.get(server.url("/a")).read()
    socket = next(iter(agent.free_sockets.values()))[0]
    assert socket.status()["idle_limit"] == 2.0  # Node's anchored regex would miss "max=5, timeout=3"
    agent.get(server.url("/b")).read()
    assert agent.free_sockets == {} and agent.close_reasons == {"max_requests": 1}


def test_idle_timer_restarts_in_full_each_time_a_socket_is_pooled(leak_check, ga_server):
    """libev resumes a stopped timer with its remaining time and restarts a fired one at once;
    each pooling must get the full free_socket_timeout (found by the locust load test)."""
    agent = agent_for(leak_check, free_socket_timeout=0.2)
    url = ga_server.url("/")
    agent.get(url).read()
    gevent.sleep(0.12)
    req = ga.ClientRequest(url, agent=agent)
    req.end().read()
    assert req.reused_socket
    gevent.sleep(0.12)  # 0.24 s since the first pooling, 0.12 s since the second
    assert agent.status()["free"] == 1 and agent.close_reasons == {}
    # the timer fires while the socket is busy: pooling it again must not expire it at once
    req = ga.ClientRequest(url, agent=agent)
    req.on("socket", lambda s: s._on_idle_timer())  # as if it fired during the request
    req.end().read()
    assert req.reused_socket
    assert agent.close_reasons == {} and agent.status()["free"] == 1
    gevent.sleep(0.3)
    assert agent.close_reasons == {"idle_timeout": 1}


@pytest.mark.parametrize(
    "eai, code",
    [("EAI_NONAME", "ENOTFOUND"), ("EAI_NODATA", "ENOTFOUND"), ("EAI_AGAIN", "EAI_AGAIN"), ("EAI_FAIL", "EAI_FAIL")],
)
def test_a_name_that_does_not_resolve_has_nodes_getaddrinfo_code(leak_check, monkeypatch, eai, code):
    # Node (lib/internal/errors.js dnsException) reports EAI_NONAME and EAI_NODATA as ENOTFOUND and
    # every other getaddrinfo error by its own name: a resolver that is down for a moment is
    # "getaddrinfo EAI_AGAIN host", which callers retry, not ENOTFOUND, which they should not.
    import socket as stdsocket

    from gevent import socket as gsocket

    number = getattr(stdsocket, eai, None)
    if number is None:
        pytest.skip("%s is not defined on this platform" % eai)

    def getaddrinfo(host, *args, **kw):
        raise stdsocket.gaierror(number, "resolver says no")

    monkeypatch.setattr(gsocket, "getaddrinfo", getaddrinfo)
    agent = agent_for(leak_check)
    with pytest.raises(NetworkError) as info:
        agent.get("http://api.example.test:8080/")
    assert info.value.code == code
    assert str(info.value) == "getaddrinfo %s api.example.test" % code
    assert agent.total_socket_count == 0 and not agent.sockets


# -- Node's `lookup` connect option: the caller's resolver ----------------------------------------
def test_a_lookup_hook_resolves_names_for_the_connect(make_server, make_agent, monkeypatch):
    # Node's `lookup` (net.connect's): the hook is asked for a name's addresses in place of the
    # resolver (here, getaddrinfo would fail for these names), on an agent or a request, with
    # Node's family numbers; an IP literal asks nobody.
    from gevent import socket as gsocket

    def no_resolver(*args, **kw):
        raise AssertionError("getaddrinfo called despite lookup")

    monkeypatch.setattr(gsocket, "getaddrinfo", no_resolver)
    server = make_server()
    asked = []

    def lookup(hostname, family):
        asked.append((hostname, family))
        return "127.0.0.1"

    agent = make_agent(keep_alive=True, lookup=lookup)
    assert agent.get("http://svc.internal:%d/a" % server.port).read() == b"Hello World"
    assert agent.get("http://127.0.0.1:%d/b" % server.port).read() == b"Hello World"
    assert asked == [("svc.internal", 0)]
    # a request's own, each answer form: a pair, a list (a refused ::1 first: the next is tried)
    for answer, family in ((("127.0.0.1", 4), None), (["::1", "127.0.0.1"], None), ([("127.0.0.1", 4)], 4)):
        extra = {"family": family} if family else {}
        res = ga.get("http://other.internal:%d/" % server.port, agent=False, lookup=lambda h, f: answer, **extra)
        assert res.read() == b"Hello World"
    asked.clear()
    ga.get("http://v4.internal:%d/" % server.port, agent=False, family=4, lookup=lookup).read()
    assert asked == [("v4.internal", 4)]  # (Node's family number, not socket.AF_INET)


@pytest.mark.parametrize(
    "answer, code",
    [
        (lambda h, f: "not-an-ip", "ERR_INVALID_IP_ADDRESS"),
        (lambda h, f: [], "ENOTFOUND"),
        (lambda h, f: ["::1"], "ENOTFOUND"),  # none of the family asked for (4)
        ("gaierror", "EAI_AGAIN"),
    ],
    ids=["not-an-ip", "nothing", "wrong-family", "raises"],
)
def test_a_lookup_that_fails_fails_the_request_and_frees_its_slot(make_server, make_agent, answer, code):
    import socket as stdsocket

    if answer == "gaierror":

        def answer(hostname, family):
            raise stdsocket.gaierror(stdsocket.EAI_AGAIN, "resolver down")

    server = make_server()
    agent = make_agent(keep_alive=True, max_sockets=1, family=4)
    with pytest.raises(GeventAgentError) as info:
        ga.get("http://svc.internal:%d/" % server.port, agent=agent, lookup=answer).read()
    assert info.value.code == code
    assert agent.total_socket_count == 0 and not agent.requests
    # the one slot is free again: the next request, with a lookup that answers, goes out
    res = ga.get("http://svc.internal:%d/" % server.port, agent=agent, lookup=lambda h, f: "127.0.0.1")
    assert res.read() == b"Hello World" and server.connections_total == 1


def test_a_lookup_blocks_only_its_own_greenlet_and_a_bad_one_is_refused_up_front(make_server, make_agent):
    server = make_server()

    def slow_lookup(hostname, family):
        gevent.sleep(0.2)  # a resolver of the caller's, cooperative
        return "127.0.0.1"

    agent = make_agent(keep_alive=True, max_sockets=10, lookup=slow_lookup)
    started = time.monotonic()
    bodies = spawn_all(*[lambda: agent.get("http://svc.internal:%d/" % server.port).read() for _ in range(10)])
    assert bodies == [b"Hello World"] * 10
    assert time.monotonic() - started < 1.5  # in turn they would take 2 s
    for call in (lambda: ga.Agent(lookup="dns"), lambda: ga.get("http://svc.internal:%d/" % server.port, lookup=3)):
        with pytest.raises(GeventAgentError) as info:
            call()
        assert info.value.code == "ERR_INVALID_ARG_TYPE" and '"options.lookup"' in str(info.value)
    assert server.connections_total == 10


# -- every failure closes its client socket at once ---------------------------------------------
def _client_sockets_to(ports):
    """The client sockets still open to any of ``ports`` (live objects, whatever holds them)."""
    from gevent import socket as gsocket
    from gevent import ssl as gssl

    gc.collect()
    found = []
    for obj in gc.get_objects():
        if not isinstance(obj, gsocket.socket) or obj.fileno() == -1:
            continue
        if isinstance(obj, gssl.SSLSocket) and obj.server_side:
            continue
        try:
            peer = obj.getpeername()
        except OSError:
            continue  # a listener, or never connected
        if peer[1] in ports:
            found.append(obj)
    return found


FAILURES = [
    "refused",
    "reset at once",
    "head timeout",
    "gevent.Timeout in the head",
    "https handshake timeout",
    "https to a plain server",
    "gevent.Timeout in the handshake",
    "https untrusted",
    "http proxy refused",
    "https proxy silent",
    "gevent.Timeout at an https proxy",
    "https proxy untrusted",
    "connect tunnel silent",
    "socks silent",
    "socks closes",
    "lookup raises",
]


@pytest.mark.parametrize("failure", FAILURES)
def test_a_failed_request_leaves_no_socket_open_while_its_error_lives(make_server, ca, failure):
    # The error (and its traceback's frames) is kept, as a caller that logs or stores it keeps it:
    # a socket only those frames held stayed open until the error went (an https:// proxy's TLS
    # socket did, after a failed handshake).
    import socket as stdsocket
    import ssl

    from gevent import ssl as gssl
    from gevent.server import StreamServer

    from .conftest import server_context

    held = []

    def silent(sock, addr):
        held.append(sock)
        gevent.sleep(10)

    def closer(sock, addr):
        sock.close()

    servers = [StreamServer(("127.0.0.1", 0), silent), StreamServer(("127.0.0.1", 0), closer)]
    for s in servers:
        s.start()
    quiet, shut = (s.server_port for s in servers)
    plain = make_server()
    tls = make_server(ssl_context=server_context(ca))
    spare = stdsocket.socket()
    spare.bind(("127.0.0.1", 0))
    refused = spare.getsockname()[1]
    spare.close()
    trust = ca.cert_pem.bytes()
    untrusted = trustme.CA().cert_pem.bytes()
    proxy_ctx = gssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1").configure_cert(proxy_ctx)

    def https(port, **kw):
        return lambda: ga.get("https://127.0.0.1:%d/" % port, agent=ga.HttpsAgent(**kw))

    def http(port, **kw):
        return lambda: ga.get("http://127.0.0.1:%d/" % port, agent=ga.Agent(**kw))

    calls = {
        "refused": http(refused),
        "reset at once": http(shut, retry=False),
        "head timeout": http(quiet, timeout=0.1),
        "gevent.Timeout in the head": lambda: gevent.with_timeout(0.1, http(quiet)),
        "https handshake timeout": https(quiet, ca=trust, timeout=0.1),
        "https to a plain server": https(plain.port, ca=trust),
        "gevent.Timeout in the handshake": lambda: gevent.with_timeout(0.1, https(quiet, ca=trust)),
        "https untrusted": https(tls.port, ca=untrusted),
        "http proxy refused": http(plain.port, proxy="http://127.0.0.1:%d" % refused),
        "https proxy silent": https(tls.port, ca=trust, proxy="https://127.0.0.1:%d" % quiet, timeout=0.1),
        "gevent.Timeout at an https proxy": lambda: gevent.with_timeout(
            0.1, https(tls.port, ca=trust, proxy="https://127.0.0.1:%d" % quiet)
        ),
        "https proxy untrusted": https(
            tls.port, ca=trust, proxy="https://127.0.0.1:%d" % tls.port, proxy_tls={"ca": untrusted}
        ),
        "connect tunnel silent": https(tls.port, ca=trust, proxy="http://127.0.0.1:%d" % quiet, timeout=0.1),
        "socks silent": http(plain.port, proxy="socks5://127.0.0.1:%d" % quiet, timeout=0.1),
        "socks closes": http(plain.port, proxy="socks5://127.0.0.1:%d" % shut),
        "lookup raises": lambda: ga.get(
            "http://svc.internal:%d/" % plain.port, agent=ga.Agent(), lookup=lambda host, family: 1 / 0
        ),
    }
    try:
        with pytest.raises(BaseException) as info:  # (gevent.Timeout is a BaseException)
            calls[failure]()
        assert not isinstance(info.value, (AssertionError, KeyError)), info.value
        assert _client_sockets_to({refused, quiet, shut, plain.port, tls.port}) == []
    finally:
        for s in servers:
            s.stop()
        for sock in held:
            sock.close()
