"""The predict task's request (workers/request.py): the pool process is sent the message's body
and no decoded copy of its arguments, which the main process keeps."""

from __future__ import annotations

import base64
import pickle

import orjson
from celery.app.trace import trace_task_ret
from kombu.transport.virtual import Message
from kombu.utils.imports import symbol_by_name

from core.messages import PREDICT_QUEUE, PREDICT_TASK, celery_message
from workers.celery_app import create_app
from workers.request import Request


class _Channel:
    """What a kombu message reads of its channel."""

    def __init__(self):
        self.connection = type("Connection", (), {"client": type("Client", (), {})()})()
        self.accept = {"application/json"}

    def decode_body(self, body, encoding=None):
        return base64.b64decode(body) if encoding == "base64" else body


def _received(app, jobs: list[dict]) -> Request:
    """The request the worker's main process makes of a message the gateway queued."""
    _, payload = celery_message(PREDICT_TASK, [jobs], queue=PREDICT_QUEUE, model="iris")
    message = Message(orjson.loads(payload), channel=_Channel())
    task = app.tasks[PREDICT_TASK]
    return symbol_by_name(task.Request)(message, app=app, task=task, hostname="node@test")


def test_the_pool_gets_the_body_and_not_a_decoded_copy_of_the_arguments():
    app = create_app()
    assert app.tasks[PREDICT_TASK].Request == "workers.request:Request"
    jobs = [{"job_id": "j1", "model": "iris", "rows": [[5.1, 3.5, 1.4, 0.2]] * 1000}]
    request = _received(app, jobs)
    sent = request.request_dict
    assert "args" not in sent and "kwargs" not in sent
    assert sent["id"] == request.id and sent["task"] == PREDICT_TASK
    # The main process keeps the arguments: `celery inspect`, and failing a killed task's jobs.
    assert request.args == [jobs]
    # The hand-off to the pool process is the body plus a small dict, not the rows twice.
    handed = (PREDICT_TASK, request.id, sent, request.body, "application/json", "utf-8")
    assert len(pickle.dumps(handed)) < 1.2 * len(request.body)


def test_the_pool_process_runs_the_task_with_the_arguments_it_decodes(monkeypatch):
    """Celery's own trace in the pool process fills the arguments in from the body."""
    app = create_app()
    jobs = [{"job_id": "j1", "model": "iris", "rows": [[5.1, 3.5, 1.4, 0.2]]}]
    request = _received(app, jobs)
    seen = []
    monkeypatch.setattr(
        app.tasks[PREDICT_TASK], "run", lambda received: seen.append(received) or {"jobs": 1}
    )
    trace_task_ret(
        PREDICT_TASK,
        request.id,
        request.request_dict,
        request.body,
        request.content_type,
        request.content_encoding,
        app=app,
    )
    assert seen == [jobs]
