"""core/settings.py: no combination of settings can expire a job before its redelivery."""

from __future__ import annotations

import re

import pytest

from core.settings import SettingsError, redelivery_bound
from tests.factories import settings_with


def test_the_defaults_redeliver_within_twelve_seconds_and_run_long_tasks_once(monkeypatch):
    settings = settings_with(monkeypatch)
    assert redelivery_bound(settings) == 10 + 1 + 1.0
    # The old rule (visibility timeout > every time limit) is gone: a running task is renewed.
    assert settings.worker.visibility_timeout < settings.worker.retrain_time_limit


@pytest.mark.parametrize(
    ("env", "named"),
    [
        (
            {"WORKER__VISIBILITY_TIMEOUT": "2"},
            [
                r"worker\.visibility_timeout \(2s\) must be at least 3 x ",
                r"worker\.heartbeat_seconds \(1\.0s\)",
            ],
        ),
        (
            {"WORKER__HEARTBEAT_SECONDS": "4"},
            [r"worker\.visibility_timeout \(10s\)", r"worker\.heartbeat_seconds \(4s\)"],
        ),
        (
            {"API__SYNC_GRACE_SECONDS": "11.5"},
            [
                r"api\.sync_grace_seconds \(11\.5s\) must be at least the redelivery bound",
                r"worker\.visibility_timeout \+ restore sweep \+ worker\.heartbeat_seconds",
                r"\(10 \+ 1 \+ 1\.0 = 12s\)",
            ],
        ),
        (
            {"WORKER__VISIBILITY_TIMEOUT": "40"},  # the default grace (30 s) is now too short
            [r"api\.sync_grace_seconds \(30s\)", r"\(40 \+ 1 \+ 1\.0 = 42s\)"],
        ),
        (
            {"API__JOBS_TTL_SECONDS": "102"},
            [
                r"api\.jobs_ttl_seconds \(102s\) must exceed api\.max_wait_seconds \+ ",
                r"api\.sync_grace_seconds \+ worker\.predict_time_limit \+ the redelivery bound",
                r"\(30\.0 \+ 30 \+ 30 \+ 12 = 102s\)",
            ],
        ),
        (
            {"WORKER__PREDICT_TIME_LIMIT": "3600"},
            [r"api\.jobs_ttl_seconds \(3600s\)", r"\+ 3600 \+ 12 = 3672s"],
        ),
    ],
    ids=["visibility-vs-heartbeat", "slow-heartbeat", "grace", "long-visibility", "ttl", "limit"],
)
def test_each_refused_combination_names_its_keys_and_numbers(monkeypatch, env, named):
    with pytest.raises(SettingsError) as refused:
        settings_with(monkeypatch, **env)
    message = str(refused.value)
    assert message.startswith("invalid settings: ")
    for pattern in named:
        assert re.search(pattern, message), (pattern, message)


def test_every_problem_is_reported_at_once(monkeypatch):
    with pytest.raises(SettingsError) as refused:
        settings_with(monkeypatch, WORKER__VISIBILITY_TIMEOUT="2", API__SYNC_GRACE_SECONDS="0")
    message = str(refused.value)
    assert "worker.visibility_timeout (2s)" in message
    assert "api.sync_grace_seconds (0s)" in message


def test_the_smallest_legal_settings_are_accepted(monkeypatch):
    """visibility = 3 x heartbeat, grace = the bound, TTL just above its sum: all allowed."""
    settings = settings_with(
        monkeypatch,
        WORKER__HEARTBEAT_SECONDS="0.5",
        WORKER__VISIBILITY_TIMEOUT="2",
        API__SYNC_GRACE_SECONDS="3.5",
        API__MAX_WAIT_SECONDS="1",
        WORKER__PREDICT_TIME_LIMIT="1",
        API__JOBS_TTL_SECONDS="10",
        API__IDEMPOTENCY_WINDOW_SECONDS="10",  # a key must not outlive its job
    )
    assert redelivery_bound(settings) == 3.5


def test_an_idempotency_key_may_not_outlive_the_job_it_names(monkeypatch):
    with pytest.raises(SettingsError) as refused:
        settings_with(monkeypatch, API__IDEMPOTENCY_WINDOW_SECONDS="3601")
    assert "api.idempotency_window_seconds (3601)" in str(refused.value)
    assert "api.jobs_ttl_seconds (3600)" in str(refused.value)
