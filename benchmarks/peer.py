"""The peer in `make bench`: MLServer serving the same artifacts, measured beside this service.

MLServer 1.7.1 with its scikit-learn runtime, adaptive batching of up to 16 requests or 2 ms
(issue #16's tuning) and one inference process (``parallel_workers = 1``, its default, beside
its HTTP process), access logs off (``debug = false``) as in production. It runs in its own
virtual environment (.bench-venvs/mlserver, git-ignored), created on first use with the
scikit-learn and joblib versions of this project's, so it loads the very joblib file the
worker loads, and ``uvloop==0.21.0``: with uvloop 0.23 its inference process fails ("There is
no current event loop in thread 'MainThread'") and no model loads.
Where the environment cannot be made (no network), :func:`ensure_venv` says why and the
benchmark goes on without the peer.

Each request asks for both outputs, ``predict`` and ``predict_proba``: this service answers
both to every request, so both give the same answer (MLServer calls predict and predict_proba;
the worker derives the class from the probabilities, workers/inference.py).
"""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

from scripts.processes import ROOT

NAME = "MLServer 1.7.1"
VENV = ROOT / ".bench-venvs" / "mlserver"
MAX_BATCH_SIZE = 16
MAX_BATCH_TIME = 0.002  # seconds
PARALLEL_WORKERS = 1
INSTALL_TIMEOUT = 1200  # seconds: about two minutes on a quiet machine with a network


def requirements() -> list[str]:
    """What the peer's environment holds: MLServer pinned, scikit-learn and joblib as here."""
    return [
        "mlserver==1.7.1",
        "mlserver-sklearn==1.7.1",
        "uvloop==0.21.0",
        f"scikit-learn=={version('scikit-learn')}",
        f"joblib=={version('joblib')}",
    ]


def _reason(exc: Exception) -> str:
    """One line saying why an install step failed (pip's last error line where it has one)."""
    text = getattr(exc, "stderr", None) or ""
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("ERROR")]
    return (errors or lines or [str(exc)])[-1][:300]


def ensure_venv(venv: Path = VENV) -> str | None:
    """Make (once) the peer's environment; None when it is ready, else why it is not.

    A stamp holding the requirements marks a finished install: a changed pin reinstalls."""
    stamp = venv / ".installed"
    wanted = "\n".join(requirements()) + "\n"
    if stamp.is_file() and stamp.read_text() == wanted:
        return None
    python = venv / "bin" / "python"
    try:
        if not python.exists():
            subprocess.run(
                [sys.executable, "-m", "venv", str(venv)],
                check=True, capture_output=True, text=True, timeout=300,
            )  # fmt: skip
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
             *requirements()],
            check=True, capture_output=True, text=True, timeout=INSTALL_TIMEOUT,
        )  # fmt: skip
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
        return f"{NAME} could not be installed: {_reason(exc)}"
    stamp.write_text(wanted)
    return None


def model_settings(name: str, artifact: Path) -> dict:
    """A model-settings.json: the scikit-learn runtime on ``artifact``, adaptive batching."""
    return {
        "name": name,
        "implementation": "mlserver_sklearn.SKLearnModel",
        "max_batch_size": MAX_BATCH_SIZE,
        "max_batch_time": MAX_BATCH_TIME,
        "parameters": {"uri": str(artifact)},
    }


def server_settings(folder: Path, http_port: int, grpc_port: int, metrics_port: int) -> dict:
    """The server's settings.json: its ports on 127.0.0.1, one inference process, no access
    log, and its scratch folders in ``folder`` (by default they land in the working folder)."""
    return {
        "debug": False,
        "host": "127.0.0.1",
        "http_port": http_port,
        "grpc_port": grpc_port,
        "metrics_port": metrics_port,
        "parallel_workers": PARALLEL_WORKERS,
        "metrics_dir": str(folder / ".metrics"),
        "environments_dir": str(folder / ".envs"),
    }


def write_repository(folder: Path, artifacts: dict[str, Path], ports: tuple[int, int, int]) -> None:
    """A model repository: settings.json and one folder per model with its model-settings.json."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "settings.json").write_text(json.dumps(server_settings(folder, *ports), indent=2))
    for name, artifact in artifacts.items():
        (folder / name).mkdir(exist_ok=True)
        settings = model_settings(name, artifact)
        (folder / name / "model-settings.json").write_text(json.dumps(settings, indent=2))


def command(folder: Path, venv: Path = VENV) -> list[str]:
    return [str(venv / "bin" / "mlserver"), "start", str(folder)]


def infer_body(row: list[float]) -> bytes:
    """One row as a V2 infer request asking for the class and the probabilities."""
    tensor = {"name": "input-0", "shape": [1, len(row)], "datatype": "FP64", "data": row}
    outputs = [{"name": "predict"}, {"name": "predict_proba"}]
    return json.dumps({"inputs": [tensor], "outputs": outputs}).encode()
