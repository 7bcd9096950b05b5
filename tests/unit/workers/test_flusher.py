"""workers/flusher.py: a tick moves every model's log and labels to the store, draws the
live quality of the versions that got labels, and leaves a model another flusher holds."""

from __future__ import annotations

import fakeredis

from core.datasets import FlushLock, read_feedback
from core.prediction_log import index_key, job_member
from core.quality import read_history
from core.settings import get_settings
from core.store import open_store
from tests.factories import label_prediction, log_prediction
from training.cards import card_path
from training.pipeline import run_training
from workers.flusher import Flusher

SETOSA = [5.1, 3.5, 1.4, 0.2]


def test_a_tick_flushes_and_draws_the_live_quality_of_the_labelled_version():
    settings = get_settings()
    run_training(settings)
    client = fakeredis.FakeRedis()
    for i in range(4):
        log_prediction(client, f"j{i}", [SETOSA], ["setosa"])
    label_prediction(client, "j0", "setosa")
    label_prediction(client, "j1", "versicolor")
    flusher = Flusher(settings, client)
    assert flusher.models() == ["iris"]
    assert flusher.flush("iris") == {"predictions": 4, "labels": 2}
    store = open_store(settings)
    assert [e["job"] for e in read_feedback(store)] == ["j0", "j1"]
    [point] = read_history(store, 1)
    assert point["labelled"] == 2 and point["accuracy"] == 0.5
    page = card_path(store, 1).read_text()
    assert "Live quality" in page and "0.5000" in page and "<polyline" not in page  # one point
    label_prediction(client, "j2", "setosa")
    flusher.tick()
    assert [p["labelled"] for p in read_history(store, 1)] == [2, 3]
    assert "<polyline" in card_path(store, 1).read_text()


def test_no_new_labels_no_new_point():
    settings = get_settings()
    run_training(settings)
    client = fakeredis.FakeRedis()
    log_prediction(client, "j0", [SETOSA], ["setosa"])
    flusher = Flusher(settings, client)
    flusher.tick()
    assert read_history(open_store(settings), 1) == []


def test_a_model_another_flusher_holds_is_left_alone():
    client = fakeredis.FakeRedis()
    log_prediction(client, "j0", [SETOSA], ["setosa"])
    with FlushLock(client, "iris").held():
        assert Flusher(get_settings(), client).flush("iris") is None
    assert Flusher(get_settings(), client).flush("iris") == {"predictions": 1, "labels": 0}


def test_between_flushes_it_indexes_the_new_entries_of_the_models_it_knows():
    """For feedback: the workers' hot path does not index the log (core/prediction_log.py)."""
    client = fakeredis.FakeRedis()
    flusher = Flusher(get_settings(), client)
    log_prediction(client, "j0", [SETOSA], ["setosa"])
    flusher.index()  # no flush yet: it knows no model
    assert client.zcard(index_key("iris")) == 0
    flusher.known = flusher.models()
    flusher.index()
    assert client.zscore(index_key("iris"), job_member("j0")) is not None
