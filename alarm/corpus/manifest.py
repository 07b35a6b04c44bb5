"""Corpus sources read from files: JSONL / CSV / Parquet manifests (local or s3://) and `save_to_disk` folders.

    rows = read_manifest(ManifestSourceConfig(name="esc50", path="s3://corpora/esc50/train.csv", family="labels"))

Validation happens here, at the edge. A source that cannot be used at all (missing or unreadable file, no id
or audio column) raises `InvalidInput` naming the path and the columns. A bad row never stops the read: it comes
out with no audio and `row_error` = '<tag>: <path> <line/row>: <what is wrong>' (tag bad_metadata or undecodable,
from schema.REJECT_REASONS), under a key of its own (a repeated id becomes '<id>#dup<n>', a missing one
'#row<n>'), so nothing is dropped and the pipeline flags it. Every row has the keys `ROW_KEYS`.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import posixpath
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import soundfile as sf

from alarm import env
from alarm.config import Family, HFDatasetSourceConfig, ManifestSourceConfig, SyntheticSourceConfig
from alarm.errors import InvalidInput

log = logging.getLogger(__name__)

ROW_KEYS = ("key", "source", "item_id", "audio_uri", "audio_bytes", "metadata", "family", "instruction",
            "prompt_given", "row_error")
FORMATS = {".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".parquet": "parquet"}
SUPPORTED_VALUES = (
    "str, int, float, bool, null, or a list of those (and `turns` as a list of {speaker, start, end, text})"
)
_INT = re.compile(r"-?(0|[1-9][0-9]*)")
# CSV cells that read as numbers; no leading zeros, so '007' stays text.
_FLOAT = re.compile(r"-?((0|[1-9][0-9]*)(\.[0-9]+)?|\.[0-9]+)([eE][-+]?[0-9]+)?")


@dataclass(frozen=True)
class _Record:
    """One raw row: `n` is its 1-based ordinal among data rows; `where` names it in messages (line 7, row 3)."""

    n: int
    where: str
    values: dict
    error: str | None = None


@dataclass(frozen=True)
class _Spec:
    """What turns raw records into source rows."""

    name: str
    path: str
    family: str
    id_column: str | None
    audio_column: str
    prompt_column: str | None
    instruction: bool
    base: str  # folder or URI prefix that relative audio paths resolve against
    class_labels: dict  # column -> label names (save_to_disk ClassLabel features)
    family_column: str | None = None  # per-row describer, overriding `family`


def read_manifest(cfg: ManifestSourceConfig, storage_options: dict | None = None) -> Iterator[dict]:
    """Source rows from a JSONL (.jsonl, .json, .ndjson, optionally .gz), CSV (.csv[.gz]) or Parquet manifest.

    The file and its columns are checked before this returns; rows are produced lazily, in file order.

    Args:
        cfg: the source. Every column other than id/audio/prompt becomes metadata, in file column order; None,
            NaN and empty values are left out. Relative audio paths resolve against the manifest's folder (or
            its s3:// prefix).
        storage_options: fsspec options for remote manifests; default `alarm.env.s3_storage_options()`.

    Raises:
        InvalidInput: the manifest is missing, unreadable, of an unknown format, or lacks a configured column.
    """
    if cfg.instruction and cfg.prompt_column is None:
        raise InvalidInput(f"source {cfg.name!r}: instruction=true needs prompt_column (the column holding the "
                           "given prompt)")
    fmt, compression = manifest_format(cfg.path)
    opts = _storage_options(cfg.path, storage_options)
    if fmt == "parquet":
        columns, _ = _parquet_schema(cfg.path, opts)
        records: Iterable[_Record] = _parquet_records(cfg.path, opts, cfg.limit)
    elif fmt == "csv":
        columns, records = _read_csv(cfg.path, opts, compression, cfg.limit, cfg)
    else:
        columns, records = _read_jsonl(cfg.path, opts, compression, cfg.limit)
    _check_columns(cfg.path, columns, {"id_column": cfg.id_column, "audio_column": cfg.audio_column,
                                       "prompt_column": cfg.prompt_column, "family_column": cfg.family_column})
    spec = _Spec(cfg.name, cfg.path, cfg.family, cfg.id_column, cfg.audio_column, cfg.prompt_column,
                 cfg.instruction, _parent(cfg.path), {}, cfg.family_column)
    return _rows(records, spec)


def read_hf_dataset(cfg: HFDatasetSourceConfig) -> Iterator[dict]:
    """Source rows from a local folder written by `datasets.save_to_disk` (a Dataset, or a DatasetDict + split).

    Reads the Arrow stream files directly (no `datasets` import). The audio column may hold {bytes, path}
    (bytes win; a relative path resolves against the folder), {array, sampling_rate} (encoded to FLAC here), a
    path string or raw bytes. ClassLabel columns are rendered as their label names.

    Raises:
        InvalidInput: not a save_to_disk folder, unknown or ambiguous split, missing audio or id column.
    """
    folder = Path(cfg.path).expanduser()
    if not folder.is_dir():
        what = "is a file, not a folder" if folder.exists() else "does not exist"
        raise InvalidInput(f"hf_dataset source {cfg.name!r}: {cfg.path} {what}; expected a folder written by "
                           "datasets.save_to_disk")
    split_dir = _hf_split_folder(folder, cfg.split)
    files = _hf_data_files(split_dir)
    columns = _arrow_schema(files[0]).names
    _check_columns(str(split_dir), columns, {"id_column": cfg.id_column, "audio_column": cfg.audio_column})
    spec = _Spec(cfg.name, str(split_dir), cfg.family, cfg.id_column, cfg.audio_column, None, False,
                 str(folder.resolve()), _hf_class_labels(split_dir))
    return _rows(_arrow_records(files, cfg.limit), spec)


def count_rows(cfg: Any, storage_options: dict | None = None) -> int | None:
    """Rows a source will yield, where that is cheap to know (synthetic; Parquet footer); else None."""
    if isinstance(cfg, SyntheticSourceConfig):
        return cfg.num_clips
    if isinstance(cfg, ManifestSourceConfig) and manifest_format(cfg.path)[0] == "parquet":
        _, n = _parquet_schema(cfg.path, _storage_options(cfg.path, storage_options))
        return min(n, cfg.limit) if cfg.limit else n
    return None


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


# ---------------------------------------------------------------------------------------------------------------
# records -> rows


def _rows(records: Iterable[_Record], spec: _Spec) -> Iterator[dict]:
    seen: dict[str, list] = {}  # id -> [where first seen, duplicates so far]
    for rec in records:
        yield _row(rec, spec, seen)


def _row(rec: _Record, spec: _Spec, seen: dict[str, list]) -> dict:
    errors = [rec.error] if rec.error else []
    if spec.id_column is None:
        item_id = f"{rec.n - 1:06d}"
    else:
        item_id, err = _item_id(rec.values.get(spec.id_column), spec.id_column)
        if err:
            errors.append(err)
            item_id = f"#row{rec.n}"
    if item_id in seen:
        first = seen[item_id]
        first[1] += 1
        errors.append(f"duplicate id {item_id!r} (first at {first[0]}); ids must be unique within a source")
        item_id = f"{item_id}#dup{first[1]}"
    else:
        seen[item_id] = [rec.where, 0]
    audio_uri, audio_bytes, err = _audio(rec.values.get(spec.audio_column), spec.audio_column, spec.base)
    errors += [err] if err else []
    prompt, err = _prompt(rec.values, spec)
    errors += [err] if err else []
    family, err = _family(rec.values, spec)
    errors += [err] if err else []
    skip = {spec.id_column, spec.audio_column, spec.prompt_column, spec.family_column}
    metadata, meta_errors = _metadata(rec.values, skip, spec.class_labels)
    # Tags from schema.REJECT_REASONS: a row whose only fault is its metadata is bad_metadata; any other
    # source-row fault (id, audio, duplicate, unparsable line) is undecodable.
    tag = "undecodable" if errors else "bad_metadata"
    errors += meta_errors
    return {
        "key": f"{spec.name}/{item_id}",
        "source": spec.name,
        "item_id": item_id,
        "audio_uri": None if errors else audio_uri,
        "audio_bytes": None if errors else audio_bytes,
        "metadata": json.dumps(metadata, ensure_ascii=False),
        "family": family,
        "instruction": spec.instruction,
        "prompt_given": prompt,
        "row_error": f"{tag}: {spec.path} {rec.where}: {'; '.join(errors)}" if errors else None,
    }


def _item_id(value: Any, column: str) -> tuple[str | None, str | None]:
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)  # 12.0 from a float column -> "12"
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value), None
    if isinstance(value, str) and value.strip():
        return value.strip(), None
    if _missing(value):
        return None, f"missing id (column {column!r} is empty)"
    return None, f"id in column {column!r} is a {type(value).__name__}; expected a string or an integer"


def _audio(value: Any, column: str, base: str) -> tuple[str | None, bytes | None, str | None]:
    """(uri, bytes, error) from a path/URI string, raw bytes, {bytes, path} or {array, sampling_rate}."""
    if isinstance(value, dict):
        if value.get("bytes"):
            return None, bytes(value["bytes"]), None
        if value.get("path"):
            return _audio(value["path"], column, base)
        if value.get("array") is not None:
            return _encode_array(value.get("array"), value.get("sampling_rate"), column)
        return None, None, f"missing audio (column {column!r} holds neither bytes, a path nor an array)"
    if isinstance(value, bytes | bytearray) and value:
        return None, bytes(value), None
    if isinstance(value, str) and value.strip():
        return _resolve(base, value.strip()), None, None
    if _missing(value) or isinstance(value, bytes | bytearray):
        return None, None, f"missing audio (column {column!r} is empty)"
    found = type(value).__name__
    return None, None, f"audio in column {column!r} is a {found}; expected a path or URI string"


def _encode_array(array: Any, rate: Any, column: str) -> tuple[None, bytes | None, str | None]:
    x = np.asarray(array, dtype=np.float64)
    if isinstance(rate, bool) or not isinstance(rate, int) or rate <= 0:
        return None, None, f"audio array in column {column!r} has sampling_rate {rate!r}; expected an int > 0"
    if x.size == 0 or x.ndim not in (1, 2):
        return None, None, f"audio array in column {column!r} has shape {x.shape}; expected (N,) or (C, N)"
    if not np.isfinite(x).all() or np.abs(x).max() > 1.0:
        return None, None, f"audio array in column {column!r} has NaN/inf or samples outside [-1, 1]"
    buf = io.BytesIO()
    sf.write(buf, x.T if x.ndim == 2 else x, rate, format="FLAC", subtype="PCM_24")  # (C, N) -> (N, C)
    return None, buf.getvalue(), None


def _prompt(values: dict, spec: _Spec) -> tuple[str | None, str | None]:
    if spec.prompt_column is None:
        return None, None
    value = values.get(spec.prompt_column)
    if isinstance(value, str) and value.strip():
        return value, None
    if not _missing(value):
        return None, f"prompt in column {spec.prompt_column!r} is a {type(value).__name__}; expected a string"
    if spec.instruction:
        return None, f"missing prompt (column {spec.prompt_column!r} is empty); instruction rows need one"
    return None, None


def _family(values: dict, spec: _Spec) -> tuple[str, str | None]:
    if spec.family_column is None:
        return spec.family, None
    value = values.get(spec.family_column)
    families = get_args(Family)
    if value not in families:
        return spec.family, (f"family {value!r} in column {spec.family_column!r} is not a describer; expected one "
                             f"of {', '.join(families)}")
    return value, None


def _metadata(values: dict, skip: set, class_labels: dict) -> tuple[dict, list[str]]:
    """Supported values in column order (None/NaN/empty left out), and one error per unsupported value."""
    metadata, errors = {}, []
    for key, value in values.items():
        if key in skip:
            continue
        if key in class_labels:
            value = _class_label(value, class_labels[key])
        if _missing(value):
            continue
        err = _unsupported(key, value)
        if err:
            errors.append(f"column {key!r}: {err}; supported: {SUPPORTED_VALUES}")
        else:
            metadata[key] = list(value) if isinstance(value, tuple) else value
    return metadata, errors


def _unsupported(key: str, value: Any) -> str | None:
    """Why `value` cannot go into metadata, or None if it can."""
    if _scalar(value):
        return None
    if isinstance(value, float):
        return f"non-finite number {value}"
    if isinstance(value, list | tuple):
        if key == "turns" and value and all(isinstance(v, dict) for v in value):
            return _bad_turns(value)
        bad = [v for v in value if not (_scalar(v) or v is None)]
        if not bad:
            return None
        return f"a list holding {bad[0]!r}" if isinstance(bad[0], float) else f"a list of {type(bad[0]).__name__}"
    if isinstance(value, dict):
        return "a nested mapping"
    return f"unsupported type {type(value).__name__}"


def _bad_turns(turns: list[dict]) -> str | None:
    for i, turn in enumerate(turns):
        for k, v in turn.items():
            if not (_scalar(v) or v is None or (isinstance(v, list) and all(_scalar(x) for x in v))):
                return f"turns[{i}].{k} is a {type(v).__name__}"
        start, end = turn.get("start"), turn.get("end")
        if not (_number(start) and _number(end) and start <= end):
            return f"turns[{i}] needs numeric start <= end (seconds), found start={start!r}, end={end!r}"
    return None


def _scalar(v: Any) -> bool:
    return isinstance(v, str | int | bool) or (isinstance(v, float) and math.isfinite(v))


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or (isinstance(v, str) and not v.strip())


def _class_label(value: Any, names: list[str]) -> Any:
    """ClassLabel int -> name (-1, the datasets 'no label', -> None); lists map element-wise."""
    if isinstance(value, list):
        return [_class_label(v, names) for v in value]
    if isinstance(value, int) and not isinstance(value, bool):
        return names[value] if 0 <= value < len(names) else None
    return value


def _check_columns(path: str, columns: list[str], wanted: dict[str, str | None]) -> None:
    missing = {f"{name}={col!r}" for name, col in wanted.items() if col is not None and col not in columns}
    if missing:
        raise InvalidInput(
            f"source file {path} lacks column(s) {', '.join(sorted(missing))}; it has columns "
            f"{columns or 'none (empty file?)'}. Rename the columns or set the source's id_column/audio_column/"
            "prompt_column/family_column to match"
        )


# ---------------------------------------------------------------------------------------------------------------
# locations


def _storage_options(path: str, storage_options: dict | None) -> dict:
    if storage_options is not None:
        return storage_options
    return env.s3_storage_options() if path.startswith("s3://") else {}


def _local(path: str) -> str:
    return os.path.expanduser(path.removeprefix("file://"))


def _parent(path: str) -> str:
    """The folder (local, absolute) or URI prefix that holds `path`."""
    if "://" in path and not path.startswith("file://"):
        return path.rsplit("/", 1)[0]
    return os.path.dirname(os.path.abspath(_local(path)))


def _resolve(base: str, audio: str) -> str:
    """URIs and absolute paths as given; relative paths joined to `base` (a folder or a URI prefix)."""
    if "://" in audio or os.path.isabs(audio):
        return audio
    if "://" in base:
        scheme, rest = base.split("://", 1)
        return f"{scheme}://{posixpath.normpath(posixpath.join(rest, audio))}"
    return os.path.normpath(os.path.join(base, audio))


def _open(path: str, opts: dict, compression: str | None = None):
    target = path if "://" in path and not path.startswith("file://") else _local(path)
    try:
        return fsspec.open(target, "rb", compression=compression, **opts).open()
    except FileNotFoundError as e:
        raise InvalidInput(f"manifest {path} not found ({e}); check the path, or the bucket and "
                           "ALARM_S3_ENDPOINT_URL / AWS credentials for s3://") from e
    except (OSError, ValueError, ImportError) as e:
        raise InvalidInput(f"cannot open manifest {path}: {type(e).__name__}: {e}") from e


# ---------------------------------------------------------------------------------------------------------------
# readers: (columns, records)


def _read_jsonl(path: str, opts: dict, compression: str | None, limit: int | None):
    columns: dict[str, None] = {}  # union of keys, first-seen order
    records = []
    with _open(path, opts, compression) as f:
        try:
            for lineno, raw in enumerate(f, 1):
                if limit and len(records) >= limit:
                    break
                if not raw.strip():
                    continue
                n, where = len(records) + 1, f"line {lineno}"
                try:
                    values = json.loads(raw)
                except (json.JSONDecodeError, UnicodeDecodeError) as e:
                    records.append(_Record(n, where, {}, f"not valid JSON ({e})"))
                    continue
                if not isinstance(values, dict):
                    found = type(values).__name__
                    records.append(_Record(n, where, {}, f"expected a JSON object, found {found}"))
                    continue
                columns.update(dict.fromkeys(values))
                records.append(_Record(n, where, values))
        except (OSError, EOFError) as e:  # e.g. a corrupt gzip stream
            raise InvalidInput(f"cannot read manifest {path}: {type(e).__name__}: {e}") from e
    return list(columns), records


def _read_csv(path: str, opts: dict, compression: str | None, limit: int | None, cfg: ManifestSourceConfig):
    """All cells are text; metadata cells that look like numbers become numbers ('007' stays a string)."""
    raw_columns = {cfg.id_column, cfg.audio_column, cfg.prompt_column, cfg.family_column}
    records = []
    with _open(path, opts, compression) as fb:
        try:
            reader = csv.reader(io.TextIOWrapper(fb, encoding="utf-8-sig", newline=""))
            header = next(reader, [])
            blank = [i for i, h in enumerate(header) if not h.strip()]
            if blank:
                log.warning("manifest %s: ignoring %d column(s) without a header name", path, len(blank))
            for cells in reader:
                if limit and len(records) >= limit:
                    break
                if not cells:
                    continue
                values = {h: (c if h in raw_columns else _cell(c))
                          for h, c in zip(header, cells, strict=False) if h.strip()}
                error = None
                if len(cells) != len(header):
                    error = f"has {len(cells)} fields, the header has {len(header)}"
                records.append(_Record(len(records) + 1, f"line {reader.line_num}", values, error))
        except (UnicodeDecodeError, csv.Error, OSError, EOFError) as e:
            raise InvalidInput(f"cannot read manifest {path} as UTF-8 CSV: {type(e).__name__}: {e}") from e
    return [h for h in header if h.strip()], records


def _cell(text: str) -> Any:
    if not text.strip():
        return None
    if _INT.fullmatch(text):
        return int(text)
    if _FLOAT.fullmatch(text):
        return float(text)
    return text


def _parquet_schema(path: str, opts: dict) -> tuple[list[str], int]:
    with _open(path, opts) as f:
        try:
            pf = pq.ParquetFile(f)
            return pf.schema_arrow.names, pf.metadata.num_rows
        except (pa.ArrowException, OSError, ValueError) as e:
            raise InvalidInput(f"cannot read manifest {path} as Parquet: {type(e).__name__}: {e}") from e


def _parquet_records(path: str, opts: dict, limit: int | None) -> Iterator[_Record]:
    n = 0
    with _open(path, opts) as f:
        for batch in pq.ParquetFile(f).iter_batches(batch_size=256):
            for values in batch.to_pylist():
                if limit and n >= limit:
                    return
                n += 1
                yield _Record(n, f"row {n}", values)


# ---------------------------------------------------------------------------------------------------------------
# save_to_disk folders


def _hf_split_folder(folder: Path, split: str | None) -> Path:
    if (folder / "dataset_dict.json").exists():
        splits = json.loads((folder / "dataset_dict.json").read_text()).get("splits", [])
        if split is None and len(splits) == 1:
            return folder / splits[0]
        if split not in splits:
            raise InvalidInput(f"{folder} holds a DatasetDict with splits {splits}; set the source's split to "
                               f"one of them (found split={split!r})")
        return folder / split
    if (folder / "state.json").exists():
        saved = json.loads((folder / "state.json").read_text()).get("_split")
        if split is not None and saved not in (None, split):
            raise InvalidInput(f"{folder} holds a single Dataset of split {saved!r}, not split={split!r}; "
                               "drop the split setting or point at the right folder")
        return folder
    present = sorted(p.name for p in folder.iterdir())[:20]
    raise InvalidInput(f"{folder} is not a datasets.save_to_disk folder: it has neither dataset_dict.json nor "
                       f"state.json (it holds {present or 'nothing'})")


def _hf_data_files(split_dir: Path) -> list[Path]:
    state = json.loads((split_dir / "state.json").read_text()) if (split_dir / "state.json").exists() else {}
    names = [d["filename"] for d in state.get("_data_files", [])]
    files = [split_dir / n for n in names] if names else sorted(split_dir.glob("data-*.arrow"))
    missing = [f.name for f in files if not f.exists()]
    if not files or missing:
        raise InvalidInput(f"{split_dir} lacks its Arrow data files ({missing or 'no data-*.arrow'}); "
                           "re-save the dataset with save_to_disk")
    return files


def _hf_class_labels(split_dir: Path) -> dict:
    info = split_dir / "dataset_info.json"
    features = json.loads(info.read_text()).get("features", {}) if info.exists() else {}
    labels = {}
    for col, feat in (features or {}).items():
        inner = feat.get("feature", {}) if feat.get("_type") in ("List", "Sequence", "LargeList") else feat
        if isinstance(inner, dict) and inner.get("_type") == "ClassLabel" and inner.get("names"):
            labels[col] = inner["names"]
    return labels


def _arrow_reader(file: Path):
    """save_to_disk writes Arrow IPC streams; accept the IPC file format too."""
    try:
        return pa.ipc.open_stream(pa.memory_map(str(file)))
    except pa.ArrowInvalid:
        try:
            return pa.ipc.open_file(pa.memory_map(str(file)))
        except pa.ArrowInvalid as e:
            raise InvalidInput(f"{file} is not an Arrow IPC stream or file: {e}") from e


def _arrow_schema(file: Path) -> pa.Schema:
    return _arrow_reader(file).schema


def _arrow_batches(file: Path) -> Iterator[pa.RecordBatch]:
    reader = _arrow_reader(file)
    if isinstance(reader, pa.ipc.RecordBatchFileReader):
        yield from (reader.get_batch(i) for i in range(reader.num_record_batches))
    else:
        yield from reader


def _arrow_records(files: list[Path], limit: int | None) -> Iterator[_Record]:
    n = 0
    for file in files:
        for batch in _arrow_batches(file):
            for values in batch.to_pylist():
                if limit and n >= limit:
                    return
                n += 1
                yield _Record(n, f"row {n} ({file.name})", values)
