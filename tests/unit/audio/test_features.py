"""Front-ends: shapes and valid lengths per encoder, parity with the HF extractors, MuQ from original audio, collate."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch
from transformers import SeamlessM4TFeatureExtractor, WhisperFeatureExtractor
from transformers.audio_utils import mel_filter_bank, spectrogram, window_function

from alarm.audio.features import (
    FEATURES,
    collate,
    extract_features,
    extract_many,
    feature_spec,
    sslam_features,
    w2vbert_features,
    whisper_features,
)
from alarm.audio.resample import resample
from alarm.config import ENCODER_KINDS
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


def test_registry_matches_config_encoders():
    assert tuple(FEATURES) == ENCODER_KINDS
    assert {k: (s.sample_rate, s.chunk, s.feature_dim) for k, s in FEATURES.items()} == {
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
    out = extract_many(FEATURES, wave)

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
    for name, (f, n) in extract_many(FEATURES, wave).items():
        g, m = extract_features(name, wave)
        assert torch.equal(f, g) and n == m, name


def test_front_ends_are_deterministic():
    wave = Waveform(noise(16000), 16000)
    for name in FEATURES:
        a, b = extract_features(name, wave)[0], extract_features(name, wave)[0]
        assert torch.equal(a, b), name


def test_too_short_for_a_frame_is_rejected():
    with pytest.raises(EmptyAudioError, match="w2vbert.*240 samples") as e:
        extract_features("w2vbert", Waveform(noise(100), 16000))
    assert e.value.reason == "too_short"
    assert extract_features("whisper", Waveform(noise(100), 16000))[1] == 1


def test_unknown_encoder():
    with pytest.raises(ConfigError, match="whisper, w2vbert, muq, sslam"):
        extract_features("hubert", Waveform(noise(100), 16000))


# ---------------------------------------------------------------------------------------------------------------
# the checkpoint's feature width (Whisper tiny.en: 80 mel bins; large-v3: 128)


@pytest.mark.parametrize("encoder", list(FEATURES))
def test_the_default_width_is_the_registry_entry(encoder):
    assert feature_spec(encoder) is feature_spec(encoder, FEATURES[encoder].feature_dim) is FEATURES[encoder]


def test_whisper_80_mel_variant():
    spec = feature_spec("whisper", 80)
    assert spec is feature_spec("whisper", 80)  # built once
    base = FEATURES["whisper"]
    assert (spec.sample_rate, spec.chunk, spec.feature_dim, spec.min_samples) == (16000, 3000, 80, 1)
    assert base.feature_dim == 128  # the registry entry stays large-v3's

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
# parity with the extractors the reference called


@pytest.fixture(scope="module")
def whisper_fe():
    return WhisperFeatureExtractor(feature_size=128)  # whisper-large-v3's preprocessor config


@pytest.fixture(scope="module")
def whisper_fe_80():
    return WhisperFeatureExtractor(feature_size=80)  # every earlier Whisper's (tiny.en included)


def whisper_reference(fe: WhisperFeatureExtractor, x: np.ndarray) -> tuple[torch.Tensor, int]:
    pieces = [x[i : i + 480_000] for i in range(0, len(x), 480_000)]  # the reference splits at 30 s
    ref = fe(pieces, sampling_rate=16000, return_attention_mask=True, return_tensors="pt")
    return torch.cat(list(ref["input_features"]), dim=-1).T, int(ref["attention_mask"].sum())  # (T, M)


@pytest.mark.parametrize("n", [4807, 160_037, 480_000, 480_001, 16000 * 31 + 5])
def test_whisper_matches_extractor(whisper_fe, n):
    x = noise(n, seed=n)
    expected, expected_length = whisper_reference(whisper_fe, x)
    feats, length = whisper_features(x)
    torch.testing.assert_close(feats, expected, atol=1e-5, rtol=0)
    assert length == expected_length


@pytest.mark.parametrize("n", [4807, 160_037, 480_001, 16000 * 31 + 5])
def test_whisper_80_mel_bins_match_extractor(whisper_fe_80, n):
    x = noise(n, seed=n)
    x[: n // 3] *= 0.01  # a quiet stretch: the max - 8 clamp does work
    expected, expected_length = whisper_reference(whisper_fe_80, x)
    feats, length = whisper_features(x, n_mels=80)
    assert feats.shape == expected.shape == (3000 * math.ceil(n / 480_000), 80)
    torch.testing.assert_close(feats, expected, atol=1e-5, rtol=0)
    assert length == expected_length
    via_spec, _ = feature_spec("whisper", 80).extract(x)
    assert torch.equal(via_spec, feats)


@pytest.mark.parametrize("n", [4807, 4967, 160_037, 16000 * 31 + 5])  # 4967 gives an odd number of fbank frames
def test_w2vbert_matches_seamless_extractor(n):
    x = noise(n, seed=n)
    ref = SeamlessM4TFeatureExtractor()(
        [np.pad(x, 160)], sampling_rate=16000, return_attention_mask=True, return_tensors="pt"
    )
    feats, length = w2vbert_features(x)
    torch.testing.assert_close(feats, ref["input_features"][0], atol=1e-4, rtol=0)
    assert length == int(ref["attention_mask"].sum())


@pytest.mark.filterwarnings("ignore:At least one mel filter has all zero values")
@pytest.mark.parametrize("n", [4807, 160_037])
def test_sslam_matches_kaldi_fbank(n):
    # transformers' numpy Kaldi fbank, as ASTFeatureExtractor uses when torchaudio is absent.
    x = noise(n, seed=n) + 0.05  # a DC offset to remove
    mel = mel_filter_bank(
        num_frequency_bins=257, num_mel_filters=128, min_frequency=20, max_frequency=8000, sampling_rate=16000,
        norm=None, mel_scale="kaldi", triangularize_in_mel_space=True,
    )
    fbank = spectrogram(
        np.pad(x - x.mean(), 160), window_function(400, "hann", periodic=False), frame_length=400,
        hop_length=160, fft_length=512, power=2.0, center=False, preemphasis=0.97, mel_filters=mel,
        log_mel="log", mel_floor=1.192092955078125e-07, remove_dc_offset=True,
    ).T  # (T, 128)
    feats, length = sslam_features(x)
    np.testing.assert_allclose(feats.numpy(), (fbank + 4.268) / (2 * 4.569), atol=1e-5)
    assert length == fbank.shape[0]


def test_whisper_and_sslam_are_fast_for_60s():
    x = noise(16000 * 60 - 1)
    start = time.perf_counter()
    whisper_features(x)
    sslam_features(x)
    assert time.perf_counter() - start < 2.0  # ~0.1 s measured on one core


# ---------------------------------------------------------------------------------------------------------------
# collate


@pytest.mark.parametrize("encoder", list(FEATURES))
def test_collate_pads_to_a_multiple_of_the_chunk(encoder):
    items = [extract_features(encoder, Waveform(noise(int(16000 * d), seed=i), 16000))
             for i, d in enumerate([0.5, 12.0])]
    batch = collate(encoder, items)
    spec = FEATURES[encoder]
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
