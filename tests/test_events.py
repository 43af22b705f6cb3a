"""EventEmitter: Node's whole surface (seed 002), in Node's order and semantics."""

import math
import warnings

import pytest

from geventagent import EventEmitter, GeventAgentError
from geventagent.events import MaxListenersExceededWarning


def test_on_emit_in_registration_order_and_return_value():
    e = EventEmitter()
    calls = []
    assert e.emit("x", 1) is False
    e.on("x", lambda v: calls.append(("a", v)))
    e.add_listener("x", lambda v: calls.append(("b", v)))
    assert e.emit("x", 1) is True
    assert calls == [("a", 1), ("b", 1)]


def test_on_returns_self_for_chaining():
    e = EventEmitter()
    assert e.on("a", print) is e and e.once("a", print) is e and e.off("a", print) is e


def test_once_fires_once_and_is_removed_before_the_call():
    e = EventEmitter()
    seen = []
    e.once("x", lambda: seen.append(e.listener_count("x")))
    e.emit("x")
    e.emit("x")
    assert seen == [0]


def test_prepend_listener_and_prepend_once():
    e = EventEmitter()
    order = []
    e.on("x", lambda: order.append(2))
    e.prepend_listener("x", lambda: order.append(1))
    e.prepend_once_listener("x", lambda: order.append(0))
    e.emit("x")
    e.emit("x")
    assert order == [0, 1, 2, 1, 2]


def test_remove_listener_removes_most_recent_instance_only():
    e = EventEmitter()
    calls = []

    def f():
        calls.append(1)

    e.on("x", f).on("x", f)
    e.remove_listener("x", f)
    e.emit("x")
    assert calls == [1]
    e.off("x", f)
    assert e.listener_count("x") == 0 and e.event_names() == []


def test_remove_listener_matches_once_wrappers():
    e = EventEmitter()
    f = lambda: None  # noqa: E731
    e.once("x", f)
    e.remove_listener("x", f)
    assert e.listener_count("x") == 0


def test_listeners_unwrap_once_raw_listeners_do_not():
    e = EventEmitter()

    def f():
        pass

    e.once("x", f)
    assert e.listeners("x") == [f]
    raw = e.raw_listeners("x")
    assert raw[0] is not f and raw[0].listener is f
    raw[0]()  # calling the wrapper removes it, like Node
    assert e.listener_count("x") == 0


def test_listener_count_with_listener_argument():
    e = EventEmitter()

    def f():
        pass

    e.on("x", f).on("x", f).on("x", print)
    assert e.listener_count("x") == 3
    assert e.listener_count("x", f) == 2


def test_new_listener_fires_before_adding_and_remove_listener_after_removing():
    e = EventEmitter()
    seen = []
    e.on("newListener", lambda name, fn: seen.append(("new", name, e.listener_count(name))))
    e.on("removeListener", lambda name, fn: seen.append(("removed", name, e.listener_count(name))))

    def f():
        pass

    e.on("x", f)
    e.off("x", f)
    assert seen == [("new", "removeListener", 0), ("new", "x", 0), ("removed", "x", 0)]


def test_remove_all_listeners_one_event_and_all_events():
    e = EventEmitter()
    removed = []
    e.on("a", print).on("a", repr).on("b", print)
    e.on("removeListener", lambda n, f: removed.append(n))
    e.remove_all_listeners("a")
    assert e.event_names() == ["b", "removeListener"]
    e.remove_all_listeners()
    assert e.event_names() == []
    assert removed == ["a", "a", "b"]


def test_event_names_in_insertion_order():
    e = EventEmitter()
    e.on("b", print).on("a", print)
    assert e.event_names() == ["b", "a"]


def test_emit_error_without_listener_raises_the_error():
    e = EventEmitter()
    err = ValueError("boom")
    with pytest.raises(ValueError) as info:
        e.emit("error", err)
    assert info.value is err
    with pytest.raises(GeventAgentError) as info2:
        e.emit("error", "not an exception")
    assert info2.value.code == "ERR_UNHANDLED_ERROR"
    got = []
    e.on("error", got.append)
    e.emit("error", err)
    assert got == [err]


def test_max_listeners_warning_once_past_the_limit():
    e = EventEmitter()
    assert e.get_max_listeners() == 10
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(12):
            e.on("x", print)
    leaks = [w for w in caught if issubclass(w.category, MaxListenersExceededWarning)]
    assert len(leaks) == 1 and "11 x listeners" in str(leaks[0].message)


def test_set_max_listeners_zero_and_inf_mean_unlimited_and_negative_raises():
    for limit in (0, math.inf):
        e = EventEmitter().set_max_listeners(limit)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            for _ in range(20):
                e.on("x", print)
    with pytest.raises(ValueError) as info:
        EventEmitter().set_max_listeners(-1)
    assert info.value.code == "ERR_OUT_OF_RANGE"


def test_non_callable_listener_raises_type_error():
    with pytest.raises(TypeError) as info:
        EventEmitter().on("x", 42)
    assert info.value.code == "ERR_INVALID_ARG_TYPE"


def test_listener_added_during_emit_is_not_called_in_that_emit():
    e = EventEmitter()
    calls = []
    e.on("x", lambda: e.on("x", lambda: calls.append("late")))
    e.on("x", lambda: calls.append("b"))
    e.emit("x")
    assert calls == ["b"]


def test_listener_removed_during_emit_still_runs_in_that_emit():
    # Node copies the listener array before calling it.
    e = EventEmitter()
    calls = []

    def second():
        calls.append("second")

    e.on("x", lambda: e.off("x", second))
    e.on("x", second)
    e.emit("x")
    e.emit("x")
    assert calls == ["second"]


def test_one_listener_is_stored_alone_and_a_list_collapses_back_to_it():
    # Node keeps a lone listener as the function itself and an array only for two or more; a
    # pooled socket (five events, one agent listener each) then holds no list objects.
    e = EventEmitter()
    calls = []

    def a():
        calls.append("a")

    def b():
        calls.append("b")

    e.on("x", a)
    assert e._events["x"] is a
    e.prepend_once_listener("x", b)
    assert e.raw_listeners("x")[1] is a and e.listeners("x") == [b, a]
    e.emit("x")  # b (once) runs and leaves; a stays, stored alone again
    assert calls == ["b", "a"] and e._events["x"] is a and e.listener_count("x") == 1
    e.on("x", b).on("x", a)
    e.remove_listener("x", a)  # the most recent a
    assert e.listeners("x") == [a, b]
    e.remove_listener("x", b)
    assert e._events["x"] is a
    e.remove_listener("x", b)  # not there: nothing changes
    assert e.listeners("x") == [a]
    e.remove_listener("x", a)
    assert "x" not in e._events and e.emit("x") is False and calls == ["b", "a"]
