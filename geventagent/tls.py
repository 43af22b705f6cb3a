"""TLS for ``HttpsAgent``: cooperative contexts, Node's error codes, the TLS socket.

Imported lazily (on the first https connection), so ``import geventagent`` never imports ``ssl``
before gevent or locust patch it. Contexts are ``gevent.ssl.SSLContext`` objects (never
``create_default_context()``, which returns a stdlib context that blocks the hub when the process
is not monkey-patched).
"""

from __future__ import annotations

import os
import ssl
from typing import Any, Dict, Optional

from gevent import ssl as gssl

from ._options import is_pem_content
from .errors import ConnectionReset, GeventAgentError, InvalidArgValueError, NetworkError
from .socket import Socket, _is_ip

__all__ = ["TlsError", "build_context", "TlsSocket", "TlsInTls", "proxy_tls"]

# OpenSSL X509_V_ERR_* -> Node's codes
_VERIFY_CODES = {
    2: "UNABLE_TO_GET_ISSUER_CERT",
    9: "CERT_NOT_YET_VALID",
    10: "CERT_HAS_EXPIRED",
    18: "DEPTH_ZERO_SELF_SIGNED_CERT",
    19: "SELF_SIGNED_CERT_IN_CHAIN",
    20: "UNABLE_TO_GET_ISSUER_CERT_LOCALLY",
    21: "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
    62: "ERR_TLS_CERT_ALTNAME_INVALID",
    64: "ERR_TLS_CERT_ALTNAME_INVALID",
}

_VERSIONS = {
    "TLSv1": ssl.TLSVersion.TLSv1,
    "TLSv1.1": ssl.TLSVersion.TLSv1_1,
    "TLSv1.2": ssl.TLSVersion.TLSv1_2,
    "TLSv1.3": ssl.TLSVersion.TLSv1_3,
}


class TlsError(NetworkError):
    """A TLS failure. ``.code`` is Node's: ``DEPTH_ZERO_SELF_SIGNED_CERT``,
    ``UNABLE_TO_VERIFY_LEAF_SIGNATURE``, ``ERR_TLS_CERT_ALTNAME_INVALID``, ``CERT_HAS_EXPIRED``, ...,
    or ``ERR_SSL_<REASON>`` for protocol errors."""

    code = "ERR_SSL_PROTOCOL_ERROR"


def from_ssl_error(exc: BaseException, servername: str = "", chain_length: int = 0) -> GeventAgentError:
    """A TLS failure as :class:`TlsError` with Node's code. ``chain_length``: certificates the
    server sent (0: unknown). Node reports an unknown issuer of a lone certificate as
    ``UNABLE_TO_VERIFY_LEAF_SIGNATURE`` (OpenSSL's code 21) where Python's OpenSSL reports 20, and
    a connection closed before the handshake ends as :class:`ConnectionReset` (``ECONNRESET``)."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        verify_code = exc.verify_code
        message = exc.verify_message or str(exc)
        if verify_code == 20 and chain_length == 1:
            verify_code, message = 21, "unable to verify the first certificate"
        code = _VERIFY_CODES.get(verify_code, "ERR_TLS_CERT_VERIFY")
        if code == "ERR_TLS_CERT_ALTNAME_INVALID":
            message = "Hostname/IP does not match certificate's altnames: %s" % message
        return TlsError(message, code=code, verify_code=verify_code)
    if isinstance(exc, (ssl.SSLEOFError, ssl.SSLZeroReturnError)):  # closed during the handshake
        return ConnectionReset("Client network socket disconnected before secure TLS connection was established")
    reason = getattr(exc, "reason", None) or "PROTOCOL_ERROR"
    return TlsError(str(exc), code="ERR_SSL_%s" % str(reason).upper())


def _pem_or_path(value: Any) -> Dict[str, Any]:
    """``ca`` as ``load_verify_locations`` kwargs: a path, PEM text or bytes (or a list of them)."""
    if isinstance(value, (list, tuple)):
        text = "\n".join(_as_text(v) for v in value)
        return {"cadata": text}
    if is_pem_content(value):
        return {"cadata": _as_text(value)}
    if isinstance(value, (str, os.PathLike)):
        path = os.fspath(value)
        return {"capath": path} if os.path.isdir(path) else {"cafile": path}  # a folder of hashed CA files
    raise TypeError("ca must be a path, PEM text or bytes")


def _as_text(value: Any) -> str:
    """PEM content as text, or the text of the file a path names."""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("ascii")
    if not is_pem_content(value):
        with open(os.fspath(value)) as fh:
            return fh.read()
    return str(value)


def _write_temp_pem(data: Any) -> str:
    import tempfile

    handle, path = tempfile.mkstemp(suffix=".pem")
    with os.fdopen(handle, "wb") as fh:
        fh.write(bytes(data) if isinstance(data, (bytes, bytearray)) else data.encode("ascii"))
    return path


def build_context(options: Dict[str, Any]) -> Any:
    """A cooperative client ``gevent.ssl.SSLContext`` from Node-style TLS options.

    Verification is on unless ``reject_unauthorized`` is False; trust comes from ``ca``, else the
    system store, else certifi (when the system store is empty).
    """
    given = options.get("ssl_context")
    if given is not None:
        return given
    ctx = gssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if options.get("reject_unauthorized", True) is False:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    ca = options.get("ca")
    if ca is not None:
        ctx.load_verify_locations(**_pem_or_path(ca))
    else:
        ctx.load_default_certs()
        if not ctx.cert_store_stats().get("x509_ca"):
            try:
                import certifi

                ctx.load_verify_locations(cafile=certifi.where())
            except ImportError:  # pragma: no cover
                pass
    cert = options.get("cert")
    if cert is not None:
        key = options.get("key")
        cleanup = []
        # (a path as given, str or os.PathLike; PEM content through a temporary file)
        certfile = None if is_pem_content(cert) else os.fspath(cert)
        if certfile is None:
            certfile = _write_temp_pem(cert)
            cleanup.append(certfile)
        keyfile = None if key is None or is_pem_content(key) else os.fspath(key)
        if key is not None and keyfile is None:
            keyfile = _write_temp_pem(key)
            cleanup.append(keyfile)
        try:
            ctx.load_cert_chain(certfile, keyfile, password=options.get("passphrase"))
        finally:
            for path in cleanup:
                os.unlink(path)
    for field, attr in (("min_version", "minimum_version"), ("max_version", "maximum_version")):
        version = options.get(field)
        if version:
            setattr(ctx, attr, _VERSIONS[version] if isinstance(version, str) else version)
    ciphers = options.get("ciphers")
    if ciphers:
        ctx.set_ciphers(ciphers)
    curve = options.get("ecdh_curve")
    if curve and curve != "auto":
        ctx.set_ecdh_curve(curve)
    secure_options = options.get("secure_options")
    if secure_options:
        ctx.options |= secure_options
    protocol = options.get("secure_protocol")
    if protocol:
        pinned = _SECURE_PROTOCOLS.get(protocol, _UNSET)
        if pinned is _UNSET:
            raise InvalidArgValueError("Unknown secure_protocol %r (e.g. 'TLS_method', 'TLSv1_2_method')" % (protocol,))
        if pinned is not None:
            ctx.minimum_version = ctx.maximum_version = pinned
    crl = options.get("crl")
    if crl:
        for item in crl if isinstance(crl, (list, tuple)) else [crl]:
            ctx.load_verify_locations(**_pem_or_path(item))
        ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    return ctx


_UNSET: Any = object()
# Node's secureProtocol method names -> the one version they pin (None: any version).
_SECURE_PROTOCOLS = {
    "TLS_method": None,
    "TLS_client_method": None,
    "SSLv23_method": None,
    "SSLv23_client_method": None,
    "TLSv1_method": ssl.TLSVersion.TLSv1,
    "TLSv1_client_method": ssl.TLSVersion.TLSv1,
    "TLSv1_1_method": ssl.TLSVersion.TLSv1_1,
    "TLSv1_1_client_method": ssl.TLSVersion.TLSv1_1,
    "TLSv1_2_method": ssl.TLSVersion.TLSv1_2,
    "TLSv1_2_client_method": ssl.TLSVersion.TLSv1_2,
}


def proxy_tls(sock: Any, proxy: Any, options: Dict[str, Any], limit: Optional[float]) -> Any:
    """TLS to an ``https://`` proxy on the connected gevent ``sock`` (``options``: the agent's
    ``proxy_tls``), verified against the proxy's name. Returns the TLS socket.

    Raises:
        TlsError: the handshake failed (Node's codes).
    """
    ctx = build_context(options)
    sock.settimeout(limit)
    name = options.get("servername") or proxy.host  # (an IP is checked as an IP, with no SNI)
    tls = ctx.wrap_socket(sock, server_hostname=name, do_handshake_on_connect=False)
    try:
        tls.do_handshake()
    except BaseException as exc:
        # The TLS socket owns the fd now (``sock`` is detached), and the caller knows only
        # ``sock``: closed here, or the fd stayed open until the exception and its frames went
        # (a caller keeping the error kept the connection to the proxy).
        chain = _chain_length(exc, tls)
        tls.close()
        if isinstance(exc, ssl.SSLError):
            raise from_ssl_error(exc, proxy.host, chain) from exc
        raise
    return tls


def _chain_length(exc: BaseException, tls: Any) -> int:
    """How many certificates the peer sent, after a failed verification (0: unknown)."""
    if not isinstance(exc, ssl.SSLCertVerificationError):
        return 0
    sslobj = getattr(tls, "_sslobj", None)  # the C object of a TLS socket; an SSLObject in TlsInTls
    getter = getattr(sslobj, "get_unverified_chain", None)  # Python 3.10+ (public in 3.13)
    if getter is None:  # an SSLObject before 3.13: its own C object has it
        getter = getattr(getattr(sslobj, "_sslobj", None), "get_unverified_chain", None)
    try:
        chain = getter() if getter is not None else None
    except (ValueError, ssl.SSLError):
        return 0
    return len(chain) if chain else 0


class TlsInTls:
    """TLS to the origin inside the TLS to an ``https://`` proxy: an ``SSLObject`` over memory
    BIOs whose records travel on the outer, cooperative TLS socket (Python's ``wrap_socket``
    cannot wrap a TLS socket again). Offers what :class:`~geventagent.socket.Socket` uses of a
    socket: ``recv``, ``send``, ``sendall``, timeouts, ``fileno``, addresses, ``close``."""

    def __init__(self, outer: Any, ctx: Any, server_hostname: Optional[str], session: Any) -> None:
        self.outer = outer
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._sslobj = ctx.wrap_bio(self._incoming, self._outgoing, server_hostname=server_hostname, session=session)
        self._sock = getattr(outer, "_sock", None)  # the TCP socket (the idle check peeks at it)
        self.family = outer.family

    def _flush(self) -> None:
        data = self._outgoing.read()
        if data:
            self.outer.sendall(data)

    def _fill(self) -> None:
        data = self.outer.recv(65536)
        if data:
            self._incoming.write(data)
        else:
            self._incoming.write_eof()

    def do_handshake(self) -> None:
        while True:
            try:
                self._sslobj.do_handshake()
                self._flush()
                return
            except ssl.SSLWantReadError:
                self._flush()
                self._fill()

    def recv(self, size: int) -> bytes:
        while True:
            try:
                return self._sslobj.read(size)
            except ssl.SSLWantReadError:
                self._flush()
                self._fill()
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                return b""

    def sendall(self, data: Any) -> None:
        view = memoryview(data)
        while view:
            try:
                written = self._sslobj.write(view)
            except ssl.SSLWantReadError:
                self._flush()
                self._fill()
                continue
            view = view[written:]
            self._flush()

    def send(self, data: Any) -> int:
        self.sendall(data)
        return len(data)

    def settimeout(self, seconds: Optional[float]) -> None:
        self.outer.settimeout(seconds)

    def gettimeout(self) -> Optional[float]:
        return self.outer.gettimeout()

    def fileno(self) -> int:
        return self.outer.fileno()

    def getpeername(self) -> Any:
        return self.outer.getpeername()

    def getsockname(self) -> Any:
        return self.outer.getsockname()

    def setsockopt(self, *args: Any) -> None:
        self.outer.setsockopt(*args)

    def close(self) -> None:
        self.outer.close()

    @property
    def session(self) -> Any:
        return self._sslobj.session

    @property
    def session_reused(self) -> bool:
        return bool(self._sslobj.session_reused)

    def version(self) -> Optional[str]:
        return self._sslobj.version()


class TlsSocket(Socket):
    """A :class:`Socket` that performs a TLS handshake after connecting, resuming the agent's cached
    session for its origin when there is one. Through a proxy it opens a CONNECT tunnel first."""

    __slots__ = ("_https_agent", "session_reused", "_session_saved")
    _RELEASE_HOOK = True  # caches the TLS session after the first response (see _before_release)
    tunnels = True

    def __init__(self, options: Dict[str, Any], agent: Any) -> None:
        super().__init__(options)
        self._https_agent = agent
        self.session_reused = False
        self._session_saved = False

    def _after_connect(self, sock: Any) -> None:
        opts = self.options
        agent = self._https_agent
        # no SNI for an IP literal, but the certificate is still checked against the IP
        servername = opts.get("servername") or (opts.get("host") if _is_ip(opts.get("host") or "") else None)
        key = opts.get("_agent_key")
        session = agent._get_session(key) if key else None
        ctx = agent._context_for(opts)
        limit = opts.get("connect_timeout") or opts.get("timeout") or None
        sock.settimeout(limit)
        tls: Any
        if getattr(sock, "_sslobj", None) is not None:  # through an https:// proxy: TLS in its TLS
            tls = TlsInTls(sock, ctx, servername, session)
        else:
            tls = ctx.wrap_socket(
                sock,
                server_hostname=servername,
                do_handshake_on_connect=False,
                session=session if session is not None else None,
            )
        self._sock = tls
        try:
            tls.do_handshake()
        except ssl.SSLError as exc:
            if session is not None and key:
                agent._evict_session(key)
            raise from_ssl_error(exc, servername or "", _chain_length(exc, tls)) from exc
        self.session_reused = reused = bool(tls.session_reused)
        # Reading SSLSocket.session copies it (CPython re-encodes and re-parses it, certificate
        # included: 0.15 ms against nginx's trustme chain; setting one on a new connection pays
        # the same copy): once per connection at most. A resumed handshake keeps the cached
        # session (it stays good until the server lets it expire); TLS 1.2 has its session now;
        # TLS 1.3 gets its tickets after the handshake, with the first response (see
        # _before_release).
        if reused or not key:
            self._session_saved = True
        elif tls.version() != "TLSv1.3":
            self._session_saved = True
            agent._cache_session(key, tls.session)
        super()._after_connect(tls)
        if isinstance(tls, gssl.SSLSocket):  # gevent's over a plain fd (not TLS in a proxy's TLS)
            self._ssl = getattr(tls, "_sslobj", None)

    # Reads and writes on the SSL object itself, as the plain socket's go to the C socket: gevent's
    # SSLSocket layers (sendall, send, recv, read) are taken only to wait or to decide an error.
    def _tls_write(self, data: Any) -> None:
        try:
            self._ssl.write(data)  # all of it, or an error (CPython sets no partial-write mode)
        except (ssl.SSLWantWriteError, ssl.SSLWantReadError):
            self._sock.sendall(data)  # waits; OpenSSL's retry gets the same bytes, as it requires

    def _tls_write_nowait(self, data: Any) -> int:
        """The cork's write, in the hub: all of ``data`` written, or 0 (the owning greenlet then
        writes all of it again, waiting)."""
        try:
            return int(self._ssl.write(data))
        except (ssl.SSLWantWriteError, ssl.SSLWantReadError):
            return 0

    def _tls_read(self, size: int) -> bytes:
        sslobj, sock = self._ssl, self._sock
        while True:
            try:
                return sslobj.read(size)
            except ssl.SSLWantReadError:  # a record not all here yet, or only a session ticket
                self._wait_read(sock)  # under the socket's timeout
            except ssl.SSLError:  # EOF, an alert, a renegotiation: gevent's read decides
                return sock.recv(size)

    def _peek(self) -> Optional[str]:
        """Liveness of an idle TLS socket: TLS 1.3 session tickets (records with no application data)
        make the raw socket readable; read through the SSL object so they are not mistaken for
        stray bytes."""
        sock = self._sock
        if sock is None or self.destroyed:
            return "destroyed"
        reason = super()._peek()
        if reason != "unexpected_data":
            return reason
        sslobj = getattr(sock, "_sslobj", None)
        if sslobj is None:
            return reason
        try:
            data = sslobj.read(1)
        except ssl.SSLWantReadError:
            return None  # only handshake records (session tickets): healthy
        except ssl.SSLZeroReturnError:
            return "server_close"
        except (ssl.SSLError, OSError):
            return "reset_while_idle"
        return "unexpected_data" if data else "server_close"

    def _before_release(self) -> None:
        # TLS 1.3 tickets arrive after the handshake, with the first response: remember the session
        # then, once per connection that was not resumed (Node caches a session when its
        # 'session' event brings a new one, not per request).
        if not self._session_saved:
            self._session_saved = True
            self._remember_session()

    def _remember_session(self) -> None:
        key = self.options.get("_agent_key")
        sock = self._sock
        if key and sock is not None and not self.destroyed:
            try:
                session = sock.session
            except (AttributeError, ValueError):
                return
            if session is not None:
                self._https_agent._cache_session(key, session)
