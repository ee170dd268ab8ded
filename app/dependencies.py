"""What routes depend on, as FastAPI dependencies: the settings, the API key check and the ready engine.

Everything comes from `app.state` (built by `create_app` and its lifespan), so a route is a plain
module-level function that can be imported and tested alone. The dependencies are `async def` although they
never wait: FastAPI runs a plain `def` dependency on its thread pool, a thread hop per dependency per request.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from app.engine import Engine
from app.errors import NotReadyError, UnauthorizedError
from app.openapi import API_KEY_SCHEME, BEARER_SCHEME
from app.settings import Settings

_api_key_header = APIKeyHeader(
    name="X-API-Key",
    scheme_name=API_KEY_SCHEME,
    auto_error=False,
    description="Required when the server sets DRFACE_API_KEYS.",
)
# The same key as `Authorization: Bearer <key>`: what generated clients (openapi-python-client's
# AuthenticatedClient) send by default.
_bearer = HTTPBearer(
    scheme_name=BEARER_SCHEME,
    auto_error=False,
    description="Alternative to X-API-Key: `Authorization: Bearer <key>`.",
)


async def get_settings(request: Request) -> Settings:
    """The app's settings (`create_app(settings)`)."""
    return request.app.state.settings


SettingsDep = Annotated[Settings, Depends(get_settings)]


async def require_api_key(
    request: Request,
    settings: SettingsDep,
    api_key: Annotated[str | None, Depends(_api_key_header)],
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """401 unless the server has no keys or the request's one key (`X-API-Key`, else `Authorization: Bearer`)
    equals one of them (constant time)."""
    keys = settings.api_keys
    if not keys:
        return
    challenge = {"WWW-Authenticate": "ApiKey, Bearer"}
    if len(request.headers.getlist("x-api-key")) > 1:  # which one would count is a guess: refuse
        raise UnauthorizedError("send one X-API-Key header, not several", headers=challenge)
    given_key = api_key or (bearer.credentials if bearer is not None else None)
    given = (given_key or "").encode()
    valid = False
    for key in keys:  # compare with every key, so timing does not tell which one nearly matched
        valid |= hmac.compare_digest(given, key.encode())
    if not valid:
        message = "invalid API key" if given_key else "missing X-API-Key header (or Authorization: Bearer)"
        raise UnauthorizedError(message, headers=challenge)


async def require_engine(request: Request) -> Engine:
    """The loaded engine; 503 not_ready while the model is still loading or warming up."""
    engine: Engine | None = request.app.state.engine
    if engine is None:
        raise NotReadyError("the model is still loading; retry shortly", headers={"Retry-After": "1"})
    return engine


ReadyEngine = Annotated[Engine, Depends(require_engine)]
