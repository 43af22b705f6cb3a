"""geventagent: Node.js's ``http.Agent`` for gevent.

A cooperative HTTP/1.1 client whose connection pool has Node's semantics (``keep_alive``,
``max_sockets``, ``max_total_sockets``, ``max_free_sockets``, ``scheduling``, idle timeouts and
the ``'free'``/``'agentRemove'`` events), with blocking ``request()``/``get()`` calls that let
other greenlets run.
"""

from .agent import Agent
from .client import ClientRequest, get, request
from .errors import GeventAgentError
from .events import EventEmitter
from .https import HttpsAgent
from .incoming import IncomingMessage
from .socket import Socket

__version__ = "0.1.0"

#: The default agent (Node >= 19): keep-alive, LIFO, 5 s socket timeout. Replaceable.
global_agent = Agent(keep_alive=True, scheduling="lifo", timeout=5.0)
#: The default agent for ``https:`` URLs, with the same options (Node's ``https.globalAgent``).
https_global_agent = HttpsAgent(keep_alive=True, scheduling="lifo", timeout=5.0)

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
    "request",
]
