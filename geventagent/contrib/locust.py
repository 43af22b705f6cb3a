"""``AgentUser``: a locust User whose HTTP client is a geventagent :class:`~geventagent.Agent`.

The client speaks FastHttpUser's language (``get/post/put/patch/delete/head/options/request``,
``catch_response``, ``rest()``), fires ``environment.events.request`` with exactly locust's nine
keyword arguments, and its connections obey hard caps::

    from locust import task
    from geventagent.contrib.locust import AgentUser

    class Api(AgentUser):
        host = "http://127.0.0.1:8080"
        max_sockets = 10            # per user (its own agent) ...
        # agent = ga.Agent(keep_alive=True, max_total_sockets=100)   # ... or one agent shared by all

        @task
        def index(self):
            self.client.get("/")

Beyond FastHttpUser, each event's ``context`` carries ``reused_socket`` and phase timings in ms
(``queue_ms``, ``connect_ms``, ``ttfb_ms``). Caps apply per process: with ``--processes N`` each
worker process has its own agents.
"""

from __future__ import annotations

import json as _json
import re
import time
from base64 import b64encode
from typing import Any, Dict, Iterator, Optional, cast
from urllib.parse import urlencode, urljoin, urlsplit

import gevent
from locust import User
from locust.exception import CatchResponseError, LocustError, ResponseError, StopTest
from locust.user.users import RestMixin

import geventagent as ga
from geventagent.errors import (
    GeventAgentError,
    HttpParseError,
    InvalidArgTypeError,
    InvalidArgValueError,
    InvalidCharError,
    InvalidHttpTokenError,
    InvalidProtocolError,
    UnescapedCharactersError,
)

__all__ = ["AgentUser", "AgentSession", "AgentResponse", "ResponseContextManager", "BadStatusCode"]

VALID_STATUS_CODES = frozenset((200, 201, 202, 203, 204, 205, 206, 207, 208, 226, 301, 302, 303, 304, 307, 308))
REDIRECT_STATUS_CODES = frozenset((301, 302, 303, 307, 308))
#: Errors raised by bad input in the task itself: never recorded, always re-raised (as locust does
#: for errors outside FastHttpUser's FAILURE_EXCEPTIONS).
_PROGRAMMING_ERRORS = (
    InvalidArgTypeError,
    InvalidArgValueError,
    InvalidCharError,
    InvalidHttpTokenError,
    InvalidProtocolError,
    UnescapedCharactersError,
)
FAILURE_EXCEPTIONS = (GeventAgentError, OSError, gevent.Timeout, HttpParseError)


class BadStatusCode(GeventAgentError, ConnectionError):
    """A status code outside locust's valid set; ``str()`` is FastHttpUser's ``URL <url>: code=<n>``."""

    code = "ERR_BAD_STATUS"

    def __init__(self, url: str, status: int) -> None:
        super().__init__("URL %s: code=%d" % (url, status))
        self.url = url
        self.status = status


class _Request:
    """What was sent (FastHttpUser's ``response.request``): ``method``, ``url``, ``headers``, ``body``."""

    def __init__(self, method: str, url: str, headers: Dict[str, str], body: Any) -> None:
        self.method = method
        self.url = url
        self.headers = headers
        self.body = body


class AgentResponse:
    """A response as locust users expect it: ``status_code`` (0 on a connection error), ``headers``,
    ``content`` (bytes, or None on an error), ``text``, ``json()``, ``ok``, ``url``, ``request``,
    ``error``, ``raise_for_status()``, ``reused_socket``, ``iter_content()``."""

    def __init__(self, request: _Request, message: Optional[ga.IncomingMessage] = None, error: Any = None) -> None:
        self.request = request
        self._message = message
        self.error = error
        self.status_code = message.status_code if message is not None else 0
        self.headers = message.headers if message is not None else None
        self.reused_socket = bool(message is not None and message.req.reused_socket)
        self._content: Optional[bytes] = None
        self._read = message is None

    @property
    def url(self) -> Optional[str]:
        return self.request.url if self.request is not None else None

    @property
    def content(self) -> Optional[bytes]:
        if self._message is None:
            return None
        if not self._read:
            self._read = True
            self._content = self._message.read()
        return self._content

    @property
    def text(self) -> Optional[str]:
        content = self.content
        if content is None:
            return None
        charset = "utf-8"
        match = re.search(r"charset=([\w.-]+)", (self.headers or {}).get("content-type", ""), re.I)
        if match:
            charset = match.group(1)
        return content.decode(charset, errors="replace")

    def json(self) -> Any:
        return _json.loads(self.text)  # type: ignore[arg-type]

    @property
    def ok(self) -> bool:
        return 0 < self.status_code < 400

    def iter_content(self, chunk_size: int = 1024, decode_content: bool = True) -> Iterator[Any]:
        if self._message is None:
            raise LocustError("Cannot iterate content on a response without a body")
        while True:
            chunk = self._message.read(chunk_size)
            if not chunk:
                return
            if decode_content:
                try:
                    yield chunk.decode("utf-8")
                    continue
                except UnicodeDecodeError:
                    pass
            yield chunk

    def raise_for_status(self) -> None:
        if self.error is not None:
            raise self.error

    def success(self) -> None:
        raise LocustError("If you want to change the state of the request, you must pass catch_response=True.")

    def failure(self, *args: Any, **kwargs: Any) -> None:
        raise LocustError("If you want to change the state of the request, you must pass catch_response=True.")


class ResponseContextManager(AgentResponse):
    """``catch_response=True``: nothing is recorded until the ``with`` block exits; ``success()`` /
    ``failure()`` decide (the last call wins), as in locust."""

    _manual_result: Any = None
    _entered = False

    def __init__(self, response: AgentResponse, request_event: Any, request_meta: Dict[str, Any]) -> None:
        self.__dict__.update(response.__dict__)
        self._request_event = request_event
        self.request_meta = request_meta

    def __enter__(self) -> "ResponseContextManager":
        self._entered = True
        return self

    def __exit__(self, exc: Any, value: Any, traceback: Any) -> bool:
        if self._manual_result is not None:
            self.request_meta["exception"] = None if self._manual_result is True else self._manual_result
            self._report()
            return exc is None
        if exc:
            if isinstance(value, ResponseError):
                self.request_meta["exception"] = value
                self._report()
                return True
            return False
        try:
            self.raise_for_status()
        except FAILURE_EXCEPTIONS as error:
            self.request_meta["exception"] = error
        self._report()
        return True

    def _report(self) -> None:
        self._request_event.fire(**self.request_meta)

    def success(self) -> None:
        if not self._entered:
            raise LocustError("Tried to set status on a request that has not yet been made. Use a with-block.")
        self._manual_result = True

    def failure(self, exc: Any) -> None:
        if not self._entered:
            raise LocustError("Tried to set status on a request that has not yet been made. Use a with-block.")
        if not isinstance(exc, Exception):
            exc = CatchResponseError(exc)
        self._manual_result = exc

    def raise_for_status(self) -> None:
        if not self._manual_result:
            super().raise_for_status()
        elif isinstance(self._manual_result, Exception):
            raise self._manual_result


class AgentSession:
    """The ``client`` of an :class:`AgentUser`: FastHttpSession's interface over geventagent agents.

    Args:
        environment: the locust Environment (its ``events.request`` is fired).
        base_url (str): resolves relative paths (``user.host``).
        user: the User (its ``context()`` is merged into every event's context).
        agent / https_agent: the agents for ``http:`` and ``https:`` URLs.
        timeout (float): socket inactivity limit in seconds. max_redirects (int).
    """

    def __init__(
        self,
        environment: Any,
        base_url: str,
        user: Any = None,
        *,
        agent: ga.Agent,
        https_agent: ga.HttpsAgent,
        timeout: Optional[float] = None,
        max_redirects: int = 30,
        default_headers: Optional[Dict[str, str]] = None,
    ) -> None:
        self.environment = environment
        self.request_event = environment.events.request
        self.user = user
        self.agent = agent
        self.https_agent = https_agent
        self.timeout = timeout
        self.max_redirects = max_redirects
        self.default_headers = dict(default_headers or {})
        self.request_name: Optional[str] = None
        parts = urlsplit(base_url)
        self.auth_header: Optional[str] = None
        if parts.username:
            credentials = "%s:%s" % (parts.username, parts.password or "")
            self.auth_header = "Basic " + b64encode(credentials.encode()).decode()
            netloc = (parts.hostname or "") + (":%d" % parts.port if parts.port else "")
            base_url = parts._replace(netloc=netloc).geturl()
        self.base_url = base_url

    def _build_url(self, path: str) -> str:
        if re.match(r"^https?://", path, re.I):
            return path
        return urljoin(self.base_url.rstrip("/") + "/", path.lstrip("/")) if path else self.base_url

    def _agent_for(self, url: str) -> Any:
        return self.https_agent if url.lower().startswith("https:") else self.agent

    def _send(
        self,
        method: str,
        url: str,
        headers: Dict[str, str],
        body: Any,
        stream: bool,
        allow_redirects: bool,
        timeout: Optional[float],
    ) -> AgentResponse:
        request = _Request(method, url, headers, body)
        redirects = 0
        try:
            while True:
                message = ga.request(
                    method, url, headers=headers, body=body, agent=self._agent_for(url), timeout=timeout
                )
                status = message.status_code
                location = message.headers.get("location")
                if allow_redirects and status in REDIRECT_STATUS_CODES and location:
                    message.close()
                    if redirects >= self.max_redirects:
                        return AgentResponse(request, None, BadStatusCode(url, status))
                    redirects += 1
                    url = urljoin(url, location)
                    if status == 303 or (status in (301, 302) and method == "POST"):
                        method, body = ("GET" if method != "HEAD" else "HEAD"), None
                        headers = {
                            k: v for k, v in headers.items() if k.lower() not in ("content-type", "content-length")
                        }
                    continue
                response = AgentResponse(request, message)
                if not stream:
                    response.content  # noqa: B018  (read the body now, inside the timing)
                if status not in VALID_STATUS_CODES:
                    response.error = BadStatusCode(request.url, status)
                return response
        except _PROGRAMMING_ERRORS:
            raise
        except FAILURE_EXCEPTIONS as error:
            return AgentResponse(request, None, error)

    def request(
        self,
        method: str,
        url: str,
        name: Optional[str] = None,
        data: Any = None,
        catch_response: bool = False,
        stream: bool = False,
        headers: Optional[Dict[str, str]] = None,
        auth: Any = None,
        json: Any = None,
        allow_redirects: bool = True,
        context: Optional[dict] = None,
        params: Any = None,
        timeout: Optional[float] = None,
        **kwargs: Any,
    ) -> Any:
        """Send a request, record it, return an :class:`AgentResponse` (or a
        :class:`ResponseContextManager` with ``catch_response=True``). Connection errors are recorded
        as failures and returned (``status_code`` 0, ``content`` None), never raised into the task."""
        if self.request_name and not name:
            name = self.request_name
        built_url = self._build_url(url)
        if params:
            query = urlencode(params, doseq=True) if not isinstance(params, str) else params
            built_url += ("&" if "?" in built_url else "?") + query
        context = context or {}
        if self.user is not None:
            context = {**self.user.context(), **context}
        else:
            context = dict(context)
        request_headers = {**self.default_headers, **(headers or {})}
        lower = {k.lower() for k in request_headers}
        if auth:
            credentials = "%s:%s" % (_text(auth[0]), _text(auth[1]))
            request_headers["Authorization"] = "Basic " + b64encode(credentials.encode()).decode()
        elif self.auth_header and "authorization" not in lower:
            request_headers["Authorization"] = self.auth_header
        body = data
        if isinstance(body, dict):
            body = urlencode(body, doseq=True)
            if "content-type" not in lower:
                request_headers["Content-Type"] = "application/x-www-form-urlencoded"
        elif not data and json is not None:
            body = _json.dumps(json)
            if "content-type" not in lower:
                request_headers["Content-Type"] = "application/json"
            if "accept" not in lower:
                request_headers["Accept"] = "application/json"
        start_time = time.time()
        start = time.perf_counter()
        response = self._send(
            method.upper(),
            built_url,
            request_headers,
            body,
            stream,
            allow_redirects,
            timeout if timeout is not None else self.timeout,
        )
        elapsed_ms = (time.perf_counter() - start) * 1000
        message = response._message
        if message is not None:
            req = cast(ga.ClientRequest, message.req)
            phases = req.timings()
            context.update(
                reused_socket=req.reused_socket,
                queue_ms=phases["queue"] * 1000,
                connect_ms=phases["connect"] * 1000,
                ttfb_ms=phases["ttfb"] * 1000,
            )
        if stream:
            length = int((response.headers or {}).get("content-length") or 0)
        else:
            length = len(response.content or b"")
        request_meta = {
            "request_type": method,
            "name": name or url,
            "response_time": elapsed_ms,
            "response_length": length,
            "response": response,
            "context": context,
            "exception": response.error,
            "start_time": start_time,
            "url": built_url,
        }
        if catch_response:
            return ResponseContextManager(response, self.request_event, request_meta)
        self.request_event.fire(**request_meta)
        return response

    def get(self, url: str, **kwargs: Any) -> Any:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, data: Any = None, **kwargs: Any) -> Any:
        return self.request("POST", url, data=data, **kwargs)

    def put(self, url: str, data: Any = None, **kwargs: Any) -> Any:
        return self.request("PUT", url, data=data, **kwargs)

    def patch(self, url: str, data: Any = None, **kwargs: Any) -> Any:
        return self.request("PATCH", url, data=data, **kwargs)

    def delete(self, url: str, **kwargs: Any) -> Any:
        return self.request("DELETE", url, **kwargs)

    def head(self, url: str, **kwargs: Any) -> Any:
        return self.request("HEAD", url, **kwargs)

    def options(self, url: str, **kwargs: Any) -> Any:
        return self.request("OPTIONS", url, **kwargs)

    def rename_request(self, name: str) -> Any:
        """``with client.rename_request("name"):`` groups requests under one name."""
        session = self

        class _Rename:
            def __enter__(self) -> None:
                session.request_name = name

            def __exit__(self, *exc: Any) -> None:
                session.request_name = None

        return _Rename()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class AgentUser(User, RestMixin):
    """An abstract locust User whose ``client`` is an :class:`AgentSession`.

    Class attributes (read once per user; map to the agent's options):
        keep_alive (True), max_sockets (10), max_total_sockets (None = unlimited),
        max_free_sockets (256), timeout (60.0 s, socket inactivity), connect_timeout (60.0 s),
        max_redirects (30), insecure (False: TLS certificates are verified), default_headers,
        agent (None: each user creates and destroys its own agent; set an ``Agent`` to share it).
    """

    abstract = True
    keep_alive = True
    max_sockets: Any = 10
    max_total_sockets: Any = None
    max_free_sockets: Any = 256
    timeout: Optional[float] = 60.0
    connect_timeout: Optional[float] = 60.0
    max_redirects = 30
    insecure = False
    default_headers: Optional[Dict[str, str]] = None
    agent: Optional[ga.Agent] = None
    https_agent: Optional[ga.HttpsAgent] = None

    def __init__(self, environment: Any) -> None:
        super().__init__(environment)
        if self.host is None:
            raise StopTest(
                "You must specify the base host. Either in the host attribute in the User class, "
                "or on the command line using the --host option."
            )
        self._own_agents = []
        options = dict(
            keep_alive=self.keep_alive,
            max_sockets=self.max_sockets,
            max_total_sockets=self.max_total_sockets,
            max_free_sockets=self.max_free_sockets,
            connect_timeout=self.connect_timeout,
        )
        agent = type(self).agent
        if agent is None:
            agent = ga.Agent(**options)
            self._own_agents.append(agent)
        https_agent = type(self).https_agent
        if https_agent is None:
            https_agent = ga.HttpsAgent(reject_unauthorized=not self.insecure, **options)
            self._own_agents.append(https_agent)
        self.client = AgentSession(
            environment,
            self.host,
            self,
            agent=agent,
            https_agent=https_agent,
            timeout=self.timeout,
            max_redirects=self.max_redirects,
            default_headers=self.default_headers,
        )

    def on_stop(self) -> None:
        """Destroy the agents this user created (a shared agent is left alone)."""
        self._destroy_own_agents()

    def _destroy_own_agents(self) -> None:
        for agent in self._own_agents:
            agent.destroy()

    def run(self) -> None:  # type: ignore[misc]  # locust marks run() final; on_stop is the user's
        try:
            super().run()
        finally:  # also when the user is killed mid-request (GreenletExit)
            self._destroy_own_agents()
