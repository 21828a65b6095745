"""One name rule: the library, the CLI and the API accept exactly the same migration names, and
an accepted name (slashes included) round-trips through the API's URLs and the dashboard's
links."""

from __future__ import annotations

import contextlib
import html
import io
import re
import time
from collections.abc import Callable
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cutover
from cutover.cli import main
from cutover.errors import InvalidInput
from cutover.store import open_store
from cutover.text import NAME_PATTERN

from .conftest import Server

TRICKY = [
    "",
    "team/codec",
    "a/..",
    "a//b",
    "v1:encode",
    "x" * 200,
    "x" * 201,
    "\u202epay",  # right-to-left override: reads as something else
    "pay\x7f",
    "pay\n",
    "pay\x00",
    " pay",
    "-pay",
    "--help",
    "pay%2F",
    "café",
    "pay?x=1",
    "pay#top",
]
NAMES = st.one_of(
    st.sampled_from(TRICKY),
    st.from_regex(NAME_PATTERN, fullmatch=True),
    st.text(max_size=12),
)


def library_accepts(name: str) -> bool:
    try:
        cutover.Migration(name, abs, abs)
    except InvalidInput:
        return False
    return True


def cli_accepts(store_url: str, name: str) -> bool:
    """`cutover set` through the real entry point: exit 0 creates, exit 2 refuses."""
    args = ["--store", store_url, "set", "--mode", "shadow", "--reason", "r", "--", name]
    with (
        contextlib.redirect_stdout(io.StringIO()),
        contextlib.redirect_stderr(io.StringIO()),
        pytest.raises(SystemExit) as exited,
    ):
        main(args)
    assert exited.value.code in (0, 2), (name, exited.value.code)
    return exited.value.code == 0


PROPAGATION = 5.0
"""The runtime reloads its states every second; the rest is room for a machine under load."""


@pytest.fixture
def server(serve: Callable[..., Server], sqlite_url: str) -> Server:
    return serve(sqlite_url)


# Each accepted name waits for the server's reload of the states (a second on SQLite): 40
# examples keep the test near half a minute; a third of them are drawn from TRICKY.
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(name=NAMES)
def test_a_name_is_accepted_by_all_or_refused_by_all(server: Server, name: str) -> None:
    store = open_store(server.store_url)
    current = store.state(name) if library_accepts(name) else None
    path = f"/api/v1/migrations/{quote(name, safe='')}/state"
    body = {"reason": "r", "expected_version": current.version if current else 0, "mode": "new"}
    with server.client("operator") as client:
        api = client.post(path, json=body)
    assert api.status_code in (200, 404, 422), (name, api.text)
    verdicts = {
        "library": library_accepts(name),
        "api": api.status_code == 200,
        "cli": cli_accepts(server.store_url, name),
    }
    assert len(set(verdicts.values())) == 1, (name, verdicts, api.text)
    if not verdicts["library"]:
        assert name not in store.states()
        return

    with server.client("viewer") as client:
        # The CLI set it last, on a connection of its own: the server's reads from memory see
        # it within the propagation bound (a reload of the states a second on SQLite).
        deadline = time.monotonic() + PROPAGATION
        while True:
            state = client.get(path).json()
            listed = [m["name"] for m in client.get("/api/v1/migrations").json()["migrations"]]
            if (state["mode"] == "shadow" and name in listed) or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert (state["name"], state["mode"]) == (name, "shadow")
        assert name in listed
        overview = client.get("/").text
        row = re.search(
            rf'<tr data-row="{re.escape(html.escape(name))}">\s*<td><a class="name"'
            r' href="([^"]+)">',
            overview,
        )
        assert row is not None, name
        page = client.get(html.unescape(row.group(1)))
        assert page.status_code == 200, (name, row.group(1))
        assert f"<span>{html.escape(name)}</span>" in page.text  # the crumbs name it
        series = re.search(r'data-series="([^"]+)"', page.text)
        assert series is not None
        assert client.get(html.unescape(series.group(1))).status_code == 200
