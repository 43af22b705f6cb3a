from setuptools import find_packages, setup

setup(
    name="geventagent",
    version="0.1.0",
    description="Node.js's http.Agent for gevent: a cooperative HTTP/1.1 client with a hard-capped keep-alive pool",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["geventagent", "geventagent.*"]),
    package_data={"geventagent": ["py.typed"]},
    python_requires=">=3.8",
    # The floors are tested: `make test-oldest` runs the whole suite on exactly these versions.
    # httptools 0.6.3 is the first whose llhttp rejects what Node v20 rejects (before it, a header
    # name with a space and obs-fold continuation lines were accepted; a bare LF after a chunk size
    # too). gevent 22.10.2 is the first on greenlet 2 (22.10.1 requires greenlet < 2).
    install_requires=["gevent>=22.10.2", "greenlet>=2.0", "httptools>=0.6.3", "certifi", "idna>=3"],
    extras_require={
        "test": [
            "pytest>=7",
            "pytest-timeout>=2.1",
            "hypothesis>=6",
            "trustme>=1.0",
            "locust>=2.20",
            "proxy.py>=2.4",
            "gunicorn>=21",
            "pproxy>=2.7",
            "requests>=2.31",
        ],
        "bench": ["urllib3>=2", "requests>=2.31", "geventhttpclient>=2.0", "httpx>=0.27", "matplotlib>=3.5"],
    },
    classifiers=[
        "Framework :: gevent",
        "Programming Language :: Python :: 3",
        "Topic :: Internet :: WWW/HTTP",
    ],
)
