"""`make run`'s steps (scripts/run_service.py) without starting the service.

The whole run against real processes is in tests/integration/test_run_service.py.
"""

from __future__ import annotations

import io
import json
import shlex
import shutil
import stat
import sys

import fakeredis
import pytest
import redis

from app.auth import KeyRing
from core import settings as settings_module
from core.settings import get_settings
from core.signing import SigningKeys
from scripts import run_service
from scripts.processes import Console, free_port
from scripts.run_service import (
    SAMPLE_BODY,
    AuthPlan,
    FlowerPlan,
    RedisTarget,
    StartupError,
    auth_plan,
    banner,
    curl_command,
    display_host,
    ensure_dev_signing_key,
    executable,
    find_or_start_redis,
    flower_plan,
    probe_redis,
    redact,
    wait_ready,
)
from scripts.supervisor import Supervisor
from tests.factories import settings_with


def quiet_supervisor() -> tuple[Supervisor, io.StringIO]:
    out = io.StringIO()
    return Supervisor(Console(out)), out


# -- URLs and commands --------------------------------------------------------------------------


def test_redact_hides_only_the_password():
    assert redact("redis://:s3cret@cache:6380/1") == "redis://:***@cache:6380/1"
    assert redact("rediss://app:s3cret@cache/0") == "rediss://app:***@cache/0"
    assert redact("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"


def test_display_host_points_wildcard_binds_at_localhost():
    assert display_host("0.0.0.0") == "127.0.0.1"  # noqa: S104
    assert display_host("::") == "127.0.0.1"
    assert display_host("[::]") == "127.0.0.1"
    assert display_host("10.1.2.3") == "10.1.2.3"
    assert display_host("gateway.internal") == "gateway.internal"


def test_executable_takes_the_program_from_the_venv(tmp_path):
    (tmp_path / "celery").write_text("")
    assert executable(["celery", "-A", "workers"], tmp_path) == [
        str(tmp_path / "celery"),
        "-A",
        "workers",
    ]
    with pytest.raises(StartupError, match="make setup"):
        executable(["uvicorn", "app.main:app"], tmp_path)


def parse_curl(line: str) -> tuple[str, dict[str, str], dict]:
    args = shlex.split(line)
    assert args[:4] == ["curl", "-s", "-X", "POST"]
    headers = dict(args[i + 1].split(": ", 1) for i, arg in enumerate(args) if arg == "-H")
    body = json.loads(args[args.index("-d") + 1])
    return args[4], headers, body


def test_curl_is_a_sync_predict_call_with_the_sample_body():
    url, headers, body = parse_curl(curl_command("http://127.0.0.1:8000", "X-API-Key: abc-_1"))
    assert url == "http://127.0.0.1:8000/predict?wait=5"
    assert headers == {"Content-Type": "application/json", "X-API-Key": "abc-_1"}
    assert body == SAMPLE_BODY


def test_curl_leaves_the_key_placeholder_to_the_shell():
    line = curl_command("http://h:1", "X-API-Key: $YOUR_KEY")
    assert '-H "X-API-Key: $YOUR_KEY"' in line  # double quotes: the shell expands it


def test_curl_without_auth_sends_no_key():
    _, headers, _ = parse_curl(curl_command("http://h:1", None))
    assert "X-API-Key" not in headers


# -- API key and Flower password ---------------------------------------------------------------


def test_without_keys_a_run_key_is_generated_that_the_gateway_accepts(monkeypatch):
    settings = settings_with(monkeypatch, MLOPS_AUTH__API_KEYS="@json {}")
    plan = auth_plan(settings, make_key=lambda: "generated-key")
    assert plan.header == "X-API-Key: generated-key"
    assert "this run only" in plan.note
    # The gateway reads the variable through dynaconf like any other setting.
    gateway_settings = settings_with(monkeypatch, **plan.env)
    ring = KeyRing(gateway_settings.auth.api_keys, enabled=True)
    assert ring.authorize("generated-key", "predict").allows("admin")


def test_generated_keys_differ_between_runs(monkeypatch):
    settings = settings_with(monkeypatch, MLOPS_AUTH__API_KEYS="@json {}")
    assert auth_plan(settings).header != auth_plan(settings).header


def test_configured_keys_are_never_printed(monkeypatch):
    settings = settings_with(monkeypatch, MLOPS_AUTH__API_KEYS='@json {"real-secret": ["predict"]}')
    plan = auth_plan(settings)
    assert plan.env == {}
    assert plan.header == "X-API-Key: $YOUR_KEY"
    assert "real-secret" not in plan.note


def test_disabled_auth_needs_no_key(monkeypatch):
    plan = auth_plan(settings_with(monkeypatch, MLOPS_AUTH__ENABLED="false"))
    assert plan.header is None
    assert plan.env == {}


def test_empty_flower_password_gets_one_for_this_run_that_flower_uses(monkeypatch):
    settings = settings_with(monkeypatch, MLOPS_FLOWER__PASSWORD="")
    plan = flower_plan(settings, make_password=lambda: "pw-for-run")
    assert plan.env == {"MLOPS_FLOWER__PASSWORD": "pw-for-run"}
    assert "pw-for-run" in plan.credentials
    sys.modules.pop("flowerconfig", None)
    settings_with(monkeypatch, **plan.env)  # MLOPS_ENV=testing: a password is required
    import flowerconfig

    assert flowerconfig.basic_auth == [f"{settings.flower.user}:pw-for-run"]
    sys.modules.pop("flowerconfig", None)


def test_configured_flower_password_is_kept_and_not_printed(monkeypatch):
    plan = flower_plan(settings_with(monkeypatch, MLOPS_FLOWER__PASSWORD="mine"))
    assert plan.env == {}
    assert "mine" not in plan.credentials


# -- the development signing key ---------------------------------------------------------------


def without_signing_keys(monkeypatch, dev_secrets, **env: str):
    """Settings from the files alone (the test session's keys come from the environment)."""
    monkeypatch.setattr(settings_module, "DEV_SECRETS", dev_secrets)
    monkeypatch.delenv("MLOPS_SIGNING__PRIVATE_KEY")
    monkeypatch.delenv("MLOPS_SIGNING__PUBLIC_KEYS")
    return settings_with(monkeypatch, **env)


def test_development_without_a_key_gets_a_pair_that_later_runs_keep(monkeypatch, tmp_path):
    path = tmp_path / ".dev-secrets.toml"
    settings = without_signing_keys(monkeypatch, path, MLOPS_ENV="development")
    said = ensure_dev_signing_key(settings, path)
    assert said is not None and "generated a development key pair" in said
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    later = settings_with(monkeypatch)  # this run's services, and every later `make run`
    keys = SigningKeys.from_settings(later)
    assert keys.can_sign and keys.signing_key_id in said
    assert ensure_dev_signing_key(later, path) is None  # said once, not on every run
    testing = settings_with(monkeypatch, MLOPS_ENV="testing")
    assert not SigningKeys.from_settings(testing).can_verify  # development only


def test_no_development_key_outside_development_or_when_one_is_configured(monkeypatch, tmp_path):
    path = tmp_path / ".dev-secrets.toml"
    assert ensure_dev_signing_key(without_signing_keys(monkeypatch, path), path) is None
    mine = SigningKeys.generate()
    configured = settings_with(
        monkeypatch, MLOPS_ENV="development", MLOPS_SIGNING__PRIVATE_KEY=mine.private_text()
    )
    assert ensure_dev_signing_key(configured, path) is None
    assert not path.exists()


def test_a_key_in_secrets_toml_wins_over_the_development_key(monkeypatch, tmp_path):
    root = tmp_path / "project"
    root.mkdir()
    shutil.copy(settings_module.ROOT / "settings.toml", root / "settings.toml")
    mine = SigningKeys.generate()
    (root / ".secrets.toml").write_text(
        f'[default.signing]\nprivate_key = "{mine.private_text()}"\n'
    )
    monkeypatch.setattr(settings_module, "ROOT", root)
    dev = SigningKeys.generate()
    (root / ".dev-secrets.toml").write_text(
        f'[development.signing]\nprivate_key = "{dev.private_text()}"\n'
    )
    settings = without_signing_keys(
        monkeypatch, root / ".dev-secrets.toml", MLOPS_ENV="development"
    )
    assert SigningKeys.from_settings(settings).signing_key_id == mine.signing_key_id


def test_a_development_secrets_file_without_a_key_is_reported(monkeypatch, tmp_path):
    path = tmp_path / ".dev-secrets.toml"
    path.write_text("# emptied by hand\n")
    settings = without_signing_keys(monkeypatch, path, MLOPS_ENV="development")
    with pytest.raises(StartupError, match="gives no signing key"):
        ensure_dev_signing_key(settings, path)


def test_an_unsigned_production_model_stops_make_run_saying_how_to_sign_it(monkeypatch):
    from core.store import open_store
    from training.pipeline import run_training

    settings = get_settings()
    run_training(settings)
    path = open_store(settings).storage.root / "iris" / "1" / "metadata.json"
    meta = json.loads(path.read_text())
    del meta["signature"]  # as registered before versions were signed
    path.write_text(json.dumps(meta))
    supervisor, _ = quiet_supervisor()
    with pytest.raises(StartupError, match=r"(?s)not signed.*python -m training sign --all"):
        run_service.ensure_model(settings, supervisor, {})


# -- Redis --------------------------------------------------------------------------------------


def test_probe_answers_none_when_redis_pongs(monkeypatch):
    monkeypatch.setattr(run_service, "sync_client", lambda url, **kw: fakeredis.FakeRedis())
    assert probe_redis("redis://fake:6379/0") is None


def test_probe_says_why_when_nothing_listens():
    reason = probe_redis(f"redis://127.0.0.1:{free_port()}/0", timeout=2)
    assert reason is not None
    assert "Connection" in reason


def test_make_run_starts_no_private_redis_in_place_of_sentinels_that_do_not_answer():
    url = f"sentinel://:s3cret@127.0.0.1:{free_port()}/mymaster"
    with pytest.raises(run_service.StartupError) as caught:
        probe_redis(url, timeout=1)
    assert "no sentinel of sentinel://:***@127.0.0.1:" in str(caught.value)
    assert "s3cret" not in str(caught.value)


class RefusingRedis:
    def ping(self):
        raise redis.AuthenticationError("invalid username-password pair")

    def close(self):
        pass


def test_a_redis_that_refuses_our_password_is_an_error_not_a_reason_to_start_another(
    monkeypatch,
):
    monkeypatch.setattr(run_service, "sync_client", lambda url, **kw: RefusingRedis())
    with pytest.raises(StartupError, match="refused") as info:
        probe_redis("redis://app:hunter2@cache:6379/0")
    assert "hunter2" not in str(info.value)


def test_a_url_that_is_not_redis_is_an_error():
    with pytest.raises(StartupError, match="not a Redis URL"):
        probe_redis("http://example.com")


def test_no_redis_and_no_redis_server_says_how_to_get_one(monkeypatch, tmp_path):
    monkeypatch.setattr(run_service, "probe_redis", lambda url: "Connection refused")
    monkeypatch.setattr(run_service.shutil, "which", lambda name: None)
    supervisor, _ = quiet_supervisor()
    settings = settings_with(monkeypatch, MLOPS_REDIS_URL="redis://:pw@127.0.0.1:9/0")
    with pytest.raises(StartupError) as info:
        find_or_start_redis(settings, supervisor, tmp_path, {})
    message = str(info.value)
    assert "apt-get install redis-server" in message
    assert "brew install redis" in message
    assert "MLOPS_REDIS_URL" in message
    assert ":pw@" not in message
    assert supervisor.infrastructure == []


def test_a_redis_that_answers_is_used_as_is(monkeypatch, tmp_path):
    monkeypatch.setattr(run_service, "probe_redis", lambda url: None)
    supervisor, out = quiet_supervisor()
    settings = settings_with(monkeypatch, MLOPS_REDIS_URL="redis://127.0.0.1:6399/2")
    found = find_or_start_redis(settings, supervisor, tmp_path, {})
    assert found == RedisTarget("redis://127.0.0.1:6399/2")
    assert supervisor.infrastructure == []
    assert "using Redis at redis://127.0.0.1:6399/2" in out.getvalue()


# -- readiness and the banner ------------------------------------------------------------------


def test_not_ready_reports_the_gateways_reasons(monkeypatch):
    body = {"status": "not ready", "reasons": ["no live worker consumes the 'predict' queue"]}
    monkeypatch.setattr(run_service, "get_json", lambda url: (503, body))
    supervisor, _ = quiet_supervisor()
    with pytest.raises(StartupError, match="no live worker consumes"):
        wait_ready(supervisor, "http://127.0.0.1:1", timeout=0)


def test_a_silent_gateway_is_reported_as_such(monkeypatch):
    monkeypatch.setattr(run_service, "get_json", lambda url: (0, None))
    supervisor, _ = quiet_supervisor()
    with pytest.raises(StartupError, match="does not answer"):
        wait_ready(supervisor, "http://127.0.0.1:1", timeout=0)


def test_banner_lists_the_urls_and_a_curl_line(monkeypatch):
    settings = settings_with(monkeypatch, MLOPS_GATEWAY__PORT="8123", MLOPS_FLOWER__PORT="5123")
    text = banner(
        settings,
        RedisTarget("redis://:pw@127.0.0.1:7000/0", private=None),
        {"model_name": "iris", "model_version": 3},
        AuthPlan({}, "X-API-Key: k", "note"),
        FlowerPlan({}, "user admin, password x"),
        [("worker metrics", "http://127.0.0.1:9808/metrics")],
    )
    assert "http://127.0.0.1:8123/docs" in text
    assert "http://127.0.0.1:5123" in text
    assert "http://127.0.0.1:9808/metrics" in text
    assert "iris v3" in text
    assert ":pw@" not in text
    curl_lines = [line for line in text.splitlines() if line.startswith("curl ")]
    assert len(curl_lines) == 1
    assert parse_curl(curl_lines[0])[0] == "http://127.0.0.1:8123/predict?wait=5"


def test_banner_in_production_leaves_out_hidden_docs_and_the_model_it_was_not_told(monkeypatch):
    settings = settings_with(monkeypatch, MLOPS_ENV="production", MLOPS_GATEWAY__PORT="8123")
    text = banner(
        settings,
        RedisTarget("redis://127.0.0.1:7000/0", private=None),
        {"status": "ready"},  # /ready's answer to a caller without an API key
        AuthPlan({}, "X-API-Key: $YOUR_KEY", "note"),
        FlowerPlan({}, "user admin, password from your settings"),
        [],
    )
    assert "/docs" not in text and "None" not in text
    assert "http://127.0.0.1:8123" in text
