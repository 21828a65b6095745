"""OFREP in a running ``cutover serve``: the formula's arms, OFREP's shapes, ETags, tokens."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from cutover import operations
from cutover.model import Mode
from cutover.routing import bucket, threshold
from cutover.store import open_store

from ..helpers import eventually
from ..tcpproxy import TcpProxy
from .conftest import Server


def change(store_url: str, name: str, **fields: object) -> None:
    store = open_store(store_url)
    try:
        operations.set_state(
            store,
            name,
            operations.Change(**fields),  # type: ignore[arg-type]
            reason="test",
            actor="tests",
            clock=time.time,
        )
    finally:
        store.close()


@pytest.fixture
def server(serve: Callable[..., Server], tmp_path: Path) -> Server:
    url = f"sqlite:///{tmp_path / 'ofrep.db'}"
    change(url, "pricing", mode=Mode.CANARY, percent=30, pin_new=("staff",))
    change(url, "codec", mode=Mode.NEW)
    return serve(url)


def context(unit: object) -> dict[str, object]:
    return {"context": {"targetingKey": unit}}


def test_one_flag_gives_each_unit_its_arm_with_a_reason(server: Server) -> None:
    with server.client("viewer") as client:
        for i in range(300):
            unit = f"user-{i}"
            answer = client.post("/ofrep/v1/evaluate/flags/pricing", json=context(unit))
            assert answer.status_code == 200, answer.text
            new = bucket("pricing", unit) < threshold(30)
            assert answer.json() == {
                "key": "pricing",
                "reason": "SPLIT",
                "variant": "new" if new else "legacy",
                "value": new,
                "metadata": {"mode": "canary", "percent": 30.0, "version": 1},
            }
        staff = client.post("/ofrep/v1/evaluate/flags/pricing", json=context("staff")).json()
        assert (staff["reason"], staff["value"]) == ("TARGETING_MATCH", True)
        codec = client.post("/ofrep/v1/evaluate/flags/codec", json=context("u")).json()
        assert (codec["reason"], codec["variant"]) == ("STATIC", "new")


def test_errors_have_ofreps_shapes(server: Server) -> None:
    with server.client("viewer") as client:
        missing = client.post("/ofrep/v1/evaluate/flags/nope", json=context("u"))
        assert missing.status_code == 404
        assert missing.json()["key"] == "nope"
        assert missing.json()["errorCode"] == "FLAG_NOT_FOUND"
        for body, code in (
            ({"context": {}}, "TARGETING_KEY_MISSING"),
            (None, "TARGETING_KEY_MISSING"),
            (context(42), "INVALID_CONTEXT"),
            ({"context": "u"}, "INVALID_CONTEXT"),
            ([1], "INVALID_CONTEXT"),
        ):
            one = client.post("/ofrep/v1/evaluate/flags/pricing", json=body)
            assert (one.status_code, one.json()["errorCode"]) == (400, code), one.text
            assert one.json()["key"] == "pricing" and one.json()["errorDetails"]
            bulk = client.post("/ofrep/v1/evaluate/flags", json=body)
            assert (bulk.status_code, bulk.json()["errorCode"]) == (400, code), bulk.text
        garbled = client.post(
            "/ofrep/v1/evaluate/flags",
            content=b"{not json",
            headers={"content-type": "application/json"},
        )
        assert (garbled.status_code, garbled.json()["errorCode"]) == (400, "PARSE_ERROR")


def test_tokens_are_the_viewer_tokens(server: Server) -> None:
    for headers in ({}, {"Authorization": "Bearer cut_wrong"}):
        refused = httpx.post(
            f"{server.url}/ofrep/v1/evaluate/flags/pricing", json=context("u"), headers=headers
        )
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"] == "Bearer"
        assert "token" in refused.json()["error"]
    with server.client("admin") as client:
        assert client.post("/ofrep/v1/evaluate/flags", json=context("u")).status_code == 200


def test_bulk_answers_every_stored_flag_and_304_until_a_state_changes(server: Server) -> None:
    with server.client("viewer") as client:
        first = client.post("/ofrep/v1/evaluate/flags", json=context("user-7"))
        assert first.status_code == 200
        flags = {flag["key"]: flag for flag in first.json()["flags"]}
        assert sorted(flags) == ["codec", "pricing"]
        assert flags["pricing"]["value"] is (bucket("pricing", "user-7") < threshold(30))
        tag = first.headers["etag"]
        again = client.post(
            "/ofrep/v1/evaluate/flags", json=context("user-7"), headers={"If-None-Match": tag}
        )
        assert (again.status_code, again.content, again.headers["etag"]) == (304, b"", tag)
        other = client.post(
            "/ofrep/v1/evaluate/flags", json=context("user-8"), headers={"If-None-Match": tag}
        )
        assert other.status_code == 200  # another unit, another answer
        change(server.store_url, "pricing", mode=Mode.LEGACY)

        def changed() -> bool:
            answer = client.post(
                "/ofrep/v1/evaluate/flags", json=context("user-7"), headers={"If-None-Match": tag}
            )
            return answer.status_code == 200 and answer.headers["etag"] != tag

        assert eventually(changed), "the bulk answer kept its ETag after a state change"


def test_evaluations_are_counted_as_exposures(server: Server) -> None:
    with server.client("viewer") as client:
        for i in range(20):
            client.post("/ofrep/v1/evaluate/flags/codec", json=context(f"u{i}"))
    store = open_store(server.store_url)

    def counted() -> bool:
        stats = operations.stats(store, "codec", 3600, time.time() + 60)
        return stats.new.exposures == 20

    try:
        assert eventually(counted, 30), "the server did not flush its exposures"
    finally:
        store.close()
    with server.client("viewer") as client:
        metrics = client.get("/metrics").text
    assert 'cutover_exposures_total{arm="new",migration="codec"} 20.0' in metrics


def test_the_configuration_says_what_the_server_supports(server: Server) -> None:
    with server.client("viewer") as client:
        answer = client.get("/ofrep/v1/configuration")
    assert answer.status_code == 200
    assert answer.json() == {
        "name": "cutover",
        "capabilities": {
            "cacheInvalidation": {"polling": {"enabled": True, "minPollingIntervalMs": 1000}},
            "flagEvaluation": {"supportedTypes": ["boolean"]},
        },
    }
    assert httpx.get(f"{server.url}/ofrep/v1/configuration").status_code == 401


def test_an_api_key_header_is_a_token_too(server: Server) -> None:
    url = f"{server.url}/ofrep/v1/evaluate/flags/codec"
    token = server.tokens["viewer"]
    answer = httpx.post(url, json=context("u"), headers={"X-API-Key": token})
    assert (answer.status_code, answer.json()["variant"]) == (200, "new")
    same = httpx.post(
        url, json=context("u"), headers={"X-API-Key": token, "Authorization": f"Bearer {token}"}
    )
    assert same.status_code == 200
    for headers in (
        {"X-API-Key": "cut_wrong"},
        {"X-API-Key": token, "Authorization": f"Bearer {server.tokens['admin']}"},
    ):
        refused = httpx.post(url, json=context("u"), headers=headers)
        assert refused.status_code == 401, refused.text
        assert refused.json()["error"]


def test_a_token_past_its_rate_gets_429_with_the_buckets_retry_after(
    serve: Callable[..., Server], tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'rate.db'}"
    change(url, "codec", mode=Mode.NEW)
    # One request every ten seconds, three at once: the fourth waits about ten seconds.
    server = serve(url, "--ofrep-rate", "0.1:3")
    with server.client("viewer") as viewer, server.client("admin") as admin:
        for _ in range(2):
            assert viewer.post("/ofrep/v1/evaluate/flags/codec", json=context("u")).is_success
        assert viewer.post("/ofrep/v1/evaluate/flags", json=context("u")).is_success
        single = viewer.post("/ofrep/v1/evaluate/flags/codec", json=context("u"))
        bulk = viewer.post("/ofrep/v1/evaluate/flags", json=context("u"))
        # Another token has a bucket of its own.
        assert admin.post("/ofrep/v1/evaluate/flags/codec", json=context("u")).is_success
    assert single.status_code == 429 and bulk.status_code == 429
    assert 8 <= int(single.headers["retry-after"]) <= 10
    assert 8 <= int(bulk.headers["retry-after"]) <= 10
    assert single.json()["key"] == "codec" and single.json()["errorCode"] == "GENERAL"
    assert "token" in single.json()["errorDetails"]
    assert "key" not in bulk.json() and bulk.json()["errorCode"] == "GENERAL"
    # The limit is OFREP's: the admin API is not counted.
    with server.client("viewer") as viewer:
        assert viewer.get("/api/v1/migrations").status_code == 200


def test_before_the_states_are_read_every_flag_is_an_error_to_retry(
    serve: Callable[..., Server], pg_url: str, pg_proxy: tuple[TcpProxy, str]
) -> None:
    proxy, through = pg_proxy
    change(pg_url, "codec", mode=Mode.NEW)
    proxy.cut()  # the store cannot be reached when the server starts
    server = serve(through)
    with server.client("viewer") as client:
        for key in ("codec", "nope"):
            one = client.post(f"/ofrep/v1/evaluate/flags/{key}", json=context("u"))
            assert one.status_code == 500, one.text
            assert (one.json()["key"], one.json()["errorCode"]) == (key, "GENERAL")
            assert int(one.headers["retry-after"]) >= 1
        bulk = client.post("/ofrep/v1/evaluate/flags", json=context("u"))
        assert (bulk.status_code, bulk.json()["errorCode"]) == (500, "GENERAL")
        assert int(bulk.headers["retry-after"]) >= 1
        proxy.restore()

        def known() -> bool:
            return client.post("/ofrep/v1/evaluate/flags/codec", json=context("u")).is_success

        assert eventually(known, 30), "the server did not read the states once the store was up"
        missing = client.post("/ofrep/v1/evaluate/flags/nope", json=context("u"))
        assert (missing.status_code, missing.json()["errorCode"]) == (404, "FLAG_NOT_FOUND")
        bulk = client.post("/ofrep/v1/evaluate/flags", json=context("u"))
        assert [flag["key"] for flag in bulk.json()["flags"]] == ["codec"]
