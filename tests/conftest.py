"""Fixtures: loopback servers on 127.0.0.1:0, agents that are destroyed after each test, and a
leak check (file descriptors, agent gauges) around every test."""

from __future__ import annotations

import os
from typing import Any, Callable, List

import gevent
import pytest

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


def spawn_all(*funcs: Callable[[], Any], timeout: float = 10) -> List[Any]:
    """Run ``funcs`` in greenlets; return their results (raising the first error)."""
    greenlets = [gevent.spawn(f) for f in funcs]
    gevent.joinall(greenlets, timeout=timeout, raise_error=True)
    assert all(g.ready() for g in greenlets), "greenlets did not finish in %ss" % timeout
    return [g.value for g in greenlets]
