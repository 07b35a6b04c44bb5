"""Raw records of one source file, in file order: JSONL, CSV, Parquet, and the Arrow files of `save_to_disk`.

    for rec in file_records(SourceFile("m.jsonl", "jsonl"), first=1, limit=None, raw_columns=set()):
        rec.n, rec.where, rec.values, rec.error     # 1, 'line 1', {...}, None

A record that cannot be parsed (bad JSON, a CSV row of the wrong width) is still a record, with `error` set; the
row builder turns it into a flagged row. `n` numbers the records of a whole source (a file's records start at the
`first` it is given), so a source read file by file in parallel numbers its rows as one sequential read would.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from alarm.corpus.locations import local, open_file
from alarm.errors import InvalidInput

log = logging.getLogger(__name__)

FORMATS = {".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".parquet": "parquet"}
HEAD_ROWS = 1000  # JSONL records whose keys make the column list checked before a read
_INT = re.compile(r"-?(0|[1-9][0-9]*)")
# CSV cells that read as numbers; no leading zeros, so '007' stays text.
_FLOAT = re.compile(r"-?((0|[1-9][0-9]*)(\.[0-9]+)?|\.[0-9]+)([eE][-+]?[0-9]+)?")


@dataclass(frozen=True)
class Record:
    """One raw row: `n` is its 1-based ordinal in the source; `where` names it in messages (line 7, row 3)."""

    n: int
    where: str
    values: dict
    error: str | None = None


@dataclass(frozen=True)
class SourceFile:
    """One file of a source: its URI, format (jsonl | csv | parquet | arrow) and compression."""

    uri: str
    fmt: str
    compression: str | None = None
    label: str | None = None  # appended to `where` when a source has several files: 'row 3 (0001.parquet)'


def manifest_format(path: str) -> tuple[str, str | None]:
    """(format, compression) from the file name: 'data.jsonl.gz' -> ('jsonl', 'gzip')."""
    name = path.rstrip("/").rsplit("/", 1)[-1].lower()
    compression = "gzip" if name.endswith(".gz") else None
    stem = name.removesuffix(".gz")
    fmt = FORMATS.get(os.path.splitext(stem)[1])
    if fmt is None or (fmt == "parquet" and compression):
        raise InvalidInput(f"manifest {path}: unknown format; expected a name ending in .jsonl, .json, .ndjson, "
                           ".csv (each optionally .gz) or .parquet")
    return fmt, compression


def file_records(file: SourceFile, first: int, limit: int | None, raw_columns: set,
                 columns: list[str] | None = None, storage_options: dict | None = None) -> Iterator[Record]:
    """The records of `file`, numbered from `first`, stopping once record `limit` (of the source) is out.

    Args:
        raw_columns: CSV columns kept as text (ids, paths, prompts); other cells that look like numbers become
            numbers.
        columns: Parquet/Arrow columns to read (None: all).
    """
    if file.fmt == "jsonl":
        records = _jsonl(file, first, storage_options)
    elif file.fmt == "csv":
        records = _csv(file, first, raw_columns, storage_options)
    else:
        records = _table(file, first, columns, storage_options)
    for rec in records:
        if limit is not None and rec.n > limit:
            return
        yield rec


def file_columns(file: SourceFile, storage_options: dict | None = None) -> list[str]:
    """The column names a check can rely on: the CSV header, the Parquet/Arrow schema, or the keys of the first
    HEAD_ROWS JSONL records."""
    if file.fmt == "jsonl":
        names: dict[str, None] = {}
        for rec in _jsonl(file, 1, storage_options):
            names.update(dict.fromkeys(rec.values))
            if rec.n >= HEAD_ROWS:
                break
        return list(names)
    if file.fmt == "csv":
        with open_file(file.uri, storage_options, file.compression) as fb:
            try:
                header = next(csv.reader(io.TextIOWrapper(fb, encoding="utf-8-sig", newline="")), [])
            except (UnicodeDecodeError, csv.Error, OSError, EOFError) as e:
                raise InvalidInput(f"cannot read manifest {file.uri} as UTF-8 CSV: {type(e).__name__}: {e}") from e
        return [h for h in header if h.strip()]
    return table_schema(file, storage_options).names


def table_schema(file: SourceFile, storage_options: dict | None = None) -> pa.Schema:
    """The Arrow schema of a Parquet or Arrow file (its metadata holds the `datasets` features, if any)."""
    if file.fmt == "arrow":
        return _arrow_reader(file.uri).schema
    with open_file(file.uri, storage_options) as f:
        try:
            return pq.ParquetFile(f).schema_arrow
        except (pa.ArrowException, OSError, ValueError) as e:
            raise InvalidInput(f"cannot read manifest {file.uri} as Parquet: {type(e).__name__}: {e}") from e


def row_count(file: SourceFile, storage_options: dict | None = None) -> int:
    """Rows of a Parquet file (its footer) or an Arrow file (its batch headers); no data is decoded."""
    if file.fmt == "arrow":
        return sum(b.num_rows for b in _arrow_batches(file.uri))
    with open_file(file.uri, storage_options) as f:
        try:
            return pq.ParquetFile(f).metadata.num_rows
        except (pa.ArrowException, OSError, ValueError) as e:
            raise InvalidInput(f"cannot read manifest {file.uri} as Parquet: {type(e).__name__}: {e}") from e


def row_bytes(file: SourceFile, storage_options: dict | None = None) -> int | None:
    """About how many bytes a row of a Parquet file (its footer: uncompressed size over rows) or an Arrow file (its
    size over rows) holds; None for a JSONL/CSV manifest (its rows are paths and a few fields)."""
    if file.fmt == "arrow":
        return os.path.getsize(local(file.uri)) // max(row_count(file), 1)
    if file.fmt != "parquet":
        return None
    with open_file(file.uri, storage_options) as f:
        try:
            meta = pq.ParquetFile(f).metadata
        except (pa.ArrowException, OSError, ValueError) as e:
            raise InvalidInput(f"cannot read manifest {file.uri} as Parquet: {type(e).__name__}: {e}") from e
    return sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups)) // max(meta.num_rows, 1)


# ---------------------------------------------------------------------------------------------------------------
# readers


def _jsonl(file: SourceFile, first: int, storage_options: dict | None) -> Iterator[Record]:
    n = first - 1
    with open_file(file.uri, storage_options, file.compression) as f:
        try:
            for lineno, raw in enumerate(f, 1):
                if not raw.strip():
                    continue
                n, where = n + 1, f"line {lineno}"
                try:
                    values = json.loads(raw)
                except (json.JSONDecodeError, UnicodeDecodeError) as e:
                    yield Record(n, where, {}, f"not valid JSON ({e})")
                    continue
                if not isinstance(values, dict):
                    yield Record(n, where, {}, f"expected a JSON object, found {type(values).__name__}")
                    continue
                yield Record(n, where, values)
        except (OSError, EOFError) as e:  # e.g. a corrupt gzip stream
            raise InvalidInput(f"cannot read manifest {file.uri}: {type(e).__name__}: {e}") from e


def _csv(file: SourceFile, first: int, raw_columns: set, storage_options: dict | None) -> Iterator[Record]:
    """All cells are text; cells outside `raw_columns` that look like numbers become numbers."""
    n = first - 1
    with open_file(file.uri, storage_options, file.compression) as fb:
        try:
            reader = csv.reader(io.TextIOWrapper(fb, encoding="utf-8-sig", newline=""))
            header = next(reader, [])
            blank = [i for i, h in enumerate(header) if not h.strip()]
            if blank:
                log.warning("manifest %s: ignoring %d column(s) without a header name", file.uri, len(blank))
            for cells in reader:
                if not cells:
                    continue
                values = {h: (c if h in raw_columns else _cell(c))
                          for h, c in zip(header, cells, strict=False) if h.strip()}
                error = None
                if len(cells) != len(header):
                    error = f"has {len(cells)} fields, the header has {len(header)}"
                n += 1
                yield Record(n, f"line {reader.line_num}", values, error)
        except (UnicodeDecodeError, csv.Error, OSError, EOFError) as e:
            raise InvalidInput(f"cannot read manifest {file.uri} as UTF-8 CSV: {type(e).__name__}: {e}") from e


def _cell(text: str) -> Any:
    if not text.strip():
        return None
    if _INT.fullmatch(text):
        return int(text)
    if _FLOAT.fullmatch(text):
        return float(text)
    return text


def _table(file: SourceFile, first: int, columns: list[str] | None, storage_options: dict | None):
    n = first - 1
    suffix = f" ({file.label})" if file.label else ""
    if file.fmt == "arrow":
        batches = (b.select(columns) if columns else b for b in _arrow_batches(file.uri))
        for batch in batches:
            for values in batch.to_pylist():
                n += 1
                yield Record(n, f"row {n}{suffix}", values)
        return
    with open_file(file.uri, storage_options) as f:
        for batch in pq.ParquetFile(f).iter_batches(batch_size=256, columns=columns):
            for values in batch.to_pylist():
                n += 1
                yield Record(n, f"row {n}{suffix}", values)


def _arrow_reader(uri: str):
    """save_to_disk writes Arrow IPC streams; accept the IPC file format too."""
    path = local(uri)
    try:
        return pa.ipc.open_stream(pa.memory_map(path))
    except pa.ArrowInvalid:
        try:
            return pa.ipc.open_file(pa.memory_map(path))
        except pa.ArrowInvalid as e:
            raise InvalidInput(f"{path} is not an Arrow IPC stream or file: {e}") from e


def _arrow_batches(uri: str) -> Iterator[pa.RecordBatch]:
    reader = _arrow_reader(uri)
    if isinstance(reader, pa.ipc.RecordBatchFileReader):
        yield from (reader.get_batch(i) for i in range(reader.num_record_batches))
    else:
        yield from reader
