"""Flag evaluation: ``cutover.choose`` and cutover's OpenFeature provider beside the flag tools a
team would use instead, and OFREP's bulk evaluation beside a plain FastAPI endpoint.

    python bench/flags.py [--calls 200000] [--seconds 5] [--flags 20]

In one run:

- per call, the fastest of 7 loops over 1,000 units: ``cutover.choose`` on a 50% canary; the
  OpenFeature SDK's ``get_boolean_value`` on its in-memory provider (a static flag: the
  cheapest evaluation the SDK does) and on cutover's provider; UnleashClient's ``is_enabled``
  on a 50% gradual rollout by user id, offline from a bootstrapped cache (no server, no
  metrics, no registration). Targets: choose at most 0.5x the in-memory provider and 0.05x
  Unleash.
- requests a second of ``POST /ofrep/v1/evaluate/flags`` on ``cutover serve`` (SQLite, a
  viewer token, ``--flags`` canary migrations, a different unit per request) and of a plain
  FastAPI endpoint under uvicorn that parses the body and returns the JSON cutover gave, both
  loaded by the same aiohttp client, 32 requests in flight, on the same machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request, Response  # at the top: the anchor's annotations need them

import cutover
from _harness import emit, fresh_runtime, per_call_ns, running
from cutover import operations
from cutover.model import Mode

FLAG = "jax-optimization"
UNITS = [f"user-{i}" for i in range(1000)]


def _canary(store: Any, name: str, percent: float) -> None:
    operations.set_state(
        store,
        name,
        operations.Change(mode=Mode.CANARY, percent=percent),
        reason="bench",
        actor="bench",
        clock=time.time,
    )


def _loop(evaluate: Any) -> Any:
    units = UNITS

    def loop(calls: int) -> None:
        for i in range(calls):
            evaluate(units[i % 1000])

    return loop


def per_call(calls: int) -> dict[str, Any]:
    """Nanoseconds per evaluation of each tool, and the ratios the issue sets targets for."""
    from openfeature import api
    from openfeature.evaluation_context import EvaluationContext
    from openfeature.provider.in_memory_provider import InMemoryFlag, InMemoryProvider

    from cutover.flags.openfeature import CutoverProvider

    contexts = {unit: EvaluationContext(targeting_key=unit) for unit in UNITS}
    with fresh_runtime() as runtime:
        _canary(runtime.store, FLAG, 50)
        runtime.refresh()
        choose = cutover.choose
        figures = {"choose_ns": per_call_ns(_loop(lambda u: choose(FLAG, u)), calls)}

        flag = InMemoryFlag("on", {"on": True, "off": False})
        api.set_provider_and_wait(InMemoryProvider({FLAG: flag}), "memory")
        api.set_provider_and_wait(CutoverProvider(), "cutover")
        memory, ours = api.get_client("memory"), api.get_client("cutover")
        try:
            figures["openfeature_in_memory_ns"] = per_call_ns(
                _loop(lambda u: memory.get_boolean_value(FLAG, False, contexts[u])), calls // 10
            )
            figures["openfeature_cutover_provider_ns"] = per_call_ns(
                _loop(lambda u: ours.get_boolean_value(FLAG, False, contexts[u])), calls // 10
            )
        finally:
            api.shutdown()
    figures["unleash_is_enabled_ns"] = _unleash(calls // 20)
    for key in list(figures):
        figures[key] = round(figures[key], 1)
    memory_ns, unleash_ns = figures["openfeature_in_memory_ns"], figures["unleash_is_enabled_ns"]
    figures["choose_vs_in_memory"] = round(figures["choose_ns"] / memory_ns, 4)
    figures["choose_vs_unleash"] = round(figures["choose_ns"] / unleash_ns, 4)
    figures["cutover_provider_vs_in_memory"] = round(
        figures["openfeature_cutover_provider_ns"] / memory_ns, 3
    )
    figures["targets_met"] = {
        "choose <= 0.5x in-memory provider": figures["choose_vs_in_memory"] <= 0.5,
        "choose <= 0.05x Unleash is_enabled": figures["choose_vs_unleash"] <= 0.05,
    }
    return figures


def _unleash(calls: int) -> float:
    from UnleashClient import UnleashClient
    from UnleashClient.cache import FileCache

    with tempfile.TemporaryDirectory() as folder:
        cache = FileCache("bench", directory=folder)
        rollout = {"rollout": "50", "stickiness": "userId", "groupId": FLAG}
        cache.bootstrap_from_dict(
            {
                "version": 1,
                "features": [
                    {
                        "name": FLAG,
                        "enabled": True,
                        "strategies": [{"name": "flexibleRollout", "parameters": rollout}],
                    }
                ],
            }
        )
        client = UnleashClient(
            url="http://127.0.0.1:9",  # never contacted: offline, from the cache
            app_name="bench",
            disable_metrics=True,
            disable_registration=True,
            cache=cache,
        )
        client.initialize_client(fetch_toggles=False)
        contexts = {unit: {"userId": unit} for unit in UNITS}
        try:
            split = sum(client.is_enabled(FLAG, contexts[u]) for u in UNITS)
            assert 400 < split < 600, f"Unleash enabled {split} of 1,000 units at 50%"
            return per_call_ns(_loop(lambda u: client.is_enabled(FLAG, contexts[u])), calls)
        finally:
            client.destroy()


async def _load(url: str, token: str | None, seconds: float, in_flight: int) -> dict[str, Any]:
    """Requests a second of bulk evaluations, a different unit each, ``in_flight`` at a time."""
    import aiohttp

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    bodies = [json.dumps({"context": {"targetingKey": unit}}).encode() for unit in UNITS]
    done = errors = 0
    deadline = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(limit=in_flight)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:

        async def worker(offset: int) -> None:
            nonlocal done, errors
            n = offset
            while time.perf_counter() < deadline:
                async with session.post(
                    f"{url}/ofrep/v1/evaluate/flags",
                    data=bodies[n % 1000],
                    headers={"Content-Type": "application/json"},
                ) as answer:
                    await answer.read()
                    if answer.status == 200:
                        done += 1
                    else:
                        errors += 1
                n += in_flight

        started = time.perf_counter()
        await asyncio.gather(*(worker(i) for i in range(in_flight)))
        elapsed = time.perf_counter() - started
    return {"requests_per_second": round(done / elapsed), "errors": errors}


def ofrep_bulk(seconds: float, flags: int) -> dict[str, Any]:
    """cutover serve's bulk OFREP evaluation beside a plain endpoint returning the same JSON."""
    from cutover.http import hash_token, new_token
    from cutover.store import open_store

    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        url = f"sqlite:///{work / 'bench.db'}"
        store = open_store(url)
        for n in range(flags):
            _canary(store, f"component-{n:02d}", 5 + n)
        store.close()
        token = new_token()
        tokens = work / "tokens.yaml"
        tokens.write_text(
            f"tokens:\n  - name: bench\n    role: viewer\n    sha256: {hash_token(token)}\n"
        )
        env = {**os.environ, "CUTOVER_STORE": url}
        serve = [sys.executable, "-m", "cutover", "serve", "--port", "{port}"]
        serve += ["--tokens", str(tokens)]
        with running(serve, env, work / "serve.log") as (cutover_url, _):
            import httpx

            sample = httpx.post(
                f"{cutover_url}/ofrep/v1/evaluate/flags",
                json={"context": {"targetingKey": UNITS[0]}},
                headers={"Authorization": f"Bearer {token}"},
            )
            assert len(sample.json()["flags"]) == flags, sample.text
            (work / "body.json").write_bytes(sample.content)
            ours = asyncio.run(_load(cutover_url, token, seconds, 32))
        anchor = [sys.executable, __file__, "--serve-anchor", "{port}", str(work / "body.json")]
        with running(anchor, None, work / "anchor.log") as (anchor_url, _):
            plain = asyncio.run(_load(anchor_url, None, seconds, 32))
    return {
        "flags_per_answer": flags,
        "cutover_serve": ours,
        "plain_fastapi": plain,
        "ratio": round(ours["requests_per_second"] / plain["requests_per_second"], 3),
        "note": f"the client and the server share the machine's {os.cpu_count()} CPUs",
    }


def serve_anchor(port: int, body_file: str) -> None:
    """The anchor: FastAPI under uvicorn, as `cutover serve` runs them, answering every bulk
    evaluation with the same bytes after parsing the request's JSON."""
    import uvicorn

    body = Path(body_file).read_bytes()
    app = FastAPI()

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/ofrep/v1/evaluate/flags")
    async def bulk(request: Request) -> Response:
        await request.json()
        return Response(body, media_type="application/json")

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", server_header=False)


def run(calls: int, seconds: float, flags: int) -> dict[str, Any]:
    return emit(
        "openfeature",
        {
            "per_call": per_call(calls),
            "ofrep_bulk": ofrep_bulk(seconds, flags),
            "command": f"python bench/flags.py --calls {calls} --seconds {seconds:g}"
            f" --flags {flags}",
        },
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=200_000)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--flags", type=int, default=20)
    parser.add_argument("--serve-anchor", nargs=2, metavar=("PORT", "BODY"), help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.serve_anchor:
        serve_anchor(int(options.serve_anchor[0]), options.serve_anchor[1])
        return
    run(options.calls, options.seconds, options.flags)


if __name__ == "__main__":
    main()
