"""The embedded default source: deterministic clips of distinguishable sounds, with metadata that describes them.

    rows = synthetic_rows(SyntheticSourceConfig(num_clips=48, seed=0))   # or synthetic_row(cfg, i) per index

Clip `i` is a pure function of (seed, i): its own numpy Generator renders it, so Ray can generate any index range
in parallel and a rerun yields byte-identical FLAC. Every block of 8 consecutive indices holds each of the 8 sound
kinds once (in a seeded order), so the describer families music, labels, caption and turns are all exercised.
Imports numpy and soundfile only (no torch).
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import soundfile as sf

from alarm.config import SyntheticSourceConfig
from alarm.errors import ConfigError

KINDS = ("tone", "chord", "noise", "clicks", "sweep", "tremolo", "beeps", "turns")
FAMILIES = {"tone": "music", "chord": "music", "noise": "labels", "clicks": "caption", "sweep": "caption",
            "tremolo": "music", "beeps": "caption", "turns": "turns"}
NOTE_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
# (word, peak dBFS range): the final peak level of the clip.
LOUDNESS = (("quiet", -30.0, -22.0), ("moderate", -19.0, -12.0), ("loud", -8.0, -3.0))
NOISE_SNR_DB = (40.0, 55.0)  # the "little noise" under every clip, relative to its peak
FADE_S = 0.01  # fade in/out so clips do not start or end with a click


@dataclass(frozen=True)
class SyntheticClip:
    """One rendered clip: samples `(N,)` float32 with peak <= 1, and metadata in describer order."""

    kind: str
    family: str
    samples: np.ndarray
    sample_rate: int
    metadata: dict


def synthetic_rows(cfg: SyntheticSourceConfig) -> Iterator[dict]:
    """All `cfg.num_clips` source rows, in index order."""
    for index in range(cfg.num_clips):
        yield synthetic_row(cfg, index)


def synthetic_row(cfg: SyntheticSourceConfig, index: int) -> dict:
    """The source row for clip `index`: FLAC bytes at `cfg.sample_rate` plus its metadata (JSON)."""
    clip = synthetic_clip(cfg, index)
    item_id = f"{index:06d}"
    return {
        "key": f"{cfg.name}/{item_id}",
        "source": cfg.name,
        "item_id": item_id,
        "audio_uri": None,
        "audio_bytes": encode_flac(clip.samples, clip.sample_rate),
        "metadata": json.dumps(clip.metadata, ensure_ascii=False),
        "family": clip.family,
        "instruction": False,
        "prompt_given": None,
        "row_error": None,
    }


def synthetic_clip(cfg: SyntheticSourceConfig, index: int) -> SyntheticClip:
    """Render clip `index` of the source (no encoding)."""
    if index < 0:
        raise ValueError(f"clip index must be >= 0, got {index}")
    if cfg.min_duration_s > cfg.max_duration_s:
        raise ConfigError(f"source {cfg.name!r}: min_duration_s={cfg.min_duration_s} > max_duration_s="
                          f"{cfg.max_duration_s}; swap them or widen the range")
    sr = cfg.sample_rate
    kind = kind_of(cfg.seed, index)
    rng = np.random.default_rng([0, cfg.seed % 2**64, index])
    n = round(rng.uniform(cfg.min_duration_s, cfg.max_duration_s) * sr)
    n = max(1, min(n, math.floor(cfg.max_duration_s * sr)))  # rounding must not step past the bound
    loudness, lo, hi = LOUDNESS[rng.integers(len(LOUDNESS))]
    t = np.arange(n) / sr  # (N,) seconds
    signal, label, caption, attrs = _RENDERERS[kind](rng, t, sr, loudness)
    samples = _finish(signal, rng, sr, peak=10 ** (rng.uniform(lo, hi) / 20))
    metadata = {"label": label, "caption": caption, **attrs, "loudness": loudness}
    return SyntheticClip(kind, FAMILIES[kind], samples, sr, metadata)


def kind_of(seed: int, index: int) -> str:
    """The sound kind of clip `index`: each block of 8 indices is a seeded permutation of KINDS."""
    order = np.random.default_rng([1, seed % 2**64, index // len(KINDS)]).permutation(len(KINDS))
    return KINDS[order[index % len(KINDS)]]


def encode_flac(samples: np.ndarray, sample_rate: int) -> bytes:
    """16-bit FLAC in memory (deterministic: same samples -> same bytes)."""
    buf = io.BytesIO()
    sf.write(buf, samples, sample_rate, format="FLAC", subtype="PCM_16")
    return buf.getvalue()


def note_name(midi: int) -> str:
    """MIDI pitch -> scientific pitch name (69 -> 'A4', 60 -> 'C4')."""
    return f"{NOTE_NAMES[midi % 12]}{midi // 12 - 1}"


def midi_hz(midi: int) -> float:
    return 440.0 * 2 ** ((midi - 69) / 12)


# ---------------------------------------------------------------------------------------------------------------
# renderers: (rng, t (N,) seconds, sample rate, loudness word) -> (signal (N,), label, caption, attributes)


def _tone(rng, t, sr, loudness):
    midi = int(rng.integers(45, 85))  # A2 .. C6
    f, note = midi_hz(midi), note_name(midi)
    caption = _pick(rng, f"A {loudness} sine tone holds a steady {note} for the whole clip",
                    f"A pure, {loudness} electronic tone sounds the note {note} without wavering")
    attrs = {"instrument": "sine tone", "note": note, "frequency hz": _num(f), "midi pitch": midi}
    return np.sin(2 * np.pi * f * t), f"sine tone {note}", caption, attrs


def _chord(rng, t, sr, loudness):
    root = int(rng.integers(48, 72))  # C3 .. B4
    quality = ("major", "minor")[rng.integers(2)]
    midis = (root, root + (4 if quality == "major" else 3), root + 7)
    name = f"{NOTE_NAMES[root % 12]} {quality}"
    notes = [note_name(m) for m in midis]
    x = sum(np.sin(2 * np.pi * midi_hz(m) * t + rng.uniform(0, 2 * np.pi)) for m in midis)
    mood = "bright" if quality == "major" else "sombre"
    caption = _pick(rng, f"A {loudness}, {mood} {name} chord of three sine tones rings steadily",
                    f"Three pure tones sound together as a sustained {name} triad")
    attrs = {"instrument": "sine tones", "chord": f"{name} triad", "notes": notes,
             "root frequency hz": _num(midi_hz(root))}
    return x, f"{name} chord", caption, attrs


_NOISE = {  # colour -> (spectral exponent of the power, slope dB/octave, what it sounds like)
    "white": (0.0, 0, "a hissing, untuned radio"),
    "pink": (1.0, -3, "rain pattering on a window"),
    "brown": (2.0, -6, "a distant, rumbling waterfall"),
}


def _noise(rng, t, sr, loudness):
    colour = ("white", "pink", "brown")[rng.integers(3)]
    exponent, slope, like = _NOISE[colour]
    n = len(t)
    spec = np.fft.rfft(rng.standard_normal(n))  # shape white noise in the frequency domain
    f = np.fft.rfftfreq(n, 1 / sr)
    gain = np.zeros_like(f)
    gain[1:] = (f[1:] / 1000.0) ** (-exponent / 2)
    x = np.fft.irfft(spec * gain, n)
    caption = f"Steady {colour} noise fills the clip, like {like}"
    attrs = {"noise colour": colour, "spectral slope db per octave": slope}
    return x, f"{colour} noise", caption, attrs


def _clicks(rng, t, sr, loudness):
    rate = int(rng.choice([2, 3, 4, 5, 8, 10, 12, 16, 20]))
    dur = len(t) / sr
    offset = rng.uniform(0, min(0.5 / rate, dur / 2))
    onsets = offset + np.arange(max(1, math.ceil((dur - offset) * rate))) / rate
    onsets = onsets[onsets < dur]
    width = max(1, round(0.004 * sr))
    burst = rng.standard_normal(width) * np.exp(-np.arange(width) / (width / 5))  # 4 ms decaying click
    x = np.zeros(len(t))
    for i in (onsets * sr).astype(int):
        seg = x[i:i + width]
        seg += burst[: len(seg)]
    caption = _pick(rng, f"A regular train of sharp clicks ticks at {rate} clicks per second",
                    f"Crisp clicks repeat evenly, {rate} every second, like a fast metronome")
    attrs = {"clicks per second": rate, "number of clicks": len(onsets)}
    return x, "click train", caption, attrs


def _sweep(rng, t, sr, loudness):
    top = min(4000.0, 0.45 * sr)
    lo = float(rng.integers(max(1, int(top / 40)), max(2, int(top / 4))))  # 100 .. 1000 Hz at 16 kHz
    hi = float(rng.integers(int(2 * lo), int(top) + 1))
    up = bool(rng.integers(2))
    f0, f1 = (lo, hi) if up else (hi, lo)
    T = len(t) / sr
    k = math.log(f1 / f0)
    phase = 2 * np.pi * f0 * T / k * (np.exp(k * t / T) - 1)  # exponential sweep f(t) = f0 (f1/f0)^(t/T)
    direction = "upward" if up else "downward"
    verb = "rises" if up else "falls"
    caption = _pick(rng, f"A sine tone glides {direction} from {f0:.0f} Hz to {f1:.0f} Hz, like a siren",
                    f"A smooth whistle {verb} in pitch from {f0:.0f} Hz to {f1:.0f} Hz")
    attrs = {"direction": direction, "start frequency hz": int(f0), "end frequency hz": int(f1),
             "sweep": "logarithmic"}
    return np.sin(phase), f"{direction} frequency sweep", caption, attrs


def _tremolo(rng, t, sr, loudness):
    midi = int(rng.integers(52, 80))
    f, note = midi_hz(midi), note_name(midi)
    rate = int(rng.integers(2, 11))
    depth = float(rng.uniform(0.3, 0.9))
    x = np.sin(2 * np.pi * f * t) * (1 - depth * (0.5 - 0.5 * np.cos(2 * np.pi * rate * t)))
    word = "deep" if depth >= 0.6 else "shallow"
    caption = _pick(rng, f"{_article(note).title()} {note} sine tone pulses with a {word} tremolo, {rate} beats "
                         "a second",
                    f"A wavering tone throbs in volume at {rate} Hz, holding the note {note}")
    attrs = {"instrument": "sine tone with tremolo", "note": note, "frequency hz": _num(f),
             "tremolo rate hz": rate, "tremolo depth": word}
    return x, "tremolo tone", caption, attrs


def _beeps(rng, t, sr, loudness):
    dur = len(t) / sr
    count = int(min(rng.integers(1, 6), max(1, math.floor(dur / 0.4))))
    freq = int(rng.choice([500, 750, 1000, 1500, 2000]))
    freq = min(freq, int(0.45 * sr))
    slot = dur / count
    length = min(float(rng.uniform(0.08, 0.2)), slot / 2)
    onsets = [round(i * slot + rng.uniform(0, slot - length), 2) for i in range(count)]
    x = np.zeros(len(t))
    m = max(1, round(length * sr))
    beep = np.sin(2 * np.pi * freq * np.arange(m) / sr) * _fade(m, sr, 0.005)
    for onset in onsets:
        i = min(round(onset * sr), len(t) - 1)
        seg = x[i:i + m]
        seg += beep[: len(seg)]
    what = "a single short beep" if count == 1 else f"{count} short beeps"
    caption = f"Silence with {what}"
    attrs = {"beeps": count, "beep times in seconds": onsets, "beep frequency hz": freq,
             "beep length in seconds": round(length, 2)}
    return x, "beeps", caption, attrs


_VOICES = {"A": ((90, 140), "[low hum]"), "B": ((240, 400), "[high hum]")}


def _turns(rng, t, sr, loudness):
    n, dur = len(t), len(t) / sr
    k = int(max(2, min(rng.integers(2, 7), math.floor(dur / 1.2))))  # turns of ~1 s or more
    bounds = np.concatenate([[0.0], np.cumsum(rng.dirichlet(np.full(k, 4.0)))]) * dur
    first = ("A", "B")[rng.integers(2)]
    f0 = {speaker: float(rng.uniform(*pitch)) for speaker, (pitch, _) in _VOICES.items()}
    x = np.zeros(n)
    turns = []
    for j in range(k):
        speaker = first if j % 2 == 0 else ("B" if first == "A" else "A")
        start, end = bounds[j], bounds[j + 1]
        if j < k - 1:
            end -= min(0.15, 0.2 * (end - start))  # a short pause between turns; the last one ends the clip
        i0 = min(round(start * sr), n - 1)
        i1 = max(i0 + 1, min(n, round(end * sr)))
        tt = t[i0:i1] - t[i0]
        voice = sum(a * np.sin(2 * np.pi * h * f0[speaker] * tt) for h, a in ((1, 1.0), (2, 0.5), (3, 0.25)))
        syllables = 0.6 + 0.4 * np.sin(2 * np.pi * 4.0 * tt)  # ~4 Hz syllable-like envelope
        x[i0:i1] = voice * syllables * _fade(i1 - i0, sr, FADE_S)
        turns.append({"speaker": speaker, "start": round(start, 2), "end": round(min(end, dur), 2),
                      "text": _VOICES[speaker][1]})
    caption = f"Two voices, a low hum and a high hum, take {k} turns talking back and forth"
    attrs = {"speakers": 2, "turns": turns}
    return x, "two alternating tone voices", caption, attrs


_RENDERERS: dict[str, Callable] = {"tone": _tone, "chord": _chord, "noise": _noise, "clicks": _clicks,
                                   "sweep": _sweep, "tremolo": _tremolo, "beeps": _beeps, "turns": _turns}


# ---------------------------------------------------------------------------------------------------------------
# shared


def _finish(x: np.ndarray, rng: np.random.Generator, sr: int, peak: float) -> np.ndarray:
    """Normalise, add a little noise, fade the edges, scale to `peak` (< 1: never clips)."""
    x = _normalised(np.asarray(x, dtype=np.float64))
    x = x + rng.standard_normal(len(x)) * 10 ** (-rng.uniform(*NOISE_SNR_DB) / 20)
    x *= _fade(len(x), sr, FADE_S)
    return (_normalised(x) * peak).astype(np.float32)


def _normalised(x: np.ndarray) -> np.ndarray:
    top = float(np.max(np.abs(x))) if len(x) else 0.0
    return x / top if top > 0 else x


def _fade(n: int, sr: int, fade_s: float) -> np.ndarray:
    """(n,) gain: linear ramps of `fade_s` (at most a quarter of the clip) at both ends."""
    m = min(round(fade_s * sr), n // 4)
    gain = np.ones(n)
    if m > 0:
        ramp = (np.arange(m) + 1) / (m + 1)
        gain[:m] = ramp
        gain[n - m:] = ramp[::-1]
    return gain


def _pick(rng: np.random.Generator, *options: str) -> str:
    return options[rng.integers(len(options))]


def _article(word: str) -> str:
    """'a' or 'an' by the sound of the first letter (an A4, an F# major, a C4)."""
    return "an" if word[0] in "aeiouAEFHILMNORSX" else "a"


def _num(x: float) -> int | float:
    """Round to 2 decimals; integral values become ints (440.0 -> 440) so they render as people write them."""
    r = round(float(x), 2)
    return int(r) if r.is_integer() else r
