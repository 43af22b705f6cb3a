"""A port of Node's ``EventEmitter`` (``lib/events.js``) as a mixin.

Dispatch is synchronous, in registration order, on the greenlet that calls :meth:`EventEmitter.emit`.
The mixin needs no ``__init__`` call: state is created on first use, so an emitter nobody listens to
costs one attribute check per ``emit``. Imports nothing from the package.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Callable, Dict, List, Optional

__all__ = ["EventEmitter", "MaxListenersExceededWarning"]

Listener = Callable[..., Any]


class MaxListenersExceededWarning(RuntimeWarning):
    """Node's ``MaxListenersExceededWarning``: more listeners than ``get_max_listeners()`` on one event."""


class _Once:
    """The wrapper ``once()`` registers (what ``raw_listeners()`` shows); ``.listener`` is the original."""

    __slots__ = ("emitter", "event", "listener", "fired")

    def __init__(self, emitter: "EventEmitter", event: Any, listener: Listener) -> None:
        self.emitter = emitter
        self.event = event
        self.listener = listener
        self.fired = False

    def __call__(self, *args: Any) -> Any:
        if self.fired:
            return None
        self.fired = True
        self.emitter.remove_listener(self.event, self)
        return self.listener(*args)

    def __repr__(self) -> str:
        return "<once %r>" % (self.listener,)


def _check_listener(listener: Any) -> None:
    if not callable(listener):
        from .errors import InvalidArgTypeError

        raise InvalidArgTypeError(
            'The "listener" argument must be of type function. Received %s' % type(listener).__name__
        )


class EventEmitter:
    """Node's ``EventEmitter``: ``on``/``once``/``off``/``emit`` and the rest of its surface.

    Event names are any hashable (Node's strings stay strings: ``'free'``, ``'agentRemove'``).
    ``emit('error', exc)`` with no ``'error'`` listener raises ``exc`` (or a ``GeventAgentError``
    wrapping a non-exception argument), as Node throws.
    """

    #: Node's ``EventEmitter.defaultMaxListeners``.
    default_max_listeners: float = 10

    # event -> its one listener, or a list of two or more (as Node stores them: an emitter with one
    # listener per event, like a pooled socket with the agent's five, holds no list objects).
    _events: Optional[Dict[Any, Any]] = None
    _max_listeners: Optional[float] = None
    _warned: Optional[set] = None

    # -- adding ---------------------------------------------------------------------------------
    def _add(self, event: Any, listener: Listener, prepend: bool) -> "EventEmitter":
        _check_listener(listener)
        events = self._events
        if events is None:
            events = self._events = {}
        elif "newListener" in events:
            self.emit("newListener", event, getattr(listener, "listener", listener))
        handlers = events.get(event)
        if handlers is None:
            events[event] = listener
            return self
        if type(handlers) is not list:
            handlers = events[event] = [listener, handlers] if prepend else [handlers, listener]
        elif prepend:
            handlers.insert(0, listener)
        else:
            handlers.append(listener)
        limit = self.get_max_listeners()
        if 0 < limit < len(handlers) and not math.isinf(limit):
            warned = self._warned
            if warned is None:
                warned = self._warned = set()
            if event not in warned:
                warned.add(event)
                warnings.warn(
                    "Possible EventEmitter memory leak detected. %d %s listeners added to %s. "
                    "Use emitter.set_max_listeners() to increase limit" % (len(handlers), event, type(self).__name__),
                    MaxListenersExceededWarning,
                    stacklevel=3,
                )
        return self

    def _handlers(self, event: Any) -> List[Listener]:
        """``event``'s listeners as a new list (raw: ``once`` wrappers included)."""
        handlers = self._events.get(event) if self._events else None
        if handlers is None:
            return []
        return list(handlers) if type(handlers) is list else [handlers]

    def on(self, event: Any, listener: Listener) -> "EventEmitter":
        """Add ``listener`` at the end of ``event``'s list (no de-duplication). Returns ``self``."""
        return self._add(event, listener, False)

    add_listener = on

    def prepend_listener(self, event: Any, listener: Listener) -> "EventEmitter":
        """Add ``listener`` at the start of ``event``'s list. Returns ``self``."""
        return self._add(event, listener, True)

    def once(self, event: Any, listener: Listener) -> "EventEmitter":
        """Add a listener that is removed, then called, the next time ``event`` is emitted."""
        _check_listener(listener)
        return self._add(event, _Once(self, event, listener), False)

    def prepend_once_listener(self, event: Any, listener: Listener) -> "EventEmitter":
        """``once()`` at the start of the list."""
        _check_listener(listener)
        return self._add(event, _Once(self, event, listener), True)

    # -- removing -------------------------------------------------------------------------------
    def remove_listener(self, event: Any, listener: Listener) -> "EventEmitter":
        """Remove the most recently added instance of ``listener`` (or of a ``once`` wrapping it).

        Emits ``'removeListener'(event, listener)`` after the removal. Returns ``self``.
        """
        events = self._events
        if not events:
            return self
        handlers = events.get(event)
        if handlers is None:
            return self
        if type(handlers) is not list:
            if handlers is not listener and getattr(handlers, "listener", None) is not listener:
                return self
            handler = handlers
            del events[event]
        else:
            for index in range(len(handlers) - 1, -1, -1):
                handler = handlers[index]
                if handler is listener or getattr(handler, "listener", None) is listener:
                    del handlers[index]
                    if len(handlers) == 1:
                        events[event] = handlers[0]
                    break
            else:
                return self
        if "removeListener" in events:
            self.emit("removeListener", event, getattr(handler, "listener", handler))
        return self

    off = remove_listener

    def remove_all_listeners(self, event: Any = None) -> "EventEmitter":
        """Remove every listener of ``event``, or of every event when ``event`` is None."""
        events = self._events
        if not events:
            return self
        names = [event] if event is not None else [n for n in events if n != "removeListener"]
        for name in names:
            handlers = self._handlers(name)
            while handlers:
                self.remove_listener(name, handlers[-1])
                handlers = self._handlers(name)
        if event is None:
            events.pop("removeListener", None)
        return self

    # -- inspecting -----------------------------------------------------------------------------
    def listeners(self, event: Any) -> List[Listener]:
        """A copy of ``event``'s listeners, with ``once`` wrappers unwrapped."""
        return [getattr(h, "listener", h) for h in self._handlers(event)]

    def raw_listeners(self, event: Any) -> List[Listener]:
        """A copy of ``event``'s listeners, ``once`` wrappers included."""
        return self._handlers(event)

    def listener_count(self, event: Any, listener: Optional[Listener] = None) -> int:
        """How many listeners ``event`` has (how many times ``listener`` is among them, if given)."""
        handlers = self._handlers(event)
        if listener is None:
            return len(handlers)
        return sum(1 for h in handlers if h is listener or getattr(h, "listener", None) is listener)

    def event_names(self) -> List[Any]:
        """The events that have listeners, in the order they were first added."""
        return list(self._events) if self._events else []

    def set_max_listeners(self, n: float) -> "EventEmitter":
        """Warn past ``n`` listeners on one event (``0`` or ``math.inf``: never). Returns ``self``.

        Raises:
            OutOfRangeError: ``n`` is negative or NaN (``ERR_OUT_OF_RANGE``).
        """
        if isinstance(n, bool) or not isinstance(n, (int, float)) or n != n or n < 0:
            from .errors import OutOfRangeError

            raise OutOfRangeError(
                'The value of "n" is out of range. It must be a non-negative number. Received %r' % (n,)
            )
        self._max_listeners = n
        return self

    def get_max_listeners(self) -> float:
        """The current limit (``default_max_listeners`` unless set)."""
        limit = self._max_listeners
        return self.default_max_listeners if limit is None else limit

    # -- emitting -------------------------------------------------------------------------------
    def _emit_all(self, event: Any, *args: Any) -> bool:
        """:meth:`emit`, except that every listener runs when one raises, and the first error is
        raised after the last: for the events that an agent's own listeners keep its counts by
        (a socket's ``'free'``, ``'close'``, ``'agentRemove'``), which a listener put before them
        (``prepend_listener``) must not skip. (In Node the error would end the process.)"""
        events = self._events
        if events is None:
            return False
        handlers = events.get(event)
        if handlers is None:
            return False
        if type(handlers) is not list:
            handlers(*args)
            return True
        first: Optional[BaseException] = None
        for handler in tuple(handlers):
            try:
                handler(*args)
            except BaseException as exc:  # noqa: BLE001  (raised below, after the others ran)
                if first is None:
                    first = exc
        if first is not None:
            raise first
        return True

    def emit(self, event: Any, *args: Any) -> bool:
        """Call ``event``'s listeners synchronously, in order, with ``args``.

        Returns:
            True if the event had listeners.
        Raises:
            The ``'error'`` argument, when ``event == 'error'`` and nobody listens (Node throws).
        """
        events = self._events
        if events is not None:
            handlers = events.get(event)
            if handlers is not None:
                if type(handlers) is list:
                    for handler in tuple(handlers):
                        handler(*args)
                else:
                    handlers(*args)
                return True
        if event == "error":
            err = args[0] if args else None
            if isinstance(err, BaseException):
                raise err
            from .errors import GeventAgentError

            raise GeventAgentError("Unhandled error. (%r)" % (err,), code="ERR_UNHANDLED_ERROR")
        return False
