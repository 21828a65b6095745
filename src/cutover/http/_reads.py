"""Reads from memory: states from the runtime's snapshot, the list and series from a short cache.

``cutover serve`` configures a runtime on the store it serves; that runtime keeps every stored
state in memory, reloaded at once when PostgreSQL announces a change (LISTEN/NOTIFY) and at
least every ``refresh_interval`` otherwise. A state read answers from that snapshot, encoded
once per state; a write through this API reloads the snapshot before it answers, so its caller
reads it back at once. The list and series read telemetry, which instances write only every
flush: a computed list is answered again for ``Settings.refresh_seconds`` (the dashboard's
poll) unless a state changes, and a live series computes again only its newest bucket once
that is ``refresh_seconds`` old, keeping the older ones for ``read_cache_seconds`` (they change
only when an instance writes what it buffered through an outage). Every answer carries an ETag; a
matching ``If-None-Match`` gets 304. While the store cannot be read the snapshot is still
served, with a ``Cutover-Stale`` header giving its age in seconds.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from cutover import runtime as rt
from cutover.http._deps import Settings
from cutover.model import State

STALE_HEADER = "Cutover-Stale"
"""Present when the store could not be read at the last attempt: the answer is the last known
one, this many seconds old."""

MAX_CACHED = 10_000
"""Computed list and series answers kept at most; past it, expired ones go, then the oldest."""


@dataclass(frozen=True, slots=True)
class Answer:
    """A JSON body encoded once, its ETag, and how old it is if the store was unreadable."""

    body: bytes
    etag: str
    stale: float | None = None

    def response(self, if_none_match: str | None) -> Response:
        headers = {"ETag": self.etag}
        if self.stale is not None:
            headers[STALE_HEADER] = f"{self.stale:.1f}"
        if if_none_match is not None and _matches(if_none_match, self.etag):
            return Response(status_code=304, headers=headers)
        return Response(self.body, media_type="application/json", headers=headers)


def answer(content: Any, stale: float | None = None) -> Answer:
    """``content`` encoded as FastAPI would, with an ETag over the bytes themselves: it changes
    exactly when the body does."""
    body = JSONResponse(content).body
    return Answer(body, f'"{hashlib.sha256(body).hexdigest()[:32]}"', stale)


def _matches(if_none_match: str, etag: str) -> bool:
    if if_none_match.strip() == "*":
        return True
    tags = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
    return etag in tags


def state_json(name: str, state: State | None) -> dict[str, Any]:
    """What the state read answers: the state (defaults when none is stored) and its name."""
    current = state or State()
    return {
        "name": name,
        "stored": state is not None,
        **current.to_dict(),
        "effective_percent": current.effective_percent,
    }


@dataclass(frozen=True, slots=True)
class _Computed:
    answer: Answer
    expires: float  # monotonic
    states: dict[str, State] | None  # the snapshot the answer agrees with, when it shows states


@dataclass(frozen=True, slots=True)
class _Chart:
    points: list[dict[str, Any]]  # each bucket's JSON, oldest first
    tail_at: float  # clock time its newest bucket was computed
    whole_until: float  # monotonic time until which its older buckets are answered again
    answer: Answer


class Reads:
    """The answers of one server's read endpoints, from memory where it holds them."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._encoded: dict[str, tuple[State, Answer]] = {}
        self._computed: dict[Hashable, _Computed] = {}
        self._charts: dict[Hashable, _Chart] = {}
        self._lock = threading.Lock()

    def runtime(self) -> rt.Runtime | None:
        """The configured runtime when it serves this server's store and has loaded its states
        at least once; None otherwise (every read then goes to the store)."""
        runtime = rt.configured()
        if runtime is None or runtime.states_loaded_at is None:
            return None
        if getattr(runtime.store, "url", None) != getattr(self.settings.store, "url", ()):
            return None
        return runtime

    def stale(self, runtime: rt.Runtime) -> float | None:
        """Seconds since the snapshot was loaded, when the last attempt to reload it failed."""
        loaded_at = runtime.states_loaded_at
        if runtime.states_reachable is not False or loaded_at is None:
            return None
        return max(0.0, runtime.clock() - loaded_at)

    def state(self, name: str) -> Answer | None:
        """The stored state of ``name`` from the snapshot; None when the snapshot cannot say
        (no runtime on this store, or ``name`` has no stored state in it)."""
        runtime = self.runtime()
        if runtime is None:
            return None
        found = runtime.states.get(name)
        if found is None:
            return None
        encoded = self._encoded.get(name)
        if encoded is None or encoded[0] != found:
            encoded = (found, answer(state_json(name, found)))
            self._encoded[name] = encoded
        stale = self.stale(runtime)
        if stale is None:
            return encoded[1]
        return Answer(encoded[1].body, encoded[1].etag, stale)

    def cached(self, key: Hashable, *, with_states: bool = False) -> Answer | None:
        """The answer kept under ``key``, unless it expired; one that shows states
        (``with_states``) also goes as soon as the snapshot changes."""
        kept = self._computed.get(key)
        if kept is None or kept.expires <= time.monotonic():
            return None
        if not with_states:
            return kept.answer
        runtime = self.runtime()
        if runtime is None or kept.states is None:
            return None
        states = runtime.states
        if kept.states is not states:
            if kept.states != states:
                return None
            self._remember(key, _Computed(kept.answer, kept.expires, states))  # compare less
        return kept.answer

    def known(self, name: str) -> bool:
        """Whether the snapshot holds a stored state for ``name`` (then no store round trip
        is needed to know the migration exists)."""
        runtime = self.runtime()
        return runtime is not None and name in runtime.states

    def snapshot(self) -> dict[str, State] | None:
        """The states in memory now (None without a runtime on this store): take it before
        computing an answer that shows states, and hand it to :meth:`keep`."""
        runtime = self.runtime()
        return None if runtime is None else runtime.states

    def keep(
        self,
        key: Hashable,
        content: Any,
        *,
        seconds: float,
        with_states: bool = False,
        states: dict[str, State] | None = None,
    ) -> Answer:
        """``content`` as an answer, kept under ``key`` for ``seconds``. One that shows states
        is kept only with the :meth:`snapshot` taken before it was computed."""
        fresh = answer(content)
        keep = seconds
        if keep > 0 and (states is not None or not with_states):
            basis = states if with_states else None
            self._remember(key, _Computed(fresh, time.monotonic() + keep, basis))
        return fresh

    def live_series(
        self,
        key: Hashable,
        name: str,
        *,
        end: float,
        span: float,
        width: float,
        points: Callable[[float, float], list[dict[str, Any]]],
    ) -> Answer:
        """A series ending now, whose points ``points(since, until)`` computes bucket by
        bucket. Its newest bucket is computed again once it is ``refresh_seconds`` old (the
        dashboard's poll): instances keep adding to it. Its older buckets change only when an
        instance writes what it buffered through an outage, so they are kept for
        ``read_cache_seconds``, and a poll computes only the buckets from the newest kept one
        on (most often one)."""
        first = (end - span) // width * width
        kept = self._charts.get(key)
        now = time.monotonic()
        if (
            kept is not None
            and kept.whole_until > now
            and kept.points[0]["start"] <= first <= kept.points[-1]["start"]
        ):
            newest = kept.points[-1]["start"]
            if end - kept.tail_at < self.settings.refresh_seconds and end < newest + width:
                return kept.answer
            fresh = [p for p in kept.points if first <= p["start"] < newest] + points(newest, end)
            whole_until = kept.whole_until
        else:
            fresh = points(end - span, end)
            whole_until = now + self.settings.read_cache_seconds
        body = {"migration": name, "since": fresh[0]["start"], "until": end}
        found = answer({**body, "step_seconds": width, "points": fresh})
        self._bounded(self._charts, key, _Chart(fresh, end, whole_until, found))
        return found

    def _remember(self, key: Hashable, computed: _Computed) -> None:
        self._bounded(self._computed, key, computed)

    def _bounded(self, kept: dict[Hashable, Any], key: Hashable, value: Any) -> None:
        """Keep ``value`` under ``key``; past MAX_CACHED entries the oldest go."""
        with self._lock:
            kept[key] = value
            while len(kept) > MAX_CACHED:
                del kept[next(iter(kept))]

    def wrote(self) -> None:
        """After a write through this server: reload the snapshot (its caller reads its own
        write back at once) and forget computed answers that show states or rollouts."""
        with self._lock:
            self._computed = {k: v for k, v in self._computed.items() if v.states is None}
        runtime = self.runtime()
        if runtime is not None:
            runtime.refresh()


def reads_of(request: Request) -> Reads:
    return request.app.state.reads
