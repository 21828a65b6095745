"""Generated Prometheus rules, checked and unit-tested by the real promtool: each alert fires
when the runbooks say, and not before."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from cutover.errors import InvalidInput
from cutover.generate.rules import Options, parse_for, rules, to_yaml
from cutover.reports.slo import SLO

from .promtool import check_rules
from .promtool import test_rules as run_tests

SUCCESS = SLO.model_validate(
    {"name": "success", "indicator": {"metric": "errors"}, "objective": "99.9%"}
)
LATENCY = SLO.model_validate(
    {
        "name": "latency",
        "indicator": {"metric": "latency", "threshold_ms": 1500},
        "objective": "99%",
        "window": "7d",
    }
)


def generated(migrations: tuple[str, ...] = ()) -> tuple[str, dict[str, Any]]:
    text = to_yaml(rules(migrations, [("transport", SUCCESS), ("transport", LATENCY)]))
    return text, yaml.safe_load(text)


def annotations(data: dict[str, Any], alert: str, description: str) -> dict[str, str]:
    rule = next(r for g in data["groups"] for r in g["rules"] if r.get("alert") == alert)
    return {**rule["annotations"], "description": description}


def percent(value: float) -> str:
    """Go's humanizePercentage: four significant digits."""
    return f"{value * 100:.4g}%"


def test_promtool_accepts_every_generated_rule(tmp_path: Path) -> None:
    text, data = generated(("codec", "tenants.v2"))
    result = check_rules(text, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 36 rules found" in result.stdout
    names = {r.get("alert") for g in data["groups"] for r in g["rules"]} - {None}
    assert names == {
        "ParityDrift",
        "HighFallbackRate",
        "NewErrorRateAboveLegacy",
        "NewLatencyAboveLegacy",
        "CutoverSLOBurnRatePage",
        "CutoverSLOBurnRateTicket",
        "CutoverSLOAbsent",
    }
    assert 'migration=~"codec|tenants\\\\.v2"' in text  # only the migrations named
    for group in data["groups"]:
        for rule in group["rules"]:
            if "alert" in rule:
                assert rule["annotations"]["runbook_url"].startswith("docs/observability.md#")


def test_parity_drift_fires_after_five_minutes_of_drift_and_not_before(tmp_path: Path) -> None:
    text, data = generated()
    labels = {"severity": "critical", "migration": "codec"}
    drifting = {
        "labels": labels,
        # From minute 11 one comparison in 101 drifts.
        "annotations": annotations(
            data, "ParityDrift", f"Migration codec drifts on {percent(1 / 101)} of its comparisons"
        ),
    }
    run_tests(
        text,
        [
            {
                "interval": "1m",
                "input_series": [
                    {
                        "series": 'cutover_comparisons_total{migration="codec",result="match"}',
                        "values": "0+100x30",
                    },
                    {
                        "series": 'cutover_comparisons_total{migration="codec",result="drift"}',
                        "values": "0x10 1+1x20",
                    },
                ],
                "alert_rule_test": [
                    {"eval_time": "10m", "alertname": "ParityDrift", "exp_alerts": []},
                    {"eval_time": "15m", "alertname": "ParityDrift", "exp_alerts": []},
                    {
                        "eval_time": "16m",
                        "alertname": "ParityDrift",
                        "exp_alerts": [
                            {"exp_labels": labels, "exp_annotations": drifting["annotations"]}
                        ],
                    },
                ],
            }
        ],
        tmp_path,
    )


@pytest.mark.parametrize(("per_minute", "fires"), [(9, False), (11, True)])
def test_high_fallback_rate_fires_after_ten_minutes_above_one_percent(
    tmp_path: Path, per_minute: int, fires: bool
) -> None:
    text, data = generated()
    labels = {"severity": "warning", "migration": "codec"}
    expected = [
        {
            "exp_labels": labels,
            "exp_annotations": annotations(
                data, "HighFallbackRate", f"Fallback rate of codec: {percent(per_minute / 1000)}"
            ),
        }
    ]
    run_tests(
        text,
        [
            {
                "interval": "1m",
                "input_series": [
                    {
                        "series": 'cutover_calls_total{migration="codec",arm="new",outcome="ok"}',
                        "values": "0+1000x40",
                    },
                    {
                        "series": 'cutover_fallbacks_total{migration="codec"}',
                        "values": f"0+{per_minute}x40",
                    },
                ],
                "alert_rule_test": [
                    # Above 1% from the first minute: pending for ten, then firing.
                    {"eval_time": "10m", "alertname": "HighFallbackRate", "exp_alerts": []},
                    {
                        "eval_time": "11m",
                        "alertname": "HighFallbackRate",
                        "exp_alerts": expected if fires else [],
                    },
                    {
                        "eval_time": "40m",
                        "alertname": "HighFallbackRate",
                        "exp_alerts": expected if fires else [],
                    },
                ],
            }
        ],
        tmp_path,
    )


SLO_LABELS = {"migration": "transport", "slo": "success"}
RATIO = 'cutover:slo_error_ratio:rate{}{{migration="transport",slo="success"}}'


@pytest.mark.parametrize(
    ("window", "alert", "severity", "factor", "long", "short"),
    [
        ("30d", "CutoverSLOBurnRatePage", "critical", 14.4, "1h", "5m"),
        ("30d", "CutoverSLOBurnRatePage", "critical", 6, "6h", "30m"),
        ("30d", "CutoverSLOBurnRateTicket", "warning", 3, "1d", "2h"),
        ("30d", "CutoverSLOBurnRateTicket", "warning", 1, "3d", "6h"),
        # 2% of a week's budget in an hour, 5% in six: 0.02 x 168 and 0.05 x 28.
        ("7d", "CutoverSLOBurnRatePage", "critical", 3.36, "1h", "5m"),
        ("7d", "CutoverSLOBurnRatePage", "critical", 1.4, "6h", "30m"),
        # The same shares of 28 days, as sloth writes them: 0.02 x 672 and 0.05 x 112.
        ("28d", "CutoverSLOBurnRatePage", "critical", 13.44, "1h", "5m"),
        ("28d", "CutoverSLOBurnRatePage", "critical", 5.6, "6h", "30m"),
    ],
)
def test_each_burn_rate_alert_fires_at_its_threshold(
    tmp_path: Path, window: str, alert: str, severity: str, factor: float, long: str, short: str
) -> None:
    """Both windows of a pair just above factor x the 0.1% budget fire; just below, not."""
    slo = SLO.model_validate({**SUCCESS.model_dump(mode="json"), "window": window})
    text = to_yaml(rules((), [("transport", slo)]))
    data = yaml.safe_load(text)
    above, below = factor * 0.001 * 1.01, factor * 0.001 * 0.99
    expected = [
        {
            "exp_labels": {"severity": severity, **SLO_LABELS},
            "exp_annotations": annotations(
                data,
                alert,
                f"{percent(above)} of events fail; the SLO allows 0.1% over {window}",
            ),
        }
    ]

    def case(long_value: float, short_value: float, alerts: list) -> dict[str, Any]:
        return {
            "interval": "1m",
            # The recorded error ratios themselves, each constant: the other pairs' windows
            # are zero, so only the pair under test can fire.
            "input_series": [
                {
                    "series": RATIO.format(span),
                    "values": f"{value!r}x5",
                }
                for span, value in (
                    (long, long_value),
                    (short, short_value),
                    *(
                        (s, 0.0)
                        for s in ("5m", "30m", "1h", "2h", "6h", "1d", "3d")
                        if s not in (long, short)
                    ),
                )
            ],
            "alert_rule_test": [{"eval_time": "2m", "alertname": alert, "exp_alerts": alerts}],
        }

    run_tests(
        text,
        [
            case(above, above, expected),
            case(below, above, []),  # the long window alone is below: no alert
            case(above, below, []),  # the burn has stopped in the short window: no alert
        ],
        tmp_path,
    )


def test_a_burn_from_counters_pages_and_the_budget_left_is_weighted_by_traffic(
    tmp_path: Path,
) -> None:
    text, data = generated()
    # 2% of calls fail: twenty times the 0.1% budget.
    calls = 'cutover_calls_total{{migration="transport",arm="new",outcome="{}"}}'
    run_tests(
        text,
        [
            {
                "interval": "1m",
                "input_series": [
                    {"series": calls.format("ok"), "values": "0+980x20"},
                    {"series": calls.format("error"), "values": "0+20x20"},
                ],
                "alert_rule_test": [
                    {
                        "eval_time": "10m",
                        "alertname": "CutoverSLOBurnRatePage",
                        "exp_alerts": [
                            {
                                "exp_labels": {"severity": "critical", **SLO_LABELS},
                                "exp_annotations": annotations(
                                    data,
                                    "CutoverSLOBurnRatePage",
                                    f"{percent(0.02)} of events fail; the SLO allows 0.1% over 30d",
                                ),
                            }
                        ],
                    }
                ],
                "promql_expr_test": [
                    {
                        "expr": "cutover:slo_error_budget_remaining",
                        "eval_time": "10m",
                        "exp_samples": [{"labels": _record(SLO_LABELS), "value": 1 - 20}],
                    }
                ],
            }
        ],
        tmp_path,
    )


def _record(labels: dict[str, str]) -> str:
    inside = ",".join(f'{k}="{v}"' for k, v in labels.items())
    return f"cutover:slo_error_budget_remaining{{{inside}}}"


def test_an_slo_without_data_alerts_after_ten_minutes(tmp_path: Path) -> None:
    text, data = generated()
    description = (
        "No events of the SLI of success for 10 minutes: the metric is not scraped, or the"
        " migration takes no traffic"
    )
    expected = {
        "exp_labels": {"severity": "warning", **SLO_LABELS},
        "exp_annotations": annotations(data, "CutoverSLOAbsent", description),
    }
    latency = {
        **expected,
        "exp_labels": {"severity": "warning", "migration": "transport", "slo": "latency"},
    }
    latency["exp_annotations"] = annotations(
        data, "CutoverSLOAbsent", description.replace("of success", "of latency")
    )
    latency["exp_annotations"]["summary"] = "SLO latency of transport has no data"
    run_tests(
        text,
        [
            {
                "interval": "1m",
                "input_series": [{"series": "up", "values": "1x20"}],
                "alert_rule_test": [
                    {"eval_time": "9m", "alertname": "CutoverSLOAbsent", "exp_alerts": []},
                    {
                        "eval_time": "10m",
                        "alertname": "CutoverSLOAbsent",
                        "exp_alerts": [latency, expected],
                    },
                ],
            }
        ],
        tmp_path,
    )


def test_for_overrides_name_known_alerts() -> None:
    assert parse_for(["ParityDrift=10s", "HighFallbackRate=1m30s"]) == {
        "ParityDrift": "10s",
        "HighFallbackRate": "1m30s",
    }
    with pytest.raises(InvalidInput, match="name one of the alerts"):
        parse_for(["Parity=10s"])
    with pytest.raises(InvalidInput, match="whole seconds"):
        parse_for(["ParityDrift=1.5s"])
    text = to_yaml(rules((), [], Options(for_={"ParityDrift": "10s"}, interval="1s")))
    group = yaml.safe_load(text)["groups"][0]
    assert group["interval"] == "1s"
    assert [r["for"] for r in group["rules"] if r.get("alert") == "ParityDrift"] == ["10s"]


def test_a_window_too_short_for_a_page_is_refused_in_one_sentence() -> None:
    """Under five days, 5% of the budget in six hours is less than the allowed rate."""
    four_days = SLO.model_validate({**SUCCESS.model_dump(mode="json"), "window": "4d"})
    with pytest.raises(InvalidInput, match=r"^SLO success: over a window of 4d the page .* 0\.8 "):
        rules((), [("transport", four_days)])
    five_days = SLO.model_validate({**SUCCESS.model_dump(mode="json"), "window": "5d"})
    assert "(1 * 0.001" in to_yaml(rules((), [("transport", five_days)]))
