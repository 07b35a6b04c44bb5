"""Front-ends: shapes and valid lengths per encoder, parity with the HF extractors, MuQ from original audio, collate."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from alarm.audio.features import collate, extract_features, extract_many, feature_spec, kaldi_frames
from alarm.audio.resample import resample
from alarm.encoders import FAMILIES
from alarm.errors import CheckpointMismatch, ConfigError, EmptyAudioError
from alarm.types import Waveform

torch.set_num_threads(1)

DURATIONS = [0.3, 10.0, 31.0, 59.9]


def noise(n: int, seed: int = 0) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(n)).astype(np.float32)


def tone(freq: float, sr: int, seconds: float) -> Waveform:
    t = np.arange(int(sr * seconds)) / sr
    return Waveform((0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32), sr)


def rms_db(x: np.ndarray) -> float:
    x = x[len(x) // 8 : -len(x) // 8]
    return 10 * np.log10(np.mean(x.astype(np.float64) ** 2) + 1e-20)


ENCODERS = ["whisper", "w2vbert", "muq", "sslam"]


def test_the_table_comes_from_the_family_records():
    assert list(FAMILIES) == ENCODERS
    specs = {k: feature_spec(k) for k in ENCODERS}
    assert {k: (s.sample_rate, s.chunk, s.feature_dim) for k, s in specs.items()} == {
        "whisper": (16000, 3000, 128),
        "w2vbert": (16000, 1500, 160),
        "muq": (24000, 720_000, None),
        "sslam": (16000, 1024, 128),
    }


# ---------------------------------------------------------------------------------------------------------------
# shapes and lengths from a 44.1 kHz clip


@pytest.mark.parametrize("dur", DURATIONS)
def test_shapes_and_lengths(dur):
    wave = Waveform(noise(int(44100 * dur)), 44100)
    n16 = math.ceil(len(wave.samples) * 160 / 441)
    n24 = math.ceil(len(wave.samples) * 80 / 147)
    out = extract_many(ENCODERS, wave)

    feats, n = out["whisper"]  # 100 Hz mel, 30 s pieces padded to 3000 frames each
    assert feats.shape == (3000 * math.ceil(dur / 30), 128) and n == math.ceil(n16 / 160)
    assert abs(n - 100 * dur) <= 1

    feats, n = out["w2vbert"]  # 50 Hz stacked fbank
    t100 = 1 + (n16 + 320 - 400) // 160
    assert feats.shape == (math.ceil(t100 / 2), 160) and n == t100 // 2 and abs(n - 50 * dur) <= 1

    feats, n = out["muq"]  # raw 24 kHz samples
    assert feats.shape == (n24,) and n == n24 and feats.dtype == torch.float32

    feats, n = out["sslam"]  # 100 Hz Kaldi fbank
    assert feats.shape == (n, 128) and n == 1 + (n16 - 80) // 160 and abs(n - 100 * dur) <= 1

    for name, (f, _) in out.items():
        assert f.dtype == torch.float32 and torch.isfinite(f).all(), name


def test_extract_many_equals_one_at_a_time():
    wave = Waveform(noise(44100), 44100)
    for name, (f, n) in extract_many(ENCODERS, wave).items():
        g, m = extract_features(name, wave)
        assert torch.equal(f, g) and n == m, name


def test_front_ends_are_deterministic():
    wave = Waveform(noise(16000), 16000)
    for name in ENCODERS:
        a, b = extract_features(name, wave)[0], extract_features(name, wave)[0]
        assert torch.equal(a, b), name


def test_too_short_for_a_frame_is_rejected():
    with pytest.raises(EmptyAudioError, match="w2vbert.*240 samples") as e:
        extract_features("w2vbert", Waveform(noise(100), 16000))
    assert e.value.reason == "too_short"
    assert extract_features("whisper", Waveform(noise(100), 16000))[1] == 1


def test_unknown_encoder():
    with pytest.raises(ConfigError, match="unknown encoder 'hubert'; valid: whisper, w2vbert, muq, sslam"):
        extract_features("hubert", Waveform(noise(100), 16000))


# ---------------------------------------------------------------------------------------------------------------
# the checkpoint's feature width (Whisper tiny.en: 80 mel bins; large-v3: 128)


@pytest.mark.parametrize("encoder", ENCODERS)
def test_the_default_width_is_the_record_s(encoder):
    spec = feature_spec(encoder)
    assert spec is feature_spec(encoder, FAMILIES[encoder].feature_dim) and spec.feature_dim == FAMILIES[encoder].feature_dim


def test_whisper_80_mel_variant():
    spec = feature_spec("whisper", 80)
    assert spec is feature_spec("whisper", 80)  # built once
    base = feature_spec("whisper")
    assert (spec.sample_rate, spec.chunk, spec.feature_dim, spec.min_samples) == (16000, 3000, 80, 1)
    assert base.feature_dim == 128  # the record's width stays large-v3's

    wave = Waveform(noise(int(44100 * 31.0)), 44100)
    feats, n = extract_features("whisper", wave, feature_dim=80)
    ref, m = extract_features("whisper", wave)
    assert feats.shape == (6000, 80) and ref.shape == (6000, 128) and n == m
    many = extract_many(["whisper", "sslam"], wave, feature_dims={"whisper": 80})
    assert torch.equal(many["whisper"][0], feats) and many["sslam"][0].shape[1] == 128
    short = extract_features("whisper", Waveform(noise(800), 16000), "high", 80)
    batch = collate("whisper", [(feats, n), short])
    assert batch.values.shape == (2, 6000, 80)


@pytest.mark.parametrize(("encoder", "width", "valid"), [
    ("whisper", 96, "80 or 128-wide features"), ("whisper", 160, "80 or 128-wide features"),
    ("sslam", 64, "128-wide features"), ("w2vbert", 80, "160-wide features"), ("muq", 128, "raw waveforms"),
])
def test_a_width_no_front_end_makes_is_rejected(encoder, width, valid):
    with pytest.raises(CheckpointMismatch, match=f"{encoder} checkpoint takes {width}-wide .* {valid};"):
        feature_spec(encoder, width)
    with pytest.raises(CheckpointMismatch, match=f"encoders.{encoder}.checkpoint"):
        extract_features(encoder, Waveform(noise(16000), 16000), feature_dim=width)


# ---------------------------------------------------------------------------------------------------------------
# MuQ sees the original audio, not 16 kHz upsampled (reference defect D11)


def test_muq_input_keeps_content_above_8khz():
    wave = tone(10_000, 48000, 1.0)
    muq, _ = extract_features("muq", wave)
    assert rms_db(muq.numpy()) == pytest.approx(rms_db(wave.samples), abs=0.1)
    assert rms_db(resample(wave, 16000).samples) < rms_db(wave.samples) - 60

    via_16k = resample(resample(wave, 16000), 24000).samples
    assert rms_db(via_16k) < rms_db(muq.numpy()) - 60


def test_muq_resamples_44k1_directly():
    wave = Waveform(noise(44100), 44100)
    muq, n = extract_features("muq", wave)
    np.testing.assert_array_equal(muq.numpy(), resample(wave, 24000).samples)
    assert n == 24000


# ---------------------------------------------------------------------------------------------------------------
# collate


@pytest.mark.parametrize("encoder", ENCODERS)
def test_collate_pads_to_a_multiple_of_the_chunk(encoder):
    items = [extract_features(encoder, Waveform(noise(int(16000 * d), seed=i), 16000))
             for i, d in enumerate([0.5, 12.0])]
    batch = collate(encoder, items)
    spec = feature_spec(encoder)
    longest = max(f.shape[0] for f, _ in items)
    assert batch.encoder == encoder and batch.lens.dtype == torch.int64
    assert batch.values.shape[1] == math.ceil(longest / spec.chunk) * spec.chunk
    assert batch.values.shape[2:] == ((spec.feature_dim,) if spec.feature_dim else ())
    assert batch.lens.tolist() == [n for _, n in items]
    for i, (f, _) in enumerate(items):
        assert torch.equal(batch.values[i, : f.shape[0]], f)
        assert not batch.values[i, f.shape[0] :].any()  # zero right-padding
    assert batch.mask.shape == batch.values.shape[:2]


def test_collate_rejects_empty_batch():
    with pytest.raises(ValueError, match="at least one item"):
        collate("whisper", [])


@pytest.mark.parametrize("n", [0, 79, 80, 239, 240, 399, 400, 4807, 4967])
def test_kaldi_frames_counts_the_fbank_frames(n):
    from alarm.encoders.sslam import sslam_features

    assert kaldi_frames(n) == (sslam_features(noise(n))[1] if n >= 80 else 0)
