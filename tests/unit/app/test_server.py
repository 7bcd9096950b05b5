"""The gateway launcher (app/server.py): the open-file limit and uvicorn's options.

The connection limits themselves are tested on the real server: tests/integration/test_edge.py.
"""

from __future__ import annotations

import resource
import subprocess
import sys

from app import edge, server
from core.settings import get_settings, reset_settings


def test_the_open_file_limit_is_raised_to_the_hard_limit():
    """In a child whose soft limit is 256: the launcher lifts it to the hard one."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    expected = hard if hard != resource.RLIM_INFINITY else server.UNLIMITED_FD_TARGET

    def lower():
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))

    probe = "from app.server import raise_fd_limit; import resource; " + (
        "print(raise_fd_limit(), resource.getrlimit(resource.RLIMIT_NOFILE)[0])"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, preexec_fn=lower, check=True
    )
    assert result.stdout.split() == [str(expected), str(expected)]


def test_max_connections_is_lowered_to_fit_the_open_file_limit(log_lines):
    assert server.connection_cap(100, 20000) == 100
    assert not log_lines
    assert server.connection_cap(4096, 1024) == 1024 - server.FD_RESERVE
    [line] = log_lines
    assert line["level"].name == "WARNING"
    assert (
        "gateway.max_connections=4096 does not fit the open-file limit (1024)" in (line["message"])
    )


def test_uvicorn_options_come_from_the_gateway_settings(monkeypatch):
    monkeypatch.setenv("MLOPS_GATEWAY__KEEP_ALIVE_SECONDS", "7")
    monkeypatch.setenv("MLOPS_GATEWAY__HEADER_TIMEOUT_SECONDS", "3.5")
    monkeypatch.setenv("MLOPS_GATEWAY__MAX_CONNECTIONS", "300")
    monkeypatch.setenv("MLOPS_GATEWAY__MAX_REQUESTS", "20")
    reset_settings()
    options = server.uvicorn_options(get_settings(), "0.0.0.0", 8123, fd_limit=20000)  # noqa: S104
    protocol = options.pop("http")
    assert protocol.func is edge.GatewayProtocol
    assert protocol.keywords == {
        "limits": edge.EdgeLimits(header_timeout=3.5, max_connections=300, max_requests=20)
    }
    assert options == {
        "host": "0.0.0.0",  # noqa: S104
        "port": 8123,
        "timeout_keep_alive": 7,
        "ws": "none",
        "access_log": False,
        "log_config": None,
    }


def test_tls_files_reach_uvicorn(monkeypatch):
    monkeypatch.setenv("MLOPS_GATEWAY__SSL_CERTFILE", "/certs/chain.pem")
    monkeypatch.setenv("MLOPS_GATEWAY__SSL_KEYFILE", "/certs/key.pem")
    reset_settings()
    options = server.uvicorn_options(get_settings(), "127.0.0.1", 8443, fd_limit=20000)
    assert options["ssl_certfile"] == "/certs/chain.pem"
    assert options["ssl_keyfile"] == "/certs/key.pem"
