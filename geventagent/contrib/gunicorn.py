"""gunicorn server hooks for every geventagent agent of the process.

Use it as gunicorn's config module, or import its hooks into your own ``gunicorn.conf.py``::

    gunicorn -k gevent -w 4 --preload -c python:geventagent.contrib.gunicorn myapp:app

    # gunicorn.conf.py
    from geventagent.contrib.gunicorn import *      # pre_fork, post_fork, worker_exit
    worker_class = "gevent"

The hooks act on every live :class:`~geventagent.Agent` of the process (held weakly:
:func:`geventagent.live_agents`), so an app needs no registration of its own:

- ``pre_fork`` (in the master, before each worker is forked): agents the master used (an app that
  called its upstream while loading, with ``--preload``) close their sockets. The master's hub does
  not run between forks, so without this its idle connection is never timed out: the upstream keeps
  one connection open to the master for the life of the server.
- ``post_fork`` (in the new worker): every inherited agent starts with an empty pool and zeroed
  counters at once (it would on first use anyway: inherited sockets are closed, never written to).
- ``worker_exit`` (in the worker, after gunicorn's graceful shutdown has let in-flight requests
  finish): agents destroy their sockets. gunicorn also calls ``worker_exit`` in the master for a
  worker that is already gone; there it does nothing.

Defining your own hook of the same name replaces this one: call :func:`close_agents`,
:func:`reset_agents` or :func:`destroy_agents` from it.
"""

from __future__ import annotations

import os
from typing import Any

from .._hub import fork_generation
from ..agent import live_agents

__all__ = ["pre_fork", "post_fork", "worker_exit", "close_agents", "reset_agents", "destroy_agents"]


def close_agents(reason: str = "pre_fork") -> int:
    """Close every socket of every live agent of this process, synchronously (no running hub needed).

    Args:
        reason (str): the close reason counted in each agent's ``status()["close_reasons"]``.
    Returns:
        int: how many sockets were closed.
    """
    closed = 0
    for agent in live_agents():
        closed += sum(len(group) for group in agent.sockets.values())
        closed += sum(len(group) for group in agent.free_sockets.values())
        agent.destroy(reason=reason)
    return closed


def reset_agents() -> int:
    """In a fork child: every live agent closes its inherited sockets (without writing to them) and
    starts with an empty pool and zeroed counters. Does nothing to an agent of this process.

    Returns:
        int: how many agents were inherited and reset.
    """
    reset = 0
    for agent in live_agents():
        if agent._generation != fork_generation():
            agent._reset_after_fork()
            reset += 1
    return reset


def destroy_agents(reason: str = "worker_exit") -> int:
    """Destroy every socket of every live agent (Node's ``agent.destroy()``); the agents stay usable.

    Returns:
        int: how many sockets were destroyed.
    """
    return close_agents(reason)


def pre_fork(server: Any, worker: Any) -> None:
    """gunicorn ``pre_fork`` (master): close the sockets of agents the master used."""
    closed = close_agents("pre_fork")
    if closed:
        server.log.info("geventagent: closed %d connection(s) of the master before forking", closed)


def post_fork(server: Any, worker: Any) -> None:
    """gunicorn ``post_fork`` (new worker): start every inherited agent empty, with zeroed counters."""
    reset_agents()


def worker_exit(server: Any, worker: Any) -> None:
    """gunicorn ``worker_exit``: in the worker, destroy every agent's sockets; in the master (which
    gunicorn also calls it in, for a worker already gone), nothing."""
    if getattr(worker, "pid", None) != os.getpid():
        return
    destroy_agents("worker_exit")
