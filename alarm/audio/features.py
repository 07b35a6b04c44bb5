"""Front-ends, as ALARM's reference code computes them: the shared Kaldi fbank math, the front-end table and the
extraction entry points.

Pure torch/numpy and deterministic; no weights. Each front-end resamples from the ORIGINAL waveform (MuQ gets
real 24 kHz content, not 16 kHz upsampled; reference defect D11). Each family's own front-end lives in its module
(`alarm.encoders.whisper`: log-mel, `w2vbert`: SeamlessM4T fbank, `muq`: waveform, `sslam`: EAT fbank) as a
`FrontEnd`; `feature_spec` joins it with the family record's rate, chunk and width. The math reproduces the HF
extractors the reference called (`WhisperFeatureExtractor`, `SeamlessM4TFeatureExtractor`) and torchaudio's Kaldi
fbank (via the `transformers.audio_utils` equivalent, as `ASTFeatureExtractor` does without torchaudio); the unit
tests check parity.

A checkpoint that takes another feature width than the record's (Whisper tiny.en: 80 mel bins, not large-v3's
128) gets its variant from `feature_spec(encoder, feature_dim)`; the width is the loaded encoder's `feature_dim`,
or `checkpoint_feature_dim` where no encoder is loaded.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import torch
from transformers.audio_utils import mel_filter_bank, window_function

from alarm.encoders import EncoderFamily, family
from alarm.errors import CheckpointMismatch, EmptyAudioError
from alarm.types import Features, Waveform

from .resample import Quality, resample

# Kaldi framing at 16 kHz: 25 ms windows, 10 ms shift, FFT padded to 512.
KALDI_WIN, KALDI_HOP, KALDI_FFT = 400, 160, 512
KALDI_MEL_FLOOR = 1.192092955078125e-07  # float32 eps, Kaldi's log floor
KALDI_PREEMPHASIS = 0.97
EDGE_PAD = 160  # samples of zeros each side before the W2V-BERT and SSLAM fbanks (reference)


@dataclass(frozen=True)
class FrontEnd:
    """A family's front-end, as its module declares it.

    extract: `samples (N,) float32 at the record's sample_rate -> (features, valid length)`; a family with
        `widths` takes `feature_dim=` for them.
    valid_frames: the valid length `extract` returns for N samples (pure arithmetic, for token budgets).
    widths: feature widths the front-end makes besides the record's `feature_dim` (Whisper: 80 mel bins).
    """

    extract: Callable[..., tuple[torch.Tensor, int]]
    valid_frames: Callable[[int], int]
    widths: tuple[int, ...] = ()


@dataclass(frozen=True)
class FeatureSpec:
    """One encoder's front-end at one feature width (the record's facts joined with its `FrontEnd`).

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


def kaldi_frames(samples: int) -> int:
    """Frames of `kaldi_fbank` over `samples` once `EDGE_PAD` zeros are added on each side."""
    return max(0, 1 + (samples + 2 * EDGE_PAD - KALDI_WIN) // KALDI_HOP)


# ---------------------------------------------------------------------------------------------------------------
# entry points


def feature_spec(encoder: str, feature_dim: int | None = None) -> FeatureSpec:
    """The front-end of `encoder` for a checkpoint that takes `feature_dim`-wide features.

    Args:
        feature_dim: F the checkpoint expects (the encoder's `feature_dim`); None = the family record's.

    Raises:
        ConfigError: unknown encoder (the message lists the valid names).
        CheckpointMismatch: no front-end of `encoder` makes `feature_dim`-wide features.
    """
    fam = family(encoder)
    return _spec(fam, fam.feature_dim if feature_dim is None else feature_dim)


@functools.cache
def _spec(fam: EncoderFamily, feature_dim: int | None) -> FeatureSpec:
    front: FrontEnd = fam.code().FRONT_END
    if feature_dim == fam.feature_dim:
        extract = front.extract
    elif feature_dim in front.widths:
        extract = functools.partial(front.extract, feature_dim=feature_dim)
    else:
        widths = front.widths or (fam.feature_dim,)
        made = "raw waveforms" if fam.feature_dim is None else f"{' or '.join(map(str, widths))}-wide features"
        raise CheckpointMismatch(
            f"the {fam.name} checkpoint takes {feature_dim}-wide input features, but the {fam.name} front-end "
            f"makes {made}; point encoders.{fam.name}.checkpoint at a checkpoint that takes those"
        )
    return FeatureSpec(fam.sample_rate, fam.chunk, feature_dim, fam.min_samples, extract)


def extract_features(
    encoder: str, wave: Waveform, quality: Quality = "high", feature_dim: int | None = None
) -> tuple[torch.Tensor, int]:
    """Resample the original waveform to the encoder's rate and run its front-end.

    Args:
        feature_dim: F the encoder's checkpoint expects (`encoder.feature_dim`); None = the record's.

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
        feature_dims: encoder -> F its checkpoint expects; a missing encoder gets its record's.
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
        encoder: a registered family.
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
