"""Each family's front-end against the extractor the reference called (transformers' Whisper and SeamlessM4T
extractors, the Kaldi fbank as ASTFeatureExtractor computes it without torchaudio)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from transformers import SeamlessM4TFeatureExtractor, WhisperFeatureExtractor
from transformers.audio_utils import mel_filter_bank, spectrogram, window_function

from alarm.audio.features import feature_spec
from alarm.encoders.sslam import sslam_features
from alarm.encoders.w2vbert import w2vbert_features
from alarm.encoders.whisper import whisper_features

torch.set_num_threads(1)


def noise(n: int, seed: int = 0) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(n)).astype(np.float32)


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
    feats, length = whisper_features(x, feature_dim=80)
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


