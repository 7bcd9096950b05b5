"""app/services/feedback.py on fakeredis: the join of labels to logged predictions, repeats,
conflicts, unknown ids, labels against classes, the pending cap, and the body's shapes."""

from __future__ import annotations

from types import SimpleNamespace

import fakeredis
import orjson
import pytest
from fastapi.exceptions import RequestValidationError

from app.auth import Principal
from app.errors import TooManyRequests
from app.services.feedback import (
    FeedbackNotFound,
    LabelConflict,
    check_size,
    live_quality,
    parse_items,
    record_feedback,
)
from core.feedback import count_key, labels_key, read_pending, trained_key, window_key
from core.prediction_log import (
    append,
    index_key,
    index_new,
    job_member,
    labelled_key,
    trim_index,
)
from tests.factories import run

CLASSES = ["setosa", "versicolor", "virginica"]
ALICE = Principal("alice", frozenset({"predict"}), "alice-digest")
BOB = Principal("bob", frozenset({"predict"}), "bob-digest")
ADMIN = Principal("admin", frozenset({"admin"}), "admin-digest")


class Catalog:
    """The part of a ModelCatalog feedback reads: the name, each version's classes."""

    def __init__(self, classes=CLASSES, name="iris"):
        self.name = name
        self.classes = classes

    async def pinned(self, version):
        return SimpleNamespace(metadata=SimpleNamespace(classes=self.classes))


@pytest.fixture
def aio(redis_server):
    return fakeredis.FakeAsyncRedis(server=redis_server)


def log(redis_client, job, rows=((5.1, 3.5, 1.4, 0.2),), outputs=("setosa",), owner="alice-digest",
        request="", version=1):  # fmt: skip
    logged = (job, request, owner, [list(r) for r in rows], list(outputs))
    append(redis_client, "iris", version, 100.0, [logged], 1000)


def feedback(aio, body, who=ALICE, catalog=None, max_pending=100, window=50):
    items = parse_items(body, 1000)
    return run(
        record_feedback(
            aio, catalog or Catalog(), who, items, max_pending=max_pending, window=window,
            log_size=1000, retry_after=1,
        )
    )  # fmt: skip


def test_a_label_joins_its_logged_prediction(redis_client, aio):
    log(redis_client, "j1", request="r1")
    done = feedback(aio, {"job_id": "j1", "label": "versicolor"})
    assert done.body["recorded"] == 1 and done.body["repeats"] == 0
    assert done.body["items"] == [
        {"job_id": "j1", "request_id": "r1", "model_version": 1, "status": "recorded"}
    ]
    [labelled] = read_pending(redis_client, "iris", 10)
    assert labelled["job"] == "j1" and labelled["label"] == "versicolor"
    assert labelled["rows"] == [[5.1, 3.5, 1.4, 0.2]] and labelled["outputs"] == ["setosa"]
    assert labelled["version"] == 1
    # the live-quality window has the (prediction, label) pair
    assert redis_client.lrange(window_key("iris", 1), 0, -1) == [b'["setosa","versicolor"]']
    assert (done.count, done.trained) == (1, 0)


def test_a_label_sent_as_its_answer_arrives_finds_the_prediction_no_flusher_indexed(
    redis_client, aio
):
    """The hot path does not index the log; the feedback script indexes what is new first."""
    log(redis_client, "j1")
    assert redis_client.zcard(index_key("iris")) == 0
    assert feedback(aio, {"job_id": "j1", "label": "setosa"}).body["recorded"] == 1
    assert redis_client.zscore(index_key("iris"), job_member("j1")) is not None


def test_a_request_id_names_the_callers_latest_job_with_it(redis_client, aio):
    log(redis_client, "old", request="order-7")
    log(redis_client, "new", request="order-7")
    log(redis_client, "bobs", request="order-7", owner="bob-digest")
    done = feedback(aio, {"request_id": "order-7", "label": "setosa"})
    assert [item["job_id"] for item in done.body["items"]] == ["new"]
    bobs = feedback(aio, {"request_id": "order-7", "label": "setosa"}, who=BOB)
    assert [item["job_id"] for item in bobs.body["items"]] == ["bobs"]


def test_labels_for_several_jobs_of_one_logged_message_each_find_their_own(redis_client, aio):
    """A message's jobs share one log entry; each label joins its own job's rows and output,
    whether named by job id or request id (the reply carries the entry's fields once)."""
    jobs = [
        (f"j{i}", f"r{i}", "alice-digest", [[float(i), 3.5, 1.4, 0.2]], [f"c{i}"]) for i in range(3)
    ]
    append(redis_client, "iris", 1, 100.0, jobs, 1000)
    catalog = Catalog(classes=["c0", "c1", "c2", "x"])
    items = [
        {"job_id": "j2", "label": "x"},
        {"request_id": "r0", "label": "c0"},
        {"job_id": "j1", "label": "x"},
    ]
    done = feedback(aio, items, catalog=catalog)
    assert [item["job_id"] for item in done.body["items"]] == ["j2", "j0", "j1"]
    pending = {e["job"]: (e["rows"], e["outputs"]) for e in read_pending(redis_client, "iris", 9)}
    assert pending == {f"j{i}": ([[float(i), 3.5, 1.4, 0.2]], [f"c{i}"]) for i in range(3)}


def test_the_same_label_again_is_a_repeat_counted_once(redis_client, aio):
    log(redis_client, "j1")
    feedback(aio, {"job_id": "j1", "label": "setosa"})
    again = feedback(aio, [{"job_id": "j1", "label": "setosa"}])
    assert again.body["recorded"] == 0 and again.body["repeats"] == 1
    assert again.body["items"][0]["status"] == "repeat"
    assert redis_client.xlen(labels_key("iris")) == 1
    assert int(redis_client.get(count_key("iris"))) == 1
    assert redis_client.llen(window_key("iris", 1)) == 1


def test_a_repeat_within_one_request_is_counted_once(redis_client, aio):
    log(redis_client, "j1")
    done = feedback(aio, {"items": [{"job_id": "j1", "label": "setosa"}] * 2})
    assert [i["status"] for i in done.body["items"]] == ["recorded", "repeat"]
    assert redis_client.xlen(labels_key("iris")) == 1


def test_another_label_for_a_labelled_job_is_409_and_nothing_is_recorded(redis_client, aio):
    log(redis_client, "j1")
    log(redis_client, "j2")
    feedback(aio, {"job_id": "j1", "label": "setosa"})
    with pytest.raises(LabelConflict) as refused:
        feedback(aio, [{"job_id": "j2", "label": "setosa"}, {"job_id": "j1", "label": "virginica"}])
    assert "j1" in refused.value.message and "setosa" in refused.value.message
    assert redis_client.hget(labelled_key("iris"), "j2") is None  # all or nothing
    assert redis_client.xlen(labels_key("iris")) == 1


def test_unknown_ids_are_404_naming_them_and_nothing_is_recorded(redis_client, aio):
    log(redis_client, "j1")
    with pytest.raises(FeedbackNotFound) as missing:
        feedback(
            aio,
            [
                {"job_id": "j1", "label": "setosa"},
                {"job_id": "nope", "label": "setosa"},
                {"request_id": "never", "label": "setosa"},
            ],
        )
    assert missing.value.extra == {"missing": [{"job_id": "nope"}, {"request_id": "never"}]}
    assert "nope" in missing.value.message and "max_entries" in missing.value.message
    assert redis_client.xlen(labels_key("iris")) == 0


def test_another_keys_job_is_404_like_an_unknown_one_but_admins_may_label_it(redis_client, aio):
    log(redis_client, "j1", owner="alice-digest")
    with pytest.raises(FeedbackNotFound):
        feedback(aio, {"job_id": "j1", "label": "setosa"}, who=BOB)
    assert feedback(aio, {"job_id": "j1", "label": "setosa"}, who=ADMIN).body["recorded"] == 1


def test_a_prediction_trimmed_from_the_log_takes_no_feedback(redis_client, aio):
    for i in range(400):
        append(
            redis_client,
            "iris",
            1,
            100.0,
            [(f"j{i}", "", "alice-digest", [[1.0]], ["setosa"])],
            100,
        )
        if i % 10 == 0:
            index_new(redis_client, "iris")  # as the flusher does, while the log grows
    with pytest.raises(FeedbackNotFound):  # its index member is still there, its entry not
        feedback(aio, {"job_id": "j0", "label": "setosa"})
    assert trim_index(redis_client, "iris") > 0  # what the flusher does
    with pytest.raises(FeedbackNotFound):
        feedback(aio, {"job_id": "j0", "label": "setosa"})
    assert feedback(aio, {"job_id": "j399", "label": "setosa"}).body["recorded"] == 1


def errors_of(raised) -> list[tuple]:
    return [(tuple(e["loc"]), e["type"]) for e in raised.value.errors()]


def test_a_label_outside_the_classes_or_of_another_type_is_422_at_its_field(redis_client, aio):
    log(redis_client, "j1")
    log(redis_client, "j2")
    with pytest.raises(RequestValidationError) as refused:
        feedback(aio, {"items": [{"job_id": "j1", "label": "rose"}, {"job_id": "j2", "label": 1}]})
    assert errors_of(refused) == [
        (("body", "items", 0, "label"), "label_unknown"),
        (("body", "items", 1, "label"), "label_type"),  # a number: the classes are strings
    ]
    numbers = Catalog(classes=[0, 1, 2])
    with pytest.raises(RequestValidationError) as typed:
        feedback(aio, {"job_id": "j1", "label": "1"}, catalog=numbers)
    assert errors_of(typed) == [(("body", "label"), "label_type")]
    assert "numbers" in typed.value.errors()[0]["msg"]
    with pytest.raises(RequestValidationError):
        feedback(aio, {"job_id": "j1", "label": True}, catalog=numbers)  # true is not 1
    assert redis_client.xlen(labels_key("iris")) == 0


def test_numbers_match_numeric_classes_and_are_recorded_as_the_class(redis_client, aio):
    log(redis_client, "j1", outputs=(2,))
    feedback(aio, {"job_id": "j1", "label": 2.0}, catalog=Catalog(classes=[0, 1, 2]))
    [labelled] = read_pending(redis_client, "iris", 10)
    assert labelled["label"] == 2 and isinstance(labelled["label"], int)


def test_a_version_without_recorded_classes_takes_any_scalar(redis_client, aio):
    log(redis_client, "j1")
    assert feedback(aio, {"job_id": "j1", "label": "anything"}, catalog=Catalog(classes=[]))


def test_a_job_of_several_rows_takes_one_label_per_row(redis_client, aio):
    rows = [(1.0, 2.0), (3.0, 4.0), (5.0, 6.0)]
    log(redis_client, "batch", rows=rows, outputs=("setosa", "setosa", "virginica"))
    with pytest.raises(RequestValidationError) as scalar:
        feedback(aio, {"job_id": "batch", "label": "setosa"})
    assert errors_of(scalar) == [(("body", "label"), "label_count")]
    with pytest.raises(RequestValidationError) as short:
        feedback(aio, {"job_id": "batch", "label": ["setosa"]})
    assert errors_of(short) == [(("body", "label"), "label_count")]
    with pytest.raises(RequestValidationError) as one_bad:
        feedback(aio, {"job_id": "batch", "label": ["setosa", "tulip", "setosa"]})
    assert errors_of(one_bad) == [(("body", "label", 1), "label_unknown")]
    done = feedback(aio, {"job_id": "batch", "label": ["setosa", "virginica", "virginica"]})
    assert done.body["recorded"] == 3 and done.count == 3
    quality = run(live_quality(aio, "iris"))
    assert quality[1]["labelled"] == 3
    assert quality[1]["accuracy"] == pytest.approx(2 / 3)


def test_feedback_is_refused_429_while_too_many_labels_wait_for_the_store(redis_client, aio):
    for job in ("a", "b", "c"):
        log(redis_client, job)
    feedback(aio, {"job_id": "a", "label": "setosa"}, max_pending=2)
    feedback(aio, {"job_id": "b", "label": "setosa"}, max_pending=2)
    with pytest.raises(TooManyRequests) as full:
        feedback(aio, {"job_id": "c", "label": "setosa"}, max_pending=2)
    assert "max_pending" in full.value.message
    assert redis_client.hget(labelled_key("iris"), "c") is None


def test_the_window_keeps_the_last_labels_of_each_version(redis_client, aio):
    for i in range(5):
        log(redis_client, f"v1-{i}", version=1)
    log(redis_client, "v2", version=2)
    for i in range(5):
        feedback(aio, {"job_id": f"v1-{i}", "label": "setosa" if i < 3 else "virginica"}, window=3)
    feedback(aio, {"job_id": "v2", "label": "setosa"}, window=3)
    quality = run(live_quality(aio, "iris"))
    assert quality[1]["labelled"] == 3  # the last 3: setosa, virginica, virginica
    assert quality[1]["accuracy"] == pytest.approx(1 / 3)
    assert quality[2] == {
        "labelled": 1, "accuracy": 1.0, "f1_macro": 1.0, "balanced_accuracy": 1.0
    }  # fmt: skip


def test_the_trigger_counts_labels_since_the_last_training_snapshot(redis_client, aio):
    for job in ("a", "b"):
        log(redis_client, job)
    redis_client.set(trained_key("iris"), 1)
    feedback(aio, {"job_id": "a", "label": "setosa"})
    done = feedback(aio, {"job_id": "b", "label": "setosa"})
    assert (done.count, done.trained) == (2, 1)


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"label": "setosa"}, ("body",)),
        ({"job_id": "j", "request_id": "r", "label": "x"}, ("body",)),
        ({"job_id": "j", "label": {"a": 1}}, ("body", "label")),
        ([{"job_id": "j", "label": "x"}, {"job_id": "j"}], ("body", 1, "label")),
        ({"items": [{"job_id": "j", "label": None}]}, ("body", "items", 0, "label")),
        ({"items": []}, ("body", "items")),
        ({"job_id": "j", "label": "x", "extra": 1}, ("body", "extra")),
    ],
)
def test_bodies_that_do_not_fit_are_422_at_the_field(body, loc):
    with pytest.raises(RequestValidationError) as refused:
        parse_items(body, 10)
    assert tuple(refused.value.errors()[0]["loc"][: len(loc)]) == loc
    orjson.dumps(refused.value.errors())  # the answer can be written


@pytest.mark.parametrize(
    "body",
    [
        [{"job_id": f"j{i}", "label": "x"} for i in range(11)],
        {"items": [{"job_id": "j", "label": "x"}], **{f"k{i}": i for i in range(10_000)}},
        {"job_id": "j", "label": "x", **{f"k{i}": i for i in range(10_000)}},
        {"job_id": "j", "label": ["x"] * 10_000},
    ],
    ids=["items", "batch keys", "item keys", "label list"],
)
def test_oversized_bodies_are_one_error_before_pydantic_reads_them(body):
    with pytest.raises(RequestValidationError) as refused:
        parse_items(body, 10)
    assert len(refused.value.errors()) == 1


def test_a_body_of_many_containers_is_refused_before_parsing():
    hostile = b"[" + b"[]," * 100_000 + b"[]]"
    with pytest.raises(RequestValidationError) as refused:
        check_size(hostile, 1000)
    assert "'[' and '{'" in refused.value.errors()[0]["msg"]
    accepted = orjson.dumps([{"job_id": "j" * 90, "label": ["x" * 50]} for _ in range(1000)])
    assert len(accepted) > 65536
    check_size(accepted, 1000)  # what a request of 1,000 labels holds passes


def test_too_many_labels_in_one_request_is_422():
    with pytest.raises(RequestValidationError) as refused:
        parse_items([{"job_id": f"j{i}", "label": "x"} for i in range(3)], 2)
    assert refused.value.errors()[0]["type"] == "too_long"
