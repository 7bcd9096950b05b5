"""The @register_trainer decorator and lookups."""

from __future__ import annotations

import pytest

from core.errors import TrainingError, UnknownTrainer
from core.settings import SettingsError
from tests.factories import settings_with
from training.base import Trainer
from training.registry import (
    available_trainers,
    check_trainers,
    get_trainer,
    register_trainer,
    unregister_trainer,
)
from training.trainers.iris import IrisTrainer


@pytest.fixture
def scratch_name():
    name = "scratch-test-trainer"
    yield name
    unregister_trainer(name)


def test_training_builtin_trainers_are_registered():
    assert {"iris", "csv"} <= set(available_trainers())
    assert get_trainer("iris") is IrisTrainer
    assert IrisTrainer.name == "iris"


def test_training_register_new_trainer_is_one_class(scratch_name):
    @register_trainer(scratch_name)
    class Scratch(IrisTrainer):
        pass

    assert get_trainer(scratch_name) is Scratch
    assert Scratch.name == scratch_name
    assert scratch_name in available_trainers()
    assert issubclass(Scratch, Trainer)


def test_training_duplicate_name_is_an_error(scratch_name):
    @register_trainer(scratch_name)
    class First(IrisTrainer):
        pass

    with pytest.raises(ValueError, match="already registered"):

        @register_trainer(scratch_name)
        class Second(IrisTrainer):
            pass

    assert get_trainer(scratch_name) is First


def test_training_unknown_name_lists_known_ones():
    with pytest.raises(UnknownTrainer, match=r"unknown trainer 'nope'.*csv, iris") as info:
        get_trainer("nope")
    assert isinstance(info.value, TrainingError)
    assert info.value.status_code == 422


def test_training_check_trainers_names_the_model_with_an_unknown_trainer(monkeypatch):
    check_trainers(settings_with(monkeypatch, MODELS__PENGUINS__TRAINER="csv"))
    settings = settings_with(monkeypatch, MODELS__PENGUINS__TRAINER="nope")
    with pytest.raises(SettingsError) as raised:
        check_trainers(settings)
    assert str(raised.value.code) == (
        "invalid settings: models.penguins.trainer: unknown trainer 'nope' "
        "(known trainers: csv, iris)"
    )
