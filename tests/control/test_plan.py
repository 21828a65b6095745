"""Plans: what is accepted, and how a mistake is reported (file, field, fix)."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest

from cutover._yaml import parse_yaml
from cutover.control.plan import Metric, OnCritical, load_plan, parse_plan
from cutover.errors import InvalidInput
from cutover.model import Mode, State

ISSUE_PLAN = """
migration: codec
steps:
  - {mode: shadow, sample: 1.0, hold: 14d, min_comparisons: 10000}
  - {mode: canary, percent: 5, hold: 1h}
  - {mode: canary, percent: 25, hold: 4h}
  - {mode: canary, percent: 50, hold: 8h}
  - {mode: canary, percent: 100, hold: 14d, approval: true}
  - {mode: new, approval: true}
checks:
  - {name: parity, metric: drift_rate, max: 0.001, window: 1h, severity: critical}
  - {name: new-errors, metric: error_rate, arm: new, max: 0.05, window: 5m, severity: critical}
  - {name: latency, metric: p99_ms, arm: new, max_ratio_to: legacy, max: 2.0, window: 10m,
     severity: critical}
  - {name: errors-warn, metric: error_rate, arm: new, max: 0.02, window: 30m, severity: warning}
  - {name: memory, source: prometheus, query: 'max(process_resident_memory_bytes{job="app"})',
     max: 2.0e9, window: 5m, severity: critical}
on_critical: previous_step        # or: legacy, pause
prometheus: {url: "http://127.0.0.1:9090"}
notify: [{webhook: "http://127.0.0.1:9000/hooks/cutover"}]
"""


def test_the_documented_plan_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "plan.yaml"
    path.write_text(ISSUE_PLAN)
    plan = load_plan(path)
    labels = ["shadow", "canary 5%", "canary 25%", "canary 50%", "canary 100%", "new"]
    assert [s.label for s in plan.steps] == labels
    assert plan.steps[0].hold == 14 * 86400 and plan.steps[4].needs_approval
    assert plan.checks[2].metric is Metric.P99_MS and plan.checks[2].rank is not None
    assert plan.on_critical is OnCritical.PREVIOUS_STEP
    assert parse_plan(plan.to_json()) == plan, "a stored plan reads back the same"


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda d: d["checks"][2].update(max_ratio_to="new"),
            "checks[2]: max_ratio_to must be the other arm (legacy)",
        ),
        (lambda d: d["steps"][1].pop("percent"), "steps[1]: a canary step needs a percent"),
        (
            lambda d: d["steps"][1].update(hold="1x"),
            "steps[1].hold: duration '1x' is not a duration",
        ),
        (
            lambda d: d["checks"][0].update(maxx=1),
            "checks[0].maxx: unknown field; the fields are name, source",
        ),
        (lambda d: d["steps"][2].update(mode="canery"), "steps[2].mode: unknown mode 'canery'"),
        (lambda d: d["checks"][1].update(max=5), "write 5% as 0.05"),
        (
            lambda d: d.update(on_critical="nope"),
            "on_critical: Input should be 'previous_step', 'legacy', 'rollback', 'pause' or 'none'",
        ),
        (lambda d: d.pop("migration"), "migration: this field is required"),
        (lambda d: d["checks"].append(dict(d["checks"][0])), "two checks are named 'parity'"),
        (lambda d: d["steps"][0].update(percent=5), "percent applies to canary steps"),
        (lambda d: d["checks"][4].pop("query"), "a prometheus check needs a query"),
        (lambda d: d["checks"][0].update(arm="new"), "drift_rate compares both arms"),
        (lambda d: d["steps"][1].update(percent=5.001), "at most two decimals"),
        (lambda d: d.update(steps=[]), "steps: give at least 1, not none"),
        (
            lambda d: d["notify"][0].update(webhook="ftp://x"),
            "a webhook is an http:// or https:// URL",
        ),
    ],
)
def test_a_mistake_names_the_file_the_field_and_the_fix(edit: Any, message: str) -> None:
    data = copy.deepcopy(parse_yaml(ISSUE_PLAN, "plan.yaml"))
    edit(data)
    with pytest.raises(InvalidInput) as raised:
        parse_plan(data, "plan.yaml")
    assert str(raised.value).startswith("plan.yaml: ")
    assert message in str(raised.value)


def test_unreadable_files_are_reported_plainly(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="no such plan file"):
        load_plan(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("migration: codec\nsteps: [\n")
    with pytest.raises(InvalidInput, match=r"broken.yaml: line \d+, column \d+: not valid YAML"):
        load_plan(broken)
    listed = tmp_path / "list.yaml"
    listed.write_text("- a\n- b\n")
    with pytest.raises(InvalidInput, match="a plan is a mapping"):
        load_plan(listed)


def test_a_step_keeps_pins_and_what_it_does_not_set() -> None:
    plan = parse_plan(parse_yaml(ISSUE_PLAN, "plan.yaml"))
    current = State(mode=Mode.SHADOW, sample=0.3, fallback=False, pins_new=frozenset({"vip"}))
    canary = plan.steps[1].state_from(current)
    expected = (Mode.CANARY, 5.0, 0.3, False)
    assert (canary.mode, canary.percent, canary.sample, canary.fallback) == expected
    assert canary.pins_new == {"vip"} and plan.steps[1].holds(canary)
    assert not plan.steps[2].holds(canary)


def test_checks_that_cannot_apply_in_a_mode_are_skipped() -> None:
    plan = parse_plan(parse_yaml(ISSUE_PLAN, "plan.yaml"))
    parity, errors, latency = plan.checks[0], plan.checks[1], plan.checks[2]
    assert parity.applies_to(Mode.SHADOW) is None and parity.applies_to(Mode.NEW)
    assert errors.applies_to(Mode.NEW) is None and errors.applies_to(Mode.LEGACY)
    assert latency.applies_to(Mode.CANARY) is None and latency.applies_to(Mode.NEW)
    assert plan.checks[4].applies_to(Mode.LEGACY) is None, "external checks always apply"


EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("**/*.yaml"))
ROUTES = [path for path in EXAMPLES if path.name == "routes.yaml"]
# The customers of the notify examples are messages' data, read by tests/reports/test_messages.
PLANS = [path for path in EXAMPLES if path not in ROUTES and path.parent.name != "notify"]


@pytest.mark.parametrize("path", PLANS, ids=lambda p: p.name)
def test_every_example_plan_is_valid(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUTOVER_PROMETHEUS_URL", raising=False)
    assert load_plan(path).steps


@pytest.mark.parametrize("path", ROUTES, ids=lambda p: p.parent.name)
def test_every_example_routes_file_is_valid(path: Path) -> None:
    from cutover.proxy._config import load_routes

    assert load_routes(path, "example", "header:X-User-Id").routes


DOCS = Path(__file__).resolve().parents[2] / "docs" / "rollouts.md"
EMBEDDED = re.compile(r"\(\.\./examples/plans/([\w.-]+\.yaml)\):\n\n```yaml\n(.*?)```", re.S)


def test_the_plans_shown_in_the_docs_are_the_example_files() -> None:
    shown = EMBEDDED.findall(DOCS.read_text(encoding="utf-8"))
    assert len(shown) >= 6
    for name, text in shown:
        assert text == (DOCS.parents[1] / "examples" / "plans" / name).read_text(), name
