"""AgentUser / AgentSession, mirroring locust's test_fasthttp.py (integrations.md §1.4), plus the
cap tests only geventagent needs."""

from __future__ import annotations

import base64
import json
import time

import gevent
import pytest
from gevent.pool import Pool
from locust import task
from locust.exception import CatchResponseError, InterruptTaskSet, LocustError, ResponseError

import geventagent as ga
from geventagent.contrib.locust import AgentSession, AgentUser, BadStatusCode

from .conftest import closed_port

NINE = {
    "request_type",
    "name",
    "response_time",
    "response_length",
    "response",
    "context",
    "exception",
    "start_time",
    "url",
}


def user_class(server, **attrs):
    attrs.setdefault("host", "http://127.0.0.1:%d" % server.port)
    return type("MyUser", (AgentUser,), attrs)


# -- TestFastHttpSession ----------------------------------------------------------------------------
def test_get(session, events_log):
    r = session.get("/ultra_fast")
    assert r.status_code == 200 and r.content == b"This is an ultra fast response"
    assert set(events_log[0]) == NINE and events_log[0]["exception"] is None


def test_connection_error(environment, events_log):
    port = closed_port()
    s = AgentSession(environment, "http://localhost:%d" % port, agent=ga.Agent(), https_agent=ga.HttpsAgent())
    r = s.get("/", headers={"X-Test-Headers": "hello"})
    assert r.status_code == 0 and r.content is None and r.text is None
    assert isinstance(r.error, ConnectionRefusedError)
    assert len(events_log) == 1 and isinstance(events_log[0]["exception"], ConnectionRefusedError)
    assert r.url == r.request.url == "http://localhost:%d/" % port
    assert r.request.headers["X-Test-Headers"] == "hello"


def test_error_message(session, events_log):
    session.request("get", "/wrong_url", context={"foo": "bar"})
    exc = events_log[0]["exception"]
    assert "/wrong_url" in str(exc) and "code=404" in str(exc)
    assert events_log[0]["context"]["foo"] == "bar"


def test_404(session, environment):
    session.get("/wrong_url")
    assert environment.stats.get("/wrong_url", "GET").num_failures == 1


def test_204(session, environment):
    r = session.get("/status/204")
    assert r.status_code == 204 and environment.stats.get("/status/204", "GET").num_failures == 0


def test_streaming_response(session, environment):
    session.get("/streaming/6")  # 6 lines x 50 ms
    assert environment.stats.get("/streaming/6", "GET").avg_response_time > 250
    environment.stats.clear_all()
    r = session.get("/streaming/6", stream=True)
    assert environment.stats.get("/streaming/6", "GET").avg_response_time < 250
    assert b"".join(c.encode() if isinstance(c, str) else c for c in r.iter_content(64)).count(b"<span>") == 6


def test_streaming_response_catch_response(session, environment):
    with session.get("/streaming/6", stream=True, catch_response=True) as r:
        r.failure("streaming failure")
    stats = environment.stats.get("/streaming/6", "GET")
    assert stats.num_requests == 1 and stats.num_failures == 1 and stats.avg_response_time < 250


def test_slow_redirect(session, environment):
    url = "/redirect?url=/redirect&delay=0.5"
    session.get(url)
    assert environment.stats.get(url, "GET").avg_response_time > 500


def test_post_redirect(session, environment):
    url = "/redirect"
    r = session.post(url)
    assert r.status_code == 200
    assert environment.stats.get(url, "POST").num_requests == 1
    assert environment.stats.get(url, "GET").num_requests == 0


@pytest.mark.parametrize("method", ["head", "delete", "patch", "options"])
def test_other_methods(session, environment, method):
    r = getattr(session, method)("/request_method")
    assert r.status_code == 200
    assert environment.stats.get("/request_method", method.upper()).num_requests == 1
    if method != "head":
        assert r.content == method.upper().encode()
    else:
        assert r.content == b""


def test_json_payload(session):
    r = session.post("/echo_json", json={"foo": "bar"})
    assert r.json() == {"body": '{"foo": "bar"}', "ct": "application/json"}


def test_catch_response_fail_successful_request(session, environment):
    with session.get("/ultra_fast", catch_response=True) as r:
        r.failure("nope")
    stats = environment.stats.get("/ultra_fast", "GET")
    assert stats.num_requests == 1 and stats.num_failures == 1


def test_catch_response_pass_failed_request(session, environment):
    with session.get("/fail", catch_response=True) as r:
        r.success()
    stats = environment.stats.get("/fail", "GET")
    assert stats.num_requests == 1 and stats.num_failures == 0


def test_catch_response_multiple_failure_and_success(session, environment):
    with session.get("/ultra_fast", catch_response=True) as r:
        r.failure("nope")
        r.success()
        r.failure("nooo")
        r.success()
    stats = environment.stats.get("/ultra_fast", "GET")
    assert stats.num_requests == 1 and stats.num_failures == 0


def test_catch_response_pass_failed_request_with_other_exception_within_block(session, environment):
    class OtherError(Exception):
        pass

    with pytest.raises(OtherError):
        with session.get("/fail", catch_response=True) as r:
            r.success()
            raise OtherError("wtf")
    stats = environment.stats.get("/fail", "GET")
    assert stats.num_requests == 1 and stats.num_failures == 0


def test_catch_response_default_success(session, environment):
    with session.get("/ultra_fast", catch_response=True):
        pass
    stats = environment.stats.get("/ultra_fast", "GET")
    assert stats.num_requests == 1 and stats.num_failures == 0


def test_catch_response_default_fail(session, environment):
    with session.get("/fail", catch_response=True):
        pass
    stats = environment.stats.get("/fail", "GET")
    assert stats.num_requests == 1 and stats.num_failures == 1


def test_error_message_with_name_replacement(session, events_log):
    before = time.time()
    session.request("get", "/wrong_url/01", name="replaced_url_name", context={"foo": "bar"})
    after = time.time()
    event = events_log[0]
    assert "for url: replaced_url_name" not in str(event["exception"])  # FastHttp keeps the URL
    assert "/wrong_url/01" in str(event["exception"])
    assert event["name"] == "replaced_url_name" and event["url"].endswith("/wrong_url/01")
    assert before <= event["start_time"] <= before + 0.01
    assert event["start_time"] + event["response_time"] / 1000 <= after + 0.01


# -- TestRequestStatsWithWebserver -------------------------------------------------------------------
def test_request_stats_content_length(session, environment):
    session.get("/ultra_fast")
    assert environment.stats.get("/ultra_fast", "GET").avg_content_length == len(b"This is an ultra fast response")


def test_request_stats_no_content_length(session, environment):
    r = session.get("/no_content_length")
    assert environment.stats.get("/no_content_length", "GET").avg_content_length == len(r.content)


def test_request_stats_no_content_length_streaming(session, environment):
    session.get("/no_content_length", stream=True)
    assert environment.stats.get("/no_content_length", "GET").avg_content_length == 0


def test_request_stats_named_endpoint(session, environment):
    session.get("/ultra_fast", name="my_custom_name")
    assert environment.stats.get("my_custom_name", "GET").num_requests == 1


def test_request_stats_query_variables(session, environment):
    session.get("/ultra_fast?query=1")
    assert environment.stats.get("/ultra_fast?query=1", "GET").num_requests == 1


def test_request_stats_put(session, environment):
    session.put("/put", data={"arg": "x"})
    assert environment.stats.get("/put", "PUT").num_requests == 1


def test_request_connection_error(environment):
    s = AgentSession(environment, "http://localhost:%d" % closed_port(), agent=ga.Agent(), https_agent=ga.HttpsAgent())
    r = s.get("/", timeout=0.5)
    assert r.status_code == 0
    stats = environment.stats.get("/", "GET")
    assert stats.num_failures == 1 and stats.num_requests == 1


# -- TestFastHttpUserClass ---------------------------------------------------------------------------
def test_is_abstract():
    assert AgentUser.abstract is True


def test_class_context(server, environment, events_log):
    class MyUser(user_class(server)):
        def context(self):
            return {"user": "u1"}

    u = MyUser(environment)
    u.client.request("get", "/ultra_fast")
    assert events_log[0]["context"]["user"] == "u1"
    u.client.request("get", "/ultra_fast", context={"user": "overridden"})
    assert events_log[1]["context"]["user"] == "overridden"


def test_context_is_exactly_as_given_and_the_response_carries_phase_timings(server, environment, events_log):
    u = user_class(server)(environment)
    u.client.get("/ultra_fast", context={"k": 1})
    u.client.get("/ultra_fast")
    assert events_log[0]["context"] == {"k": 1} and events_log[1]["context"] == {}  # locust's own tests assert it
    first, second = events_log[0]["response"], events_log[1]["response"]
    assert first.reused_socket is False and second.reused_socket is True
    assert first.timings["connect"] > 0 and second.timings["connect"] == 0
    assert {"queue", "ttfb"} <= set(second.timings)


def test_client_request_headers_get_post_put_delete_head(server, environment):
    u = user_class(server)(environment)
    assert u.client.get("/request_header_test", headers={"X-Header-Test": "hello"}).text == "hello"
    assert u.client.get("/get_arg", params={"arg": "hello world"}).text == "hello world"
    assert u.client.get("http://127.0.0.1:%d/ultra_fast" % server.port).text == "This is an ultra fast response"
    assert u.client.post("/post", data={"arg": "hello world"}).text == "hello world"
    assert u.client.put("/put", data={"arg": "hello world"}).text == "hello world"
    assert u.client.delete("/request_method").text == "DELETE"
    assert u.client.head("/request_method").status_code == 200


def test_complex_content_type(server, environment):
    u = user_class(server)(environment)
    for path in ("/content_type_missing_charset", "/content_type_regular", "/content_type_with_extra_stuff"):
        assert u.client.get(path).text == "stuff"


def test_log_request_name_argument(server, environment):
    u = user_class(server)(environment)
    u.client.get("/ultra_fast", name="new name!")
    assert environment.stats.get("new name!", "GET").num_requests == 1


def test_redirect_url_original_path_as_name(server, environment):
    u = user_class(server)(environment)
    u.client.get("/redirect")
    assert len(environment.stats.entries) == 1
    assert environment.stats.get("/redirect", "GET").num_requests == 1


def test_network_timeout_setting(server, environment):
    u = user_class(server, timeout=0.5)(environment)
    start = time.time()
    r = u.client.get("/slow?delay=1")
    assert time.time() - start < 0.7
    assert isinstance(r.error, TimeoutError) and r.error.code == "ETIMEDOUT"
    assert environment.stats.get("/slow?delay=1", "GET").num_failures == 1


def test_max_redirect_setting(server, environment):
    u = user_class(server, max_redirects=0)(environment)
    u.client.get("/redirect")
    assert environment.stats.get("/redirect", "GET").num_failures == 1


def test_allow_redirects_override(server, environment):
    u = user_class(server)(environment)
    r = u.client.get("/redirect", allow_redirects=False)
    assert r.status_code == 302 and r.headers["location"] == "/ultra_fast"
    assert environment.stats.get("/redirect", "GET").num_failures == 0


def test_client_basic_auth(server, environment):
    u = user_class(server, host="http://locust:menace@127.0.0.1:%d" % server.port)(environment)
    assert u.client.get("/basic_auth").text == "Authorized"
    bad = user_class(server, host="http://locust:wrong@127.0.0.1:%d" % server.port)(environment)
    assert bad.client.get("/basic_auth").status_code == 401


def test_shared_agent_max_sockets_1_one_connection(server, environment):
    shared = ga.Agent(keep_alive=True, max_sockets=1)
    cls = user_class(server, agent=shared)
    a, b = cls(environment), cls(environment)
    for u in (a, b, a, b):
        u.client.get("/ultra_fast")
    assert server.connections_total == 1
    shared.destroy()


def test_agent_per_user_instance(server, environment):
    cls = user_class(server)
    a, b = cls(environment), cls(environment)
    for u in (a, b, a, b):
        u.client.get("/ultra_fast")
    assert server.connections_total == 2


def test_client_pool_concurrency(server, environment):
    u = user_class(server, max_sockets=10)(environment)
    pool = Pool()
    start = time.time()
    for _ in range(20):
        pool.spawn(u.client.get, "/slow?delay=0.2")
    pool.join()
    assert 0.3 < time.time() - start < 0.55
    assert server.connections_peak <= 10


def test_max_total_sockets_queues_across_users(server, environment):
    shared = ga.Agent(keep_alive=True, max_sockets=10, max_total_sockets=3)
    cls = user_class(server, agent=shared)
    users = [cls(environment) for _ in range(6)]
    pool = Pool()
    start = time.time()
    for u in users:
        pool.spawn(u.client.get, "/slow?delay=0.1")
    pool.join()
    assert time.time() - start >= 0.19  # 6 requests through 3 sockets: two waves
    assert server.connections_peak <= 3 and environment.stats.total.num_failures == 0
    shared.destroy()


def test_user_killed_mid_request_leaks_no_slot(server, environment):
    shared = ga.Agent(keep_alive=True, max_sockets=1)
    cls = user_class(server, agent=shared)
    u = cls(environment)
    g = gevent.spawn(u.client.get, "/slow?delay=1")
    gevent.sleep(0.1)
    g.kill()
    assert shared.total_socket_count == 0 and shared.sockets == {}
    assert cls(environment).client.get("/ultra_fast").status_code == 200
    shared.destroy()


def test_user_destroys_its_own_agent_on_stop(server, environment):
    class MyUser(user_class(server)):
        @task
        def t(self):
            self.client.get("/ultra_fast")
            raise gevent.GreenletExit()

    u = MyUser(environment)
    own = u.client.agent
    u.client.get("/ultra_fast")
    assert own.total_socket_count == 1
    u.on_stop()
    assert own.total_socket_count == 0


# -- TestFastHttpCatchResponse ----------------------------------------------------------------------
@pytest.fixture
def user(server, environment):
    return user_class(server)(environment)


def test_catch_response(user, environment):
    assert user.client.get("/fail").status_code == 500
    assert environment.stats.total.num_failures == 1
    with user.client.get("/fail", catch_response=True):
        pass
    assert environment.stats.total.num_failures == 2


def test_catch_response_http_manual_fail(user, environment, events_log):
    with user.client.get("/ultra_fast", catch_response=True) as r:
        r.failure("Haha!")
    assert isinstance(events_log[0]["exception"], CatchResponseError)


def test_catch_response_http_manual_success(user, environment):
    with user.client.get("/fail", catch_response=True) as r:
        r.success()
    assert environment.stats.total.num_failures == 0


def test_catch_response_allow_404(user, environment):
    with user.client.get("/does/not/exist", catch_response=True) as r:
        assert r.status_code == 404
        if r.status_code == 404:
            r.success()
    assert environment.stats.total.num_failures == 0


def test_interrupt_taskset_with_catch_response(user, environment):
    with pytest.raises(InterruptTaskSet):
        with user.client.get("/ultra_fast", catch_response=True):
            raise InterruptTaskSet()
    assert environment.stats.total.num_requests == 0 and environment.stats.total.num_failures == 0


def test_catch_response_connection_error_success_and_fail(server, environment):
    u = user_class(server, host="http://127.0.0.1:%d" % closed_port())(environment)
    with u.client.get("/", catch_response=True) as r:
        assert r.status_code == 0 and r.content is None
        r.success()
    assert environment.stats.total.num_failures == 0
    with u.client.get("/", catch_response=True) as r:
        r.failure("Manual fail")
    assert environment.stats.total.num_failures == 1


def test_catch_response_missing_with_block(user):
    r = user.client.get("/fail", catch_response=True)
    with pytest.raises(LocustError):
        r.success()
    with pytest.raises(LocustError):
        r.failure("oops")


def test_missing_catch_response_true(user):
    r = user.client.get("/fail")
    with pytest.raises(LocustError):
        r.success()


def test_rest_success(user, environment):
    with user.rest("POST", "/rest", json={"foo": "bar"}) as r:
        assert r.js["foo"] == "bar"
    assert environment.stats.total.num_failures == 0


def test_rest_fail(user, environment, events_log):
    with user.rest("POST", "/rest", json={"foo": "bar"}) as r:
        assert r.js["foo"] == "NOPE", "Unexpected value of foo in response"
    assert environment.stats.total.num_failures == 1
    assert isinstance(events_log[0]["exception"], CatchResponseError)
    assert "Unexpected value of foo in response" in str(events_log[0]["exception"])


def test_bad_status_is_response_error_subclass_free():
    err = BadStatusCode("http://x/y", 404)
    assert str(err) == "URL http://x/y: code=404" and not isinstance(err, ResponseError)


def test_bad_header_is_raised_not_recorded(user, environment):
    with pytest.raises(ValueError):
        user.client.get("/ultra_fast", headers={"X-Bad": "a\r\nb"})
    assert environment.stats.total.num_requests == 0


def test_https_with_insecure(environment):
    import ssl

    import trustme
    from gevent import ssl as gssl

    from geventagent.testing import HttpTestServer

    ca = trustme.CA()
    ctx = gssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1").configure_cert(ctx)
    srv = HttpTestServer(ssl_context=ctx).start()
    try:
        host = "https://127.0.0.1:%d" % srv.port
        secure = type("S", (AgentUser,), {"host": host})(environment)
        assert secure.client.get("/").status_code == 0  # untrusted CA: verification fails
        insecure = type("I", (AgentUser,), {"host": host, "insecure": True})(environment)
        assert insecure.client.get("/").content == b"Hello World"
    finally:
        srv.stop()


# -- FastHttpUser's drop-in (issue 15): FastHttpSession's constructor, cookies, headers, streams ----
def fast_session(environment, server, **kw):
    return AgentSession("http://127.0.0.1:%d" % server.port, environment.events.request, user=None, **kw)


def test_fasthttpsessions_constructor_and_a_cookie_jar(server, environment):
    s = fast_session(environment, server)
    assert s.post("/set_cookie?name=testcookie&value=1337").status_code == 200
    assert s.get("/get_cookie?name=testcookie").text == "1337"
    other = fast_session(environment, server)  # a jar per session (per user)
    assert other.get("/get_cookie?name=testcookie").text == ""


def test_response_headers_are_case_insensitive(server, environment):
    s = fast_session(environment, server)
    r = s.get("/request_header_test", headers={"X-Header-Test": "hello"})
    assert r.headers.get("Content-Length") == r.headers["content-length"] == "5"
    assert "CONTENT-LENGTH" in r.headers
    assert r.request.headers.get("X-Header-Test") == "hello"


def test_stream_true_reads_lines_and_iter_lines(server, environment, events_log):
    s = fast_session(environment, server)
    r = s.get("/streaming/5", stream=True)
    assert events_log[-1]["response_time"] < 200  # the body is not in the timing
    assert r.stream.readline() == b"<span>0</span>\n"
    assert r.read(6) == b"<span>"
    assert list(r)[0] == b"1</span>\n"
    assert list(s.iter_lines("/streaming/3")) == ["<span>%d</span>" % i for i in range(3)]


def test_iter_lines_yields_each_line_as_it_arrives_and_characters_split_between_reads_whole(environment):
    # An LLM's token stream, or server-sent events: short lines, each written when ready.
    # iter_lines read 1 KiB at a time (as FastHttpSession does), so no line came out before the
    # body had 1 KiB or ended; and it decoded each read alone, so a character split between two
    # writes came out as two U+FFFD. The server writes its second line only once the client has
    # the first (or after 3 s); "é" is split between two writes.
    import socket

    import gevent.event

    from geventagent.testing import HttpTestServer

    asked = gevent.event.Event()

    def handler(req):
        req.conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        req.conn.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        req.conn.send(b"8\r\ndata: 1\n\r\n")
        second = b"data: 2\n" if asked.wait(3) else b"late\n"
        req.conn.send(b"%x\r\n%s\r\n" % (len(second), second))
        gevent.sleep(0.05)
        word = "caf\u00e9\n".encode()
        req.conn.send(b"%x\r\n%s\r\n" % (len(word) - 2, word[:-2]))  # ... up to the first byte of "é"
        gevent.sleep(0.05)
        req.conn.send(b"2\r\n%s\r\n0\r\n\r\n" % word[-2:])

    server = HttpTestServer(handler).start()
    try:
        s = AgentSession("http://127.0.0.1:%d" % server.port, environment.events.request, user=None)
        lines = s.iter_lines("/stream")
        assert next(lines) == "data: 1"
        asked.set()
        assert list(lines) == ["data: 2", "caf\u00e9"]
    finally:
        server.stop()


def test_with_block_needs_catch_response(server, environment):
    s = fast_session(environment, server)
    with pytest.raises(LocustError):
        with s.get("/ultra_fast"):
            pass


def test_network_timeout_and_the_errors_original(server, environment, events_log):
    import socket

    u = user_class(server, network_timeout=0.3)(environment)
    started = time.perf_counter()
    r = u.client.get("/slow?delay=2")
    assert time.perf_counter() - started < 1.5
    assert r.status_code == 0 and isinstance(r.error.original, socket.timeout)
    assert events_log[-1]["exception"] is r.error


def test_concurrency_and_a_shared_client_pool(server, environment):
    pool = ga.Agent(keep_alive=True, max_sockets=1)
    a = user_class(server, client_pool=pool)(environment)
    b = user_class(server, client_pool=pool)(environment)
    before = server.connections_total
    for user in (a, b, b, a):
        assert user.client.get("/ultra_fast").status_code == 200
    assert server.connections_total - before == 1
    u = user_class(server, concurrency=3)(environment)
    assert u.client.agent.max_sockets == 3


def test_compression_like_fasthttpuser_and_an_attribute_to_turn_it_off(server, environment):
    s = fast_session(environment, server)
    assert s.get("/gzip").content == b"packed " * 100
    sent = json.loads(s.get("/echo_headers").text)
    assert sent["accept-encoding"] == "gzip, deflate, br"
    plain = fast_session(environment, server, compress=False)
    assert "accept-encoding" not in json.loads(plain.get("/echo_headers").text)


def test_files_are_uploaded_as_multipart(server, environment):
    s = fast_session(environment, server)
    doc = json.loads(s.post("/echo_body", data={"k": "v"}, files={"f": ("a.txt", b"hello", "text/plain")}).text)
    assert doc["ct"].startswith("multipart/form-data; boundary=")
    assert 'filename="a.txt"' in doc["body"] and "hello" in doc["body"] and 'name="k"' in doc["body"]


def test_unknown_arguments_raise_and_send_nothing(server, environment):
    s = fast_session(environment, server)
    before = server.requests_total
    with pytest.raises(ga.errors.UnknownOptionError, match="params"):
        s.get("/ultra_fast", parms={"a": 1})
    with pytest.raises(ga.errors.UnknownOptionError, match="network_timeout"):
        fast_session(environment, server, network_timout=1)
    assert server.requests_total == before


def test_host_credentials_brackets_and_query_only_paths(server, environment):
    s = AgentSession("http://lo%40cust:men%3Aace@[::1]:8080", environment.events.request)
    assert s.base_url == "http://[::1]:8080"
    assert s.auth_header == "Basic " + base64.b64encode(b"lo@cust:men:ace").decode()
    assert fast_session(environment, server)._build_url("?x=1") == "http://127.0.0.1:%d?x=1" % server.port


def test_encoding_is_settable_and_detected(server, environment):
    s = fast_session(environment, server)
    r = s.get("/latin1")
    assert r.text == "caf\u00e9"
    r = s.get("/latin1")
    r.encoding = "utf-8"
    assert r.text == "caf\ufffd"


def test_a_bad_ssl_context_factory_raises(environment):
    import ssl

    def bad():
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = True
        ctx.verify_mode = ssl.CERT_NONE
        return ctx

    s = AgentSession("https://127.0.0.1:1", environment.events.request, ssl_context_factory=bad)
    with pytest.raises(ValueError, match="check_hostname"):
        s.get("/")


def test_proxy_host_and_port_send_through_the_proxy(environment):
    from geventagent.testing import HttpTestServer, Response

    proxy = HttpTestServer(lambda req: Response(200, req.path.encode())).start()  # echoes the absolute form
    try:
        u = type(
            "Proxied",
            (AgentUser,),
            {"host": "http://origin.invalid", "proxy_host": "127.0.0.1", "proxy_port": proxy.port},
        )(environment)
        assert u.client.get("/x").text == "http://origin.invalid/x"
        s = AgentSession(
            "http://origin.invalid", environment.events.request, proxy_host="127.0.0.1", proxy_port=proxy.port
        )
        assert s.get("/y").text == "http://origin.invalid/y"
    finally:
        proxy.stop()


def test_httpuser_sessions_with_the_requests_adapter_mounted_share_one_capped_pool(server, environment, events_log):
    # locust's HttpUser mounts its own adapter on each user's session (install() does not reach
    # it): the README's recipe mounts one AgentAdapter on every user's session instead.
    from locust.clients import HttpSession

    from geventagent.contrib.requests import AgentAdapter

    shared = AgentAdapter(max_sockets=3)

    def user():
        s = HttpSession("http://127.0.0.1:%d" % server.port, environment.events.request, user=None)
        s.mount("http://", shared)
        for _ in range(5):
            with s.get("/fast", catch_response=True) as r:
                if r.text != "This is a fast response":
                    r.failure("wrong body")

    pool = Pool()
    for _ in range(20):
        pool.spawn(user)
    pool.join(timeout=30)
    assert len(events_log) == 100 and not any(e["exception"] for e in events_log)
    assert {e["response_length"] for e in events_log} == {len("This is a fast response")}
    assert server.connections_peak <= 3 and shared.agent.status()["requests"] == 100  # all through the agent
    shared.agent.destroy()
