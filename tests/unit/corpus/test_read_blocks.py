"""How the corpus read cuts a source into blocks: about BLOCK_BYTES of rows (from the first file's footer), within
MIN_BLOCK_ROWS..MAX_BLOCK_ROWS, so every stage stays parallel and no block grows with the source."""

import os

import pyarrow as pa
import pyarrow.parquet as pq

from alarm.config import ManifestSourceConfig, ParquetSourceConfig
from alarm.corpus.manifest import plan_source
from alarm.corpus.records import SourceFile, row_bytes
from services.corpus.sources import BLOCK_BYTES, MAX_BLOCK_ROWS, MIN_BLOCK_ROWS, block_rows


def parquet(path, n: int, audio_bytes: int):
    """`n` rows of `audio_bytes` random bytes each (audio neither compresses nor repeats)."""
    pq.write_table(pa.table({"id": [f"r{i}" for i in range(n)], "audio": [os.urandom(audio_bytes) for _ in range(n)]}),
                   path)
    return path


def test_row_bytes_from_the_footer_and_none_for_a_manifest(tmp_path):
    size = row_bytes(SourceFile(str(parquet(tmp_path / "a.parquet", 50, 10_000)), "parquet"))
    assert 10_000 <= size < 10_100
    (tmp_path / "m.jsonl").write_text('{"id": "a", "audio": "a.wav"}\n')
    assert row_bytes(SourceFile(str(tmp_path / "m.jsonl"), "jsonl")) is None


def test_blocks_hold_about_block_bytes_within_the_row_bounds(tmp_path):
    def rows(audio_bytes: int, n: int = 3) -> int:
        path = parquet(tmp_path / f"{audio_bytes}.parquet", n, audio_bytes)
        return block_rows(plan_source(ParquetSourceConfig(name="p", path=str(path), id_column="id")))

    assert rows(1 << 20) == BLOCK_BYTES // row_bytes(SourceFile(str(tmp_path / f"{1 << 20}.parquet"), "parquet"))
    assert 60 <= rows(1 << 20) <= 64  # 1 MiB clips: about 64 a block
    assert rows(10, n=100) == MAX_BLOCK_ROWS  # paths or tiny rows: capped, so blocks stay parallel
    assert rows(8 << 20, n=2) == MIN_BLOCK_ROWS  # huge rows: never fewer than this per block
    (tmp_path / "m.jsonl").write_text('{"id": "a", "audio": "a.wav"}\n')
    assert block_rows(plan_source(ManifestSourceConfig(name="m", path=str(tmp_path / "m.jsonl")))) == MAX_BLOCK_ROWS


def test_a_synthetic_source_is_read_in_bounded_blocks():
    from services.corpus.sources import MAX_SYNTHETIC_BLOCKS, synthetic_blocks

    assert [synthetic_blocks(n) for n in (1, 4, 5, 24, 96)] == [1, 1, 2, 6, 24]  # 4 clips each
    assert synthetic_blocks(1_000_000) == MAX_SYNTHETIC_BLOCKS  # blocks of 245 clips, not 250,000 read tasks
