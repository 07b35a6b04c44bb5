"""The Ray Train worker's micro-batches (alarm.training.batch.epoch_batches over its shard): length buckets within
windows of the stream, a new order every epoch."""

import numpy as np

from alarm.config import TrainConfig, load_config
from alarm.training.batch import bucket_by_length, example_length
from services.train.worker import stream_batches


class Shard:
    """What `ray.train.get_dataset_shard` gives the loop: batches of rows as dicts of numpy columns."""

    def __init__(self, rows: list[dict]):
        self.rows = rows

    def iter_batches(self, batch_size: int, **_):
        for i in range(0, len(self.rows), batch_size):
            chunk = self.rows[i : i + batch_size]
            yield {k: np.array([r[k] for r in chunk] + [None], dtype=object)[:-1] for k in chunk[0]}


def rows(n: int) -> list[dict]:
    rng = np.random.default_rng(0)
    return [{"key": f"k{i:03d}", "source": "s", "prompt": "p", "target": "t",
             "states_whisper": np.zeros((1, int(rng.integers(5, 60)), 2), np.float32)} for i in range(n)]


def cfg(window_batches: int) -> TrainConfig:
    return load_config(TrainConfig, "tiny", ["batch.per_worker=4", "batch.effective=4",
                                             f"batch.window_batches={window_batches}"], section="train")


def keys(batches) -> list[list[str]]:
    return [[r["key"] for r in b] for b in batches]


def test_a_window_as_large_as_the_corpus_buckets_the_whole_epoch():
    data, c = rows(90), cfg(window_batches=32)  # 128 rows >= 90
    for epoch in (0, 1):
        expected = bucket_by_length(data, example_length, 4, seed=c.seed + epoch)
        assert keys(stream_batches(Shard(data), c, epoch, 0)) == keys(expected)


def test_every_epoch_mixes_the_whole_corpus_in_a_new_order():
    data, c = rows(90), cfg(window_batches=32)
    first, second = (keys(stream_batches(Shard(data), c, e, 0)) for e in (0, 1))
    assert first != second
    assert any(min(b) < "k030" and max(b) >= "k060" for b in first)  # a batch spans the stream's first and last third


def test_small_windows_keep_the_stream_order_between_windows():
    data, c = rows(96), cfg(window_batches=8)  # windows of 32 rows
    batches = keys(stream_batches(Shard(data), c, 0, 0))
    window_of = [{int(k[1:]) // 32 for k in b} for b in batches]
    assert all(len(w) == 1 for w in window_of)  # no batch mixes windows
    order = [min(w) for w in window_of]
    assert order == sorted(order)  # and the windows come in the stream's order


def test_a_resumed_epoch_skips_exactly_the_batches_already_trained():
    data, c = rows(90), cfg(window_batches=32)
    full = keys(stream_batches(Shard(data), c, 3, 0))
    assert keys(stream_batches(Shard(data), c, 3, 5 * 4)) == full[5:]
