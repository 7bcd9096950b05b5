"""Security properties that need no server: JSON-only wire formats, Redis URLs with TLS and
credentials, bandit clean with every ``# nosec`` explained."""

from __future__ import annotations

import re
import ssl
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
import redis

from core.messages import PREDICT_QUEUE, PREDICT_TASK, celery_message
from core.redis import async_client, ssl_options, sync_client
from core.settings import get_settings
from scripts.processes import ROOT
from tests.factories import decode_message, predict_job
from workers.config import celery_config

SOURCES = ["core", "app", "workers", "training", "scripts"]
SERIALIZER_KEYS = ("task_serializer", "result_serializer", "event_serializer")


def test_no_celery_setting_accepts_or_produces_pickle():
    config = celery_config(get_settings())
    assert config["accept_content"] == ["json"]
    assert config["result_accept_content"] == ["json"]
    for key in SERIALIZER_KEYS:
        assert config[key] == "json", key
    assert "pickle" not in repr(config).lower()


def test_the_built_celery_app_keeps_json_only(monkeypatch):
    from workers.celery_app import create_app

    conf = create_app(get_settings()).conf
    assert list(conf.accept_content) == ["json"]
    assert list(conf.result_accept_content) == ["json"]
    assert {conf[key] for key in SERIALIZER_KEYS} == {"json"}


def test_gateway_task_messages_are_json_through_and_through():
    jobs = [predict_job("j1", [[1.0, 2.0]], ["a", "b"], expires_at=1.0)]
    task_id, payload = celery_message(PREDICT_TASK, [jobs], queue=PREDICT_QUEUE)
    envelope = orjson.loads(payload)
    assert envelope["content-type"] == "application/json"
    _, (args, kwargs, _embed) = decode_message(payload)
    assert args == [jobs]
    assert kwargs == {}
    assert envelope["headers"]["id"] == task_id


def test_redis_url_with_credentials_is_parsed_for_every_client():
    url = "redis://mlops-user:s3cret@redis.internal:6380/3"
    for client in (sync_client(url), async_client(url)):
        params = client.connection_pool.connection_kwargs
        assert (params["username"], params["password"]) == ("mlops-user", "s3cret")
        assert (params["host"], params["port"], params["db"]) == ("redis.internal", 6380, 3)
    assert ssl_options(url) is None


def test_rediss_url_turns_tls_on_and_verifies_certificates_by_default():
    url = "rediss://mlops-user:s3cret@redis.internal:6380/0"
    sync, aio = sync_client(url), async_client(url)
    assert issubclass(sync.connection_pool.connection_class, redis.SSLConnection)
    assert "SSL" in aio.connection_pool.connection_class.__name__
    assert sync.connection_pool.connection_kwargs["password"] == "s3cret"
    assert ssl_options(url) == {"ssl_cert_reqs": ssl.CERT_REQUIRED}


def test_rediss_url_options_reach_the_celery_broker_and_result_backend(monkeypatch):
    from workers.celery_app import create_app

    url = "rediss://u:p@redis.internal:6380/0?ssl_cert_reqs=required&ssl_ca_certs=/etc/ca.pem"
    monkeypatch.setenv("MLOPS_REDIS_URL", url)
    from core.settings import reset_settings

    reset_settings()
    app = create_app(get_settings())
    backend = app.backend.connparams  # Celery refuses a rediss:// URL it cannot secure
    assert issubclass(backend["connection_class"], redis.SSLConnection)
    assert backend["ssl_cert_reqs"] == ssl.CERT_REQUIRED
    assert (backend["username"], backend["password"]) == ("u", "p")
    with app.connection_for_write() as connection:
        assert connection.ssl["ssl_cert_reqs"] == ssl.CERT_REQUIRED
        assert connection.ssl["ssl_ca_certs"] == "/etc/ca.pem"
        assert (connection.userid, connection.password) == ("u", "p")


@pytest.mark.parametrize(
    ("query", "expected"),
    [("ssl_cert_reqs=none", ssl.CERT_NONE), ("ssl_cert_reqs=CERT_OPTIONAL", ssl.CERT_OPTIONAL)],
)
def test_rediss_url_may_relax_certificate_checks_explicitly(query, expected):
    assert ssl_options(f"rediss://redis:6380/0?{query}")["ssl_cert_reqs"] == expected


def test_rediss_url_with_an_unknown_cert_policy_is_refused():
    with pytest.raises(ValueError, match="ssl_cert_reqs"):
        ssl_options("rediss://redis:6380/0?ssl_cert_reqs=sometimes")


def test_bandit_finds_nothing_at_medium_severity_or_above():
    bandit = Path(sys.executable).parent / "bandit"
    result = subprocess.run(
        [str(bandit), "-c", "pyproject.toml", "-r", *SOURCES, "-ll", "-q"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_nosec_says_why():
    """``# nosec`` must name the check (B310) and the line or the one above must explain it."""
    for path in [p for source in SOURCES for p in (ROOT / source).rglob("*.py")]:
        lines = path.read_text().splitlines()
        for number, line in enumerate(lines):
            if "# nosec" not in line:
                continue
            where = f"{path.relative_to(ROOT)}:{number + 1}"
            assert re.search(r"# nosec B\d{3}", line), f"{where}: name the check"
            before = line.split("# nosec")[0]
            comment = before.split("#", 1)[1] if "#" in before else ""
            justification = re.sub(r"noqa: \w+", "", comment).strip(" -:")
            above = lines[number - 1].strip() if number else ""
            assert justification or above.startswith("#"), f"{where}: say why it is safe"
