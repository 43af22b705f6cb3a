"""Agent options, get_name() and request option validation (node-agent.md §1, §3, §4.1)."""

import math

import pytest

import geventagent as ga
from geventagent.errors import GeventAgentError

from .conftest import record_calls


def test_defaults_match_api_contract():
    agent = ga.Agent()
    assert agent.keep_alive is False
    assert agent.max_sockets == math.inf and agent.max_total_sockets == math.inf
    assert agent.max_free_sockets == 256 and agent.scheduling == "lifo"
    assert agent.free_socket_timeout == 4.0 and agent.keep_alive_timeout_buffer == 1.0
    assert agent.keep_alive_initial_delay == 1.0
    assert agent.default_port == 80 and agent.protocol == "http:"
    assert agent.options["no_delay"] is True
    assert agent.requests == {} and agent.sockets == {} and agent.free_sockets == {}
    assert agent.total_socket_count == 0


def test_global_agent_is_node_19_default():
    agent = ga.global_agent
    assert agent.keep_alive is True and agent.scheduling == "lifo" and agent.options["timeout"] == 5.0


@pytest.mark.parametrize("name", ["max_sockets", "max_total_sockets", "max_free_sockets"])
def test_caps_type_errors(name):
    for bad in ("test", True, [1]):
        with pytest.raises(TypeError) as info:
            ga.Agent(**{name: bad})
        assert info.value.code == "ERR_INVALID_ARG_TYPE"
        assert isinstance(info.value, GeventAgentError)
        assert '"%s"' % name in str(info.value)


@pytest.mark.parametrize("name,minimum", [("max_sockets", 1), ("max_total_sockets", 1), ("max_free_sockets", 0)])
def test_caps_range_errors(name, minimum):
    for bad in (minimum - 1, -5, float("nan")):
        with pytest.raises(ValueError) as info:
            ga.Agent(**{name: bad})
        assert info.value.code == "ERR_OUT_OF_RANGE"
        assert "It must be >= %d" % minimum in str(info.value)


def test_caps_accept_inf_none_and_fractions():
    agent = ga.Agent(max_sockets=None, max_total_sockets=1.5, max_free_sockets=0)
    assert agent.max_sockets == math.inf and agent.max_total_sockets == 1.5 and agent.max_free_sockets == 0


def test_scheduling_must_be_fifo_or_lifo_exact_message():
    with pytest.raises(ValueError) as info:
        ga.Agent(scheduling="filo")
    assert info.value.code == "ERR_INVALID_ARG_VALUE"
    assert str(info.value) == "The argument 'scheduling' must be one of: 'fifo', 'lifo'. Received 'filo'"
    assert isinstance(info.value, TypeError)  # Node's class
    with pytest.raises(ValueError):
        ga.Agent(scheduling="LIFO")  # case-sensitive, like Node


def test_timeout_validation():
    with pytest.raises(TypeError) as info:
        ga.Agent(timeout="5")
    assert info.value.code == "ERR_INVALID_ARG_TYPE"
    for bad in (-1, math.inf):
        with pytest.raises(ValueError) as info:
            ga.Agent(timeout=bad)
        assert info.value.code == "ERR_OUT_OF_RANGE"
    assert "timeout" not in ga.Agent(timeout=0).options


def test_keep_alive_timeout_buffer_falls_back_silently_like_node():
    # mirrors test-http-agent-keep-alive-timeout-buffer.js (option values)
    assert ga.Agent(keep_alive_timeout_buffer=1.5).keep_alive_timeout_buffer == 1.5
    assert ga.Agent(keep_alive_timeout_buffer=-100).keep_alive_timeout_buffer == 1.0
    assert ga.Agent(keep_alive_timeout_buffer=math.inf).keep_alive_timeout_buffer == 1.0
    assert ga.Agent().keep_alive_timeout_buffer == 1.0


def test_free_socket_timeout_zero_or_none_disables():
    assert ga.Agent(free_socket_timeout=None).free_socket_timeout == math.inf
    assert ga.Agent(free_socket_timeout=0).free_socket_timeout == math.inf
    with pytest.raises(ValueError):
        ga.Agent(free_socket_timeout=-1)


def test_connect_options_are_kept():
    agent = ga.Agent(local_address="127.0.0.1", connect_timeout=2)
    assert agent.options["local_address"] == "127.0.0.1" and agent.options["connect_timeout"] == 2


def test_attributes_are_mutable_and_read_at_use_time():
    agent = ga.Agent()
    agent.max_sockets = 5
    agent.keep_alive = True
    assert agent.max_sockets == 5 and agent.keep_alive


@pytest.mark.parametrize(
    "name,value,error",
    [
        ("max_sockets", 0, ga.errors.OutOfRangeError),  # (Node: queued requests would wait forever)
        ("max_sockets", "5", ga.errors.InvalidArgTypeError),  # (was a bare TypeError per request)
        ("max_total_sockets", -1, ga.errors.OutOfRangeError),
        ("max_free_sockets", -1, ga.errors.OutOfRangeError),
        ("scheduling", "random", ga.errors.InvalidArgValueError),
        ("free_socket_timeout", "3", ga.errors.InvalidArgTypeError),
        ("queue_timeout", -1, ga.errors.OutOfRangeError),
        ("retry", "sometimes", ga.errors.InvalidArgValueError),
    ],
)
def test_options_set_after_construction_are_checked_as_the_constructors(name, value, error):
    agent = ga.Agent(keep_alive=True, max_sockets=2)
    before = getattr(agent, name)
    with pytest.raises(error):
        setattr(agent, name, value)
    assert getattr(agent, name) == before


def test_options_set_later_take_the_constructors_normal_forms():
    assert not ga.Agent(max_sockets=5, max_total_sockets=8)._over_cap  # (construction lowers nothing)
    agent = ga.Agent()
    agent.max_sockets = None
    agent.free_socket_timeout = 0
    agent.socket_ttl = None
    agent.keep_alive_timeout_buffer = "x"  # (Node: silently the default)
    assert agent.max_sockets == math.inf and agent.free_socket_timeout == math.inf
    assert agent.socket_ttl == math.inf and agent.keep_alive_timeout_buffer == 1.0


# -- test-http-agent-getname.js ------------------------------------------------------------------
def test_http_agent_getname():
    agent = ga.Agent()
    assert agent.get_name() == "localhost::"
    assert agent.get_name({}) == "localhost::"
    assert agent.get_name({"port": 80, "local_address": "192.168.1.1"}) == "localhost:80:192.168.1.1"
    assert agent.get_name({"socket_path": "/tmp/foo/bar"}) == "localhost:::/tmp/foo/bar"
    for family in (0, None, "bogus", "4"):
        assert agent.get_name({"family": family}) == "localhost::"
    assert agent.get_name({"family": 4}) == "localhost:::4"
    assert agent.get_name({"family": 6}) == "localhost:::6"
    assert agent.get_name({"host": "::1", "port": "8080", "local_address": "::2", "family": 4}) == "::1:8080:::2:4"
    assert agent.get_name({"host": "127.0.0.1", "port": 1, "family": 4, "local_address": "127.0.0.1"}) == (
        "127.0.0.1:1:127.0.0.1:4"
    )


def test_origin_key_follows_changed_agent_options(server, make_agent):
    """The key of a plain URL request is cached per (host, port); changing the agent's options
    (in place, by update(), or by replacing the dict) changes the next request's key, as Node's
    getName() reads them on every request."""
    agent = make_agent(keep_alive=True)
    url = "http://127.0.0.1:%d/" % server.port
    ga.get(url, agent=agent).read()
    assert list(agent.free_sockets) == ["127.0.0.1:%d:" % server.port]
    agent.options["family"] = 4
    ga.get(url, agent=agent).read()
    assert sorted(agent.free_sockets) == ["127.0.0.1:%d:" % server.port, "127.0.0.1:%d::4" % server.port]
    agent.options.update(local_address="127.0.0.1")
    ga.get(url, agent=agent).read()
    assert "127.0.0.1:%d:127.0.0.1:4" % server.port in agent.free_sockets
    agent.options = {"no_delay": True}  # a plain dict: nothing is cached, keys still right
    ga.get(url, agent=agent).read()
    ga.get(url, agent=agent).read()
    assert agent.counters["reused"] >= 1
    assert len(agent.free_sockets) == 3


def test_origin_keys_are_cached_with_or_without_a_timeout(server, make_agent, monkeypatch):
    """A request's timeout is in no origin key: requests with and without one share the key
    cached for (host, port); any other connect option has the key worked out for the request."""
    agent = make_agent(keep_alive=True)
    calls = record_calls(monkeypatch, ga.Agent, "get_name")
    url = "http://127.0.0.1:%d/" % server.port
    for timeout in (None, 5, 5, None, 2.5):
        ga.get(url, agent=agent, timeout=timeout).read()
    assert len(calls) == 2  # the first request's add_request and create_socket
    assert list(agent.free_sockets) == ["127.0.0.1:%d:" % server.port] and agent.counters["reused"] == 4
    for _ in range(2):
        ga.get(url, agent=agent, local_address="127.0.0.1").read()
    assert len(calls) == 5  # both requests' add_request, and the new socket's create_socket
    assert sorted(agent.free_sockets) == ["127.0.0.1:%d:" % server.port, "127.0.0.1:%d:127.0.0.1" % server.port]


def test_get_name_override_is_called_per_request(server, make_agent):
    tag = ["a"]

    class Keyed(ga.Agent):
        def get_name(self, options=None):
            return super().get_name(options) + ":" + tag[0]

    agent = make_agent(Keyed, keep_alive=True)
    url = "http://127.0.0.1:%d/" % server.port
    for value in ("a", "b", "b"):
        tag[0] = value
        ga.get(url, agent=agent).read()
    assert sorted(name.rsplit(":", 1)[1] for name in agent.free_sockets) == ["a", "b"]


def test_request_fills_port_in_name(server, make_agent):
    agent = make_agent(keep_alive=True)
    names = []
    req = ga.ClientRequest({"hostname": "127.0.0.1", "port": server.port, "agent": agent})
    req.on("socket", lambda s: names.append(s.status()["origin"]))
    req.end().read()
    assert names == ["127.0.0.1:%d:" % server.port]
    assert list(agent.free_sockets) == names


# -- request options -----------------------------------------------------------------------------
def test_bad_header_name_and_value_raise_before_anything_is_sent(server):
    with pytest.raises(ValueError) as info:
        ga.get(server.url("/"), headers={"Bad Name": "x"})
    assert info.value.code == "ERR_INVALID_HTTP_TOKEN"
    for value in ("a\r\nInjected: 1", "a\nb", "a\x00b"):
        with pytest.raises(ValueError) as info:
            ga.get(server.url("/"), headers={"X-Test": value})
        assert info.value.code == "ERR_INVALID_CHAR"
    with pytest.raises(ValueError) as info:
        ga.request("GE T", server.url("/"))
    assert info.value.code == "ERR_INVALID_HTTP_TOKEN"
    with pytest.raises(ValueError) as info:
        ga.get(server.url("/"), path="/a b")  # (a URL string's space is percent-encoded, as in Node)
    assert info.value.code == "ERR_UNESCAPED_CHARACTERS"
    assert server.connections_total == 0 and ga.global_agent.total_socket_count == 0


def test_header_pairs_with_a_name_twice_send_every_value_and_bytes_names_are_taken(server):
    # A list of pairs is how a header goes out more than once (Node's array headers send each
    # pair): the second pair replaced the first. Bytes names (requests and http.client take them)
    # were refused as "b'X-B'", not a token.
    ga.get(server.url("/"), headers=[("X-Seen", "1"), ("x-seen", "2"), ("X-Seen", ["3", "4"]), ("X-Once", "a")]).read()
    raw = [pair for pair in server.requests[-1].raw_headers if pair[0].lower().startswith("x-")]
    assert [value for name, value in raw if name.lower() == "x-seen"] == ["1", "2", "3", "4"]
    assert [value for name, value in raw if name.lower() == "x-once"] == ["a"]
    ga.get(server.url("/"), headers={b"X-Bytes": b"v"}).read()
    assert server.requests[-1].headers["x-bytes"] == "v"
    from urllib3 import HTTPHeaderDict  # a mapping with a value per line: each goes out

    multi = HTTPHeaderDict()
    multi.add("X-Multi", "1")
    multi.add("x-multi", "2")
    ga.get(server.url("/"), headers=multi).read()
    assert [v for n, v in server.requests[-1].raw_headers if n.lower() == "x-multi"] == ["1", "2"]
    ga.get(server.url("/"), headers={"X-Case": "1", "x-case": "2"}).read()  # a dict: the last, as Node
    assert [v for n, v in server.requests[-1].raw_headers if n.lower() == "x-case"] == ["2"]


def test_bad_header_via_set_header_sends_nothing(server):
    req = ga.ClientRequest(server.url("/"))
    with pytest.raises(ValueError):
        req.set_header("X", "bad\r\nvalue")
    assert server.connections_total == 0


def test_request_timeout_validation():
    with pytest.raises(ValueError) as info:
        ga.ClientRequest("http://127.0.0.1:1/", timeout=-1)
    assert info.value.code == "ERR_OUT_OF_RANGE"


def test_url_mapping_and_keyword_override(server):
    res = ga.get({"hostname": "127.0.0.1", "port": server.port, "path": "/a?b=1"}, path="/override")
    res.read()
    assert server.requests[-1].path == "/override"


def test_auth_in_url_becomes_basic_authorization(server):
    ga.get("http://user:p%%40ss@127.0.0.1:%d/" % server.port).read()
    assert server.requests[-1].headers["authorization"] == "Basic dXNlcjpwQHNz"


def test_host_header_omits_default_port_and_brackets_ipv6():
    req = ga.ClientRequest("http://example.com/")
    assert req.get_header("host") == "example.com"
    req = ga.ClientRequest("http://example.com:8080/")
    assert req.get_header("host") == "example.com:8080"
    req = ga.ClientRequest("http://[::1]:8080/")
    assert req.get_header("host") == "[::1]:8080" and req.host == "::1"
    req = ga.ClientRequest("http://example.com/", set_host=False)
    assert req.get_header("host") is None


def test_invalid_url_raises():
    with pytest.raises(ValueError) as info:
        ga.get("not a url")
    assert info.value.code == "ERR_INVALID_URL"


# A URL with no other option takes a cached, pre-validated template; the same request built through
# the general path (any extra option forces it) must come out the same.
@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/tiny",
        "http://example.test/a/b?x=1&y=2",
        "http://user:p%40ss@example.test:80/auth",
        "http://[::1]:9000/v6",
        "HTTP://Example.TEST",
    ],
)
@pytest.mark.parametrize("kw", [{}, {"method": "post", "headers": {"X-A": "1"}, "timeout": 2.5}])
def test_url_fast_path_builds_the_same_request_as_the_general_path(url, kw, make_agent):
    agent = make_agent(keep_alive=True)
    fast = ga.ClientRequest(url, agent=agent, **kw)
    general = ga.ClientRequest(url, agent=agent, set_host=True, **kw)
    for attr in ("protocol", "host", "port", "path", "method", "timeout", "retry", "should_keep_alive"):
        assert getattr(fast, attr) == getattr(general, attr), attr
    assert fast.get_headers() == general.get_headers()
    assert fast.get_raw_header_names() == general.get_raw_header_names()
    assert fast.connect_options == general.connect_options
    assert agent.get_name(fast.connect_options) == agent.get_name(general.connect_options)


@pytest.mark.parametrize("extra", [{}, {"set_host": True}], ids=["fast", "general"])
def test_url_errors_are_the_same_on_both_paths(extra):
    # host names Node v20's URL parser refuses: a joiner out of context, a bidi rule, a space
    for url in ("http://a\u200db.test/", "http://\u0661a.test/", "http://a b.test/", "http://a<b/"):
        with pytest.raises(GeventAgentError) as info:
            ga.ClientRequest(url, **extra)
        assert info.value.code == "ERR_INVALID_URL", url
    with pytest.raises(GeventAgentError) as info:
        ga.ClientRequest("not a url", **extra)
    assert info.value.code == "ERR_INVALID_URL"
    with pytest.raises(GeventAgentError) as info:
        ga.ClientRequest("https://example.test/", agent=ga.Agent(), **extra)
    assert info.value.code == "ERR_INVALID_PROTOCOL"


# A URL string's path and query as Node v20's `new URL()` sends them (each expected value was
# printed by Node v20 for the same URL; 5,000 random ones agreed too): spaces, quotes, angle
# brackets, backticks, braces and non-ASCII percent-encoded (UTF-8), a backslash in the path a
# slash, escapes already there kept.
@pytest.mark.parametrize(
    "url, path",
    [
        ("http://h.test/caf\u00e9", "/caf%C3%A9"),
        ("http://h.test/caf%C3%A9?q=a%20b", "/caf%C3%A9?q=a%20b"),
        ("http://h.test/x y?c d", "/x%20y?c%20d"),
        ("http://h.test/\u20ac", "/%E2%82%AC"),
        ('http://h.test/a"<>`{}|\\^?q="<>`{}|\'', "/a%22%3C%3E%60%7B%7D|/^?q=%22%3C%3E`{}|%27"),
        ("http://h.test/%7e~%zz", "/%7e~%zz"),
        ("http://h.test/\t\nx", "/x"),
        ("http://h.test/a?b=c#frag", "/a?b=c"),
        # dot segments removed (RFC 3986 5.2.4, %2e a dot; a query's left alone), and C0 controls
        # and spaces stripped at both ends of the URL
        ("http://h.test/a/./b/../c", "/a/c"),
        ("http://h.test/a/%2e%2E/b", "/b"),
        ("http://h.test/a/..", "/"),
        ("http://h.test/a/b/.", "/a/b/"),
        ("http://h.test/a?b=../c", "/a?b=../c"),
        ("http://h.test/x \x01", "/x"),
    ],
)
@pytest.mark.parametrize("extra", [{}, {"set_host": True}], ids=["fast", "general"])
def test_url_strings_are_percent_encoded_as_node_does(url, path, extra):
    assert ga.ClientRequest(url, **extra).path == path


def test_a_url_strings_non_ascii_path_reaches_the_server_percent_encoded(server):
    # (it went out as the latin-1 byte 0xE9, which a server reads as broken UTF-8)
    ga.get("http://127.0.0.1:%d/caf\u00e9 cr\u00e8me?n=\u00e9" % server.port).read()
    assert server.requests[-1].path == "/caf%C3%A9%20cr%C3%A8me?n=%C3%A9"


@pytest.mark.parametrize(
    "host, ascii_host",
    [
        ("b\u00fccher.example", "xn--bcher-kva.example"),
        ("fa\u00df.de", "xn--fa-hia.de"),  # WHATWG's nontransitional processing (IDNA 2003: fass.de)
        ("\u00c4\u00d6.DE", "xn--4ca0b.de"),
        ("my_service.b\u00fccher.example", "my_service.xn--bcher-kva.example"),  # an ASCII label as given
        ("\u2603.net", "xn--n3h.net"),  # a symbol (UTS #46 keeps it; IDNA 2008 alone refuses it)
        ("a\u3002b.test", "a.b.test"),  # an ideographic full stop is a dot
    ],
)
def test_a_non_ascii_host_name_goes_out_in_punycode(host, ascii_host):
    # (as Node v20 prints for each; the Host header carried the raw latin-1 bytes of "ü")
    req = ga.ClientRequest("http://%s:8080/x" % host)
    assert req.host == ascii_host and req.get_header("host") == ascii_host + ":8080"
    assert req.connect_options["host"] == ascii_host


def test_an_options_path_is_checked_not_encoded(server):
    # Node encodes a URL string (WHATWG URL) but not options.path: that one must be escaped
    # already, and a latin-1 character in it goes out as its byte.
    with pytest.raises(GeventAgentError) as info:
        ga.ClientRequest({"host": "127.0.0.1", "port": server.port, "path": "/a b"})
    assert info.value.code == "ERR_UNESCAPED_CHARACTERS"
    with pytest.raises(GeventAgentError) as info:
        ga.ClientRequest("http://127.0.0.1:%d/" % server.port, path="/\u20ac")
    assert info.value.code == "ERR_UNESCAPED_CHARACTERS"
    ga.get({"host": "127.0.0.1", "port": server.port, "path": "/a%20b"}).read()
    assert server.requests[-1].path == "/a%20b"


def test_request_state_lives_in_slots_and_user_attributes_still_work(server):
    # Every attribute the library sets is a slot (a request's state is an array, not a dict of
    # 30-odd keys rebuilt per request); a user's own attribute goes to the instance __dict__.
    agent = ga.Agent(keep_alive=True)
    try:
        for method in ("GET", "POST"):
            req = ga.ClientRequest(server.url("/"), method=method, agent=agent)
            res = req.end(b"body" if method == "POST" else None)
            res.read()
            assert res.status_code == 200 and req.finished
            assert vars(req) == {}, "attributes outside __slots__: %r" % sorted(vars(req))
        req.trace_id = "abc"
        assert req.trace_id == "abc" and vars(req) == {"trace_id": "abc"}
    finally:
        agent.destroy()
