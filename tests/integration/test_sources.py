"""The corpus's read step on Ray Data: files read in Ray tasks give exactly the rows of a sequential read (ids,
duplicates, bad rows, limits), for JSONL/CSV manifests and multi-file Parquet sources."""

from __future__ import annotations

import io
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import ray
import soundfile as sf

from alarm.config import CorpusConfig, load_config
from alarm.corpus.keyset import KeySet
from alarm.corpus.manifest import plan_source, read_source


def _flac(hz: float = 440.0) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, 0.3 * np.sin(2 * np.pi * hz * np.arange(1600) / 16000), 16000, format="FLAC")
    return buf.getvalue()


def cfg_with(tmp_path, sources: list[dict]) -> CorpusConfig:
    return load_config(CorpusConfig, "tiny", [f"output={tmp_path}", f"sources={json.dumps(sources)}"],
                       section="corpus")


def distributed_rows(source_cfg) -> list[dict]:
    from services.corpus.sources import read_files

    rows = read_files(plan_source(source_cfg)).take_all()
    return sorted(rows, key=lambda r: r["key"])


def test_manifest_read_in_ray_tasks_equals_the_sequential_read(ray_cluster, tmp_path):
    lines = [json.dumps({"id": "a", "audio": "a.flac", "label": "dog"}), "{not json",
             json.dumps({"id": "b", "audio": "b.flac", "label": {"nested": 1}}),
             json.dumps({"id": "a", "audio": "c.flac", "label": "again"}), "",
             json.dumps({"audio": "d.flac"}), json.dumps({"id": "a", "audio": "e.flac"})]
    (tmp_path / "m.jsonl").write_text("\n".join(lines) + "\n")
    (tmp_path / "m.csv").write_text("id,audio,speaker\n007,x.flac,007\n007,y.flac,1\nz,z.flac\n")
    cfg = cfg_with(tmp_path, [{"kind": "manifest", "name": "j", "path": str(tmp_path / "m.jsonl")},
                              {"kind": "manifest", "name": "c", "path": str(tmp_path / "m.csv")}])
    for source in cfg.sources:
        expected = sorted(read_source(source), key=lambda r: r["key"])
        assert distributed_rows(source) == expected
    keys = [r["key"] for r in distributed_rows(cfg.sources[0])]
    assert keys == ["j/#row2", "j/#row5", "j/a", "j/a#dup1", "j/a#dup2", "j/b"]


def test_multi_file_parquet_numbers_rows_across_files_and_limits_in_file_order(ray_cluster, tmp_path):
    from services.corpus.sources import read_sources

    folder = tmp_path / "pq"
    folder.mkdir()
    audio = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    for part in range(3):
        pq.write_table(pa.table({
            "audio": pa.array([{"bytes": _flac(300 + 10 * i), "path": f"{part}-{i}.flac"} for i in range(4)], audio),
            "label": [f"p{part}r{i}" for i in range(4)],
        }), folder / f"{part:04d}.parquet")
    source = cfg_with(tmp_path, [{"kind": "parquet", "name": "p", "path": str(folder), "family": "labels"}]).sources[0]
    rows = distributed_rows(source)
    assert [r["item_id"] for r in rows] == [f"{i:06d}" for i in range(12)]
    assert [json.loads(r["metadata"])["label"] for r in rows][4:6] == ["p1r0", "p1r1"]
    assert rows == sorted(read_source(source), key=lambda r: r["key"])
    limited = distributed_rows(source.model_copy(update={"limit": 6}))
    assert [r["item_id"] for r in limited] == [f"{i:06d}" for i in range(6)]
    cfg = cfg_with(tmp_path, [source.model_dump(), {"kind": "synthetic", "num_clips": 3}])
    done = ray.put(KeySet(pa.array(["p/000001", "synthetic/000002", "gone/000003"])))
    keys = sorted(r["key"] for r in read_sources(cfg, done).take_all())
    assert keys == sorted([f"p/{i:06d}" for i in range(12) if i != 1] + ["synthetic/000000", "synthetic/000001"])


def test_repeated_ids_across_files_are_marked_as_a_sequential_read_marks_them(ray_cluster, tmp_path):
    folder = tmp_path / "dups"
    folder.mkdir()
    ids = [["a", "b", "c"], ["d", "a", "e"], ["b", "a", "f"]]  # 'a' three times, 'b' twice, across files
    for part, names in enumerate(ids):
        pq.write_table(pa.table({"id": names, "audio": [f"{n}.flac" for n in names]}), folder / f"{part:04d}.parquet")
    source = cfg_with(tmp_path, [{"kind": "parquet", "name": "d", "path": str(folder), "id_column": "id"}]).sources[0]
    rows = distributed_rows(source)
    assert rows == sorted(read_source(source), key=lambda r: r["key"])
    assert [r["key"] for r in rows] == ["d/a", "d/a#dup1", "d/a#dup2", "d/b", "d/b#dup1", "d/c", "d/d", "d/e", "d/f"]
    second = next(r for r in rows if r["key"] == "d/a#dup2")["row_error"]
    assert "duplicate id 'a' (first at row 1 (0000.parquet))" in second and "row 8 (0002.parquet)" in second
