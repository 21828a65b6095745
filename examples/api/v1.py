"""The legacy API (v1) of the API runbook demo: FastAPI under uvicorn, with HS256 JWT auth.

Endpoints, all under /api/v1: health (no token), usage, predict, segment, recommendations and
the v1-only CSV export that v2 drops. Tokens carry a key id (``kid``): web and mobile clients
are signed with secrets of their own, given as ``JWT_SECRETS=web:...,mobile:...``. Run it with
``PORT=8000 JWT_SECRETS=... python -m examples.api.v1``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
from typing import Annotated, Any

import uvicorn
from fastapi import FastAPI, Header, Query
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel

from examples.api.model import (
    VERSION_V1,
    churn_probability,
    recommendations,
    segment_of,
    usage,
)


def secrets_from(spec: str) -> dict[str, bytes]:
    """``web:s1,mobile:s2`` -> {"web": b"s1", "mobile": b"s2"}."""
    pairs = (item.split(":", 1) for item in spec.split(",") if item)
    return {kid: secret.encode() for kid, secret in pairs}


SECRETS = secrets_from(os.environ.get("JWT_SECRETS", ""))


class Unauthorized(Exception):
    """A missing, malformed or badly signed token."""


def _decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def verify(authorization: str | None) -> dict[str, Any]:
    """The claims of a valid ``Bearer`` HS256 token signed with its key id's secret."""
    if not authorization or not authorization.startswith("Bearer "):
        raise Unauthorized("a Bearer token is required")
    try:
        head, body, signature = authorization[7:].split(".")
        header = json.loads(_decode(head))
        secret = SECRETS[header["kid"]]
    except (ValueError, KeyError, TypeError) as error:
        raise Unauthorized("the token is malformed") from error
    expected = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
    if header.get("alg") != "HS256" or not hmac.compare_digest(expected, _decode(signature)):
        raise Unauthorized("the token's signature is not valid")
    return json.loads(_decode(body))


app = FastAPI(title="CohortLens API v1")


@app.exception_handler(Unauthorized)
async def unauthorized(_request: object, error: Unauthorized) -> JSONResponse:
    return JSONResponse(
        {"type": "about:blank", "title": "Unauthorized", "status": 401, "detail": str(error)},
        status_code=401,
        media_type="application/problem+json",
    )


Authorization = Annotated[str | None, Header()]


class Features(BaseModel):
    age: int
    segment: str
    visits: int


class Prediction(BaseModel):
    features: Features


class Customer(BaseModel):
    id: str
    spend: float
    visits: int


class Customers(BaseModel):
    customers: list[Customer]


@app.get("/api/v1/health")
async def health() -> dict[str, str]:
    return {"status": "ok", "version": VERSION_V1}


@app.get("/api/v1/usage")
async def get_usage(authorization: Authorization = None) -> dict[str, Any]:
    return usage(verify(authorization)["sub"])


@app.post("/api/v1/predict")
async def predict(request: Prediction, authorization: Authorization = None) -> dict[str, Any]:
    verify(authorization)
    features = request.features
    return {
        "churn_probability": round(churn_probability(features.age, features.visits), 4),
        "expected_orders": round(features.visits / 2),  # Python rounds half to even
        "segment": features.segment,
    }


@app.post("/api/v1/segment")
async def segment(request: Customers, authorization: Authorization = None) -> dict[str, Any]:
    verify(authorization)
    return {
        "segments": [
            {"id": c.id, "segment": segment_of(c.spend, c.visits)} for c in request.customers
        ]
    }


@app.get("/api/v1/recommendations")
async def get_recommendations(
    authorization: Authorization = None, limit: Annotated[int, Query(ge=1, le=10)] = 3
) -> dict[str, Any]:
    user = verify(authorization)["sub"]
    return {"user": user, "items": recommendations(user, limit)}


@app.get("/api/v1/export")
async def export(authorization: Authorization = None) -> PlainTextResponse:
    """The v1-only CSV export: v2 has none, and it answers 410 Gone once v1 is retired."""
    user = verify(authorization)["sub"]
    rows = [f"{user},{key},{value}" for key, value in usage(user).items() if key != "user"]
    return PlainTextResponse("user,metric,value\n" + "\n".join(rows) + "\n", media_type="text/csv")


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(os.environ["PORT"]), log_level="warning")
