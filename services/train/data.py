"""Training data on Ray Data: corpus shards -> kept rows of a split, in a seeded order of their keys -> decode +
front-ends (CPU tasks) -> one frozen-encoder actor pool per encoder (states optionally cached on disk) ->
examples with tapped states, streamed to the Train workers."""

from __future__ import annotations

import hashlib
import math
import os
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import ray

from alarm.audio.features import feature_spec
from alarm.checkpoints import is_local, resolve_checkpoint
from alarm.config import TrainConfig
from alarm.encoders.checkpoint import checkpoint_feature_dim
from alarm.errors import InvalidInput
from services.connect import gpu_options
from services.engines.encoders import EncoderActor, _ragged
from services.storage import INDEX, RunStore

REQUIRED = ("key", "source", "prompt", "target", "keep", "split", "audio_bytes", "audio_uri")
READ = [*REQUIRED, "duration_s"]


def open_corpus(uri: str) -> RunStore:
    """The corpus run folder, checked: a complete run index, shards, and the columns training reads."""
    store = RunStore(uri)
    index = store.read_json(INDEX)
    if index is None:
        raise InvalidInput(
            f"corpus {uri} has no {INDEX}; point `corpus` at a run folder written by python -m alarm.generate"
        )
    if index.get("complete") is False:
        raise InvalidInput(
            f"corpus {uri} is not complete (its generation is running or was stopped); rerun python -m "
            "alarm.generate with the same run_id to finish it"
        )
    names = store.shard_names()
    if not names:
        raise InvalidInput(f"corpus {uri} has no shards under {uri}/shards")
    with store.fs.open(store.path("shards", names[0]), "rb") as f:
        present = pq.read_schema(f).names
    missing = [c for c in REQUIRED if c not in present]
    if missing:
        raise InvalidInput(
            f"corpus {uri}: shard {names[0]} lacks column(s) {', '.join(missing)} (has {', '.join(present)}); "
            "regenerate it with python -m alarm.generate"
        )
    return store


def audio_paths(store: RunStore) -> dict[str, str]:
    """Corpus rows that name a local audio file instead of carrying their audio (rows from file manifests): the
    train workers open those files. {description: one of them}, for `check_shared_paths`."""
    t = store.read_shards(["audio_uri"])
    local = [u for u in t.column("audio_uri").to_pylist() if u and is_local(u)]
    return {f"the audio_uri of {len(local)} corpus rows, e.g.": local[0]} if local else {}


def count_examples(store: RunStore) -> dict[str, int]:
    """Kept rows per split, from one read of the two small columns."""
    t = store.read_shards(["keep", "split"])
    counts: dict[str, int] = {}
    for keep, split in zip(t.column("keep").to_pylist(), t.column("split").to_pylist(), strict=True):
        if keep:
            counts[split] = counts.get(split, 0) + 1
    return counts


def decode_features(batch: dict[str, np.ndarray], encoders: list[str], max_duration_s: float,
                    quality: str = "high", storage_options: dict | None = None,
                    feature_dims: dict[str, int | None] | None = None, keep_split: bool = False) -> dict:
    """Decode each clip once, resample per encoder rate from the original, and compute the front-ends.

    feature_dims: encoder -> F its checkpoint takes (`checkpoint_feature_dim`); missing: the family record's.
    keep_split: pass the `split` column on (`build_splits`, where one pipeline carries two splits).
    """
    from alarm.audio.decode import load_audio
    from alarm.audio.features import extract_many

    feats: dict[str, list] = {e: [] for e in encoders}
    shapes: dict[str, list] = {e: [] for e in encoders}
    for key, data, uri in zip(batch["key"], batch["audio_bytes"], batch["audio_uri"], strict=True):
        # a batch whose audio_bytes are all null (manifest rows that point at files) arrives as a float NaN column
        src = data if isinstance(data, bytes | bytearray | np.ndarray) and len(data) else uri
        try:
            wave = load_audio(src, max_duration_s=max_duration_s, storage_options=storage_options)
        except Exception as e:
            raise InvalidInput(f"corpus row {key}: audio cannot be read for training ({e})") from e
        for enc, (values, n) in extract_many(encoders, wave, quality, feature_dims).items():
            arr = values.numpy().astype(np.float32)
            feats[enc].append(arr.reshape(-1))
            shapes[enc].append(np.array([*arr.shape, n], dtype=np.int64))
    out = {k: batch[k] for k in ("key", "source", "prompt", "target", *(("split",) if keep_split else ()))}
    for enc in encoders:
        out[f"feat_{enc}"] = _ragged(feats[enc])
        out[f"feat_{enc}_shape"] = _ragged(shapes[enc])
    return out


def key_order(keys: pa.Array, seed: int) -> pa.Array:
    """A sort key per row: a seeded hash of the row key (a well-mixed order that depends on the keys alone), as a
    non-negative int64 (the hash's first 63 bits), so that `in_key_order` can name its range boundaries."""
    return pa.array([int(hashlib.sha256(f"{seed}:{k}".encode()).hexdigest()[:16], 16) >> 1 for k in keys.to_pylist()],
                    type=pa.int64())


def in_key_order(ds: ray.data.Dataset, seed: int, rows: int) -> ray.data.Dataset:
    """The rows sorted by `key_order`: the training stream is a function of the corpus' keys and the seed, not of
    how its shards are laid out (rows are written in the order generation finished them).

    The hashes are uniform, so the sort's range partitions are fixed here, one per `ROWS_PER_PARTITION` rows: left
    to itself, Ray Data samples boundaries and, where it cannot estimate the input's blocks, cuts
    `default_hash_shuffle_parallelism` partitions (about 150 reduce tasks for a 24-row corpus, every epoch)."""
    ds = ds.map_batches(lambda t: t.append_column(_ORDER, key_order(t["key"], seed)), batch_format="pyarrow",
                        num_cpus=0.25)
    parts = max(2, math.ceil(rows / ROWS_PER_PARTITION))  # one boundary at least: none means "sample them"
    return ds.sort(_ORDER, boundaries=[i * 2**63 // parts for i in range(1, parts)]).drop_columns([_ORDER])


ROWS_PER_PARTITION = 16_384  # rows of the read columns (text and URIs, no audio): a few KB each
_ORDER = "_key_order"


SHARDS_PER_FOOTER_READER = 64
FOOTER_ACTORS = "RAY_DATA_PARQUET_FOOTER_NUM_ACTORS"


@contextmanager
def footer_readers(shards: int):
    """Ray Data 2.60 lists Parquet files by reading their footers on a pool of new actors: 32 by default, started
    again at every read (each epoch). For a corpus of a few shards that is 32 processes to read 3 footers (3-6 s
    per read on 2 cores, against 1.3 s with one actor). The pool is sized when read_parquet builds its indexer, so
    the count is set around that call: one actor per 64 shards, at most 32. A value the user set is kept."""
    if FOOTER_ACTORS in os.environ:
        yield
        return
    os.environ[FOOTER_ACTORS] = str(min(32, max(1, math.ceil(shards / SHARDS_PER_FOOTER_READER))))
    try:
        yield
    finally:
        del os.environ[FOOTER_ACTORS]


def build_splits(cfg: TrainConfig, store: RunStore, n_train: int, n_val: int) -> dict[str, ray.data.Dataset]:
    """What the trainer reads: "train", and "val", the validation rows, or where the corpus has none (tiny corpora)
    a fixed slice of train; each the first `eval_batches` x `batch.per_worker` x workers rows in key order.
    `n_train`, `n_val`: the splits' kept rows (`count_examples`).

    Streamed (`encoders.cache` off), each split is its own pipeline, run again every epoch. Materialized, both
    come from one pass: the kept rows of both splits in key order, then split. One set of encoder actors instead
    of two: starting them is most of what a small corpus costs (4 encoders, 24 clips: 38 s for the 21 train
    rows, then 30 s for the 3 validation rows). A clip's states do not depend on which clips share its batch,
    so the splits hold the bytes two passes would. "val" is copied out (a few batches); "train" is a filter
    over the pass's blocks, run each epoch, so the states are held once, not twice."""
    from ray.data.expressions import col

    val_split = "validation" if n_val else "train"
    limit = cfg.eval_batches * cfg.batch.per_worker * max(cfg.workers.num_workers, 1)
    if not cfg.encoders.cache:
        return {"train": build_split(cfg, store, "train", rows=n_train),
                "val": build_split(cfg, store, val_split, limit=limit, rows=n_val or n_train)}
    both = build_split(cfg, store, ("train", "validation") if n_val else ("train",), rows=n_train + n_val)
    train = both.filter(expr=col("split") == "train")
    val = both.filter(expr=col("split") == "validation") if n_val else train
    return {"train": train.drop_columns(["split"]), "val": val.limit(limit).drop_columns(["split"]).materialize()}


def build_split(cfg: TrainConfig, store: RunStore, split: str | tuple[str, ...], limit: int | None = None,
                rows: int | None = None) -> ray.data.Dataset:
    """The split's kept rows in key order (`limit`: the first so many), with their encoder states; `rows`: how many
    kept rows the split has (`count_examples`; counted here when not given). A tuple of splits: their rows
    together, in key order, with their `split` column."""
    # A deterministic stream, so a resumed run skips exactly the batches it already trained on.
    ray.data.DataContext.get_current().execution_options.preserve_order = True
    encoders = list(cfg.model.encoders)
    from alarm import env

    # The front-ends run in decode_features, where no encoder is loaded: their widths come from the
    # checkpoints' config.json (80 mel bins for Whisper tiny.en), checked here on the driver.
    feature_dims = {}
    for name, enc in cfg.model.encoders.items():
        folder = resolve_checkpoint(enc.checkpoint, enc.revision, expect=["config.json"])
        feature_dims[name] = feature_spec(name, checkpoint_feature_dim(name, folder)).feature_dim

    shards = store.shard_uris()
    with footer_readers(len(shards)):
        ds = ray.data.read_parquet(shards, filesystem=store.arrow_filesystem(), num_cpus=0.25)
    ds = ds.select_columns(READ)  # pushed down into the Parquet read
    splits = (split,) if isinstance(split, str) else split
    ds = ds.filter(lambda r, splits=splits: bool(r["keep"]) and r["split"] in splits)
    ds = in_key_order(ds, cfg.seed, sum(count_examples(store).get(s, 0) for s in splits) if rows is None else rows)
    if limit is not None:
        ds = ds.limit(limit)
    ds = ds.map_batches(decode_features, fn_kwargs={
        "encoders": encoders, "max_duration_s": cfg.model.audio.max_duration_s,
        "quality": cfg.model.audio.resample_quality, "storage_options": env.s3_storage_options(),
        "feature_dims": feature_dims, "keep_split": not isinstance(split, str),
    }, batch_size=cfg.encoders.batch_size, batch_format="numpy", num_cpus=0.5)
    e = cfg.encoders
    cache_dir = str(Path(e.cache_dir).resolve()) if e.cache_dir else None  # actors may run in another folder
    for name, enc_cfg in cfg.model.encoders.items():
        ds = ds.map_batches(
            EncoderActor, fn_constructor_kwargs={"name": name, "cfg_json": enc_cfg.model_dump(mode="json"),
                                                 "cache_dir": cache_dir},
            compute=ray.data.ActorPoolStrategy(size=e.actors), batch_size=e.batch_size, batch_format="numpy",
            num_cpus=e.num_cpus, **gpu_options(e.num_gpus),
        )
    return ds.materialize() if e.cache else ds
