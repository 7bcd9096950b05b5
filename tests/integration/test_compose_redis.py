"""docker-compose.yaml's Redis, run: its own arguments on a real redis-server (no Docker).

The compose file's `${VAR:?message}` references are filled in the way compose does, then the
redis service's command runs here; its healthcheck and the services' MLOPS_REDIS_URL are
tried against it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest
import redis
import yaml

from scripts.processes import ROOT, RedisServer

pytestmark = pytest.mark.integration

PASSWORD = "compose-test-password_1"
_VARIABLE = re.compile(r"\$\{(\w+)(?::\?[^}]*)?\}")


def interpolated(value: str, env: dict[str, str]) -> str:
    return _VARIABLE.sub(lambda m: env[m.group(1)], value)


@pytest.fixture(scope="module")
def compose_redis(tmp_path_factory):
    spec = yaml.safe_load((ROOT / "docker-compose.yaml").read_text())["services"]
    env = {"REDIS_PASSWORD": PASSWORD}
    command = [interpolated(str(a), env) for a in spec["redis"]["command"]]
    assert command[0] == "redis-server"
    server = RedisServer(tmp_path_factory.mktemp("compose-redis"), extra=command[1:])
    server.client = lambda: redis.Redis(port=server.port, password=PASSWORD, socket_timeout=5)
    server.start()
    yield server, spec, env
    server.stop()


def test_compose_redis_refuses_clients_without_the_password(compose_redis):
    server, _, _ = compose_redis
    with pytest.raises(redis.exceptions.AuthenticationError):
        redis.Redis(port=server.port, socket_timeout=5).set("forged", "result")
    assert server.client().config_get("maxmemory") == {"maxmemory": str(1024**3)}
    assert server.client().config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}


def test_compose_redis_url_authenticates(compose_redis):
    server, spec, env = compose_redis
    url = interpolated(spec["api"]["environment"]["MLOPS_REDIS_URL"], env)
    assert redis.Redis.from_url(url.replace("@redis:6379", f"@127.0.0.1:{server.port}")).ping()


@pytest.mark.skipif(shutil.which("redis-cli") is None, reason="redis-cli not installed")
def test_compose_redis_healthcheck_passes_only_with_the_password(compose_redis):
    server, spec, env = compose_redis
    kind, command = spec["redis"]["healthcheck"]["test"]
    assert kind == "CMD-SHELL"
    command = command.replace("redis-cli", f"redis-cli -p {server.port}")
    auth = interpolated(spec["redis"]["environment"]["REDISCLI_AUTH"], env)

    def healthcheck(password: str | None) -> int:
        clean = {k: v for k, v in os.environ.items() if k != "REDISCLI_AUTH"}
        if password is not None:
            clean["REDISCLI_AUTH"] = password
        return subprocess.run(["sh", "-c", command], env=clean, timeout=10).returncode

    assert healthcheck(auth) == 0
    assert healthcheck(None) != 0
    assert healthcheck("wrong") != 0
