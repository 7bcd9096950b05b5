"""JSON responses serialised with orjson (several times faster than the standard library)."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


class RawJSONResponse(Response):
    """A body that already is JSON (a worker's result, as stored in Redis): sent unchanged."""

    media_type = "application/json"


def accepted(job_id: str, *, deduplicated: bool = False, **fields: Any) -> JSONResponse:
    """202 Accepted for a queued job (or one joined), pointing at GET /jobs/{job_id}."""
    location = f"/jobs/{job_id}"
    body = {"job_id": job_id, "status": "PENDING", **fields, "location": location}
    if deduplicated:
        body["deduplicated"] = True
    return JSONResponse(body, status_code=202, headers={"Location": location})
