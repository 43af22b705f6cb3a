# The README's two commands: `make demo` and `make test`. Each creates .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-test

.PHONY: venv test demo lint clean bench bench-race loadtest requests-suite test-oldest test-locust-oldest test-urllib3-1

$(STAMP): setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

# The core runs unpatched; locust (which monkey-patches on import) runs in a second process.
test: $(STAMP)
	$(BIN)/python -m pytest -p no:anyio -p no:cacheprovider tests --ignore=tests/locust
	$(BIN)/python -m pytest -p no:anyio -p no:cacheprovider tests/locust

demo: $(STAMP)
	$(BIN)/python -m geventagent.demo

BENCH_STAMP := $(VENV)/.installed-bench

$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[test,bench]'
	touch $(BENCH_STAMP)

# Throughput side by side (geventagent, geventhttpclient, urllib3, requests, httpx, node, raw floor),
# client pinned to CPU 0 and nginx (Debian's package, installed when possible) to CPU 1.
bench: $(BENCH_STAMP)
	@command -v nginx >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
		(apt-get install -y -qq nginx-light >/dev/null 2>&1 || (apt-get update -qq >/dev/null 2>&1 && \
		 apt-get install -y -qq nginx-light >/dev/null 2>&1)) || echo "nginx not installed: using the Python server"; }
	mkdir -p bench-results
	$(BIN)/python bench/bench.py --out bench-results

# The keep-alive race: failed requests per client, side by side (geventagent must lose none).
bench-race: $(BENCH_STAMP)
	mkdir -p bench-results
	$(BIN)/python bench/race.py --json bench-results/race.json

# 200 users for 30 s through locust's own --processes 2 (fails if a cap is exceeded or a request fails),
# then AgentUser and FastHttpUser side by side on the same server and locustfile.
loadtest: $(STAMP)
	$(BIN)/python loadtests/run.py --users 200 --time 30s --processes 2

# A venv of its own: httpbin pins greenlet < 3 on Python < 3.12, which must not reach .venv.
SUITE_VENV := .venv-requests-suite
SUITE_STAMP := $(SUITE_VENV)/.installed

$(SUITE_STAMP): setup.py
	$(PYTHON) -m venv $(SUITE_VENV)
	$(SUITE_VENV)/bin/python -m pip install -q --disable-pip-version-check -e . requests 'pytest<10' pytest-timeout \
		'pytest-httpbin==2.1.0' 'httpbin~=0.10.0' pytest-mock trustme PySocks
	touch $(SUITE_STAMP)

# requests' own test suite, stock and through geventagent.contrib.requests.install(), side by side.
requests-suite: $(SUITE_STAMP)
	$(SUITE_VENV)/bin/python tests/requests_suite/run.py

# The oldest of every dependency setup.py accepts (gevent, greenlet, httptools, idna, locust 2.20.0,
# gunicorn 21.2.0), in a venv of its own: the whole suite again. setuptools is pinned because
# gevent 22.10's patch_all() loads its plugins through pkg_resources, which setuptools 80 removed
# and which, before 71, does not find zope_interface-*.dist-info (the name newer wheels use).
OLDLOC_VENV := .venv-oldest
OLDLOC_STAMP := $(OLDLOC_VENV)/.installed

$(OLDLOC_STAMP): setup.py
	$(PYTHON) -m venv $(OLDLOC_VENV)
	$(OLDLOC_VENV)/bin/python -m pip install -q --disable-pip-version-check -e . 'gevent==22.10.2' 'greenlet==2.0.0' \
		'httptools==0.6.3' 'idna==3.0' 'locust==2.20.0' 'gunicorn==21.2.0' 'setuptools==75.9.1' 'pytest<10' \
		pytest-timeout hypothesis trustme 'proxy.py' pproxy requests
	touch $(OLDLOC_STAMP)

test-oldest: $(OLDLOC_STAMP)
	$(OLDLOC_VENV)/bin/python -m pytest -p no:anyio -p no:cacheprovider tests --ignore=tests/locust
	$(OLDLOC_VENV)/bin/python -m pytest -p no:anyio -p no:cacheprovider tests/locust

# (its former name, when only locust was at its oldest)
test-locust-oldest: test-oldest

# requests still accepts urllib3 1.26 (pinned where OpenSSL < 1.1.1 or an old botocore is): the
# requests adapter's tests on it, in a venv of its own.
U3_VENV := .venv-urllib3-1
U3_STAMP := $(U3_VENV)/.installed

$(U3_STAMP): setup.py
	$(PYTHON) -m venv $(U3_VENV)
	$(U3_VENV)/bin/python -m pip install -q --disable-pip-version-check -e . 'urllib3<2' 'requests>=2.31' pytest \
		pytest-timeout hypothesis trustme pproxy
	touch $(U3_STAMP)

test-urllib3-1: $(U3_STAMP)
	$(U3_VENV)/bin/python -m pytest -p no:cacheprovider tests/test_requests_adapter.py tests/test_https.py tests/test_socks.py

clean:
	rm -rf $(VENV) $(SUITE_VENV) $(OLDLOC_VENV) .venv-locust-oldest $(U3_VENV) build *.egg-info .pytest_cache

LINT_STAMP := $(VENV)/.installed-lint

$(LINT_STAMP): $(STAMP)
	$(BIN)/python -m pip install -q --disable-pip-version-check ruff==0.17.6 mypy==2.4.1 types-gevent==26.9.0.20261006
	touch $(LINT_STAMP)

# ruff (lint and format, pinned) and mypy on the package (its public API is typed: py.typed).
lint: $(LINT_STAMP)
	$(BIN)/ruff check geventagent tests loadtests bench
	$(BIN)/ruff format --check geventagent tests loadtests bench
	$(BIN)/mypy geventagent
