"""training/trainers/tabular.py: the CSV trainer reads a file and names each mistake in it."""

from __future__ import annotations

import pytest

from core.errors import TrainingError
from core.settings import get_settings
from training.errors import (
    DataFileNotFound,
    EmptyDataset,
    MalformedData,
    NonNumericFeature,
    UnknownColumn,
)
from training.trainers.tabular import CsvTrainer


def write_csv(tmp_path, text: str, name: str = "data.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_training_csv_reads_shipped_penguins():
    data = CsvTrainer.from_settings(get_settings().model()).load_data()
    assert data.feature_names == [
        "bill_length_mm",
        "bill_depth_mm",
        "flipper_length_mm",
        "body_mass_g",
    ]
    assert 60 <= data.n_rows <= 150
    assert sorted(set(data.y)) == ["Adelie", "Chinstrap", "Gentoo"]


def test_training_csv_selected_features_and_fingerprint_follows_rows(tmp_path):
    one = write_csv(tmp_path, "a,b,c,t\n1,2,3,x\n4,5,6,y\n", "one.csv")
    two = write_csv(tmp_path, "a,b,c,t\r\n1.0,2,3,x\r\n4,5,6,y\r\n", "two.csv")
    three = write_csv(tmp_path, "a,b,c,t\n1,2,3,x\n4,5,7,y\n", "three.csv")
    data = CsvTrainer(path=str(one), target="t", features=["c", "a"]).load_data()
    assert data.feature_names == ["c", "a"]
    assert data.X.tolist() == [[3.0, 1.0], [6.0, 4.0]]
    assert list(data.y) == ["x", "y"]
    fp = {p: CsvTrainer(path=str(p), target="t").load_data().fingerprint for p in (one, two, three)}
    assert fp[one] == fp[two] != fp[three]


@pytest.mark.parametrize(
    ("text", "kwargs", "error", "message"),
    [
        ("", {}, EmptyDataset, "is empty"),
        ("a,b,t\n", {}, EmptyDataset, "no data rows"),
        ("a,b,t\n1,2,x\n", {"target": "kind"}, UnknownColumn, "target column 'kind'"),
        ("a,b,t\n1,2,x\n", {"features": ["a", "zz"]}, UnknownColumn, "'zz'"),
        ("a,b,t\n1,2,x\n3,abc,y\n", {}, NonNumericFeature, "'b'.*'abc'.*row 2 \\(line 3\\)"),
        ("a,b,t\n1,,x\n", {}, NonNumericFeature, "'b'.*row 1"),
        ("a,b,t\n1,nan,x\n", {}, NonNumericFeature, "'b'"),
        ("a,b,t\n1,2\n", {}, MalformedData, "2 fields"),
        ("a,b,t\n1,2, \n", {}, MalformedData, "empty target"),
        ("t\nx\n", {}, EmptyDataset, "no feature columns"),
    ],
)
def test_training_csv_user_mistakes(tmp_path, text, kwargs, error, message):
    path = write_csv(tmp_path, text)
    trainer = CsvTrainer(path=str(path), **{"target": "t", **kwargs})
    with pytest.raises(error, match=message) as info:
        trainer.load_data()
    assert isinstance(info.value, TrainingError)


def test_training_csv_missing_file(tmp_path):
    with pytest.raises(DataFileNotFound, match=r"nope\.csv"):
        CsvTrainer(path=str(tmp_path / "nope.csv"), target="t").load_data()


def test_training_csv_relative_path_is_resolved_against_project():
    data = CsvTrainer(path="tests/data/penguins_small.csv", target="species").load_data()
    assert data.source.endswith("tests/data/penguins_small.csv")
