"""The side-by-side locustfile: the same task through ``AgentUser`` or locust's ``FastHttpUser``
(``GA_COMPARE_CLASS``), each user with one connection, no wait: the client's throughput.
Each request is tagged ``X-Worker: compare/<class>`` so the server counts its connections."""

from __future__ import annotations

import os

from locust import FastHttpUser, constant, task

from geventagent.contrib.locust import AgentUser

CLASS = os.environ.get("GA_COMPARE_CLASS", "AgentUser")
BASE = {"AgentUser": AgentUser, "FastHttpUser": FastHttpUser}[CLASS]


class Compare(BASE):  # type: ignore[valid-type, misc]
    wait_time = constant(0)
    concurrency = 1

    @task
    def index(self) -> None:
        self.client.get("/", headers={"X-Worker": "compare/" + CLASS})
