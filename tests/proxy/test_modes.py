"""`cutover proxy` in each mode, for real: a uvicorn legacy, a Node new, the proxy in between."""

from __future__ import annotations

import collections
import json
import time
from pathlib import Path
from typing import Any

import httpx

from cutover.control.checks import CheckResult, Outcome, Telemetry, evaluate
from cutover.control.plan import parse_plan
from cutover.model import Mode
from cutover.routing import bucket, threshold
from cutover.store import open_store

from .conftest import Proxy, Service, start_new, wait_until

HOP_BY_HOP = {"connection", "keep-alive", "te", "trailer", "upgrade", "proxy-authorization"}


def seen_headers(answer: httpx.Response) -> dict[str, str]:
    return {name: value for name, value in answer.json()["headers"]}


def test_legacy_mode_is_transparent(legacy: Service, new: Service, start_proxy: Any) -> None:
    proxy: Proxy = start_proxy(legacy.url, new.url)
    direct = httpx.get(legacy.url + "/users/3?x=1")
    through = proxy.get("/users/3?x=1")
    assert (through.status_code, through.content) == (direct.status_code, direct.content)
    for name in ("content-type", "content-length"):
        assert through.headers[name] == direct.headers[name]
    # What reaches the upstream: method, path, query, body and end-to-end headers unchanged;
    # hop-by-hop ones dropped; the forwarding headers added; Host rewritten for the upstream.
    sent = proxy.get(
        "/echo/a%20b?q=1&q=2",
        headers={
            "X-Custom": "kept",
            "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "Connection": "keep-alive, X-Drop-Me",
            "X-Drop-Me": "gone",
            "TE": "trailers",
        },
    )
    echo = sent.json()
    headers = seen_headers(sent)
    assert (echo["arm"], echo["method"], echo["path"], echo["query"]) == (
        "legacy",
        "GET",
        "/echo/a b",
        "q=1&q=2",
    )
    assert headers["x-custom"] == "kept" and headers["traceparent"].startswith("00-0af7")
    assert "x-drop-me" not in headers and not HOP_BY_HOP & set(headers) - {"connection"}
    assert headers["x-forwarded-for"] == "127.0.0.1"
    assert headers["x-forwarded-proto"] == "http"
    assert headers["x-forwarded-host"] == proxy.url.removeprefix("http://")
    assert headers["host"] == legacy.url.removeprefix("http://")
    assert "x-cutover-shadow" not in headers
    posted = httpx.post(proxy.url + "/echo", content=b"a=1&b=2")
    assert posted.json()["body"] == "a=1&b=2" and posted.json()["method"] == "POST"
    head = httpx.head(proxy.url + "/users/3")
    assert head.status_code == 200 and head.content == b""
    assert int(head.headers["content-length"]) == len(direct.content)


def test_shadow_answers_with_legacy_and_compares_new(
    legacy: Service, new: Service, start_proxy: Any
) -> None:
    proxy: Proxy = start_proxy(legacy.url, new.url)
    proxy.set(mode="shadow", sample=1.0)
    for number in range(1, 11):
        answer = proxy.get(f"/users/{number}")
        assert "x-arm" not in answer.headers, "legacy's answer, not new's"
        assert answer.json() == {"id": number, "name": f"user {number}", "total": number * 1.5}
    for _ in range(5):
        assert proxy.get("/auth", headers={"Authorization": "Bearer v1-token"}).status_code == 200
    stats = proxy.counted(lambda s: s["comparisons"] >= 15, "15 comparisons")
    assert stats["legacy"]["calls"] == 15 and stats["new"]["calls"] == 15
    assert (stats["comparisons"], stats["drifts"]) == (15, 6)
    groups = drift_groups(proxy)
    # "New answers 401 where legacy answers 200" stands on a line of its own.
    assert groups["* $.status (legacy 200, new 401)"] == 5
    assert groups["* $.body.total"] == 1
    shown = json.dumps(example(proxy, "$.status"))
    assert "v1-token" not in shown, "Authorization values are never stored"
    # The copy reached new marked as one.
    copies = httpx.get(new.url + "/seen").json()
    assert copies["shadowCopies"] >= 15


def test_unsafe_methods_are_shadowed_only_where_a_route_says_so(
    legacy: Service, new: Service, start_proxy: Any, tmp_path: Path
) -> None:
    routes = tmp_path / "routes.yaml"
    routes.write_text(
        "routes:\n"
        "  - {path: /echo/pure, methods: [POST], shadow_unsafe: true}\n"
        "  - {path: '/users/{id}', methods: [GET]}\n"
    )
    proxy: Proxy = start_proxy(legacy.url, new.url, "--routes", str(routes))
    proxy.set(mode="shadow", sample=1.0)
    before = httpx.get(new.url + "/seen").json()["shadowCopies"]
    assert httpx.post(proxy.url + "/echo/side-effect", content=b"x").json()["arm"] == "legacy"
    assert httpx.post(proxy.url + "/echo/pure", content=b"y").json()["arm"] == "legacy"
    wait_until(
        lambda: httpx.get(new.url + "/seen").json()["shadowCopies"] == before + 1,
        "the one pure POST copied to new",
    )
    received = httpx.get(new.url + "/seen").json()["received"]
    assert [r["path"] for r in received if r["method"] == "POST"][-1] == "/echo/pure"


def test_canary_is_sticky_by_unit_and_follows_pins(
    legacy: Service, new: Service, start_proxy: Any
) -> None:
    proxy: Proxy = start_proxy(legacy.url, new.url, "--unit", "header:X-User")
    proxy.set(mode="canary", percent=30, sample=0.0, pins_new=("pinned",))
    served: dict[str, set[str]] = collections.defaultdict(set)
    with proxy.client() as client:
        for _round in range(3):
            for number in range(60):
                unit = f"user-{number}"
                served[unit].add(client.get("/echo", headers={"X-User": unit}).json()["arm"])
        pinned = {client.get("/echo", headers={"X-User": "pinned"}).json()["arm"] for _ in range(5)}
        no_unit = {client.get("/echo").json()["arm"] for _ in range(5)}
    assert all(len(arms) == 1 for arms in served.values()), "a unit always lands on one arm"
    expected = {u: "new" if bucket("api", u) < threshold(30) else "legacy" for u in served}
    assert {u: next(iter(arms)) for u, arms in served.items()} == expected, (
        "the same rule as in-process routing"
    )
    assert pinned == {"new"}
    assert no_unit == {"legacy"}, "a request without a unit goes to legacy"
    metrics = proxy.get("/-/cutover/metrics").text
    assert "cutover_proxy_requests_without_unit_total 5.0" in metrics


def test_canary_falls_back_on_5xx_for_safe_methods_only(
    legacy: Service, new: Service, start_proxy: Any
) -> None:
    proxy: Proxy = start_proxy(legacy.url, new.url)
    proxy.set(mode="canary", percent=100, sample=1.0)
    fell_back = proxy.get("/status/503")
    assert fell_back.status_code == 503 and fell_back.headers.get("x-arm") is None, (
        "legacy answered in place of new's 503"
    )
    answered = proxy.get("/users/2")
    assert answered.headers["x-arm"] == "new"
    posted = httpx.post(proxy.url + "/status/500")
    assert posted.status_code == 500 and posted.headers["x-arm"] == "new", (
        "a POST that reached new is never sent again"
    )
    stats = proxy.counted(lambda s: s["new"]["fallbacks"] == 1 and s["comparisons"] >= 2, "stats")
    assert stats["new"]["errors"] == 2  # the 503 that fell back and the POST's 500
    groups = drift_groups(proxy)
    assert groups.get("* $.status (legacy 503, new 503)") is None


def test_a_new_service_that_is_down_falls_back_even_for_unsafe_methods(
    legacy: Service, start_proxy: Any
) -> None:
    from ..helpers import free_port

    down = f"http://127.0.0.1:{free_port()}"
    proxy: Proxy = start_proxy(legacy.url, down)
    proxy.set(mode="canary", percent=100, sample=1.0)
    posted = httpx.post(proxy.url + "/echo", content=b"once")
    assert posted.status_code == 200 and posted.json()["arm"] == "legacy"
    assert proxy.get("/users/1").status_code == 200
    stats = proxy.counted(lambda s: s["new"]["fallbacks"] == 2, "two fallbacks")
    assert stats["new"]["errors"] == 2 and stats["drifts"] >= 1
    groups = drift_groups(proxy)
    assert any("new raised UpstreamError" in key for key in groups), groups


def test_new_mode_serves_new_and_gone_routes_answer_410(
    legacy: Service, new: Service, start_proxy: Any, tmp_path: Path
) -> None:
    routes = tmp_path / "routes.yaml"
    routes.write_text(
        "routes:\n"
        "  - path: /echo/v1-only/{rest*}\n"
        "    gone: {sunset: '2027-03-01', link: 'https://example.com/v2'}\n"
    )
    proxy: Proxy = start_proxy(legacy.url, new.url, "--routes", str(routes))
    assert proxy.get("/echo/v1-only/report").json()["arm"] == "legacy", "gone only once new"
    proxy.set(mode="new")
    assert proxy.get("/echo").json()["arm"] == "new"
    gone = proxy.get("/echo/v1-only/report/2026")
    assert gone.status_code == 410
    assert gone.headers["content-type"] == "application/problem+json"
    assert gone.headers["deprecation"] == "true"
    assert gone.headers["sunset"] == "Mon, 01 Mar 2027 00:00:00 GMT"
    assert gone.headers["link"] == '<https://example.com/v2>; rel="sunset"'
    assert gone.json()["status"] == 410 and gone.json()["route"] == "* /echo/v1-only/{rest*}"
    assert "cutover_proxy_gone_total 1.0" in proxy.get("/-/cutover/metrics").text
    # The 410s reach the stored windows too, where a plan's count check judges them.
    assert proxy.get("/echo/v1-only/export").status_code == 410
    proxy.counted(lambda s: s["legacy"]["calls"] == 3, "the two 410s and the legacy answer")
    results = judged_in_new_mode(proxy, "gone_calls", "legacy_calls")
    assert results["gone_calls"].outcome is Outcome.FAIL
    assert results["gone_calls"].reason == "2 gone calls in 4 calls on either arm exceed 0"
    # Legacy itself ran once, before the switch: the 410s are not runs of legacy.
    assert results["legacy_calls"].reason == "1 legacy calls in 4 calls on either arm exceed 0"


def judged_in_new_mode(proxy: Proxy, *metrics: str) -> dict[str, CheckResult]:
    """Each of ``metrics`` as a `max: 0` count check over the proxy's stored windows."""
    plan = parse_plan(
        {
            "migration": proxy.name,
            "steps": [{"mode": "new"}],
            "checks": [{"name": m, "metric": m, "max": 0, "window": "1h"} for m in metrics],
        }
    )
    store = open_store(proxy.store_url)
    try:
        telemetry = Telemetry(store.series(proxy.name, 0, histograms_since=0))
    finally:
        store.close()
    now = time.time() + 60
    return {
        check.name: evaluate(check, plan, Mode.NEW, telemetry, now=now, step_started_at=0)
        for check in plan.checks
    }


def test_an_upstream_that_is_down_is_a_502_problem(new: Service, start_proxy: Any) -> None:
    from ..helpers import free_port

    proxy: Proxy = start_proxy(f"http://127.0.0.1:{free_port()}", new.url)
    down = proxy.get("/users/1")
    assert down.status_code == 502
    assert down.headers["content-type"] == "application/problem+json"
    assert down.json()["arm"] == "legacy" and "cannot connect" in down.json()["detail"]


def test_shadow_never_lets_new_change_what_the_client_gets(
    legacy: Service, start_proxy: Any
) -> None:
    """In shadow, whatever new does (slow, down, wrong), the client gets legacy's answer."""
    slow_new = start_new()
    try:
        proxy: Proxy = start_proxy(legacy.url, slow_new.url, "--shadow-timeout", "300ms")
        proxy.set(mode="shadow", sample=1.0)
        slow = proxy.get("/slow?ms=1000")
        assert slow.json() == {"slept": True}
        # The copy leaves once the client has its answer, and times out 300 ms later.
        proxy.counted(lambda s: s["new"]["timeouts"] >= 1, "the copy's timeout")
        slow_new.stop()
        for _ in range(3):
            assert proxy.get("/users/4").json()["total"] == 6.0
    finally:
        slow_new.stop()
    stats = proxy.counted(lambda s: s["new"]["calls"] >= 4, "the copies counted")
    assert stats["legacy"]["errors"] == 0
    assert stats["new"]["timeouts"] >= 1 and stats["new"]["errors"] >= 1


def drift_groups(proxy: Proxy) -> dict[str, int]:
    from ..helpers import cutover_cli

    def groups() -> dict[str, int]:
        shown = cutover_cli("--store", proxy.store_url, "drifts", proxy.name, "--group", "--json")
        assert shown.returncode == 0, shown.stderr
        return {g["fingerprint"]: g["drifts"] for g in json.loads(shown.stdout)["groups"]}

    return groups()


def example(proxy: Proxy, path: str) -> Any:
    from ..helpers import cutover_cli

    shown = cutover_cli("--store", proxy.store_url, "drifts", proxy.name, "--json")
    for sample in json.loads(shown.stdout)["samples"]:
        if any(d["path"] == path for d in sample["diff"]):
            return sample
    raise AssertionError(f"no sample with a difference at {path}")


def test_each_upstream_gets_its_own_headers(
    legacy: Service, new: Service, start_proxy: Any
) -> None:
    proxy: Proxy = start_proxy(
        legacy.url,
        new.url,
        "--new-header",
        "Authorization: Bearer v2-service",
        "--new-header",
        "X-Legacy-Only:",
    )
    sent = {"Authorization": "Bearer v1-client", "X-Legacy-Only": "1"}
    assert seen_headers(proxy.get("/echo", headers=sent))["authorization"] == "Bearer v1-client"
    proxy.set(mode="new")
    at_new = seen_headers(proxy.get("/echo", headers=sent))
    assert at_new["authorization"] == "Bearer v2-service" and "x-legacy-only" not in at_new


def test_stats_by_route(legacy: Service, new: Service, start_proxy: Any, tmp_path: Path) -> None:
    from ..helpers import cutover_cli

    routes = tmp_path / "routes.yaml"
    routes.write_text("routes:\n  - {path: '/users/{id}', methods: [GET]}\n")
    proxy: Proxy = start_proxy(legacy.url, new.url, "--routes", str(routes))
    proxy.set(mode="shadow", sample=1.0)
    with proxy.client() as client:
        for number in range(6):
            client.get(f"/users/{number}")
        for _ in range(3):
            client.get("/status/500")

    def by_route() -> dict[str, Any]:
        shown = cutover_cli("--store", proxy.store_url, "stats", "api", "--by", "route", "--json")
        assert shown.returncode == 0, shown.stderr
        return {row["route"]: row for row in json.loads(shown.stdout)["routes"]}

    def counted(rows: dict[str, Any]) -> tuple[Any, ...]:
        return tuple(
            rows.get(route, {}).get(arm, {}).get("calls")
            for route in ("GET /users/{id}", "*")
            for arm in ("legacy", "new")
        )

    # Each count reaches the store at the proxy's next write: wait for every one of them.
    wait_until(lambda: counted(by_route()) == (6, 6, 3, 3), "every call counted per route")
    rows = by_route()
    users, other = rows["GET /users/{id}"], rows["*"]
    assert users["legacy"]["calls"] == 6 and users["legacy"]["errors"] == 0
    assert users["legacy"]["p95_ms"] is not None
    assert other["legacy"]["calls"] == 3 and other["legacy"]["errors"] == 3
    human = cutover_cli("--store", proxy.store_url, "stats", "api", "--by", "route").stdout
    assert "GET /users/{id}" in human
