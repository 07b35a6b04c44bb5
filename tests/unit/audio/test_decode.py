"""Decoding: formats, downmix, scaling, sources (bytes, path, file://, fsspec, S3) and every typed rejection."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf

from alarm.audio.decode import describe_source, load_audio, waveform_from_array
from alarm.errors import AudioDecodeError, AudioTooLongError, EmptyAudioError, NonFiniteAudioError


def tone(freq: float, sr: int, seconds: float, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def encode(x: np.ndarray, sr: int, fmt: str = "WAV", subtype: str = "PCM_16") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, x, sr, format=fmt, subtype=subtype)
    return buf.getvalue()


def peak_freq(x: np.ndarray, sr: int) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spec) * sr / len(x))


# ---------------------------------------------------------------------------------------------------------------
# formats


@pytest.mark.parametrize("fmt,subtype", [("WAV", "PCM_16"), ("WAV", "FLOAT"), ("FLAC", "PCM_24")])
def test_lossless_round_trip(fmt, subtype):
    x = tone(440, 22050, 0.5)
    w = load_audio(encode(x, 22050, fmt, subtype))
    assert w.sample_rate == 22050 and w.samples.dtype == np.float32 and w.samples.shape == x.shape
    np.testing.assert_allclose(w.samples, x, atol=1e-4)


LOSSY = [("OGG", "VORBIS", 44100), ("OGG", "OPUS", 48000)]
if "MP3" in sf.available_formats():
    LOSSY.append(("MP3", "MPEG_LAYER_III", 44100))


@pytest.mark.parametrize("fmt,subtype,sr", LOSSY)
def test_lossy_round_trip(fmt, subtype, sr):
    x = tone(1000, sr, 1.0)
    w = load_audio(encode(x, sr, fmt, subtype))
    assert w.sample_rate == sr and w.samples.dtype == np.float32
    assert abs(len(w.samples) - len(x)) < 0.05 * len(x)
    assert abs(peak_freq(w.samples, sr) - 1000) < 5
    middle = w.samples[len(x) // 4 : 3 * len(x) // 4]
    assert np.sqrt(np.mean(middle**2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.1)


def test_mp3_is_readable_in_this_build():
    # libsndfile >= 1.1 decodes (and here also encodes) MP3; the deployment relies on it.
    assert "MP3" in sf.available_formats(), f"libsndfile {sf.__libsndfile_version__} lacks MP3; need >= 1.1"


def test_stereo_is_downmixed_by_channel_mean():
    left, right = tone(440, 16000, 0.25), tone(880, 16000, 0.25, amp=0.25)
    w = load_audio(encode(np.stack([left, right], axis=1), 16000, "WAV", "FLOAT"))
    np.testing.assert_allclose(w.samples, (left + right) / 2, atol=1e-6)


def test_int16_is_scaled_to_unit_range():
    pcm = np.array([0, 16384, -16384, 32767, -32768] * 100, dtype=np.int16)
    buf = io.BytesIO()
    sf.write(buf, pcm, 8000, format="WAV", subtype="PCM_16")
    w = load_audio(buf.getvalue())
    np.testing.assert_allclose(w.samples[:5], [0, 0.5, -0.5, 32767 / 32768, -1.0])


# ---------------------------------------------------------------------------------------------------------------
# sources


def test_bytes_path_and_file_uri_agree(tmp_path):
    data = encode(tone(300, 16000, 0.3), 16000, "FLAC", "PCM_16")
    path = tmp_path / "clip.flac"
    path.write_bytes(data)
    results = [load_audio(data), load_audio(path), load_audio(str(path)), load_audio(path.as_uri())]
    for w in results[1:]:
        assert w.sample_rate == results[0].sample_rate
        np.testing.assert_array_equal(w.samples, results[0].samples)


def test_fsspec_memory_uri():
    import fsspec

    data = encode(tone(300, 16000, 0.3), 16000)
    fsspec.filesystem("memory").pipe("/alarm-test/clip.wav", data)
    assert len(load_audio("memory://alarm-test/clip.wav").samples) == 4800


def test_s3_with_endpoint_in_storage_options(s3_endpoint):
    import s3fs

    opts = {"client_kwargs": {"endpoint_url": s3_endpoint}}
    fs = s3fs.S3FileSystem(**opts)
    fs.mkdir("audio-bucket")
    fs.pipe("audio-bucket/a/clip.wav", encode(tone(300, 16000, 0.2), 16000))
    w = load_audio("s3://audio-bucket/a/clip.wav", storage_options=opts)
    assert len(w.samples) == 3200
    with pytest.raises(AudioDecodeError, match="s3://audio-bucket/a/missing.wav"):
        load_audio("s3://audio-bucket/a/missing.wav", storage_options=opts)


def test_describe_source_hides_bytes_and_credentials():
    assert describe_source(b"\x00" * 12) == "<12 bytes>"
    assert describe_source("s3://user:secret@bucket/k.wav?X-Amz-Signature=abc") == "s3://bucket/k.wav"
    assert describe_source("/data/x.wav") == "/data/x.wav"


# ---------------------------------------------------------------------------------------------------------------
# rejections


def test_corrupt_bytes_are_named_by_size_not_content():
    junk = b"definitely not audio " * 20
    with pytest.raises(AudioDecodeError, match=r"<420 bytes>") as e:
        load_audio(junk)
    assert "definitely" not in str(e.value) and "WAV, FLAC" in str(e.value)
    assert e.value.reason == "undecodable"


def test_truncated_wav_is_rejected():
    data = encode(tone(440, 16000, 1.0), 16000)
    with pytest.raises(AudioDecodeError, match="truncated"):
        load_audio(data[: len(data) // 2])


def test_truncated_flac_is_rejected():
    data = encode(tone(440, 16000, 1.0), 16000, "FLAC", "PCM_16")
    with pytest.raises(AudioDecodeError):
        load_audio(data[: len(data) // 2])


def test_header_only_wav_is_empty():
    with pytest.raises(EmptyAudioError, match="0 samples"):
        load_audio(encode(np.zeros(0, np.float32), 16000))


def test_nan_samples_are_rejected():
    x = tone(440, 16000, 0.1)
    x[10] = np.nan
    x[20] = np.inf
    with pytest.raises(NonFiniteAudioError, match="2 NaN/inf samples"):
        load_audio(encode(x, 16000, "WAV", "FLOAT"))


def test_too_long_is_rejected_from_the_header_without_decoding(monkeypatch, tmp_path):
    path = tmp_path / "long.wav"
    sf.write(path, np.zeros(8000 * 61, np.int16), 8000, subtype="PCM_16")

    def no_decode(*args, **kwargs):
        raise AssertionError("decoded a clip the header already rules out")

    monkeypatch.setattr(sf.SoundFile, "read", no_decode)
    with pytest.raises(AudioTooLongError, match=r"61\.00 s.*60 s.*audio\.max_duration_s") as e:
        load_audio(path)
    assert e.value.reason == "too_long"


def test_duration_limit_is_exclusive_and_configurable():
    exactly = encode(np.zeros(8000 * 60, np.float32), 8000)
    with pytest.raises(AudioTooLongError):
        load_audio(exactly)
    assert load_audio(exactly, max_duration_s=61).duration_s == 60.0
    assert load_audio(encode(np.zeros(8000 * 60 - 1, np.float32), 8000)).duration_s < 60
    with pytest.raises(AudioTooLongError, match="5 s"):
        load_audio(encode(np.zeros(8000 * 5, np.float32), 8000), max_duration_s=5)


def test_missing_local_file_names_the_path(tmp_path):
    missing = tmp_path / "nope" / "clip.wav"
    with pytest.raises(AudioDecodeError, match="clip.wav") as e:
        load_audio(missing)
    assert str(missing) in str(e.value)


def test_unknown_uri_protocol():
    with pytest.raises(AudioDecodeError, match="nosuchproto://"):
        load_audio("nosuchproto://bucket/x.wav")


# ---------------------------------------------------------------------------------------------------------------
# arrays


def test_array_mono_and_channels_first():
    x = tone(440, 16000, 0.1)
    assert waveform_from_array(x, 16000).samples.shape == x.shape
    w = waveform_from_array(np.stack([x, -x, x, x]), 16000)  # (C, N)
    np.testing.assert_allclose(w.samples, x / 2, atol=1e-7)
    assert w.samples.dtype == np.float32


def test_array_int16_float64_scaling():
    np.testing.assert_allclose(waveform_from_array(np.array([16384, -32768], np.int16), 8000).samples, [0.5, -1])
    assert waveform_from_array(np.zeros(10, np.float64), 8000).samples.dtype == np.float32


@pytest.mark.parametrize(
    "arr,match",
    [
        (np.zeros((1600, 2), np.float32), "transpose"),
        (np.zeros((1, 2, 100), np.float32), "3-d"),
        (np.zeros(100, bool), "dtype bool"),
    ],
)
def test_array_bad_shapes_and_dtypes(arr, match):
    with pytest.raises(AudioDecodeError, match=match):
        waveform_from_array(arr, 16000)


def test_array_validation_matches_files():
    with pytest.raises(EmptyAudioError):
        waveform_from_array(np.zeros((2, 0), np.float32), 16000)
    with pytest.raises(NonFiniteAudioError):
        waveform_from_array(np.array([0.0, np.nan], np.float32), 16000)
    with pytest.raises(AudioTooLongError, match="60.00 s"):
        waveform_from_array(np.zeros(16000 * 60, np.float32), 16000)
    with pytest.raises(AudioDecodeError, match="sample_rate"):
        waveform_from_array(np.zeros(10, np.float32), 0)


@pytest.mark.parametrize("rate, channels, seconds, fmt, reason", [
    (384_000, 8, 2.0, "FLAC", "bad_sample_rate"),   # a 6.5 KB FLAC that would decode to 6 M samples
    (16_000, 12, 0.1, "WAV", "too_many_channels"),
    (96_000, 4, 50.0, "FLAC", "too_large"),         # 19.2 M samples: rejected from the header, before decoding
])
def test_oversized_audio_is_rejected_from_the_header(rate, channels, seconds, fmt, reason):
    buf = io.BytesIO()
    sf.write(buf, np.zeros((int(rate * seconds), channels), np.float32), rate, format=fmt)
    with pytest.raises(AudioDecodeError) as e:
        load_audio(buf.getvalue())
    assert e.value.reason == reason and str(rate if reason == "bad_sample_rate" else channels) in str(e.value)
