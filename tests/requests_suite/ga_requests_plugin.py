"""pytest plugin: requests' own test suite with every Session sending through geventagent.

``python -m pytest -p ga_requests_plugin <requests-src>/tests`` (see run.py)."""

import pytest


def pytest_configure(config: pytest.Config) -> None:
    from geventagent.contrib import requests as ga_requests

    ga_requests.install()
