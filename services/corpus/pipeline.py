"""Corpus generation on Ray Data, reading like the method's figure; `run` streams rows into committed shards.

    read sources -> probe/describe/prompt (CPU) -> vLLM workers: R0, self-rephrase, leak, filters -> shards
"""

from __future__ import annotations

import logging
import posixpath
import sys
import time
import uuid

import pyarrow as pa
import pyarrow.compute as pc
import ray

from alarm.config import (
    CorpusConfig,
    HFDatasetSourceConfig,
    ManifestSourceConfig,
    SyntheticSourceConfig,
)
from alarm.corpus.filters import corpus_stats
from alarm.errors import InvalidInput
from services.connect import init_ray
from services.corpus.stages import CorpusLLMStage, cpu_stages
from services.engines.llm import CPU_ENV, cpu_only
from services.errors import alarm_error_in
from services.storage import STATS_COLUMNS, RunStore, to_table

log = logging.getLogger(__name__)


def read_sources(cfg: CorpusConfig, skip: set[str]) -> ray.data.Dataset:
    """Source rows (key, audio, metadata …) from every configured source, minus the keys in `skip`."""
    from alarm import env
    from alarm.corpus.manifest import read_hf_dataset, read_manifest
    from alarm.corpus.synthetic import synthetic_row

    parts = []
    for s in cfg.sources:
        if isinstance(s, SyntheticSourceConfig):
            # Rendered in parallel from an index range: the driver never holds the audio.
            ds = ray.data.range(s.num_clips).map(lambda r, s=s: synthetic_row(s, int(r["id"])), num_cpus=0.25)
        elif isinstance(s, ManifestSourceConfig):
            ds = _blocks(to_table(list(read_manifest(s, env.s3_storage_options()))))
        elif isinstance(s, HFDatasetSourceConfig):
            ds = _blocks(to_table(list(read_hf_dataset(s))))
        else:  # pragma: no cover - the config union is closed
            raise TypeError(type(s).__name__)
        parts.append(ds)
    ds = parts[0].union(*parts[1:]) if len(parts) > 1 else parts[0]
    if skip:
        done = pa.array(sorted(skip), type=pa.string())
        ds = ds.map_batches(lambda t, done=done: t.filter(pc.invert(pc.is_in(t["key"], value_set=done))),
                            batch_format="pyarrow", num_cpus=0.25)
    return ds


def _blocks(table: pa.Table, rows_per_block: int = 64) -> ray.data.Dataset:
    """Rows read on the driver, split into blocks so the CPU stages run in parallel."""
    parts = [table.slice(i, rows_per_block) for i in range(0, max(table.num_rows, 1), rows_per_block)]
    return ray.data.from_arrow(parts)


def resolve_models(cfg: CorpusConfig) -> None:
    from alarm.checkpoints import resolve_checkpoint

    resolve_checkpoint(cfg.engine.checkpoint, cfg.engine.revision, expect=["config.json"])


def build(cfg: CorpusConfig, skip: set[str] = frozenset()) -> ray.data.Dataset:
    from alarm import env

    cfg_json = cfg.model_dump(mode="json")
    w = cfg.workers
    ds = read_sources(cfg, set(skip))
    # Storage options built here, on the driver: environment variables do not reach a cluster's workers.
    ds = ds.map_batches(cpu_stages, fn_kwargs={"cfg_json": cfg_json, "storage_options": env.s3_storage_options()},
                        batch_format="pyarrow", batch_size=64, num_cpus=0.5)
    return ds.map_batches(
        CorpusLLMStage, fn_constructor_kwargs={"cfg_json": cfg_json},
        compute=ray.data.ActorPoolStrategy(size=w.num_workers), batch_size=w.batch_size, batch_format="pyarrow",
        num_cpus=w.num_cpus, num_gpus=w.num_gpus or None,
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

    store = RunStore(posixpath.join(cfg.output, cfg.run_id))
    store.check_reachable()
    store.check_config(cfg.model_dump(mode="json"))
    done = store.committed_keys()
    attempt = store.next_attempt()
    shards = store.shard_rows()
    store.write_index(cfg.run_id, attempt, complete=False, shards=shards)  # claim the attempt number first
    resolve_models(cfg)  # a missing checkpoint is a clear error here, not an actor stack trace later
    init_ray(cfg.ray)
    check_resources(cfg)
    tag = uuid.uuid4().hex[:8]  # two drivers on one run id (a resubmitted job) still never share a name
    total = sum(s.num_clips if isinstance(s, SyntheticSourceConfig) else 0 for s in cfg.sources) or None
    bar = tqdm(total=(total - len(done)) if total else None, unit="row", desc=f"generate {cfg.run_id}",
               file=sys.stderr, dynamic_ncols=True)
    t0, written = time.perf_counter(), 0
    batches = build(cfg, done).iter_batches(batch_size=cfg.shard_rows, batch_format="pyarrow")
    try:
        for i, batch in enumerate(batches):
            name = f"part-{attempt:03d}-{tag}-{i:06d}.parquet"
            store.commit(batch, name)
            shards.append({"path": f"shards/{name}", "rows": batch.num_rows})
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
    table = store.read_shards(STATS_COLUMNS)
    stats = corpus_stats(table.to_pylist() if table is not None else [])
    stats["throughput"] = {"rows_this_attempt": written, "seconds": round(elapsed, 2),
                           "rows_per_s": round(written / elapsed, 3) if elapsed > 0 else None,
                           "resumed_rows": len(done), "attempt": attempt}
    store.write_json("stats.json", stats)
    index = store.write_index(cfg.run_id, attempt, complete=True, shards=shards)
    log.info("run %s: %d rows in %d shards at %s", cfg.run_id, index["rows"], len(index["shards"]), store.uri)
    return stats
