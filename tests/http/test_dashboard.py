"""The dashboard in headless Chromium on a real ``cutover serve`` over PostgreSQL."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from cutover.http._deps import COOKIE, CSRF_HEADER

from .browser import (
    Console,
    Scenario,
    chromium,
    keep_as_doc_image,
    need_browser,
    screenshot,
    seed,
    sign_in,
)
from .conftest import Server

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

PLANS = Path(__file__).resolve().parents[2] / "examples" / "plans"
REFRESH = "1s"  # the page polls this often; the tests wait a few polls at most
WAIT_MS = 8000  # the longest any assertion waits for the page to catch up

try:
    from playwright.sync_api import expect

    expect.set_options(timeout=WAIT_MS)
except ImportError:  # need_browser() skips (or fails) with the reason
    expect = None  # type: ignore[assignment]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    need_browser()
    with chromium() as launched:
        yield launched


@pytest.fixture
def page(browser: Browser) -> Iterator[tuple[Page, Console]]:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    context.set_default_timeout(WAIT_MS)
    tab = context.new_page()
    try:
        yield tab, Console(tab)
    finally:
        context.close()


@pytest.fixture
def seeded(pg_url: str, serve: Callable[..., Server]) -> Iterator[tuple[Server, Scenario]]:
    """A server over an hour of three migrations, one of them in a running rollout."""
    with ThreadPoolExecutor(1) as pool:
        # The store is seeded while the server boots: each takes a few seconds on its own.
        seeding = pool.submit(seed, pg_url)
        server = serve(pg_url, "--refresh", REFRESH, "--plans", str(PLANS))
        scenario = seeding.result()
        # The server's first judgement of a check loads SciPy: under way while the test signs in.
        warming = pool.submit(api, server, "/api/v1/migrations/pricing/rollout")
        yield server, scenario
        warming.result()


def api(server: Server, path: str) -> dict[str, Any]:
    with server.client("admin") as client:
        response = client.get(path)
        assert response.status_code == 200, response.text
        return response.json()


def mark(page: Page) -> None:
    """Leave a value in the page that a reload would lose."""
    page.evaluate("window.__notReloaded = true")


def not_reloaded(page: Page) -> bool:
    return bool(page.evaluate("window.__notReloaded === true"))


def test_every_migration_at_a_glance_and_charts_with_data(
    seeded: tuple[Server, Scenario], page: tuple[Page, Console]
) -> None:
    server, scenario = seeded
    tab, console = page
    sign_in(tab, server.url, server.tokens["operator"])

    rows = tab.locator("[data-panel=overview] tbody tr")
    assert rows.count() == len(scenario.migrations)
    assert [rows.nth(i).get_attribute("data-row") for i in range(rows.count())] == list(
        scenario.migrations
    )
    pricing = tab.locator("tr[data-row=pricing]")
    assert pricing.locator("[data-mode]").inner_text() == "canary"
    assert pricing.locator("[data-percent]").inner_text() == "5%"
    assert pricing.locator("[data-step]").inner_text() == "step 2/5 (canary 5%)"
    assert tab.locator("tr[data-row=codec] [data-health]").inner_text() == "warning"
    assert tab.locator("tr[data-row=search] [data-health]").inner_text() == "idle"
    assert tab.locator("[data-who]").inner_text() == "operator"
    assert tab.locator("[data-role]").text_content() == "operator"
    expect(tab.locator("[data-live]")).to_have_attribute("data-state", "ok")
    screenshot(tab, "dashboard-overview")

    tab.click("tr[data-row=pricing] a.name")
    tab.wait_for_url(f"{server.url}/migrations/pricing")
    tab.wait_for_selector("[data-chart=latency] canvas")
    series = tab.evaluate(
        """async () => {
            const r = await fetch('/api/v1/migrations/pricing/series?window=1h');
            return await r.json();
        }"""
    )
    served = [p for p in series["points"] if p["legacy"]["calls"] + p["new"]["calls"]]
    assert len(served) >= 55, "an hour of minutes with calls"
    assert any(p["parity_rate"] is not None and p["parity_rate"] < 1 for p in served)
    assert int(tab.locator("[data-charts]").get_attribute("data-points") or 0) >= 59
    for chart in ("parity", "drifts", "calls", "errors", "latency"):
        figure = tab.locator(f"[data-chart={chart}]")
        assert figure.locator("canvas").count() == 1, chart
        assert int(figure.get_attribute("data-values") or 0) >= 40, chart

    checks = tab.locator("[data-panel=rollout] tr[data-check]")
    assert [checks.nth(i).get_attribute("data-check") for i in range(checks.count())] == [
        "drift",
        "errors",
        "latency",
    ]
    assert tab.locator("[data-panel=rollout] .outcome-pass").count() >= 3
    assert "canary 5%" in tab.locator("[data-rollout-step]").inner_text()
    assert tab.locator("[data-panel=drifts] details.group").count() == 2
    assert "$.total" in tab.locator("[data-panel=drifts] details[open] summary").inner_text()
    kinds = tab.locator("[data-panel=decisions] tr[data-kind]")
    assert [kinds.nth(i).get_attribute("data-kind") for i in range(kinds.count())] == [
        "promote",
        "start",
        "set",
    ]
    expect(tab.locator("[data-live]")).to_have_attribute("data-state", "ok")
    assert console.errors == [], "no script error and nothing the CSP refused"
    screenshot(tab, "dashboard-migration")
    if os.environ.get("CUTOVER_DOC_IMAGE") == "1":
        keep_as_doc_image(tab, "[data-panel=rollout]")


def test_an_operator_acts_and_the_page_follows_without_a_reload(
    seeded: tuple[Server, Scenario], page: tuple[Page, Console]
) -> None:
    server, _ = seeded
    tab, console = page
    before = api(server, "/api/v1/migrations/pricing/state")
    sign_in(tab, server.url, server.tokens["operator"])
    tab.goto(f"{server.url}/migrations/pricing")
    mark(tab)

    tab.click("button[data-action=promote]")
    dialog = tab.locator("dialog#act")
    assert dialog.is_visible()
    assert "canary 25%" in dialog.locator("[data-act-hint]").inner_text()
    assert dialog.locator("input[name=force]").is_disabled(), "forcing is for admins"
    dialog.locator("[data-act-submit]").click()
    assert "Give a reason" in dialog.locator("[data-act-error]").inner_text()
    dialog.locator("textarea[name=reason]").fill("checks green for 20m, PRC-12")
    dialog.locator("[data-act-submit]").click()

    expect(tab.locator("#flash")).to_contain_text("Recorded: promote")
    newest = tab.locator("[data-panel=decisions] tbody tr").first
    expect(newest).to_have_attribute("data-kind", "promote")
    expect(newest.locator("td").nth(2)).to_have_text("operator")
    expect(newest).to_contain_text("checks green for 20m, PRC-12")
    expect(tab.locator("[data-rollout-step]")).to_have_text("step 3/5 (canary 25%)")
    expect(tab.locator("[data-panel=summary] [data-percent]")).to_have_text("25%")
    assert not dialog.is_visible()
    assert not_reloaded(tab)

    after = api(server, "/api/v1/migrations/pricing/state")
    assert (after["mode"], after["percent"]) == ("canary", 25.0)
    assert after["version"] == before["version"] + 1
    assert after["updated_by"] == "operator"
    screenshot(tab, "dashboard-promoted")

    # The operator opens Pause; meanwhile olga approves the last step, a new rollout version.
    tab.click("#flash [data-flash-close]")
    seen = int(tab.locator("button[data-action=pause]").get_attribute("data-version") or 0)
    tab.click("button[data-action=pause]")
    with server.client("olga") as olga:
        response = olga.post(
            "/api/v1/migrations/pricing/rollout/approve",
            json={"reason": "CAB CHG-4711", "expected_version": seen},
        )
        assert response.status_code == 200, response.text
    tab.fill("dialog#act textarea[name=reason]", "hold for the payments freeze")
    tab.click("dialog#act [data-act-submit]")

    flash = tab.locator("#flash")
    expect(flash).to_contain_text("Someone acted first")
    expect(flash).to_contain_text(f"not {seen}")
    expect(newest).to_have_attribute("data-kind", "approve")
    expect(tab.locator("button[data-action=pause]")).to_have_attribute(
        "data-version", str(seen + 1)
    )
    assert tab.locator("[data-rollout-status]").inner_text() == "running", "nothing was paused"
    time.sleep(1.5)  # a poll later the message is still there to read
    assert flash.is_visible()
    assert not_reloaded(tab)
    assert console.errors == []
    screenshot(tab, "dashboard-conflict")


def test_a_viewer_sees_actions_refused_and_the_page_stays_live(
    seeded: tuple[Server, Scenario], page: tuple[Page, Console]
) -> None:
    server, _ = seeded
    tab, console = page
    sign_in(tab, server.url, server.tokens["viewer"])
    tab.goto(f"{server.url}/migrations/pricing")
    mark(tab)

    promote = tab.locator("button[data-action=promote]")
    assert promote.is_disabled()
    assert promote.get_attribute("title") == "needs the operator role"
    assert tab.locator("button[data-action=state]").is_disabled()
    assert tab.locator("button[data-action=replace]").get_attribute("title") == (
        "needs the admin role"
    )
    why = tab.locator("[data-panel=rollout] [data-why]").inner_text()
    assert "Needs the operator role" in why and "viewer (viewer)" in why
    promote.click(force=True)  # a disabled button opens nothing
    assert not tab.locator("dialog#act").is_visible()

    # The API refuses the viewer's cookie too, whatever the page shows.
    version = api(server, "/api/v1/migrations/pricing/rollout")["version"]
    refused = tab.evaluate(
        """async ([header, version]) => {
            const r = await fetch('/api/v1/migrations/pricing/rollout/promote', {
                method: 'POST',
                headers: {'content-type': 'application/json', [header]: '1'},
                body: JSON.stringify({reason: 'try', expected_version: version}),
            });
            return {status: r.status, body: await r.json()};
        }""",
        [CSRF_HEADER, version],
    )
    assert refused["status"] == 403
    assert "needs the operator role" in refused["body"]["error"]

    # Someone else acts: the viewer's page shows it within a poll or two, without a reload.
    with server.client("olga") as olga:
        response = olga.post(
            "/api/v1/migrations/pricing/rollout/pause",
            json={"reason": "payments freeze", "expected_version": version},
        )
        assert response.status_code == 200, response.text
    expect(tab.locator("[data-rollout-status]")).to_have_text("paused")
    expect(tab.locator("[data-panel=decisions] tbody tr").first).to_have_attribute(
        "data-kind", "pause"
    )
    assert tab.locator("button[data-action=resume]").is_disabled()
    assert not_reloaded(tab)
    assert console.errors == []
    screenshot(tab, "dashboard-viewer")


def test_signing_in_and_out(
    pg_url: str, serve: Callable[..., Server], page: tuple[Page, Console]
) -> None:
    server = serve(pg_url, "--refresh", REFRESH)
    tab, console = page

    tab.goto(f"{server.url}/migrations/nope")
    assert tab.url == f"{server.url}/login?next=/migrations/nope", "sign in first"
    tab.fill("input[name=token]", "cut_not-a-token")
    with tab.expect_response(f"{server.url}/login") as answer:
        tab.click("button[type=submit]")
    assert answer.value.status == 401
    assert tab.locator("[data-error]").inner_text() == (
        "That token is not valid; ask an admin for one (cutover token create)."
    )
    assert tab.context.cookies() == []
    screenshot(tab, "dashboard-bad-token", full_page=False)

    tab.fill("input[name=token]", server.tokens["admin"])
    tab.click("button[type=submit]")
    tab.wait_for_url(f"{server.url}/migrations/nope")
    assert tab.locator("h1").inner_text() == "Not found"
    assert "no migration named 'nope'" in tab.locator("[data-error]").inner_text()
    (cookie,) = tab.context.cookies()
    assert (cookie["name"], cookie["httpOnly"], cookie["sameSite"], cookie["path"]) == (
        COOKIE,
        True,
        "Strict",
        "/",
    )
    tab.goto(f"{server.url}/")
    assert tab.locator("[data-who]").inner_text() == "admin"
    tab.click("text=Sign out")
    tab.wait_for_url(f"{server.url}/login")
    assert tab.context.cookies() == []
    tab.goto(f"{server.url}/")
    assert tab.url == f"{server.url}/login"
    assert console.errors == []

    # Pages get the same guards as the API; an unknown page is a 404 page, not a traceback.
    with server.client("viewer") as client:
        response = client.get("/migrations/nope")
        assert response.status_code == 404
        assert response.headers["content-type"].startswith("text/html")
        assert "Traceback" not in response.text
        assert "script-src 'self'" in response.headers["content-security-policy"]
        assert response.headers["x-frame-options"] == "DENY"
        assert client.get("/").headers["cache-control"] == "no-store"
    with httpx.Client(base_url=server.url) as anonymous:
        assert anonymous.get("/fragments/overview").status_code == 401
        forged = anonymous.post(
            "/login",
            data={"token": server.tokens["admin"]},
            headers={"sec-fetch-site": "cross-site"},
        )
        assert forged.status_code == 403, "a sign-in posted from another site is refused"
        assert COOKIE not in forged.cookies


def promote_button(server: Server, who: str) -> str:
    """The promote button's tag as ``who`` sees it on the page of migration ``pay``."""
    import re

    with server.client(who) as client:
        page = client.get("/migrations/pay")
    assert page.status_code == 200, page.text
    found = re.search(r'<button[^>]*data-action="promote"[^>]*>', page.text)
    assert found, "the page offers a promotion"
    return found.group(0) + page.text[found.end() : page.text.index("</section>", found.end())]


def test_promote_says_before_the_click_why_it_would_be_refused(
    pg_url: str, serve: Callable[..., Server], tmp_path: Path, page: tuple[Page, Console]
) -> None:
    from .test_api import PLAN, call, rollout_version, start

    plans = tmp_path / "plans"
    plans.mkdir()
    (plans / "pay.yaml").write_text(PLAN)
    server = serve(pg_url, "--plans", str(plans))
    assert start(server).is_success
    # In shadow the drift check is skipped: nothing stops a promotion.
    assert "disabled" not in promote_button(server, "operator").split(">")[0]
    body = {"reason": "to canary", "expected_version": rollout_version(server)}
    assert call(server, "operator", "POST", "/api/v1/migrations/pay/rollout/promote", body)
    # Canary 5% -> 50% needs an approval: nobody can promote past it, and the page says so.
    for who in ("operator", "admin"):
        shown = promote_button(server, who)
        assert "disabled" in shown.split(">")[0] and "data-force" not in shown
        assert "is refused now: canary 50% needs an approval first." in shown
    body = {"reason": "CAB ok", "expected_version": rollout_version(server), "step": 3}
    assert call(server, "operator", "POST", "/api/v1/migrations/pay/rollout/approve", body)
    # Approved, the drift check has no data yet: inconclusive. Refused for an operator ...
    shown = promote_button(server, "operator")
    assert 'disabled title="refused now: drift is inconclusive"' in shown
    assert "is refused now: drift is inconclusive; an admin can force it." in shown
    # ... and a forced promotion for an admin, who is told so before the click.
    shown = promote_button(server, "admin")
    assert "disabled" not in shown.split(">")[0] and 'data-force="1"' in shown
    assert "forces past what stops it now: drift is inconclusive." in shown
    tab, console = page
    sign_in(tab, server.url, server.tokens["admin"])
    tab.goto(f"{server.url}/migrations/pay")
    tab.click("button[data-action=promote]")
    dialog = tab.locator("dialog#act")
    assert dialog.locator("input[name=force]").is_checked(), "the dialog says it forces"
    assert "forced past checks that do not pass" in dialog.locator("[data-act-hint]").inner_text()
    assert console.errors == []
    refused = call(
        server,
        "operator",
        "POST",
        "/api/v1/migrations/pay/rollout/promote",
        {"reason": "try", "expected_version": rollout_version(server)},
    )
    assert refused.status_code == 422 and "drift is inconclusive" in refused.json()["error"]
