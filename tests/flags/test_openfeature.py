"""cutover's provider under the real Python OpenFeature SDK: answers, reasons, errors, events."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from openfeature import api
from openfeature.client import OpenFeatureClient
from openfeature.evaluation_context import EvaluationContext
from openfeature.event import EventDetails, ProviderEvent
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import Reason

import cutover
from cutover import operations
from cutover.flags.openfeature import CutoverProvider, ExposureHook
from cutover.model import Arm, Mode
from cutover.routing import bucket, threshold
from cutover.runtime import Runtime
from cutover.store import open_store

from ..conftest import need_postgres
from ..helpers import eventually, put, quiet, stored


@pytest.fixture
def client(runtime: Runtime) -> Iterator[OpenFeatureClient]:
    api.set_provider_and_wait(CutoverProvider())
    try:
        yield api.get_client()
    finally:
        api.shutdown()
        api.clear_hooks()


def unit(key: str) -> EvaluationContext:
    return EvaluationContext(targeting_key=key)


def test_every_unit_gets_the_arm_of_choose_and_of_the_formula(
    runtime: Runtime, client: OpenFeatureClient
) -> None:
    units = [f"user-{i}" for i in range(10_000)]
    for percent in (0.5, 5, 33.33, 50, 99.99):
        put(runtime, "jax-optimization", mode="canary", percent=percent)
        formula = [bucket("jax-optimization", u) < threshold(percent) for u in units]
        provider = [client.get_boolean_value("jax-optimization", False, unit(u)) for u in units]
        chosen = [cutover.choose("jax-optimization", unit=u) is Arm.NEW for u in units]
        assert provider == formula == chosen, percent
        strings = [client.get_string_value("jax-optimization", "?", unit(u)) for u in units[:500]]
        assert strings == ["new" if new else "legacy" for new in formula[:500]]


def test_reasons_variants_and_metadata(
    runtime: Runtime, client: OpenFeatureClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    put(runtime, "pricing", mode="canary", percent=25, pins_new=frozenset({"staff"}))
    pinned = client.get_boolean_details("pricing", False, unit("staff"))
    assert (pinned.value, pinned.reason, pinned.variant) == (True, Reason.TARGETING_MATCH, "new")
    split = client.get_string_details("pricing", "?", unit("customer-1"))
    assert split.reason == Reason.SPLIT and split.value == split.variant
    assert split.flag_metadata == {"mode": "canary", "percent": 25.0, "version": 1}
    put(runtime, "pricing", mode="new")
    static = client.get_boolean_details("pricing", False, unit("customer-1"))
    assert (static.value, static.reason, static.flag_metadata["version"]) == (
        True,
        Reason.STATIC,
        2,
    )
    monkeypatch.setenv("CUTOVER_FORCE_PRICING", "legacy")
    runtime.refresh()
    forced = client.get_boolean_details("pricing", True, unit("staff"))
    assert (forced.value, forced.reason, forced.variant) == (False, Reason.DISABLED, "legacy")
    assert forced.flag_metadata["forced"] is True and forced.flag_metadata["percent"] == 0.0


def test_errors_are_the_sdks(runtime: Runtime, client: OpenFeatureClient) -> None:
    missing = client.get_boolean_details("no-such-migration", True, unit("u"))
    assert (missing.value, missing.error_code, missing.reason) == (
        True,
        ErrorCode.FLAG_NOT_FOUND,
        Reason.ERROR,
    )
    assert "no-such-migration" in (missing.error_message or "")
    put(runtime, "pricing", mode="new")
    keyless = client.get_boolean_details("pricing", False)
    assert (keyless.value, keyless.error_code) == (False, ErrorCode.TARGETING_KEY_MISSING)
    wrong = client.get_integer_details("pricing", 7, unit("u"))
    assert (wrong.value, wrong.error_code) == (7, ErrorCode.TYPE_MISMATCH)


def test_a_declared_flag_is_found_before_any_state_is_stored(
    runtime: Runtime, client: OpenFeatureClient
) -> None:
    cutover.flag("declared", default=Mode.NEW)
    details = client.get_boolean_details("declared", False, unit("u"))
    assert (details.value, details.reason, details.error_code) == (True, "DEFAULT", None)


def test_the_provider_hook_counts_exposures(runtime: Runtime, client: OpenFeatureClient) -> None:
    put(runtime, "pricing", mode="canary", percent=50)
    answers = [client.get_boolean_value("pricing", False, unit(f"u{i}")) for i in range(300)]
    client.get_boolean_value("no-such-migration", False, unit("u"))  # an error: not counted
    stats = stored(runtime, "pricing")
    assert (stats.new.exposures, stats.legacy.exposures) == (sum(answers), 300 - sum(answers))
    assert any(isinstance(hook, ExposureHook) for hook in CutoverProvider().get_provider_hooks())


def test_a_state_change_emits_configuration_changed(
    runtime: Runtime, client: OpenFeatureClient
) -> None:
    put(runtime, "pricing", mode="legacy")
    seen: list[EventDetails] = []
    client.add_handler(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED, seen.append)
    put(runtime, "pricing", mode="new")
    assert [event.flags_changed for event in seen] == [["pricing"]]
    runtime.refresh()  # nothing changed: no event
    assert len(seen) == 1


def test_a_change_by_another_process_arrives_by_notify(pg_url: str) -> None:
    need_postgres()
    runtime = quiet(pg_url, refresh_interval=3600, wait=5)  # only NOTIFY can bring it soon
    arrived = threading.Event()

    def handler(_: EventDetails) -> None:
        arrived.set()

    api.set_provider_and_wait(CutoverProvider())
    try:
        client = api.get_client()
        api.add_handler(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED, handler)
        assert runtime.wait_until_loaded(5)
        assert eventually(lambda: runtime.health().listening)
        other = open_store(pg_url)
        change = operations.Change(mode=Mode.NEW)
        operations.set_state(other, "pricing", change, reason="go", actor="ops", clock=time.time)
        other.close()
        assert arrived.wait(10), "no PROVIDER_CONFIGURATION_CHANGED within 10 s of the change"
        assert client.get_boolean_value("pricing", False, unit("u")) is True
    finally:
        api.remove_handler(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED, handler)
        api.shutdown()
