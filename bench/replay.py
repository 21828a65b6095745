"""`cutover replay` beside the loop a user would write instead, against one local upstream.

    python bench/replay.py [--requests 20000] [--concurrency 32]

One upstream process (uvloop + httptools, canned JSON answers) listens on two ports, legacy
and new; new's scores differ by 0-4% and one answer in a hundred changes its segment. In one
run, with the same requests and the same concurrency:

- ``anchor_httpx``: the asyncio + httpx loop a user would write (each request to both sides
  with one ``httpx.AsyncClient``, bodies compared with ``==``, counted);
- ``anchor_aiohttp``: the same loop on aiohttp, to choose the client stack;
- ``cutover_replay``: ``cutover.replay`` with the route's comparison, drift fingerprints,
  numeric deltas per field, categorical matches and latency per side, on the proxy's upstream
  client.

Prints requests a second of each (a request = one call to each side) and the ratio to the
anchor; the upstream's CPU is on the same machine, so the figures are of the whole box.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from typing import Any

from _harness import machine

PATHS = 1000


def answer(side: str, n: int) -> bytes:
    """The canned answer to ``GET /predict/n`` of ``side``."""
    score = n * 1.5
    segment = "high" if n % 2 else "low"
    if side == "new":
        score = round(score * (1 + (n % 5) / 100), 6)
        if n % 100 == 0:
            segment = "mid"
    body = json.dumps(
        {
            "id": n,
            "model": "churn-v2",
            "score": score,
            "segment": segment,
            "features": [
                {"name": f"f{i}", "weight": round(0.1 * i + n / 1000, 4)} for i in range(5)
            ],
        }
    ).encode()
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (
        len(body),
        body,
    )


def serve(legacy_port: int, new_port: int) -> None:
    """The upstream: one event loop, two listening ports, one canned answer per path."""
    import httptools
    import uvloop

    class Upstream(asyncio.Protocol):
        def __init__(self, answers: list[bytes]) -> None:
            self.answers = answers
            self.parser = httptools.HttpRequestParser(self)
            self.url = b""
            self.transport: Any = None

        def connection_made(self, transport: Any) -> None:
            self.transport = transport
            # As any HTTP server does: an answer is not held back waiting for an ACK.
            transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def data_received(self, data: bytes) -> None:
            self.parser.feed_data(data)

        def on_url(self, url: bytes) -> None:
            self.url = url

        def on_message_complete(self) -> None:
            tail = self.url.rsplit(b"/", 1)[-1]
            index = int(tail) if tail.isdigit() else 0
            self.transport.write(self.answers[index % PATHS])

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for side, port in (("legacy", legacy_port), ("new", new_port)):
            answers = [answer(side, n) for n in range(PATHS)]
            await loop.create_server(
                lambda answers=answers: Upstream(answers), "127.0.0.1", port, backlog=1024
            )
        await asyncio.Event().wait()

    uvloop.run(main())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_upstream() -> tuple[subprocess.Popen[bytes], str, str]:
    legacy, new = free_port(), free_port()
    process = subprocess.Popen([sys.executable, __file__, "--serve", str(legacy), str(new)])
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", new), 0.2).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                process.kill()
                raise
            time.sleep(0.05)
    return process, f"http://127.0.0.1:{legacy}", f"http://127.0.0.1:{new}"


def paths(count: int) -> list[str]:
    return [f"/predict/{n % PATHS}" for n in range(count)]


async def anchor_httpx(
    legacy: str, new: str, targets: list[str], concurrency: int
) -> dict[str, int]:
    """What a user writes: both sides with httpx, bodies compared with ==."""
    import httpx

    counts = {"matches": 0, "drifts": 0, "errors": 0}
    pending = iter(targets)
    limits = httpx.Limits(
        max_connections=2 * concurrency, max_keepalive_connections=2 * concurrency
    )
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:

        async def worker() -> None:
            for path in pending:
                try:
                    left, right = await asyncio.gather(
                        client.get(legacy + path), client.get(new + path)
                    )
                except httpx.HTTPError:
                    counts["errors"] += 1
                    continue
                same = left.status_code == right.status_code and left.json() == right.json()
                counts["matches" if same else "drifts"] += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return counts


async def anchor_aiohttp(
    legacy: str, new: str, targets: list[str], concurrency: int
) -> dict[str, int]:
    """The same loop on aiohttp."""
    import aiohttp

    counts = {"matches": 0, "drifts": 0, "errors": 0}
    pending = iter(targets)
    connector = aiohttp.TCPConnector(limit=2 * concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def fetch(url: str) -> tuple[int, Any]:
            async with session.get(url) as response:
                return response.status, await response.json()

        async def worker() -> None:
            for path in pending:
                try:
                    left, right = await asyncio.gather(fetch(legacy + path), fetch(new + path))
                except aiohttp.ClientError:
                    counts["errors"] += 1
                    continue
                counts["matches" if left == right else "drifts"] += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return counts


def cutover_replay(legacy: str, new: str, targets: list[str], concurrency: int) -> dict[str, Any]:
    from cutover.proxy._config import RoutesFile, RouteSpec, build_routes, parse_upstream
    from cutover.replay import Gates
    from cutover.replay._input import Request
    from cutover.replay._run import ReplayOptions, run

    routes = build_routes(
        "bench", None, RoutesFile(routes=(RouteSpec(path="/predict/{n}", methods=("GET",)),))
    )
    options = ReplayOptions(
        new=parse_upstream(new, "--new"),
        legacy=parse_upstream(legacy, "--legacy"),
        routes=routes,
        concurrency=concurrency,
    )
    requests = [Request(f"bench:{i}", "GET", path, [], b"") for i, path in enumerate(targets)]
    tally = run(requests, options)
    figures = tally.verdict(Gates(max_mean_delta=0.05, max_delta=0.1, min_match=0.99)).overall
    return {
        "matches": figures.matches,
        "drifts": figures.drifts,
        "errors": figures.errors,
        "mean_delta": figures.mean_delta,
        "max_delta": figures.max_delta,
        "match_share": figures.match_share,
    }


def timed(work: Any) -> tuple[float, Any]:
    started = time.perf_counter()
    result = work()
    return time.perf_counter() - started, result


def run(count: int = 20_000, concurrency: int = 32) -> dict[str, Any]:
    import uvloop

    process, legacy, new = start_upstream()
    try:
        targets = paths(count)
        warm = paths(min(count, 1000))
        contenders = {
            "anchor_httpx": lambda t: uvloop.run(anchor_httpx(legacy, new, t, concurrency)),
            "anchor_aiohttp": lambda t: uvloop.run(anchor_aiohttp(legacy, new, t, concurrency)),
            "cutover_replay": lambda t: cutover_replay(legacy, new, t, concurrency),
        }
        results: dict[str, Any] = {}
        for name, work in contenders.items():
            work(warm)
            elapsed, counts = timed(lambda work=work: work(targets))
            results[name] = {
                "requests": count,
                "seconds": round(elapsed, 3),
                "requests_per_second": round(count / elapsed),
                **counts,
            }
    finally:
        process.terminate()
        process.wait()
    anchor = results["anchor_httpx"]["requests_per_second"]
    return {
        "machine": machine(),
        "cpus": os.cpu_count(),
        "concurrency": concurrency,
        **results,
        "replay_over_httpx_anchor": round(
            results["cutover_replay"]["requests_per_second"] / anchor, 2
        ),
        "aiohttp_over_httpx_anchor": round(
            results["anchor_aiohttp"]["requests_per_second"] / anchor, 2
        ),
    }


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--serve":
        serve(int(sys.argv[2]), int(sys.argv[3]))
        return
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=32)
    arguments = parser.parse_args()
    print(json.dumps(run(arguments.requests, arguments.concurrency), indent=2))


if __name__ == "__main__":
    main()
