"""The exchange's state machine (``geventagent.exchange``): the transition table, one verdict per
cycle, and the reset for the next request on the same socket (h11's ``start_next_cycle``)."""

from __future__ import annotations

import pytest

import geventagent as ga
from geventagent.exchange import NEXT, Exchange, ExchangeStateError, Phase
from geventagent.testing import Response


def test_every_phase_has_a_row_and_failed_and_upgraded_are_final():
    assert set(NEXT) == set(Phase)
    assert NEXT[Phase.FAILED] == frozenset() and NEXT[Phase.RECV_UPGRADED] == frozenset()
    for phase, allowed in NEXT.items():
        sides = {p.name.split("_")[0] for p in allowed if p is not Phase.FAILED}
        assert sides <= {phase.name.split("_")[0]}, "%s moves to the other side's phases" % phase
        if phase not in (Phase.FAILED, Phase.RECV_UPGRADED):
            assert Phase.FAILED in allowed, "%s cannot fail" % phase


def test_a_move_outside_the_table_raises():
    ex = Exchange(ga.Socket({"host": "127.0.0.1", "port": 9}))
    ex.start("GET", 16384)
    with pytest.raises(ExchangeStateError) as info:
        ex._send_to(Phase.SEND_DONE)  # the head was never written
    assert info.value.code == "ERR_INTERNAL_ASSERTION"
    with pytest.raises(ExchangeStateError):
        ex._recv_to(Phase.RECV_BODY)  # reading a body before the head


def test_a_socket_whose_cycle_did_not_end_cleanly_never_starts_another():
    ex = Exchange(ga.Socket({"host": "127.0.0.1", "port": 9}))
    ex.start("GET", 16384)
    ex.fail("error")
    assert ex.verdict() == "error" and ex.socket.destroyed and ex.socket.close_reason == "error"
    with pytest.raises(ExchangeStateError):
        ex.start("GET", 16384)


def test_failed_keeps_its_first_reason():
    ex = Exchange(ga.Socket({"host": "127.0.0.1", "port": 9}))
    ex.start("GET", 16384)
    ex.fail("unread_body")
    ex.fail("error")
    assert ex.verdict() == "unread_body" and ex.socket.close_reason == "unread_body"


def test_one_exchange_per_socket_reset_for_each_request(server, make_agent):
    agent = make_agent(keep_alive=True, max_sockets=1)
    seen = []
    for _ in range(3):
        req = ga.ClientRequest(server.url("/"), agent=agent)
        req.on("socket", lambda s: seen.append((s, s._exchange)))
        assert req.end().read() == b"Hello World"
    sockets = {id(s) for s, _ in seen}
    exchanges = {id(e) for _, e in seen[1:]}  # the first request made it
    assert len(sockets) == 1 and len(exchanges) == 1
    ex = seen[1][1]
    assert (ex.send, ex.recv) == (Phase.SEND_DONE, Phase.RECV_DONE)
    assert ex.parser is None  # released: an idle pooled socket holds no response buffers


@pytest.mark.parametrize(
    "response,headers,reason",
    [
        (Response(200, b"ok", close=True), None, "server_close"),
        (Response(200, b"ok", version="1.0"), None, "server_close"),
        (Response(200, b"ok"), {"Connection": "close"}, "not_keep_alive"),
    ],
    ids=["server-close", "http-1.0", "caller-close"],
)
def test_the_verdict_gives_one_close_reason(make_server, make_agent, response, headers, reason):
    server = make_server(lambda req: response)
    agent = make_agent(keep_alive=True)
    sockets = []
    req = ga.ClientRequest(server.url("/"), agent=agent, headers=headers)
    req.on("socket", sockets.append)
    assert req.end().read() == b"ok"
    assert sockets[0].destroyed and sockets[0].close_reason == reason
    assert agent.close_reasons == {reason: 1} and agent.free_sockets == {}
