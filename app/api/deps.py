"""Dependencies as ``Annotated`` aliases: the gateway state and scope checks.

All ``async def``: FastAPI runs a plain ``def`` dependency in a thread pool, a hand-off
that costs more than the work it does.

The API key is declared as a security scheme (:data:`API_KEY_SCHEME`), so ``/docs`` has one
Authorize button instead of a key field on every operation. It does not check the key
(``auto_error=False``): :meth:`app.auth.KeyRing.authorize` does, with the project's errors.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request, Security
from fastapi.security import APIKeyHeader

from app.auth import Principal
from app.state import Gateway


async def get_gateway(request: Request) -> Gateway:
    return request.app.state.gateway


GatewayDep = Annotated[Gateway, Depends(get_gateway)]
API_KEY = "X-API-Key"
API_KEY_SCHEME = APIKeyHeader(
    name=API_KEY,
    scheme_name="ApiKey",
    description="An API key from `auth.api_keys`, with the scope the operation needs "
    "(`predict` or `admin`; `admin` may do everything)",
    auto_error=False,
)
ApiKeyHeader = Annotated[str | None, Security(API_KEY_SCHEME)]
# Where a key is optional (/ready tells more with one): a plain header, not the scheme, which
# would document the operation as refused without a key.
OptionalKeyHeader = Annotated[
    str | None, Header(alias=API_KEY, description="Optional: any valid key shows the details")
]


def _require(scope: str):
    async def check(request: Request, x_api_key: ApiKeyHeader) -> Principal:
        return request.app.state.gateway.keys.authorize(x_api_key, scope)

    return check


PredictScope = Annotated[Principal, Depends(_require("predict"))]
AdminScope = Annotated[Principal, Depends(_require("admin"))]
