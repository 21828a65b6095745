"""Headless Chromium through Playwright, and a realistic store for the dashboard to show."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cutover import operations
from cutover.clock import ManualClock
from cutover.control.controller import Controller
from cutover.control.plan import parse_plan
from cutover.model import Mode, State
from cutover.store import FlushBatch, InstanceInfo, open_store
from cutover.telemetry import windows as w
from cutover.telemetry.drift import DriftSample

from ..conftest import need
from ..control.traffic import Traffic

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def _browser_reason() -> str | None:
    """Why the browser tests cannot run here, or None when they can."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright for Python is not installed (pip install -e '.[dev]')"
    if not CHROMIUM.exists():
        return f"Chromium is not installed at {CHROMIUM} (apt-get install chromium)"
    return None


def need_browser() -> None:
    need(_browser_reason())


@contextmanager
def chromium() -> Iterator[Browser]:
    """The system's Chromium, headless; never a downloaded browser."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


class Console:
    """What a page reported as wrong: console errors (a CSP refusal among them), uncaught
    exceptions, and static files that failed to load."""

    def __init__(self, page: Page) -> None:
        self.errors: list[str] = []
        page.on("console", self._message)
        page.on("pageerror", lambda error: self.errors.append(f"uncaught: {error}"))
        page.on("response", self._response)

    def _message(self, message: Any) -> None:
        # Chromium logs every refused request too; the tests provoke some (401, 403, 409) and
        # check those answers themselves, so only the static files' are counted (below).
        if message.type == "error" and "Failed to load resource" not in message.text:
            self.errors.append(message.text)

    def _response(self, response: Any) -> None:
        if "/static/" in response.url and response.status >= 400:
            self.errors.append(f"{response.status} for {response.url}")


def sign_in(page: Page, base: str, token: str) -> None:
    """Sign in through the form, as a person would."""
    page.goto(f"{base}/login")
    page.fill("input[name=token]", token)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/")


def screenshot(page: Page, name: str, *, full_page: bool = True) -> Path:
    """Keep a screenshot under test-artifacts/ for people to look at after the run."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    return path


def keep_as_doc_image(page: Page, last: str) -> Path:
    """Save the top of the page down to the element ``last`` as docs/img/dashboard.png, the
    image the README embeds."""
    page.set_viewport_size({"width": 1280, "height": 900})
    box = page.locator(last).bounding_box()
    assert box is not None, f"{last} is not on the page"
    target = Path(__file__).resolve().parents[2] / "docs" / "img" / "dashboard.png"
    target.parent.mkdir(exist_ok=True)
    bottom = box["y"] + box["height"] + 16
    page.screenshot(
        path=str(target), full_page=True, clip={"x": 0, "y": 0, "width": 1280, "height": bottom}
    )
    return target


# -- a realistic store ------------------------------------------------------------------------

PLAN = {
    "migration": "pricing",
    "description": "pricing rewrite: shadow, then 5%, 25% and 50% of users on new, then new",
    "steps": [
        {"mode": "shadow", "hold": "30m", "min_comparisons": 5000},
        {"mode": "canary", "percent": 5, "sample": 0.5, "hold": "1h"},
        {"mode": "canary", "percent": 25, "hold": "2h"},
        {"mode": "canary", "percent": 50, "hold": "4h"},
        {"mode": "new", "hold": "1d", "approval": True},
    ],
    "checks": [
        {"name": "drift", "metric": "drift_rate", "max": 0.001, "window": "1h"},
        {"name": "errors", "metric": "error_rate", "max": 0.01, "window": "15m"},
        {
            "name": "latency",
            "metric": "p95_ms",
            "max_ratio_to": "legacy",
            "max": 1.5,
            "window": "30m",
            "severity": "warning",
        },
    ],
}

CAUSES = {
    "pricing": [
        (
            "$.total",
            {"args": [{"order": "A-1042", "lines": 3, "currency": "EUR"}], "kwargs": {}},
            {"total": "19.99", "tax": "3.80", "currency": "EUR"},
            {"total": "20.00", "tax": "3.80", "currency": "EUR"},
            [{"path": "$.total", "kind": "changed", "legacy": "19.99", "new": "20.00"}],
        ),
        (
            "$.discounts[*].code",
            {"args": [{"order": "A-2210", "lines": 1, "coupon": "SPRING"}], "kwargs": {}},
            {"total": "8.00", "discounts": [{"code": "SPRING", "amount": "2.00"}]},
            {"total": "8.00", "discounts": [{"code": "spring", "amount": "2.00"}]},
            [
                {
                    "path": "$.discounts[0].code",
                    "kind": "changed",
                    "legacy": "SPRING",
                    "new": "spring",
                }
            ],
        ),
    ],
    "codec": [
        (
            "$.amount",
            {"args": [{"payment": "p-77", "amount": 1e21}], "kwargs": {}},
            {"amount": "1000000000000000000000"},
            {"amount": "1e+21"},
            [
                {
                    "path": "$.amount",
                    "kind": "changed",
                    "legacy": "1000000000000000000000",
                    "new": "1e+21",
                }
            ],
        )
    ],
}


@dataclass(frozen=True, slots=True)
class Scenario:
    """What :func:`seed` left in the store."""

    now: float
    migrations: tuple[str, ...]


def seed(url: str, minutes: int = 60) -> Scenario:
    """An hour of three migrations, ending now on the wall clock: ``pricing`` walked by the
    controller through shadow into a 5% canary, ``codec`` on a 25% canary that drifts, and
    ``search``, configured but idle. Telemetry is written the way app instances write it."""
    store = open_store(url)
    try:
        now = time.time()
        start = now - minutes * 60
        clock = ManualClock(start)

        def set_state(name: str, actor: str, reason: str, **fields: Any) -> None:
            change = operations.Change(**fields)
            operations.set_state(store, name, change, reason=reason, actor=actor, clock=clock)

        set_state(
            "search", "maria", "baseline before the search rewrite (SRCH-3)", mode=Mode.LEGACY
        )
        set_state(
            "pricing", "maria", "baseline before the pricing rewrite (PRC-12)", mode=Mode.LEGACY
        )
        set_state(
            "codec",
            "ci-deploy",
            "canary after the overflow fix",
            mode=Mode.CANARY,
            percent=25,
            sample=0.2,
        )

        codec_store = _Buffered(store)
        codec = Traffic(
            codec_store,  # type: ignore[arg-type]
            "codec",
            ManualClock(start),
            calls=900,
            legacy_ms=4.0,
            new_ms=lambda state: 2.6,
            drift=lambda state: 0.004,
            seed=7,
        )
        pricing_store = _Buffered(store)
        pricing = Traffic(
            pricing_store,  # type: ignore[arg-type]
            "pricing",
            clock,
            calls=1500,
            legacy_ms=3.0,
            new_ms=lambda state: 2.4,
            sigma=0.35,
            drift=lambda state: 0.0003 if state.mode is Mode.SHADOW else 0.0001,
            new_errors=lambda state: 0.0005,
            seed=3,
        )
        controller = Controller(store, clock=clock)
        # One minute more than the hour: the minute under way has its calls too, so the hour
        # still looks whole to a page loaded a minute after seeding.
        for minute in range(minutes + 1):
            if minute == 10:
                pricing_store.flush()
                controller.start(
                    parse_plan(PLAN),
                    actor="admin",
                    reason="pricing rewrite, ticket PRC-12",
                    source="pricing.yaml",
                )
            pricing.minute()
            codec.minute()
            if minute % 5 == 4:
                # The controller ticks every few minutes of the story: enough to promote on time.
                pricing_store.flush()
                controller.tick()
        pricing_store.flush()
        codec_store.flush()
        _drift_samples(store, "pricing", start, now)
        _drift_samples(store, "codec", start, now)
        for index, name in enumerate(("pricing", "pricing", "codec")):
            state = store.state(name) or State()
            store.heartbeat(
                InstanceInfo(
                    f"{name}-api-{index}:{4100 + index}",
                    f"{name}-api-{index}",
                    4100 + index,
                    start,
                    now,
                    {"versions": {name: state.version}, "flush_interval": 5},
                )
            )
        return Scenario(now, ("codec", "pricing", "search"))
    finally:
        store.close()


def _drift_samples(store: Any, name: str, since: float, now: float) -> None:
    """Counts per root cause that add up to the drifts the windows hold, and a few samples: the
    first cause has four drifts in five, the others share the rest."""
    causes = CAUSES[name]
    fingerprints = []
    samples = []
    number = 0
    for start, arms in sorted(store.series(name, since, now).items()):
        for _ in range(sum(counts.counts[w.DRIFTS] for counts in arms.values())):
            number += 1
            rest = causes[1:] or causes
            cause = rest[number // 5 % len(rest)] if number % 5 == 0 else causes[0]
            fingerprint, call, legacy, new, diff = cause
            fingerprints.append((start, name, fingerprint, 1))
            if len(samples) < 8:
                samples.append(
                    DriftSample(
                        name,
                        start + 30,
                        f"user-{start % 9973}",
                        fingerprint,
                        call,
                        legacy,
                        new,
                        diff,
                    )
                )
    store.write_flush(
        FlushBatch("seed", 1, now, samples=samples, run=f"drifts-{name}", fingerprints=fingerprints)
    )


class _Buffered:
    """A store for :class:`Traffic` that merges its minutes into one flush written on demand:
    the same rows as a flush a minute, in a few statements."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.pending: FlushBatch | None = None
        self.states: dict[str, State | None] = {}

    def state(self, name: str) -> State | None:
        if name not in self.states:
            self.states[name] = self.store.state(name)
        return self.states[name]

    def write_flush(self, batch: FlushBatch) -> bool:
        if self.pending is None:
            self.pending = batch
        else:
            self.pending.absorb(batch)
        return True

    def flush(self) -> None:
        if self.pending is not None:
            self.store.write_flush(self.pending)
        self.pending = None
        self.states.clear()
