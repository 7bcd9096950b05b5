"""core/redis.py: Sentinel URLs parsed, refused when malformed, and turned into every client."""

from __future__ import annotations

import ssl

import pytest
import redis
import redis.asyncio.sentinel as aiosentinel
import redis.sentinel

from core.redis import (
    RedisTooOld,
    SentinelTarget,
    SentinelUnreachable,
    async_client,
    celery_url,
    check_sentinels,
    check_version,
    mask,
    parse_sentinel_url,
    sync_client,
    transport_options,
)
from scripts.processes import free_port
from tests.factories import settings_with

URL = "sentinel://app:s3cret@s1:26380,s2,[::1]:26381/mymaster/2"


def test_a_sentinel_url_names_the_sentinels_the_master_and_the_credentials():
    assert parse_sentinel_url(URL) == SentinelTarget(
        sentinels=(("s1", 26380), ("s2", 26379), ("::1", 26381)),
        master="mymaster",
        db=2,
        username="app",
        password="s3cret",
    )


def test_sentinel_defaults_and_options():
    target = parse_sentinel_url("sentinel://:p%40ss@s1/mymaster?sentinel_password=sp")
    assert (target.db, target.username, target.password) == (0, None, "p@ss")
    kwargs = target.sentinel_kwargs({"socket_timeout": 1, "max_connections": 9})
    assert kwargs.pop("retry").get_retries() == 0  # the next sentinel at once
    assert kwargs == {"socket_timeout": 1, "password": "sp"}


def test_sentinels_scheme_speaks_tls_to_sentinels_and_nodes():
    target = parse_sentinel_url("sentinels://s1/m?ssl_cert_reqs=none&ssl_ca_certs=/ca.pem")
    tls = {"ssl_cert_reqs": ssl.CERT_NONE, "ssl_ca_certs": "/ca.pem"}
    assert target.tls == tls
    assert target.node_kwargs() == {
        "db": 0, "username": None, "password": None, "ssl": True, **tls
    }  # fmt: skip
    kwargs = target.sentinel_kwargs({})
    kwargs.pop("retry")
    assert kwargs == {"ssl": True, **tls}
    assert parse_sentinel_url("sentinels://s1/m").tls == {"ssl_cert_reqs": ssl.CERT_REQUIRED}


@pytest.mark.parametrize("url", ["redis://h:6379/0", "rediss://h/0", "unix:///tmp/r.sock"])
def test_other_urls_are_not_sentinel_urls(url):
    assert parse_sentinel_url(url) is None


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("sentinel://s1:26379", "names the master"),
        ("sentinel://s1:26379/", "names the master"),
        ("sentinel://s1/m/zero", "path is"),
        ("sentinel://s1/m/0/extra", "path is"),
        ("sentinel://s1:port/m", "host\\[:port\\]"),
        ("sentinel://s1,,s2/m", "host\\[:port\\]"),
        ("sentinel://s1:70000/m", "out of range"),
        ("sentinel://s1/m?master=x", "unknown sentinel URL option"),
        ("sentinel://s1/m?ssl_cert_reqs=none", "sentinels://"),
        ("sentinels://s1/m?ssl_cert_reqs=maybe", "ssl_cert_reqs"),
    ],
)
def test_malformed_sentinel_urls_are_refused(url, message):
    with pytest.raises(ValueError, match=message):
        parse_sentinel_url(url)


def test_settings_refuse_a_malformed_sentinel_url_without_echoing_its_password(monkeypatch):
    from core.settings import SettingsError

    with pytest.raises(SettingsError) as caught:
        settings_with(monkeypatch, REDIS_URL="sentinel://u:hunter2@s1:26379")
    text = str(caught.value)
    assert "redis_url" in text and "names the master" in text
    assert "hunter2" not in text and "u:***@s1" in text


def test_settings_accept_a_sentinel_url(monkeypatch):
    assert settings_with(monkeypatch, REDIS_URL=URL).redis_url == URL


def test_mask_hides_every_password():
    assert mask(URL) == "sentinel://app:***@s1:26380,s2,[::1]:26381/mymaster/2"
    assert mask("sentinel://s1/m?sentinel_password=x&db=1") == (
        "sentinel://s1/m?sentinel_password=***&db=1"
    )
    assert mask("redis://:pw@h:6379/0") == "redis://:***@h:6379/0"
    assert mask("redis://h:6379/0") == "redis://h:6379/0"


def test_sync_and_async_clients_follow_the_master_through_the_sentinels():
    for client, pool_class in (
        (sync_client(URL, socket_timeout=3), redis.sentinel.SentinelConnectionPool),
        (async_client(URL), aiosentinel.SentinelConnectionPool),
    ):
        pool = client.connection_pool
        assert isinstance(pool, pool_class)
        assert pool.service_name == "mymaster"
        manager = pool.sentinel_manager
        assert [c.connection_pool.connection_kwargs["port"] for c in manager.sentinels] == [
            26380, 26379, 26381
        ]  # fmt: skip
        params = pool.connection_kwargs
        assert (params["username"], params["password"], params["db"]) == ("app", "s3cret", 2)
        assert params["socket_connect_timeout"] == 2.0
        sentinel_params = manager.sentinels[0].connection_pool.connection_kwargs
        assert sentinel_params.get("password") is None  # the sentinels' own: none given
    assert sync_client(URL, socket_timeout=3).connection_pool.connection_kwargs[
        "socket_timeout"
    ] == 3  # fmt: skip


def test_a_tls_sentinel_url_makes_tls_connections():
    client = sync_client("sentinels://s1/m")
    assert issubclass(client.connection_pool.connection_class, redis.SSLConnection)
    sentinel = client.connection_pool.sentinel_manager.sentinels[0]
    assert issubclass(sentinel.connection_pool.connection_class, redis.SSLConnection)


def test_celery_gets_kombus_list_of_sentinels_and_the_master_name():
    assert celery_url(URL) == (
        "sentinel://app:s3cret@s1:26380/2;sentinel://app:s3cret@s2:26379/2;"
        "sentinel://app:s3cret@[::1]:26381/2"
    )
    assert celery_url("redis://h:6379/0") == "redis://h:6379/0"
    options = transport_options(URL)
    assert options["master_name"] == "mymaster"
    sentinel_kwargs = options["sentinel_kwargs"]
    assert sentinel_kwargs.pop("retry").get_retries() == 0
    assert sentinel_kwargs == {"socket_timeout": 5.0, "socket_connect_timeout": 2.0}
    assert "master_name" not in transport_options("redis://h/0")


def test_the_celery_broker_and_result_backend_use_sentinel(monkeypatch):
    from celery.backends.redis import SentinelBackend

    from workers.celery_app import create_app

    app = create_app(settings_with(monkeypatch, REDIS_URL=URL))
    assert isinstance(app.backend, SentinelBackend)
    hosts = [(h["host"], h["port"]) for h in app.backend.connparams["hosts"]]
    assert hosts == [("s1", 26380), ("s2", 26379), ("::1", 26381)]
    assert app.backend.connparams["password"] == "s3cret"
    assert app.conf.result_backend_transport_options["master_name"] == "mymaster"
    with app.connection_for_write() as connection:
        assert connection.transport_cls == "sentinel"
        assert len(connection.alt) == 3
        assert connection.transport_options["master_name"] == "mymaster"
        assert (connection.userid, connection.password) == ("app", "s3cret")


def test_unreachable_sentinels_are_named_with_the_password_masked():
    url = f"sentinel://u:hunter2@127.0.0.1:{free_port()},127.0.0.1:{free_port()}/mymaster"
    with pytest.raises(SentinelUnreachable) as caught:
        check_sentinels(url, timeout=1)
    text = str(caught.value)
    assert "hunter2" not in text
    assert mask(url) in text and "'mymaster'" in text


def test_a_plain_redis_url_needs_no_sentinel_check():
    assert check_sentinels("redis://127.0.0.1:1/0") is None


class _Server:
    """A client stub answering INFO server with ``version`` (fakeredis has no INFO)."""

    def __init__(self, version: str | None):
        self.version = version
        self.closed = False

    def info(self, section: str) -> dict:
        assert section == "server"
        if self.version is None:
            raise redis.ConnectionError("Connection refused")
        return {"redis_version": self.version}

    def close(self) -> None:
        self.closed = True


@pytest.mark.parametrize("version", ["7.0.15", "7.4.2", "8.0.0", "10.1.0"])
def test_redis_7_and_newer_pass_the_version_check(monkeypatch, version):
    server = _Server(version)
    monkeypatch.setattr("core.redis.sync_client", lambda url, **options: server)
    assert check_version("redis://127.0.0.1:6379/0") == version
    assert server.closed


@pytest.mark.parametrize("version", ["6.2.14", "6.0.20", "5.0.14", ""])
def test_an_older_redis_is_refused_naming_its_version(monkeypatch, version):
    monkeypatch.setattr("core.redis.sync_client", lambda url, **options: _Server(version))
    with pytest.raises(RedisTooOld, match=r"Redis .* is too old: 7\.0 or newer"):
        check_version("redis://127.0.0.1:6379/0")


def test_a_redis_not_up_yet_is_left_to_the_worker_to_wait_for(monkeypatch):
    monkeypatch.setattr("core.redis.sync_client", lambda url, **options: _Server(None))
    assert check_version("redis://127.0.0.1:6379/0") is None


def test_nothing_listening_is_no_version_rather_than_an_error():
    assert check_version(f"redis://127.0.0.1:{free_port()}/0", timeout=0.5) is None
