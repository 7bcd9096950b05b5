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
