"""The legacy service the proxy tests put behind `cutover proxy`: a Starlette app under uvicorn."""

from __future__ import annotations

import asyncio
import os
import uuid

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

SECRET = "Bearer v1-token"
received: list[dict[str, object]] = []


async def echo(request: Request) -> Response:
    body = await request.body()
    seen = {
        "arm": "legacy",
        "method": request.method,
        "path": request.url.path,
        "query": request.url.query,
        "headers": [[k, v] for k, v in request.headers.items()],
        "body": body.decode("latin-1"),
    }
    received.append(seen)
    return JSONResponse(seen, headers={"X-Arm": "legacy", "Set-Cookie": "s=legacy"})


async def user(request: Request) -> Response:
    number = int(request.path_params["id"])
    return JSONResponse({"id": number, "name": f"user {number}", "total": number * 1.5})


async def status(request: Request) -> Response:
    code = int(request.path_params["code"])
    return JSONResponse({"status": code}, status_code=code)


async def slow(request: Request) -> Response:
    await asyncio.sleep(int(request.query_params.get("ms", "100")) / 1000)
    return JSONResponse({"slept": True})


async def stream(request: Request) -> Response:
    """Server-sent events, one every 200 ms: a client sees the first long before the last."""

    async def events():  # type: ignore[no-untyped-def]
        for number in range(int(request.query_params.get("n", "5"))):
            yield f"data: {number}\n\n".encode()
            await asyncio.sleep(0.2)

    return StreamingResponse(events(), media_type="text/event-stream")


async def big(request: Request) -> Response:
    """``mb`` MiB of a repeated byte, in 64 KiB chunks, without a length (chunked)."""
    block = b"x" * 65536
    count = int(request.query_params.get("mb", "1")) * 16

    async def chunks():  # type: ignore[no-untyped-def]
        for _ in range(count):
            yield block

    return StreamingResponse(chunks(), media_type="application/octet-stream")


async def auth(request: Request) -> Response:
    if request.headers.get("authorization") != SECRET:
        return JSONResponse({"error": "unauthorized"}, status_code=401)
    return JSONResponse({"user": "ana"})


async def text(request: Request) -> Response:
    return PlainTextResponse("plain text from legacy\n")


async def seen(request: Request) -> Response:
    return JSONResponse(received[-int(request.query_params.get("last", "10")) :])


async def websocket(socket: WebSocket) -> None:
    await socket.accept()
    async for message in socket.iter_text():
        await socket.send_text(f"legacy: {message}")


async def random_id(request: Request) -> Response:
    """An answer with a field that differs on every call, as a request id does."""
    return JSONResponse({"request_id": str(uuid.uuid4()), "value": 42})


async def pid(request: Request) -> Response:
    return JSONResponse({"pid": os.getpid()})


app = Starlette(
    routes=[
        Route("/echo", echo, methods=["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS"]),
        Route("/echo/{rest:path}", echo, methods=["GET", "POST", "PUT", "DELETE", "HEAD"]),
        Route("/users/{id:int}", user),
        Route("/status/{code:int}", status, methods=["GET", "POST"]),
        Route("/slow", slow),
        Route("/stream", stream),
        Route("/big", big),
        Route("/auth", auth),
        Route("/text", text),
        Route("/seen", seen),
        Route("/pid", pid),
        Route("/random", random_id),
        WebSocketRoute("/ws", websocket),
    ]
)

if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=int(os.environ["PORT"]), log_level="warning")
