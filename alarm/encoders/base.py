"""What every frozen encoder shares: the input check, chunk-and-stitch, freezing, and the move to the weights' device.

Every encoder maps padded features to the tapped hidden states, as the ALARM reference code does: fixed
chunks encoded independently (no context across chunks), concatenated along time, trimmed to the longest item.

    states, out_lens = encoder(feats, lens)   # (L, B, T_out, D), (B,) int64
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from alarm.encoders import family


@runtime_checkable
class Encoder(Protocol):
    """What every encoder module provides (see the module docstring for shapes)."""

    layers: list[int]
    feature_dim: int | None  # F of the (B, T, F) inputs its checkpoint takes; None for raw waveforms (B, N)

    def __call__(self, feats: Tensor, lens: Tensor) -> tuple[Tensor, Tensor]: ...

    def output_lengths(self, lens: Tensor) -> Tensor: ...


class FrozenEncoder(nn.Module):
    """A frozen checkpoint module run chunk by chunk. A family subclasses it and defines `name` (its registry
    key), `feature_dim`, `output_lengths` and `encode` (one batch of chunks -> the tapped states).

    Args:
        model: the checkpoint's module (frozen here: no gradients, eval mode even under `train()`).
        layers: hidden-state indices to return, in this order.
        chunk: input frames (samples) per chunk; default: the family record's.
    """

    name: str

    def __init__(self, model: nn.Module, layers: list[int], chunk: int | None = None):
        super().__init__()
        self.model, self.layers = model, list(layers)
        self.chunk = chunk if chunk is not None else family(self.name).chunk
        freeze(self)

    def train(self, mode: bool = True) -> FrozenEncoder:
        return super().train(False)

    @property
    def feature_dim(self) -> int | None:
        raise NotImplementedError

    def output_lengths(self, lens: Tensor) -> Tensor:
        """`(B,)` valid input frames (samples) -> `(B,)` int64 valid output frames."""
        raise NotImplementedError

    def encode(self, x: Tensor, x_lens: Tensor) -> Tensor:
        """`(N, chunk, ...)` chunks and `(N,)` valid frames per chunk -> `(L, N, T_c, D)` tapped states."""
        raise NotImplementedError

    @torch.no_grad()
    def forward(self, feats: Tensor, lens: Tensor) -> tuple[Tensor, Tensor]:
        feats, lens = to_module_device(self, feats, lens)
        check_input(self.name, feats, lens, self.chunk, self.feature_dim)
        return encode_chunked(self.encode, feats, lens, self.chunk, self.output_lengths(lens))


def check_input(kind: str, feats: Tensor, lens: Tensor, chunk: int, feature_dim: int | None) -> None:
    """Validate a padded batch at the encoder boundary (ValueError naming expected, found and the fix)."""
    want = 2 if feature_dim is None else 3
    shape = "(B, N) samples" if feature_dim is None else f"(B, T, {feature_dim})"
    if feats.dim() != want or (feature_dim is not None and feats.shape[-1] != feature_dim):
        fix = "" if feats.dim() != want else (  # the right rank, the wrong width
            f"; its checkpoint takes {feature_dim}-wide features: extract them with "
            f"extract_features({kind!r}, wave, feature_dim=encoder.feature_dim)")
        raise ValueError(f"{kind} encoder expects features {shape}, found {tuple(feats.shape)}{fix}")
    if feats.shape[1] == 0 or feats.shape[1] % chunk:
        raise ValueError(
            f"{kind} encoder expects the time axis padded to a multiple of {chunk}, found {feats.shape[1]}; "
            f"right-pad the batch to {max(1, math.ceil(feats.shape[1] / chunk)) * chunk}"
        )
    if lens.shape != (feats.shape[0],) or int(lens.min()) < 0 or int(lens.max()) > feats.shape[1]:
        raise ValueError(f"{kind} encoder expects lens (B,) in [0, {feats.shape[1]}], found {lens.tolist()}")


def encode_chunked(
    encode: Callable[[Tensor, Tensor], Tensor], feats: Tensor, lens: Tensor, chunk: int, out_lens: Tensor
) -> tuple[Tensor, Tensor]:
    """Run `encode` on every chunk of every item in one call and stitch the outputs back together.

    As the reference: chunks encoded independently, concatenated along time, trimmed to out_lens.max().
    Chunks past the longest item hold only padding; they are skipped (their outputs would be trimmed anyway).

    Args:
        encode: `(B·n, chunk, ...)` chunk batch, `(B·n,)` valid frames per chunk -> `(L, B·n, T_c, D)`.
        feats: `(B, T, F)` or `(B, N)`, T a multiple of `chunk`.
        lens: `(B,)` valid input frames.
        chunk: input frames per chunk.
        out_lens: `(B,)` valid output frames.
    """
    B = feats.shape[0]
    n = max(1, math.ceil(int(lens.max()) / chunk))
    x = feats[:, : n * chunk].reshape(B * n, chunk, *feats.shape[2:])  # (B·n, C, F); item b chunk j: b·n+j
    starts = torch.arange(n, device=lens.device) * chunk
    x_lens = (lens[:, None] - starts[None, :]).clamp(0, chunk).reshape(B * n)  # (B·n,)
    states = encode(x, x_lens)  # (L, B·n, T_c, D)
    L, _, Tc, D = states.shape
    states = states.reshape(L, B, n * Tc, D)[:, :, : int(out_lens.max())]  # (L, B, T_out, D)
    return states, out_lens


def to_module_device(module: nn.Module, feats: Tensor, lens: Tensor) -> tuple[Tensor, Tensor]:
    """Features usually arrive on the CPU from the front-end; move them next to the weights."""
    device = next(module.parameters()).device
    return feats.to(device), lens.to(device)


def freeze(module: nn.Module) -> nn.Module:
    """requires_grad False everywhere and eval mode (`FrozenEncoder.train` keeps it there)."""
    for p in module.parameters():
        p.requires_grad_(False)
    return module.eval()


def stack(hidden: tuple[Tensor, ...] | list, layers: list[int]) -> Tensor:
    """The tapped states of a hidden-states sequence, in the order of `layers`: `(L, N, T_c, D)`."""
    return torch.stack([hidden[i] for i in layers])
