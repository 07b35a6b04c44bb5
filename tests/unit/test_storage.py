"""The run store: atomic shard commits, attempt numbers that never repeat, config checks on resume."""

import hashlib
import json

import pyarrow as pa
import pytest

from alarm.errors import InvalidInput
from services.storage import RunStore, fingerprint


def table(keys):
    return pa.table({"key": keys, "keep": [True] * len(keys)})


def test_a_killed_attempt_without_manifest_never_gets_its_number_reused(tmp_path):
    store = RunStore(str(tmp_path / "run"))
    assert store.next_attempt() == 1
    store.commit(table(["s/1", "s/2"]), "part-001-aaaa-000000.parquet")  # killed before its manifest was written
    assert store.next_attempt() == 2
    store.write_index("run", 5, complete=False)
    assert store.next_attempt() == 6
    store.commit(table(["s/3"]), "part-002-bbbb-000000.parquet")
    assert len(store.committed_keys()) == 3
    assert store.committed_keys().contains(pa.array(["s/1", "s/2", "s/3", "s/4"])).tolist() == [True] * 3 + [False]


def test_commits_leave_no_temp_files_and_manifest_counts_rows(tmp_path):
    store = RunStore(str(tmp_path / "run"))
    store.commit(table(["a/1", "a/2", "a/3"]), "part-001-x-000000.parquet")
    m = store.write_index("run", 1, complete=True)
    data = (tmp_path / "run" / "shards" / "part-001-x-000000.parquet").read_bytes()
    assert m["rows"] == 3 and m["shards"] == [{"path": "shards/part-001-x-000000.parquet", "rows": 3,
                                               "sha256": hashlib.sha256(data).hexdigest()}]
    assert not [p for p in (tmp_path / "run").rglob(".tmp-*")]
    assert oct((tmp_path / "run" / "shards" / "part-001-x-000000.parquet").stat().st_mode & 0o777) == "0o644"


def test_resume_with_a_different_config_is_refused(tmp_path):
    store = RunStore(str(tmp_path / "run"))
    store.check_config({"engine": {"checkpoint": "a"}, "workers": {"num_workers": 1}})
    store.check_config({"engine": {"checkpoint": "a"}, "workers": {"num_workers": 4}})  # scaling may change
    with pytest.raises(InvalidInput, match="different config \\(engine differ"):
        store.check_config({"engine": {"checkpoint": "b"}, "workers": {"num_workers": 1}})


def test_a_run_written_before_a_setting_existed_resumes_at_its_default(tmp_path):
    from alarm.config import CorpusConfig, load_config

    cfg = load_config(CorpusConfig, "tiny", [], section="corpus").model_dump(mode="json")
    older = json.loads(json.dumps(cfg))
    del older["rephrase"]["retries"], older["rephrase"]["retry_sampling"], older["generate"]["sampling"]["seed"]
    store = RunStore(str(tmp_path / "run"))
    store.check_config(older, model=CorpusConfig)  # the older code's config.json
    store.check_config(cfg, model=CorpusConfig)
    with pytest.raises(InvalidInput, match="different config \\(rephrase differ"):
        store.check_config({**cfg, "rephrase": {**cfg["rephrase"], "retries": 2}}, model=CorpusConfig)
    with pytest.raises(InvalidInput, match="rephrase differ"):  # without the model: compared as written
        store.check_config(cfg)


def test_the_same_folder_named_another_way_resumes(tmp_path):
    """`output=runs` locally and `output=$PWD/runs` in a Ray job are one run folder (README runs both)."""
    store = RunStore(str(tmp_path / "runs" / "tiny-corpus"))
    store.check_config({"output": "runs", "run_id": "tiny-corpus", "engine": {"checkpoint": "a"}})
    store.check_config({"output": str(tmp_path / "runs"), "run_id": "tiny-corpus", "engine": {"checkpoint": "a"}})


def test_each_shard_has_its_stats_and_a_shard_without_them_gets_them_once(tmp_path):
    store = RunStore(str(tmp_path / "run"))
    store.commit(table(["a/1", "a/2"]), "part-001-x-000000.parquet")
    stats = json.loads((tmp_path / "run" / "stats" / "part-001-x-000000.json").read_text())
    assert stats["rows"] == 2 and stats["counts"]["rows"] == 2 and stats["counts"]["kept"] == 2
    store.commit(table(["a/3"]), "part-001-x-000001.parquet")
    (tmp_path / "run" / "stats" / "part-001-x-000001.json").unlink()  # killed between the shard and its stats
    assert store.shard_stats("part-001-x-000001.parquet")["counts"]["rows"] == 1
    assert (tmp_path / "run" / "stats" / "part-001-x-000001.json").exists()
    assert [s["rows"] for s in store.shard_rows()] == [2, 1]


def test_the_fingerprint_follows_names_rows_and_checksums():
    index = {"shards": [{"path": "shards/a.parquet", "rows": 2, "sha256": "1" * 64},
                        {"path": "shards/b.parquet", "rows": 3, "sha256": "2" * 64}]}
    same = {"shards": list(reversed(index["shards"]))}
    assert fingerprint(index) == fingerprint(same)  # order-free
    for change in ({"rows": 4}, {"sha256": "3" * 64}, {"path": "shards/c.parquet"}):
        other = {"shards": [index["shards"][0], {**index["shards"][1], **change}]}
        assert fingerprint(other) != fingerprint(index), change

