"""``HttpsAgent``: Node's ``https.Agent`` (``lib/https.js``): TLS fields in the origin key, one
cooperative ``gevent.ssl.SSLContext`` per set of TLS options, a FIFO TLS session cache, and
``https_global_agent``.

``ssl`` is imported only when the first https connection is made (see ``tls.py``).
"""

from __future__ import annotations

import json
from typing import Any, Dict, FrozenSet, Optional

from ._options import HTTPS_AGENT_OPTIONS, is_number, validate_tls_options
from .agent import _CACHEABLE_GET_NAMES, Agent
from .errors import GeventAgentError, InvalidArgTypeError, InvalidArgValueError, OutOfRangeError
from .socket import Socket, _is_ip

__all__ = ["HttpsAgent", "TLS_KEY_FIELDS", "CONTEXT_FIELDS", "normalize_servername", "https_global_agent"]

#: The fields Node's ``https.Agent#getName`` appends to the HTTP key, in order (snake_case).
TLS_KEY_FIELDS = (
    "ca",
    "cert",
    "client_cert_engine",
    "ciphers",
    "key",
    "pfx",
    "reject_unauthorized",
    "servername",
    "min_version",
    "max_version",
    "secure_protocol",
    "crl",
    "honor_cipher_order",
    "ecdh_curve",
    "dhparam",
    "secure_options",
    "session_id_context",
    "sigalgs",
    "private_key_identifier",
    "private_key_engine",
)
_PRESENT_WHEN_SET = frozenset(("reject_unauthorized", "honor_cipher_order", "secure_options"))
_TLS_FIELD_SET = frozenset(TLS_KEY_FIELDS)
#: The options that shape a client SSLContext (contexts are cached per agent by these).
CONTEXT_FIELDS = (
    "ca",
    "cert",
    "key",
    "passphrase",
    "reject_unauthorized",
    "min_version",
    "max_version",
    "ciphers",
    "ecdh_curve",
    "secure_options",
    "secure_protocol",
    "crl",
)


def _js(value: Any) -> str:
    """JS string conversion: booleans lower-case, arrays joined with commas, bytes decoded."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(_js(v) for v in value)
    if isinstance(value, bytes):
        return value.decode("latin-1")
    return str(value)


def normalize_servername(options: Dict[str, Any], req: Any) -> None:
    """Node's ``normalizeServerName``: SNI from the request's ``Host`` header, else ``host``; empty
    for IP literals (no SNI). Sets ``options["servername"]`` unless one was given.

    Raises:
        InvalidArgTypeError: a non-string ``Host`` header.
    """
    if options.get("servername") or options.get("servername") == "":
        return
    host = options.get("host") or "localhost"
    header = req.get_header("host") if req is not None and hasattr(req, "get_header") else None
    if header is not None and not isinstance(header, str):
        raise InvalidArgTypeError('The "options.headers.host" property must be of type string')
    key = (host, header)
    servername = _SERVERNAMES.get(key)
    if servername is None:
        servername = host
        if header:
            if header.startswith("["):
                end = header.find("]")
                servername = header[1:end] if end != -1 else header
            else:
                servername = header.split(":", 1)[0]
        if _is_ip(servername):
            servername = ""
        if len(_SERVERNAMES) >= 4096:
            _SERVERNAMES.clear()
        _SERVERNAMES[key] = servername
    options["servername"] = servername


#: ``(host, Host header) -> servername``: Node's rule, worked out once per pair.
_SERVERNAMES: Dict[Any, str] = {}


class HttpsAgent(Agent):
    """An :class:`Agent` for ``https:`` (default port 443) with verified, cooperative TLS.

    Args: those of :class:`Agent`, plus
        max_cached_sessions (int): TLS sessions kept for resumption, one per origin key; FIFO
            eviction; 0 disables. Default 100.
        TLS connect options (also accepted per request): ``ca`` (path, PEM text or bytes),
            ``cert``, ``key``, ``passphrase``, ``reject_unauthorized`` (default True),
            ``servername`` (SNI), ``min_version``/``max_version`` (``"TLSv1.2"``, ``"TLSv1.3"``),
            ``ciphers``, ``ssl_context`` (bring your own ``gevent.ssl.SSLContext``).

    Certificate failures raise :class:`geventagent.tls.TlsError` with Node's codes
    (``DEPTH_ZERO_SELF_SIGNED_CERT``, ``UNABLE_TO_VERIFY_LEAF_SIGNATURE``,
    ``ERR_TLS_CERT_ALTNAME_INVALID``, ...). Ports Node's ``https.Agent`` (node-agent.md §1, §3, §5.1).
    """

    default_port = 443
    protocol = "https:"
    OPTION_NAMES: FrozenSet[str] = HTTPS_AGENT_OPTIONS

    def __init__(self, *, max_cached_sessions: Any = 100, **options: Any) -> None:
        super().__init__(**options)
        validate_tls_options(self.options)
        if max_cached_sessions is None:
            max_cached_sessions = 100
        if not is_number(max_cached_sessions):
            raise InvalidArgTypeError(
                'The "max_cached_sessions" argument must be of type number. Received %r' % (max_cached_sessions,)
            )
        if max_cached_sessions < 0 or max_cached_sessions != max_cached_sessions:
            raise OutOfRangeError('The value of "max_cached_sessions" is out of range. It must be >= 0.')
        self.max_cached_sessions = max_cached_sessions
        self._sessions: Dict[str, Any] = {}  # insertion order is the FIFO list
        self._contexts: Dict[Any, Any] = {}
        self._tls_suffixes: Dict[str, str] = {}  # servername text -> the 20 fields' suffix of get_name
        self._tls_fields_seen: Any = ()  # ((field, value), ...) of the agent's own TLS options
        self._tls_options_len = -1
        self._tls_own: FrozenSet[str] = frozenset(("servername",))

    # -- key ----------------------------------------------------------------------------------------
    def get_name(self, options: Optional[Dict[str, Any]] = None) -> str:
        """The HTTP key plus Node's 20 TLS fields, each after ``:`` (empty when absent)."""
        name = super().get_name(options)
        options = options or {}
        own = self._own_tls_fields()
        if options.keys() & _TLS_FIELD_SET <= own:
            # Every TLS field present is the agent's own (agent options win in the merge): the
            # 20 fields are a function of the servername alone (once per agent and servername).
            servername = options.get("servername")
            text = _js(servername) if servername and servername != options.get("host") else ""
            suffix = self._tls_suffixes.get(text)
            if suffix is None:
                suffix = self._tls_suffix({**self.options, "servername": text or None, "host": None})
                if len(self._tls_suffixes) < 1024:
                    self._tls_suffixes[text] = suffix
            return name + suffix
        return name + self._tls_suffix(options)

    def _tls_suffix(self, options: Dict[str, Any]) -> str:
        parts = [""]
        for field in TLS_KEY_FIELDS:
            value = options.get(field)
            if field == "servername":
                text = _js(value) if value and value != options.get("host") else ""
            elif field in _PRESENT_WHEN_SET:
                text = _js(value) if value is not None else ""
            elif field == "sigalgs":
                text = json.dumps(value) if value else ""
            else:
                text = _js(value) if value else ""
            parts.append(text)
        return ":".join(parts)

    def _own_tls_fields(self) -> FrozenSet[str]:
        """The TLS key fields the agent's own options set, plus servername. When those options
        changed since the last call (names or values), the cache of name suffixes starts over."""
        options = self.options
        seen = self._tls_fields_seen
        if len(options) != self._tls_options_len or any(options.get(f) is not v for f, v in seen):
            fields = options.keys() & _TLS_FIELD_SET
            self._tls_fields_seen = tuple((f, options[f]) for f in fields)
            self._tls_options_len = len(options)
            self._tls_own = frozenset(fields) | {"servername"}
            self._tls_suffixes = {}
        return self._tls_own

    def add_request(self, req: Any, options: Any, port: Any = None, local_address: Any = None) -> None:
        if isinstance(options, str):
            options = {"host": options, "port": port, "local_address": local_address}
        given = dict(options)
        agent_servername = self.options.get("servername")
        if agent_servername or agent_servername == "":
            given["servername"] = agent_servername  # the agent's options win in the merge
        normalize_servername(given, req)
        super().add_request(req, given)

    # -- connections --------------------------------------------------------------------------------
    def create_connection(self, options: Dict[str, Any], callback: Any = None) -> Optional[Socket]:
        """A :class:`geventagent.tls.TlsSocket` (connected and handshaken lazily by the requester)."""
        from .tls import TlsSocket

        return TlsSocket(options, self)

    def _context_for(self, options: Dict[str, Any]) -> Any:
        given = options.get("ssl_context")
        if given is not None:
            return given
        key = tuple(repr(options.get(field)) for field in CONTEXT_FIELDS)
        ctx = self._contexts.get(key)
        if ctx is None:
            from .tls import build_context

            try:
                ctx = build_context(options)
            except GeventAgentError:
                raise
            except Exception as exc:  # ssl.SSLError (no cipher matches), a PEM that does not load, ...
                # (not a connect error: the TLS options are wrong, and no retry would help)
                raise InvalidArgValueError(
                    "The TLS options do not make a context: %s: %s" % (type(exc).__name__, exc)
                ) from exc
            self._contexts[key] = ctx
        return ctx

    def status(self) -> Dict[str, Any]:
        """:meth:`Agent.status` plus ``tls_sessions``: the origin keys with a cached TLS session,
        oldest first (the next evicted)."""
        result = super().status()
        result["tls_sessions"] = list(self._sessions)
        return result

    # -- session cache (Node's _getSession/_cacheSession/_evictSession) ------------------------------
    def _get_session(self, key: str) -> Any:
        return self._sessions.get(key)

    def _cache_session(self, key: str, session: Any) -> None:
        if not self.max_cached_sessions or session is None:
            return
        sessions = self._sessions
        if key in sessions:
            sessions[key] = session  # replaced in place, no LRU bump (Node)
            return
        while len(sessions) >= self.max_cached_sessions and sessions:
            del sessions[next(iter(sessions))]
        sessions[key] = session

    def _evict_session(self, key: str) -> None:
        self._sessions.pop(key, None)


# Its key is the HTTP key plus the TLS fields of agent.options and the request's servername.
_CACHEABLE_GET_NAMES.add(HttpsAgent.get_name)

#: The default agent for ``https:`` URLs, with the global agent's options (Node's
#: ``https.globalAgent``). Assign ``geventagent.https_global_agent`` to replace it.
https_global_agent = HttpsAgent(keep_alive=True, scheduling="lifo", timeout=5.0)
