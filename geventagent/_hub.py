"""What every socket of one gevent hub shares: the cork, the idle-limit timer lists and the fork
generation. Nothing here knows HTTP or the agent; sockets plug in through :class:`Corked` and
:class:`Listed`, so imports point one way (``socket`` -> ``_hub``).

- :class:`Cork`: small request writes wait until the hub's current round ends and go out back
  to back (every ``send()`` wakes the peer's process; a burst pays it about once).
- :class:`TimerList`: Node's timer lists (``lib/internal/timers.js``): sockets that wait the same
  number of seconds, in order, under one unref'd timer.
- :func:`fork_generation`: how many times this process is a fork child; sockets remember the
  generation they were made in and are never written to in another.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, Dict, List, Optional, Protocol

import gevent

__all__ = ["Cork", "TimerList", "HubState", "hub_state", "fork_generation", "readable_now", "status"]

_generation = 0


def _after_fork_in_child() -> None:
    # Runs inside os.fork(): O(1), no I/O, nothing that can yield (integrations.md §4.6).
    global _generation
    _generation += 1


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def fork_generation() -> int:
    """How many times this process is a fork child of the process that imported geventagent."""
    return _generation


#: What :meth:`Corked._cork_flush` says: the write went out (or failed, for its owner to see) ...
WRITTEN = 0
#: ... or must wait for the hub's next (non-blocking) poll, which its idle watcher answers ...
AFTER_POLL = 1
#: ... or needs a readiness check of its fd first (one poll(0) over the round's such sockets).
CHECK = 2


class Corked(Protocol):
    """What the cork needs of a socket whose write it holds."""

    _fd: int

    def _cork_flush(self, polled: bool) -> int:
        """Write the held bytes now, in the hub, without waiting; never raise; return WRITTEN.
        Or, when a stale check is due first, write nothing and return AFTER_POLL or CHECK.
        ``polled``: the check's question was answered since (the hub's poll, for AFTER_POLL;
        the cork's poll(0) found the fd not readable, for CHECK)."""

    def _cork_checked(self) -> None:
        """After a CHECK whose poll(0) found the fd readable (FIN, RST or stray bytes): look, then write."""


class Listed(Protocol):
    """What a timer list needs of a socket on it."""

    def _on_idle_expired(self, lst: "TimerList") -> None:
        """Its time on ``lst`` is up (runs in the hub)."""


_EV_MAXPRI = 2  # libev's EV_MAXPRI: the check watcher runs before same-round I/O callbacks


def _noop() -> None:
    pass


class Cork:
    """The corked writes of one hub, sent back to back when the hub next runs its callbacks
    (before it polls for I/O).

    Why: every ``send()`` wakes the peer's process. On loopback (a sidecar, a local proxy) and
    on virtual machines that wake-up costs more than the rest of the system call, and a burst
    of sends pays it about once (``make bench``: 16 us -> 4 us per send at 25k requests/s).
    Node's ``socket.cork()`` holds one socket's writes until ``process.nextTick``; this holds
    every small request write of the hub's current round, which is at most the time the
    greenlets that are ready now take to yield.

    Writes that must wait for a stale check (:meth:`Corked._cork_flush` says so) wait one step
    more: the hub polls once without blocking, and a check watcher (which libev runs right after
    the poll, before any I/O callback) sends them, so the server's FIN or RST is seen up to the
    moment of the write with no system call for the healthy sockets."""

    __slots__ = ("loop", "pending", "checks", "scheduled", "after_poll", "check", "idle")

    def __init__(self, loop: Any) -> None:
        self.loop = loop
        self.pending: List[Corked] = []
        self.checks: List[Corked] = []  # writes on handed-over sockets: one poll(0) for them first
        self.scheduled = False
        self.after_poll: List[Corked] = []
        self.check: Any = None
        self.idle: Any = None

    def add(self, sock: Corked) -> None:
        self.pending.append(sock)
        if not self.scheduled:
            self.scheduled = True
            self.loop.run_callback(self.flush)

    def add_check(self, sock: Corked) -> None:
        """Hold a write that needs the readiness check first (what :meth:`Corked._cork_flush`
        would answer CHECK for: a socket handed straight from one request to the next), so the
        flush asks no question it knows the answer to."""
        self.checks.append(sock)
        if not self.scheduled:
            self.scheduled = True
            self.loop.run_callback(self.flush)

    def flush(self) -> None:
        self.scheduled = False
        pending, self.pending = self.pending, []
        checks: Optional[List[Corked]] = self.checks or None
        if checks is not None:
            self.checks = []
        after_poll = self.after_poll
        for sock in pending:
            wait = sock._cork_flush(False)
            if wait:
                if wait == AFTER_POLL:
                    after_poll.append(sock)
                elif checks is None:
                    checks = [sock]
                else:
                    checks.append(sock)
        if checks is not None:
            _check(checks)
        if after_poll:
            check = self.check
            if check is None:
                check = self.check = self.loop.check(ref=True, priority=_EV_MAXPRI)
                self.idle = self.loop.idle(ref=False)
            if not check.active:
                # The check watcher runs after the next poll; the idle watcher makes it not block.
                check.start(self._after_poll)
                self.idle.start(_noop)

    def _after_poll(self) -> None:
        self.check.stop()
        self.idle.stop()
        socks, self.after_poll = self.after_poll, []
        for sock in socks:
            sock._cork_flush(True)


try:  # the unpatched poll(): with a 0 timeout it never blocks, and it is not gevent's
    from gevent.monkey import get_original

    _poll: Any = get_original("select", "poll")
    _POLLIN: int = get_original("select", "POLLIN")
except (AttributeError, ImportError):  # pragma: no cover  (no poll() on this platform)
    _poll = None
    _POLLIN = 1


def _poll_now(fds: Any) -> Any:
    """``poll(0)`` over ``fds`` for reading: the ``(fd, event)`` pairs that are ready (usually
    none), or None when it cannot tell (no poll() here, or a bad fd)."""
    if _poll is None:
        return None
    try:
        poller = _poll()
        register = poller.register
        for fd in fds:
            register(fd, _POLLIN)
        return poller.poll(0)
    except (OSError, ValueError):
        return None


def _check(socks: List[Corked]) -> None:
    """Which of ``socks`` have something to read (a FIN, an RST, stray bytes)? One poll(0) for
    all of them (a peek each would raise and catch BlockingIOError for every healthy socket)."""
    events = _poll_now([sock._fd for sock in socks])
    if events is not None and not events:  # the usual answer: nothing to read anywhere
        for sock in socks:
            sock._cork_flush(True)
        return
    ready = {fd for fd, _ in events} if events is not None else None  # None: each looks for itself
    for sock in socks:
        if ready is None or sock._fd in ready:
            sock._cork_checked()
        else:
            sock._cork_flush(True)


def readable_now(fd: int) -> bool:
    """Has ``fd`` something to read (a FIN, an RST, stray bytes) right now? One poll(0); True
    when it cannot tell (the caller then looks itself)."""
    events = _poll_now((fd,))
    return events is None or bool(events)


class TimerList:
    """Sockets that wait the same number of seconds, in the order they started, under one
    unref'd timer armed for the head: Node's timer lists (a list per duration), so pooling and
    reusing a socket is an O(1) dict operation instead of starting and stopping a timer of its
    own (and an idle socket carries no timer object)."""

    __slots__ = ("loop", "seconds", "entries", "timer")

    def __init__(self, loop: Any, seconds: float) -> None:
        self.loop = loop
        self.seconds = seconds
        # A plain dict keeps insertion order and pops in O(1); an entry's deadline only grows
        # with its position, as every socket in the list waits the same ``seconds``.
        self.entries: Dict[Listed, float] = {}
        self.timer: Any = None

    def add(self, sock: Listed, now: Optional[float] = None) -> None:
        self.entries[sock] = (time.monotonic() if now is None else now) + self.seconds
        if self.timer is None:
            self._arm(self.seconds)

    def discard(self, sock: Listed) -> None:
        self.entries.pop(sock, None)  # the timer stays armed for the old head; it re-arms when it fires

    def _arm(self, delay: float) -> None:
        timer = self.timer = self.loop.timer(delay if delay > 0 else 0.0, 0.0, ref=False)
        timer.start(self._fire)

    def _fire(self) -> None:
        timer, self.timer = self.timer, None
        if timer is not None:
            timer.close()
        entries = self.entries
        now = time.monotonic() + 0.0005  # libev may fire a little early
        due = []
        for sock, deadline in entries.items():
            if deadline > now:
                break
            due.append(sock)
        for sock in due:
            del entries[sock]
        for sock in due:
            if sock in entries:
                continue  # listed again by an earlier socket's listener
            try:
                sock._on_idle_expired(self)
            except Exception:  # noqa: BLE001  (a listener's error must not stop the other sockets)
                gevent.get_hub().handle_error(sock, *sys.exc_info())
        if self.timer is not None:  # armed by a listener's pooling: re-arm for the head
            self.timer.close()
            self.timer = None
        if entries:
            self._arm(next(iter(entries.values())) - time.monotonic())

    def close(self) -> None:
        if self.timer is not None:
            self.timer.close()
            self.timer = None


class HubState:
    """What the sockets of one hub share: the cork and the idle-limit timer lists."""

    __slots__ = ("loop", "cork", "idle")

    #: At most this many idle-limit lists per hub; other limits use a timer per socket.
    MAX_LISTS = 16

    def __init__(self, loop: Any) -> None:
        self.loop = loop
        self.cork = Cork(loop)
        self.idle: Dict[float, TimerList] = {}

    def idle_list(self, seconds: float) -> Optional[TimerList]:
        """The list for ``seconds``, made on first use; None when the hub has too many."""
        lst = self.idle.get(seconds)
        if lst is None:
            if len(self.idle) >= self.MAX_LISTS:
                for key, old in list(self.idle.items()):  # make room: drop the empty lists
                    if not old.entries:
                        del self.idle[key]
                        old.close()
                if len(self.idle) >= self.MAX_LISTS:
                    return None
            lst = self.idle[seconds] = TimerList(self.loop, seconds)
        return lst


_hub_states: Dict[Any, HubState] = {}


def hub_state() -> HubState:
    """This hub's :class:`HubState` (made on first use; a dead hub's is dropped)."""
    hub = gevent.get_hub()
    state = _hub_states.get(hub)
    if state is None or state.loop is not hub.loop:
        for old in [h for h in _hub_states if h.dead]:
            del _hub_states[old]
        state = _hub_states[hub] = HubState(hub.loop)
    return state


def status() -> Dict[str, Any]:
    """This hub's shared machinery, for tests and debugging: ``{"corked": int (writes waiting for
    the round's end), "after_poll": int (writes waiting for the next poll), "timer_lists":
    {seconds: sockets listed}}``."""
    state = hub_state()
    return {
        "corked": len(state.cork.pending),
        "after_poll": len(state.cork.after_poll),
        "timer_lists": {seconds: len(lst.entries) for seconds, lst in state.idle.items() if lst.entries},
    }
