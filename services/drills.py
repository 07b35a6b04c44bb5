"""Node-loss drills on a local multi-node cluster (services.cluster): submit a job the documented way (`ray job
submit`), lose the node that hosts one of its actors at a chosen moment, and record what an operator watches on one
timeline: nodes per type, the job's progress, the actors at work, the events. bench/scale.py turns the timelines
into figures and a picture; tests/integration/test_multinode.py checks the jobs' invariants.

    with Sampler(timeline, cluster.address, {"progress/rows": lambda: rows_committed(run)}):
        job = submit(cluster, ["python", "-m", "alarm.generate", ...], timeline)
        kill_when(cluster, timeline, lambda: rows_committed(run) >= 8, ENGINE)
        wait_job(cluster, job)
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from services.cluster import ClusterError, LocalCluster, kill_node, nodes, wait_for

ROOT = Path(__file__).resolve().parents[1]  # the working dir a job ships (`--working-dir .`)
ENGINE = "CorpusLLM"  # the generation engines' actor classes, batch or async (Ray Data names it MapWorker(MapBatches(...)))
TRAIN_WORKER = "TrainWorker"  # a Ray Train worker's actor class (RayTrainWorker)


class Timeline:
    """Named series of (seconds, value) samples and labelled events, timed from its creation; thread-safe."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.series: dict[str, list[tuple[float, float]]] = {}
        self.events: list[dict] = []
        self._lock = threading.Lock()

    def now(self) -> float:
        return round(time.monotonic() - self.t0, 3)

    def add(self, name: str, value: float) -> None:
        with self._lock:
            self.series.setdefault(name, []).append((self.now(), value))

    def event(self, label: str, **data) -> float:
        t = self.now()
        with self._lock:
            self.events.append({"t": t, "event": label, **data})
        return t

    def at(self, label: str) -> float | None:
        """When the first event `label` happened."""
        return next((e["t"] for e in self.events if e["event"] == label), None)

    def first(self, name: str, when: Callable[[float], bool], after: float = 0.0) -> float | None:
        """The first sample time >= `after` whose value of series `name` satisfies `when`."""
        return next((t for t, v in self.series.get(name, []) if t >= after and when(v)), None)

    def value_at(self, name: str, t: float) -> float | None:
        """The last value of series `name` sampled at or before `t`."""
        before = [v for s, v in self.series.get(name, []) if s <= t]
        return before[-1] if before else None

    def to_json(self) -> dict:
        return {"series": {k: [list(p) for p in v] for k, v in self.series.items()}, "events": self.events}


class Sampler:
    """A background thread that samples, every `every_s`: the nodes per type the autoscaler reports (series
    `nodes/<type>` and `launching/<type>`, the head left out) and each probe (None: no sample; a dict: one series
    per key, named probe name + key), and once more on leaving the `with` block."""

    def __init__(self, timeline: Timeline, gcs_address: str, probes: dict[str, Callable[[], float | None]],
                 every_s: float = 1.0, head_type: str = "ray.head.default"):
        self.timeline, self.gcs, self.probes, self.every_s, self.head = timeline, gcs_address, probes, every_s, head_type
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)
        self.types: set[str] = set()

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(30)
        if not self._thread.is_alive():  # (a thread stuck on a dead GCS keeps it: no second sampler beside it)
            self.sample()  # the state at exit: what the block waited for (e.g. no worker node) is on the timeline

    def sample(self) -> None:
        try:
            n = nodes(self.gcs)
        except Exception:  # GCS busy or restarting: a gap in the series, not a failed drill
            n = None
        if n is not None:
            self.types |= {t for t in (*n.running, *n.pending) if t != self.head}
            for t in sorted(self.types):
                self.timeline.add(f"nodes/{t}", n.running.get(t, 0))
                self.timeline.add(f"launching/{t}", n.pending.get(t, 0))
        for name, probe in self.probes.items():
            try:
                value = probe()
            except Exception:
                value = None
            if isinstance(value, dict):  # several series: name + each key
                for key, v in value.items():
                    self.timeline.add(f"{name}{key}", v)
            elif value is not None:
                self.timeline.add(name, value)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.every_s)


# ---------------------------------------------------------------------------------------------------------------
# jobs


def submit(cluster: LocalCluster, argv: list[str], timeline: Timeline | None = None) -> str:
    """`ray job submit --no-wait --working-dir <repo> -- argv` on the cluster (the documented path); the job id."""
    job = f"alarm-{uuid.uuid4().hex[:10]}"
    cmd = ["ray", "job", "submit", "--no-wait", "--address", cluster.dashboard_url, "--submission-id", job,
           "--working-dir", str(ROOT), "--", *argv]
    env = {**os.environ, "RAY_AUTH_MODE": cluster.ray_env("")["RAY_AUTH_MODE"]}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    if done.returncode:
        raise ClusterError(f"ray job submit failed ({done.returncode}): {done.stderr[-2000:]}")
    if timeline is not None:
        timeline.event("submit", job=job, argv=argv)
    return job


def _client(cluster: LocalCluster):
    from ray.job_submission import JobSubmissionClient

    return JobSubmissionClient(cluster.dashboard_url)


def job_status(cluster: LocalCluster, job: str) -> str:
    return str(_client(cluster).get_job_status(job).value)


def job_logs(cluster: LocalCluster, job: str) -> str:
    return _client(cluster).get_job_logs(job)


def wait_job(cluster: LocalCluster, job: str, timeout_s: float = 1800, timeline: Timeline | None = None) -> str:
    """Wait until the job ends; its final status (SUCCEEDED, FAILED, STOPPED)."""
    status = wait_for(lambda: (s := job_status(cluster, job)) in ("SUCCEEDED", "FAILED", "STOPPED") and s,
                      timeout_s, f"job {job}", every_s=1.0)
    if timeline is not None:
        timeline.event("job end", job=job, status=status)
    return status


# ---------------------------------------------------------------------------------------------------------------
# what the jobs are doing


def actor_nodes(cluster: LocalCluster, class_part: str, alive: bool = True) -> list[str]:
    """Node ids of the actors whose class name contains `class_part` (alive ones, or every one ever)."""
    from ray.util.state import list_actors

    filters = [("state", "=", "ALIVE")] if alive else None
    actors = list_actors(address=cluster.address, filters=filters, limit=10_000, raise_on_missing_output=False)
    return [a.node_id for a in actors if class_part in a.class_name]


def rows_committed(run: Path) -> int | None:
    """Rows in a corpus run's committed shards (its index, rewritten after each shard)."""
    try:
        return json.loads((run / "manifest.json").read_text())["rows"]
    except (OSError, ValueError, KeyError):
        return None


def last_step(logs: str) -> int | None:
    """The training step the job's log printed last: rank 0's progress line (`train N/M (P%) ...`, every log_every
    steps, from services.train.monitor), in a job's log behind the worker's prefix, `(RayTrainWorker pid=...) `."""
    plain = re.sub(r"\x1b\[[0-9;]*m", "", logs)  # Ray colours the prefix
    steps = re.findall(r"^(?:\([^)\n]*\) )?train (\d+)/\d+ \(", plain, flags=re.M)
    return int(steps[-1]) if steps else None


def kill_when(cluster: LocalCluster, timeline: Timeline, ready: Callable[[], bool], actor: str,
              timeout_s: float = 900, pick: Callable[[list[str]], str | None] | None = None,
              label: str = "node killed") -> str:
    """Once `ready()`, lose the worker node that hosts an alive `actor` (by class name; `pick` chooses among the
    nodes of those actors, by default the first); its id. The event `label` marks the moment."""
    choose = pick or (lambda ids: next(iter(ids), None))
    node = wait_for(lambda: ready() and choose(actor_nodes(cluster, actor)), timeout_s,
                    f"a moment to kill the node of a live {actor}", every_s=0.5)
    killed = kill_node(node)
    timeline.event(label, node=node, processes=killed, actor=actor)
    return node


def worker_nodes(timeline: Timeline, t: float) -> int:
    """Running worker nodes (every type) at time t."""
    return int(sum(timeline.value_at(k, t) or 0 for k in timeline.series if k.startswith("nodes/")))


def figures(timeline: Timeline, progress: str, actors: str | None = None) -> dict:
    """What an operator asks of a drill, in seconds: time to the first worker node and the first progress after
    the submission, to a replacement node, to full recovery after the kill (the actors back to their number
    before it, or else the progress past its value at the kill), and to scaling back to no worker node."""
    submit_t, kill_t, end_t = timeline.at("submit"), timeline.at("node killed"), timeline.at("job end")
    node_series = [k for k in timeline.series if k.startswith("nodes/")]
    t_nodes = sorted({t for k in node_series for t, _ in timeline.series[k]})

    def first_nodes(when: Callable[[int], bool], after: float) -> float | None:
        return next((t for t in t_nodes if t >= after and when(worker_nodes(timeline, t))), None)

    out: dict[str, float | None] = {}
    if submit_t is not None:
        up = first_nodes(lambda n: n > 0, submit_t)
        moved = timeline.first(progress, lambda v: v > 0, submit_t)
        out |= {"scale_up_s": since(submit_t, up), "first_progress_s": since(submit_t, moved)}
    if kill_t is not None:
        before = worker_nodes(timeline, kill_t)
        fell = first_nodes(lambda n: n < before, kill_t)
        back = first_nodes(lambda n: n >= before, fell) if fell is not None else None
        out["node_replaced_s"] = since(kill_t, back)
        if actors is not None and (n_before := timeline.value_at(actors, kill_t)):
            dipped = timeline.first(actors, lambda v: v < n_before, kill_t)
            restored = timeline.first(actors, lambda v: v >= n_before, dipped) if dipped is not None else None
        else:
            at_kill = timeline.value_at(progress, kill_t) or 0
            restored = timeline.first(progress, lambda v: v > at_kill, kill_t)
        out["recovered_s"] = since(kill_t, restored)
    if end_t is not None:
        out["scale_down_s"] = since(end_t, first_nodes(lambda n: n == 0, end_t))
    return out


def since(t0: float, t: float | None) -> float | None:
    return None if t is None else round(t - t0, 1)
