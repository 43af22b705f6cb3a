"""locust tests run in their own pytest process (``import locust`` monkey-patches everything):
``make test`` runs ``pytest -p no:anyio tests/locust`` after the core suite."""

import base64
import json
import time
from urllib.parse import parse_qs, urlsplit

import gevent
import pytest
from locust.env import Environment
from locust.event import Events

from geventagent.testing import HttpTestServer, Response


def app(req):
    """The routes of locust's own test web server (locust/test/testcases.py), on our server."""
    parts = urlsplit(req.path)
    path, query = parts.path, {k: v[0] for k, v in parse_qs(parts.query).items()}
    form = {k: v[0] for k, v in parse_qs(req.body.decode("latin-1")).items()}
    if path == "/ultra_fast":
        return Response(200, b"This is an ultra fast response")
    if path == "/fast":
        return Response(200, b"This is a fast response")
    if path == "/slow":
        gevent.sleep(float(query.get("delay", 1)))
        return Response(200, b"This is a slow response")
    if path == "/consistent":
        gevent.sleep(0.2)
        return Response(200, b"This is a consistent response")
    if path == "/request_method":
        return Response(200, req.method.encode())
    if path == "/request_header_test":
        return Response(200, req.headers.get("x-header-test", "").encode())
    if path in ("/post", "/put"):
        return Response(200, form.get("arg", "").encode())
    if path == "/get_arg":
        return Response(200, query.get("arg", "").encode())
    if path == "/fail":
        return Response(500, b"This response failed")
    if path == "/status/204":
        return Response(204)
    if path == "/redirect":
        gevent.sleep(float(query.get("delay", 0)))
        return Response(302, b"", headers=[("Location", query.get("url", "/ultra_fast"))])
    if path == "/basic_auth":
        expected = "Basic " + base64.b64encode(b"locust:menace").decode()
        if req.headers.get("authorization") == expected:
            return Response(200, b"Authorized")
        return Response(401, b"No login", headers=[("WWW-Authenticate", 'Basic realm="Login Required"')])
    if path == "/no_content_length":
        return Response(200, b"This response does not have content-length in the header", content_length=False)
    if path.startswith("/streaming/"):
        lines = int(path.rsplit("/", 1)[1])
        req.conn.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for i in range(lines):
            line = b"<span>%d</span>\n" % i
            req.conn.send(b"%x\r\n%s\r\n" % (len(line), line))
            gevent.sleep(0.05)
        req.conn.send(b"0\r\n\r\n")
        return None
    if path == "/rest":
        return Response(200, req.body or b"{}", headers=[("Content-Type", "application/json")])
    if path == "/content_type_missing_charset":
        return Response(200, b"stuff", headers=[("Content-Type", "text/html")])
    if path == "/content_type_regular":
        return Response(200, b"stuff", headers=[("Content-Type", "text/html; charset=utf-8")])
    if path == "/content_type_with_extra_stuff":
        return Response(200, b"stuff", headers=[("Content-Type", "text/html; charset=utf-8; api-version=3.0")])
    if path == "/set_cookie":
        return Response(200, b"", headers=[("Set-Cookie", "%s=%s; Path=/" % (query["name"], query["value"]))])
    if path == "/get_cookie":
        cookies = dict(c.strip().split("=", 1) for c in req.headers.get("cookie", "").split(";") if "=" in c)
        return Response(200, cookies.get(query["name"], "").encode())
    if path == "/gzip":
        import gzip

        return Response(200, gzip.compress(b"packed " * 100), headers=[("Content-Encoding", "gzip")])
    if path == "/echo_headers":
        return Response(200, json.dumps(req.headers))
    if path == "/echo_body":
        return Response(200, json.dumps({"body": req.body.decode("latin-1"), "ct": req.headers.get("content-type")}))
    if path == "/latin1":
        return Response(200, "caf\u00e9".encode("latin-1"), headers=[("Content-Type", "text/plain; charset=latin-1")])
    if path == "/echo_json":
        return Response(200, json.dumps({"body": req.body.decode(), "ct": req.headers.get("content-type")}))
    return Response(404, b"Not found")


@pytest.fixture
def server():
    srv = HttpTestServer(app).start()
    yield srv
    srv.stop()


@pytest.fixture
def environment():
    env = Environment(events=Events(), catch_exceptions=False)
    env.create_local_runner()
    yield env
    env.runner.quit()


@pytest.fixture
def session(environment, server):
    import geventagent as ga
    from geventagent.contrib.locust import AgentSession

    agent = ga.Agent(keep_alive=True, max_sockets=10)
    https = ga.HttpsAgent(keep_alive=True)
    yield AgentSession(environment, "http://127.0.0.1:%d" % server.port, agent=agent, https_agent=https)
    agent.destroy()
    https.destroy()


@pytest.fixture
def events_log(environment):
    log = []
    environment.events.request.add_listener(lambda **kw: log.append(kw))
    return log


def closed_port():
    from gevent import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_until(predicate, timeout=5.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        gevent.sleep(0.01)
    return predicate()
