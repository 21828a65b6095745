"""Noise: learned from a second legacy instance (Diffy's method), or declared by path prefix."""

from __future__ import annotations

import json
from typing import Any

from ..helpers import cutover_cli
from .conftest import Proxy, Service, start_legacy, wait_until


def noise_report(proxy: Proxy) -> dict[str, Any]:
    shown = cutover_cli("--store", proxy.store_url, "drifts", proxy.name, "--noise", "--json")
    assert shown.returncode == 0, shown.stderr
    return json.loads(shown.stdout)


def test_fields_two_legacy_answers_disagree_on_are_noise(
    legacy: Service, new: Service, start_proxy: Any
) -> None:
    secondary = start_legacy()
    try:
        proxy: Proxy = start_proxy(legacy.url, new.url, "--legacy-secondary", secondary.url)
        proxy.set(mode="shadow", sample=1.0)
        with proxy.client() as client:
            for _ in range(30):
                assert client.get("/random").json()["value"] == 42
            for _ in range(10):
                assert client.get("/random?wrong=1").json()["value"] == 42
        stats = proxy.counted(lambda s: s["comparisons"] == 40, "40 comparisons")
        # The request id differs on every call between the two legacy instances too: noise from
        # the first request on. Only the value that new got wrong is drift.
        assert stats["drifts"] == 10
        wait_until(lambda: noise_report(proxy)["learned"], "the learned noise in the store")
        learned = {(row["route"], row["path"]): row for row in noise_report(proxy)["learned"]}
        request_id = learned[("*", "$.body.request_id")]
        assert request_id["is_noise"] and request_id["raw"] == request_id["noise"] == 40
        value = learned[("*", "$.body.value")]
        assert not value["is_noise"] and (value["raw"], value["noise"]) == (10, 0)
        human = cutover_cli("--store", proxy.store_url, "drifts", "api", "--noise").stdout
        assert "$.body.request_id" in human and "noise" in human
    finally:
        secondary.stop()


def test_declared_noise_never_counts(legacy: Service, new: Service, start_proxy: Any) -> None:
    proxy: Proxy = start_proxy(legacy.url, new.url)
    proxy.set(mode="shadow", sample=1.0)
    added = cutover_cli(
        "--store", proxy.store_url, "noise", "add", "api", "$.body", "--reason", "ids differ"
    )
    assert added.returncode == 0, added.stderr
    assert "api: $.body is noise from now on" in added.stdout
    wait_until(lambda: proxy.health()["migrations"]["api"]["noise"] == ["$.body"], "the rules")
    with proxy.client() as client:
        for _ in range(5):
            client.get("/random?wrong=1")
    stats = proxy.counted(lambda s: s["comparisons"] == 5, "5 comparisons")
    assert stats["drifts"] == 0
    history = cutover_cli("--store", proxy.store_url, "history", "api", "--json").stdout
    kinds = [d["kind"] for d in json.loads(history)["decisions"]]
    assert kinds[-1] == "noise-add"
    removed = cutover_cli(
        "--store", proxy.store_url, "noise", "remove", "api", "$.nothing", "--reason", "x"
    )
    assert removed.returncode == 2 and "has no noise rule '$.nothing'" in removed.stderr
    bad = cutover_cli("--store", proxy.store_url, "noise", "add", "api", "body", "--reason", "x")
    assert bad.returncode == 2 and "must be a path like $.body.request_id" in bad.stderr
