"""Replaying requests against new and legacy (live, or as recorded) and tallying what they did.

Each request is matched to its route the way the proxy matches it (the same routes file, the
same :meth:`~cutover.proxy._config.Routes.find`), sent to new (and to a live legacy at the same
time), and the two answers are compared with the route's options by the proxy's comparator, so
a drift here has the fingerprint ``cutover drifts --group`` would show for it behind the proxy.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from cutover.compare import Diff, Difference, exceptions, judge
from cutover.model import Arm, Comparison, Observation
from cutover.proxy._compare import Answer, AnswerComparator
from cutover.proxy._config import Routes, Upstream, build_routes
from cutover.proxy._upstream import UpstreamError
from cutover.replay._client import Client
from cutover.replay._input import Recorded, Request
from cutover.replay._verdict import Tally

MIGRATION = "replay"
"""The migration a replay's comparisons name when the routes file names none."""


@dataclass(frozen=True, slots=True)
class ReplayOptions:
    """Where to send the requests and how: ``legacy`` None compares with recorded answers."""

    new: Upstream
    legacy: Upstream | None = None
    routes: Routes | None = None  # None: the route each recording names, else one catch-all
    concurrency: int = 16
    rate: float | None = None  # requests per second at most, all workers together
    timeout: float = 30.0
    compare_bytes: int = 1 << 20


def retired(requests: Sequence[Request], routes: Routes | None) -> tuple[list[Request], int]:
    """The requests to replay, and how many were left out because their route is ``gone``:
    new never answers those (the proxy answers 410 for it), so comparing would only report
    the retirement as a drift."""
    if routes is None:
        return list(requests), 0
    kept = [r for r in requests if routes.find(r.method, r.path).gone is None]
    return kept, len(requests) - len(kept)


def run(
    requests: Sequence[Request],
    options: ReplayOptions,
    progress: Callable[[int], None] | None = None,
) -> Tally:
    """Replay ``requests`` on a fresh event loop (uvloop when installed) and tally them;
    ``progress(done)`` is called about ten times a second."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop comes with the proxy extra
        return asyncio.run(replay(requests, options, progress))
    return uvloop.run(replay(requests, options, progress))


async def replay(
    requests: Sequence[Request],
    options: ReplayOptions,
    progress: Callable[[int], None] | None = None,
) -> Tally:
    """Replay ``requests`` with ``options.concurrency`` in flight and tally the outcomes."""
    replayer = _Replayer(options)
    loop = asyncio.get_running_loop()
    pending = iter(requests)
    next_slot = loop.time()
    interval = 1.0 / options.rate if options.rate else 0.0

    async def worker() -> None:
        nonlocal next_slot
        for request in pending:  # one shared iterator: each request is taken once
            if interval:
                slot, next_slot = next_slot, max(next_slot, loop.time()) + interval
                delay = slot - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            await replayer.one(request)

    reporter = None
    if progress is not None:
        reporter = loop.create_task(_report(replayer, progress))
    try:
        workers = min(options.concurrency, max(1, len(requests)))
        await asyncio.gather(*(worker() for _ in range(workers)))
    finally:
        if reporter is not None:
            reporter.cancel()
        replayer.close()
    if progress is not None:
        progress(replayer.done)
    return replayer.tally


async def _report(replayer: _Replayer, progress: Callable[[int], None]) -> None:
    while True:
        progress(replayer.done)
        await asyncio.sleep(0.1)


class _Replayer:
    """Sends, compares and tallies one request at a time (many at once on one loop)."""

    def __init__(self, options: ReplayOptions) -> None:
        self.options = options
        self.routes = options.routes
        self.fallback = (options.routes or build_routes(MIGRATION, None)).fallback
        self.tally = Tally(label="route")
        self.done = 0
        self.new = Client(options.new, timeout=options.timeout, limit=options.compare_bytes)
        self.legacy = (
            None
            if options.legacy is None
            else Client(options.legacy, timeout=options.timeout, limit=options.compare_bytes)
        )
        self.comparators: dict[int, AnswerComparator] = {}
        self.compare_exceptions = exceptions()

    def close(self) -> None:
        self.new.close()
        if self.legacy is not None:
            self.legacy.close()

    async def one(self, request: Request) -> None:
        try:
            await self._one(request)
        finally:
            self.done += 1

    async def _one(self, request: Request) -> None:
        route = self.fallback
        if self.routes is not None:
            route = self.routes.find(request.method, request.path)
        template = route.template if self.routes is not None or not request.route else request.route
        if request.problem is not None:
            self.tally.add(template, None, error=request.problem)
            return
        recorded = request.recorded
        if self.legacy is None and (recorded is None or recorded.error is not None):
            why = "no legacy answer was recorded" if recorded is None else "legacy failed then"
            self.tally.add(
                template,
                None,
                error=f"{request.where}: {why}; replay against a live legacy with --legacy URL",
            )
            return
        limit = None
        if self.legacy is None and recorded is not None and recorded.length > len(recorded.body):
            limit = len(recorded.body)  # compared as legacy's was: the prefix, then the digest
        sent_new = self.new.send(request, limit)
        sent_legacy = None if self.legacy is None else self.legacy.send(request)
        new_answer, new_ns, new_error = await _outcome(sent_new)
        if sent_legacy is not None:
            legacy_answer, legacy_ns, legacy_error = await _outcome(sent_legacy)
            legacy_ms = None if legacy_ns is None else legacy_ns / 1e6
        else:
            assert recorded is not None
            legacy_answer, legacy_error = _recorded_answer(recorded), None
            legacy_ms = recorded.latency_ms
            legacy_ns = int((legacy_ms or 0) * 1e6)
        new_ms = None if new_ns is None else new_ns / 1e6
        if new_error is not None or legacy_error is not None:
            failures = [
                f"{arm}: {e}" for arm, e in (("legacy", legacy_error), ("new", new_error)) if e
            ]
            self.tally.add(
                template, None, legacy_ms=legacy_ms, new_ms=new_ms, error="; ".join(failures)
            )
            return
        assert legacy_answer is not None and new_answer is not None
        options = route.compare
        comparator = self.comparators.get(id(options))
        if comparator is None:
            comparator = self.comparators[id(options)] = AnswerComparator(options)
        legacy_value, new_value = legacy_answer.value(options), new_answer.value(options)

        def compare(left: Any, right: Any) -> Diff:
            found = comparator(left, right)
            scoped = tuple(
                Difference(d.path, d.legacy, d.new, d.note, template) for d in found.differences
            )
            return Diff(scoped, found.truncated, found.meta)

        legacy = Observation(Arm.LEGACY, legacy_value, None, legacy_ns)
        new = Observation(Arm.NEW, new_value, None, new_ns or 0)
        verdict, diff, error = judge(compare, self.compare_exceptions, legacy, new)
        comparison = Comparison(route.migration, verdict, legacy, new, diff=diff, error=error)
        self.tally.add(
            template,
            comparison,
            legacy=_measured(legacy_value),
            new=_measured(new_value),
            legacy_ms=legacy_ms,
            new_ms=new_ms,
            ignore=options.ignore,
        )


async def _outcome(
    sent: asyncio.Future[tuple[Answer, int]],
) -> tuple[Answer | None, int | None, str | None]:
    try:
        answer, elapsed = await sent
    except UpstreamError as error:
        return None, None, str(error)
    return answer, elapsed, None


def _recorded_answer(recorded: Recorded) -> Answer:
    """Legacy's recorded answer as the comparator sees a live one: a body recorded only in part
    is compared by its prefix and the digest of the whole."""
    answer = _RecordedAnswer(status=recorded.status, headers=recorded.headers)
    answer.add(recorded.body)
    answer.length = max(recorded.length, len(recorded.body))
    answer.sha256 = recorded.sha256 or ""
    return answer


@dataclass(slots=True)
class _RecordedAnswer(Answer):
    sha256: str = ""

    @property
    def digest(self) -> str:
        return self.sha256 if self.sha256 and not self.complete else Answer.digest.fget(self)  # type: ignore[attr-defined]


def _measured(value: dict[str, Any]) -> dict[str, Any]:
    """What numeric deltas and categorical matches are measured on: the status (a category:
    401 is not 100.5% of 200) and the JSON body (paths ``$.status``, ``$.body.score``), or the
    body's digest when it is not JSON."""
    status = str(value["status"])
    body = value["body"]
    if isinstance(body, dict) and "json" in body:
        return {"status": status, "body": body["json"]}
    if isinstance(body, dict):
        return {"status": status, "body": body.get("sha256")}
    return {"status": status}
