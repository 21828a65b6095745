"""The verdict shared by replay and golden vectors: deltas, match shares, latency targets, gates,
and the JSON, JUnit and Markdown it is reported as."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner
from junitparser import JUnitXml

from cutover.cli._verdict import Reporting, finish, verdict_options
from cutover.compare import Diff, Difference
from cutover.control.statistics import sample_quantile_interval
from cutover.errors import InvalidInput
from cutover.model import Arm, Comparison, Observation
from cutover.model import Verdict as Outcome
from cutover.replay import Gates, Tally, Targets


def compared(verdict: Outcome = Outcome.MATCH, *differences: Difference) -> Comparison:
    return Comparison(
        "api",
        verdict,
        Observation(Arm.LEGACY),
        Observation(Arm.NEW),
        diff=Diff(differences) if differences else None,
    )


def planted() -> Tally:
    """Three predictions: deltas 2%, 5% and 0% on two fields, one segment changed of three."""
    tally = Tally()
    rows = [
        ({"score": 100, "segment": "a"}, {"score": 102, "segment": "a"}),
        ({"score": 40, "segment": "b"}, {"score": 42, "segment": "b"}),
        ({"score": 7, "segment": "c"}, {"score": 7, "segment": "d"}),
    ]
    for legacy, new in rows:
        same = legacy == new
        diff = () if same else (Difference("$.body.score", 1, 2, scope="POST /predict"),)
        tally.add(
            "POST /predict",
            compared(Outcome.MATCH if same else Outcome.DRIFT, *diff),
            legacy={"status": 200, "body": legacy},
            new={"status": 200, "body": new},
            legacy_ms=10.0,
            new_ms=12.0,
        )
    return tally


def test_numeric_deltas_are_relative_to_legacy_per_field_and_overall() -> None:
    verdict = planted().verdict(Gates(max_mean_delta=0.05, max_delta=0.10))
    (group,) = verdict.groups
    score = next(f for f in group.fields if f.path == "$.body.score")
    # |102-100|/100 = 0.02, |42-40|/40 = 0.05, 0: mean 0.07/3, max 0.05
    assert score.numeric == 3
    assert score.mean_delta == pytest.approx(0.07 / 3)
    assert score.max_delta == pytest.approx(0.05)
    # $.status is a number too: three zero deltas join the group's mean
    assert group.figures.mean_delta == pytest.approx(0.07 / 6)
    assert verdict.overall.max_delta == pytest.approx(0.05)
    assert verdict.passed


def test_a_planted_categorical_change_fails_min_match_one() -> None:
    verdict = planted().verdict(Gates(min_match=1.0))
    (group,) = verdict.groups
    segment = next(f for f in group.fields if f.path == "$.body.segment")
    assert (segment.categorical, segment.matched) == (3, 2)
    assert segment.example == ("c", "d")
    assert not verdict.passed
    (failure,) = verdict.failures
    assert failure.name == "match"
    assert failure.value == pytest.approx(2 / 3)
    assert planted().verdict(Gates(min_match=0.6)).passed


def test_arrays_aggregate_per_field_and_ignored_paths_are_not_measured() -> None:
    tally = Tally()
    tally.add(
        "GET /items",
        compared(),
        legacy={"items": [{"p": 10, "id": "x"}, {"p": 20, "id": "y"}], "at": "monday"},
        new={"items": [{"p": 11, "id": "x"}], "at": "tuesday"},
        ignore=("$.at",),
    )
    fields = {f.path: f for f in tally.verdict(Gates()).groups[0].fields}
    assert set(fields) == {"$.items[*].p", "$.items[*].id"}
    # the second element is missing in new: a number whose other side is not one is categorical
    assert (fields["$.items[*].p"].numeric, fields["$.items[*].p"].max_delta) == (1, 0.1)
    assert (fields["$.items[*].p"].categorical, fields["$.items[*].p"].matched) == (1, 0)
    assert fields["$.items[*].id"].matched == 1


def test_a_legacy_zero_is_a_full_delta_and_booleans_are_categories() -> None:
    tally = Tally()
    tally.add("g", compared(), legacy={"n": 0, "ok": True}, new={"n": 0.5, "ok": 1})
    fields = {f.path: f for f in tally.verdict(Gates()).groups[0].fields}
    assert fields["$.n"].max_delta == 1.0
    assert (fields["$.ok"].categorical, fields["$.ok"].matched) == (1, 0)


def test_drifts_are_grouped_by_their_fingerprint_and_errors_counted() -> None:
    tally = planted()
    tally.add("POST /predict", None, error="cannot connect to http://127.0.0.1:9: refused")
    verdict = tally.verdict(Gates.of({}))
    (group,) = verdict.groups
    figures = group.figures
    assert (figures.requests, figures.matches, figures.drifts, figures.errors) == (4, 0, 3, 1)
    (cause,) = group.drift_groups
    assert cause.fingerprint == "POST /predict $.body.score"
    assert cause.count == 3
    assert group.errors == (("cannot connect to http://127.0.0.1:9: refused", 1),)
    # no comparison gate given: any drift fails, and errors fail by default
    assert {check.name for check in verdict.failures} == {"drifts", "errors"}


def test_the_median_interval_of_twenty_calls_is_the_sixth_to_fifteenth_value() -> None:
    # The textbook distribution-free 95% interval for the median of 20 draws: (x(6), x(15)).
    values = [float(v) for v in range(1, 21)]
    assert sample_quantile_interval(values, 0.5, 0.95) == (6.0, 15.0)
    _, high = sample_quantile_interval(values[:10], 0.95, 0.95) or (0, 0)
    assert high == math.inf  # ten calls cannot bound a p95 from above


def latencies(values: list[float]) -> Tally:
    tally = Tally()
    for ms in values:
        tally.add("GET /health", compared(), new_ms=ms, legacy_ms=1.0)
    return tally


@pytest.mark.parametrize(
    ("bound", "status"),
    [(16.0, "passed"), (14.5, "inconclusive"), (5.5, "failed")],
)
def test_a_latency_target_is_judged_on_its_interval(bound: float, status: str) -> None:
    targets = Targets({"/health": bound}, quantile=0.5)
    verdict = latencies([float(v) for v in range(1, 21)]).verdict(Gates(), targets)
    (check,) = [c for c in verdict.checks if c.name.startswith("p50")]
    assert check.status == status
    assert check.value == 10.0
    assert verdict.passed is (status == "passed")
    allowed = latencies([float(v) for v in range(1, 21)]).verdict(
        Gates(allow_inconclusive=True), targets
    )
    assert allowed.passed is (status != "failed")


def test_too_few_calls_for_a_p95_are_inconclusive_however_fast() -> None:
    targets = Targets({"GET /health": 100.0})
    verdict = latencies([1.0] * 10).verdict(Gates(), targets)
    assert [c.status for c in verdict.checks if c.name.startswith("p95")] == ["inconclusive"]
    assert not verdict.passed


def test_a_target_for_a_route_without_calls_is_reported() -> None:
    verdict = latencies([1.0] * 100).verdict(Gates(), Targets({"/usage": 200.0}))
    assert [(c.group, c.status, c.detail) for c in verdict.checks][-1] == (
        "/usage",
        "inconclusive",
        "no calls",
    )


def test_gates_and_targets_files(tmp_path: Path) -> None:
    gates = tmp_path / "gates.yaml"
    gates.write_text("max_mean_delta: 5%\nmax_delta: 0.10\nmin_match: 1\n")
    assert Gates.load(gates) == Gates(0.05, 0.10, 1.0, None, 0.0)
    gates.write_text("max_mean_delta: 5%\nmax_dleta: 0.10\n")
    with pytest.raises(InvalidInput, match=r"gates.yaml, line 2: max_dleta is not a known field"):
        Gates.load(gates)
    gates.write_text("max_delta: lots\n")
    with pytest.raises(InvalidInput, match=r"max_delta 'lots' is not a share"):
        Gates.load(gates)
    perf = tmp_path / "perf.yaml"
    perf.write_text("targets:\n  GET /health: 100ms\n  /predict: 0.5s\n  usage: 200\n")
    targets = Targets.load(perf)
    assert dict(targets.bounds) == {"GET /health": 100.0, "/predict": 500.0, "usage": 200.0}
    assert targets.bound_for("POST /predict") == ("/predict", 500.0)
    perf.write_text("targets:\n  GET /health: soon\n")
    with pytest.raises(InvalidInput, match=r"targets.GET /health 'soon' is not a duration"):
        Targets.load(perf)
    with pytest.raises(InvalidInput, match="cannot read the perf file"):
        Targets.load(tmp_path / "missing.yaml")


def test_junit_is_one_case_per_group_and_gate_and_loads_as_junit(tmp_path: Path) -> None:
    tally = planted()
    for _ in range(100):
        tally.add("GET /health", compared(), legacy={"ok": True}, new={"ok": True}, new_ms=1.0)
    verdict = tally.verdict(
        Gates(max_mean_delta=0.05, max_delta=0.10, min_match=1.0),
        Targets({"/health": 100.0, "/predict": 500.0}),
    )
    path = tmp_path / "report.xml"
    verdict.write_junit(path, "cutover replay")
    xml = JUnitXml.fromfile(str(path))
    suites = {suite.name: suite for suite in xml}
    assert set(suites) == {"GET /health", "POST /predict"}
    cases = {case.name: case for case in suites["POST /predict"]}
    assert set(cases) == {"errors", "mean delta", "max delta", "match", "p95 new < 500 ms"}
    assert not cases["mean delta"].result
    assert cases["match"].result[0].message.startswith("POST /predict: match failed: 66.7%")
    assert "inconclusive" in cases["p95 new < 500 ms"].result[0].message  # three calls
    health = {case.name: case for case in suites["GET /health"]}
    assert health["p95 new < 100 ms"].is_passed
    assert health["mean delta"].is_skipped  # no numeric field there
    assert (xml.tests, xml.failures) == (10, 2)


def test_json_and_markdown_say_the_same(tmp_path: Path) -> None:
    verdict = planted().verdict(Gates(min_match=1.0))
    data = json.loads(json.dumps(verdict.as_json()))
    assert data["passed"] is False
    assert data["groups"][0]["drift_groups"][0]["fingerprint"] == "POST /predict $.body.score"
    assert data["failures"][0]["name"] == "match"
    verdict.write_markdown(tmp_path / "r.md", "cutover replay")
    text = (tmp_path / "r.md").read_text()
    assert text.startswith("## cutover replay: failed")
    assert "| POST /predict | 3 | 0 | 3 | 0 |" in text
    assert "| POST /predict | match | failed | 66.7% | 100% |" in text


@click.command()
@verdict_options
def judged(reporting: Reporting) -> int:
    """A command that judges the planted run the way replay and golden verify do."""
    return finish(planted().verdict(reporting.gates, reporting.targets), reporting, "test")


def run(*args: str) -> Any:
    return CliRunner().invoke(judged, list(args), standalone_mode=False)


def test_verdict_options_and_finish(tmp_path: Path) -> None:
    assert run("--max-mean-delta", "5%", "--max-delta", "0.1").return_value == 0
    assert run("--min-match", "1.0").return_value == 1
    gates = tmp_path / "gates.yaml"
    gates.write_text("min_match: 1\n")
    assert run("--gates", str(gates)).return_value == 1
    assert run("--gates", str(gates), "--min-match", "50%").return_value == 0  # flags win
    out = run("--min-match", "1.0", "--json", "--junit", str(tmp_path / "j.xml"))
    assert json.loads(out.output)["passed"] is False
    assert JUnitXml.fromfile(str(tmp_path / "j.xml")).failures == 1
    bad = run("--max-delta", "ten")
    assert isinstance(bad.exception, InvalidInput)  # the CLI prints it as one sentence, exit 2
    assert str(bad.exception) == "--max-delta 'ten' is not a share; write it like 0.05 or 5%"
    missing = run("--junit", str(tmp_path / "no" / "j.xml"))
    assert isinstance(missing.exception, InvalidInput)
    assert "folder" in str(missing.exception)
