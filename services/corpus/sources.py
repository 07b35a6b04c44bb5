"""The corpus's read step on Ray Data: every source file is read in a Ray task (in parallel across files and
across the cluster), never on the driver, with the row functions of `alarm.corpus.manifest`.

    done, resumed = committed(store)                 # the run's committed keys, left in the object store
    ds = read_sources(cfg, skip=done)                # rows with alarm.corpus.manifest.ROW_KEYS

What the driver holds does not grow with the rows: each source's check (its file list and columns:
`plan_source`), references per file, and the ids that occur more than once (a hash-partitioned count in Ray tasks;
usually none), so a repeated id is flagged exactly as a sequential read flags it ('<id>#dup<n>', "first at line 3").
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.compute as pc
import ray

from alarm.config import CorpusConfig, SyntheticSourceConfig
from alarm.corpus.keyset import KeySet
from alarm.corpus.manifest import SourcePlan, duplicate_marks, file_ids, file_rows, first_rows, plan_source
from alarm.corpus.records import row_bytes, row_count
from services.storage import RunStore, to_table

# Rows per block of a file source: about BLOCK_BYTES (from the first file's footer), MIN..MAX_BLOCK_ROWS. Bounded
# blocks keep every stage parallel (one block per file gave a whole file to one CPU task and one LLM worker) and
# the driver flat: it fetches the blocks it consumes and deserializes every chunk of every column of one, so with
# a block per file its memory grew with the rows per file.
BLOCK_BYTES = 64 << 20
MIN_BLOCK_ROWS, MAX_BLOCK_ROWS = 16, 4096
READ_CPUS = 0.25
ID_BUCKETS = 16  # hash partitions of the duplicate-id check
SYNTHETIC_BLOCK_ROWS, MAX_SYNTHETIC_BLOCKS = 4, 4096  # a synthetic source's blocks (1M clips: 4096 of 245)


def read_sources(cfg: CorpusConfig, skip: ray.ObjectRef | KeySet | None = None) -> ray.data.Dataset:
    """Source rows (key, audio, metadata …) from every configured source, minus the keys in `skip` (a KeySet, or
    a reference to one in the object store: `committed`)."""
    from alarm.corpus.synthetic import synthetic_row

    parts = []
    for s in cfg.sources:
        if isinstance(s, SyntheticSourceConfig):
            # Rendered in parallel from an index range: the driver never holds the audio. Bounded blocks, as a
            # file source's: Ray Data's default split of a small range gave one block to one LLM worker, and the
            # whole corpus was committed at once at the end.
            ds = ray.data.range(s.num_clips, override_num_blocks=synthetic_blocks(s.num_clips)).map(
                lambda r, s=s: synthetic_row(s, int(r["id"])), num_cpus=READ_CPUS)
        else:
            ds = read_files(plan_source(s))
        parts.append(ds)
    ds = parts[0].union(*parts[1:]) if len(parts) > 1 else parts[0]
    if skip is not None:
        ds = ds.map_batches(_unfinished, fn_kwargs={"done": skip}, batch_format="pyarrow", num_cpus=READ_CPUS)
    return ds


def synthetic_blocks(clips: int) -> int:
    """Blocks of a synthetic source: SYNTHETIC_BLOCK_ROWS clips each, or more once that would pass
    MAX_SYNTHETIC_BLOCKS. Small: a synthetic source makes demos and drills, whose jobs should commit as they go."""
    return max(1, min(MAX_SYNTHETIC_BLOCKS, -(-clips // SYNTHETIC_BLOCK_ROWS)))


def committed(store: RunStore) -> tuple[ray.ObjectRef | None, int]:
    """The run's committed keys (`RunStore.committed_keys`) built in a Ray task and left in the object store, and
    how many: the driver holds a reference, never the keys (a resumed run at the paper's scale has millions)."""
    if not store.shard_names():
        return None, 0
    keys, count = _committed_keys.options(num_returns=2).remote(store.uri, store.storage_options)
    return keys, ray.get(count)


@ray.remote
def _committed_keys(uri: str, storage_options: dict) -> tuple[KeySet, int]:
    done = RunStore(uri, storage_options).committed_keys()
    return done, len(done)


def _unfinished(batch: pa.Table, done: ray.ObjectRef | KeySet) -> pa.Table:
    done = ray.get(done) if isinstance(done, ray.ObjectRef) else done  # mapped from the object store, not copied
    return batch.filter(pa.array(~done.contains(batch["key"])))


def read_files(plan: SourcePlan) -> ray.data.Dataset:
    """The rows of a checked source: one Ray task per file, streaming blocks of `block_rows(plan)` rows."""
    firsts = first_rows(plan, _row_counts(plan) if plan.positional else None)
    files = ray.data.from_items([{"index": i, "first": f} for i, f in enumerate(firsts)],
                                override_num_blocks=len(firsts))
    dups = _duplicates(plan, firsts) if plan.spec.id_column is not None else {}
    rows = block_rows(plan)
    # Ray Data merges what a read task yields into one block per file (up to 128 MiB): a streaming repartition cuts
    # those into blocks of `rows` as they come.
    return files.map_batches(_rows, fn_kwargs={"plan": plan, "dups": dups, "rows": rows}, batch_size=1,
                             num_cpus=READ_CPUS).repartition(target_num_rows_per_block=rows)


def block_rows(plan: SourcePlan) -> int:
    """Rows per block: about BLOCK_BYTES of the source's rows, within MIN_BLOCK_ROWS..MAX_BLOCK_ROWS (a manifest's
    rows are short: MAX_BLOCK_ROWS)."""
    size = row_bytes(plan.files[0], plan.storage_options)
    return MAX_BLOCK_ROWS if size is None else max(MIN_BLOCK_ROWS, min(MAX_BLOCK_ROWS, BLOCK_BYTES // max(size, 1)))


def _row_counts(plan: SourcePlan) -> list[int]:
    """Rows per file, from the footers, read in Ray tasks (a hub dataset has hundreds of files)."""
    items = ray.data.from_items([{"index": i} for i in range(len(plan.files))],
                                override_num_blocks=min(len(plan.files), 64))
    counted = items.map(lambda r: {"index": r["index"],
                                   "rows": row_count(plan.files[r["index"]], plan.storage_options)},
                        num_cpus=READ_CPUS).take_all()
    return [r["rows"] for r in sorted(counted, key=lambda r: r["index"])]


def _duplicates(plan: SourcePlan, firsts: list[int]) -> dict[int, tuple[str, int]]:
    """record number -> (first where, copy number) for the repeated ids of the source.

    A hash partition in plain Ray tasks: each file's ids go to ID_BUCKETS tables by hash, one task per bucket keeps
    the ids seen more than once. The driver holds files x ID_BUCKETS references and the repeated ids (usually
    none): no per-row or per-block state, and none of a Ray Data groupby's shuffle (200 partitions per block,
    aggregator actors) for what is a count.
    """
    plan_ref = ray.put(plan)
    parts = [_id_buckets.options(num_returns=ID_BUCKETS, num_cpus=READ_CPUS).remote(plan_ref, i, first)
             for i, first in enumerate(firsts)]
    repeated = [_repeated.options(num_cpus=READ_CPUS).remote(*(refs[b] for refs in parts)) for b in range(ID_BUCKETS)]
    copies = pa.concat_tables(ray.get(repeated))
    return duplicate_marks(zip(*(copies[c].to_pylist() for c in ("item_id", "n", "where")), strict=True))


@ray.remote
def _id_buckets(plan: SourcePlan, index: int, first: int) -> list[pa.Table]:
    """The (item_id, n, where) of file `index`'s records, split into ID_BUCKETS tables by a hash of the id."""
    buckets: list[list[tuple]] = [[] for _ in range(ID_BUCKETS)]
    for occurrence in file_ids(plan, index, first):
        buckets[zlib.crc32(occurrence[0].encode()) % ID_BUCKETS].append(occurrence)
    return [_id_table(b) for b in buckets]


@ray.remote
def _repeated(*tables: pa.Table) -> pa.Table:
    """The rows of one bucket (from every file) whose id occurs more than once."""
    ids = pa.concat_tables(tables)
    counts = ids.group_by("item_id").aggregate([("item_id", "count")])
    wanted = counts.filter(pc.greater(counts["item_id_count"], 1))["item_id"]
    return ids.filter(pc.is_in(ids["item_id"], value_set=wanted))


def _id_table(chunk: list[tuple]) -> pa.Table:
    ids, ns, wheres = zip(*chunk, strict=True) if chunk else ((), (), ())
    return pa.table({"item_id": pa.array(ids, pa.string()), "n": pa.array(ns, pa.int64()),
                     "where": pa.array(wheres, pa.string())})


def _rows(batch: dict, plan: SourcePlan, dups: dict, rows: int) -> Iterator[pa.Table]:
    (index,), (first,) = batch["index"], batch["first"]
    chunk: list[dict] = []
    for row in file_rows(plan, int(index), int(first), dups):
        chunk.append(row)
        if len(chunk) >= rows:
            yield to_table(chunk)
            chunk = []
    if chunk:
        yield to_table(chunk)
