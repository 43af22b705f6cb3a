"""Fixtures: loopback servers on 127.0.0.1:0, agents that are destroyed after each test, and a
leak check (file descriptors, agent gauges) around every test."""

from __future__ import annotations

import os
import ssl
from typing import Any, Callable, List

import gevent
import pytest
import trustme
from gevent import ssl as gssl

import geventagent as ga
from geventagent.testing import HttpTestServer, Response  # noqa: F401  (re-exported for tests)

pytest_plugins = ["geventagent.pytest_plugin"]


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture
def make_server(ga_make_server: Any) -> Any:
    """``make_server(handler=None, **options)``: loopback servers stopped after the test."""
    return ga_make_server


@pytest.fixture
def server(make_server: Any) -> HttpTestServer:
    return make_server()


@pytest.fixture
def make_agent() -> Any:
    agents: List[ga.Agent] = []

    def make(cls: Any = ga.Agent, **kw: Any) -> ga.Agent:
        agent = cls(**kw)
        agents.append(agent)
        return agent

    yield make
    for agent in agents:
        agent.destroy()
        assert agent.total_socket_count == 0, agent.status()
        assert not agent.sockets and not agent.free_sockets, agent.status()


@pytest.fixture(autouse=True)
def fresh_global_agent() -> Any:
    """Each test gets its own global agent, destroyed afterwards."""
    saved = ga.global_agent
    ga.global_agent = ga.Agent(keep_alive=True, scheduling="lifo", timeout=5.0)
    yield ga.global_agent
    ga.global_agent.destroy()
    ga.global_agent = saved


@pytest.fixture
def no_fd_leak() -> Any:
    """Use in a test: asserts the test leaves no file descriptor open (after servers stop)."""
    gevent.sleep(0)
    before = open_fds()
    yield
    gevent.sleep(0.01)
    assert open_fds() <= before, "leaked %d fds" % (open_fds() - before)


def record_calls(monkeypatch: Any, cls: Any, name: str) -> List[Any]:
    """Wrap method ``name`` of ``cls`` (for the test) so each call's first argument after self is
    appended to the returned list, and the real method still runs."""
    calls: List[Any] = []
    real = getattr(cls, name)

    def recording(self: Any, arg: Any = None, *rest: Any, **kw: Any) -> Any:
        calls.append(arg)
        return real(self, arg, *rest, **kw)

    monkeypatch.setattr(cls, name, recording)
    return calls


def spawn_all(*funcs: Callable[[], Any], timeout: float = 10) -> List[Any]:
    """Run ``funcs`` in greenlets; return their results (raising the first error)."""
    greenlets = [gevent.spawn(f) for f in funcs]
    gevent.joinall(greenlets, timeout=timeout, raise_error=True)
    assert all(g.ready() for g in greenlets), "greenlets did not finish in %ss" % timeout
    return [g.value for g in greenlets]


# -- TLS: a test CA, servers with its certificates, HttpsAgents trusting it ---------------------------
@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


def server_context(ca, *names, leaf=None):
    ctx = gssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    (leaf or ca.issue_cert(*(names or ("localhost", "127.0.0.1", "sni.test")))).configure_cert(ctx)
    return ctx


@pytest.fixture
def tls_server(ca, ga_make_server):
    def make(handler=None, ctx=None, **kw):
        names = []
        ctx = ctx or server_context(ca)
        ctx.sni_callback = lambda sslobj, name, c: names.append(name)
        server = ga_make_server(handler, ssl_context=ctx, **kw)
        server.sni_names = names
        return server

    return make


@pytest.fixture
def https_agent(ca):
    agents = []

    def make(**kw):
        kw.setdefault("ca", ca.cert_pem.bytes())
        agent = ga.HttpsAgent(**kw)
        agents.append(agent)
        return agent

    yield make
    for agent in agents:
        agent.destroy()
        assert agent.total_socket_count == 0
