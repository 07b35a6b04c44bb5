"""Scaling and node loss on a local multi-node cluster: the timeline an operator wants before trusting autoscaling.

    flock /tmp/alarm-ray.lock python bench/scale.py [--preset tiny-gpu] [--out runs/scale] [--only generate]

Starts the preset's interactive cluster here (`python -m alarm.cluster local up`: its worker pods are Ray nodes that
the Ray autoscaler starts from zero and removes when idle), then runs each scenario on it and stops it:

- generate: the preset's generate job through `ray job submit` (engines placed by GPU, each on a worker node),
  on more clips; once the first shards are committed, the node of one engine is killed;
- train: the preset's train job through `ray job submit` on that corpus (its DDP workers and encoder actors each
  placed by GPU fraction); after the first checkpoint, the node of one DDP worker is killed;
- serve: the tiny application deployed on the cluster with every deployment autoscaled from 1 replica (each LLM
  replica on a GPU of its own), a bounded load generator on 127.0.0.1 ramping its clients up and down (half of
  them retrying UNAVAILABLE, half not); at the peak, once the LLM has its most replicas, the node holding the most
  replicas among those with an LLM replica is killed, and once it recovered the node of the encoders' replica
  (services.ramp).

Writes <out>/scale.json (per scenario: its figures and its timeline: nodes per type, progress, actors at work,
events) and <out>/scale.png (one column per scenario, one row per kind of series), and prints the figures: time to
the first worker node and to the first progress after the submission (for serve: the deploy), to a replacement
node and to full recovery after the kill, to scaling back to no worker node; for serve also the time to every LLM
replica at the peak, to readiness SERVING again after the kill, to the replicas and nodes back at their minimum
once the load ends, latency, and every request by status.

A scenario is one entry of SCENARIOS: a function (cluster, plan, work dir, timeline) -> figures that records the
series the PANELS below draw (nodes through services.drills.Sampler).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from alarm.cli import add_config_args, config_from_args
from alarm.cluster import Plan, plan, ray_cluster
from alarm.config import ClusterConfig
from alarm.files import atomic_write
from services.cluster import ClusterError, LocalCluster, nodes, wait_for
from services.drills import (
    ENGINE,
    TRAIN_WORKER,
    Sampler,
    Timeline,
    actor_nodes,
    figures,
    job_logs,
    kill_when,
    last_step,
    rows_committed,
    submit,
    wait_job,
)
from services.ramp import figures as ramp_figures
from services.ramp import ramp, serve_config

# (series name prefix, what it shows): one row of the picture each, drawn when some scenario recorded one
PANELS = [
    ("nodes/", "worker nodes by type"),
    ("progress/", "progress"),
    ("actors/", "actors at work"),
    ("load", "offered load (req/s)"),
    ("clients", "concurrent clients"),
    ("latency/", "latency (s)"),
    ("replicas/", "replicas per deployment"),
    ("serving", "readiness (1 = SERVING)"),
    ("errors/", "errors by status code (cumulative)"),
]
CLIPS, STEPS = 96, 12  # 96 clips: 24 blocks of 4, so a kill after the first 16 rows leaves work


def _argv(argv: list[str], drop: tuple[str, ...], *extra: str) -> list[str]:
    return [a for a in argv if not a.startswith(drop)] + list(extra)


def _drained(cluster: LocalCluster, timeline: Timeline, timeout_s: float) -> None:
    """Wait (bounded) for the worker nodes to go once the job is done: the scale-down half of the timeline."""
    wait_for(lambda: not nodes(cluster.address).workers(), timeout_s, "the idle worker nodes to go", every_s=1.0)
    timeline.event("no worker node")


def generate(cluster: LocalCluster, p: Plan, work: Path, timeline: Timeline) -> dict:
    run = work / "corpora" / "scale"
    argv = _argv(p.generate_argv, ("output=",), f"output={work / 'corpora'}", "run_id=scale",
                 "storage.shared=true", f"sources.0.num_clips={CLIPS}", "shard_rows=4", "workers.batch_size=4")
    probes = {"progress/rows": lambda: rows_committed(run), "actors/engines": lambda: len(actor_nodes(cluster, ENGINE))}
    with Sampler(timeline, cluster.address, probes):
        job = submit(cluster, argv, timeline)
        kill_when(cluster, timeline, lambda: (rows_committed(run) or 0) >= 16, ENGINE)
        status = wait_job(cluster, job, timeline=timeline)
        _drained(cluster, timeline, 60 * cluster.config["idle_timeout_minutes"] + 180)
    keys = _keys(run)
    stats = json.loads((run / "stats.json").read_text()) if status == "SUCCEEDED" else {}
    return {"status": status, "rows": len(keys), "duplicate_keys": len(keys) - len(set(keys)),
            "stats_rows": stats.get("rows"), **figures(timeline, "progress/rows", "actors/engines")}


def train(cluster: LocalCluster, p: Plan, work: Path, timeline: Timeline) -> dict:
    out = work / "training"
    argv = _argv(p.train_argv, ("corpus=", "output="), f"corpus={work / 'corpora' / 'scale'}", f"output={out}",
                 "run_id=scale", "storage.shared=true", f"max_steps={STEPS}", "checkpoint_every=2",
                 "eval_every=100", "log_every=1", "epochs=20")
    job: list[str] = []
    probes = {"progress/steps": lambda: last_step(job_logs(cluster, job[0])) if job else None,
              "actors/train workers": lambda: len(actor_nodes(cluster, TRAIN_WORKER))}
    with Sampler(timeline, cluster.address, probes):
        job.append(submit(cluster, argv, timeline))
        kill_when(cluster, timeline, lambda: any((out / "scale" / "train").glob("checkpoint_*")), TRAIN_WORKER)
        status = wait_job(cluster, job[0], timeline=timeline)
        _drained(cluster, timeline, 60 * cluster.config["idle_timeout_minutes"] + 180)
    summary = json.loads((out / "scale" / "summary.json").read_text()) if status == "SUCCEEDED" else {}
    metrics = out / "scale" / "metrics.jsonl"
    steps = [json.loads(x)["step"] for x in metrics.read_text().splitlines()
             if json.loads(x)["kind"] == "train"] if metrics.exists() else []
    return {"status": status, "steps_logged": len(steps), "steps_logged_once": steps == list(range(1, STEPS + 1)),
            "last_loss": summary.get("last_loss"), **figures(timeline, "progress/steps", "actors/train workers")}


def serve(cluster: LocalCluster, p: Plan, work: Path, timeline: Timeline) -> dict:
    load = ramp(cluster, serve_config(), timeline)
    try:
        _drained(cluster, timeline, 60 * cluster.config["idle_timeout_minutes"] + 180)
    except ClusterError as e:
        timeline.event("gave up", reason=str(e))
    figs = ramp_figures(timeline, load)
    r = figs["requests"]
    gave_up = [e["reason"] for e in timeline.events if e["event"] == "gave up"]
    broken = [why for why, bad in (
        ("requests unaccounted for", r["sent"] != r["ended"]),
        ("statuses other than OK and UNAVAILABLE (INTERNAL, a deadline reached, a client-side failure)",
         any(k.split(",")[0] not in ("sent", "ended", "OK", "UNAVAILABLE") for k in r)),
        ("UNAVAILABLE away from the kill", figs["unavailable_outside_kill"]),
        (f"gave up: {'; '.join(gave_up)}", gave_up)) if bad]
    return {"status": "SUCCEEDED" if not broken else "FAILED: " + ", ".join(broken), **figs}


def _keys(run: Path) -> list[str]:
    import pyarrow.parquet as pq

    return [k for f in sorted((run / "shards").glob("*.parquet")) for k in pq.read_table(f).column("key").to_pylist()]


SCENARIOS: dict[str, Callable[[LocalCluster, Plan, Path, Timeline], dict]] = {
    "generate": generate, "train": train, "serve": serve}


def plot(report: dict, path: Path) -> None:
    """One column per scenario, one row per panel that has data; events as vertical lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scenarios = report["scenarios"]
    panels = [(k, label) for k, label in PANELS if any(s.startswith(k) for sc in scenarios.values()
                                                       for s in sc["timeline"]["series"])]
    fig, axes = plt.subplots(len(panels), len(scenarios), figsize=(6.5 * len(scenarios), 2.3 * len(panels)),
                             squeeze=False, sharex="col")
    colors = {"submit": "tab:gray", "node killed": "tab:red", "encoder node killed": "tab:orange",
              "job end": "tab:green", "load end": "tab:green",
              "no worker node": "tab:blue"}
    for col, (name, sc) in enumerate(scenarios.items()):
        axes[0][col].set_title(name)
        for row, (prefix, label) in enumerate(panels):
            ax = axes[row][col]
            for series, points in sc["timeline"]["series"].items():
                if series.startswith(prefix) and points:
                    t, v = zip(*points, strict=True)
                    ax.step(t, v, where="post", label=series.removeprefix(prefix) or series)
            for e in sc["timeline"]["events"]:
                if e["event"] in colors:  # the ramp's steps show in its clients panel
                    ax.axvline(e["t"], color=colors[e["event"]], ls="--", lw=0.8)
            ax.set_ylabel(label, fontsize=8)
            if ax.has_data():
                ax.legend(fontsize=7, loc="upper left")
        axes[-1][col].set_xlabel("seconds (dashed: submit/deploy gray, node killed red (encoders' orange), job/load end green, "
                                 "no worker blue)",
                                 fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(report: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "scale.json", json.dumps(report, indent=1) + "\n")
    plot(report, out / "scale.png")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_config_args(parser, "cluster", "tiny-gpu", ClusterConfig)
    parser.add_argument("--out", type=Path, default=Path("runs/scale"), help="where scale.json and scale.png go")
    parser.add_argument("--only", default=",".join(SCENARIOS), help=f"scenarios, in order: {', '.join(SCENARIOS)}")
    args = parser.parse_args()
    cfg = config_from_args(args, ClusterConfig, "cluster")
    names = [n for n in args.only.split(",") if n]
    if unknown := [n for n in names if n not in SCENARIOS]:
        parser.error(f"unknown scenario(s) {unknown}; valid: {', '.join(SCENARIOS)}")
    p = plan(cfg)
    cluster = LocalCluster.from_ray_cluster(ray_cluster(p, "interactive"), cfg.local, cfg.env)
    report = {"preset": args.preset, "overrides": args.overrides, "cluster": cluster.settings(),
              "node_types": cluster.config["available_node_types"], "scenarios": {}}
    work = Path(tempfile.mkdtemp(prefix="alarm-scale-"))  # every node sees it: they share this disk
    try:
        report["cluster_up_s"] = round(cluster.up(), 1)
        print(f"cluster up in {report['cluster_up_s']} s", flush=True)
        for name in names:
            timeline = Timeline()
            figs = SCENARIOS[name](cluster, p, work, timeline)
            report["scenarios"][name] = {"figures": figs, "timeline": timeline.to_json()}
            print(f"{name}: " + ", ".join(f"{k}={v}" for k, v in figs.items()), flush=True)
            write(report, args.out)  # after each scenario: a later one that fails or is stopped keeps these
    finally:
        LocalCluster.down()
        shutil.rmtree(work, ignore_errors=True)
    print(f"wrote {args.out / 'scale.json'} and {args.out / 'scale.png'}")
    failed = [n for n, sc in report["scenarios"].items() if sc["figures"].get("status") != "SUCCEEDED"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
