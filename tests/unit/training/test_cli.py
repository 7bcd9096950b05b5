"""``python -m training`` in real subprocesses: happy path and every user mistake.

A mistake must end with exactly one ``error: ...`` line on stderr, exit status 2, no
traceback, and an untouched store (same versions, same aliases file bytes). Each process
pays for importing scikit-learn, so the mistake cases run concurrently, each on its own
copy of a prepared store.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import joblib
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from core.settings import ROOT, get_settings, reset_settings
from core.store import open_store
from tests import attacker
from tests.factories import service_env, store_at
from training.pipeline import run_training


def cli_env(artifacts: Path | None = None, **env: str) -> dict[str, str]:
    return service_env(
        # No shared Redis in unit tests: `train` then runs without the single-flight lock, and
        # its warning about that stays out of the one-line error these tests check.
        "redis://127.0.0.1:1/0",
        artifacts or os.environ["MLOPS_ARTIFACTS_DIR"],
        MLOPS_LOGGING__LEVEL="ERROR",
        **{f"MLOPS_{k}": v for k, v in env.items()},
    )


def start(*args: str, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "training", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def cli(*args: str, **env: str) -> subprocess.CompletedProcess:
    proc = start(*args, env=cli_env(**env))
    out, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def snapshot(root: Path, model: str = "iris") -> tuple[list[int], bytes | None]:
    aliases = root / model / "aliases.json"
    versions = store_at(root, model).versions()
    return versions, aliases.read_bytes() if aliases.exists() else None


# -- happy path -----------------------------------------------------------------------------
def test_cli_happy_path():
    first = cli("train")
    assert first.returncode == 0, first.stderr
    assert "iris v1 promoted" in first.stdout
    assert "fitting" not in first.stderr  # stderr is a pipe here: no progress unless asked
    run_training(get_settings(), force=True)  # v2, in-process: one subprocess train is proof enough
    listing = cli("list")
    assert listing.returncode == 0
    header, *rows, legend = listing.stdout.splitlines()
    assert len(rows) == 2 and rows[0].startswith("  1") and rows[1].startswith("* 2")
    assert legend == "* = production"
    for column, cell in (("GATE", "promoted"), ("TRAINER", "iris"), ("ROWS", "120 / 30")):
        assert {row.index(cell) for row in rows} == {header.index(column)}, listing.stdout
    rollback = cli("rollback")
    assert rollback.returncode == 0 and "production: v1 (was v2)" in rollback.stdout
    assert open_store(get_settings()).production_version() == 1
    promote = cli("promote", "2")
    assert promote.returncode == 0 and "production: v2 (was v1)" in promote.stdout
    assert open_store(get_settings()).production_version() == 2
    card = cli("card", "1")
    assert card.returncode == 0
    path = Path(card.stdout.strip())
    assert path.name == "card.html" and "iris v1" in path.read_text()


def test_cli_train_twice_on_the_same_data_says_nothing_new_to_learn():
    assert cli("train").returncode == 0
    again = cli("train")
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith("iris skipped: nothing new to learn: v1 (production)")
    assert open_store(get_settings()).versions() == [1]
    forced = cli("train", "--force")
    assert forced.stdout.startswith("iris v2 promoted")


def test_cli_train_with_progress_shows_each_step_on_stderr():
    trained = cli("train", "--progress")
    assert trained.returncode == 0, trained.stderr
    steps = [line for line in trained.stderr.splitlines() if line.startswith("[")]
    assert steps[0].startswith("[  5%") and steps[0].endswith("] loading data: trainer iris")
    assert steps[1].endswith(
        "] splitting: 150 rows, 4 features, 3 classes from sklearn.datasets.load_iris"
    )
    assert steps[2].endswith("] fitting: LogisticRegression on 120 rows")
    assert steps[-1].startswith("[100%") and steps[-1].endswith("] done: v1 promoted")
    assert trained.stdout.startswith("iris v1 promoted")  # stdout: the one result line


def test_cli_sign_vouches_for_versions_registered_before_signing(signing_keys):
    """An upgraded store: its versions have no signature until someone with the key signs them."""
    assert cli("train").returncode == 0
    root = Path(os.environ["MLOPS_ARTIFACTS_DIR"])
    unsign(root, 1)
    refused = cli("promote", "1")
    assert refused.returncode == 2 and "is not signed" in refused.stderr
    signed = cli("sign", "--all")
    assert signed.returncode == 0, signed.stderr
    assert signed.stdout.strip() == f"iris v1 signed by key {signing_keys.signing_key_id}"
    assert cli("promote", "1").returncode == 0


def test_cli_keygen_prints_a_pair_that_signs_and_verifies(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "training", "keygen"],
        cwd=ROOT,
        env={"PATH": os.environ["PATH"], "MLOPS_ENV": "production"},  # no key yet: still works
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    variables = dict(line.split("=", 1) for line in result.stdout.splitlines())
    assert set(variables) == {"MLOPS_SIGNING__PRIVATE_KEY", "MLOPS_SIGNING__PUBLIC_KEYS"}
    trained = cli("train", SIGNING__PRIVATE_KEY=variables["MLOPS_SIGNING__PRIVATE_KEY"])
    assert trained.returncode == 0, trained.stderr
    public_only = {
        "SIGNING__PRIVATE_KEY": "",
        "SIGNING__PUBLIC_KEYS": variables["MLOPS_SIGNING__PUBLIC_KEYS"].strip("'"),
    }
    assert cli("promote", "1", **public_only).returncode == 0
    assert cli("promote", "1").returncode == 2  # the session's key does not know this one


def test_cli_list_empty_store():
    result = cli("list")
    assert result.returncode == 0 and "no versions" in result.stdout


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["train"],
        ["register"],
        ["list"],
        ["promote"],
        ["rollback"],
        ["card"],
        ["sign"],
        ["keygen"],
    ],
)
def test_cli_help(command):
    result = cli(*command, "--help")
    assert result.returncode == 0
    assert result.stdout.startswith("usage: python -m training")


# -- user mistakes, run concurrently ----------------------------------------------------------
def tamper(root: Path) -> None:
    attacker.tamper(root / "iris" / "2" / "model.joblib")


def corrupt_metadata(root: Path) -> None:
    (root / "iris" / "2" / "metadata.json").write_text("{not json")


def unsign(root: Path, version: int = 2) -> None:
    path = root / "iris" / str(version) / "metadata.json"
    meta = json.loads(path.read_text())
    del meta["signature"]
    path.write_text(json.dumps(meta))


def drop_history(root: Path) -> None:
    (root / "iris" / "aliases.json").write_text('{"production": 1, "history": []}')


@dataclass
class Case:
    args: list[str]
    contains: str
    env: dict[str, str] = field(default_factory=dict)
    prepare: Callable[[Path], None] | None = None


CSV = ["train", "--trainer", "csv"]
PENGUINS = ROOT / "tests" / "data" / "penguins_small.csv"
PENGUIN_FEATURES = "bill_length_mm,bill_depth_mm,flipper_length_mm,body_mass_g"
REGISTER = ["register", "--model", "iris", "--features", PENGUIN_FEATURES]
CASES = {
    "unknown trainer option": Case(["train", "--trainer", "nope"], "unknown trainer 'nope'"),
    "unknown trainer setting": Case(
        ["train"], "known trainers: csv, iris", {"TRAINING__TRAINER": "nope"}
    ),
    "missing data file": Case(
        CSV, "data file not found", {"TRAINING__CSV__PATH": "{data}/missing.csv"}
    ),
    "bad target column": Case(CSV, "target column 'kind'", {"TRAINING__CSV__TARGET": "kind"}),
    "non-numeric feature": Case(
        CSV,
        "column 'a' has a non-numeric value 'hello' in row 2",
        {"TRAINING__CSV__PATH": "{data}/text.csv"},
    ),
    "empty data set": Case(CSV, "is empty", {"TRAINING__CSV__PATH": "{data}/empty.csv"}),
    "one class": Case(CSV, "at least 2 classes", {"TRAINING__CSV__PATH": "{data}/one.csv"}),
    "estimator not allowed": Case(
        ["train"], "not allowed", {"TRAINING__ESTIMATOR__CLASS_PATH": "os.system"}
    ),
    "invalid setting": Case(["list"], "training.test_size", {"TRAINING__TEST_SIZE": "2.0"}),
    "promote unknown version": Case(["promote", "7"], "no version 7"),
    "card unknown version": Case(["card", "7"], "no version 7"),
    "promote tampered artifact": Case(["promote", "2"], "sha256", prepare=tamper),
    "promote corrupt metadata": Case(
        ["promote", "2"], "corrupt metadata", prepare=corrupt_metadata
    ),
    "rollback without previous": Case(
        ["rollback"], "no previous production version", prepare=drop_history
    ),
    "promote unsigned version": Case(["promote", "2"], "iris v2 is not signed", prepare=unsign),
    "train without a private key": Case(["train"], "no private key", {"SIGNING__PRIVATE_KEY": ""}),
    "sign without a private key": Case(
        ["sign", "--all"], "no private key", {"SIGNING__PRIVATE_KEY": ""}
    ),
    "sign tampered artifact": Case(
        ["sign", "2"], "does not match its recorded sha256; not signing it", prepare=tamper
    ),
    "unknown trainer of another model": Case(
        ["list"],
        "models.penguins.trainer: unknown trainer 'nope' (known trainers: csv, iris)",
        {"MODELS__PENGUINS__TRAINER": "nope"},
    ),
    "register missing file": Case([*REGISTER, "{data}/none.joblib"], "none.joblib does not exist"),
    "register unfitted": Case([*REGISTER, "{data}/unfitted.joblib"], "is not fitted"),
    "register feature count": Case(
        [*REGISTER[:-1], "a,b", "{data}/fitted.joblib"], "2 features given (a, b)"
    ),
    "register eval lacks column": Case(
        [*REGISTER, "{data}/fitted.joblib", "--eval", str(PENGUINS), "--target", "kind"],
        "lacks column(s) kind",
    ),
}


@pytest.fixture(scope="module")
def mistakes(tmp_path_factory):
    """Run every case at once; return {case: (result, store before, store after)}."""
    base = tmp_path_factory.mktemp("cli-base")
    data = tmp_path_factory.mktemp("cli-data")
    (data / "text.csv").write_text("a,species\n1,x\nhello,y\n")
    (data / "empty.csv").write_text("")
    (data / "one.csv").write_text("a,species\n1,x\n2,x\n3,x\n")
    joblib.dump(penguin_pipeline(), data / "fitted.joblib")
    joblib.dump(make_pipeline(StandardScaler(), LogisticRegression()), data / "unfitted.joblib")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLOPS_ENV", "testing")
        mp.setenv("MLOPS_ARTIFACTS_DIR", str(base))
        reset_settings()
        run_training(get_settings(), force=True)  # v1: production
        mp.setenv("MLOPS_TRAINING__PROMOTION_MARGIN", "0.9")
        reset_settings()
        assert not run_training(get_settings(), force=True).promoted  # v2: rejected by the gate
    reset_settings()
    runs = {}
    for name, case in CASES.items():
        root = tmp_path_factory.mktemp("cli-case") / "artifacts"
        shutil.copytree(base, root)
        if case.prepare:
            case.prepare(root)
        env = {k: v.replace("{data}", str(data)) for k, v in case.env.items()}
        args = [arg.replace("{data}", str(data)) for arg in case.args]
        runs[name] = (root, snapshot(root), start(*args, env=cli_env(root, **env)))
    results = {}
    for name, (root, before, proc) in runs.items():
        out, err = proc.communicate(timeout=180)
        result = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
        results[name] = (result, before, snapshot(root))
    return results


@pytest.mark.parametrize("name", list(CASES))
def test_cli_user_mistake(mistakes, name):
    result, before, after = mistakes[name]
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and CASES[name].contains in lines[0], lines[0]
    assert after == before
    assert before[1] is not None  # there was a production alias to protect


def test_cli_trainer_option_overrides_settings():
    result = cli("train", "--trainer", "csv", DEFAULT_MODEL="penguins")
    assert result.returncode == 0, result.stderr
    assert "penguins v1 promoted" in result.stdout


def penguin_pipeline():
    """StandardScaler + LogisticRegression fitted on the penguins CSV, as a notebook would."""
    from training.trainers.tabular import CsvTrainer

    data = CsvTrainer(path=str(PENGUINS), target="species").load_data()
    return make_pipeline(StandardScaler(), LogisticRegression()).fit(data.X, data.y)


def test_cli_register_then_manage_the_model_with_the_model_option(tmp_path):
    path = tmp_path / "mine.joblib"
    joblib.dump(penguin_pipeline(), path)
    first = cli("register", str(path), "--model", "mine", "--features", PENGUIN_FEATURES)
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == "mine v1 promoted: first version: no production model to beat"
    gated = cli(
        *["register", str(path), "--model", "mine", "--features", PENGUIN_FEATURES],
        *["--eval", str(PENGUINS), "--target", "species"],
    )
    assert gated.returncode == 0 and "mine v2 promoted: accuracy" in gated.stdout, gated.stderr
    listing = cli("list", "--model", "mine")
    assert "* 2" in listing.stdout and "registered" in listing.stdout
    assert cli("rollback", "--model", "mine").returncode == 0
    assert open_store(get_settings(), "mine").production_version() == 1
    assert open_store(get_settings()).versions() == []  # the default model is untouched


@pytest.mark.parametrize("command", [["list"], ["register", "model.joblib"]])
def test_cli_model_option_refuses_what_is_not_a_model_name(command, tmp_path):
    result = cli(*command, "--model", "../escape")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "'../escape' is not a model name" in result.stderr
    assert not (tmp_path / "escape").exists()
