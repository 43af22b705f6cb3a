"""A loopback server for the load test that counts TCP connections per client tag.

Each request carries ``X-Worker: <pid>/<user class>``; a connection is attributed to the tag of its
first request. ``GET /__stats`` returns, per tag: connections opened, peak concurrent connections,
requests, plus the reports workers posted to ``/__report``.

    python loadtests/server.py     # prints the port, stops when stdin closes
"""

from __future__ import annotations

import json
from typing import Any, Dict
from urllib.parse import parse_qs, urlsplit

import gevent

from geventagent.testing import HttpTestServer, Response, serve_until_stdin_closes


class CapServer(HttpTestServer):
    def __init__(self, delay: float = 0.005) -> None:
        super().__init__(self.route, keep_alive_timeout=5.0, keep_requests=False)
        self.delay = delay
        self.tags: Dict[str, Dict[str, int]] = {}
        self.reports: Dict[str, Any] = {}

    def route(self, req: Any) -> Response:
        parts = urlsplit(req.path)
        if parts.path == "/__stats":
            return Response(200, json.dumps({"tags": self.tags, "reports": self.reports}))
        if parts.path == "/__report":
            query = {k: v[0] for k, v in parse_qs(parts.query).items()}
            self.reports[query.pop("tag")] = {k: int(v) for k, v in query.items()}
            return Response(200, b"ok")
        tag = req.headers.get("x-worker", "untagged")
        conn = req.conn
        if getattr(conn, "tag", None) is None:
            conn.tag = tag
            stats = self.tags.setdefault(tag, {"connections": 0, "active": 0, "peak": 0, "requests": 0})
            stats["connections"] += 1
            stats["active"] += 1
            stats["peak"] = max(stats["peak"], stats["active"])
        self.tags[conn.tag]["requests"] += 1
        gevent.sleep(self.delay)
        return Response(200, b"ok")

    def connection_closed(self, conn: Any) -> None:
        tag = getattr(conn, "tag", None)
        if tag is not None:
            self.tags[tag]["active"] -= 1


def main() -> None:
    serve_until_stdin_closes(CapServer())


if __name__ == "__main__":
    main()
