"""Audio seconds encoded per wall second for each tiny encoder: one clip at a time vs batched.

    python bench/encode.py [--clips 16] [--batch 8] [--preset tiny] [key=value ...]

Both arms run in this process on the same clips (features + frozen encoder forward), so the printed ratio is
measured against a baseline from the same run. Full-size numbers need a GPU: pass --preset alarm-ca there.
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


def run(encoder, name: str, waves: list[Waveform], batch: int, q: str) -> float:
    """Seconds of wall time to featurize and encode `waves` in batches of `batch`."""
    t0 = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(waves), batch):
            f = collate(name, [extract_features(name, w, q) for w in waves[i : i + batch]])
            encoder(f.values, f.lens)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_config_args(parser, "model", "tiny")
    parser.add_argument("--clips", type=int, default=16)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    cfg = config_from_args(args, ModelConfig, "model")
    torch.set_num_threads(args.threads)
    waves = clips(args.clips)
    audio_s = sum(w.duration_s for w in waves)
    encoders = load_encoders(cfg)
    q = cfg.audio.resample_quality
    print(f"preset={cfg.name} clips={len(waves)} audio={audio_s:.1f}s batch={args.batch} threads={args.threads}")
    print(f"{'encoder':<9} {'one-at-a-time':>14} {'batched':>10} {'ratio':>7}   (audio s per wall s)")
    for name, enc in encoders.items():
        run(enc, name, waves[:2], 2, q)  # warm-up: resampler kernels, allocator
        single = audio_s / run(enc, name, waves, 1, q)
        batched = audio_s / run(enc, name, waves, args.batch, q)
        print(f"{name:<9} {single:>14.1f} {batched:>10.1f} {batched / single:>6.2f}x")


if __name__ == "__main__":
    main()
