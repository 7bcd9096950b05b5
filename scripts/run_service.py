"""`make run`: the whole service on this machine, in the foreground.

0. In development with no signing key configured: a development key pair, generated once and
   kept in .dev-secrets.toml (git-ignored, survives `make clean`), so training can sign.
1. Redis: the one at ``redis_url`` (MLOPS_REDIS_URL) if it answers, else a private
   redis-server for this run (free port, its own folder under .run/, no persistence), else
   stop with how to get Redis.
2. A first model (``python -m training train``) when the store has no production version.
3. worker, beat, Flower and the gateway, with the commands of scripts/commands.py (the ones
   the containers and the integration tests run) and this venv's binaries. Their output is
   streamed to the terminal, each line prefixed with its name (honcho/foreman style).
4. Once the gateway's /ready answers 200: the URLs and a curl for /predict. With no API key
   configured, a key for this run only is generated; likewise Flower's password.
5. Ctrl-C or SIGTERM stops everything (SIGTERM to each process group, SIGKILL after a
   timeout; Ctrl-C twice kills at once) and exits 0. A child that dies on its own stops the
   rest and exits non-zero with its last lines.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import secrets
import shutil
import signal
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import redis

from core.errors import MLOpsError
from core.redis import SentinelUnreachable, check_sentinels, mask, sync_client
from core.settings import DEV_SECRETS, get_settings, reset_settings
from scripts import commands
from scripts.processes import (
    BIN,
    REDIS_INSTALL,
    ROOT,
    Console,
    Process,
    RedisServer,
    RedisServerMissing,
    child_env,
    port_taken,
)
from scripts.supervisor import ChildDied, Interrupted, Supervisor

RUN_DIR = ROOT / ".run"  # git-ignored
READY_TIMEOUT = 60.0
REDIS_PROBE_TIMEOUT = 1.0
HTTP_OK = 200

SAMPLE_BODY = {
    "request_id": "integration-test-id",
    "sepal_length": 5.1,
    "sepal_width": 3.5,
    "petal_length": 1.4,
    "petal_width": 0.2,
}

INSTALL_REDIS = """\
make run needs Redis: nothing answers at {url} ({reason})
and redis-server is not installed, so a private one cannot be started for this run.
Either install redis-server and run `make run` again:
{install}
or start a Redis and point MLOPS_REDIS_URL at it:
  docker run --rm -p 6379:6379 redis:7
  MLOPS_REDIS_URL=redis://127.0.0.1:6379/0 make run"""


class StartupError(Exception):
    """The service cannot start; the message says why and what to do."""


# -- small pure helpers (unit-tested) ---------------------------------------------------------


def redact(url: str) -> str:
    """A Redis URL safe to print: the password replaced by ***."""
    return mask(url)


def display_host(host: str) -> str:
    """Where to point a browser for a server bound to ``host``."""
    try:
        unspecified = not host or ipaddress.ip_address(host.strip("[]")).is_unspecified
    except ValueError:  # a host name
        unspecified = False
    return "127.0.0.1" if unspecified else host


def executable(args: list[str], bin_dir: Path = BIN) -> list[str]:
    """``args`` with the program taken from this venv's bin folder."""
    program = bin_dir / args[0]
    if not program.exists():
        raise StartupError(f"{program} is missing: run `make setup` (or `make run`) first")
    return [str(program), *args[1:]]


@dataclass(frozen=True)
class AuthPlan:
    env: dict[str, str]  # for the gateway
    header: str | None  # the X-API-Key header of the sample curl
    note: str


def auth_plan(settings, make_key: Callable[[], str] = lambda: secrets.token_urlsafe(24)):
    """The API key the sample curl uses: a configured one, or one generated for this run."""
    if not settings.auth.enabled:
        return AuthPlan({}, None, "auth is disabled (auth.enabled = false): no API key needed")
    if len(settings.auth.api_keys):
        return AuthPlan(
            {},
            "X-API-Key: $YOUR_KEY",
            "set YOUR_KEY to one of your API keys (auth.api_keys) with the predict scope",
        )
    key = make_key()
    keys = json.dumps({key: ["predict", "admin"]})
    return AuthPlan(
        {"MLOPS_AUTH__API_KEYS": f"@json {keys}"},
        f"X-API-Key: {key}",
        "no API keys are configured, so this key with the predict and admin scopes was "
        "generated for this run only",
    )


@dataclass(frozen=True)
class FlowerPlan:
    env: dict[str, str]
    credentials: str


def flower_plan(settings, make_password: Callable[[], str] = lambda: secrets.token_urlsafe(12)):
    """Flower's login: the configured password, or one generated for this run."""
    user = settings.flower.user
    if settings.flower.password:
        return FlowerPlan({}, f"user {user}, password from your settings")
    password = make_password()
    return FlowerPlan(
        {"MLOPS_FLOWER__PASSWORD": password},
        f"user {user}, password {password}: for this run only",
    )


def curl_command(base_url: str, header: str | None) -> str:
    """A ready-to-paste synchronous /predict call (``$YOUR_KEY`` stays a shell variable)."""
    parts = [
        f"curl -s -X POST '{base_url}/predict?wait=5'",
        "-H 'Content-Type: application/json'",
    ]
    if header is not None:
        parts.append(f'-H "{header}"' if "$" in header else f"-H '{header}'")
    parts.append(f"-d '{json.dumps(SAMPLE_BODY)}'")
    return " ".join(parts)


def probe_redis(url: str, timeout: float = REDIS_PROBE_TIMEOUT) -> str | None:
    """None when Redis at ``url`` answers PING; else why not (nothing listening, timeout).

    A Redis that answers but refuses us (wrong password, ACL) is a setting to fix, not a
    reason to start another one: that raises :class:`StartupError`.
    """
    try:
        check_sentinels(url, timeout)  # no private redis-server in place of Sentinel
        client = sync_client(url, socket_timeout=timeout, socket_connect_timeout=timeout)
    except SentinelUnreachable as exc:
        raise StartupError(str(exc)) from None
    except ValueError as exc:
        raise StartupError(f"redis_url {redact(url)!r} is not a Redis URL: {exc}") from None
    try:
        client.ping()
        return None
    except (redis.AuthenticationError, redis.ResponseError) as exc:
        raise StartupError(
            f"Redis at {redact(url)} refused the connection: {exc}; "
            "check the credentials in MLOPS_REDIS_URL"
        ) from None
    except (redis.RedisError, OSError) as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        client.close()


def get_text(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    """(status, body) of a GET; (0, b"") when nothing answers."""
    try:
        # Only http:// URLs of our own gateway and worker, built in this module.
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310  # nosec B310
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (urllib.error.URLError, OSError):
        return 0, b""


def get_json(url: str, timeout: float = 2.0) -> tuple[int, dict | None]:
    """(status, JSON body or None) of a GET; (0, None) when nothing answers."""
    status, body = get_text(url, timeout)
    try:
        return status, json.loads(body) if body else None
    except ValueError:
        return status, None


# -- the steps of `make run` ------------------------------------------------------------------

DEV_SECRETS_HEADER = """\
# A development signing key pair, generated by `make run` (scripts/run_service.py).
# Read in the development environment only (core/settings.py), git-ignored, kept by
# `make clean`. Never use it elsewhere. Delete this file for a new pair: versions signed
# with this one are then refused (retrain, or re-sign them: python -m training sign --all).
"""


def ensure_dev_signing_key(settings, path: Path = DEV_SECRETS) -> str | None:
    """In development with no signing key configured, generate a pair and keep it in ``path``
    (.dev-secrets.toml); return what to tell the user, or None when nothing was done."""
    from core.signing import SigningKeys

    if settings.env != "development":
        return None
    keys = SigningKeys.from_settings(settings)
    if keys.can_sign or keys.can_verify:
        return None
    new = SigningKeys.generate()
    body = f'{DEV_SECRETS_HEADER}[development.signing]\nprivate_key = "{new.private_text()}"\n'
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise StartupError(
            f"{path} exists but gives no signing key in development: fix it or delete it "
            "(`make run` then generates a new pair)"
        ) from None
    with os.fdopen(fd, "w") as fh:
        fh.write(body)
    return (
        f"==> no signing key configured: generated a development key pair "
        f"(key id {new.signing_key_id}) in {path.name}, used by every later `make run`"
    )


@dataclass
class RedisTarget:
    """The Redis this run uses, and the private redis-server when we started one."""

    url: str
    private: Process | None = None


def find_or_start_redis(settings, supervisor: Supervisor, run_dir: Path, base_env) -> RedisTarget:
    url = str(settings.redis_url)
    reason = probe_redis(url)
    if reason is None:
        supervisor.console.say(f"==> using Redis at {redact(url)}")
        return RedisTarget(url)
    folder = run_dir / "redis"
    try:
        server = RedisServer(folder)
    except RedisServerMissing:
        raise StartupError(
            INSTALL_REDIS.format(url=redact(url), reason=reason, install=REDIS_INSTALL)
        ) from None
    supervisor.console.say(
        f"==> nothing answers at {redact(url)} ({reason}): starting a private redis-server"
    )
    for _ in range(3):  # another process may take the free port before redis-server binds it
        child = supervisor.start(server.child(base_env), infrastructure=True)
        try:
            if supervisor.wait_until(lambda u=server.url: probe_redis(u) is None, 15):
                supervisor.console.say(
                    f"==> private redis-server (pid {child.pid}) at {server.url}: "
                    "no persistence, stopped on exit"
                )
                return RedisTarget(server.url, child)
        except ChildDied:
            pass
        supervisor.infrastructure.remove(child)
        child.kill()
        server = RedisServer(folder)  # on another free port
    raise StartupError(f"redis-server did not start; its last lines:\n{child.last_lines()}")


def ensure_model(settings, supervisor: Supervisor, env: dict[str, str]) -> None:
    """Train and register a first model when the store has no production version."""
    from core.store import open_store

    store = open_store(settings)
    try:
        version = store.production_version()
    except Exception as exc:
        raise StartupError(f"cannot read the model store: {exc}") from None
    if version is not None:
        try:
            store.verify(version)
        except MLOpsError as exc:
            raise StartupError(
                f"the production model cannot be served: {exc}.\n"
                "If you trust the versions in the store (e.g. made before versions were "
                "signed), sign them: .venv/bin/python -m training sign --all; "
                "otherwise train a new one: .venv/bin/python -m training train"
            ) from None
        supervisor.console.say(f"==> production model: {store.model_name} v{version}")
        return
    supervisor.console.say(
        f"==> no production model of {store.model_name!r} yet: training a first one"
    )
    train = Process("train", [sys.executable, "-m", "training", "train"], env)
    code = supervisor.run_to_end(train)
    if code != 0:
        raise StartupError(
            f"training the first model failed (exit code {code}); its last lines:\n"
            f"{train.last_lines()}\n"
            "Fix the [training] settings, then check with `.venv/bin/python -m training train`."
        )
    if store.production_version() is None:
        raise StartupError("training finished but no version was promoted to production")


def check_ports(settings) -> None:
    for what, host, port, var in (
        ("gateway", settings.gateway.host, settings.gateway.port, "MLOPS_GATEWAY__PORT"),
        ("Flower", settings.flower.address, settings.flower.port, "MLOPS_FLOWER__PORT"),
    ):
        if port_taken(str(host), int(port)):
            raise StartupError(
                f"port {port} on {host} ({what}) is in use: stop what uses it "
                f"(another `make run`?) or choose another port with {var}=<port>"
            )


def wait_ready(supervisor: Supervisor, base_url: str, timeout: float) -> dict:
    """The gateway's /ready body once it answers 200; otherwise fail with its reasons."""
    last: list = [0, None]

    def ready() -> bool:
        last[:] = get_json(f"{base_url}/ready")
        return last[0] == HTTP_OK

    if supervisor.wait_until(ready, timeout, interval=0.5):
        return last[1] or {}
    status, body = last
    if status == 0:
        why = "the gateway does not answer"
    else:
        reasons = (body or {}).get("reasons") or [str(body)]
        why = f"/ready answered {status}: " + "; ".join(reasons)
    raise StartupError(f"the service was not ready after {timeout:g} s ({why})")


def answers(url: str, attempts: int = 3) -> bool:
    """True when ``url`` answers 200 (a metrics endpoint that another part may not have)."""
    for _ in range(attempts):
        status, _ = get_text(url)
        if status == HTTP_OK:
            return True
        time.sleep(0.5)
    return False


def metrics_urls(settings, gateway: str) -> list[tuple[str, str]]:
    """The Prometheus endpoints that answer: the gateway's and the worker node's."""
    found = []
    if answers(f"{gateway}/metrics"):
        found.append(("gateway metrics", f"{gateway}/metrics"))
    port = int(settings.worker.metrics_port)
    host = display_host(settings.worker.metrics_address)
    if port > 0 and answers(f"http://{host}:{port}/metrics"):
        found.append(("worker metrics", f"http://{host}:{port}/metrics"))
    return found


def banner(
    settings,
    redis_: RedisTarget,
    ready: dict,
    auth: AuthPlan,
    flower: FlowerPlan,
    metrics: list[tuple[str, str]],
) -> str:
    """What `make run` prints once the service is ready."""
    gateway = gateway_url(settings)
    flower_url = f"http://{display_host(settings.flower.address)}:{settings.flower.port}"
    redis_note = "  (private, stopped on exit)" if redis_.private else ""
    rows = [
        ("gateway", gateway),
        *([("API docs", f"{gateway}/docs")] if settings.gateway.docs else []),
        ("Flower", f"{flower_url}  ({flower.credentials})"),
        *metrics,
        ("Redis", f"{redact(redis_.url)}{redis_note}"),
    ]
    if "model_name" in ready:  # production tells it to API keys only
        rows.append(("model", f"{ready['model_name']} v{ready.get('model_version')}"))
    return "\n".join(
        [
            "",
            f"==> Two MLOps Toolset is ready ({settings.env} environment)",
            *(f"    {label:<16}{value}" for label, value in rows),
            "",
            f"Try a prediction ({auth.note}):",
            "",
            curl_command(gateway, auth.header),
            "",
            "Press Ctrl-C to stop everything.",
            "",
        ]
    )


def gateway_url(settings) -> str:
    return f"http://{display_host(settings.gateway.host)}:{settings.gateway.port}"


def serve(settings, supervisor: Supervisor, run_dir: Path, ready_timeout: float) -> None:
    generated = ensure_dev_signing_key(settings)
    if generated:
        supervisor.console.say(generated)
        reset_settings()
        settings = get_settings()
    base_env = child_env()
    redis_ = find_or_start_redis(settings, supervisor, run_dir, base_env)
    base_env["MLOPS_REDIS_URL"] = redis_.url
    ensure_model(settings, supervisor, base_env)
    check_ports(settings)
    auth, flower = auth_plan(settings), flower_plan(settings)
    schedule = str(run_dir / "celerybeat-schedule")
    gateway_args = commands.gateway(settings.gateway.host, settings.gateway.port)
    for name, args, env in (
        ("worker", commands.worker(), base_env),
        ("beat", commands.beat(schedule), base_env),
        ("flower", commands.flower(), {**base_env, **flower.env}),
        ("gateway", gateway_args, {**base_env, **auth.env}),
    ):
        supervisor.start(Process(name, executable(args), env))
    gateway = gateway_url(settings)
    ready = wait_ready(supervisor, gateway, ready_timeout)
    metrics = metrics_urls(settings, gateway)
    supervisor.console.say(banner(settings, redis_, ready, auth, flower, metrics))
    supervisor.serve_forever()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.run_service",
        description="Run Redis (if needed), a first model, worker, beat, Flower and the gateway.",
    )
    parser.add_argument(
        "--ready-timeout",
        type=float,
        default=READY_TIMEOUT,
        metavar="SECONDS",
        help=f"how long to wait for the gateway's /ready (default {READY_TIMEOUT:g})",
    )
    args = parser.parse_args(argv)
    console = Console()
    supervisor = Supervisor(console)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, supervisor.on_signal)
    settings = get_settings()
    RUN_DIR.mkdir(exist_ok=True)
    run_dir = Path(tempfile.mkdtemp(prefix="run-", dir=RUN_DIR))
    code = 0
    try:
        serve(settings, supervisor, run_dir, args.ready_timeout)
    except Interrupted:
        pass
    except ChildDied as exc:
        console.say(f"\n==> {exc}; its last lines:\n{exc.child.last_lines()}")
        code = 1
    except StartupError as exc:
        console.say(f"\n==> {exc}")
        code = 1
    finally:
        supervisor.shutdown()
        shutil.rmtree(run_dir, ignore_errors=True)
    console.say("==> stopped" if code == 0 else "==> stopped (see the message above)")
    return code


if __name__ == "__main__":
    sys.exit(main())
