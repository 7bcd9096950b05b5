"""Feedback: true labels joined to the logged predictions they judge (core/feedback.py).

A request is checked whole before anything is written: every item must name a prediction
still in its model's log that the caller may read (else 404 naming the ids), and carry one of
that version's classes per row (else 422 at the item's field). Then one script records all
of its labels or none: a label already recorded is a repeat (counted once), another label for
a labelled job is 409. Two Redis calls in all, on the gateway's asyncio client.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from fastapi.exceptions import RequestValidationError
from loguru import logger
from pydantic import TypeAdapter, ValidationError

from app.auth import Principal
from app.errors import Conflict, TooManyRequests, clip
from app.schemas import FeedbackBatch, FeedbackItem
from app.services.catalog import ModelCatalog
from core.errors import MLOpsError
from core.feedback import (
    JOB,
    REQUEST,
    decode_resolved,
    record_args,
    resolve_args,
    versions_key,
    window_key,
    window_pairs,
)
from core.quality import scores

_ITEMS = TypeAdapter(list[FeedbackItem])


class FeedbackNotFound(MLOpsError):
    status_code = 404
    reason = "prediction_not_found"

    def __init__(self, message: str, missing: list[dict]):
        super().__init__(message)
        self.extra = {"missing": missing}  # in the answer's body (app/errors.py)


class LabelConflict(Conflict):
    reason = "label_conflict"


@dataclass(frozen=True)
class Item:
    kind: str  # core.feedback JOB or REQUEST
    ident: str
    label: Any
    loc: tuple  # where the item is in the body

    def named(self) -> dict:
        return {("job_id" if self.kind == JOB else "request_id"): self.ident}


# -- parsing -----------------------------------------------------------------------------------
COUNT_ABOVE = 65536  # bytes: smaller bodies parse in about a millisecond whatever they hold
_ALL_BUT_CONTAINERS = bytes(set(range(256)) - set(b"[{"))
MAX_ITEM_FIELDS = 3  # job_id or request_id, and label


def check_size(body: bytes, max_labels: int) -> None:
    """Refuse, before parsing, a body with more arrays and objects than an accepted one holds
    (one object per item, an array per item's labels, the body's own): orjson takes ~0.5 s
    and the event loop with it on 1 MiB of ``[],``, and ~1 ms to count them."""
    if len(body) <= COUNT_ABOVE:
        return
    containers = len(body.translate(None, _ALL_BUT_CONTAINERS))
    limit = 4 * max_labels + 64
    if containers > limit:
        raise _invalid(
            ("body",),
            f"the body holds {containers} '[' and '{{', more than a request of at most "
            f"{max_labels} labels can ({limit}; feedback.max_labels)",
            "too_long",
        )


def _check_counts(data: Any, max_labels: int) -> None:
    """Items, fields and labels counted before pydantic reads them: one error, not one per
    extra key or item of an oversized body."""
    if isinstance(data, dict) and "items" in data:
        if len(data) > 1:
            raise _invalid(("body",), 'a batch is {"items": [...]} alone', "extra_forbidden")
        items, where = data["items"], ("body", "items")
    else:
        items, where = data, ("body",)
    items = items if isinstance(items, list) else [items]
    if len(items) > max_labels:
        raise _invalid(
            where, f"{len(items)} items; at most {max_labels} (feedback.max_labels)", "too_long"
        )
    for item in items:
        if isinstance(item, dict) and len(item) > MAX_ITEM_FIELDS:
            raise _invalid(
                where,
                f"an item has {len(item)} fields: job_id or request_id, and label",
                "extra_forbidden",
            )
        label = item.get("label") if isinstance(item, dict) else None
        if isinstance(label, list) and len(label) > max_labels:
            raise _invalid(where, f"a label list of {len(label)}; at most {max_labels}", "too_long")


def parse_items(data: Any, max_labels: int) -> list[Item]:
    """The items of a feedback body: one item, ``{"items": [...]}`` or a list of items;
    RequestValidationError (422) with every problem at its field."""
    _check_counts(data, max_labels)
    try:
        if isinstance(data, list):
            parsed = _ITEMS.validate_python(data)
            locs = [("body", i) for i in range(len(parsed))]
        elif isinstance(data, dict) and "items" in data:
            parsed = FeedbackBatch.model_validate(data).items
            locs = [("body", "items", i) for i in range(len(parsed))]
        else:
            parsed = [FeedbackItem.model_validate(data)]
            locs = [("body",)]
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_context=False)
        raise RequestValidationError(
            [{**error, "loc": ("body", *error["loc"])} for error in errors]
        ) from None
    if not parsed:
        raise _invalid(("body",), "give at least one item", "too_short")
    labels = sum(len(item.label) if isinstance(item.label, list) else 1 for item in parsed)
    if labels > max_labels:
        raise _invalid(
            ("body",),
            f"{labels} labels in one request; at most {max_labels} (feedback.max_labels)",
            "too_long",
        )
    return [
        Item(JOB, item.job_id, item.label, loc)
        if item.job_id is not None
        else Item(REQUEST, item.request_id, item.label, loc)
        for item, loc in zip(parsed, locs, strict=True)
    ]


def _error(loc: tuple, message: str, kind: str) -> dict:
    return {"loc": list(loc), "msg": message, "type": kind}


def _invalid(loc: tuple, message: str, kind: str) -> RequestValidationError:
    return RequestValidationError([_error(loc, message, kind)])


# -- labels against the version's classes ------------------------------------------------------
def _same(value: Any, klass: Any) -> bool:
    """JSON equality with types: 1 and 1.0 are one number, but never true, nor "1"."""
    if isinstance(value, bool) or isinstance(klass, bool):
        return type(value) is type(klass) and value == klass
    return value == klass


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    return {str: "string", int: "number", float: "number"}.get(type(value), type(value).__name__)


def check_label(item: Item, entry: dict, classes: list | None, what: str) -> tuple[Any, list]:
    """The label to record (the class as the model names it; a list for a job of several
    rows), and the errors (none when it fits). ``classes``: None when unknown (a version
    registered without them): any scalar is taken."""
    rows = len(entry["rows"])
    loc = (*item.loc, "label")
    if rows > 1 and not isinstance(item.label, list):
        return None, [
            _error(
                loc,
                f"job {entry['job']} has {rows} rows: give a list of {rows} labels",
                "label_count",
            )
        ]
    values = item.label if isinstance(item.label, list) else [item.label]
    if len(values) != rows:
        return None, [
            _error(
                loc,
                f"job {entry['job']} has {rows} row(s); {len(values)} labels given",
                "label_count",
            )
        ]
    found, errors = [], []
    for j, value in enumerate(values):
        where = (*loc, j) if isinstance(item.label, list) else loc
        match = next((c for c in classes if _same(value, c)), None) if classes else value
        if classes and match is None:
            errors.append(_class_error(where, value, classes, what))
        found.append(match)
    if errors:
        return None, errors
    return (found if rows > 1 else found[0]), []


def _class_error(loc: tuple, value: Any, classes: list, what: str) -> dict:
    shown = ", ".join(repr(c) for c in classes[:20]) + (", ..." if len(classes) > 20 else "")
    kinds = sorted({_type_name(c) for c in classes})
    if _type_name(value) not in kinds:
        return _error(
            loc,
            f"a {_type_name(value)}: the classes of {what} are {' or '.join(kinds)}s ({shown})",
            "label_type",
        )
    return _error(
        loc, f"{clip(repr(value))} is not one of the classes of {what}: {shown}", "label_unknown"
    )


async def _classes(catalog: ModelCatalog, version: int) -> list | None:
    """The classes of ``version``, from its signed metadata; None when it has none recorded
    or cannot be read any more (then labels are taken as sent)."""
    try:
        metadata = (await catalog.pinned(version)).metadata
    except (MLOpsError, OSError) as exc:
        logger.warning("feedback: classes of {} v{} unknown ({})", catalog.name, version, exc)
        return None
    return list(metadata.classes) or None


# -- recording ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Recorded:
    body: dict
    count: int  # labels ever recorded for the model
    trained: int  # ...when its last training run took its snapshot
    new_labels: int  # labels (rows) this request added


async def record_feedback(
    client: aioredis.Redis,
    catalog: ModelCatalog,
    principal: Principal,
    items: list[Item],
    *,
    max_pending: int,
    window: int,
    log_size: int,
    retry_after: int,
) -> Recorded:
    """Check every item, then record all their labels at once (or raise, having written
    nothing)."""
    model = catalog.name
    reply = await client.eval(
        *resolve_args(model, [(item.kind, item.ident, principal.owner) for item in items])
    )
    entries = decode_resolved(reply)
    missing = [
        item
        for item, entry in zip(items, entries, strict=True)
        if entry is None or not principal.may_read(entry["owner"] or None)
    ]
    if missing:
        raise _not_found(model, [item.named() for item in missing], log_size)
    versions = sorted({entry["version"] for entry in entries})
    known = await asyncio.gather(*(_classes(catalog, v) for v in versions))
    classes = dict(zip(versions, known, strict=True))
    labelled, errors = [], []
    for item, entry in zip(items, entries, strict=True):
        label, problems = check_label(
            item, entry, classes[entry["version"]], f"{model} v{entry['version']}"
        )
        errors += problems
        labelled.append({**entry, "label": label})
    if errors:
        raise RequestValidationError(errors)
    reply = await client.eval(*record_args(model, labelled, max_pending, window, time.time()))
    outcome = _text(reply[0])
    if outcome == "full":
        raise TooManyRequests(
            f"model {model!r} has {int(reply[1])} labels not yet written to the store "
            f"(feedback.max_pending {max_pending}): retry later",
            retry_after,
        )
    if outcome == "gone":
        raise _not_found(model, [{"job_id": _text(job)} for job in reply[1:]], log_size)
    if outcome == "conflict":
        held = zip(reply[1::2], reply[2::2], strict=True)
        pairs = [f"{_text(job)} (recorded {_text(label)})" for job, label in held]
        raise LabelConflict(
            "another label is already recorded for job(s) "
            + ", ".join(pairs[:20])
            + "; a recorded label is final: nothing of this request was recorded"
        )
    statuses = [_text(status) for status in reply[3:]]
    new_rows = sum(
        len(entry["rows"])
        for entry, status in zip(labelled, statuses, strict=True)
        if status == "new"
    )
    body = {
        "model_name": model,
        "recorded": new_rows,
        "repeats": statuses.count("repeat"),
        "items": [
            {
                "job_id": entry["job"],
                "request_id": entry["request"] or None,
                "model_version": entry["version"],
                "status": "recorded" if status == "new" else "repeat",
            }
            for entry, status in zip(labelled, statuses, strict=True)
        ],
    }
    return Recorded(body, int(reply[1]), int(reply[2]), new_rows)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _not_found(model: str, missing: list[dict], log_size: int) -> FeedbackNotFound:
    shown = ", ".join(clip(next(iter(m.values())), 60) for m in missing[:20])
    more = f" and {len(missing) - 20} more" if len(missing) > 20 else ""
    return FeedbackNotFound(
        f"no logged prediction of model {model!r} for {shown}{more}: unknown, not yours, "
        f"expired from the prediction log (it keeps the last ~{log_size} of each model: "
        "prediction_log.max_entries), or not logged (prediction_log.sample_ratio); nothing "
        "of this request was recorded",
        missing,
    )


# -- live quality -----------------------------------------------------------------------------
async def live_quality(client: aioredis.Redis, model: str) -> dict[int, dict]:
    """Per version with labelled predictions: the window's size and every metric."""
    versions = sorted(int(v) for v in await client.smembers(versions_key(model)))
    if not versions:
        return {}
    async with client.pipeline(transaction=False) as pipe:
        for version in versions:
            pipe.lrange(window_key(model, version), 0, -1)
        windows = await pipe.execute()
    return {
        version: {"labelled": len(raw), **scores(window_pairs(raw))}
        for version, raw in zip(versions, windows, strict=True)
        if raw
    }
