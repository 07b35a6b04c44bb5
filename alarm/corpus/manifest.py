"""Corpus sources read from files: JSONL / CSV / Parquet manifests, Parquet datasets (local, s3://, hf://) and
`save_to_disk` folders, turned into source rows.

    plan = plan_source(ParquetSourceConfig(name="esc50", path="hf://datasets/OWNER/NAME@SHA/data/*.parquet"))
    rows = read_source(cfg)        # in-process; services/corpus/sources.py reads each file in a Ray Data task

Validation happens here, at the edge. A source that cannot be used at all (missing or unreadable file, no id
or audio column) raises `InvalidInput` from `plan_source`, naming the path and the columns, before any row is
read. A bad row never stops the read: it comes out with no audio and `row_error` = '<tag>: <path> <line/row>:
<what is wrong>' (tag bad_metadata or undecodable, from schema.REJECT_REASONS), under a key of its own (a repeated
id becomes '<id>#dup<n>', a missing one '#row<n>'), so nothing is dropped and the pipeline flags it. Every row has
the keys `ROW_KEYS`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alarm.config import (
    HFDatasetSourceConfig,
    ManifestSourceConfig,
    ParquetSourceConfig,
    SyntheticSourceConfig,
)
from alarm.corpus.locations import list_files, parent, storage_options_for
from alarm.corpus.records import (
    Record,
    SourceFile,
    file_columns,
    file_records,
    manifest_format,
    row_count,
    table_schema,
)
from alarm.corpus.values import (
    audio_of,
    checked_id,
    family_of,
    metadata_of,
    prompt_of,
)
from alarm.errors import InvalidInput

ROW_KEYS = ("key", "source", "item_id", "audio_uri", "audio_bytes", "metadata", "family", "instruction",
            "prompt_given", "row_error")
FileSource = ManifestSourceConfig | HFDatasetSourceConfig | ParquetSourceConfig


@dataclass(frozen=True)
class Spec:
    """What turns raw records into source rows."""

    name: str
    path: str
    family: str
    id_column: str | None
    audio_column: str
    prompt_column: str | None = None
    instruction: bool = False
    base: str | None = None  # folder or URI prefix relative audio paths resolve against; None: the file's own
    class_labels: dict = field(default_factory=dict)  # column -> label names (`datasets` ClassLabel features)
    family_column: str | None = None  # per-row describer, overriding `family`
    columns: tuple[tuple[str, str], ...] | None = None  # (metadata field, column); None: every other column
    limit: int | None = None


@dataclass(frozen=True)
class SourcePlan:
    """A checked source: its files and how to read them; small, so it travels to every read task."""

    spec: Spec
    files: tuple[SourceFile, ...]
    storage_options: dict
    read_columns: list[str] | None = None  # Parquet/Arrow projection
    raw_columns: frozenset = frozenset()  # CSV columns kept as text

    @property
    def positional(self) -> bool:
        """Rows are numbered across files (several Parquet/Arrow files): each file's first row needs counting."""
        return len(self.files) > 1


def plan_source(cfg: FileSource, storage_options: dict | None = None) -> SourcePlan:
    """Check a source before reading it: its files exist and hold the configured columns.

    Args:
        cfg: a manifest, parquet or hf_dataset source.
        storage_options: fsspec options for remote files; default from the environment
            (`locations.storage_options_for`).

    Raises:
        InvalidInput: the source is missing, unreadable, of an unknown format, or lacks a configured column.
    """
    if isinstance(cfg, HFDatasetSourceConfig):
        return _plan_hf_folder(cfg)
    if cfg.instruction and cfg.prompt_column is None:
        raise InvalidInput(f"source {cfg.name!r}: instruction=true needs prompt_column (the column holding the "
                           "given prompt)")
    opts = storage_options_for(cfg.path) if storage_options is None else storage_options
    if isinstance(cfg, ManifestSourceConfig):
        fmt, compression = manifest_format(cfg.path)
        files: tuple[SourceFile, ...] = (SourceFile(cfg.path, fmt, compression),)
        labels: dict = {}
    else:
        found = list_files(cfg.path, (".parquet",), opts)
        files = tuple(SourceFile(f, "parquet", None, f.rsplit("/", 1)[-1] if len(found) > 1 else None)
                      for f in found)
        labels = _class_labels(_features(table_schema(files[0], opts).metadata))
    wanted = {"id_column": cfg.id_column, "audio_column": cfg.audio_column, "prompt_column": cfg.prompt_column,
              "family_column": cfg.family_column}
    mapping = getattr(cfg, "columns", None)
    wanted.update({f"columns.{k}": c for k, c in (mapping or {}).items()})
    columns = file_columns(files[0], opts)
    _check_columns(cfg.path if len(files) == 1 else files[0].uri, columns, wanted)
    used = [c for c in wanted.values() if c is not None]
    spec = Spec(cfg.name, cfg.path, cfg.family, cfg.id_column, cfg.audio_column, cfg.prompt_column,
                cfg.instruction, None, labels, cfg.family_column,
                tuple(mapping.items()) if mapping else None, cfg.limit)
    return SourcePlan(spec, files, opts, list(dict.fromkeys(used)) if mapping else None,
                      frozenset({cfg.id_column, cfg.audio_column, cfg.prompt_column, cfg.family_column}))


def first_rows(plan: SourcePlan, counts: list[int] | None = None) -> list[int]:
    """The source-wide number of each file's first record (1 for a single file); `counts`: rows per file
    (`row_count`), computed here when not given. Files wholly past the source's limit are left out."""
    if not plan.positional:
        return [1]
    counts = counts if counts is not None else [row_count(f, plan.storage_options) for f in plan.files]
    firsts, n = [], 1
    for c in counts:
        if plan.spec.limit is not None and n > plan.spec.limit:
            break
        firsts.append(n)
        n += c
    return firsts


def file_ids(plan: SourcePlan, index: int, first: int) -> Iterator[tuple[str, int, str]]:
    """(item id, record number, where) of each record of file `index`: what duplicate detection needs."""
    spec, file = plan.spec, plan.files[index]
    columns = [spec.id_column] if file.fmt in ("parquet", "arrow") and spec.id_column else None  # projection
    for rec in file_records(file, first, spec.limit, plan.raw_columns, columns, plan.storage_options):
        yield item_id_of(rec, spec)[0], rec.n, rec.where


def file_rows(plan: SourcePlan, index: int, first: int, dups: dict[int, tuple[str, int]]) -> Iterator[dict]:
    """The source rows of file `index`; `dups`: record number -> (where the id was first seen, copy number)."""
    file, spec = plan.files[index], plan.spec
    base = spec.base or parent(file.uri)
    for rec in file_records(file, first, spec.limit, plan.raw_columns, plan.read_columns, plan.storage_options):
        yield source_row(rec, spec, base, dups.get(rec.n))


class Duplicates:
    """Sequential duplicate detection: the first record with an id keeps it; later ones are copies 1, 2, ..."""

    def __init__(self) -> None:
        self.seen: dict[str, list] = {}  # id -> [where first seen, copies so far]

    def see(self, item_id: str, where: str) -> tuple[str, int] | None:
        first = self.seen.get(item_id)
        if first is None:
            self.seen[item_id] = [where, 0]
            return None
        first[1] += 1
        return first[0], first[1]


def duplicate_marks(occurrences: Iterable[tuple[str, int, str]]) -> dict[int, tuple[str, int]]:
    """record number -> (first where, copy number) for every later copy of an id, from (id, n, where) in any
    order: the same marks a sequential read makes."""
    dups, marks = Duplicates(), {}
    for item_id, n, where in sorted(occurrences, key=lambda o: o[1]):
        mark = dups.see(item_id, where)
        if mark is not None:
            marks[n] = mark
    return marks


def read_source(cfg: FileSource, storage_options: dict | None = None) -> Iterator[dict]:
    """Every source row, in file order, read in this process (small sources, tests; the corpus pipeline reads
    files in parallel Ray Data tasks with the same functions). The source is checked before this returns."""
    plan = plan_source(cfg, storage_options)
    return _read_all(plan, first_rows(plan))


def _read_all(plan: SourcePlan, firsts: list[int]) -> Iterator[dict]:
    dups = Duplicates()
    for index, first in enumerate(firsts):
        base = plan.spec.base or parent(plan.files[index].uri)
        for rec in file_records(plan.files[index], first, plan.spec.limit, plan.raw_columns, plan.read_columns,
                                plan.storage_options):
            item_id = item_id_of(rec, plan.spec)[0]
            mark = dups.see(item_id, rec.where) if plan.spec.id_column is not None else None
            yield source_row(rec, plan.spec, base, mark)


def read_manifest(cfg: ManifestSourceConfig, storage_options: dict | None = None) -> Iterator[dict]:
    """Source rows of a JSONL (.jsonl, .json, .ndjson, optionally .gz), CSV (.csv[.gz]) or Parquet manifest.

    Every column other than id/audio/prompt/family becomes metadata, in file column order; None, NaN and empty
    values are left out. Relative audio paths resolve against the manifest's folder (or its s3:// prefix).
    """
    return read_source(cfg, storage_options)


def read_hf_dataset(cfg: HFDatasetSourceConfig) -> Iterator[dict]:
    """Source rows of a local folder written by `datasets.save_to_disk` (a Dataset, or a DatasetDict + split).

    Reads the Arrow files directly (no `datasets` import). The audio column may hold {bytes, path} (bytes win; a
    relative path resolves against the folder), {array, sampling_rate} (encoded to FLAC here), a path string or
    raw bytes. ClassLabel columns are rendered as their label names.
    """
    return read_source(cfg)


def count_rows(cfg: Any, storage_options: dict | None = None) -> int | None:
    """Rows a source will yield, where that is cheap to know (synthetic; Parquet footers); else None."""
    if isinstance(cfg, SyntheticSourceConfig):
        return cfg.num_clips
    if isinstance(cfg, ParquetSourceConfig) or (isinstance(cfg, ManifestSourceConfig)
                                                and manifest_format(cfg.path)[0] == "parquet"):
        plan = plan_source(cfg, storage_options)
        n = sum(row_count(f, plan.storage_options) for f in plan.files)
        return min(n, cfg.limit) if cfg.limit else n
    return None


# ---------------------------------------------------------------------------------------------------------------
# records -> rows


def item_id_of(rec: Record, spec: Spec) -> tuple[str, str | None]:
    """The record's item id and, when its id column is unusable, why ('#row<n>' stands in)."""
    if spec.id_column is None:
        return f"{rec.n - 1:06d}", None
    item_id, err = checked_id(rec.values.get(spec.id_column), spec.id_column)
    return (f"#row{rec.n}", err) if err else (item_id, None)


def source_row(rec: Record, spec: Spec, base: str, dup: tuple[str, int] | None = None) -> dict:
    """One source row (`ROW_KEYS`); `dup`: (where the id was first seen, copy number) for a repeated id."""
    errors = [rec.error] if rec.error else []
    item_id, err = item_id_of(rec, spec)
    errors += [err] if err else []
    if dup is not None:
        errors.append(f"duplicate id {item_id!r} (first at {dup[0]}); ids must be unique within a source")
        item_id = f"{item_id}#dup{dup[1]}"
    audio_uri, audio_bytes, err = audio_of(rec.values.get(spec.audio_column), spec.audio_column, base)
    errors += [err] if err else []
    prompt, err = prompt_of(rec.values, spec)
    errors += [err] if err else []
    family, err = family_of(rec.values, spec)
    errors += [err] if err else []
    skip = {spec.id_column, spec.audio_column, spec.prompt_column, spec.family_column}
    metadata, meta_errors = metadata_of(rec.values, skip, spec.class_labels, spec.columns)
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


def _check_columns(path: str, columns: list[str], wanted: dict[str, str | None]) -> None:
    missing = {f"{name}={col!r}" for name, col in wanted.items() if col is not None and col not in columns}
    if missing:
        raise InvalidInput(
            f"source file {path} lacks column(s) {', '.join(sorted(missing))}; it has columns "
            f"{columns or 'none (empty file?)'}. Rename the columns or set the source's id_column/audio_column/"
            "prompt_column/family_column/columns to match"
        )


# ---------------------------------------------------------------------------------------------------------------
# save_to_disk folders and `datasets` features


def _plan_hf_folder(cfg: HFDatasetSourceConfig) -> SourcePlan:
    folder = Path(cfg.path).expanduser()
    if not folder.is_dir():
        what = "is a file, not a folder" if folder.exists() else "does not exist"
        raise InvalidInput(f"hf_dataset source {cfg.name!r}: {cfg.path} {what}; expected a folder written by "
                           "datasets.save_to_disk")
    split_dir = _hf_split_folder(folder, cfg.split)
    names = _hf_data_files(split_dir)
    files = tuple(SourceFile(str(f), "arrow", None, f.name) for f in names)
    _check_columns(str(split_dir), file_columns(files[0]), {"id_column": cfg.id_column,
                                                           "audio_column": cfg.audio_column})
    info = split_dir / "dataset_info.json"
    features = json.loads(info.read_text()).get("features", {}) if info.exists() else {}
    spec = Spec(cfg.name, str(split_dir), cfg.family, cfg.id_column, cfg.audio_column,
                base=str(folder.resolve()), class_labels=_class_labels(features or {}), limit=cfg.limit)
    return SourcePlan(spec, files, {})


def _features(metadata: dict | None) -> dict:
    """The `datasets` features stored in a Parquet file's schema metadata (b'huggingface'), or {}."""
    raw = (metadata or {}).get(b"huggingface")
    try:
        return (json.loads(raw).get("info") or {}).get("features") or {} if raw else {}
    except (ValueError, AttributeError):
        return {}


def _class_labels(features: dict) -> dict:
    labels = {}
    for col, feat in features.items():
        if not isinstance(feat, dict):
            continue
        inner = feat.get("feature", {}) if feat.get("_type") in ("List", "Sequence", "LargeList") else feat
        if isinstance(inner, dict) and inner.get("_type") == "ClassLabel" and inner.get("names"):
            labels[col] = inner["names"]
    return labels


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
