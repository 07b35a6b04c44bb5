"""Audio in: bytes, local paths or fsspec URIs -> mono float32 `Waveform` at the file's native rate.

Every rejection is a typed `AudioError` saying what was found and how to fix it. The duration limit is checked
from the file header before decoding, so a 3-hour upload costs a header read, not a decode.
"""

from __future__ import annotations

import io
import math
import os
import struct
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import soundfile as sf

from alarm.errors import AudioDecodeError, AudioTooLongError, EmptyAudioError, NonFiniteAudioError
from alarm.types import Waveform

AudioSource = bytes | bytearray | memoryview | str | os.PathLike
MAX_CHANNELS = 8
MAX_SAMPLE_RATE = 96_000  # above this no speech/audio model gains anything; a header could claim 384 kHz x 8 ch
MAX_DECODED_SAMPLES = MAX_SAMPLE_RATE * 2 * 60  # frames x channels decoded per clip (~46 MB of float32)
SUPPORTED = "WAV, FLAC, OGG (Vorbis/Opus) or MP3"
# MP3 headers give an estimate of the length (Xing/LAME tag or bitrate x size); allow a little slack.
MP3_LENGTH_SLACK = 0.01


def load_audio(
    src: AudioSource, *, max_duration_s: float = 60.0, storage_options: dict | None = None
) -> Waveform:
    """Decode audio from bytes, a local path, a `file://` URI or any fsspec URI to mono float32.

    Args:
        src: Encoded file contents, a local path, or a URI (`s3://bucket/key.flac`, `file:///x.wav`, ...).
        max_duration_s: Clips this long or longer are rejected (`audio.max_duration_s`).
        storage_options: fsspec options for URIs, e.g. `{"client_kwargs": {"endpoint_url": "http://minio:9000"}}`.

    Returns:
        `Waveform` with samples `(N,)` float32 (channel mean) at the file's own sample rate.

    Raises:
        AudioDecodeError: missing file, unknown or corrupt format, truncated data.
        EmptyAudioError: no samples. NonFiniteAudioError: NaN or inf samples.
        AudioTooLongError: duration >= max_duration_s (checked from the header, before decoding).
    """
    desc = describe_source(src)
    if isinstance(src, bytes | bytearray | memoryview):
        return _decode(io.BytesIO(bytes(src)), desc, max_duration_s)
    path = os.fspath(src)
    if "://" in path:
        return _load_uri(path, desc, max_duration_s, storage_options or {})
    if not os.path.isfile(path):
        raise AudioDecodeError(
            f"audio file not found: {path!r} (resolved to {Path(path).resolve()}); check the path or pass a URI "
            "such as s3://bucket/key"
        )
    with open(path, "rb") as f:
        return _decode(f, desc, max_duration_s)


def waveform_from_array(samples: np.ndarray, sample_rate: int, *, max_duration_s: float = 60.0) -> Waveform:
    """Validate an in-memory waveform: `(N,)` or channels-first `(C, N)` with C <= 8, float or int PCM.

    Int16/int32 samples are scaled to [-1, 1]; several channels are averaged to mono.

    Raises:
        AudioDecodeError: bad shape, dtype or sample rate. EmptyAudioError, NonFiniteAudioError,
        AudioTooLongError: as for `load_audio`.
    """
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int | np.integer) or sample_rate <= 0:
        raise AudioDecodeError(f"sample_rate must be a positive integer (Hz), found {sample_rate!r}")
    x = np.asarray(samples)
    if x.size == 0:
        raise EmptyAudioError(f"array waveform of shape {x.shape} has 0 samples; expected at least one")
    if x.ndim == 2 and x.shape[0] > MAX_CHANNELS:
        raise AudioDecodeError(
            f"expected a waveform of shape (N,) or channels-first (C, N) with C <= {MAX_CHANNELS}, found shape "
            f"{x.shape}; if the array is (N, C), transpose it"
        )
    if x.ndim not in (1, 2):
        raise AudioDecodeError(f"expected a waveform of shape (N,) or (C, N), found {x.ndim}-d shape {x.shape}")
    mono = _to_float(x, "array")
    mono = mono.mean(axis=0) if mono.ndim == 2 else mono  # (C, N) -> (N,)
    _check_duration(len(mono), int(sample_rate), max_duration_s, "array")
    return _validated(np.ascontiguousarray(mono, dtype=np.float32), int(sample_rate), "array")


def describe_source(src: object) -> str:
    """A log-safe name for an audio source: never the bytes, never URI credentials or query strings."""
    if isinstance(src, bytes | bytearray | memoryview):
        return f"<{memoryview(src).nbytes} bytes>"
    text = os.fspath(src) if isinstance(src, str | os.PathLike) else f"<{type(src).__name__}>"
    if "://" not in text:
        return text
    parts = urlsplit(text)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


# ---------------------------------------------------------------------------------------------------------------
# internals


def _load_uri(uri: str, desc: str, max_duration_s: float, storage_options: dict) -> Waveform:
    import fsspec  # only URIs need it

    try:
        f = fsspec.open(uri, "rb", **storage_options).open()
    except (FileNotFoundError, IsADirectoryError) as e:
        raise AudioDecodeError(f"audio not found at {desc} ({e}); check the URI and storage_options") from e
    except (ValueError, ImportError) as e:  # unknown protocol, or its backend is not installed
        raise AudioDecodeError(
            f"cannot open {desc}: {e}; use a local path, file://, s3:// (s3fs) or install the fsspec backend"
        ) from e
    with f:
        return _decode(f, desc, max_duration_s)


def _decode(f: IO[bytes], desc: str, max_duration_s: float) -> Waveform:
    """Header checks, then decode at most the allowed number of frames."""
    _check_wav_complete(f, desc)
    try:
        with sf.SoundFile(f) as snd:
            rate, header_frames = snd.samplerate, snd.frames
            _check_shape(rate, snd.channels, min(header_frames, math.ceil(max_duration_s * rate)), desc)
            _check_duration(header_frames, rate, max_duration_s, desc)
            limit = math.ceil(max_duration_s * rate)
            data = snd.read(frames=limit, dtype="float32", always_2d=True)  # (N, C)
            fmt = snd.format
    except sf.SoundFileError as e:
        raise AudioDecodeError(
            f"cannot decode audio from {desc}: {_sf_reason(e)}. Expected {SUPPORTED}; "
            "re-encode the file, e.g. `ffmpeg -i in out.flac`"
        ) from e
    _check_duration(len(data), rate, max_duration_s, desc)
    _check_not_truncated(len(data), header_frames, fmt, desc)
    mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]  # (N, C) -> (N,)
    return _validated(np.ascontiguousarray(mono, dtype=np.float32), rate, desc)


def _validated(mono: np.ndarray, rate: int, desc: str) -> Waveform:
    if mono.size == 0:
        raise EmptyAudioError(f"audio from {desc} has 0 samples; expected at least one (the file holds no audio)")
    if not np.isfinite(mono).all():
        bad = int((~np.isfinite(mono)).sum())
        raise NonFiniteAudioError(
            f"audio from {desc} has {bad} NaN/inf samples out of {mono.size}; expected finite values, "
            "fix the file or the producer"
        )
    return Waveform(samples=mono, sample_rate=rate)


def _check_shape(rate: int, channels: int, frames: int, desc: str) -> None:
    """Refuse, from the header, what would cost far more to decode than any usable clip (a tiny compressed file
    can declare hundreds of megabytes of samples)."""
    if not 1 <= rate <= MAX_SAMPLE_RATE:
        raise AudioDecodeError(
            f"audio from {desc} has a sample rate of {rate} Hz; expected 1 Hz to {MAX_SAMPLE_RATE} Hz, "
            "resample it (e.g. `ffmpeg -i in -ar 16000 out.flac`)", reason="bad_sample_rate")
    if channels > MAX_CHANNELS:
        raise AudioDecodeError(
            f"audio from {desc} has {channels} channels; at most {MAX_CHANNELS} are accepted, downmix it "
            "(e.g. `ffmpeg -i in -ac 1 out.flac`)", reason="too_many_channels")
    if frames * channels > MAX_DECODED_SAMPLES:
        raise AudioDecodeError(
            f"audio from {desc} would decode to {frames * channels} samples ({frames} frames x {channels} "
            f"channels), over the limit of {MAX_DECODED_SAMPLES}; downmix or resample it", reason="too_large")


def _check_duration(frames: int, rate: int, max_duration_s: float, desc: str) -> None:
    duration = frames / rate
    if duration >= max_duration_s:
        err = AudioTooLongError(
            f"audio from {desc} is {duration:.2f} s long; clips must be shorter than {max_duration_s:g} s "
            "(the paper drops clips of 60 s or more). Trim or split the clip, or raise the limit with "
            "`audio.max_duration_s`"
        )
        err.duration_s = duration  # callers that flag rather than fail record it
        raise err


def _check_not_truncated(decoded: int, header_frames: int, fmt: str, desc: str) -> None:
    slack = int(MP3_LENGTH_SLACK * header_frames) + 2 * 1152 if fmt == "MP3" else 0
    if decoded + slack < header_frames:
        raise AudioDecodeError(
            f"audio from {desc} is truncated: the {fmt} header declares {header_frames} frames but only "
            f"{decoded} could be decoded; re-fetch or re-encode the file"
        )


def _check_wav_complete(f: IO[bytes], desc: str) -> None:
    """libsndfile silently shortens a truncated WAV to the bytes present; compare the declared data size."""
    pos = f.tell()
    try:
        declared, offset, size = _wav_data_chunk(f)
    finally:
        f.seek(pos)
    # 0 and 0xFFFFFFFF are the placeholders streaming writers leave when the length is unknown.
    if declared not in (0, 0xFFFFFFFF) and offset + declared > size:
        raise AudioDecodeError(
            f"audio from {desc} is truncated: the WAV data chunk declares {declared} bytes but only "
            f"{size - offset} follow it; re-fetch or re-encode the file"
        )


def _wav_data_chunk(f: IO[bytes]) -> tuple[int, int, int]:
    """(declared data bytes, data offset, file size) of a RIFF/WAVE file; (0, 0, 0) for anything else."""
    f.seek(0)
    magic = f.read(12)
    if magic[:4] != b"RIFF" or magic[8:] != b"WAVE":
        return 0, 0, 0
    size = f.seek(0, os.SEEK_END)
    f.seek(12)  # past "RIFF" <size> "WAVE"; then walk the chunks to "data"
    while True:
        head = f.read(8)
        if len(head) < 8:
            return 0, 0, 0
        chunk_id, chunk_size = head[:4], struct.unpack("<I", head[4:])[0]
        if chunk_id == b"data":
            return chunk_size, f.tell(), size
        f.seek(chunk_size + (chunk_size & 1), os.SEEK_CUR)  # chunks are word-aligned


def _to_float(x: np.ndarray, desc: str) -> np.ndarray:
    if np.issubdtype(x.dtype, np.floating):
        return x.astype(np.float32, copy=False)
    if x.dtype in (np.int16, np.int32):
        return x.astype(np.float32) / float(2 ** (8 * x.dtype.itemsize - 1))
    raise AudioDecodeError(
        f"audio from {desc} has dtype {x.dtype}; expected float32/float64 in [-1, 1] or int16/int32 PCM"
    )


def _sf_reason(e: sf.SoundFileError) -> str:
    reason = (getattr(e, "error_string", "") or "").strip()
    return reason or "format not recognised"
