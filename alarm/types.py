"""Boundary records passed between stages, actors and deployments, and the shape legend.

Shape legend (used in comments at every reshape across the project):
    B  batch            T  frames (time steps) at the stage's own rate
    F  feature bins     N  waveform samples
    D  hidden size      L  tapped encoder layers
    S  LLM positions    V  vocabulary

Lengths are `*_lens`, int64 `(B,)`. Masks are bool `(B, T)`, True = valid. Padding is always on the right.
Records hold tensors, ints and strings only (never modules or configs holding live objects), so they cross
Ray process boundaries as plain data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Waveform:
    """Decoded mono audio. `samples` float32 `(N,)` in [-1, 1] at `sample_rate` Hz."""

    samples: np.ndarray
    sample_rate: int

    @property
    def duration_s(self) -> float:
        return len(self.samples) / self.sample_rate


@dataclass(frozen=True)
class Features:
    """A padded batch of one encoder's front-end output.

    values: `(B, T, F)` for spectrogram front-ends, `(B, N)` for raw-waveform ones (MuQ).
    lens:   `(B,)` valid frames (or samples) per item.
    """

    encoder: str
    values: torch.Tensor
    lens: torch.Tensor

    @property
    def mask(self) -> torch.Tensor:
        return lengths_to_mask(self.lens, self.values.shape[1])


@dataclass(frozen=True)
class EncoderStates:
    """Tapped hidden states of one encoder. states `(L, B, T, D)`, lens `(B,)` at the encoder's output rate."""

    encoder: str
    states: torch.Tensor
    lens: torch.Tensor


def lengths_to_mask(lens: torch.Tensor, max_len: int | None = None) -> torch.Tensor:
    """`(B,)` lengths -> bool `(B, T)` mask, True = valid."""
    T = int(lens.max().item()) if max_len is None else max_len
    return torch.arange(T, device=lens.device)[None, :] < lens[:, None]
