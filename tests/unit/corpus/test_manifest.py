"""Manifest and save_to_disk readers: formats, path resolution, edge validation, bad rows flagged, s3://."""

import csv
import gzip
import io
import json
import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from alarm import env, jsonl
from alarm.audio.decode import load_audio
from alarm.config import HFDatasetSourceConfig, ManifestSourceConfig, SyntheticSourceConfig
from alarm.corpus.manifest import ROW_KEYS, count_rows, read_hf_dataset, read_manifest
from alarm.errors import InvalidInput


def _flac(seconds: float = 0.1, sr: int = 16000, hz: float = 440.0) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, 0.3 * np.sin(2 * np.pi * hz * np.arange(int(seconds * sr)) / sr), sr, format="FLAC")
    return buf.getvalue()


@pytest.fixture
def corpus(tmp_path):
    """tmp/audio/{a,b}.flac, an absolute-path clip elsewhere, and the manifest rows that point at them."""
    (tmp_path / "audio").mkdir()
    (tmp_path / "audio" / "a.flac").write_bytes(_flac())
    (tmp_path / "audio" / "b.flac").write_bytes(_flac(hz=880))
    (tmp_path / "elsewhere").mkdir()
    absolute = tmp_path / "elsewhere" / "c.flac"
    absolute.write_bytes(_flac())
    records = [
        {"id": "a", "audio": "audio/a.flac", "label": "dog", "score": 2.5, "tags": ["x", "y"]},
        {"id": "001", "audio": str(absolute), "label": "cat", "score": None, "tags": []},
        {"id": "c", "audio": "s3://bucket/clips/c.wav", "label": "bird", "score": 1, "tags": ["z"]},
    ]
    return tmp_path, records, absolute


def _jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def _cfg(path, **kw):
    return ManifestSourceConfig(name="src", path=str(path), **kw)


def _check_good(rows, base, absolute):
    assert [r["key"] for r in rows] == ["src/a", "src/001", "src/c"]
    assert all(tuple(r) == ROW_KEYS and r["row_error"] is None for r in rows)
    assert rows[0]["audio_uri"] == str(base / "audio" / "a.flac")
    assert rows[1]["audio_uri"] == str(absolute)
    assert rows[2]["audio_uri"] == "s3://bucket/clips/c.wav"
    assert all(r["audio_bytes"] is None and r["family"] == "labels" for r in rows)
    assert load_audio(rows[0]["audio_uri"]).sample_rate == 16000
    return [json.loads(r["metadata"]) for r in rows]


# ---------------------------------------------------------------------------------------------------------------
# formats


def test_jsonl_resolves_relative_absolute_and_uri_audio(corpus):
    base, records, absolute = corpus
    path = _jsonl(base / "m.jsonl", records)
    md = _check_good(list(read_manifest(_cfg(path, family="labels"))), base, absolute)
    assert md[0] == {"label": "dog", "score": 2.5, "tags": ["x", "y"]}
    assert list(md[0]) == ["label", "score", "tags"]  # file column order
    assert md[1] == {"label": "cat", "tags": []}  # None dropped


def test_relative_manifest_path_resolves_against_its_folder(corpus, monkeypatch):
    base, records, _ = corpus
    _jsonl(base / "m.jsonl", records)
    monkeypatch.chdir(base / "elsewhere")
    rows = list(read_manifest(_cfg("../m.jsonl")))
    assert rows[0]["audio_uri"] == str(base / "audio" / "a.flac")


def test_csv_keeps_ids_as_text_and_reads_numbers(corpus):
    base, records, absolute = corpus
    path = base / "m.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "label", "audio", "score", "speaker", "note"])
        for r in records:
            score = "" if r["score"] is None else r["score"]
            w.writerow([r["id"], r["label"], r["audio"], score, "007", "1e3"])
    md = _check_good(list(read_manifest(_cfg(path, family="labels"))), base, absolute)
    assert md[0] == {"label": "dog", "score": 2.5, "speaker": "007", "note": 1000.0}
    assert md[1] == {"label": "cat", "speaker": "007", "note": 1000.0}  # empty cell dropped
    assert md[2]["score"] == 1 and isinstance(md[2]["score"], int)


def test_parquet_with_lists_turns_nan_and_count_rows(corpus):
    base, records, absolute = corpus
    table = pa.Table.from_pylist([
        {**r, "score": math.nan if r["score"] is None else float(r["score"]),
         "turns": [{"speaker": "A", "start": 0.0, "end": 1.5, "text": "hi"}]}
        for r in records
    ])
    pq.write_table(table, base / "m.parquet")
    cfg = _cfg(base / "m.parquet", family="labels")
    md = _check_good(list(read_manifest(cfg)), base, absolute)
    turns = [{"speaker": "A", "start": 0.0, "end": 1.5, "text": "hi"}]
    assert md[1] == {"label": "cat", "tags": [], "turns": turns}
    assert count_rows(cfg) == 3
    assert count_rows(cfg.model_copy(update={"limit": 2})) == 2
    assert len(list(read_manifest(cfg.model_copy(update={"limit": 2})))) == 2


def test_count_rows_is_cheap_or_none(corpus):
    base, records, _ = corpus
    assert count_rows(SyntheticSourceConfig(num_clips=7)) == 7
    assert count_rows(_cfg(_jsonl(base / "m.jsonl", records))) is None


def test_gzipped_jsonl_and_limit(corpus):
    base, records, absolute = corpus
    path = base / "m.jsonl.gz"
    with gzip.open(path, "wt") as f:
        f.write("".join(json.dumps(r) + "\n" for r in records * 2))  # repeats past the limit are never read
    rows = list(read_manifest(_cfg(path, family="labels", limit=3)))
    _check_good(rows, base, absolute)


def test_prompt_column_and_instruction_rows(tmp_path):
    path = _jsonl(tmp_path / "m.jsonl", [
        {"id": "1", "audio": "x.wav", "question": "What is it?", "lang": "en"},
        {"id": "2", "audio": "y.wav", "question": ""},
    ])
    rows = list(read_manifest(_cfg(path, prompt_column="question", instruction=True)))
    assert rows[0]["prompt_given"] == "What is it?" and rows[0]["instruction"] is True
    assert json.loads(rows[0]["metadata"]) == {"lang": "en"}  # the prompt is not metadata
    assert rows[1]["row_error"].startswith("undecodable: ") and "missing prompt" in rows[1]["row_error"]
    with pytest.raises(InvalidInput, match="instruction=true needs prompt_column"):
        read_manifest(_cfg(path, instruction=True))


def test_jsonl_fields_with_unicode_line_separators_stay_one_row(tmp_path):
    seps = ["\u2028", "\u2029", "\x85", "\v", "\x1c"]
    records = [{"id": str(i), "audio": "x.wav", "question": f"first{sep}second", "note": f"a{sep}b"}
               for i, sep in enumerate(seps)]
    for name, text in (("raw.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)),
                       ("ours.jsonl", jsonl.dumps(records))):
        (tmp_path / name).write_text(text, encoding="utf-8")
        rows = list(read_manifest(_cfg(tmp_path / name, prompt_column="question")))
        assert [r["prompt_given"] for r in rows] == [r["question"] for r in records]
        assert [json.loads(r["metadata"])["note"] for r in rows] == [r["note"] for r in records]


def test_family_column_picks_each_rows_describer(tmp_path):
    path = _jsonl(tmp_path / "m.jsonl", [
        {"id": "1", "audio": "x.wav", "kind": "labels", "label": "dog"},
        {"id": "2", "audio": "y.wav", "kind": "music", "instrument": "piano"},
        {"id": "3", "audio": "z.wav", "kind": "poetry", "label": "cat"},
    ])
    rows = list(read_manifest(_cfg(path, family="caption", family_column="kind")))
    assert [r["family"] for r in rows[:2]] == ["labels", "music"]
    assert json.loads(rows[0]["metadata"]) == {"label": "dog"}  # the family is not metadata
    assert rows[2]["row_error"].startswith("undecodable: ")
    assert "family 'poetry' in column 'kind' is not a describer; expected one of transcript" in rows[2]["row_error"]
    with pytest.raises(InvalidInput, match="family_column='genre'"):
        read_manifest(_cfg(path, family_column="genre"))


# ---------------------------------------------------------------------------------------------------------------
# whole-source errors


def test_missing_columns_name_the_path_the_columns_and_what_is_there(tmp_path):
    path = _jsonl(tmp_path / "m.jsonl", [{"id": "1", "path": "x.wav", "label": "dog"}])
    with pytest.raises(InvalidInput) as e:
        read_manifest(_cfg(path))
    msg = str(e.value)
    assert str(path) in msg and "audio_column='audio'" in msg and "['id', 'path', 'label']" in msg
    assert "id_column='id'" not in msg
    pq.write_table(pa.table({"name": ["a"]}), tmp_path / "m.parquet")
    with pytest.raises(InvalidInput, match=r"audio_column='audio', id_column='id'; it has columns \['name'"):
        read_manifest(_cfg(tmp_path / "m.parquet"))
    with pytest.raises(InvalidInput, match="prompt_column='q'"):
        read_manifest(_cfg(_jsonl(tmp_path / "ok.jsonl", [{"id": "1", "audio": "a"}]), prompt_column="q"))


def test_missing_unreadable_or_unknown_manifests(tmp_path):
    with pytest.raises(InvalidInput, match=f"manifest {tmp_path}/nope.jsonl not found"):
        read_manifest(_cfg(tmp_path / "nope.jsonl"))
    with pytest.raises(InvalidInput, match="unknown format; expected a name ending in .jsonl"):
        read_manifest(_cfg(tmp_path / "m.txt"))
    (tmp_path / "bad.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(InvalidInput, match="bad.parquet as Parquet"):
        read_manifest(_cfg(tmp_path / "bad.parquet"))
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(InvalidInput, match="has columns none"):
        read_manifest(_cfg(tmp_path / "empty.csv"))


# ---------------------------------------------------------------------------------------------------------------
# bad rows: flagged, never dropped


def test_bad_rows_become_row_error_rows(tmp_path):
    lines = [
        json.dumps({"id": "ok", "audio": "a.wav", "label": "dog"}),
        json.dumps({"id": "", "audio": "a.wav"}),
        json.dumps({"audio": "a.wav"}),
        json.dumps({"id": "no-audio", "audio": "  "}),
        "{not json",
        "[1, 2]",
        "",
        json.dumps({"id": "nested", "audio": "a.wav", "info": {"k": 1}, "label": "x"}),
        json.dumps({"id": "deep-list", "audio": "a.wav", "tags": [["a"]]}),
        json.dumps({"id": "bad-turns", "audio": "a.wav", "turns": [{"speaker": "A", "start": 2, "end": 1}]}),
        json.dumps({"id": 7, "audio": "a.wav", "x": 1.0}),
        json.dumps({"id": True, "audio": "a.wav"}),
        json.dumps({"id": "inf", "audio": "a.wav", "x": float("inf")}),
        json.dumps({"id": "num-audio", "audio": 3}),
    ]
    (tmp_path / "m.jsonl").write_text("\n".join(lines) + "\n")
    rows = list(read_manifest(_cfg(tmp_path / "m.jsonl")))
    by_id = {r["item_id"]: r for r in rows}
    assert len(rows) == len(lines) - 1  # every non-blank line is a row
    assert len(by_id) == len(rows)  # keys stay unique
    assert by_id["ok"]["row_error"] is None and by_id["7"]["row_error"] is None
    expected = {
        "#row2": "missing id (column 'id' is empty)",
        "#row3": "missing id",
        "no-audio": "missing audio (column 'audio' is empty)",
        "#row5": "not valid JSON",
        "#row6": "expected a JSON object, found list",
        "nested": "column 'info': a nested mapping; supported: str, int, float, bool, null",
        "deep-list": "column 'tags': a list of list",
        "bad-turns": "turns[0] needs numeric start <= end",
        "#row11": "id in column 'id' is a bool",
        "inf": "column 'x': non-finite number inf",
        "num-audio": "audio in column 'audio' is a int; expected a path or URI string",
    }
    for item_id, text in expected.items():
        row = by_id[item_id]
        assert text in row["row_error"], (item_id, row["row_error"])
        assert row["audio_uri"] is None and row["audio_bytes"] is None
        assert str(tmp_path / "m.jsonl") in row["row_error"]
    assert by_id["#row5"]["row_error"].startswith(f"undecodable: {tmp_path}/m.jsonl line 5: ")
    assert by_id["nested"]["row_error"].startswith("bad_metadata: ")
    assert json.loads(by_id["nested"]["metadata"]) == {"label": "x"}  # the valid fields are kept for audit


def test_duplicate_ids_are_flagged_under_their_own_keys(tmp_path):
    path = _jsonl(tmp_path / "m.jsonl", [{"id": "a", "audio": "1.wav"}, {"id": "b", "audio": "2.wav"},
                                         {"id": "a", "audio": "3.wav"}, {"id": "a", "audio": "4.wav"}])
    rows = list(read_manifest(_cfg(path)))
    assert [r["key"] for r in rows] == ["src/a", "src/b", "src/a#dup1", "src/a#dup2"]
    assert rows[0]["row_error"] is None and rows[0]["audio_uri"] == str(tmp_path / "1.wav")
    assert "duplicate id 'a' (first at line 1)" in rows[2]["row_error"] and rows[2]["audio_uri"] is None
    assert rows[3]["row_error"] and rows[3]["audio_uri"] is None


def test_csv_rows_with_the_wrong_number_of_fields_are_flagged(tmp_path):
    (tmp_path / "m.csv").write_text("id,audio,label\na,a.wav,dog\nb,b.wav,cat,extra\n\nc,c.wav\n")
    rows = list(read_manifest(_cfg(tmp_path / "m.csv")))
    assert [r["item_id"] for r in rows] == ["a", "b", "c"]
    assert rows[0]["row_error"] is None
    assert "line 3: has 4 fields, the header has 3" in rows[1]["row_error"]
    assert "line 5: has 2 fields" in rows[2]["row_error"]


# ---------------------------------------------------------------------------------------------------------------
# s3


def test_s3_manifest_resolves_audio_against_its_prefix(s3_endpoint, tmp_path):
    from alarm.checkpoints import s3_filesystem

    fs = s3_filesystem()
    fs.mkdir("manifest-bucket")
    with fs.open("manifest-bucket/esc/meta/m.jsonl", "wb") as f:
        f.write(b'{"id": "a", "audio": "../clips/a.flac", "label": "dog"}\n{"id": "b", "audio": "b.flac"}\n')
    fs.pipe("manifest-bucket/esc/clips/a.flac", _flac())
    pq.write_table(pa.table({"id": ["x", "y"], "audio": ["x.flac", "y.flac"]}), tmp_path / "m.parquet")
    fs.put(str(tmp_path / "m.parquet"), "manifest-bucket/esc/meta/m.parquet")

    rows = list(read_manifest(_cfg("s3://manifest-bucket/esc/meta/m.jsonl")))
    assert [r["audio_uri"] for r in rows] == ["s3://manifest-bucket/esc/clips/a.flac", "s3://manifest-bucket/esc/meta/b.flac"]
    wave = load_audio(rows[0]["audio_uri"], storage_options=env.s3_storage_options())
    assert wave.sample_rate == 16000
    parquet = _cfg("s3://manifest-bucket/esc/meta/m.parquet")
    assert count_rows(parquet) == 2 and [r["item_id"] for r in read_manifest(parquet)] == ["x", "y"]
    with pytest.raises(InvalidInput, match="manifest s3://manifest-bucket/esc/meta/missing.csv not found"):
        read_manifest(_cfg("s3://manifest-bucket/esc/meta/missing.csv"))


# ---------------------------------------------------------------------------------------------------------------
# datasets.save_to_disk folders


def _save_by_hand(folder, table: pa.Table, features: dict, split: str | None = None):
    """The on-disk layout of datasets.save_to_disk: one Arrow IPC stream per shard plus the two JSON files."""
    folder.mkdir(parents=True)
    with pa.OSFile(str(folder / "data-00000-of-00001.arrow"), "wb") as sink:
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table, max_chunksize=2)
    (folder / "dataset_info.json").write_text(json.dumps({"features": features}))
    (folder / "state.json").write_text(json.dumps({"_data_files": [{"filename": "data-00000-of-00001.arrow"}],
                                                   "_split": split}))


AUDIO_STRUCT = pa.struct([("bytes", pa.binary()), ("path", pa.string())])


def test_hf_folder_by_hand_bytes_path_and_array(tmp_path):
    (tmp_path / "clip.flac").write_bytes(_flac())
    table = pa.table({
        "audio": pa.array([{"bytes": _flac(), "path": None}, {"bytes": None, "path": "clip.flac"},
                           {"bytes": None, "path": None}], type=AUDIO_STRUCT),
        "label": pa.array([1, 0, -1]),
        "text": ["one", "two", "three"],
    })
    features = {"audio": {"_type": "Audio"}, "label": {"_type": "ClassLabel", "names": ["cat", "dog"]},
                "text": {"_type": "Value", "dtype": "string"}}
    _save_by_hand(tmp_path / "ds", table, features)
    rows = list(read_hf_dataset(HFDatasetSourceConfig(name="hf", path=str(tmp_path / "ds"), family="labels")))
    assert [r["key"] for r in rows] == ["hf/000000", "hf/000001", "hf/000002"]
    assert load_audio(rows[0]["audio_bytes"]).sample_rate == 16000 and rows[0]["audio_uri"] is None
    assert rows[1]["audio_uri"] == str(tmp_path / "ds" / "clip.flac") and rows[1]["audio_bytes"] is None
    assert "missing audio" in rows[2]["row_error"]
    assert [json.loads(r["metadata"]) for r in rows] == [{"label": "dog", "text": "one"},
                                                        {"label": "cat", "text": "two"}, {"text": "three"}]

    arrays = pa.table({"audio": [{"array": [0.0, 0.5, -0.5] * 100, "sampling_rate": 8000},
                                 {"array": [2.0], "sampling_rate": 8000}], "id": ["p", "q"]})
    _save_by_hand(tmp_path / "arr", arrays, {})
    rows = list(read_hf_dataset(HFDatasetSourceConfig(name="hf", path=str(tmp_path / "arr"), id_column="id")))
    wave = load_audio(rows[0]["audio_bytes"])
    assert wave.sample_rate == 8000 and np.allclose(wave.samples[:3], [0, 0.5, -0.5], atol=1e-4)
    assert rows[0]["item_id"] == "p" and "outside [-1, 1]" in rows[1]["row_error"]


def test_hf_folder_written_by_datasets(tmp_path):
    datasets = pytest.importorskip("datasets")
    (tmp_path / "clip.flac").write_bytes(_flac())
    ds = datasets.Dataset.from_dict({
        "id": ["a", "b"],
        "audio": [{"bytes": _flac(), "path": "a.flac"}, {"bytes": None, "path": str(tmp_path / "clip.flac")}],
        "label": [0, 1],
    }).cast_column("audio", datasets.Audio(decode=False))
    ds = ds.cast_column("label", datasets.ClassLabel(names=["siren", "horn"]))
    datasets.DatasetDict({"train": ds, "test": ds.select([0])}).save_to_disk(str(tmp_path / "dd"))

    cfg = HFDatasetSourceConfig(name="hf", path=str(tmp_path / "dd"), split="train", id_column="id", limit=5)
    rows = list(read_hf_dataset(cfg))
    assert [r["key"] for r in rows] == ["hf/a", "hf/b"] and all(r["row_error"] is None for r in rows)
    # save_to_disk embeds local files: both rows carry bytes (the path-only layout is covered by hand above)
    assert all(load_audio(r["audio_bytes"]).sample_rate == 16000 and r["audio_uri"] is None for r in rows)
    assert [json.loads(r["metadata"]) for r in rows] == [{"label": "siren"}, {"label": "horn"}]
    assert len(list(read_hf_dataset(cfg.model_copy(update={"split": "test"})))) == 1
    with pytest.raises(InvalidInput, match=r"splits \['train', 'test'\]; set the source's split"):
        read_hf_dataset(cfg.model_copy(update={"split": None}))
    with pytest.raises(InvalidInput, match="lack.*audio_column='sound'.*'id', 'audio', 'label'"):
        read_hf_dataset(cfg.model_copy(update={"audio_column": "sound"}))

    folder = tmp_path / "paths"
    datasets.Dataset.from_dict({"audio": ["clips/x.flac"], "mos": [3.5]}).save_to_disk(str(folder))
    (row,) = read_hf_dataset(HFDatasetSourceConfig(name="hf", path=str(folder), family="quality"))
    assert row["audio_uri"] == str(folder / "clips" / "x.flac") and row["metadata"] == '{"mos": 3.5}'


def test_hf_folder_errors(tmp_path):
    with pytest.raises(InvalidInput, match=f"{tmp_path}/nope does not exist; expected a folder written by"):
        read_hf_dataset(HFDatasetSourceConfig(name="hf", path=str(tmp_path / "nope")))
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "x.txt").write_text("x")
    with pytest.raises(InvalidInput, match=r"not a datasets.save_to_disk folder.*\['x.txt'\]"):
        read_hf_dataset(HFDatasetSourceConfig(name="hf", path=str(tmp_path / "plain")))
