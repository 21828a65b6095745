"""`cutover replay` against real HTTP upstreams: planted deltas, categories and latencies, the
proxy's own recordings, HAR files, and bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from junitparser import JUnitXml

from ..helpers import cutover_cli, free_port
from ..proxy.conftest import Service, answers, start_legacy, start_new, wait_until

HERE = Path(__file__).resolve().parent


def start_planted(side: str, **env: str) -> Service:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, str(HERE / "planted_app.py")],
        env={**os.environ, "PORT": str(port), "SIDE": side, **env},
        cwd=HERE,
    )
    service = Service(f"http://127.0.0.1:{port}", process, port)
    wait_until(lambda: answers(service.url + "/pid"), f"the planted {side}")
    return service


@pytest.fixture(scope="module")
def planted() -> Iterator[dict[str, Service]]:
    services = {
        "legacy": start_planted("legacy"),
        "new": start_planted("new"),
        "segment": start_planted("new", PLANT_SEGMENT="1"),
    }
    yield services
    for service in services.values():
        service.stop()


def lines(path: Path, *entries: dict[str, Any]) -> Path:
    path.write_text("".join(json.dumps(entry) + "\n" for entry in entries))
    return path


def predictions(tmp_path: Path) -> Path:
    return lines(
        tmp_path / "requests.jsonl",
        *({"method": "POST", "path": "/predict", "json": {"x": x}} for x in (1, 2, 3, 4)),
    )


ROUTES = """\
routes:
  - path: /predict
    methods: [POST]
    compare: {rel: 0.10}
  - path: /health
    methods: [GET]
"""


def replay(*args: str) -> subprocess.CompletedProcess[str]:
    return cutover_cli("replay", *args, timeout=120)


def test_planted_numeric_deltas_give_the_mean_and_max_computed_by_hand(
    planted: dict[str, Service], tmp_path: Path
) -> None:
    routes = tmp_path / "routes.yaml"
    routes.write_text(ROUTES)
    done = replay(
        str(predictions(tmp_path)),
        "--new", planted["new"].url,
        "--legacy", planted["legacy"].url,
        "--routes", str(routes),
        "--max-mean-delta", "5%", "--max-delta", "10%", "--min-match", "1.0",
        "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr + done.stdout
    report = json.loads(done.stdout)
    (route,) = report["groups"]
    assert route["group"] == "POST /predict"
    assert (route["requests"], route["matches"], route["drifts"], route["errors"]) == (4, 4, 0, 0)
    score = next(f for f in route["fields"] if f["path"] == "$.body.score")
    # deltas 0, 2%, 5%, 4%: mean 11% / 4 = 2.75%, max 5%
    assert score["mean_delta"] == pytest.approx(0.0275)
    assert score["max_delta"] == pytest.approx(0.05)
    assert route["mean_delta"] == pytest.approx(0.0275)  # score is the only numeric field
    assert report["overall"]["max_delta"] == pytest.approx(0.05)
    assert route["match_share"] == 1.0  # status and segment, every time
    assert report["passed"] is True
    # a tighter gate fails on exactly those figures, exit 1
    tight = replay(
        str(predictions(tmp_path)), "--new", planted["new"].url, "--legacy",
        planted["legacy"].url, "--routes", str(routes), "--max-delta", "4.9%", "--json",
    )  # fmt: skip
    assert tight.returncode == 1
    (failure,) = json.loads(tight.stdout)["failures"]
    assert (failure["name"], failure["value"]) == ("max delta", pytest.approx(0.05))


def test_a_planted_categorical_change_fails_min_match(
    planted: dict[str, Service], tmp_path: Path
) -> None:
    routes = tmp_path / "routes.yaml"
    routes.write_text(ROUTES)
    junit = tmp_path / "replay.xml"
    markdown = tmp_path / "replay.md"
    done = replay(
        str(predictions(tmp_path)),
        "--new", planted["segment"].url,
        "--legacy", planted["legacy"].url,
        "--routes", str(routes),
        "--max-mean-delta", "0.05", "--max-delta", "0.10", "--min-match", "1.0",
        "--junit", str(junit), "--markdown", str(markdown),
    )  # fmt: skip
    assert done.returncode == 1, done.stderr + done.stdout
    assert "POST /predict: match failed: 87.5% against 100%" in done.stdout  # 7 of 8 values
    xml = JUnitXml.fromfile(str(junit))
    cases = {case.name: case for suite in xml for case in suite}
    assert set(cases) == {"errors", "mean delta", "max delta", "match"}
    assert cases["mean delta"].is_passed
    assert not cases["match"].is_passed
    assert (xml.tests, xml.failures) == (4, 1)
    text = markdown.read_text()
    assert "| POST /predict | match | failed | 87.5% | 100% |" in text
    # the drift is the segment's, grouped by the fingerprint the proxy would give it
    shown = replay(
        str(predictions(tmp_path)), "--new", planted["segment"].url, "--legacy",
        planted["legacy"].url, "--routes", str(routes), "--json",
    )  # fmt: skip
    (route,) = json.loads(shown.stdout)["groups"]
    assert [(g["fingerprint"], g["count"]) for g in route["drift_groups"]] == [
        ("POST /predict $.body.segment", 1)
    ]


def test_a_latency_target_breached_by_its_upper_bound_is_not_a_pass(
    planted: dict[str, Service], tmp_path: Path
) -> None:
    # 100 health checks, four of them slow: the p95 itself is fast, but 100 calls cannot rule
    # out a p95 as slow as the slowest (the interval's upper end is the 100th value).
    requests = lines(
        tmp_path / "health.jsonl",
        *({"path": "/health?ms=" + ("120" if n % 25 == 0 else "0")} for n in range(1, 101)),
    )
    perf = tmp_path / "perf.yaml"
    perf.write_text("targets:\n  GET /health: 60ms\n")
    routes = tmp_path / "routes.yaml"
    routes.write_text(ROUTES)
    args = [
        str(requests), "--new", planted["new"].url, "--legacy", planted["legacy"].url,
        "--routes", str(routes), "--perf", str(perf), "--concurrency", "4", "--json",
    ]  # fmt: skip
    done = replay(*args)
    assert done.returncode == 1, done.stderr
    (check,) = [c for c in json.loads(done.stdout)["checks"] if c["name"].startswith("p95")]
    assert check["status"] == "inconclusive"
    assert check["value"] < 60
    assert replay(*args, "--allow-inconclusive").returncode == 0
    # all slow: the lower end is over the bound, a failure whatever is allowed
    slow = lines(tmp_path / "slow.jsonl", *({"path": "/health?ms=120"} for _ in range(40)))
    failed = replay(str(slow), *args[1:], "--allow-inconclusive")
    assert failed.returncode == 1
    (check,) = [c for c in json.loads(failed.stdout)["checks"] if c["name"].startswith("p95")]
    assert check["status"] == "failed"


def test_the_proxy_recording_replays_without_a_live_legacy_and_fingerprints_agree(
    start_proxy: Any, tmp_path: Path
) -> None:
    legacy, new = start_legacy(), start_new()
    try:
        record = tmp_path / "recorded"
        routes = tmp_path / "routes.yaml"
        routes.write_text("routes:\n  - path: /users/{id}\n    methods: [GET]\n")
        proxy = start_proxy(
            legacy.url, new.url, "--routes", str(routes), "--record", str(record),
            "--record-sample", "1",
        )  # fmt: skip
        proxy.set(mode="shadow", sample=1.0)
        with proxy.client() as client:
            for user in range(1, 11):
                assert client.get(f"/users/{user}").status_code == 200
        proxy.counted(lambda s: s["drifts"] >= 1, "the proxy's drift")
        assert proxy.stop() == 0
        recorded = sorted(record.glob("*.jsonl"))
        assert sum(len(p.read_text().splitlines()) for p in recorded) == 10
        legacy.stop()  # from here on, only what legacy answered then
        done = replay(
            *map(str, recorded), "--new", new.url, "--routes", str(routes),
            "--max-delta", "10%", "--json",
        )  # fmt: skip
        assert done.returncode == 0, done.stderr + done.stdout
        (route,) = json.loads(done.stdout)["groups"]
        assert (route["requests"], route["matches"], route["drifts"]) == (10, 9, 1)
        total = next(f for f in route["fields"] if f["path"] == "$.body.total")
        # user 7's total: legacy 10.5, new rounds it to 11
        assert total["max_delta"] == pytest.approx(0.5 / 10.5)
        assert total["mean_delta"] == pytest.approx(0.5 / 10.5 / 10)
        groups = cutover_cli("--store", proxy.store_url, "drifts", "api", "--group", "--json")
        stored = [g["fingerprint"] for g in json.loads(groups.stdout)["groups"]]
        assert [g["fingerprint"] for g in route["drift_groups"]] == stored
    finally:
        legacy.stop()
        new.stop()


def test_a_live_legacy_and_a_status_drift(legacy: Service, new: Service, tmp_path: Path) -> None:
    requests = lines(tmp_path / "auth.jsonl", *({"path": "/auth"} for _ in range(3)))
    done = replay(
        str(requests), "--new", new.url, "--legacy", legacy.url,
        "--legacy-header", "Authorization: Bearer v1-token", "--min-match", "1", "--json",
    )  # fmt: skip
    assert done.returncode == 1
    (route,) = json.loads(done.stdout)["groups"]
    assert route["group"] == "*"
    assert route["drift_groups"][0]["fingerprint"] == "* $.status (legacy 200, new 401)"
    assert route["drift_groups"][0]["count"] == 3


def test_har_input(planted: dict[str, Service], tmp_path: Path) -> None:
    def entry(x: int, score: float) -> dict[str, Any]:
        return {
            "time": 12.5,
            "request": {
                "method": "POST",
                "url": f"http://legacy.example/predict?trace={x}",
                "headers": [{"name": "Content-Type", "value": "application/json"}],
                "postData": {"mimeType": "application/json", "text": json.dumps({"x": x})},
            },
            "response": {
                "status": 200,
                "headers": [{"name": "Content-Type", "value": "application/json"}],
                "content": {"mimeType": "application/json", "text": json.dumps(
                    {"score": score, "segment": "a"}
                )},
            },
        }  # fmt: skip

    har = tmp_path / "session.har"
    har.write_text(json.dumps({"log": {"version": "1.2", "entries": [entry(1, 1), entry(2, 2)]}}))
    done = replay(str(har), "--new", planted["new"].url, "--max-delta", "3%", "--json")
    assert done.returncode == 0, done.stderr + done.stdout
    (route,) = json.loads(done.stdout)["groups"]
    assert route["max_delta"] == pytest.approx(0.02)
    assert route["latency"]["legacy"]["count"] == 2  # the HAR's recorded times


@pytest.mark.parametrize(
    ("make", "args", "message"),
    [
        (None, ["--new", "http://127.0.0.1:9"], "cannot read {dir}/missing.jsonl: No such file"),
        (
            '{"path": "/a"}\n\n{"path": "/b"\n',
            ["--new", "http://127.0.0.1:9"],
            "{dir}/requests.jsonl:3: not a JSON object (expecting ',' delimiter); each line",
        ),
        ('{"path": "a"}\n', ["--new", "http://127.0.0.1:9"], "requests.jsonl:1: path 'a' must"),
        ('{"path": "/a"}\n', ["--new", "ftp://x"], "--new 'ftp://x' is not an http:// URL"),
        ('{"path": "/a"}\n', ["--new", "http://x", "--max-delta", "lots"], "--max-delta 'lots'"),
        ("", ["--new", "http://x"], "holds no request"),
    ],
)
def test_bad_input_is_one_sentence_and_exit_2(
    tmp_path: Path, make: str | None, args: list[str], message: str
) -> None:
    path = tmp_path / ("missing.jsonl" if make is None else "requests.jsonl")
    if make is not None:
        path.write_text(make)
    done = replay(str(path), *args)
    assert done.returncode == 2, done.stderr
    assert message.format(dir=tmp_path) in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert "Traceback" not in done.stderr


def test_an_unreachable_new_is_counted_as_errors(tmp_path: Path) -> None:
    requests = lines(tmp_path / "r.jsonl", {"path": "/a"})
    port = free_port()
    done = replay(str(requests), "--new", f"http://127.0.0.1:{port}", "--legacy",
                  f"http://127.0.0.1:{port}", "--json")  # fmt: skip
    assert done.returncode == 1
    report = json.loads(done.stdout)
    assert report["groups"][0]["errors"] == 1
    assert "cannot connect" in report["groups"][0]["errors_seen"][0]["error"]


def test_requests_on_retired_routes_are_left_out(
    planted: dict[str, Service], tmp_path: Path
) -> None:
    routes = tmp_path / "routes.yaml"
    routes.write_text(ROUTES + '  - path: /old\n    gone: {sunset: "2027-03-31"}\n')
    requests = lines(
        tmp_path / "mixed.jsonl",
        {"method": "POST", "path": "/predict", "json": {"x": 1}},
        *({"path": "/old"} for _ in range(3)),
    )
    done = replay(
        str(requests), "--new", planted["new"].url, "--legacy", planted["legacy"].url,
        "--routes", str(routes), "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr + done.stdout
    assert "left out 3 requests on routes marked gone" in done.stderr
    assert [g["group"] for g in json.loads(done.stdout)["groups"]] == ["POST /predict"]


def test_the_rate_limit_spaces_requests(planted: dict[str, Service]) -> None:
    import time

    from cutover.proxy._config import parse_upstream
    from cutover.replay._input import Request
    from cutover.replay._run import ReplayOptions, run

    requests = [Request(f"r:{n}", "GET", "/health", [], b"") for n in range(11)]
    options = ReplayOptions(
        new=parse_upstream(planted["new"].url, "--new"),
        legacy=parse_upstream(planted["legacy"].url, "--legacy"),
        rate=50.0,
    )
    began = time.monotonic()
    tally = run(requests, options)
    # eleven requests at 50 a second start at least ten intervals of 20 ms apart: a lower
    # bound, which no machine can beat however fast or slow it is
    assert time.monotonic() - began >= 0.2
    assert tally.groups["*"].requests == 11
    assert tally.groups["*"].matches == 11
