"""A fifth encoder family that exists only in tests: a small conv stack over 80-bin Kaldi fbank frames (100 Hz in,
stride 2, 50 Hz out). It is what adding a family takes: this module plus one record (`test_fifth_family.RECORD`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from alarm.audio.features import EDGE_PAD, FrontEnd, kaldi_fbank, kaldi_frames
from alarm.encoders import family
from alarm.encoders.base import FrozenEncoder, stack
from alarm.encoders.checkpoint import CheckpointFormat, random_state, write_folder


class ConvStack(nn.Module):
    """`(N, T, F)` fbank -> 1 + num_layers hidden states `(N, ceil(T / 2), D)`."""

    def __init__(self, cfg: dict):
        super().__init__()
        dim, self.mel_bins = int(cfg["hidden_size"]), int(cfg["num_mel_bins"])
        self.proj = nn.Conv1d(self.mel_bins, dim, kernel_size=3, stride=2, padding=1)
        self.layers = nn.ModuleList(nn.Conv1d(dim, dim, 3, padding=1) for _ in range(int(cfg["num_layers"])))

    def forward(self, x: Tensor) -> list[Tensor]:
        h = F.gelu(self.proj(x.transpose(1, 2)))  # (N, D, T/2)
        states = [h]
        for layer in self.layers:
            h = h + F.gelu(layer(h))
            states.append(h)
        return [s.transpose(1, 2) for s in states]  # (N, T/2, D) each


class FrozenConvStack(FrozenEncoder):
    name = "convstack"

    @property
    def feature_dim(self) -> int:
        return self.model.mel_bins

    def output_lengths(self, lens: Tensor) -> Tensor:
        return lens.long() // 2

    def encode(self, x: Tensor, x_lens: Tensor) -> Tensor:
        return stack(self.model(x.to(self.model.proj.weight.dtype)), self.layers)  # (L, N, chunk / 2, D)


def build(cfg: dict, layers: list[int]) -> nn.Module:
    return FrozenConvStack(ConvStack(cfg), layers)


FORMAT = CheckpointFormat(build, lambda key: key if key.startswith("model.") else None, hidden="hidden_size",
                          depth="num_layers", states_per_depth=1, model_type="convstack", features="num_mel_bins")


def convstack_features(samples: np.ndarray) -> tuple[Tensor, int]:
    """Kaldi fbank (80 bins, povey) over the waveform padded by 160 samples each side, at 100 frames/s."""
    x = torch.nn.functional.pad(torch.from_numpy(samples).double(), (EDGE_PAD, EDGE_PAD))
    fb = kaldi_fbank(x, "povey", 80).float()
    return fb, fb.shape[0]


FRONT_END = FrontEnd(convstack_features, kaldi_frames)


def build_tiny(out_dir: Path, seed: int = 0) -> None:
    cfg = family("convstack").tiny_config
    with torch.device("meta"):
        model = ConvStack(cfg)
    write_folder(Path(out_dir), dict(cfg), random_state({f"model.{k}": v for k, v in model.state_dict().items()},
                                                        seed))
