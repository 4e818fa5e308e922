"""The Prometheus side of `loop_bench.py`: where a tick's read goes, and what the set-up itself costs.

Why it exists: at 50,000 functions a tick against the real Prometheus took 14.6 s while the
controller's own share (`tick_bench.py`) was about 1.5 s. Whether that is Prometheus evaluating the
five queries, serialising five answers of 4-5 MB, this process decoding them, or the benchmark's own
set-up (a Python exporter rendering 250,000 samples and Prometheus ingesting them every scrape, on the
same two cores) must be measured apart, or the benchmark measures Prometheus starving on its scrape
load instead of our tick. This module gives:
  * `cpu_seconds(pid)`: a process's CPU (user + system) from `/proc`, for Prometheus's and the
    exporter's share of the machine while idle and while the ticks run;
  * `query_stats(...)`: each of the reader's queries once more with `stats=all` (Prometheus's own
    evaluation timings), its wall time, answer size and this process's decoding CPU;
  * `RulesPrometheus`: Prometheus with recording rules for the loop's five figures (the dashboard's
    group of `manifests/monitoring.yaml` for rps and in-flight, `LOOP_GROUP` here for the others), and
    `recorded_settings`: the reader's queries over the recorded series, as an operator would set them
    with `--query-rps` and the others.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from autoscaler import _promql
from autoscaler.config import DEFAULT_QUERIES, MetricsSettings
from tests.support.prometheus import PrometheusServer

MANIFEST = Path(__file__).resolve().parent.parent / "manifests" / "monitoring.yaml"
DASHBOARD = "autoscaler.functions"  # the shipped group: rps and in-flight are recorded for the dashboard
RECORDS = {
    "rps": "function_name:gateway_function_invocation:rate1m",
    "inflight": "function_name:gateway_function_invocation_inflight:sum",
    "cpu": "function_name:cpu_millicores:rate1m",
    "started": "function_name:gateway_function_invocation_started:sum",
    "source": "function_name:gateway_service_count:max",
    "pending": "function_name:queue_worker_pending_messages:max",
}
# The loop's other figures, recorded for this benchmark only: measured, they bought no time (the cost
# of a query at 50,000 functions is per series, not per sample), so they are not shipped.
LOOP_GROUP = {
    "name": "autoscaler.loop",
    "interval": "15s",
    "rules": [
        {
            "record": RECORDS["cpu"],
            "expr": DEFAULT_QUERIES["cpu"].replace("{window}", "1m"),
        },
        {"record": RECORDS["started"], "expr": DEFAULT_QUERIES["started"]},
        {"record": RECORDS["source"], "expr": DEFAULT_QUERIES["source"]},
        {"record": RECORDS["pending"], "expr": DEFAULT_QUERIES["pending"]},
    ],
}


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one process so far (its threads included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def loop_rules() -> dict[str, Any]:
    """The shipped dashboard group (rps, in-flight) and the benchmark's loop group, as a rule file."""
    for document in yaml.safe_load_all(MANIFEST.read_text()):
        if document and document.get("kind") == "PrometheusRule":
            for group in document["spec"]["groups"]:
                if group["name"] == DASHBOARD:
                    return {"groups": [group, LOOP_GROUP]}
    raise RuntimeError(f"{MANIFEST} lacks the rule group {DASHBOARD}")


def recorded_settings(url: str) -> MetricsSettings:
    """The reader's five queries over the recorded series (the flags an operator would give).

    `by (function_name)` drops the recorded series' `__name__`, as the reader expects of an answer.
    """
    records = {
        rule["record"] for group in loop_rules()["groups"] for rule in group["rules"] if "record" in rule
    }
    missing = set(RECORDS.values()) - records
    if missing:
        raise RuntimeError(f"{MANIFEST} records none of {sorted(missing)}")
    return MetricsSettings(
        prometheus_url=url,
        query_timeout=60.0,
        query_rps=f"sum by (function_name) ({RECORDS['rps']})",
        query_inflight=f"sum by (function_name) ({RECORDS['inflight']})",
        query_cpu=f"sum by (function_name) ({RECORDS['cpu']})",
        query_started=f"sum by (function_name) ({RECORDS['started']})",
        query_source=f"max by (function_name) ({RECORDS['source']})",
        query_pending=f"max by (function_name) ({RECORDS['pending']})",
    )


class RulesPrometheus(PrometheusServer):
    """Prometheus that also evaluates the loop's recording rules, every `rules_interval` seconds."""

    rules_interval = 15.0

    def config(self) -> dict[str, object]:
        config = super().config()
        rules = self.data_dir / "loop-rules.yml"
        rules.write_text(yaml.safe_dump(loop_rules()))
        config["rule_files"] = [str(rules)]
        global_config = config["global"]
        assert isinstance(global_config, dict)
        global_config["evaluation_interval"] = f"{self.rules_interval:g}s"
        return config


async def scrape_health(url: str) -> str:
    """The exporter's last scrape as Prometheus saw it: up, duration, samples."""
    parts = []
    async with aiohttp.ClientSession() as session:
        for query in ("up", "scrape_duration_seconds", "scrape_samples_scraped"):
            async with session.get(f"{url}/api/v1/query", params={"query": query}) as response:
                result = (await response.json())["data"]["result"]
            parts.append(f"{query} {' '.join(item['value'][1][:6] for item in result)}")
    return ", ".join(parts)


async def query_stats(url: str, queries: dict[str, str], *, stale_after: float) -> list[dict[str, float]]:
    """Each query once, one after another, with Prometheus's own timings (`stats=all`)."""
    rows = []
    async with aiohttp.ClientSession() as session:
        for name, query in queries.items():
            params = {"query": query, "stats": "all", "lookback_delta": _promql.duration(stale_after)}
            started = time.perf_counter()
            async with session.get(f"{url}/api/v1/query", params=params) as response:
                body = await response.read()
            wall = time.perf_counter() - started
            data = json.loads(body)["data"]
            timings, samples = data["stats"]["timings"], data["stats"]["samples"]
            # The answer as the reader gets it (no stats member): what it decodes each tick.
            plain = body[: body.index(b',"stats":')] + b"}}"
            cpu = time.process_time()
            fast = _promql.fast_vector(plain, now=time.time(), stale_after=stale_after)
            decode = time.process_time() - cpu
            rows.append(
                {
                    "name": name,  # type: ignore[dict-item]
                    "wall": wall,
                    "eval": timings["evalTotalTime"],
                    "inner": timings["innerEvalTime"],
                    "prepare": timings["queryPreparationTime"],
                    "mib": len(plain) / 2**20,
                    "series": len(data["result"]),
                    "samples": samples["totalQueryableSamples"],
                    "decode": decode if fast is not None else float("nan"),
                }
            )
    return rows


def print_query_stats(rows: list[dict[str, float]]) -> None:
    print("  per query, one at a time (Prometheus's stats=all; decode = this process's CPU, fast path):")
    print("    query          wall ms  eval ms  (inner  prepare)  answer MiB  series  samples  decode ms")
    for row in rows:
        print(
            f"    {row['name']:13} {row['wall'] * 1000:8.0f} {row['eval'] * 1000:8.0f}  "
            f"({row['inner'] * 1000:6.0f} {row['prepare'] * 1000:7.0f})  {row['mib']:10.1f} "
            f"{row['series']:7.0f} {row['samples']:8.0f} {row['decode'] * 1000:10.0f}"
        )
    wall = sum(r["wall"] for r in rows)
    evaluation = sum(r["eval"] for r in rows)
    decode = sum(r["decode"] for r in rows)
    print(
        f"    sum           {wall * 1000:8.0f} {evaluation * 1000:8.0f}  serialise + transfer about "
        f"{(wall - evaluation) * 1000:.0f} ms, decoding {decode * 1000:.0f} ms"
    )
