"""Per-encoder front-ends, as ALARM's (github.com/Blinorot/ALARM): Whisper log-mel, W2V-BERT fbank, MuQ waveform, SSLAM fbank.

Pure torch/numpy and deterministic; no weights. Each front-end resamples from the ORIGINAL waveform (MuQ gets
real 24 kHz content, not 16 kHz upsampled; reference defect D11). The math reproduces the HF extractors the
reference called (`WhisperFeatureExtractor`, `SeamlessM4TFeatureExtractor`) and torchaudio's Kaldi fbank
(via the `transformers.audio_utils` equivalent, as `ASTFeatureExtractor` does without torchaudio); the unit
tests check parity.

`FEATURES` holds the front-ends of the paper's checkpoints. A checkpoint that takes another feature width
(Whisper tiny.en: 80 mel bins, not large-v3's 128) gets its variant from `feature_spec(encoder, feature_dim)`;
the width is the loaded encoder's `feature_dim`, or `checkpoint_feature_dim` where no encoder is loaded.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import torch
from transformers.audio_utils import mel_filter_bank, window_function

from alarm.errors import CheckpointMismatch, ConfigError, EmptyAudioError
from alarm.types import Features, Waveform

from .resample import Quality, resample

# Kaldi framing at 16 kHz: 25 ms windows, 10 ms shift, FFT padded to 512.
KALDI_WIN, KALDI_HOP, KALDI_FFT = 400, 160, 512
KALDI_MEL_FLOOR = 1.192092955078125e-07  # float32 eps, Kaldi's log floor
KALDI_PREEMPHASIS = 0.97
WHISPER_PIECE = 480_000  # 30 s at 16 kHz
WHISPER_N_FFT, WHISPER_HOP = 400, 160
WHISPER_MEL_BINS = (80, 128)  # Whisper v1/v2 (tiny .. large-v2), large-v3
SSLAM_MEAN, SSLAM_STD = -4.268, 4.569  # AudioSet fbank statistics (EAT/SSLAM)
EDGE_PAD = 160  # samples of zeros each side before the W2V-BERT and SSLAM fbanks (reference)


@dataclass(frozen=True)
class FeatureSpec:
    """Static facts of one encoder's front-end.

    sample_rate: Hz the front-end expects.
    chunk: frames (samples for MuQ) per encoder chunk; `collate` pads to a multiple of it.
    feature_dim: F of `(T, F)` features; None for a raw waveform `(N,)`.
    min_samples: shortest input (at `sample_rate`) that yields one valid frame.
    extract: `samples (N,) float32 at sample_rate -> (features, valid length)`.
    """

    sample_rate: int
    chunk: int
    feature_dim: int | None
    min_samples: int
    extract: Callable[[np.ndarray], tuple[torch.Tensor, int]]


# ---------------------------------------------------------------------------------------------------------------
# filters and windows (built once)


@functools.cache
def _whisper_mel(n_mels: int) -> torch.Tensor:
    """(201, n_mels) Slaney mel filters of `WhisperFeatureExtractor(feature_size=n_mels)`."""
    m = mel_filter_bank(
        num_frequency_bins=1 + WHISPER_N_FFT // 2, num_mel_filters=n_mels, min_frequency=0.0,
        max_frequency=8000.0, sampling_rate=16000, norm="slaney", mel_scale="slaney",
    )
    return torch.from_numpy(m).float()


@functools.cache
def _kaldi_mel(num_mel_bins: int) -> torch.Tensor:
    """(257, M) Kaldi mel filters (20 Hz .. Nyquist, triangles in mel space), float64.

    With 128 bins the lowest triangles fall between FFT bins and are all zero, exactly as in Kaldi/torchaudio;
    transformers warns about that, so the warning is silenced here.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="At least one mel filter has all zero values")
        m = mel_filter_bank(
            num_frequency_bins=KALDI_FFT // 2 + 1, num_mel_filters=num_mel_bins, min_frequency=20,
            max_frequency=8000, sampling_rate=16000, norm=None, mel_scale="kaldi", triangularize_in_mel_space=True,
        )
    return torch.from_numpy(m)


@functools.cache
def _kaldi_window(name: str) -> torch.Tensor:
    """(400,) symmetric window, float64: 'hann' (Kaldi "hanning") or 'povey' (hann ** 0.85)."""
    return torch.from_numpy(window_function(KALDI_WIN, name, periodic=False))


# ---------------------------------------------------------------------------------------------------------------
# shared math


def kaldi_fbank(x: torch.Tensor, window: str, num_mel_bins: int) -> torch.Tensor:
    """Kaldi log-mel fbank with snip_edges, per-frame DC removal, pre-emphasis 0.97, no dither, power spectrum.

    Args:
        x: `(N,)` float64 waveform at 16 kHz, N >= 400.

    Returns:
        `(T, M)` float64 log filterbank energies, T = 1 + (N - 400) // 160.
    """
    frames = x.unfold(0, KALDI_WIN, KALDI_HOP)  # (T, 400)
    frames = frames - frames.mean(dim=1, keepdim=True)
    first = frames[:, :1] * (1 - KALDI_PREEMPHASIS)
    frames = torch.cat([first, frames[:, 1:] - KALDI_PREEMPHASIS * frames[:, :-1]], dim=1)
    power = torch.fft.rfft(frames * _kaldi_window(window), n=KALDI_FFT).abs() ** 2  # (T, 257)
    return torch.clamp(power @ _kaldi_mel(num_mel_bins), min=KALDI_MEL_FLOOR).log()  # (T, M)


# ---------------------------------------------------------------------------------------------------------------
# front-ends


def whisper_features(samples: np.ndarray, n_mels: int = 128) -> tuple[torch.Tensor, int]:
    """Whisper log-mel: 30 s pieces, each zero-padded to 3000 frames and normalised on its own.

    Matches `WhisperFeatureExtractor(feature_size=n_mels)` called on the list of 30 s pieces (the reference),
    then concatenated along time. Valid length = the extractor's attention mask = ceil(N / 160).

    Args:
        n_mels: mel bins, the checkpoint's `num_mel_bins` (128: large-v3, 80: every earlier Whisper).

    Returns:
        `(3000 * ceil(N / 480000), n_mels)` float32 and the valid frame count.
    """
    n = len(samples)
    pieces = math.ceil(n / WHISPER_PIECE)
    wave = torch.zeros(pieces * WHISPER_PIECE, dtype=torch.float32)
    wave[:n] = torch.from_numpy(samples)
    wave = wave.view(pieces, WHISPER_PIECE)  # (P, 480000)
    window = torch.hann_window(WHISPER_N_FFT)
    stft = torch.stft(wave, WHISPER_N_FFT, WHISPER_HOP, window=window, return_complex=True)  # (P, 201, 3001)
    power = (stft[..., :-1].abs() ** 2).contiguous()  # (P, 201, 3000)
    log_spec = torch.clamp(_whisper_mel(n_mels).T @ power, min=1e-10).log10()  # (P, M, 3000)
    peak = log_spec.amax(dim=(1, 2), keepdim=True)  # per 30 s piece, as the extractor does per batch item
    log_spec = (torch.maximum(log_spec, peak - 8.0) + 4.0) / 4.0
    feats = log_spec.transpose(1, 2).reshape(pieces * (WHISPER_PIECE // WHISPER_HOP), n_mels)  # (T, M)
    return feats, math.ceil(n / WHISPER_HOP)


def w2vbert_features(samples: np.ndarray) -> tuple[torch.Tensor, int]:
    """W2V-BERT 2.0 input: pad 160 each side, SeamlessM4T fbank (80 bins, povey, int16 scale), per-bin mean/var
    normalisation, pad frames to even, stack pairs -> 160-dim at 50 frames/s.

    Valid length = the extractor's attention mask = T100 // 2 (an odd last frame is paired with padding).

    Returns:
        `(ceil(T100 / 2), 160)` float32 and the valid frame count.
    """
    x = torch.nn.functional.pad(torch.from_numpy(samples).double(), (EDGE_PAD, EDGE_PAD)) * 2**15
    fb = kaldi_fbank(x, "povey", 80)  # (T100, 80)
    mean, var = fb.mean(dim=0, keepdim=True), fb.var(dim=0, keepdim=True, correction=1)
    fb = ((fb - mean) / torch.sqrt(var + 1e-7)).float()
    t100 = fb.shape[0]
    fb = torch.nn.functional.pad(fb, (0, 0, 0, t100 % 2))  # (2 * T50, 80)
    return fb.reshape(-1, 160), t100 // 2  # (T50, 160)


def muq_features(samples: np.ndarray) -> tuple[torch.Tensor, int]:
    """MuQ takes the raw 24 kHz waveform. Returns `(N,)` float32 and N."""
    return torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32)), len(samples)


def sslam_features(samples: np.ndarray) -> tuple[torch.Tensor, int]:
    """SSLAM/EAT fbank: remove DC, pad 160 each side, Kaldi fbank (128 bins, hanning, htk_compat, no dither,
    no energy), normalise `(x + 4.268) / (2 * 4.569)`.

    Returns:
        `(T, 128)` float32 (`collate` pads T to a multiple of 1024) and T.
    """
    x = torch.from_numpy(samples).double()
    x = torch.nn.functional.pad(x - x.mean(), (EDGE_PAD, EDGE_PAD))
    fb = kaldi_fbank(x, "hann", 128)  # (T, 128)
    fb = (fb - SSLAM_MEAN) / (2 * SSLAM_STD)
    return fb.float(), fb.shape[0]


FEATURES: dict[str, FeatureSpec] = {
    "whisper": FeatureSpec(16000, chunk=3000, feature_dim=128, min_samples=1, extract=whisper_features),
    # Two fbank frames need 240 samples once 2 x 160 are padded on; one frame has no variance to normalise.
    "w2vbert": FeatureSpec(16000, chunk=1500, feature_dim=160, min_samples=240, extract=w2vbert_features),
    "muq": FeatureSpec(24000, chunk=720_000, feature_dim=None, min_samples=1, extract=muq_features),
    # One Kaldi frame (400 samples) needs 80 once 2 x 160 are padded on.
    "sslam": FeatureSpec(16000, chunk=1024, feature_dim=128, min_samples=80, extract=sslam_features),
}


# ---------------------------------------------------------------------------------------------------------------
# entry points


def feature_spec(encoder: str, feature_dim: int | None = None) -> FeatureSpec:
    """The front-end of `encoder` for a checkpoint that takes `feature_dim`-wide features.

    Args:
        feature_dim: F the checkpoint expects (the encoder's `feature_dim`); None = the `FEATURES` entry.

    Raises:
        ConfigError: unknown encoder (the message lists the valid keys).
        CheckpointMismatch: no front-end of `encoder` makes `feature_dim`-wide features.
    """
    if encoder not in FEATURES:
        raise ConfigError(f"unknown encoder {encoder!r} for feature extraction; valid: {', '.join(FEATURES)}")
    spec = FEATURES[encoder]
    if feature_dim is None or feature_dim == spec.feature_dim:
        return spec
    if encoder == "whisper" and feature_dim in WHISPER_MEL_BINS:
        return _whisper_spec(feature_dim)
    widths = WHISPER_MEL_BINS if encoder == "whisper" else (spec.feature_dim,)
    made = "raw waveforms" if spec.feature_dim is None else f"{' or '.join(map(str, widths))}-wide features"
    raise CheckpointMismatch(
        f"the {encoder} checkpoint takes {feature_dim}-wide input features, but the {encoder} front-end "
        f"makes {made}; point encoders.{encoder}.checkpoint at a checkpoint that takes those"
    )


@functools.cache
def _whisper_spec(n_mels: int) -> FeatureSpec:
    return dataclasses.replace(FEATURES["whisper"], feature_dim=n_mels,
                               extract=functools.partial(whisper_features, n_mels=n_mels))


def extract_features(
    encoder: str, wave: Waveform, quality: Quality = "high", feature_dim: int | None = None
) -> tuple[torch.Tensor, int]:
    """Resample the original waveform to the encoder's rate and run its front-end.

    Args:
        feature_dim: F the encoder's checkpoint expects (`encoder.feature_dim`); None = the `FEATURES` entry.

    Returns:
        Features `(T, F)` (`(N,)` for MuQ) and the valid length in frames (samples for MuQ).

    Raises:
        EmptyAudioError: the clip is too short for one frame of this front-end.
    """
    spec = feature_spec(encoder, feature_dim)
    samples = resample(wave, spec.sample_rate, quality).samples
    if len(samples) < spec.min_samples:
        raise EmptyAudioError(
            f"clip of {wave.duration_s * 1000:.1f} ms is too short for the {encoder} front-end: expected at least "
            f"{spec.min_samples} samples at {spec.sample_rate} Hz, found {len(samples)}",
            reason="too_short",
        )
    return spec.extract(samples)


def extract_many(
    encoders: Iterable[str], wave: Waveform, quality: Quality = "high",
    feature_dims: Mapping[str, int | None] | None = None,
) -> dict[str, tuple[torch.Tensor, int]]:
    """`extract_features` for several encoders, resampling the original waveform once per distinct rate.

    Args:
        feature_dims: encoder -> F its checkpoint expects; a missing encoder gets its `FEATURES` entry.
    """
    feature_dims = feature_dims or {}
    by_rate: dict[int, Waveform] = {}
    out = {}
    for name in encoders:
        rate = feature_spec(name).sample_rate
        if rate not in by_rate:
            by_rate[rate] = resample(wave, rate, quality)
        # `by_rate[rate]` is already at the spec rate, so extract_features does not resample it again.
        out[name] = extract_features(name, by_rate[rate], quality, feature_dims.get(name))
    return out


def collate(encoder: str, items: list[tuple[torch.Tensor, int]]) -> Features:
    """Right-pad per-clip features with zeros to the longest item, rounded up to a multiple of the chunk.

    Args:
        encoder: A `FEATURES` key.
        items: `(features (T_i, F) or (N_i,), valid length)` per clip, as from `extract_features`.

    Returns:
        `Features` with values `(B, T, F)` (`(B, N)` for MuQ), T a multiple of the spec's chunk, lens int64 `(B,)`.
    """
    spec = feature_spec(encoder)
    if not items:
        raise ValueError(f"collate({encoder!r}) needs at least one item, found none")
    longest = max(f.shape[0] for f, _ in items)
    T = max(1, math.ceil(longest / spec.chunk)) * spec.chunk
    values = items[0][0].new_zeros((len(items), T, *items[0][0].shape[1:]))  # (B, T, F) or (B, N)
    for i, (f, _) in enumerate(items):
        values[i, : f.shape[0]] = f
    lens = torch.tensor([n for _, n in items], dtype=torch.int64)  # (B,)
    return Features(encoder=encoder, values=values, lens=lens)
