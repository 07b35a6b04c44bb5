"""Audio seconds encoded per wall second for each tiny encoder: one clip at a time vs batched.

    python bench/encode.py [--clips 16] [--batch 8] [--preset tiny] [key=value ...]

Both arms run in this process on the same clips, so each printed ratio is measured against a baseline from the
same run: encoder forward alone (best of --repeats), and end to end with the front-end (resampling from 44.1 kHz
plus features, identical in both arms). Full-size numbers need a GPU: pass --preset alarm-ca there.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from alarm.audio.features import collate, extract_features
from alarm.cli import add_config_args, config_from_args
from alarm.config import ModelConfig
from alarm.model.alarm_model import load_encoders
from alarm.types import Waveform


def clips(n: int, seed: int = 0) -> list[Waveform]:
    """Deterministic test clips of 2-12 s at 44.1 kHz (so every encoder resamples from the original)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        sr, dur = 44100, float(rng.uniform(2, 12))
        t = np.arange(int(sr * dur)) / sr
        x = 0.3 * np.sin(2 * np.pi * rng.uniform(100, 4000) * t) + 0.05 * rng.standard_normal(len(t))
        out.append(Waveform(x.astype(np.float32), sr))
    return out


def featurize(name: str, waves: list[Waveform], q: str, feature_dim: int | None) -> tuple[list, float]:
    t0 = time.perf_counter()
    items = [extract_features(name, w, q, feature_dim) for w in waves]
    return items, time.perf_counter() - t0


def encode(encoder, name: str, items: list, batch: int) -> float:
    """Seconds of wall time to encode pre-computed features in batches of `batch` (collate included)."""
    t0 = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(items), batch):
            f = collate(name, items[i : i + batch])
            encoder(f.values, f.lens)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_config_args(parser, "model", "tiny", ModelConfig)
    parser.add_argument("--clips", type=int, default=16)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3, help="best of N timings per arm")
    args = parser.parse_args()
    cfg = config_from_args(args, ModelConfig, "model")
    torch.set_num_threads(args.threads)
    waves = clips(args.clips)
    audio_s = sum(w.duration_s for w in waves)
    encoders = load_encoders(cfg)
    q = cfg.audio.resample_quality
    print(f"preset={cfg.name} clips={len(waves)} audio={audio_s:.1f}s batch={args.batch} threads={args.threads}")
    print(f"{'encoder':<9} {'features':>9} {'encode x1':>10} {'encode xB':>10} {'ratio':>6} "
          f"{'end-to-end x1':>14} {'xB':>7} {'ratio':>6}   (audio s per wall s)")
    for name, enc in encoders.items():
        items, _ = featurize(name, waves[:2], q, enc.feature_dim)
        encode(enc, name, items, 2)  # warm-up: resampler kernels, allocator
        items, t_feat = featurize(name, waves, q, enc.feature_dim)
        t1 = min(encode(enc, name, items, 1) for _ in range(args.repeats))
        tb = min(encode(enc, name, items, args.batch) for _ in range(args.repeats))
        e1, eb = audio_s / (t_feat + t1), audio_s / (t_feat + tb)
        print(f"{name:<9} {audio_s / t_feat:>9.1f} {audio_s / t1:>10.1f} {audio_s / tb:>10.1f} {t1 / tb:>5.2f}x "
              f"{e1:>14.1f} {eb:>7.1f} {eb / e1:>5.2f}x")

if __name__ == "__main__":
    main()
