"""The dashboard and the PrometheusRule ask only for series the add-on exports, in valid PromQL.

Names come from the code's own registries (the controller's ControllerMetrics, a Proxy's and the
queue-worker's WorkerMetrics), not
from a list kept here, so renaming a metric in the code breaks this test, not a dashboard in
production. Syntax and the alerts' behaviour are checked by Debian's `promtool`.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from autoscaler.config import ProxySettings
from autoscaler.proxy import Proxy
from autoscaler.queue._worker import WorkerMetrics
from autoscaler.telemetry import ControllerMetrics
from tests.manifests.conftest import Obj, only
from tests.manifests.promql import exported_names, metric_names
from tests.support.memory import MemoryProvider

GRAFANA_VARIABLES = {"$function": ".*", "$__rate_interval": "1m", "$__interval": "1m", "${datasource}": ""}


def _registries() -> list[CollectorRegistry]:
    controller = ControllerMetrics().registry
    proxy = CollectorRegistry()
    Proxy(settings=ProxySettings(), provider=MemoryProvider(), registry=proxy)
    worker = CollectorRegistry()
    WorkerMetrics(worker)
    return [controller, proxy, worker]


def _rules(base: list[Obj]) -> list[dict[str, Any]]:
    groups = only(base, "PrometheusRule", "autoscaler")["spec"]["groups"]
    return [rule for group in groups for rule in group["rules"]]


def _dashboard(base: list[Obj]) -> dict[str, Any]:
    config_map = only(base, "ConfigMap", "autoscaler-dashboard")
    ((_, text),) = config_map["data"].items()
    return json.loads(text)  # type: ignore[no-any-return]


def _panel_exprs(dashboard: dict[str, Any]) -> dict[str, list[str]]:
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    return {p["title"]: [t["expr"] for t in p["targets"]] for p in panels}


def _grafana_free(expr: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    return expr


def _promtool() -> str:
    found = shutil.which("promtool") or "/usr/bin/promtool"
    if not Path(found).exists():
        pytest.fail("promtool is missing: apt-get install -y prometheus")
    return found


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        (
            'sum by (function_name) (rate(gateway_function_invocation_total{code=~"2.."}[1m]))',
            {"gateway_function_invocation_total"},
        ),
        ("a:b:c / on (x) group_left (y) clamp_min(d, 1e3) > bool 0.5", {"a:b:c", "d"}),
        (
            'histogram_quantile(0.9, sum(rate(x_bucket{f=~"$function"}[$__rate_interval])) by (le))',
            {"x_bucket"},
        ),
        ("time() - max(t offset 5m and on (instance) (l == 1)) > 60", {"t", "l"}),
        ('absent(up{job="a b"} unless ignoring (pod) down)', {"up", "down"}),
    ],
)
def test_metric_names_are_found_in_promql(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_the_dashboard_shows_what_operators_need(base: list[Obj]) -> None:
    exprs = _panel_exprs(_dashboard(base))
    wanted = {
        "desired vs actual replicas": ["autoscaler_desired_replicas", "autoscaler_replicas"],
        "load vs target": ["autoscaler_load", "autoscaler_target"],
        "cold starts": ["autoscaler_wakeups_total"],
        "cold start latency": ["autoscaler_cold_start_seconds_bucket"],
        "held requests": ["autoscaler_held_requests", "autoscaler_hold_timeouts_total"],
        "decisions by reason": ["autoscaler_scale_total"],
        "tick time": ["autoscaler_tick_seconds_bucket"],
        "errors": ["autoscaler_errors_total"],
        "pending asynchronous calls": ["queue_worker_pending_messages"],
        "queue-worker in-flight calls": ["queue_worker_function_invocation_inflight"],
        "dead letters": ["autoscaler_queue_dead_letters_total"],
    }
    for what, needles in wanted.items():
        assert any(all(n in " ".join(e) for n in needles) for e in exprs.values()), f"no panel shows {what}"
    reasons = [e for es in exprs.values() for e in es if "autoscaler_scale_total" in e]
    assert all("by (reason)" in e for e in reasons)
    # Every worker replica reports the same stream-wide backlog: summing would count it once per replica.
    pending = [e for es in exprs.values() for e in es if "queue_worker_pending_messages" in e]
    assert pending
    assert all(e.startswith("max by (function_name)") for e in pending)


def test_every_series_the_dashboard_and_the_rules_read_is_exported_or_recorded(base: list[Obj]) -> None:
    exported = exported_names(_registries())
    rules = _rules(base)
    recorded = {rule["record"] for rule in rules if "record" in rule}
    assert {
        "autoscaler_tick_seconds_bucket",
        "autoscaler_scale_total",
        "gateway_function_invocation_total",
    } <= exported
    reads: dict[str, set[str]] = {}
    for rule in rules:
        reads[rule.get("record") or rule["alert"]] = metric_names(rule["expr"])
    for title, exprs in _panel_exprs(_dashboard(base)).items():
        reads[f"panel {title!r}"] = set().union(*(metric_names(e) for e in exprs))
    variables = _dashboard(base)["templating"]["list"]
    for variable in variables:
        if variable["type"] == "query":
            (metric,) = re.findall(r"label_values\((\w+)\s*,", variable["definition"])
            reads[f"variable {variable['name']}"] = {metric}
    unknown = {
        where: names - exported - recorded for where, names in reads.items() if names - exported - recorded
    }
    assert not unknown, f"series nobody exports: {unknown}"
    assert all(names for names in reads.values()), "an expression selects no series at all"


def test_the_rules_and_every_dashboard_query_are_valid_promql(base: list[Obj], tmp_path: Path) -> None:
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(yaml.safe_dump(only(base, "PrometheusRule", "autoscaler")["spec"]))
    panels = [e for es in _panel_exprs(_dashboard(base)).values() for e in es]
    dashboard_file = tmp_path / "dashboard.yaml"
    dashboard_rules = [
        {"record": f"dashboard:query_{i}", "expr": _grafana_free(e)} for i, e in enumerate(panels)
    ]
    dashboard_file.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": dashboard_rules}]}))
    result = subprocess.run(
        [_promtool(), "check", "rules", str(rules_file), str(dashboard_file)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _alert(base: list[Obj], name: str) -> dict[str, Any]:
    (rule,) = [r for r in _rules(base) if r.get("alert") == name]
    return rule


def test_the_alerts_fire_on_a_stuck_leader_a_missing_leader_and_missing_load_only(
    base: list[Obj], tmp_path: Path
) -> None:
    """promtool replays series: the follower keeps ticking while the leader is stuck (the alert must
    look at the leader), then no instance leads; one function has no load data on the leader."""
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(only(base, "PrometheusRule", "autoscaler")["spec"]))

    def fired(name: str, labels: dict[str, str], **values: str) -> dict[str, Any]:
        rule = _alert(base, name)
        annotations = {
            k: v.replace("{{ $labels.function_name }}", values.get("function_name", ""))
            for k, v in rule["annotations"].items()
        }
        return {"exp_labels": rule["labels"] | labels, "exp_annotations": annotations}

    tests = {
        "rule_files": ["rules.yaml"],
        "evaluation_interval": "15s",
        "tests": [
            {
                "interval": "15s",
                "input_series": [
                    # minutes 0-10: a leads; it ticks until minute 2, then stalls; b follows and keeps ticking
                    {"series": 'autoscaler_is_leader{instance="a"}', "values": "1x40 0x40"},
                    {"series": 'autoscaler_is_leader{instance="b"}', "values": "0x80"},
                    {
                        "series": 'autoscaler_last_tick_timestamp_seconds{instance="a"}',
                        "values": "0+15x8 120x72",
                    },
                    {"series": 'autoscaler_last_tick_timestamp_seconds{instance="b"}', "values": "0+15x80"},
                    {
                        "series": 'autoscaler_metrics_missing{instance="a",function_name="gone.fn"}',
                        "values": "1x80",
                    },
                    {
                        "series": 'autoscaler_metrics_missing{instance="a",function_name="fine.fn"}',
                        "values": "0x80",
                    },
                    {
                        "series": 'autoscaler_metrics_missing{instance="b",function_name="fine.fn"}',
                        "values": "1x80",
                    },
                ],
                "alert_rule_test": [
                    {"eval_time": "2m", "alertname": "AutoscalerLoopNotTicking", "exp_alerts": []},
                    {
                        "eval_time": "6m",
                        "alertname": "AutoscalerLoopNotTicking",
                        "exp_alerts": [fired("AutoscalerLoopNotTicking", {})],
                    },
                    {"eval_time": "6m", "alertname": "AutoscalerNoLeader", "exp_alerts": []},
                    {
                        "eval_time": "14m",
                        "alertname": "AutoscalerNoLeader",
                        "exp_alerts": [fired("AutoscalerNoLeader", {})],
                    },
                    {
                        "eval_time": "10m",
                        "alertname": "AutoscalerFunctionMetricsMissing",
                        "exp_alerts": [
                            fired(
                                "AutoscalerFunctionMetricsMissing",
                                {"function_name": "gone.fn"},
                                function_name="gone.fn",
                            )
                        ],
                    },
                ],
            }
        ],
    }
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump(tests))
    result = subprocess.run(
        [_promtool(), "test", "rules", "tests.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
