"""Dependencies as ``Annotated`` aliases: the gateway state and scope checks.

All ``async def``: FastAPI runs a plain ``def`` dependency in a thread pool, a hand-off
that costs more than the work it does.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request

from app.auth import Principal
from app.state import Gateway


async def get_gateway(request: Request) -> Gateway:
    return request.app.state.gateway


GatewayDep = Annotated[Gateway, Depends(get_gateway)]
ApiKeyHeader = Annotated[
    str | None, Header(alias="X-API-Key", description="API key with the needed scope")
]


def _require(scope: str):
    async def check(request: Request, x_api_key: ApiKeyHeader = None) -> Principal:
        return request.app.state.gateway.keys.authorize(x_api_key, scope)

    return check


PredictScope = Annotated[Principal, Depends(_require("predict"))]
AdminScope = Annotated[Principal, Depends(_require("admin"))]
