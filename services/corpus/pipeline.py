"""Corpus generation on Ray Data, reading like the method's figure; `run` streams rows into committed shards.

    read sources -> probe/describe/prompt (CPU) -> vLLM workers: R0, self-rephrase, leak, filters -> shards

Each vLLM worker runs one asynchronous engine and keeps up to `engine.max_num_seqs` rows in flight across the
batches it holds; the driver commits whole batches into shards, so every row is written exactly once.
"""

from __future__ import annotations

import logging
import posixpath
import sys
import time
import uuid

import ray

from alarm.config import CorpusConfig, SyntheticSourceConfig
from alarm.corpus.stats import finish_stats, merge_counts
from alarm.errors import InvalidInput
from services.connect import check_shared_paths, gpu_options, init_ray
from services.corpus.sources import committed, read_sources
from services.corpus.stages import calls_in_flight, cpu_stages, stage_class
from services.engines.llm import CPU_ENV, cpu_only
from services.errors import alarm_error_in
from services.storage import RunStore

log = logging.getLogger(__name__)


def resolve_models(cfg: CorpusConfig) -> None:
    from alarm.checkpoints import resolve_checkpoint

    resolve_checkpoint(cfg.engine.checkpoint, cfg.engine.revision, expect=["config.json"])


def described(cfg: CorpusConfig, skip: ray.ObjectRef | None = None) -> ray.data.Dataset:
    """The source rows, minus the keys of `skip` (`sources.committed`), probed, described and prompted (no LLM)."""
    from alarm import env

    # Storage options built here, on the driver: environment variables do not reach a cluster's workers. A whole
    # block per call: one output table per block (64-row batches made every block a table of many small chunks).
    return read_sources(cfg, skip).map_batches(
        cpu_stages, fn_kwargs={"cfg_json": cfg.model_dump(mode="json"), "storage_options": env.s3_storage_options()},
        batch_format="pyarrow", batch_size=None, num_cpus=0.5)


def build(cfg: CorpusConfig, skip: ray.ObjectRef | None = None) -> ray.data.Dataset:
    """The corpus dataset: `described` rows through the LLM stages (R0, self-rephrase, leak, filters)."""
    cfg_json = cfg.model_dump(mode="json")
    w = cfg.workers
    ds = described(cfg, skip)
    # With the async engine a worker takes several batches at once (their rows share it): the calls in flight.
    calls = calls_in_flight(cfg)
    pool = {"max_concurrent_calls_per_actor": calls, "max_tasks_in_flight_per_actor": calls} if calls > 1 else {}
    return ds.map_batches(
        stage_class(cfg), fn_constructor_kwargs={"cfg_json": cfg_json},
        compute=ray.data.ActorPoolStrategy(size=w.num_workers, **pool),
        batch_size=w.batch_size, batch_format="pyarrow", num_cpus=w.num_cpus, **gpu_options(w.num_gpus),
        runtime_env={"env_vars": dict(CPU_ENV)} if w.num_gpus == 0 and cpu_only() else None,
    )


def check_resources(cfg: CorpusConfig) -> None:
    """Warn when the cluster cannot hold the worker actors and still run data tasks (they would wait forever);
    only a warning, because an autoscaling cluster (KubeRay) may not have its workers yet."""
    w, cpus = cfg.workers, ray.cluster_resources().get("CPU", 0)
    if cpus < w.num_workers * w.num_cpus + 0.5:
        log.warning(
            "the Ray cluster has %g logical CPUs; %d workers x workers.num_cpus=%g leave too few for the data "
            "tasks. Unless the cluster autoscales, lower workers.num_cpus or start Ray with more logical CPUs "
            "(ray start --head --num-cpus=4).", cpus, w.num_workers, w.num_cpus,
        )


def run(cfg: CorpusConfig) -> dict:
    """Generate (or resume) run `cfg.run_id`; returns the stats written to stats.json."""
    from tqdm import tqdm

    check_shared_paths(cfg.ray, cfg.node_paths(), cfg.storage.shared)  # before anything is written
    store = RunStore(posixpath.join(cfg.output, cfg.run_id))
    store.check_reachable()
    store.check_config(cfg.model_dump(mode="json"), model=CorpusConfig)
    attempt = store.next_attempt()
    shards = store.shard_rows()
    resolve_models(cfg)  # a missing checkpoint is a clear error here, not an actor stack trace later
    init_ray(cfg.ray)
    check_resources(cfg)
    done, resumed = committed(store)  # the keys stay in the object store: the driver holds a reference
    ds = build(cfg, done)  # reads the sources (and checks their audio paths); commits nothing yet
    store.write_index(cfg.run_id, attempt, complete=False, shards=shards)  # claim the attempt number first
    tag = uuid.uuid4().hex[:8]  # two drivers on one run id (a resubmitted job) still never share a name
    total = sum(s.num_clips if isinstance(s, SyntheticSourceConfig) else 0 for s in cfg.sources) or None
    bar = tqdm(total=(total - resumed) if total else None, unit="row", desc=f"generate {cfg.run_id}",
               file=sys.stderr, dynamic_ncols=True)
    t0, written = time.perf_counter(), 0
    batches = ds.iter_batches(batch_size=cfg.shard_rows, batch_format="pyarrow")
    try:
        for i, batch in enumerate(batches):
            name = f"part-{attempt:03d}-{tag}-{i:06d}.parquet"
            shards.append(store.commit(batch, name))
            written += batch.num_rows
            bar.update(batch.num_rows)
            store.write_index(cfg.run_id, attempt, complete=False, shards=shards)
    except Exception as e:
        cause = alarm_error_in(e)
        if cause is not None:  # e.g. a bad checkpoint inside an actor: say what it is, not a Ray trace
            raise InvalidInput(cause) from None
        raise
    bar.close()
    elapsed = time.perf_counter() - t0
    # merged from each shard's small stats file, in shard order: the text of the shards is never read again
    stats = finish_stats(merge_counts(store.shard_stats(n)["counts"] for n in store.shard_names()))
    stats["throughput"] = {"rows_this_attempt": written, "seconds": round(elapsed, 2),
                           "rows_per_s": round(written / elapsed, 3) if elapsed > 0 else None,
                           "resumed_rows": resumed, "attempt": attempt}
    store.write_json("stats.json", stats)
    index = store.write_index(cfg.run_id, attempt, complete=True, shards=shards)
    log.info("run %s: %d rows in %d shards at %s", cfg.run_id, index["rows"], len(index["shards"]), store.uri)
    return stats
