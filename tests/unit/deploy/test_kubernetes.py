"""deploy/kubernetes/: the kustomize base, built and validated offline (no cluster needed).

`kubectl kustomize` builds it (with the secret templates filled in as they stand); every object
is validated against the Kubernetes OpenAPI schemas that kubernetes-validate bundles, strictly
(unknown fields rejected), and KEDA's objects against the openAPIV3Schema of KEDA's own CRDs
(tests/data/keda), with unknown fields rejected too as `kubectl apply` does by default. Then
the properties the service relies on: the commands of scripts/commands.py, the same Redis as
docker-compose.yaml, one trainer and one beat, graceful termination, secrets kept apart.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import tomllib
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import latest_version

from scripts import commands
from scripts.processes import ROOT
from tests.factories import settings_with

BASE = ROOT / "deploy" / "kubernetes"
KEDA_CRDS = ROOT / "tests" / "data" / "keda"
SECRET_FILES = ("secrets.env", "signing-key.env")
STORE_SECRET_FILE = "object-store.env"  # in object-store/, the component's Secret
# The oldest Kubernetes the manifests claim (README) and the newest schemas bundled.
KUBERNETES_VERSIONS = ("1.30", latest_version())
REDIS_URL = "redis://:$(REDIS_PASSWORD)@redis:6379/0"
APP_WORKLOADS = ("gateway", "worker", "trainer", "beat", "flower")


# --- building and validating ---------------------------------------------------------------


def kustomize(folder: Path) -> subprocess.CompletedProcess[str]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail("kubectl not found: `kubectl kustomize` builds deploy/kubernetes")
    return subprocess.run(
        [kubectl, "kustomize", str(folder)], capture_output=True, text=True, timeout=60
    )


def build(folder: Path) -> list[dict]:
    result = kustomize(folder)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def filled_in(tmp_path_factory) -> Path:
    """A copy of deploy/kubernetes with the secret files copied from their templates."""
    folder = tmp_path_factory.mktemp("k8s") / "kubernetes"
    shutil.copytree(BASE, folder, ignore=shutil.ignore_patterns(*SECRET_FILES))
    for name in SECRET_FILES:
        shutil.copy(BASE / f"{name}.example", folder / name)
    return folder


@pytest.fixture(scope="module")
def objects(tmp_path_factory) -> list[dict]:
    """The base as `kubectl apply -k` sends it."""
    return build(filled_in(tmp_path_factory))


@pytest.fixture(scope="module")
def object_store_objects(tmp_path_factory) -> list[dict]:
    """The base with the object-store component turned on as its comment says: both lines
    uncommented, object-store.env copied from its template."""
    folder = filled_in(tmp_path_factory)
    component = folder / "object-store"
    shutil.copy(component / f"{STORE_SECRET_FILE}.example", component / STORE_SECRET_FILE)
    kustomization = folder / "kustomization.yaml"
    text = kustomization.read_text()
    enabled = text.replace("# components:\n#   - object-store", "components:\n  - object-store")
    assert enabled != text, "kustomization.yaml no longer offers the object-store component"
    kustomization.write_text(enabled)
    return build(folder)


def strict(schema: dict) -> dict:
    """Reject unknown fields: a CRD schema only lists the known ones (the API server prunes
    the rest, and `kubectl apply`'s strict field validation refuses them)."""
    schema = copy.deepcopy(schema)

    def walk(node):
        if isinstance(node, dict):
            if (
                "properties" in node
                and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")
            ):
                node["additionalProperties"] = False
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    return schema


def keda_schema(kind: str, api_version: str) -> dict:
    crd = yaml.safe_load((KEDA_CRDS / f"keda.sh_{kind.lower()}s.yaml").read_text())
    assert crd["spec"]["names"]["kind"] == kind
    version = api_version.split("/")[1]
    (entry,) = [v for v in crd["spec"]["versions"] if v["name"] == version]
    return strict(entry["schema"]["openAPIV3Schema"])


def schema_errors(obj: dict, version: str) -> list[str]:
    """Why ``obj`` does not match its schema (empty: it does)."""
    name = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
    if str(obj.get("apiVersion", "")).startswith("keda.sh/"):
        validator = jsonschema.Draft7Validator(keda_schema(obj["kind"], obj["apiVersion"]))
        errors = [f"{name}: {e.json_path}: {e.message}" for e in validator.iter_errors(obj)]
        spec = obj.get("spec", {})
        # The CRD's CEL rule, which jsonschema cannot run.
        if spec.get("minReplicaCount", 0) > spec.get("maxReplicaCount", 100):
            errors.append(f"{name}: minReplicaCount must be <= maxReplicaCount")
        return errors
    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.ValidationError as e:
        return [f"{name}: {'.'.join(map(str, e.path))}: {e.message}"]
    except kubernetes_validate.SchemaNotFoundError:
        return [f"{name}: no schema for {obj['kind']} {obj['apiVersion']}"]
    return []


# --- the objects ---------------------------------------------------------------------------


def find(objects: list[dict], kind: str, name: str) -> dict:
    (found,) = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    return found


def pod(objects: list[dict], name: str) -> dict:
    kind = "StatefulSet" if name == "redis" else "Deployment"
    return find(objects, kind, name)["spec"]["template"]["spec"]


def container(objects: list[dict], name: str) -> dict:
    (only,) = pod(objects, name)["containers"]
    return only


def env(objects: list[dict], name: str) -> dict[str, dict]:
    return {e["name"]: e for e in container(objects, name).get("env", [])}


def config(objects: list[dict]) -> dict[str, str]:
    (config_map,) = [o for o in objects if o["kind"] == "ConfigMap"]
    return config_map["data"]


def settings_default() -> dict:
    return tomllib.loads((ROOT / "settings.toml").read_text())["default"]


def setting(variable: str):
    """settings.toml's default for an MLOPS_ variable (KeyError: no such setting)."""
    node = settings_default()
    for part in variable.removeprefix("MLOPS_").lower().split("__"):
        node = node[part]
    return node


def memory_mib(quantity: str) -> int:
    units = {"Mi": 1, "Gi": 1024}
    return int(quantity[:-2]) * units[quantity[-2:]]


# --- schemas -------------------------------------------------------------------------------


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("build_of", ["objects", "object_store_objects"])
def test_every_object_matches_its_schema(request, build_of, version):
    objects = request.getfixturevalue(build_of)
    kinds = {o["kind"] for o in objects}
    assert {"Deployment", "StatefulSet", "ScaledObject", "TriggerAuthentication"} <= kinds
    errors = [error for obj in objects for error in schema_errors(obj, version)]
    assert not errors, "\n".join(errors)


def broken(objects, kind, name, path, value):
    obj = copy.deepcopy(find(objects, kind, name))
    node = obj
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return obj


@pytest.mark.parametrize(
    ("kind", "name", "path", "value", "reason"),
    [
        (
            "Deployment",
            "worker",
            ("spec", "template", "spec", "containers", 0, "comand"),
            ["celery"],
            "'comand' was unexpected",
        ),
        ("Deployment", "beat", ("spec", "replicas"), "one", "'one' is not of type 'integer'"),
        (
            "ScaledObject",
            "worker",
            ("spec", "triggers", 0, "metadata", "listLength"),
            100,
            "100 is not of type 'string'",
        ),
        ("ScaledObject", "worker", ("spec", "maxReplicas"), 3, "'maxReplicas' was unexpected"),
        (
            "ScaledObject",
            "worker",
            ("spec", "minReplicaCount"),
            50,
            "minReplicaCount must be <= maxReplicaCount",
        ),
        (
            "TriggerAuthentication",
            "redis-auth",
            ("spec", "secretTargetRef", 0, "parameter"),
            None,
            "None is not of type 'string'",
        ),
    ],
)
def test_a_broken_manifest_is_rejected(objects, kind, name, path, value, reason):
    """The checks above can fail: a typo, a wrong type, the CRD's CEL rule."""
    errors = schema_errors(broken(objects, kind, name, path, value), KUBERNETES_VERSIONS[-1])
    assert len(errors) == 1 and reason in errors[0], errors


def test_an_unknown_kind_is_rejected():
    errors = schema_errors(
        {"apiVersion": "v1", "kind": "Nonsense", "metadata": {"name": "x"}}, "1.30"
    )
    assert errors == ["Nonsense/x: no schema for Nonsense v1"]


def test_a_missing_secret_file_stops_the_build(tmp_path):
    folder = tmp_path / "kubernetes"
    shutil.copytree(BASE, folder, ignore=shutil.ignore_patterns(*SECRET_FILES))
    result = kustomize(folder)
    assert result.returncode != 0 and "secrets.env" in result.stderr


# --- the commands, the same as scripts/commands.py and docker-compose.yaml -----------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("gateway", commands.gateway(host="0.0.0.0", port=8000)),  # noqa: S104
        ("worker", commands.worker("predict")),
        ("trainer", commands.worker("train", concurrency=1)),
        ("beat", commands.beat()),
        ("flower", commands.flower()),
    ],
)
def test_containers_run_the_scripts_commands(objects, name, expected):
    spec = container(objects, name)
    assert spec["command"] == expected and "args" not in spec
    image = "two-mlops/api" if name == "gateway" else "two-mlops/worker"
    assert spec["image"].split(":")[0] == image


def test_redis_is_configured_like_compose(objects):
    compose = yaml.safe_load((ROOT / "docker-compose.yaml").read_text())["services"]["redis"]
    args = container(objects, "redis")["args"]
    options = dict(zip(args[1::2], args[2::2], strict=True))
    expected = dict(zip(compose["command"][1::2], compose["command"][2::2], strict=True))
    assert args[0] == "redis-server" and options.keys() == expected.keys()
    assert options["--requirepass"] == "$(REDIS_PASSWORD)"
    for option in ("--appendonly", "--maxmemory", "--maxmemory-policy"):
        assert options[option] == expected[option], option
    assert container(objects, "redis")["image"] == compose["image"]
    limit = container(objects, "redis")["resources"]["limits"]["memory"]
    assert memory_mib(limit) > 1024, "maxmemory 1gb needs room for the AOF rewrite's fork"


def test_every_part_reaches_redis_with_the_password_and_gets_the_settings(objects):
    for name in APP_WORKLOADS:
        variables = [e["name"] for e in container(objects, name)["env"]]
        values = env(objects, name)
        # $(REDIS_PASSWORD) is expanded only from a variable defined before it.
        assert variables.index("REDIS_PASSWORD") < variables.index("MLOPS_REDIS_URL"), name
        assert values["MLOPS_REDIS_URL"]["value"] == REDIS_URL, name
        assert "MLOPS_SIGNING__PUBLIC_KEYS" in values, name
        (source,) = container(objects, name)["envFrom"]
        assert source["configMapRef"]["name"].startswith("mlops-config-"), name
    assert config(objects)["MLOPS_ENV"] == "production"
    assert config(objects)["MLOPS_ARTIFACTS_DIR"] == "/app/artifacts"


def test_the_config_map_names_real_settings_pinned_at_their_defaults(objects):
    data = config(objects)
    for variable, value in data.items():
        if variable == "MLOPS_ENV":
            continue
        default = setting(variable)  # KeyError: a variable no setting reads
        if variable not in ("MLOPS_ARTIFACTS_DIR", "MLOPS_WORKER__MODEL_CACHE_BYTES") and not (
            variable.endswith("_ADDRESS")
        ):
            assert value == str(default), f"{variable}: {value} here, {default} in settings.toml"


def env_file(name: str) -> dict[str, str]:
    """An env file as kustomize reads it: KEY=VALUE lines, the value as it stands."""
    lines = (BASE / name).read_text().splitlines()
    pairs = [line.split("=", 1) for line in lines if line and not line.startswith("#")]
    return {key: value for key, value in pairs}


def test_the_config_map_and_the_secret_templates_load_as_production_settings(monkeypatch):
    """Values reach the settings as kustomize passes them: no quotes, JSON read as JSON."""
    secrets = env_file("secrets.env.example")
    api_keys = secrets["MLOPS_AUTH__API_KEYS"].replace("REPLACE_WITH_HEX_DIGEST", "ab" * 32)
    # This session's key (tests/conftest.py), in the template's form.
    (public,) = json.loads(os.environ["MLOPS_SIGNING__PUBLIC_KEYS"])
    public_keys = secrets["MLOPS_SIGNING__PUBLIC_KEYS"].replace("REPLACE_WITH_PUBLIC_KEY", public)
    settings = settings_with(
        monkeypatch,
        **env_file("config.env"),
        MLOPS_REDIS_URL="redis://:pw@redis:6379/0",
        MLOPS_AUTH__API_KEYS=api_keys,
        MLOPS_SIGNING__PUBLIC_KEYS=public_keys,
    )
    assert settings.env == "production"
    assert settings.auth.api_keys == {f"sha256:{'ab' * 32}": ["predict", "admin"]}
    assert settings.worker.model_cache_bytes == 256 * 2**20
    assert settings.worker.metrics_address == settings.flower.address == "0.0.0.0"  # noqa: S104
    assert public in settings.signing.public_keys


# --- probes, termination, singletons -------------------------------------------------------


def test_gateway_probes_and_service(objects):
    spec = container(objects, "gateway")
    assert spec["livenessProbe"]["httpGet"]["path"] == "/health"
    assert spec["readinessProbe"]["httpGet"]["path"] == "/ready"
    (port,) = spec["ports"]
    assert port["containerPort"] == 8000
    service = find(objects, "Service", "gateway")
    assert (
        service["spec"]["selector"]
        == find(objects, "Deployment", "gateway")["spec"]["selector"]["matchLabels"]
    )
    # A sync /predict may wait api.max_wait_seconds: the grace period lets it finish.
    grace = pod(objects, "gateway")["terminationGracePeriodSeconds"]
    assert grace > settings_default()["api"]["max_wait_seconds"] + 5  # + the preStop sleep


def test_workers_outlive_their_longest_task_on_sigterm(objects):
    """Celery's warm shutdown (SIGTERM to PID 1, the exec-form command) lets running tasks end;
    the grace period must outlast the time limit, or the kubelet SIGKILLs them mid-batch."""
    data = config(objects)
    worker = pod(objects, "worker")["terminationGracePeriodSeconds"]
    trainer = pod(objects, "trainer")["terminationGracePeriodSeconds"]
    assert worker > int(data["MLOPS_WORKER__PREDICT_TIME_LIMIT"])
    assert trainer > int(data["MLOPS_WORKER__RETRAIN_TIME_LIMIT"])
    for name in ("worker", "trainer"):
        assert container(objects, name)["command"][0] == "celery", (
            "no shell: SIGTERM reaches Celery"
        )


def test_one_trainer_and_one_beat_never_two(objects):
    targets = {
        o["spec"]["scaleTargetRef"]["name"]
        for o in objects
        if "scaleTargetRef" in o.get("spec", {})
    }
    for name in ("trainer", "beat"):
        spec = find(objects, "Deployment", name)["spec"]
        assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}, name
        assert name not in targets, f"{name} must not be autoscaled"
    for name in ("gateway", "worker"):
        assert "replicas" not in find(objects, "Deployment", name)["spec"], "the autoscaler owns it"
    assert targets == {"gateway", "worker"}


# --- the model store and the secrets -------------------------------------------------------


def artifacts_mounts(objects, name) -> list[bool]:
    """readOnly of each mount of the artifacts claim."""
    volumes = {
        v["name"]
        for v in pod(objects, name).get("volumes", [])
        if v.get("persistentVolumeClaim", {}).get("claimName") == "artifacts"
    }
    return [
        m.get("readOnly", False)
        for m in container(objects, name).get("volumeMounts", [])
        if m["name"] in volumes and m["mountPath"] == "/app/artifacts"
    ]


def test_only_the_trainer_and_the_gateway_write_the_model_store(objects):
    claim = find(objects, "PersistentVolumeClaim", "artifacts")
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"], "pods on many nodes mount it"
    assert artifacts_mounts(objects, "trainer") == [False]
    assert artifacts_mounts(objects, "gateway") == [False]
    assert artifacts_mounts(objects, "worker") == [True]
    assert artifacts_mounts(objects, "beat") == artifacts_mounts(objects, "flower") == []


def secret_refs(objects) -> set[tuple[str, str, str]]:
    """(workload, Secret name without its hash suffix, key) of every secretKeyRef."""
    refs = set()
    for name in (*APP_WORKLOADS, "redis"):
        for variable in container(objects, name).get("env", []):
            ref = variable.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                refs.add((name, ref["name"].rsplit("-", 1)[0], ref["key"]))
    return refs


def test_secrets_come_from_templates_and_only_the_trainer_has_the_private_key(objects):
    secrets = {
        o["metadata"]["name"].rsplit("-", 1)[0]: o["data"] for o in objects if o["kind"] == "Secret"
    }
    refs = secret_refs(objects)
    for _, secret, key in refs:
        assert key in secrets[secret], f"{secret} has no {key} in its template"
    holders = {name for name, _, key in refs if key == "MLOPS_SIGNING__PRIVATE_KEY"}
    assert holders == {"trainer"}
    assert {name for name, _, key in refs if key == "MLOPS_AUTH__API_KEYS"} == {"gateway"}
    assert {name for name, _, key in refs if key == "MLOPS_FLOWER__PASSWORD"} == {"flower"}
    # The filled-in files stay out of git; the templates hold placeholders only.
    ignored = subprocess.run(
        ["git", "check-ignore", *(str(BASE / n) for n in SECRET_FILES)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert ignored.stdout.split() == [str(BASE / n) for n in SECRET_FILES]
    for name in SECRET_FILES:
        for line in (BASE / f"{name}.example").read_text().splitlines():
            if line and not line.startswith("#"):
                assert "REPLACE_WITH" in line, f"{name}.example: {line}"


def test_pods_run_as_non_root_on_a_read_only_root_with_limits(objects):
    for name in (*APP_WORKLOADS, "redis"):
        spec = pod(objects, name)
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["automountServiceAccountToken"] is False, name
        box = container(objects, name)
        assert box["securityContext"]["readOnlyRootFilesystem"] is True, name
        assert box["securityContext"]["allowPrivilegeEscalation"] is False, name
        assert box["securityContext"]["capabilities"]["drop"] == ["ALL"], name
        resources = box["resources"]
        assert {"cpu", "memory"} <= resources["requests"].keys() & resources["limits"].keys(), name
    # The measured peaks (`make bench`): gateway 66 MiB, worker 450 MiB with 2 pool processes.
    gateway = container(objects, "gateway")["resources"]
    assert memory_mib(gateway["requests"]["memory"]) >= 80
    worker = container(objects, "worker")["resources"]
    cache = int(config(objects)["MLOPS_WORKER__MODEL_CACHE_BYTES"]) // 2**20
    concurrency = int(config(objects)["MLOPS_WORKER__CONCURRENCY"])
    assert memory_mib(worker["requests"]["memory"]) >= 450
    assert memory_mib(worker["limits"]["memory"]) >= 450 + concurrency * cache


# --- autoscaling ---------------------------------------------------------------------------


def test_keda_scales_the_workers_on_the_predict_queue_and_the_oldest_job(objects):
    scaled = find(objects, "ScaledObject", "worker")["spec"]
    assert scaled["scaleTargetRef"]["name"] == "worker"
    # Never zero: /ready needs a predict consumer, or no job would arrive to wake them.
    assert 1 <= scaled["minReplicaCount"] < scaled["maxReplicaCount"]
    triggers = {t["type"]: t for t in scaled["triggers"]}
    redis = triggers["redis"]["metadata"]
    assert redis["listName"] == "predict"
    namespace = find(objects, "Namespace", "two-mlops")["metadata"]["name"]
    assert redis["address"] == f"redis.{namespace}.svc.cluster.local:6379"
    auth = find(objects, "TriggerAuthentication", triggers["redis"]["authenticationRef"]["name"])
    (ref,) = auth["spec"]["secretTargetRef"]
    secret_names = {o["metadata"]["name"] for o in objects if o["kind"] == "Secret"}
    assert ref["name"] in secret_names and ref["key"] == "REDIS_PASSWORD"
    # KEDA asks for every replica before the gateway starts refusing jobs (429).
    max_depth = int(config(objects)["MLOPS_API__MAX_QUEUE_DEPTH"])
    assert scaled["maxReplicaCount"] * int(redis["listLength"]) < max_depth
    age = triggers["prometheus"]
    assert age["metricType"] == "Value"
    assert 'mlops_queue_oldest_job_age_seconds{queue="predict"}' in age["metadata"]["query"]
    assert float(age["metadata"]["threshold"]) < settings_default()["api"]["max_wait_seconds"]


def test_the_gateway_scales_on_cpu(objects):
    hpa = find(objects, "HorizontalPodAutoscaler", "gateway")["spec"]
    assert hpa["scaleTargetRef"]["name"] == "gateway"
    (metric,) = hpa["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert 2 <= hpa["minReplicas"] < hpa["maxReplicas"]


# --- the object-store component: no shared volume ------------------------------------------


def test_with_the_object_store_no_pod_shares_a_volume(object_store_objects):
    objects = object_store_objects
    claims = {o["metadata"]["name"] for o in objects if o["kind"] == "PersistentVolumeClaim"}
    assert claims == {"beat-state"}, "only beat's own schedule file stays on a volume"
    for name in ("gateway", "worker", "trainer"):
        (volume,) = [v for v in pod(objects, name)["volumes"] if v["name"] == "artifacts"]
        assert set(volume) == {"name", "emptyDir"}, name  # the pod's own cache
        assert artifacts_mounts(objects, name) == [], name  # no claim mounted
        (mount,) = [m for m in container(objects, name)["volumeMounts"] if m["name"] == "artifacts"]
        assert not mount.get("readOnly"), f"{name} writes downloaded artifacts to its cache"
    data = config(objects)
    assert data["MLOPS_ARTIFACTS_URL"].startswith("s3://")
    assert data["MLOPS_OBJECT_STORE__CACHE_DIR"] == "/app/artifacts"


def test_with_the_object_store_only_the_trainer_and_the_gateway_get_write_keys(
    object_store_objects,
):
    refs = secret_refs(object_store_objects)
    store = {(name, key) for name, secret, key in refs if secret == "mlops-object-store"}
    keys = {name: {key.split("_", 1)[0] for n, key in store if n == name} for name, _ in store}
    assert keys == {
        "gateway": {"WRITER"},
        "trainer": {"WRITER"},
        "worker": {"READER"},
        "beat": {"READER"},
    }
    secrets = {
        o["metadata"]["name"].rsplit("-", 1)[0]: o["data"]
        for o in object_store_objects
        if o["kind"] == "Secret"
    }
    for _, secret, key in refs:
        assert key in secrets[secret], f"{secret} has no {key} in its template"
    template = BASE / "object-store" / f"{STORE_SECRET_FILE}.example"
    for line in template.read_text().splitlines():
        if line and not line.startswith("#") and "SECRET" in line.split("=")[0]:
            assert "REPLACE_WITH" in line, line
    ignored = subprocess.run(
        ["git", "check-ignore", str(template.with_suffix(""))], cwd=ROOT, capture_output=True
    )
    assert ignored.returncode == 0, "object-store.env must stay out of git"


def test_the_object_store_component_loads_as_production_settings(object_store_objects, monkeypatch):
    secrets = env_file("secrets.env.example")
    (public,) = json.loads(os.environ["MLOPS_SIGNING__PUBLIC_KEYS"])
    settings = settings_with(
        monkeypatch,
        **config(object_store_objects),
        MLOPS_REDIS_URL="redis://:pw@redis:6379/0",
        MLOPS_AUTH__API_KEYS=secrets["MLOPS_AUTH__API_KEYS"].replace(
            "REPLACE_WITH_HEX_DIGEST", "ab" * 32
        ),
        MLOPS_SIGNING__PUBLIC_KEYS=json.dumps([public]),
    )
    assert settings.artifacts_url == "s3://two-mlops/models"
    assert settings.object_store.endpoint_url == "http://minio.minio.svc:9000"
