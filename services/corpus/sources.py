"""The corpus's read step on Ray Data: every source file is read in a Ray task (in parallel across files and
across the cluster), never on the driver, with the row functions of `alarm.corpus.manifest`.

    ds = read_sources(cfg, skip=committed_keys)     # rows with alarm.corpus.manifest.ROW_KEYS

The driver only checks each source (its file list and columns: `plan_source`) and, for sources with an id
column, collects the ids that occur more than once (a distributed count; usually none), so a repeated id is
flagged exactly as a sequential read flags it ('<id>#dup<n>', "first at line 3").
"""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa
import pyarrow.compute as pc
import ray

from alarm.config import CorpusConfig, SyntheticSourceConfig
from alarm.corpus.manifest import SourcePlan, duplicate_marks, file_ids, file_rows, first_rows, plan_source
from alarm.corpus.records import row_count
from services.storage import to_table

ROWS_PER_BLOCK = 256  # rows per block a read task yields: small blocks keep the CPU stages busy in parallel
READ_CPUS = 0.25


def read_sources(cfg: CorpusConfig, skip: set[str]) -> ray.data.Dataset:
    """Source rows (key, audio, metadata …) from every configured source, minus the keys in `skip`."""
    from alarm.corpus.synthetic import synthetic_row

    parts = []
    for s in cfg.sources:
        if isinstance(s, SyntheticSourceConfig):
            # Rendered in parallel from an index range: the driver never holds the audio.
            ds = ray.data.range(s.num_clips).map(lambda r, s=s: synthetic_row(s, int(r["id"])), num_cpus=READ_CPUS)
        else:
            ds = read_files(plan_source(s))
        parts.append(ds)
    ds = parts[0].union(*parts[1:]) if len(parts) > 1 else parts[0]
    if skip:
        done = pa.array(sorted(skip), type=pa.string())
        ds = ds.map_batches(lambda t, done=done: t.filter(pc.invert(pc.is_in(t["key"], value_set=done))),
                            batch_format="pyarrow", num_cpus=READ_CPUS)
    return ds


def read_files(plan: SourcePlan) -> ray.data.Dataset:
    """The rows of a checked source: one Ray task per file, streaming blocks of ROWS_PER_BLOCK rows."""
    firsts = first_rows(plan, _row_counts(plan) if plan.positional else None)
    files = ray.data.from_items([{"index": i, "first": f} for i, f in enumerate(firsts)],
                                override_num_blocks=len(firsts))
    dups = _duplicates(plan, files) if plan.spec.id_column is not None else {}
    return files.map_batches(_rows, fn_kwargs={"plan": plan, "dups": dups}, batch_size=1, num_cpus=READ_CPUS)


def _row_counts(plan: SourcePlan) -> list[int]:
    """Rows per file, from the footers, read in Ray tasks (a hub dataset has hundreds of files)."""
    items = ray.data.from_items([{"index": i} for i in range(len(plan.files))],
                                override_num_blocks=min(len(plan.files), 64))
    counted = items.map(lambda r: {"index": r["index"],
                                   "rows": row_count(plan.files[r["index"]], plan.storage_options)},
                        num_cpus=READ_CPUS).take_all()
    return [r["rows"] for r in sorted(counted, key=lambda r: r["index"])]


def _duplicates(plan: SourcePlan, files: ray.data.Dataset) -> dict[int, tuple[str, int]]:
    """record number -> (first where, copy number) for the repeated ids of the source (small: the driver only
    sees the ids that occur more than once, never the whole id list)."""
    ids = files.map_batches(_ids, fn_kwargs={"plan": plan}, batch_size=1, num_cpus=READ_CPUS)
    counts = ids.groupby("item_id").count()
    repeated = [r["item_id"] for r in counts.map_batches(lambda t: t.filter(pc.greater(t["count()"], 1)),
                                                          batch_format="pyarrow").take_all()]
    if not repeated:
        return {}
    wanted = pa.array(repeated, type=pa.string())
    copies = ids.map_batches(lambda t: t.filter(pc.is_in(t["item_id"], value_set=wanted)),
                             batch_format="pyarrow", num_cpus=READ_CPUS).take_all()
    return duplicate_marks((r["item_id"], r["n"], r["where"]) for r in copies)


def _ids(batch: dict, plan: SourcePlan) -> Iterator[pa.Table]:
    (index,), (first,) = batch["index"], batch["first"]
    chunk: list[tuple] = []
    for occurrence in file_ids(plan, int(index), int(first)):
        chunk.append(occurrence)
        if len(chunk) >= 4 * ROWS_PER_BLOCK:
            yield _id_table(chunk)
            chunk = []
    if chunk:
        yield _id_table(chunk)


def _id_table(chunk: list[tuple]) -> pa.Table:
    ids, ns, wheres = zip(*chunk, strict=True)
    return pa.table({"item_id": pa.array(ids, pa.string()), "n": pa.array(ns, pa.int64()),
                     "where": pa.array(wheres, pa.string())})


def _rows(batch: dict, plan: SourcePlan, dups: dict) -> Iterator[pa.Table]:
    (index,), (first,) = batch["index"], batch["first"]
    chunk: list[dict] = []
    for row in file_rows(plan, int(index), int(first), dups):
        chunk.append(row)
        if len(chunk) >= ROWS_PER_BLOCK:
            yield to_table(chunk)
            chunk = []
    if chunk:
        yield to_table(chunk)
