"""The deployment files: Dockerfiles, docker-compose.yaml, monitoring config, CI workflows.

No Docker engine is needed: the files are linted (hadolint), validated against their JSON
schemas (check-jsonschema's vendored compose-spec and GitHub-workflow schemas, offline), and
parsed to check the properties the service relies on — above all that every container runs the
same command as scripts/commands.py, which `make run` and the integration tests use.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from scripts import commands, security
from scripts.processes import BIN, ROOT
from tests.factories import signing_env

DOCKERFILES = ["Dockerfile.api", "Dockerfile.worker"]
COMPOSE = ROOT / "docker-compose.yaml"
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
SHA_PIN = re.compile(r"^\s*(?:-\s*)?uses:\s*[\w.-]+/[\w./-]+@[0-9a-f]{40}\s+#\s*v\d")
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|API_KEYS?$|PRIVATE_KEY$")
REQUIRED_VAR = re.compile(r"^\$\{[A-Z][A-Z0-9_]*:\?[^}]+\}$")


def _tool(name: str) -> str:
    path = BIN / name
    if path.exists():
        return str(path)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} not found: `make setup` installs it with the dev extra")
    return found


# --- parsing helpers -----------------------------------------------------------------------


def dockerfile_instructions(name: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, comments dropped and continuation lines joined."""
    instructions: list[tuple[str, str]] = []
    current = ""
    for raw in (ROOT / name).read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        keyword, _, rest = current.partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
        current = ""
    return instructions


def final_stage(name: str) -> list[tuple[str, str]]:
    instructions = dockerfile_instructions(name)
    last_from = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    return instructions[last_from:]


def exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list), f"not exec (JSON) form: {args}"
    return value


def dockerfile_cmd(name: str) -> list[str]:
    cmds = [args for keyword, args in final_stage(name) if keyword == "CMD"]
    assert len(cmds) == 1, f"{name}: expected one CMD, found {cmds}"
    return exec_form(cmds[0])


def base_images(name: str) -> list[str]:
    instructions = dockerfile_instructions(name)
    args = {}
    for keyword, rest in instructions:
        if keyword == "ARG" and "=" in rest:
            key, _, value = rest.partition("=")
            args[key] = value
    images = []
    for keyword, rest in instructions:
        if keyword == "FROM":
            image = rest.split()[0]
            images.append(re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], image))
    return images


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def argv(command: str | list[str]) -> list[str]:
    return shlex.split(command) if isinstance(command, str) else [str(a) for a in command]


def container_command(service: str) -> list[str]:
    """What the service's container runs: compose `command:`, else its Dockerfile's CMD."""
    spec = compose()["services"][service]
    if "command" in spec:
        return argv(spec["command"])
    return dockerfile_cmd(spec["build"]["dockerfile"])


def without_host_port(args: list[str]) -> list[str]:
    """The argv with the values of --host/--port blanked: the only values allowed to differ."""
    out = list(args)
    for i, arg in enumerate(out[:-1]):
        if arg in ("--host", "--port"):
            out[i + 1] = "<value>"
    return out


def workflow(path: Path) -> dict:
    data = yaml.safe_load(path.read_text())
    data["on"] = data.pop(True, data.get("on"))  # YAML 1.1 reads the key `on` as True
    return data


def settings_toml() -> dict:
    return tomllib.loads((ROOT / "settings.toml").read_text())["default"]


# --- Dockerfiles ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", DOCKERFILES)
def test_hadolint_reports_nothing(name):
    result = subprocess.run(
        [_tool("hadolint"), "--no-color", name], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


@pytest.mark.parametrize("name", DOCKERFILES)
def test_runs_as_non_root_with_a_healthcheck(name):
    stage = final_stage(name)
    users = [args.split(":")[0] for keyword, args in stage if keyword == "USER"]
    assert users, f"{name}: the final stage sets no USER"
    assert users[-1] not in ("root", "0"), f"{name}: runs as {users[-1]}"
    checks = [args for keyword, args in stage if keyword == "HEALTHCHECK"]
    assert len(checks) == 1 and checks[0].upper() != "NONE", f"{name}: HEALTHCHECK {checks}"


@pytest.mark.parametrize("name", DOCKERFILES)
def test_is_multi_stage_on_a_pinned_slim_python_311(name):
    images = base_images(name)
    assert len(images) >= 2, f"{name}: expected a builder stage and a runtime stage"
    for image in images:
        assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+@sha256:[0-9a-f]{64}", image), image
    stage = final_stage(name)
    assert any(k == "COPY" and "--from=builder" in a and "/opt/venv" in a for k, a in stage)


def test_api_image_has_no_scikit_learn_and_no_worker_extra():
    runs = [args for keyword, args in dockerfile_instructions("Dockerfile.api") if keyword == "RUN"]
    installs = [r for r in runs if "pip install" in r]
    assert installs, "Dockerfile.api installs nothing"
    for run in runs:
        assert not re.search(r"scikit|sklearn|celery|\[worker\]", run, re.IGNORECASE), run
    # `pip install .` brings the base dependencies: they must stay free of both.
    base = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert not [d for d in base if re.match(r"(scikit-learn|sklearn|celery)\b", d, re.I)]
    copied = " ".join(a for k, a in dockerfile_instructions("Dockerfile.api") if k == "COPY")
    assert "workers" not in copied and "training" not in copied


def test_worker_image_installs_the_worker_extra_and_flower_config():
    instructions = dockerfile_instructions("Dockerfile.worker")
    runs = [args for keyword, args in instructions if keyword == "RUN"]
    assert any(re.search(r"pip install .*\S*\[worker\]", run) for run in runs), runs
    copied = " ".join(a for k, a in instructions if k == "COPY")
    assert "flowerconfig.py" in copied and "settings.toml" in copied


def test_worker_healthcheck_pings_its_own_worker():
    (check,) = [a for k, a in final_stage("Dockerfile.worker") if k == "HEALTHCHECK"]
    assert "celery -A workers inspect ping" in check and "celery@$HOSTNAME" in check


def test_dockerignore_keeps_environments_secrets_and_runtime_files_out():
    lines = set((ROOT / ".dockerignore").read_text().split())
    for entry in (
        ".venv/",
        ".git/",
        "artifacts/*",
        ".secrets.toml",
        ".dev-secrets.toml",
        ".env",
        ".pytest_cache/",
    ):
        assert entry in lines, f".dockerignore lacks {entry}"


# --- the commands the containers run ------------------------------------------------------


def test_dockerfile_cmds_are_the_scripts_commands():
    assert dockerfile_cmd("Dockerfile.api") == commands.gateway(host="0.0.0.0", port=8000)  # noqa: S104
    assert dockerfile_cmd("Dockerfile.worker") == commands.worker()


@pytest.mark.parametrize(
    ("service", "expected"),
    [
        ("api", commands.gateway(host="0.0.0.0", port=8000)),  # noqa: S104
        ("worker", commands.worker("predict")),
        ("trainer", commands.worker("train", concurrency=1)),
        ("beat", commands.beat()),
        ("flower", commands.flower()),
    ],
)
def test_compose_commands_are_the_scripts_commands(service, expected):
    assert without_host_port(container_command(service)) == without_host_port(expected)


def test_every_built_service_runs_a_known_command():
    known = [
        without_host_port(c)
        for c in (
            commands.gateway("h", 0),
            commands.worker("predict"),
            commands.worker("train", concurrency=1),
            commands.beat(),
            commands.flower(),
        )
    ]
    for name, spec in compose()["services"].items():
        if "build" in spec:
            assert without_host_port(container_command(name)) in known, name


# --- docker-compose.yaml -------------------------------------------------------------------


def check_jsonschema(schema: str, *paths: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_tool("check-jsonschema"), "--builtin-schema", schema, *map(str, paths)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )


def test_compose_file_matches_the_compose_spec():
    result = check_jsonschema("vendor.compose-spec", COMPOSE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_compose_schema_check_does_reject_a_bad_file(tmp_path):
    bad = tmp_path / "docker-compose.yaml"
    bad.write_text("services:\n  redis:\n    image: redis\n    ports: {a: 1}\n    nonsense: 1\n")
    assert check_jsonschema("vendor.compose-spec", bad).returncode != 0


REDIS_PASSWORD_VAR = "${REDIS_PASSWORD:?set REDIS_PASSWORD (see deploy/compose.env.example)}"
REDIS_URL = f"redis://:{REDIS_PASSWORD_VAR}@redis:6379/0"


def option(args: list[str], name: str) -> str:
    assert args.count(name) == 1, f"{name} given {args.count(name)} times in {args}"
    return args[args.index(name) + 1]


def test_redis_persists_and_never_evicts():
    redis = compose()["services"]["redis"]
    args = argv(redis["command"])
    assert option(args, "--appendonly") == "yes"
    assert option(args, "--maxmemory-policy") == "noeviction"
    assert re.fullmatch(r"redis:7\.\d+\.\d+(@sha256:[0-9a-f]{64})?", redis["image"])
    volume = redis["volumes"][0].split(":")[0]
    assert volume in compose()["volumes"], "redis data must live on a named volume"


def test_redis_has_a_memory_limit():
    """noeviction without maxmemory never refuses a write: Redis grows until the OOM killer."""
    args = argv(compose()["services"]["redis"]["command"])
    assert re.fullmatch(r"[1-9]\d*(gb|mb)", option(args, "--maxmemory"), re.IGNORECASE)


def test_redis_requires_the_password_and_every_url_carries_it():
    redis = compose()["services"]["redis"]
    assert option(argv(redis["command"]), "--requirepass") == REDIS_PASSWORD_VAR
    # The healthcheck authenticates through the environment and looks for the PONG itself:
    # redis-cli exits 0 on a NOAUTH error reply.
    assert redis["environment"]["REDISCLI_AUTH"] == REDIS_PASSWORD_VAR
    kind, command = redis["healthcheck"]["test"]
    assert kind == "CMD-SHELL" and command == "redis-cli ping | grep -q PONG"
    urls = {
        name: spec["environment"]["MLOPS_REDIS_URL"]
        for name, spec in compose()["services"].items()
        if "MLOPS_REDIS_URL" in spec.get("environment", {})
    }
    assert set(urls) == {"api", "worker", "trainer", "beat", "flower"}
    assert set(urls.values()) == {REDIS_URL}
    assert "REDIS_PASSWORD=" in (ROOT / "deploy/compose.env.example").read_text().splitlines()


def test_services_use_the_minio_model_store_and_wait_for_healthy_redis():
    """No shared volume: the models live in MinIO, which minio-init has set up first."""
    data = compose()
    assert "artifacts" not in data["volumes"] and "minio-data" in data["volumes"]
    for name in ("api", "worker", "trainer", "beat", "flower"):
        spec = data["services"][name]
        assert not any(str(v).startswith("artifacts:") for v in spec.get("volumes", [])), name
        depends = spec["depends_on"]
        assert depends["redis"]["condition"] == "service_healthy", name
        assert depends["minio-init"]["condition"] == "service_completed_successfully", name
        env = spec["environment"]
        assert env["MLOPS_ENV"] == "production", name
        assert env["MLOPS_REDIS_URL"] == REDIS_URL, name
        assert env["MLOPS_ARTIFACTS_URL"] == "s3://two-mlops/models", name
        assert env["MLOPS_OBJECT_STORE__ENDPOINT_URL"] == "http://minio:9000", name
    assert data["services"]["flower"]["environment"]["MLOPS_FLOWER__ADDRESS"] == "0.0.0.0"  # noqa: S104
    init = data["services"]["minio-init"]
    assert init["depends_on"]["minio"]["condition"] == "service_healthy"
    assert "mc mb --ignore-existing store/two-mlops" in init["entrypoint"][-1]


def policy_actions(role: str) -> set[str]:
    policy = json.loads((ROOT / f"deploy/minio/model-{role}.json").read_text())
    return {action for statement in policy["Statement"] for action in statement["Action"]}


def test_only_the_trainer_and_the_gateway_can_write_the_model_store():
    """The trainer registers versions; the gateway replaces aliases.json on promote and
    rollback: they use MinIO's model-writer user. Predict workers and beat use model-reader,
    whose policy can get and list, not put or delete; Flower gets no store credentials."""
    services = compose()["services"]
    users = {
        name: spec["environment"].get("MLOPS_OBJECT_STORE__ACCESS_KEY_ID")
        for name, spec in services.items()
        if "MLOPS_ARTIFACTS_URL" in spec.get("environment", {})
    }
    assert users == {
        "api": "model-writer",
        "trainer": "model-writer",
        "worker": "model-reader",
        "beat": "model-reader",
        "flower": None,
    }
    assert "s3:PutObject" in policy_actions("writer")
    assert not any(a.startswith(("s3:Put", "s3:Delete")) for a in policy_actions("reader"))
    assert policy_actions("reader") >= {"s3:GetObject", "s3:ListBucket"}
    for name, queue in (("worker", "predict"), ("trainer", "train")):
        args = argv(services[name]["command"])
        assert args[args.index("-Q") + 1] == queue, name


def test_only_the_trainer_holds_the_private_key_and_every_part_can_verify():
    services = compose()["services"]
    holders = {
        n for n, s in services.items() if "MLOPS_SIGNING__PRIVATE_KEY" in s.get("environment", {})
    }
    assert holders == {"trainer"}
    key = services["trainer"]["environment"]["MLOPS_SIGNING__PRIVATE_KEY"]
    assert REQUIRED_VAR.match(key), key
    for name, spec in services.items():
        env = spec.get("environment", {})
        if env.get("MLOPS_ENV") == "production":  # production stops without a key to verify
            assert REQUIRED_VAR.match(env.get("MLOPS_SIGNING__PUBLIC_KEYS", "")), name
    example = (ROOT / "deploy/compose.env.example").read_text()
    assert "MLOPS_SIGNING__PRIVATE_KEY=\n" in example  # to fill in, never a committed key
    assert "MLOPS_SIGNING__PUBLIC_KEYS=" in example


def test_workers_scale_and_beat_is_a_singleton():
    services = compose()["services"]
    worker = services["worker"]
    assert "container_name" not in worker and "ports" not in worker
    beat = services["beat"]
    assert "container_name" in beat, "a fixed container_name makes `--scale beat=2` fail"
    assert beat.get("deploy", {}).get("replicas", 1) == 1


def test_no_secret_is_written_in_the_compose_file():
    for name, spec in compose()["services"].items():
        env = spec.get("environment", {})
        assert isinstance(env, dict), f"{name}: use the mapping form for environment"
        for key, value in env.items():
            if SECRET_NAME.search(key):
                assert REQUIRED_VAR.match(str(value)), f"{name}.{key} must be ${{VAR:?message}}"
    services = compose()["services"].values()
    env = {k: v for spec in services for k, v in spec.get("environment", {}).items()}
    keys = ("MLOPS_AUTH__API_KEYS", "MLOPS_FLOWER__PASSWORD", "GF_SECURITY_ADMIN_PASSWORD")
    keys += ("MINIO_ROOT_PASSWORD", "MLOPS_OBJECT_STORE__SECRET_ACCESS_KEY")
    for key in (*keys, "MLOPS_SIGNING__PRIVATE_KEY", "REDISCLI_AUTH"):
        assert REQUIRED_VAR.match(env[key]), key


# --- Prometheus and Grafana ----------------------------------------------------------------


def test_prometheus_scrapes_gateway_workers_and_flower():
    config = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["api"]["static_configs"][0]["targets"] == ["api:8000"]
    (worker_sd,) = jobs["worker"]["dns_sd_configs"]
    assert worker_sd["names"] == ["worker", "trainer"]
    assert worker_sd["port"] == settings_toml()["worker"]["metrics_port"]
    assert jobs["flower"]["static_configs"][0]["targets"] == [
        f"flower:{settings_toml()['flower']['port']}"
    ]
    mounted = " ".join(compose()["services"]["prometheus"]["volumes"])
    assert "./deploy/prometheus/prometheus.yml:/etc/prometheus/prometheus.yml" in mounted


def test_grafana_dashboard_shows_the_service_metrics():
    dashboard = json.loads((ROOT / "deploy/grafana/dashboards/mlops.json").read_text())
    datasources = yaml.safe_load(
        (ROOT / "deploy/grafana/provisioning/datasources/prometheus.yaml").read_text()
    )
    uid = datasources["datasources"][0]["uid"]
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    for metric in (
        "mlops_http_requests_total",
        "mlops_http_request_duration_seconds_bucket",
        "mlops_queue_depth",
        "mlops_batch_rows_bucket",
        "mlops_model_info",
        "mlops_retrains_total",
    ):
        assert metric in exprs, f"no panel uses {metric}"
    assert "histogram_quantile(0.5," in exprs and "histogram_quantile(0.99," in exprs
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == uid
    provider = yaml.safe_load(
        (ROOT / "deploy/grafana/provisioning/dashboards/mlops.yaml").read_text()
    )
    path = provider["providers"][0]["options"]["path"]
    assert f"./deploy/grafana/dashboards:{path}:ro" in compose()["services"]["grafana"]["volumes"]


# --- CI workflows and pre-commit -----------------------------------------------------------


def test_workflows_exist():
    names = {p.name for p in WORKFLOWS}
    assert {"code-testing.yml", "code-validation.yml", "code-security.yml"} <= names


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_matches_the_github_schema(path):
    result = check_jsonschema("vendor.github-workflows", path)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_is_read_only_pinned_and_time_limited(path):
    data = workflow(path)
    assert data["permissions"] == {"contents": "read"}
    assert data["on"]["push"]["branches"] == ["main"]
    assert data["on"]["pull_request"]["branches"] == ["main"]
    for name, job in data["jobs"].items():
        assert "timeout-minutes" in job, f"{path.name}: job {name} has no timeout-minutes"
        for step in job["steps"]:
            if "actions/setup-python" in step.get("uses", ""):
                assert step["with"]["cache"] == "pip"
    uses = [line for line in path.read_text().splitlines() if re.match(r"\s*(-\s*)?uses:", line)]
    assert uses
    for line in uses:
        assert SHA_PIN.match(line), f"{path.name}: not pinned to a full SHA with # vX: {line}"


def test_testing_workflow_runs_make_test_with_redis():
    data = workflow(ROOT / ".github/workflows/code-testing.yml")
    (job,) = data["jobs"].values()
    assert job["services"]["redis"]["image"].startswith("redis:7")
    runs = " ".join(step.get("run", "") for step in job["steps"])
    assert "apt-get install" in runs and "redis-server" in runs
    assert "make test" in runs
    # the runner user cannot create network namespaces: this test runs again, as root
    assert re.search(r"sudo .*pytest .*tests/integration/test_separate_hosts\.py", runs), runs


def test_security_and_validation_workflows_run_the_checks():
    security_runs = " ".join(
        step.get("run", "")
        for job in workflow(ROOT / ".github/workflows/code-security.yml")["jobs"].values()
        for step in job["steps"]
    )
    assert "scripts.security --require-audit" in security_runs
    validation_runs = " ".join(
        step.get("run", "")
        for job in workflow(ROOT / ".github/workflows/code-validation.yml")["jobs"].values()
        for step in job["steps"]
    )
    assert "ruff check" in validation_runs and "ruff format --check" in validation_runs


def test_pre_commit_config_is_valid_and_local():
    path = ROOT / ".pre-commit-config.yaml"
    result = subprocess.run(
        [_tool("pre-commit"), "validate-config", str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    repos = yaml.safe_load(path.read_text())["repos"]
    assert [r["repo"] for r in repos] == ["local"], "local hooks only: they must work offline"
    ids = {hook["id"] for hook in repos[0]["hooks"]}
    assert {"ruff-check", "ruff-format"} <= ids


# --- Flower configuration ------------------------------------------------------------------


def run_flowerconfig(**env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MLOPS_", "FLOWER_"))}
    clean.update(signing_env())  # production stops without a key to verify versions with
    return subprocess.run(
        [sys.executable, "flowerconfig.py"],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("env", ["testing", "production"])
def test_flower_refuses_to_start_without_a_password_outside_development(env):
    result = run_flowerconfig(MLOPS_ENV=env, MLOPS_FLOWER__PASSWORD="")
    assert result.returncode != 0
    assert "refusing to start without a password" in result.stderr
    assert "MLOPS_FLOWER__PASSWORD" in result.stderr


def test_flower_without_a_password_is_allowed_in_development_on_localhost():
    result = run_flowerconfig(MLOPS_ENV="development", MLOPS_FLOWER__PASSWORD="")
    assert result.returncode == 0, result.stderr
    assert "'address': '127.0.0.1'" in result.stdout
    assert "basic_auth" not in result.stdout


def test_flower_config_sets_basic_auth_as_flower_reads_it():
    """Load the file the way Flower does (tornado's parse_config_file) and read the options."""
    probe = (
        "import flower.options; from tornado.options import options; "
        "options.parse_config_file('flowerconfig.py', final=False); "
        "print(options.basic_auth, options.address, options.port)"
    )
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MLOPS_", "FLOWER_"))}
    clean.update(signing_env())  # production stops without a key to verify versions with
    env = {**clean, "MLOPS_ENV": "production", "MLOPS_FLOWER__PASSWORD": "s3cret"}
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["['admin:s3cret']", "127.0.0.1", "5555"]


# --- scripts/security.py: a skipped audit is never reported as clean ---------------------


def test_security_reports_an_unreachable_service_as_skipped():
    out = "requests.exceptions.ConnectionError: Max retries exceeded with url: /pypi/x/1/json"
    kind, _ = security.classify_audit_failure(out)
    assert kind == "skipped"


def test_security_reports_vulnerabilities_as_findings():
    out = "Found 2 known vulnerabilities in 1 package\nName Version ID Fix Versions"
    assert security.classify_audit_failure(out)[0] == "findings"


def test_security_reports_a_release_the_service_does_not_know_as_skipped():
    out = "ERROR: amqp: Dependency not found on PyPI and could not be audited: amqp (5.4.2)"
    kind, detail = security.classify_audit_failure(out)
    assert kind == "skipped"
    assert "amqp 5.4.2" in detail


def test_security_treats_unknown_failures_as_errors():
    assert security.classify_audit_failure("Traceback ... KeyError")[0] == "error"
