"""An upstream with planted differences for the replay tests, as legacy (SIDE=legacy) or new.

- ``POST /predict`` with ``{"x": n}``: legacy scores ``n``; new scores ``n`` times the factor
  planted for ``n`` (1: 1.00, 2: 1.02, 3: 1.05, 4: 0.96), so the relative deltas are 0, 2%, 5%
  and 4%; the segment is "a" below 50 and "b" above, and with ``PLANT_SEGMENT=1`` new says "z"
  for n = 4.
- ``GET /health?ms=N``: answers after N milliseconds (new only; legacy answers at once).
"""

from __future__ import annotations

import asyncio
import os

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

NEW = os.environ.get("SIDE") == "new"
FACTORS = {1: 1.0, 2: 1.02, 3: 1.05, 4: 0.96}


async def predict(request: Request) -> Response:
    x = int((await request.json())["x"])
    score = x * FACTORS.get(x, 1.0) if NEW else x
    segment = "a" if x < 50 else "b"
    if NEW and x == 4 and os.environ.get("PLANT_SEGMENT") == "1":
        segment = "z"
    return JSONResponse({"score": score, "segment": segment})


async def health(request: Request) -> Response:
    if NEW:
        await asyncio.sleep(int(request.query_params.get("ms", "0")) / 1000)
    return JSONResponse({"ok": True})


async def pid(request: Request) -> Response:
    return JSONResponse({"pid": os.getpid()})


app = Starlette(
    routes=[
        Route("/predict", predict, methods=["POST"]),
        Route("/health", health),
        Route("/pid", pid),
    ]
)

if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=int(os.environ["PORT"]), log_level="warning")
