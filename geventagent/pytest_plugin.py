"""pytest fixtures for code that uses geventagent: loopback servers, including misbehaving ones.

Enable with ``pytest_plugins = ["geventagent.pytest_plugin"]`` in your ``conftest.py``, then::

    def test_my_client_survives_idle_close(ga_fault_server):
        server = ga_fault_server("idle_close", t=0.1)
        ...

Fixtures:
    ga_server: a started :class:`~geventagent.testing.HttpTestServer` answering ``Hello World``.
    ga_make_server(handler=None, **options): start more servers.
    ga_fault_server(name, **params): start a server with a fault from
        :func:`geventagent.testing.fault` (``idle_close``, ``reset_after``, ``stray_bytes``, ...).
All are stopped when the test ends; all listen on 127.0.0.1 port 0 (or a Unix socket).
"""

from __future__ import annotations

from typing import Any, Iterator, List

import pytest

from .testing import HttpTestServer, fault


@pytest.fixture
def ga_make_server() -> Iterator[Any]:
    servers: List[HttpTestServer] = []

    def make(handler: Any = None, **options: Any) -> HttpTestServer:
        server = HttpTestServer(handler, **options).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def ga_server(ga_make_server: Any) -> HttpTestServer:
    return ga_make_server()


@pytest.fixture
def ga_fault_server(ga_make_server: Any) -> Any:
    def make(name: str, **params: Any) -> HttpTestServer:
        handler, options = fault(name, **params)
        return ga_make_server(handler, **options)

    return make
