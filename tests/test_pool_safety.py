"""Issue 12: no request lost in a saturated pool, no misspelled option dropped, no unread response
holding a slot forever, bounded waiting, a fork child's own counters, and DEBUG lines.

Every server is the loopback HttpTestServer on 127.0.0.1:0; every wait is bounded."""

from __future__ import annotations

import base64
import gc
import logging
import math
import socket as stdsocket
import time
from typing import Any

import gevent
import pytest

import geventagent as ga
from geventagent.errors import (
    GeventAgentError,
    InvalidArgTypeError,
    InvalidHttpTokenError,
    QueueFull,
    QueueTimeout,
    RequestTimeout,
    SocketBadPortError,
    UnknownOptionError,
)
from geventagent.testing import Response, fault

from .conftest import spawn_all
from .test_gevent import external_server, run_python  # noqa: F401  (fixture)


# -- 1. a queued request handed a freed socket is protected as a reused one -----------------------
def test_queued_gets_handed_a_socket_the_server_closed_silently_are_not_lost(make_server, make_agent):
    # The server answers 3 requests per connection as keep-alive and then closes without a word;
    # 30 GETs at once through one socket: each is queued and handed the socket the one before freed.
    handler, options = fault("close_after", n=3)
    server = make_server(handler, **options)
    agent = make_agent(keep_alive=True, max_sockets=1)
    handed = []

    def one(i):
        req = ga.ClientRequest(server.url("/r%d" % i), agent=agent)
        res = req.end()
        handed.append(req.reused_socket)
        return res.read()

    assert spawn_all(*[lambda i=i: one(i) for i in range(30)]) == [b"/r%d" % i for i in range(30)]
    status = agent.status()
    assert server.connections_total == 10 and server.requests_total == 30  # each went out once
    assert status["redispatched"] == 9 and status["retries"] == 0  # found closed before the write
    assert status["reused"] == 20  # served on a connection that had served one before
    assert handed.count(True) == 20 and status["close_reasons"].get("server_close") == 9


@pytest.mark.parametrize("base", [0, 20000], ids=["corked", "over-cork-max"])
def test_queued_posts_handed_a_closed_socket_go_out_once_without_retry(make_server, make_agent, base):
    # base 20000: bodies over CORK_MAX, which a handed-over socket corks too (its check is the round's poll)
    handler, options = fault("close_after", n=2)
    server = make_server(handler, **options)
    agent = make_agent(keep_alive=True, max_sockets=1, retry=False)
    sent = [b"x" * (base + i) for i in range(12)]
    bodies = spawn_all(
        *[lambda i=i: ga.request("POST", server.url("/p%d" % i), body=sent[i], agent=agent).read() for i in range(12)]
    )
    assert bodies == [b"/p%d" % i for i in range(12)]
    assert sorted(r.body for r in server.requests) == sorted(sent)  # never twice
    assert agent.counters["redispatched"] == 5 and agent.counters["retries"] == 0


def test_queued_get_reset_on_a_handed_socket_is_retried_and_says_it_was_reused(make_server, make_agent):
    # The server reads the request and resets: nothing could see it before the write, so the
    # safe retry (idempotent, 0 response bytes) carries it; without the retry the error says why.
    handler, options = fault("reset_after", n=2)
    server = make_server(handler, **options)
    agent = make_agent(keep_alive=True, max_sockets=1)
    assert spawn_all(*[lambda i=i: ga.get(server.url("/g%d" % i), agent=agent).read() for i in range(6)]) == [b"ok"] * 6
    assert agent.counters["retries"] >= 1
    strict = make_agent(keep_alive=True, max_sockets=1, retry=False)
    errors = []

    def one():
        try:
            ga.get(server.url("/"), agent=strict).read()
        except ga.GeventAgentError as exc:
            errors.append(exc)

    spawn_all(*[one for _ in range(3)])
    assert errors and all(e.code == "ECONNRESET" and e.reused_socket for e in errors)


# -- 2. a misspelled option never silently removes a cap ------------------------------------------
@pytest.mark.parametrize(
    "kwargs,nearest",
    [
        ({"maxSockets": 5}, "max_sockets"),
        ({"max_socket": 5}, "max_sockets"),
        ({"keepAlive": True}, "keep_alive"),
        ({"maxTotalSockets": 2}, "max_total_sockets"),
        ({"keepAliveMsecs": 1000}, "keep_alive_initial_delay"),
        ({"pool_maxsize": 4}, "max_sockets"),
        ({"localAddress": "127.0.0.1"}, "local_address"),
        # the peers' names (httpx, aiohttp, undici, agentkeepalive, geventhttpclient): the
        # spelling-nearest valid names were wrong ones (max_connections -> connect_timeout,
        # keep_alive_timeout -> keep_alive_timeout_buffer, idle_timeout -> timeout)
        ({"max_connections": 100}, "'max_total_sockets'"),
        ({"limit_per_host": 10}, "'max_sockets'"),
        ({"concurrency": 10}, "'max_sockets'"),
        ({"max_keepalive_connections": 20}, "'max_free_sockets'"),
        ({"keepalive_expiry": 5}, "'free_socket_timeout'"),
        ({"keepAliveTimeout": 4}, "'free_socket_timeout'"),
        ({"idle_timeout": 4}, "'free_socket_timeout'"),
        ({"socketActiveTTL": 60}, "'socket_ttl'"),
        ({"connection_timeout": 5}, "'connect_timeout'"),
        ({"max_retries": 3}, "a policy, not a count"),
    ],
)
def test_unknown_agent_options_raise_naming_the_nearest(kwargs, nearest):
    with pytest.raises(TypeError) as info:
        ga.Agent(**kwargs)
    err = info.value
    assert isinstance(err, GeventAgentError) and isinstance(err, UnknownOptionError)
    assert err.code == "ERR_INVALID_ARG_VALUE" and nearest in str(err) and "did you mean" in str(err)
    assert err.option == next(iter(kwargs))


def test_https_agent_and_tls_options_are_checked_too():
    with pytest.raises(UnknownOptionError, match="max_cached_sessions"):
        ga.HttpsAgent(maxCachedSessions=1)
    with pytest.raises(UnknownOptionError, match="reject_unauthorized"):
        ga.HttpsAgent(rejectUnauthorized=False)
    with pytest.raises(GeventAgentError, match="not supported") as info:
        ga.HttpsAgent(pfx=b"...")
    assert info.value.code == "ERR_INVALID_ARG_VALUE"
    assert ga.HttpsAgent(reject_unauthorized=False, ciphers="HIGH").options["ciphers"] == "HIGH"
    with pytest.raises(UnknownOptionError, match="'ca'"):
        ga.Agent(ca="/tmp/x.pem")  # a TLS option on an http agent is unknown, not ignored


@pytest.mark.parametrize(
    "call",
    [
        lambda url: ga.request("POST", url, data=b"x"),
        lambda url: ga.get(url, timout=1),
        lambda url: ga.get(url, follow_redirects=True),
        lambda url: ga.ClientRequest(url, maxHeaderSize=100),
        lambda url: ga.ClientRequest({"hostname": "127.0.0.1", "prot": 1}),
        lambda url: ga.Agent().get(url, verify=False),
    ],
    ids=["data", "timout", "follow_redirects", "camelCase", "mapping", "agent.get"],
)
def test_unknown_request_options_raise_before_anything_is_sent(server, call):
    with pytest.raises(UnknownOptionError) as info:
        call(server.url("/"))
    assert info.value.code == "ERR_INVALID_ARG_VALUE" and isinstance(info.value, TypeError)
    assert server.connections_total == 0


def test_unknown_option_messages_say_what_to_use(server):
    with pytest.raises(UnknownOptionError) as info:
        ga.request("POST", server.url("/"), data=b"x")
    assert "body" in str(info.value)
    with pytest.raises(UnknownOptionError) as info:
        ga.get(server.url("/"), timout=1)
    assert "did you mean 'timeout'?" in str(info.value)


@pytest.mark.parametrize(
    "call,where",
    [
        (lambda url: ga.get(url, maxSockets=3), "max_sockets is an Agent option: use agent=Agent(max_sockets=...)"),
        (lambda url: ga.get(url, keep_alive=False), "keep_alive is an Agent option"),
        (lambda url: ga.get(url, keepalive=True), "keep_alive is an Agent option"),  # another client's name
        # (the nearest spelling here is connect_timeout: another option, which would be taken silently)
        (lambda url: ga.get(url, free_socket_timeout=3), "free_socket_timeout is an Agent option"),
        (lambda url: ga.get(url, max_cached_sessions=3), "max_cached_sessions is an HttpsAgent option"),
        (lambda url: ga.Agent(ca="/tmp/x.pem"), "ca is an HttpsAgent option: use HttpsAgent(ca=...)"),
        (lambda url: ga.Agent(verify=False), "reject_unauthorized is an HttpsAgent option"),
        (lambda url: ga.HttpsAgent(headers={"a": "b"}), "headers is a request option"),
        (lambda url: ga.Agent(method="POST"), "method is a request option"),
        (lambda url: ga.get(url, stream=True), "'stream': nothing: a response's body is always streamed"),
    ],
    ids=[
        "maxSockets",
        "keep_alive",
        "keepalive",
        "free_socket_timeout",
        "max_cached_sessions",
        "ca",
        "verify",
        "headers",
        "method",
        "stream",
    ],
)
def test_options_given_in_the_wrong_place_say_where_they_belong(server, call, where):
    with pytest.raises(UnknownOptionError) as info:
        call(server.url("/"))
    assert where in str(info.value) and "did you mean" not in str(info.value)
    assert server.connections_total == 0


# Node's own request options with no counterpart here: each says what to do instead, where the
# nearest spelling named another option (localPort -> default_port, signal -> sigalgs,
# uniqueHeaders -> headers) or nothing was said (lookup, createConnection, insecureHTTPParser).
@pytest.mark.parametrize(
    "name,says",
    [
        ("localPort", "local_address= binds the address"),
        ("signal", "req.destroy() or wrap the call in gevent.Timeout"),
        ("uniqueHeaders", "a header given once"),
        ("joinDuplicateHeaders", "res.raw_headers"),
        ("hints", "lookup=(hostname, family)"),
        ("createConnection", "override its create_connection"),
        ("insecureHTTPParser", "parsed strictly"),
        ("highWaterMark", "read(size)"),
        ("cookies", "a Cookie header"),
    ],
)
def test_nodes_options_without_a_counterpart_say_what_to_do_instead(server, name, says):
    for call in (lambda: ga.get(server.url("/"), **{name: 1}), lambda: ga.Agent(**{name: 1})):
        with pytest.raises(UnknownOptionError) as info:
            call()
        assert says in str(info.value) and "did you mean" not in str(info.value), str(info.value)
    assert server.connections_total == 0


def _request_with(url: str, agent: Any = None, **options: Any) -> Any:
    return ga.request(options.pop("method", "GET"), url, agent=agent, **options)


@pytest.mark.parametrize(
    "options,error,code,says",
    [
        ({"auth": 5}, InvalidArgTypeError, "ERR_INVALID_ARG_TYPE", '"user:password" string'),
        ({"headers": "X-A: 1"}, InvalidArgTypeError, "ERR_INVALID_ARG_TYPE", "list of (name, value) pairs"),
        ({"headers": [("X-A", "1", "2")]}, InvalidArgTypeError, "ERR_INVALID_ARG_TYPE", "Received an item"),
        (
            {"method": "GE T"},
            InvalidHttpTokenError,
            "ERR_INVALID_HTTP_TOKEN",
            'Method must be a valid HTTP token ["GE T"]',
        ),
        ({"params": 5}, InvalidArgTypeError, "ERR_INVALID_ARG_TYPE", '"params" argument'),
        ({"agent": ga.Agent}, InvalidArgTypeError, "ERR_INVALID_ARG_TYPE", "the class Agent: pass an instance"),
        ({"timeout": (1, 2)}, InvalidArgTypeError, "ERR_INVALID_ARG_TYPE", "use connect_timeout= and timeout="),
        ({"method": "POST", "body": [b"a", 5]}, InvalidArgTypeError, "ERR_INVALID_ARG_TYPE", "not int"),
    ],
    ids=["auth-int", "headers-str", "headers-triple", "method", "params", "agent-class", "timeout-pair", "body-list"],
)
def test_careless_request_inputs_raise_node_codes_and_send_nothing(server, make_agent, options, error, code, says):
    agent = make_agent(keep_alive=True)
    ga.get(server.url("/"), agent=agent).read()  # a pooled socket: it must stay pooled
    options.setdefault("agent", agent)
    with pytest.raises(error) as info:
        _request_with(server.url("/"), **options)
    assert info.value.code == code and says in str(info.value)
    assert server.requests_total == 1 and server.connections_total == 1
    assert sum(map(len, agent.free_sockets.values())) == 1 and not agent.sockets
    ga.get(server.url("/"), agent=agent).read()
    assert server.connections_total == 1  # the same socket served the next request


@pytest.mark.parametrize("port", [99999, -1, "abc", "80.5", 80.5, True])
def test_a_port_out_of_range_is_err_socket_bad_port_before_anything_is_sent(port):
    with pytest.raises(SocketBadPortError) as info:
        ga.ClientRequest({"host": "127.0.0.1", "port": port})
    assert info.value.code == "ERR_SOCKET_BAD_PORT" and "should be >= 0 and < 65536" in str(info.value)
    assert isinstance(info.value, ValueError) and isinstance(info.value, TypeError)


def test_numeric_string_ports_and_auth_pairs_are_taken(server, make_agent):
    agent = make_agent(keep_alive=True)
    req = ga.ClientRequest({"host": "127.0.0.1", "port": " %d " % server.port, "agent": agent}, auth=("us:er", "pä"))
    assert req.port == server.port
    req.end().read()
    seen = server.requests[-1].headers["authorization"]
    assert seen == "Basic " + base64.b64encode("us:er:pä".encode("utf-8")).decode("ascii")


def test_write_of_a_chunk_that_is_not_bytes_raises_and_sends_nothing_of_it(make_server, make_agent):
    server = make_server(lambda req: Response(200, req.body))
    req = ga.ClientRequest(server.url("/"), method="POST", agent=make_agent(keep_alive=True))
    req.write(b"a")
    for chunk in (5, [1, 2], None):
        with pytest.raises(InvalidArgTypeError, match='"chunk" argument') as info:
            req.write(chunk)
        assert info.value.code == "ERR_INVALID_ARG_TYPE"
    assert req.end(b"b").read() == b"ab"  # (bytes(5) would have been five NUL bytes)


def test_with_on_a_request_destroys_it_unless_it_was_ended(server, make_agent):
    agent = make_agent(keep_alive=True, max_sockets=1)
    with ga.ClientRequest(server.url("/"), method="POST", agent=agent) as req:
        req.write(b"part of a body")
    assert req.destroyed and not agent.sockets and server.requests_total == 0
    with pytest.raises(LookupError):
        with ga.ClientRequest(server.url("/"), agent=agent) as req:
            raise LookupError("the caller's own error, before end()")
    assert req.destroyed and not agent.sockets and not agent.requests
    with ga.ClientRequest(server.url("/"), agent=agent) as req:
        res = req.end()
    res.read()
    assert (
        res.status_code == 200 and res.complete and sum(map(len, agent.free_sockets.values())) == 1
    )  # ended: left alone, pooled


def test_json_and_params_have_requests_meaning(make_server):
    server = make_server(lambda req: Response(200, req.path.encode()))
    res = ga.request("POST", server.url("/items?a=1"), json={"name": "x", "n": [1, 2]}, params={"b": "2 3"})
    assert res.read() == b"/items?a=1&b=2+3"
    sent = server.requests[-1]
    assert sent.body == b'{"name":"x","n":[1,2]}' and sent.headers["content-type"] == "application/json"
    assert sent.headers["content-length"] == str(len(sent.body))
    res = ga.get(server.url("/q"), params=[("k", "v"), ("k", "w")], headers={"Content-Type": "text/x"})
    assert res.read() == b"/q?k=v&k=w"
    with pytest.raises(GeventAgentError):
        ga.request("POST", server.url("/"), json={}, body=b"both")
    # requests' None: a param left out (urlencode sent "None"), json=None no body (it sent "null")
    res = ga.get(server.url("/n"), params={"a": None, "b": [1, None], "c": "x"})
    assert res.read() == b"/n?b=1&c=x"
    ga.request("POST", server.url("/empty"), json=None).read()
    assert server.requests[-1].body == b"" and "content-type" not in server.requests[-1].headers
    before = server.connections_total
    with pytest.raises(TypeError) as info:  # not serializable: a clear error, nothing sent
        ga.request("POST", server.url("/"), json={"when": object()})
    assert info.value.code == "ERR_INVALID_ARG_TYPE" and "JSON" in str(info.value)
    assert server.connections_total == before and len(server.requests) == 4


# -- 3. an unread response cannot hang the pool ---------------------------------------------------
def _slow_body(req):
    # head first, the body a moment later: the response is returned before its body is complete
    req.conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\n")
    gevent.sleep(0.05)
    req.conn.send(b"x" * 20)


def test_responses_dropped_unread_release_their_slots(make_server, make_agent):
    server = make_server(_slow_body)
    agent = make_agent(keep_alive=True, max_sockets=5)  # no timeout: only dropping them frees them

    def early_return():
        res = agent.get(server.url("/"))
        if res.status_code == 200:
            return res.status_code  # never read, never closed

    with gevent.Timeout(5):
        assert [early_return() for _ in range(12)] == [200] * 12
    gevent.sleep(0.01)
    assert agent.close_reasons.get("unread") == 12 and agent.total_socket_count == 0


def test_an_unread_response_times_out_frees_its_slot_and_raises_etimedout_on_read(make_server, make_agent):
    server = make_server(_slow_body)
    agent = make_agent(keep_alive=True, max_sockets=1, timeout=0.3)
    events = []
    req = ga.ClientRequest(server.url("/held"), agent=agent)
    req.on("timeout", lambda: events.append("timeout"))
    held = req.end()  # kept, never read
    started = time.monotonic()
    with gevent.Timeout(5):
        assert ga.get(server.url("/next"), agent=agent).read() == b"x" * 20  # waits for the slot
    assert 0.25 <= time.monotonic() - started < 2
    assert events == ["timeout"] and agent.close_reasons.get("timeout") == 1
    with pytest.raises(RequestTimeout) as info:
        held.read()
    assert info.value.code == "ETIMEDOUT"


def test_a_response_being_read_is_not_timed_out_by_the_unread_timer(make_server, make_agent):
    def drip(req):
        req.conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\n")
        for _ in range(8):
            gevent.sleep(0.1)
            req.conn.send(b"d")

    server = make_server(drip)
    agent = make_agent(keep_alive=True, timeout=0.25)
    res = agent.get(server.url("/"))
    assert res.read() == b"d" * 8  # each byte resets the inactivity limit while someone reads
    assert agent.status()["free"] == 1


def test_reading_or_closing_a_held_response_still_pools_the_socket(make_server, make_agent):
    server = make_server(_slow_body)
    agent = make_agent(keep_alive=True, max_sockets=1, timeout=5)
    res = agent.get(server.url("/"))
    gc.collect()
    assert res.read() == b"x" * 20 and agent.status()["free"] == 1
    res2 = agent.get(server.url("/"))
    res2.close()  # drains the short remainder
    assert agent.status()["free"] == 1 and agent.close_reasons == {}
    del res, res2
    gc.collect()
    gevent.sleep(0.01)
    assert agent.close_reasons == {} and agent.status()["free"] == 1  # finished ones are not closed


# -- 4. bounded waiting ---------------------------------------------------------------------------
def _slow(req):
    gevent.sleep(0.5)
    return Response(200, b"slow")


def test_queue_timeout_fails_a_waiting_request_that_sent_nothing(make_server, make_agent):
    server = make_server(_slow)
    agent = make_agent(keep_alive=True, max_sockets=1, queue_timeout=0.1)
    first = gevent.spawn(lambda: agent.get(server.url("/first")).read())
    gevent.sleep(0.01)
    started = time.monotonic()
    with pytest.raises(QueueTimeout) as info:
        agent.get(server.url("/second"))
    waited = time.monotonic() - started
    assert 0.09 <= waited < 0.4
    err = info.value
    assert isinstance(err, TimeoutError) and isinstance(err, GeventAgentError)
    assert err.code == "ERR_AGENT_QUEUE_TIMEOUT"
    assert first.get(timeout=5) == b"slow"
    assert [r.path for r in server.requests] == ["/first"]  # the second was never sent
    status = agent.status()
    assert status["queue_timeouts"] == 1 and status["queued"] == 0


def test_queue_timeout_per_request_overrides_the_agents(make_server, make_agent):
    server = make_server(_slow)
    agent = make_agent(keep_alive=True, max_sockets=1, queue_timeout=0.05)
    first = gevent.spawn(lambda: agent.get(server.url("/")).read())
    gevent.sleep(0.01)
    assert agent.get(server.url("/"), queue_timeout=math.inf).read() == b"slow"  # waits as long as it takes
    first.get(timeout=5)
    lenient = make_agent(keep_alive=True, max_sockets=1)
    busy = gevent.spawn(lambda: lenient.get(server.url("/")).read())
    gevent.sleep(0.01)
    with pytest.raises(QueueTimeout):
        lenient.get(server.url("/"), queue_timeout=0.05)
    busy.get(timeout=5)


def test_max_queued_refuses_at_once_and_sends_nothing(make_server, make_agent):
    server = make_server(_slow)
    agent = make_agent(keep_alive=True, max_sockets=1, max_queued=1)
    running = gevent.spawn(lambda: agent.get(server.url("/a")).read())
    gevent.sleep(0.01)
    waiting = gevent.spawn(lambda: agent.get(server.url("/b")).read())
    gevent.sleep(0.01)
    started = time.monotonic()
    with pytest.raises(QueueFull) as info:
        agent.get(server.url("/c"))
    assert time.monotonic() - started < 0.05 and info.value.code == "ERR_AGENT_QUEUE_FULL"
    assert running.get(timeout=5) == waiting.get(timeout=5) == b"slow"
    assert sorted(r.path for r in server.requests) == ["/a", "/b"]
    status = agent.status()
    assert status["queue_full"] == 1
    assert status["queue_wait"]["count"] == 1 and 0.3 < status["queue_wait"]["max_seconds"] < 2
    assert status["queue_wait"]["total_seconds"] == status["queue_wait"]["max_seconds"]


def test_killed_and_destroyed_waiters_leave_the_queue_and_their_timers(make_server, make_agent):
    server = make_server(_slow)
    agent = make_agent(keep_alive=True, max_sockets=1, queue_timeout=0.2)
    running = gevent.spawn(lambda: agent.get(server.url("/")).read())
    gevent.sleep(0.01)
    waiters = [gevent.spawn(lambda: agent.get(server.url("/"))) for _ in range(5)]
    gevent.sleep(0.01)
    assert agent.status()["queued"] == 5
    gevent.killall(waiters)
    assert agent.status()["queued"] == 0 and agent.requests == {}
    gevent.sleep(0.3)
    assert agent.counters["queue_timeouts"] == 0  # their timers went with them
    assert running.get(timeout=5) == b"slow"


# -- 5. after fork, the child's own state ---------------------------------------------------------
def test_a_fork_child_reports_its_own_state(external_server):  # noqa: F811
    out = run_python(
        """
        import os, json, gevent, geventagent as ga
        url = "http://127.0.0.1:%d/"
        agent = ga.Agent(keep_alive=True, max_sockets=3)
        gevent.joinall([gevent.spawn(lambda: agent.get(url).read()) for _ in range(3)])
        before = agent.status()
        pid = gevent.fork()
        if pid == 0:
            s = agent.status()
            ok = (s["total_socket_count"] == 0 and s["free"] == 0 and s["requests"] == 0
                  and s["close_reasons"] == {"fork": 3} and s["sockets_closed"] == 3
                  and "total=0" in repr(agent))
            os._exit(0 if ok else 3)
        _, status = os.waitpid(pid, 0)
        print(json.dumps({"child": os.waitstatus_to_exitcode(status), "parent_free": agent.status()["free"],
                          "parent_requests": agent.status()["requests"], "before": before["requests"]}))
        agent.destroy()
        """
        % external_server
    )
    assert out.returncode == 0, out.stderr
    assert __import__("json").loads(out.stdout) == {"child": 0, "parent_free": 3, "parent_requests": 3, "before": 3}


# -- 6. see what it does --------------------------------------------------------------------------
def test_debug_lines_on_the_geventagent_logger(make_server, make_agent, caplog):
    handler, options = fault("close_after", n=2)
    server = make_server(handler, **options)
    agent = make_agent(keep_alive=True, max_sockets=1)
    with caplog.at_level(logging.DEBUG, logger="geventagent"):
        spawn_all(*[lambda: ga.get(server.url("/"), agent=agent).read() for _ in range(4)])
        ga.get(server.url("/"), agent=agent).read()
    text = "\n".join(r.getMessage() for r in caplog.records if r.name == "geventagent")
    for needle in (
        "socket created",
        "request queued",
        "request dequeued",
        "socket freed",
        "socket reused",
        "socket closed",
        "server_close",
        "redispatch GET",
    ):
        assert needle in text, needle


def test_no_debug_lines_when_debug_is_off(server, make_agent, caplog):
    agent = make_agent(keep_alive=True)
    with caplog.at_level(logging.INFO, logger="geventagent"):
        for _ in range(3):
            agent.get(server.url("/")).read()
    assert [r for r in caplog.records if r.name == "geventagent"] == []


@pytest.mark.parametrize(
    "listener", ["request close", "response end", "response close", "agent free", "agent free, prepended"]
)
def test_a_listener_that_raises_at_the_end_of_a_response_never_keeps_its_socket(make_server, make_agent, listener):
    # The request's 'close' and the response's 'end' come before the socket's 'free' (Node's
    # order): one that raised left the socket active for good, and with max_sockets=1 every later
    # request waited forever. (In Node the exception would end the process.)
    server = make_server(lambda req: Response(200, b"x" * 100000 if req.path == "/big" else b"ok"))
    agent = make_agent(keep_alive=True, max_sockets=1)

    class Boom(Exception):
        pass

    def boom(*args):
        raise Boom(listener)

    req = ga.ClientRequest(server.url("/big"), agent=agent)
    if listener == "request close":
        req.on("close", boom)
    elif listener == "agent free":
        agent.once("free", boom)
    elif listener == "agent free, prepended":  # before the agent's own 'free' listener
        agent.prepend_once_listener("free", boom)
    else:
        req.on("response", lambda res: res.on(listener.split()[1], boom))
    with gevent.Timeout(5):
        with pytest.raises(Boom):
            req.end().read()
        assert agent.sockets == {}  # released: pooled (the exchange itself ended cleanly)
        assert [ga.get(server.url("/"), agent=agent).read() for _ in range(3)] == [b"ok"] * 3
    assert server.connections_total == 1


@pytest.mark.parametrize("where", ["head", "body", "unread body"])
def test_a_timeout_listener_that_raises_never_keeps_the_socket(make_server, make_agent, where):
    # The request's 'timeout' is emitted before it is failed and its socket destroyed: a listener
    # that raised skipped both, the socket stayed active and with max_sockets=1 every later request
    # waited forever.
    def handler(req):
        if req.path == "/slow-head":
            gevent.sleep(1)
            return Response(200, b"late")
        if req.path == "/slow-body":
            req.conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nab")
            gevent.sleep(1)
            return None
        return Response(200, b"x" * 100000 if req.path == "/big" else b"ok")

    server = make_server(handler)
    agent = make_agent(keep_alive=True, max_sockets=1)
    path = {"head": "/slow-head", "body": "/slow-body", "unread body": "/big"}[where]
    raised = []

    def boom():
        raised.append(where)
        raise ValueError("a listener's own error")

    with gevent.Timeout(5):
        req = ga.ClientRequest(server.url(path), agent=agent, timeout=0.2)
        req.on("timeout", boom)
        if where == "unread body":
            res = req.end()  # held, never read: the unread timer fails it from the hub
            gevent.sleep(0.5)
            del res
        else:
            with pytest.raises(ValueError):
                req.end().read()
        assert raised == [where]
        assert agent.sockets == {}
        assert ga.get(server.url("/"), agent=agent).read() == b"ok"


@pytest.mark.parametrize("event", ["free", "close", "error"])
def test_a_socket_listener_that_raises_before_the_agents_own_never_leaks_the_socket(make_server, make_agent, event):
    # The agent keeps its counts by its own listeners on each socket ('free': pool or hand over;
    # 'close': forget it). A listener put before them (prepend_listener) that raised skipped them,
    # and so did an 'error' listener that raised during destroy(), which emits 'close' after it:
    # the socket stayed counted for good and with max_sockets=1 every later request waited forever.
    def handler(req):
        if req.path == "/reset":
            req.conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nab")
            req.conn.reset()
            return None
        return Response(200, b"ok")

    server = make_server(handler)
    agent = make_agent(keep_alive=True, max_sockets=1)

    def boom(*args):
        raise ValueError("a listener's own error")

    if event == "error":  # destroy(err) emits 'error', then 'close': a refused connection
        probe = stdsocket.socket()
        probe.bind(("127.0.0.1", 0))
        url = "http://127.0.0.1:%d/" % probe.getsockname()[1]  # bound, not listening
    else:
        url = server.url("/" if event == "free" else "/reset")
    req = ga.ClientRequest(url, agent=agent)
    req.on("socket", lambda socket: socket.prepend_once_listener(event, boom))
    with gevent.Timeout(5):
        with pytest.raises((ValueError, ga.GeventAgentError)):
            req.end().read()
        gevent.sleep(0.05)
        assert agent.sockets == {} and agent.total_socket_count == (1 if event == "free" else 0)
        assert [ga.get(server.url("/"), agent=agent).read() for _ in range(2)] == [b"ok"] * 2
    if event == "error":
        probe.close()
