"""``rest()`` for locust versions before 2.46.6, which define it on FastHttpUser rather than in a
``RestMixin``: the same contract (JSON headers, ``catch_response=True``, ``response.js``, failures
for bad JSON and for assertions or errors inside the block)."""

from __future__ import annotations

from contextlib import contextmanager
from json import JSONDecodeError
from typing import Any, Iterator


class RestMixin:
    @contextmanager
    def rest(self, method: str, url: str, headers: Any = None, **kwargs: Any) -> Iterator[Any]:
        headers = dict(headers or {})
        lower = {k.lower() for k in headers}
        if "content-type" not in lower:
            headers["Content-Type"] = "application/json"
        if "accept" not in lower:
            headers["Accept"] = "application/json"
        client: Any = self.client  # type: ignore[attr-defined]  # the User subclass has one
        with client.request(method, url, catch_response=True, headers=headers, **kwargs) as resp:
            resp.js = None
            if resp.content is None:
                resp.failure(str(resp.error))
            elif resp.text:
                try:
                    resp.js = resp.json()
                except JSONDecodeError as exc:
                    resp.failure(
                        "Could not parse response as JSON. %s, response code %s, error %s"
                        % (resp.text[:250], resp.status_code, exc)
                    )
            try:
                yield resp
            except AssertionError as exc:
                resp.failure(exc.args[0] if exc.args else "Assertion failed")
            except Exception as exc:
                resp.failure("%s: %s. Response was %s" % (type(exc).__name__, exc, (resp.text or "")[:200]))

    @contextmanager
    def rest_(self, method: str, url: str, name: Any = None, **kwargs: Any) -> Iterator[Any]:
        import time

        separator = "&" if "?" in url else "?"
        with self.rest(
            method, "%s%s_=%d" % (url, separator, int(time.time() * 1000)), name=name or url, **kwargs
        ) as resp:
            yield resp
