"""A rendered cluster run on this machine with the real Ray autoscaler (`python -m alarm.cluster local`, preset
tiny-gpu: worker nodes with 4 CPUs and one `fake_gpu` each, 0..3 of them, started from zero as the jobs ask).

The fast test runs a few rows of generation on a worker node the autoscaler starts. The slow ones lose a worker
node mid-job: generation through `ray job submit` still writes every key exactly once, training restarts from its
last checkpoint and ends where an uninterrupted run ends, serving under a load ramp accounts for every request
and recovers, and the nodes scale back down.

The module stops the session's shared Ray first (a local cluster's `ray stop --force` would kill it, and two
heads would fight over ports) and starts it again afterwards; everything runs under the Ray lock.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from alarm.cluster import load_cluster_config, plan, ray_cluster
from alarm.config import CorpusConfig, load_config
from alarm.errors import InvalidInput
from services.cluster import LocalCluster, nodes, running_ray, wait_for
from services.drills import (
    ENGINE,
    TRAIN_WORKER,
    Sampler,
    Timeline,
    actor_nodes,
    job_logs,
    kill_when,
    rows_committed,
    submit,
    wait_job,
)
from services.ramp import figures, ramp, serve_config

ROOT = Path(__file__).resolve().parents[2]
PRESET = "tiny-gpu"
GPU_NODES = "gpu"  # the worker group (node type) of the preset


@pytest.fixture(scope="module")
def cluster():
    import ray

    from tests.integration.conftest import start_ray

    shared, environ = ray.is_initialized(), dict(os.environ)
    if shared:
        ray.shutdown()
    wait_for(lambda: not running_ray(), 60, "the shared Ray to stop")
    cfg = load_cluster_config(PRESET)
    env = {**cfg.env, "PYTHONPATH": str(ROOT), "RAY_AUTH_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    c = LocalCluster.from_ray_cluster(ray_cluster(plan(cfg), "interactive"), cfg.local, env)
    try:
        c.up()
        yield c
    finally:
        ray.shutdown()
        LocalCluster.down()
        # what joining the local cluster set (init_ray adopts its GPU stand-in and node count) must not reach
        # the shared Ray's tests: they would ask for fake_gpu, or refuse their local paths
        os.environ.clear()
        os.environ.update(environ)
        if shared:
            start_ray()


@pytest.fixture
def driver(cluster, monkeypatch):
    """This process as a driver that joins the cluster from outside (as `python -m alarm.generate ray.address=...`
    would): what it learns from the cluster is undone after the test."""
    import ray

    names = ("ALARM_GPU_RESOURCE", "ALARM_CLUSTER_NODES", "RAY_ADDRESS")
    for name in names:  # set first so that monkeypatch restores them, even where init_ray sets them again
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    yield cluster.address
    ray.shutdown()


def corpus_cfg(address: str, out: Path, *overrides: str) -> CorpusConfig:
    return load_config(CorpusConfig, "tiny", [f"output={out}", "run_id=c", f"ray.address={address}",
                                              "workers.num_gpus=1", *overrides], section="corpus")


def shard_keys(run: Path) -> list[str]:
    return [k for p in sorted((run / "shards").glob("*.parquet")) for k in pq.read_table(p).column("key").to_pylist()]


def node_resources(node_id: str) -> dict:
    import ray

    return next(n["Resources"] for n in ray.nodes() if n["NodeID"] == node_id)


def test_generation_runs_on_a_worker_node_the_autoscaler_starts(cluster, driver, tmp_path):
    import ray

    from services.corpus.pipeline import run

    with pytest.raises(InvalidInput, match=r"output=.*more than one node \(1 node\(s\) alive, up to 4 as it "
                                           r"autoscales\).*storage.shared=true"):
        run(corpus_cfg(driver, tmp_path / "refused", "sources.0.num_clips=4"))
    assert not (tmp_path / "refused").exists()  # refused before anything was written

    stats = run(corpus_cfg(driver, tmp_path, "sources.0.num_clips=4", "shard_rows=2", "storage.shared=true"))
    assert sorted(shard_keys(tmp_path / "c")) == [f"synthetic/{i:06d}" for i in range(4)] and stats["rows"] == 4
    (engine,) = set(actor_nodes(cluster, ENGINE, alive=False))
    where = node_resources(engine)  # the engine asked for workers.num_gpus=1: a fake_gpu, only worker nodes have
    assert engine != ray.get_runtime_context().get_node_id() and where.get("fake_gpu") == 1, where


@pytest.mark.slow
def test_generation_survives_losing_an_engine_node(cluster, tmp_path):
    """`ray job submit -- python -m alarm.generate` with two engines on two worker nodes started from zero; the
    node of one engine is lost after the first shards. The job completes, every key once, the counts agree, and
    the worker nodes go away when idle."""
    run = tmp_path / "c"
    argv = ["python", "-m", "alarm.generate", f"output={tmp_path}", "run_id=c", "storage.shared=true",
            "sources.0.num_clips=24", "shard_rows=2", "workers.batch_size=2", "workers.num_workers=2",
            "workers.num_gpus=1"]
    timeline = Timeline()
    with Sampler(timeline, cluster.address, {"progress/rows": lambda: rows_committed(run)}):
        job = submit(cluster, argv, timeline)
        kill_when(cluster, timeline, lambda: (rows_committed(run) or 0) >= 4, ENGINE)
        status = wait_job(cluster, job, timeout_s=1200, timeline=timeline)
        assert status == "SUCCEEDED", job_logs(cluster, job)[-3000:]
        keys = shard_keys(run)
        assert sorted(keys) == [f"synthetic/{i:06d}" for i in range(24)]  # each key exactly once
        stats = json.loads((run / "stats.json").read_text())
        index = json.loads((run / "manifest.json").read_text())
        assert stats["rows"] == index["rows"] == sum(s["rows"] for s in index["shards"]) == len(keys) == 24
        assert index["complete"] and stats["throughput"]["resumed_rows"] == 0  # one attempt, no resubmission
        wait_for(lambda: nodes(cluster.address).count(GPU_NODES) == 0, 300, "the idle worker nodes to go")
    assert max(v for _, v in timeline.series[f"nodes/{GPU_NODES}"]) >= 2  # it scaled up to both engines


@pytest.mark.slow
def test_training_on_three_nodes_resumes_after_losing_one(cluster, driver, tmp_path):
    """Two DDP workers on two worker nodes, the encoder actor on a third; the node of a DDP worker is lost after
    the first checkpoint. The run restarts from it, logs every step once, and ends with the loss of an
    uninterrupted run (the tolerance of test_train.py's resume test)."""
    from services.corpus.pipeline import run

    run(corpus_cfg(driver, tmp_path, "sources.0.num_clips=24", "storage.shared=true"))
    import ray

    ray.shutdown()
    p = plan(load_cluster_config(PRESET))
    base = [a for a in p.train_argv if not a.startswith(("corpus=", "output="))]
    common = [f"corpus={tmp_path / 'c'}", f"output={tmp_path / 'train'}", "storage.shared=true", "max_steps=10",
              "checkpoint_every=2", "eval_every=100", "log_every=1", "epochs=20"]

    ckpts = tmp_path / "train" / "killed" / "train"
    job = submit(cluster, [*base, *common, "run_id=killed"])
    kill_when(cluster, Timeline(), lambda: any(ckpts.glob("checkpoint_*")), TRAIN_WORKER)
    assert wait_job(cluster, job, timeout_s=1500) == "SUCCEEDED", job_logs(cluster, job)[-3000:]
    assert len(actor_nodes(cluster, TRAIN_WORKER, alive=False)) >= 4  # the two workers, started again

    job = submit(cluster, [*base, *common, "run_id=straight"])
    train_nodes, encoder_nodes = wait_for(
        lambda: len(t := actor_nodes(cluster, TRAIN_WORKER)) == 2 and (e := actor_nodes(cluster, "EncoderActor"))
        and (t, e), 900, "the DDP workers and the encoder actor")
    assert len(set(train_nodes)) == 2 and not set(encoder_nodes) & set(train_nodes)
    assert wait_job(cluster, job, timeout_s=1500) == "SUCCEEDED", job_logs(cluster, job)[-3000:]

    history = [json.loads(x) for x in (tmp_path / "train" / "killed" / "metrics.jsonl").read_text().splitlines()]
    assert [h["step"] for h in history if h["kind"] == "train"] == list(range(1, 11))  # every step once
    killed = json.loads((tmp_path / "train" / "killed" / "summary.json").read_text())
    straight = json.loads((tmp_path / "train" / "straight" / "summary.json").read_text())
    assert killed["steps"] == straight["steps"] == 10
    assert killed["last_loss"] == pytest.approx(straight["last_loss"], rel=1e-4, abs=1e-5)


@pytest.mark.slow
def test_serving_scales_with_a_load_ramp_and_survives_losing_an_llm_node(cluster):
    """The tiny application, every deployment autoscaled from 1 to 2 replicas, each LLM replica on a GPU of its own;
    the clients ramp 1 -> 3 -> 6 and back; at the peak, with two LLM replicas on two worker nodes, the busier node
    of an LLM replica is killed, then the node of the encoders' replica. Every request ends OK or UNAVAILABLE,
    none past its deadline, UNAVAILABLE only around the kills; readiness and the replicas come back; replicas and
    nodes go back to their minimum, and to no worker node once the application is deleted. Times are bounds,
    never measurements (bench/scale.py)."""
    timeline = Timeline()
    load = ramp(cluster, serve_config(max_replicas=2), timeline, ramp=(1, 3, 6), hold_s=10)
    wait_for(lambda: nodes(cluster.address).count(GPU_NODES) == 0, 300, "the idle worker nodes to go")
    assert timeline.at("gave up") is None, timeline.events
    out = figures(timeline, load)
    counts = out["requests"]
    assert counts["sent"] == counts["ended"] == len(load.outcomes) > 0, counts  # every request accounted for
    codes = {k.split(",")[0] for k in counts if k not in ("sent", "ended")}
    assert codes <= {"OK", "UNAVAILABLE"}, counts  # never INTERNAL, never a deadline passed
    assert all(o.end - o.start < load.timeout_s + 5 for o in load.outcomes)  # none hung past its deadline
    assert out["unavailable_outside_kill"] == 0, [o for o in load.outcomes if o.code == "UNAVAILABLE"]
    assert out["serving_again_s"] is not None and out["recovered_s"] is not None, out  # readiness, replicas back
    assert out["encoder_serving_again_s"] is not None and out["encoder_recovered_s"] is not None, out
    llm = [v for _, v in timeline.series["replicas/llm"]]
    assert max(llm) == 2 and llm[-1] == 1, llm  # scaled up for the peak, down to the minimum after it
    assert out["peak_worker_nodes"] >= 2 and timeline.at("scaled down") is not None, out
