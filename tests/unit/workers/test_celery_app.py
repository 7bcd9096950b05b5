"""Workers on the solo and threads pools serve from the main process: it must start serving."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from celery import signals
from celery.concurrency import prefork, solo, thread

from core.settings import SettingsError
from tests.factories import settings_with
from workers import celery_app, pool


@pytest.mark.parametrize(
    ("pool_cls", "starts"),
    [
        (solo.TaskPool, True),
        (thread.TaskPool, True),
        (prefork.TaskPool, False),
        (pool.TaskPool, False),
    ],
)
def test_inline_pools_start_the_runtime_in_the_main_process(monkeypatch, pool_cls, starts):
    started = []
    monkeypatch.setattr(celery_app, "_start_child", lambda **_: started.append(True))
    pool = pool_cls.__new__(pool_cls)  # the class is what matters, not a running pool
    celery_app._start_inline_pool(SimpleNamespace(pool=pool))
    assert started == ([True] if starts else [])


@pytest.mark.parametrize("at_home", [True, False])
def test_our_pool_loads_the_models_in_the_main_process_when_it_serves_at_home(monkeypatch, at_home):
    started: list[bool] = []
    monkeypatch.setattr(celery_app, "_start_child", lambda report=True: started.append(report))
    task_pool = pool.TaskPool.__new__(pool.TaskPool)
    task_pool.runs_at_home = at_home
    celery_app._start_inline_pool(SimpleNamespace(pool=task_pool))
    assert started == ([False] if at_home else [])  # loads its models, reports no heartbeat


def test_worker_and_beat_start_up_check_every_model_trainer(monkeypatch):
    assert (signals.celeryd_init, celery_app._check_trainers) in celery_app.SIGNAL_HANDLERS
    assert (signals.beat_init, celery_app._check_trainers) in celery_app.SIGNAL_HANDLERS
    celery_app.create_app(settings_with(monkeypatch, MODELS__PENGUINS__TRAINER="csv"))
    celery_app._check_trainers()
    celery_app.create_app(settings_with(monkeypatch, MODELS__PENGUINS__TRAINER="nope"))
    with pytest.raises(SettingsError, match=r"models\.penguins\.trainer: unknown trainer 'nope'"):
        celery_app._check_trainers()
