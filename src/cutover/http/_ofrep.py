"""OFREP, the OpenFeature Remote Evaluation Protocol: any language's SDK asks for a migration's arm.

``POST /ofrep/v1/evaluate/flags/{key}`` evaluates one migration for the context's
``targetingKey`` (the unit), ``POST /ofrep/v1/evaluate/flags`` every stored one, with an ETag
so that a polling client gets 304 until a state changes. Answers come from the states this
process's runtime holds in memory (refreshed in the background, at once on PostgreSQL's
NOTIFY) through the one routing function, never from a store round trip; each is counted as an
exposure. Viewer tokens admit callers, as for every read, and ``--ofrep-rate`` bounds how many
evaluations each asks for. Until the states were read once, every evaluation is a ``GENERAL``
error to retry: "not found" would be a guess.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from cutover import runtime as rt
from cutover.errors import UnknownMigration
from cutover.flags import Evaluation, evaluate
from cutover.http._api import ErrorOut
from cutover.http._auth import Principal
from cutover.http._deps import ANONYMOUS, Viewer
from cutover.http._names import Segment
from cutover.http._ratelimit import RateLimiter, retry_after

# -- shapes, as the OFREP OpenAPI document gives them -----------------------------------------


class EvaluationSuccess(BaseModel):
    """One flag's answer: ``value`` is true when new serves the unit, ``variant`` the arm."""

    key: str
    reason: str = Field(examples=["SPLIT", "TARGETING_MATCH", "STATIC", "DISABLED", "DEFAULT"])
    variant: Literal["legacy", "new"]
    value: bool
    metadata: dict[str, bool | str | float]


class EvaluationFailure(BaseModel):
    """A flag that could not be evaluated for this request."""

    key: str
    errorCode: Literal[
        "PARSE_ERROR", "TARGETING_KEY_MISSING", "INVALID_CONTEXT", "GENERAL", "FLAG_NOT_FOUND"
    ]
    errorDetails: str | None = None


class BulkEvaluationSuccess(BaseModel):
    flags: list[EvaluationSuccess | EvaluationFailure]


class BulkEvaluationFailure(BaseModel):
    errorCode: Literal["PARSE_ERROR", "TARGETING_KEY_MISSING", "INVALID_CONTEXT", "GENERAL"]
    errorDetails: str | None = None


RETRY_AFTER = {
    "Retry-After": {"description": "Whole seconds to wait", "schema": {"type": "integer"}}
}


def _retryable(model: type[BaseModel]) -> dict[int | str, dict[str, Any]]:
    """The answers a client should retry after ``Retry-After``, with ``model`` as the body."""
    return {
        429: {
            "model": model,
            "description": "This token (or address) asked for more than --ofrep-rate allows",
            "headers": RETRY_AFTER,
        },
        500: {
            "model": model,
            "description": "The server has not read the states from its store yet",
            "headers": RETRY_AFTER,
        },
    }


REQUEST_BODY = {
    "requestBody": {
        "required": False,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "description": "The evaluation context; targetingKey is the unit",
                    "properties": {
                        "context": {
                            "type": "object",
                            "properties": {"targetingKey": {"type": "string"}},
                        }
                    },
                }
            }
        },
    }
}

AUTH: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "No valid token"},
    403: {"model": ErrorOut, "description": "The token's role is too weak"},
    413: {"model": ErrorOut, "description": "The body is too large"},
}

router = APIRouter(prefix="/ofrep/v1", tags=["ofrep"], responses=AUTH)


class _Refused(Exception):
    """The request cannot be evaluated: an OFREP error code, one sentence, the HTTP status."""

    def __init__(
        self, code: str, details: str, status: int = 400, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(details)
        self.code = code
        self.details = details
        self.status = status
        self.headers = headers

    def response(self, key: str | None = None) -> JSONResponse:
        """OFREP's failure shape: with the flag's key for one flag, without it for bulk."""
        body = {"errorCode": self.code, "errorDetails": self.details}
        return JSONResponse(
            body if key is None else {"key": key, **body},
            status_code=self.status,
            headers=self.headers,
        )


def _admit(request: Request, who: Principal) -> None:
    """Spend one request of the caller's bucket: a token's by its name, an anonymous reader's
    by address (behind a proxy, the proxy's: limit there instead)."""
    limiter: RateLimiter | None = request.app.state.ofrep_limiter
    if limiter is None:
        return
    if who is ANONYMOUS:
        client = f"address {request.client.host if request.client else 'unknown'}"
    else:
        client = f"token {who.name}"
    wait = limiter.take(client)
    if wait:
        after = retry_after(wait)
        raise _Refused(
            "GENERAL",
            f"this {'address' if who is ANONYMOUS else 'token'} asked for more evaluations than"
            f" the server's limit of {limiter.rate}; retry in {after} s",
            429,
            {"Retry-After": after},
        )


def _ready() -> rt.Runtime:
    """This process's runtime, once it has read the states; a retryable error before."""
    runtime = rt.current()
    if runtime.states_loaded_at is None:
        after = str(max(1, math.ceil(runtime.settings.refresh_interval)))
        raise _Refused(
            "GENERAL",
            "the server has not read the migrations' states from its store yet (is the store"
            f" reachable? /healthz says); retry in {after} s",
            500,
            {"Retry-After": after},
        )
    return runtime


async def _unit(request: Request) -> str:
    """The targeting key of the request's evaluation context."""
    body = await request.body()
    if not body.strip():
        raise _Refused(
            "TARGETING_KEY_MISSING",
            'send {"context": {"targetingKey": "<unit>"}}: the unit is the user, tenant or'
            " session the migration routes by",
        )
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise _Refused("PARSE_ERROR", "the body is not JSON; send a JSON object") from None
    context = payload.get("context") if isinstance(payload, dict) else None
    if not isinstance(payload, dict) or not isinstance(context, dict | None):
        raise _Refused(
            "INVALID_CONTEXT", 'the body must be an object like {"context": {"targetingKey": …}}'
        )
    unit = (context or {}).get("targetingKey")
    if unit is None or unit == "":
        raise _Refused(
            "TARGETING_KEY_MISSING",
            "context.targetingKey is missing; set it to the user, tenant or session the"
            " migration routes by",
        )
    if not isinstance(unit, str):
        raise _Refused("INVALID_CONTEXT", "context.targetingKey must be a string")
    return unit


def _success(found: Evaluation) -> dict[str, Any]:
    return {
        "key": found.flag,
        "reason": found.reason,
        "variant": found.variant,
        "value": found.variant == "new",
        "metadata": found.metadata,
    }


def _stored(runtime: rt.Runtime) -> Any:
    states = runtime.states
    return lambda name: name in states


@router.post(
    "/evaluate/flags/{key}",
    summary="OFREP: evaluate one migration for a unit",
    response_model=EvaluationSuccess,
    responses={
        400: {"model": EvaluationFailure, "description": "The context cannot be evaluated"},
        404: {"model": EvaluationFailure, "description": "No migration of that name is stored"},
        **_retryable(EvaluationFailure),
    },
    openapi_extra=REQUEST_BODY,
)
async def evaluate_flag(key: Segment, request: Request, who: Viewer) -> JSONResponse:
    try:
        _admit(request, who)
        unit = await _unit(request)
        found = evaluate(key, unit, _stored(_ready()))
    except _Refused as refused:
        return refused.response(key)
    except UnknownMigration as error:
        return _Refused("FLAG_NOT_FOUND", str(error), 404).response(key)
    return JSONResponse(_success(found))


def etag(runtime: rt.Runtime, unit: str) -> str:
    """What a bulk answer for ``unit`` depends on: every stored state and kill switch."""
    digest = hashlib.sha256(unit.encode("utf-8", "surrogatepass"))
    for name, state in sorted(runtime.states.items()):
        digest.update(f"\0{name}\0{state.version}".encode("utf-8", "surrogatepass"))
    for migration in runtime.migrations:
        if migration.route.override is not None:
            digest.update(f"\0!{migration.name}={migration.route.override.value}".encode())
    return f'"{digest.hexdigest()[:32]}"'


@router.post(
    "/evaluate/flags",
    summary="OFREP: evaluate every stored migration for a unit",
    response_model=BulkEvaluationSuccess,
    responses={
        200: {"headers": {"ETag": {"schema": {"type": "string"}}}},
        304: {"description": "Nothing changed since the ETag sent in If-None-Match"},
        400: {"model": BulkEvaluationFailure, "description": "The context cannot be evaluated"},
        **_retryable(BulkEvaluationFailure),
    },
    openapi_extra=REQUEST_BODY,
)
async def evaluate_flags(
    request: Request,
    who: Viewer,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    try:
        _admit(request, who)
        unit = await _unit(request)
        runtime = _ready()
    except _Refused as refused:
        return refused.response()
    tag = etag(runtime, unit)
    if if_none_match is not None and tag in {t.strip() for t in if_none_match.split(",")}:
        return Response(status_code=304, headers={"ETag": tag})
    known = _stored(runtime)
    flags = [_success(evaluate(name, unit, known)) for name in sorted(runtime.states)]
    return JSONResponse({"flags": flags}, headers={"ETag": tag})


class Configuration(BaseModel):
    """What an OFREP provider may learn of this server before it evaluates."""

    name: str
    capabilities: dict[str, Any]


@router.get(
    "/configuration",
    summary="OFREP: what this server supports",
    response_model=Configuration,
)
async def configuration(_who: Viewer) -> dict[str, Any]:
    refresh_ms = round(rt.current().settings.refresh_interval * 1000)
    return {
        "name": "cutover",
        "capabilities": {
            # A state reaches this server within a refresh interval: polling faster than that
            # only gets 304s.
            "cacheInvalidation": {"polling": {"enabled": True, "minPollingIntervalMs": refresh_ms}},
            "flagEvaluation": {"supportedTypes": ["boolean"]},
        },
    }
