"""The run store: atomic shard commits, attempt numbers that never repeat, config checks on resume."""

import pyarrow as pa
import pytest

from alarm.errors import InvalidInput
from services.storage import RunStore


def table(keys):
    return pa.table({"key": keys, "keep": [True] * len(keys)})


def test_a_killed_attempt_without_manifest_never_gets_its_number_reused(tmp_path):
    store = RunStore(str(tmp_path / "run"))
    assert store.next_attempt() == 1
    store.commit(table(["s/1", "s/2"]), "part-001-aaaa-000000.parquet")  # killed before its manifest was written
    assert store.next_attempt() == 2
    store.write_index("run", 5, complete=False)
    assert store.next_attempt() == 6
    assert store.committed_keys() == {"s/1", "s/2"}


def test_commits_leave_no_temp_files_and_manifest_counts_rows(tmp_path):
    store = RunStore(str(tmp_path / "run"))
    store.commit(table(["a/1", "a/2", "a/3"]), "part-001-x-000000.parquet")
    m = store.write_index("run", 1, complete=True)
    assert m["rows"] == 3 and m["shards"] == [{"path": "shards/part-001-x-000000.parquet", "rows": 3}]
    assert not [p for p in (tmp_path / "run").rglob(".tmp-*")]
    assert oct((tmp_path / "run" / "shards" / "part-001-x-000000.parquet").stat().st_mode & 0o777) == "0o644"


def test_resume_with_a_different_config_is_refused(tmp_path):
    store = RunStore(str(tmp_path / "run"))
    store.check_config({"engine": {"checkpoint": "a"}, "workers": {"num_workers": 1}})
    store.check_config({"engine": {"checkpoint": "a"}, "workers": {"num_workers": 4}})  # scaling may change
    with pytest.raises(InvalidInput, match="different config \\(engine differ"):
        store.check_config({"engine": {"checkpoint": "b"}, "workers": {"num_workers": 1}})
