"""celery_message writes the envelope Celery itself would: compared with Celery's own."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import orjson
import pytest
from celery import Celery
from kombu import Connection

from core.messages import (
    HEAD_BYTES,
    PREDICT_QUEUE,
    PREDICT_TASK,
    RETRAIN_TASK,
    TRAIN_QUEUE,
    celery_message,
    waited,
)
from tests.factories import decode_message, predict_job

JOBS = [predict_job("j1", features=["a", "b", "c", "d"])]
EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


@pytest.fixture
def celery_envelope() -> dict:
    """The message Celery + kombu produce for the same task, read back from memory://."""
    app = Celery("reference", broker="memory://")
    app.conf.update(task_serializer="json", accept_content=["json"])
    with app.connection_for_write() as connection:
        app.send_task(
            PREDICT_TASK, args=[JOBS], queue=PREDICT_QUEUE, task_id="ref", connection=connection
        )
        return connection.default_channel._get(PREDICT_QUEUE)


def test_the_body_is_args_kwargs_embed():
    task_id, payload = celery_message(PREDICT_TASK, [JOBS], queue=PREDICT_QUEUE)
    envelope, body = decode_message(payload)
    assert body == [[JOBS], {}, EMBED]
    assert envelope["content-type"] == "application/json"
    assert envelope["content-encoding"] == "utf-8"
    assert envelope["headers"]["task"] == PREDICT_TASK
    assert envelope["headers"]["id"] == task_id == envelope["headers"]["root_id"]
    assert envelope["properties"]["correlation_id"] == task_id
    assert envelope["properties"]["delivery_info"] == {"exchange": "", "routing_key": "predict"}


def test_a_given_task_id_and_kwargs_are_kept():
    task_id, payload = celery_message(
        RETRAIN_TASK, [], queue=TRAIN_QUEUE, task_id="fixed", kwargs={"x": 1}
    )
    envelope, body = decode_message(payload)
    assert task_id == "fixed" == envelope["headers"]["id"]
    assert body[:2] == [[], {"x": 1}]
    assert envelope["properties"]["delivery_info"]["routing_key"] == TRAIN_QUEUE


def test_expiry_is_an_iso_time_in_the_future():
    _, payload = celery_message(PREDICT_TASK, [JOBS], queue=PREDICT_QUEUE, expires_in=60)
    expires = datetime.fromisoformat(json.loads(payload)["headers"]["expires"])
    assert 0 < (expires - datetime.now(UTC)).total_seconds() <= 60
    _, payload = celery_message(PREDICT_TASK, [JOBS], queue=PREDICT_QUEUE)
    assert json.loads(payload)["headers"]["expires"] is None


def test_each_message_has_its_own_ids():
    first = json.loads(celery_message(PREDICT_TASK, [JOBS], queue=PREDICT_QUEUE)[1])
    second = json.loads(celery_message(PREDICT_TASK, [JOBS], queue=PREDICT_QUEUE)[1])
    assert first["headers"]["id"] != second["headers"]["id"]
    assert first["properties"]["delivery_tag"] != second["properties"]["delivery_tag"]


def test_the_envelope_has_celerys_keys(celery_envelope):
    _, payload = celery_message(PREDICT_TASK, [JOBS], queue=PREDICT_QUEUE)
    ours = json.loads(payload)
    assert ours.keys() == celery_envelope.keys()
    assert ours["headers"].keys() - {"sent_at"} == celery_envelope["headers"].keys()
    # kombu's Redis transport base64-encodes bodies; ours is JSON text (core/messages.py)
    assert ours["properties"].keys() == celery_envelope["properties"].keys() - {"body_encoding"}
    assert (
        ours["properties"]["delivery_info"].keys()
        == celery_envelope["properties"]["delivery_info"].keys()
    )


def test_the_body_and_routing_match_celerys(celery_envelope):
    _, payload = celery_message(PREDICT_TASK, [JOBS], queue=PREDICT_QUEUE, task_id="ref")
    ours = json.loads(payload)
    assert json.loads(ours["body"]) == json.loads(base64.b64decode(celery_envelope["body"]))
    for part, key in [
        ("headers", "task"),
        ("headers", "id"),
        ("headers", "root_id"),
        ("headers", "lang"),
        ("properties", "delivery_info"),
        ("properties", "delivery_mode"),
    ]:
        assert ours[part][key] == celery_envelope[part][key], key
    for key in ("content-type", "content-encoding"):
        assert ours[key] == celery_envelope[key]


def test_kombu_reads_the_body_as_json_text_as_it_is():
    """No ``body_encoding``: kombu's virtual transports (Redis's among them) pass the body
    through to the JSON decoder as it is."""
    _, payload = celery_message(PREDICT_TASK, [JOBS], queue=PREDICT_QUEUE)
    with Connection("memory://") as connection:
        channel = connection.default_channel
        message = channel.Message(orjson.loads(payload), channel=channel)
        assert message.decode() == [[JOBS], {}, EMBED]


def test_the_first_bytes_say_how_long_a_message_has_waited():
    _, payload = celery_message(PREDICT_TASK, [JOBS * 500], queue=PREDICT_QUEUE)
    sent = json.loads(payload)["headers"]["sent_at"]
    assert waited(payload[:HEAD_BYTES], sent + 7.5) == pytest.approx(7.5)
    assert waited(payload, sent + 7.5) == pytest.approx(7.5)
    assert waited(payload.decode(), sent + 1) == pytest.approx(1)  # a str reply
    assert waited(payload, sent - 3) == 0  # a gateway whose clock is behind


@pytest.mark.parametrize(
    "message",
    [
        None,
        b"",
        b'{"body": "eyJ", "headers": {"lang": "py"}}',
        b'{"body": "' + b"x" * 200 + b'", "headers": {"sent_at":1}}',
    ],
    ids=["none", "empty", "not-ours", "sent_at-too-far"],
)
def test_no_message_or_no_sent_at_up_front_has_waited_nothing(message):
    assert waited(message, 1e9) == 0
