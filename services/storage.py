"""A corpus run folder, local or s3://: atomic Parquet shards, the run index, stats and the resolved config.

    runs/<run_id>/config.json  manifest.json (the index)  stats.json  shards/part-<attempt>-<n>.parquet
                  stats/part-<attempt>-<n>.json (the shard's row count, sha256 and statistics counts)

A shard is committed atomically (local: temp file + rename; S3: one PUT), so any shard that exists is complete;
its small stats file follows it (a shard without one, from a killed attempt or an older run, gets it computed
once from the shard). Resume reads the `key` column of every shard (in a Ray task) and skips those rows: each
key is written exactly once per run. The corpus's fingerprint hashes its shard names, row counts and checksums.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import posixpath
import re
import time

import pyarrow as pa
import pyarrow.parquet as pq

from alarm.config.base import RAY_RENAMED
from alarm.corpus.keyset import KeySet
from alarm.corpus.schema import COLUMNS
from alarm.corpus.stats import shard_counts
from alarm.errors import InvalidInput
from alarm.files import atomic_write

INDEX = "manifest.json"  # the run index: its on-disk name
# Arrow types of the corpus columns (alarm.corpus.schema.COLUMNS holds their meanings; a test keeps both in step).
STRING, INT, FLOAT, BOOL = pa.string(), pa.int64(), pa.float64(), pa.bool_()
ARROW_TYPES: dict[str, pa.DataType] = {
    "key": STRING, "source": STRING, "item_id": STRING, "audio_uri": STRING, "audio_bytes": pa.binary(),
    "metadata": STRING, "family": STRING, "instruction": BOOL, "prompt_given": STRING, "duration_s": FLOAT,
    "sample_rate": INT, "audio_ok": BOOL, "audio_error": STRING, "audio_description": STRING, "prompt": STRING,
    "prompt_origin": STRING, "answer_generated": STRING, "finish_reason_generate": STRING,
    "n_tokens_generate": INT, "rephrase_input": STRING, "answer_rephrased": STRING, "rephrase_raw": STRING,
    "finish_reason_rephrase": STRING, "n_tokens_rephrase": INT, "forced_rephrase": BOOL, "rephrase_tries": INT,
    "has_answer_tag": BOOL,
    "complete_reasoning": BOOL, "leak_generated": STRING, "leak_rephrased": STRING, "judge_label": STRING,
    "judge_text": STRING, "target": STRING, "n_tokens_target": INT, "flags": STRING, "keep": BOOL,
    "split": STRING, "row_error": STRING, "llm_error": STRING,
}
# Every column of alarm.corpus.schema plus the two error-text columns, in stage order.
SCHEMA = pa.schema([(c, ARROW_TYPES[c]) for c in [*COLUMNS, "row_error", "llm_error"]])
STATS_COLUMNS = [c for c in SCHEMA.names if c not in ("audio_bytes", "rephrase_input", "rephrase_raw", "judge_text")]


def to_table(rows: list[dict]) -> pa.Table:
    """Rows -> Arrow with the corpus types for the columns they hold (stages add columns as they go)."""
    names = list(rows[0]) if rows else []
    fields = [pa.field(n, ARROW_TYPES.get(n, pa.string())) for n in names]
    return pa.Table.from_pylist(rows, schema=pa.schema(fields))


FOLDER_KEYS = ("output", "run_id")  # name the run folder; not part of how its contents are made


class RunStore:
    """A run folder of shards and small JSON files; shared by corpus generation (writes) and training (reads)."""

    def __init__(self, uri: str, storage_options: dict | None = None):
        """storage_options: s3fs options (endpoint, credentials) for a process the environment does not reach (a
        Ray worker); default: from the environment."""
        if uri.startswith("s3://"):
            import s3fs

            from alarm import env

            opts = env.s3_storage_options() if storage_options is None else storage_options
            self.fs, self.root, self.local = s3fs.S3FileSystem(**opts), uri.removeprefix("s3://").rstrip("/"), False
        else:
            import fsspec

            opts = {}
            self.fs, self.root, self.local = fsspec.filesystem("file"), os.path.abspath(uri), True
        self.storage_options = opts  # what a Ray worker needs to open this store: RunStore(uri, storage_options)
        self.uri = uri if not self.local else self.root

    def check_reachable(self) -> None:
        """Fail fast, before any work, when the output location cannot be written."""
        if self.local:
            try:
                os.makedirs(self.root, exist_ok=True)
            except OSError as e:
                raise InvalidInput(f"cannot create output folder {self.root}: {e}") from e
            return
        bucket = self.root.split("/", 1)[0]
        try:
            self.fs.ls(bucket, detail=False)
        except FileNotFoundError:
            raise InvalidInput(f"output bucket s3://{bucket} does not exist; create it or fix `output`") from None
        except Exception as e:  # botocore raises many classes; each means "cannot use this output"
            raise InvalidInput(
                f"cannot reach output s3://{bucket} ({type(e).__name__}: {e}); check the endpoint "
                "(ALARM_S3_ENDPOINT_URL) and credentials"
            ) from e

    def path(self, *parts: str) -> str:
        return posixpath.join(self.root, *parts)

    # -- small files ---------------------------------------------------------------------------------------------

    def read_json(self, name: str) -> dict | None:
        try:
            with self.fs.open(self.path(name), "rb") as f:
                return json.loads(f.read())
        except FileNotFoundError:
            return None

    def write_bytes(self, name: str, data: bytes) -> None:
        target = self.path(name)
        if self.local:
            atomic_write(target, data)  # fsync'd: "a shard that exists is complete" must survive a machine crash
        else:
            self.fs.pipe_file(target, data)  # one PUT: atomic on S3

    def write_json(self, name: str, obj: dict) -> None:
        self.write_bytes(name, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())

    # -- config --------------------------------------------------------------------------------------------------

    def check_config(self, cfg_json: dict, ignore: tuple[str, ...] = ("workers", "ray", *RAY_RENAMED,
                                                                       "shard_rows", "storage"),
                     model: type | None = None) -> None:
        """First run: write config.json. Resume: the config must match (except scaling and placement knobs, and
        the Ray keys of runs written before the `ray` section), or the corpus would mix rows made two ways. Where
        the run lives (`output`, `run_id`) is this folder, however it was named (`runs` or an absolute path to it).
        `model` (the config's pydantic class): the stored config is read through it first, so a setting added to
        the code since, at its default, does not refuse a run its older version wrote."""
        old = self.read_json("config.json")
        if old is None:
            self.write_json("config.json", cfg_json)
            return
        if model is not None:
            try:
                old = {**old, **model.model_validate(old).model_dump(mode="json")}
            except Exception:  # no longer valid (a setting renamed or removed): compared as written
                pass
        skip = {*ignore, *FOLDER_KEYS}
        diff = sorted(k for k in set(old) | set(cfg_json) if k not in skip and old.get(k) != cfg_json.get(k))
        if diff:
            raise InvalidInput(
                f"run {self.uri} exists with a different config ({', '.join(diff)} differ); resume it with the "
                "same settings, or pick a new run_id"
            )

    # -- shards --------------------------------------------------------------------------------------------------

    def shard_names(self) -> list[str]:
        try:
            found = self.fs.ls(self.path("shards"), detail=False)
        except FileNotFoundError:
            return []
        return sorted(posixpath.basename(p) for p in found if p.endswith(".parquet")
                      and not posixpath.basename(p).startswith("."))

    def shard_uris(self) -> list[str]:
        """Full paths (bucket/key for S3) of the committed shards, for readers given `arrow_filesystem()`."""
        return [self.path("shards", n) for n in self.shard_names()]

    def arrow_filesystem(self):
        """An explicit pyarrow filesystem for Ray Data readers (env vars alone do not reach every worker)."""
        from pyarrow.fs import FSSpecHandler, LocalFileSystem, PyFileSystem

        return LocalFileSystem() if self.local else PyFileSystem(FSSpecHandler(self.fs))

    def read_shards(self, columns: list[str] | None = None) -> pa.Table | None:
        tables = []
        for name in self.shard_names():
            with self.fs.open(self.path("shards", name), "rb") as f:
                tables.append(pq.read_table(f, columns=columns))
        return pa.concat_tables(tables, promote_options="default") if tables else None

    def committed_keys(self) -> KeySet:
        """The keys of every committed shard, read shard by shard, as an exact KeySet. Millions at the paper's
        scale: the pipeline builds it in a Ray task (services.corpus.sources.committed), never on its driver."""
        parts = []
        for name in self.shard_names():
            with self.fs.open(self.path("shards", name), "rb") as f:
                parts.append(pq.read_table(f, columns=["key"]).column("key"))
        return KeySet.of(parts)

    def commit(self, table: pa.Table, name: str) -> dict:
        """Write shard `name`, then its stats file; returns its index entry {path, rows, sha256}."""
        table = table.select([c for c in SCHEMA.names if c in table.column_names]).cast(
            pa.schema([SCHEMA.field(c) for c in SCHEMA.names if c in table.column_names])
        )
        buf = io.BytesIO()
        pq.write_table(table, buf, compression="zstd")
        data = buf.getvalue()
        self.write_bytes(posixpath.join("shards", name), data)
        return self._write_shard_stats(name, table, data)

    def _write_shard_stats(self, name: str, table: pa.Table, data: bytes) -> dict:
        stats_table = table.select([c for c in STATS_COLUMNS if c in table.column_names])
        entry = {"path": f"shards/{name}", "rows": table.num_rows, "sha256": hashlib.sha256(data).hexdigest()}
        self.write_json(_stats_name(name), {**entry, "counts": shard_counts(stats_table.to_pylist())})
        return entry

    def shard_stats(self, name: str) -> dict:
        """A shard's stats file ({path, rows, sha256, counts}), computed from the shard and written if missing."""
        found = self.read_json(_stats_name(name))
        if found is not None:
            return found
        with self.fs.open(self.path("shards", name), "rb") as f:
            data = f.read()
        self._write_shard_stats(name, pq.read_table(io.BytesIO(data)), data)
        return self.read_json(_stats_name(name))

    def next_attempt(self) -> int:
        """1 + the highest attempt seen in the run index or in any shard name, so a rerun never reuses a name
        (a killed attempt may have committed shards before its index was written)."""
        seen = [(self.read_json(INDEX) or {}).get("attempts", 0)]
        seen += [int(m.group(1)) for n in self.shard_names() if (m := re.match(r"part-(\d+)-", n))]
        return max(seen) + 1

    def shard_rows(self) -> list[dict]:
        """[{path, rows, sha256}] for the committed shards, from their stats files (callers then keep the list)."""
        out = []
        for name in self.shard_names():
            stats = self.shard_stats(name)
            out.append({k: stats[k] for k in ("path", "rows", "sha256")})
        return out

    def write_index(self, run_id: str, attempt: int, complete: bool, shards: list[dict] | None = None) -> dict:
        """The run index (INDEX): the shards and their row counts, the attempt count, and whether the run is
        complete (training refuses an incomplete corpus)."""
        shards = self.shard_rows() if shards is None else shards
        index = {"run_id": run_id, "format": "alarm-corpus/1", "attempts": attempt, "complete": complete,
                    "rows": sum(s["rows"] for s in shards), "shards": shards, "updated": time.time()}
        self.write_json(INDEX, index)
        return index


def _stats_name(shard: str) -> str:
    return posixpath.join("stats", shard.removesuffix(".parquet") + ".json")


def fingerprint(index: dict) -> str:
    """The corpus's identity: sha256 over its shards' names, row counts and checksums (from the run index)."""
    shards = sorted((s["path"], s["rows"], s.get("sha256")) for s in index.get("shards", []))
    return hashlib.sha256(json.dumps(shards).encode()).hexdigest()

