"""The serving metrics: every one we register is documented (docs/monitoring.md) with its exported name, type and
labels, and every series the Grafana dashboard (cluster/grafana/alarm.json) queries is one that ours, vLLM's stat
logger or Ray Serve define. tests/integration/test_serve.py checks that a running server exports them all."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from services.serve.metrics import METRICS

ROOT = Path(__file__).resolve().parents[3]
DASHBOARD = ROOT / "cluster" / "grafana" / "alarm.json"
DOC = ROOT / "docs" / "monitoring.md"
SUFFIXES = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count")}


def exported(name: str, kind: str) -> str:
    """The name Ray's Prometheus endpoint shows (histograms: the base of _bucket/_sum/_count)."""
    return f"ray_{name}_total" if kind == "counter" else f"ray_{name}"


def doc_rows() -> dict[str, tuple[str, str]]:
    """`name` -> (type, labels) from the Markdown tables of docs/monitoring.md."""
    rows = {}
    for line in DOC.read_text().splitlines():
        m = re.match(r"\| `(ray_\w+)` \| (\w+) \|(?: ([^|]*) \|)?", line)
        if m:
            rows[m[1]] = (m[2], (m[3] or "").strip())
    return rows


def dashboard_series() -> set[str]:
    """Every metric name in the dashboard's PromQL (panels and template variables)."""
    dash = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    exprs += [v["definition"] for v in dash["templating"]["list"] if "definition" in v]
    return {name for e in exprs for name in re.findall(r"\bray_\w+", e)}


def base_of(series: str) -> str:
    return re.sub(r"_(bucket|sum|count)$", "", series)


def test_every_metric_we_register_is_documented_with_its_type_and_labels():
    rows = doc_rows()
    for m in METRICS.values():
        name = exported(m.name, m.kind)
        assert name in rows, f"docs/monitoring.md has no row for {name}"
        labels = ", ".join(f"`{t}`" for t in m.tags) or "-"
        assert rows[name] == (m.kind, labels), f"{name}: the doc says {rows[name]}, the code {(m.kind, labels)}"
    ours = {exported(m.name, m.kind) for m in METRICS.values()}
    assert {r for r in rows if r.startswith("ray_alarm_")} == ours, "the doc lists an alarm metric the code lacks"


def test_the_dashboard_queries_only_metrics_that_exist():
    import ray.serve
    import vllm.v1.metrics.loggers as vllm_loggers

    vllm_src = Path(vllm_loggers.__file__).read_text()
    serve_src = "".join(p.read_text() for p in Path(ray.serve.__file__).parent.rglob("*.py"))
    ours = {m.name: m for m in METRICS.values()}
    documented = doc_rows()
    for series in dashboard_series():
        base = base_of(series)
        if series.startswith("ray_alarm_"):
            name = re.sub(r"_total$", "", base)[len("ray_"):]
            assert name in ours, f"the dashboard queries {series}; services/serve/metrics.py has no {name}"
            m = ours[name]
            assert series in {f"ray_{name}{s}" for s in SUFFIXES[m.kind]}, f"{series}: {name} is a {m.kind}"
        elif series.startswith("ray_vllm_"):
            name = re.sub(r"_total$", "", base)[len("ray_vllm_"):]
            assert f'"vllm:{name}"' in vllm_src, f"the dashboard queries {series}; vLLM defines no vllm:{name}"
        else:
            assert series.startswith("ray_serve_") and f'"{base[4:]}"' in serve_src, f"unknown series {series}"
        assert base in documented or f"{base}_total" in documented or series in documented, (
            f"{series} is queried by the dashboard but not listed in docs/monitoring.md")


def test_the_dashboard_is_a_grafana_dashboard_over_a_prometheus_variable():
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] and dash["title"] and dash["schemaVersion"] >= 36
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    for p in dash["panels"]:
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        assert set(p["gridPos"]) == {"h", "w", "x", "y"} and p["gridPos"]["x"] + p["gridPos"]["w"] <= 24
        refs = [t["refId"] for t in p["targets"]]
        assert refs and len(refs) == len(set(refs)) and all(t["expr"] for t in p["targets"]), p["title"]
    assert any(v["name"] == "datasource" and v["type"] == "datasource" for v in dash["templating"]["list"])


@pytest.mark.parametrize("wanted", ["requests", "latency", "queue", "kv cache", "tokens", "batch", "replicas"])
def test_the_dashboard_has_the_panels_operators_look_for(wanted):
    titles = [p["title"].lower() for p in json.loads(DASHBOARD.read_text())["panels"]]
    assert any(wanted in t for t in titles), f"no panel about {wanted!r}: {titles}"


def test_engine_stats_replace_vllms_own_prometheus_registry():
    """A PrometheusStatLogger subclass: vLLM then adds no second, process-local registry beside Ray's."""
    from vllm.v1.metrics.loggers import PrometheusStatLogger

    from services.engines.stats import ray_stat_loggers

    (logger,) = ray_stat_loggers()
    assert issubclass(logger, PrometheusStatLogger)
