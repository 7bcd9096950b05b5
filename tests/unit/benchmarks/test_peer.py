"""benchmarks/peer.py: MLServer's settings files, its request and its environment's pins."""

from __future__ import annotations

import json
import subprocess
from importlib.metadata import version
from pathlib import Path

from benchmarks import peer


def test_model_settings_put_the_sklearn_runtime_on_the_artifact_with_adaptive_batching():
    settings = peer.model_settings("iris", Path("/store/iris/1/model.joblib"))
    assert settings == {
        "name": "iris",
        "implementation": "mlserver_sklearn.SKLearnModel",
        "max_batch_size": 16,
        "max_batch_time": 0.002,
        "parameters": {"uri": "/store/iris/1/model.joblib"},
    }


def test_server_settings_keep_it_local_quiet_and_its_scratch_folders_in_the_repository(tmp_path):
    settings = peer.server_settings(tmp_path, 8001, 8002, 8003)
    assert (settings["http_port"], settings["grpc_port"], settings["metrics_port"]) == (
        8001, 8002, 8003
    )  # fmt: skip
    assert settings["host"] == "127.0.0.1"
    assert settings["parallel_workers"] == 1
    assert settings["debug"] is False  # no access log line per request
    assert settings["metrics_dir"] == str(tmp_path / ".metrics")
    assert settings["environments_dir"] == str(tmp_path / ".envs")


def test_the_repository_has_a_settings_file_and_a_folder_per_model(tmp_path):
    artifacts = {"iris": tmp_path / "a.joblib", "iris_forest": tmp_path / "b.joblib"}
    peer.write_repository(tmp_path / "repo", artifacts, (1, 2, 3))
    server = json.loads((tmp_path / "repo" / "settings.json").read_text())
    assert server["http_port"] == 1
    for name, artifact in artifacts.items():
        model = json.loads((tmp_path / "repo" / name / "model-settings.json").read_text())
        assert (model["name"], model["parameters"]["uri"]) == (name, str(artifact))


def test_a_request_asks_for_the_class_and_the_probabilities_of_one_fp64_row():
    body = json.loads(peer.infer_body([5.1, 3.5, 1.4, 0.2]))
    assert body["inputs"] == [
        {"name": "input-0", "shape": [1, 4], "datatype": "FP64", "data": [5.1, 3.5, 1.4, 0.2]}
    ]
    assert body["outputs"] == [{"name": "predict"}, {"name": "predict_proba"}]


def test_the_environment_pins_mlserver_uvloop_and_this_projects_scikit_learn():
    wanted = peer.requirements()
    assert "mlserver==1.7.1" in wanted and "mlserver-sklearn==1.7.1" in wanted
    assert "uvloop==0.21.0" in wanted
    assert f"scikit-learn=={version('scikit-learn')}" in wanted  # loads the same joblib file
    assert f"joblib=={version('joblib')}" in wanted


def test_a_finished_install_is_not_repeated(tmp_path, monkeypatch):
    (tmp_path / ".installed").write_text("\n".join(peer.requirements()) + "\n")

    def refuse(*args, **kwargs):
        raise AssertionError("nothing to install")

    monkeypatch.setattr(subprocess, "run", refuse)
    assert peer.ensure_venv(tmp_path) is None


def test_a_failed_install_says_why_in_one_line_and_leaves_no_stamp(tmp_path, monkeypatch):
    def pip_fails(args, **kwargs):
        if "pip" in args:
            stderr = (
                "WARNING: retrying\nERROR: No matching distribution found for mlserver==1.7.1\n"
            )
            raise subprocess.CalledProcessError(1, args, stderr=stderr)
        (tmp_path / "bin").mkdir()
        (tmp_path / "bin" / "python").touch()
        return subprocess.CompletedProcess(args, 0)

    monkeypatch.setattr(subprocess, "run", pip_fails)
    reason = peer.ensure_venv(tmp_path)
    assert reason == (
        "MLServer 1.7.1 could not be installed: "
        "ERROR: No matching distribution found for mlserver==1.7.1"
    )
    assert not (tmp_path / ".installed").exists()


def test_a_missing_python_for_the_environment_is_a_reason_too(tmp_path, monkeypatch):
    def no_such_file(args, **kwargs):
        raise FileNotFoundError(2, "No such file or directory")

    monkeypatch.setattr(subprocess, "run", no_such_file)
    assert "could not be installed" in peer.ensure_venv(tmp_path)
