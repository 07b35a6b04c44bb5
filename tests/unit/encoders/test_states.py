"""Encoder states on disk: keyed by the encoder and the clip, stored exactly as encoded."""

import numpy as np

from alarm.encoders.states import StateCache, encoder_fingerprint


def test_states_round_trip_exactly_under_a_key_of_encoder_and_clip(tmp_path):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "config.json").write_text("{}")
    fp = encoder_fingerprint("whisper", {"layers": [2, 4]}, ckpt)
    cache = StateCache(tmp_path / "cache", fp)
    feats = np.random.default_rng(0).standard_normal((300, 80)).astype(np.float32)
    states = np.random.default_rng(1).standard_normal((2, 150, 16)).astype(np.float32)
    key = cache.key(feats, 300)
    assert cache.load(key) is None
    cache.save(key, states)
    got = cache.load(key)
    assert got.dtype == np.float32 and np.array_equal(got, states)
    # another clip, another valid length, another encoder config or checkpoint: another key
    other = feats.copy()
    other[0, 0] += 1e-3
    assert len({key, cache.key(other, 300), cache.key(feats, 299)}) == 3
    assert encoder_fingerprint("whisper", {"layers": [2, 3]}, ckpt) != fp
    (ckpt / "model.safetensors").write_bytes(b"weights")
    assert encoder_fingerprint("whisper", {"layers": [2, 4]}, ckpt) != fp
