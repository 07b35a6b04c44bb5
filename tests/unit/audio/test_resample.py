"""Polyphase resampling: amplitude and frequency kept, anti-aliasing, analytic upsampling, kernel caching."""

from __future__ import annotations

import numpy as np
import pytest

from alarm.audio.resample import kernel, resample
from alarm.errors import ConfigError
from alarm.types import Waveform


def tone(freq: float, sr: int, seconds: float = 1.0) -> Waveform:
    t = np.arange(int(sr * seconds)) / sr
    return Waveform(np.sin(2 * np.pi * freq * t).astype(np.float32), sr)


def amplitude_at(x: np.ndarray, freq: float, sr: int) -> float:
    """Amplitude of the `freq` component over the middle half (edges carry the filter's start-up)."""
    x = x[len(x) // 4 : 3 * len(x) // 4]
    t = np.arange(len(x)) / sr
    return float(np.abs(np.sum(x * np.exp(-2j * np.pi * freq * t))) * 2 / len(x))


def peak_db(x: np.ndarray) -> float:
    return 20 * np.log10(np.abs(x[len(x) // 8 : -len(x) // 8]).max() + 1e-12)


@pytest.mark.parametrize("quality", ["high", "fast"])
def test_tone_keeps_amplitude_and_frequency_44k1_to_16k(quality):
    y = resample(tone(1000, 44100), 16000, quality)
    assert y.sample_rate == 16000 and y.samples.dtype == np.float32 and len(y.samples) == 16000
    assert amplitude_at(y.samples, 1000, 16000) == pytest.approx(1.0, abs=0.01)
    spec = np.abs(np.fft.rfft(y.samples))
    assert np.argmax(spec) == 1000  # 1 Hz bins over 1 s


@pytest.mark.parametrize("freq", [7900, 8100, 10000])
def test_near_and_above_nyquist_is_removed_48k_to_16k(freq):
    # 7.9 kHz sits in the transition band ('high' is flat to ~7.2 kHz); 8.1 and 10 kHz would alias.
    y = resample(tone(freq, 48000), 16000)
    assert peak_db(y.samples) < -60


def test_fast_quality_still_blocks_aliasing():
    assert peak_db(resample(tone(8100, 48000), 16000, "fast").samples) < -60


def test_upsample_16k_to_24k_matches_the_analytic_tone():
    y = resample(tone(1000, 16000), 24000).samples
    t = np.arange(len(y)) / 24000
    err = np.abs(y - np.sin(2 * np.pi * 1000 * t))[1000:-1000]
    assert len(y) == 24000 and err.max() < 1e-3


def test_same_rate_is_returned_as_is():
    w = tone(440, 16000, 0.1)
    assert resample(w, 16000) is w


def test_kernel_is_cached_per_reduced_ratio():
    kernel.cache_clear()
    resample(tone(440, 44100, 0.1), 16000)
    resample(tone(880, 44100, 0.2), 16000)
    resample(tone(880, 88200, 0.2), 32000)  # same reduced ratio 160/441
    info = kernel.cache_info()
    assert info.misses == 1 and info.hits == 2


def test_kernel_has_unit_dc_gain_and_linear_phase():
    h = kernel(160, 441, "high")
    assert h.dtype == np.float32 and len(h) == 2 * 64 * 441 + 1
    assert h.sum() == pytest.approx(1.0, abs=1e-4)  # resample_poly multiplies by `up`
    np.testing.assert_allclose(h, h[::-1])
    assert not h.flags.writeable


def test_unknown_quality():
    with pytest.raises(ConfigError, match="audio.resample_quality"):
        resample(tone(440, 44100, 0.1), 16000, "best")
