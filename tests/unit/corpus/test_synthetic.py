"""The embedded synthetic source: determinism, bounds, decodability, every sound kind, metadata per family."""

import json
import subprocess
import sys
import typing
from pathlib import Path

import numpy as np
import pytest

from alarm.audio.decode import load_audio
from alarm.config import Family, SyntheticSourceConfig
from alarm.corpus.synthetic import FAMILIES, KINDS, synthetic_clip, synthetic_row, synthetic_rows

ROOT = Path(__file__).resolve().parents[3]
ROW_KEYS = {"key", "source", "item_id", "audio_uri", "audio_bytes", "metadata", "family", "instruction",
            "prompt_given", "row_error"}


@pytest.fixture(scope="module")
def cfg():
    return SyntheticSourceConfig(name="synth", num_clips=48, seed=3, min_duration_s=0.5, max_duration_s=2.5)


@pytest.fixture(scope="module")
def rows(cfg):
    return list(synthetic_rows(cfg))


@pytest.fixture(scope="module")
def clips(cfg):
    return [synthetic_clip(cfg, i) for i in range(cfg.num_clips)]


def test_rows_follow_the_source_contract(cfg, rows):
    assert len(rows) == cfg.num_clips
    for i, row in enumerate(rows):
        assert set(row) == ROW_KEYS
        assert row["item_id"] == f"{i:06d}" and row["key"] == f"synth/{i:06d}" and row["source"] == "synth"
        assert row["audio_uri"] is None and isinstance(row["audio_bytes"], bytes)
        assert row["instruction"] is False and row["prompt_given"] is None and row["row_error"] is None
        assert isinstance(json.loads(row["metadata"]), dict)


def test_same_seed_gives_identical_bytes_and_metadata(cfg, rows):
    again = [synthetic_row(cfg, i) for i in reversed(range(cfg.num_clips))][::-1]  # order must not matter
    assert again == rows


def test_different_seed_or_index_gives_different_clips(cfg, rows):
    other = list(synthetic_rows(cfg.model_copy(update={"seed": 4})))
    assert all(a["audio_bytes"] != b["audio_bytes"] for a, b in zip(rows, other, strict=True))
    assert len({r["audio_bytes"] for r in rows}) == len(rows)


def test_clips_decode_at_the_configured_rate_within_the_duration_bounds(cfg, rows):
    for row in rows:
        wave = load_audio(row["audio_bytes"])
        assert wave.sample_rate == cfg.sample_rate
        assert cfg.min_duration_s - 1 / cfg.sample_rate <= wave.duration_s <= cfg.max_duration_s
        assert np.isfinite(wave.samples).all() and 0 < np.abs(wave.samples).max() < 1


def test_other_sample_rate_and_very_short_clips_render():
    cfg = SyntheticSourceConfig(num_clips=8, sample_rate=22050, min_duration_s=0.02, max_duration_s=0.05)
    for row in synthetic_rows(cfg):
        wave = load_audio(row["audio_bytes"])
        assert wave.sample_rate == 22050 and 0.02 - 1 / 22050 <= wave.duration_s <= 0.05


def test_every_kind_and_loudness_appears_in_48_clips(clips):
    assert {c.kind for c in clips} == set(KINDS)
    assert all(sum(c.kind == k for c in clips[j:j + 8]) == 1 for j in range(0, 48, 8) for k in KINDS)
    assert {c.metadata["loudness"] for c in clips} == {"quiet", "moderate", "loud"}


def test_metadata_matches_its_family(clips):
    families = set(typing.get_args(Family))
    for c in clips:
        md = c.metadata
        assert c.family == FAMILIES[c.kind] and c.family in families
        assert all(isinstance(md[k], str) and md[k] for k in ("label", "caption"))
        assert list(md)[:2] == ["label", "caption"]
        duration = len(c.samples) / c.sample_rate
        if c.kind == "tone":
            assert md["instrument"] == "sine tone" and md["note"][0] in "ABCDEFG"
            assert 0 <= md["midi pitch"] <= 127
        elif c.kind == "chord":
            assert md["chord"].endswith(("major triad", "minor triad")) and len(md["notes"]) == 3
        elif c.kind == "noise":
            assert md["label"] == f"{md['noise colour']} noise"
        elif c.kind == "beeps":
            assert len(md["beep times in seconds"]) == md["beeps"]
            assert md["caption"].startswith("Silence with")
            assert all(0 <= t < duration for t in md["beep times in seconds"])
        elif c.kind == "turns":
            turns = md["turns"]
            assert len(turns) >= 2 and {t["speaker"] for t in turns} == {"A", "B"}
            assert all(a["speaker"] != b["speaker"] for a, b in zip(turns, turns[1:], strict=False))
            assert all(0 <= t["start"] < t["end"] <= round(duration, 2) for t in turns)
            assert {t["text"] for t in turns} == {"[low hum]", "[high hum]"}


def test_metadata_renders_with_the_describers(clips):
    describe = pytest.importorskip("alarm.corpus.describe").describe
    for c in clips:
        text = describe(c.metadata, len(c.samples) / c.sample_rate, c.family)
        assert text.startswith("[00:00-")
        if c.kind == "turns":
            assert "the first speaker] [" in text and "the second speaker" in text


def _peak_hz(x: np.ndarray, sr: int) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / sr)[spec.argmax()])


def test_sounds_match_their_metadata(clips):
    sr = clips[0].sample_rate
    for c in clips:
        md, x = c.metadata, c.samples.astype(np.float64)
        if c.kind in ("tone", "tremolo"):
            assert abs(_peak_hz(x, sr) - md["frequency hz"]) < 3
        elif c.kind == "sweep":
            q = len(x) // 4
            first, last = _peak_hz(x[:q], sr), _peak_hz(x[-q:], sr)
            assert (last > first) == (md["direction"] == "upward")
        elif c.kind == "noise":
            spec = np.abs(np.fft.rfft(x)) ** 2
            f = np.fft.rfftfreq(len(x), 1 / sr)
            low, high = spec[(f > 50) & (f < 500)].mean(), spec[(f > 2000) & (f < 6000)].mean()
            ratio = {"white": (0.3, 3), "pink": (3, 100), "brown": (100, np.inf)}[md["noise colour"]]
            assert ratio[0] < low / high < ratio[1], (md["noise colour"], low / high)


def test_corpus_readers_import_without_torch():
    code = """
import sys, importlib.abc
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split('.')[0] in ('torch', 'ray', 'vllm', 'grpc', 'datasets', 'transformers'):
            raise ImportError('blocked import: ' + name)
sys.meta_path.insert(0, Block())
import alarm.corpus.synthetic, alarm.corpus.manifest
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
