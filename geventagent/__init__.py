"""geventagent: Node.js's ``http.Agent`` for gevent.

A cooperative HTTP/1.1 client whose connection pool has Node's semantics (``keep_alive``,
``max_sockets``, ``max_total_sockets``, ``max_free_sockets``, ``scheduling``, idle timeouts and
the ``'free'``/``'agentRemove'`` events), with blocking ``request()``/``get()`` calls that let
other greenlets run.
"""

import sys
import types

from . import agent as _agent
from . import https as _https
from .agent import Agent, live_agents
from .client import ClientRequest, get, request
from .errors import GeventAgentError
from .events import EventEmitter
from .https import HttpsAgent
from .incoming import IncomingMessage
from .socket import Socket

__version__ = "0.2.0"

__all__ = [
    "Agent",
    "ClientRequest",
    "EventEmitter",
    "GeventAgentError",
    "HttpsAgent",
    "IncomingMessage",
    "Socket",
    "get",
    "global_agent",
    "https_global_agent",
    "live_agents",
    "request",
]

global_agent: Agent
https_global_agent: HttpsAgent


class _Package(types.ModuleType):
    """``geventagent.global_agent`` and ``https_global_agent`` write through to the modules that
    define them, as Node's ``http.globalAgent`` setter writes to ``_http_agent.globalAgent``."""

    @property
    def global_agent(self) -> Agent:
        return _agent.global_agent

    @global_agent.setter
    def global_agent(self, value: Agent) -> None:
        _agent.global_agent = value

    @property
    def https_global_agent(self) -> HttpsAgent:
        return _https.https_global_agent

    @https_global_agent.setter
    def https_global_agent(self, value: HttpsAgent) -> None:
        _https.https_global_agent = value


sys.modules[__name__].__class__ = _Package
