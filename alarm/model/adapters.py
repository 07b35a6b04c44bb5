"""Per-encoder layer mixing and adapters (downsample | mlp | identity), with the ADAPTERS builder registry.

An adapter maps one encoder's layer-mixed states `(B, T, D_enc)` plus lengths `(B,)` to `(B, T', D_out)` plus new
lengths. Frames past an item's length are zeroed before every convolution and in the output, and BatchNorm
statistics are taken over valid frames only, so an item's output never depends on how far the batch is padded.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import nn

from alarm.config import DownsampleAdapterConfig, IdentityAdapterConfig, MLPAdapterConfig
from alarm.types import lengths_to_mask


@runtime_checkable
class Adapter(Protocol):
    """What AudioAdapter needs from an adapter. `out_dim` is D_out (D_llm, or D_enc for identity)."""

    out_dim: int

    def __call__(self, x: torch.Tensor, lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...

    def output_lengths(self, lens: torch.Tensor) -> torch.Tensor: ...


def zero_padding(x: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
    """`x` (B, T, D) with frames at or past `lens` (B,) set to zero."""
    mask = lengths_to_mask(lens, x.shape[1])  # (B, T)
    return x * mask[..., None].to(x.dtype)


# ---------------------------------------------------------------------------------------------------------------
# layer mixing


class LayerMix(nn.Module):
    """Softmax-weighted sum of the tapped hidden states: one fp32 logit per layer, initialised to 0.

    Shapes:
        states (L, B, T, D) -> (B, T, D)
    """

    def __init__(self, num_layers: int):
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(num_layers, dtype=torch.float32))

    def weights(self) -> torch.Tensor:
        return self.logits.float().softmax(0)  # (L,)

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        if states.dim() != 4 or states.shape[0] != self.logits.numel():
            raise ValueError(
                f"LayerMix expects stacked states (L={self.logits.numel()}, B, T, D), found {tuple(states.shape)}; "
                "the number of tapped layers must equal len(encoders.<enc>.layers)"
            )
        w = self.weights().to(states.dtype)
        return torch.einsum("l,lbtd->btd", w, states)  # (B, T, D)


# ---------------------------------------------------------------------------------------------------------------
# normalisation over channels of (B, C, T), padding-aware


class MaskedBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm1d whose training statistics come from valid frames only.

    Parameter and buffer names equal nn.BatchNorm1d's (weight, bias, running_mean, running_var,
    num_batches_tracked), so state dicts are interchangeable. In eval mode (and for frozen adapters) it is plain
    BatchNorm with running statistics, which is per-frame and cannot leak across padding.
    """

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:  # x (B, C, T)
        use_batch_stats = self.training or not self.track_running_stats
        if mask is None or not use_batch_stats:
            return super().forward(x)
        xf = x.float()
        m = mask[:, None, :].to(xf.dtype)  # (B, 1, T)
        n = m.sum().clamp(min=1.0)
        mean = (xf * m).sum((0, 2)) / n  # (C,)
        var = ((xf - mean[None, :, None]).square() * m).sum((0, 2)) / n  # biased, as BatchNorm normalises
        if self.training and self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                f = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                unbiased = var * n / (n - 1).clamp(min=1.0)
                self.running_mean.mul_(1 - f).add_(mean, alpha=f)
                self.running_var.mul_(1 - f).add_(unbiased, alpha=f)
        y = (xf - mean[None, :, None]) * torch.rsqrt(var + self.eps)[None, :, None]
        if self.affine:
            y = y * self.weight[None, :, None] + self.bias[None, :, None]
        return y.to(x.dtype)


class ChannelLayerNorm(nn.LayerNorm):
    """LayerNorm over the channels of a (B, C, T) tensor (per frame, so padding cannot leak)."""

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:  # x (B, C, T)
        return super().forward(x.transpose(1, 2)).transpose(1, 2)


def _norm(kind: str, channels: int) -> nn.Module:
    return MaskedBatchNorm1d(channels) if kind == "batch" else ChannelLayerNorm(channels)


# ---------------------------------------------------------------------------------------------------------------
# adapters


class Downsample(nn.Module):
    """Convolutional ÷2 downsampler: 50 Hz encoder frames -> 25 Hz LLM tokens.

    input_proj (only when d_enc != width) -> zero-pad T to even -> Conv1d(width→2·width, k3 s1 p1) -> GELU ->
    Norm -> Conv1d(2·width→width, k4 s2 p1) -> GELU -> Norm -> llm_proj.

    Length rule: on T_even frames conv2 yields T_even / 2 frames, and output i reads inputs 2i-1 … 2i+2. An item
    with n valid frames therefore has `ceil(n / 2) = (n + 1) // 2` outputs; for odd n the last one reads one zero
    frame, exactly as the same clip alone (padded to even) would. 30 s Whisper: 1500 -> 750 (25 tokens/s).
    The reference does not re-zero padding between the convolutions; for items that fill the batch with an even
    length (e.g. whole 30 s chunks) the two agree exactly.

    Shapes:
        x (B, T, d_enc), lens (B,) -> (B, ceil(T/2), d_llm), (B,)
    """

    def __init__(self, d_enc: int, width: int, d_llm: int, norm: str = "layer"):
        super().__init__()
        self.d_enc, self.out_dim = d_enc, d_llm
        self.input_proj = nn.Linear(d_enc, width) if d_enc != width else None
        self.conv1 = nn.Conv1d(width, 2 * width, kernel_size=3, stride=1, padding=1)
        self.norm1 = _norm(norm, 2 * width)
        self.conv2 = nn.Conv1d(2 * width, width, kernel_size=4, stride=2, padding=1)
        self.norm2 = _norm(norm, width)
        self.llm_proj = nn.Linear(width, d_llm)

    def output_lengths(self, lens: torch.Tensor) -> torch.Tensor:
        return (lens + 1) // 2

    def forward(self, x: torch.Tensor, lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.input_proj is not None:
            x = self.input_proj(x)  # (B, T, width)
        x = F.pad(x, (0, 0, 0, x.shape[1] % 2))  # (B, T_even, width)
        mask = lengths_to_mask(lens, x.shape[1])  # (B, T_even)
        x = x.transpose(1, 2) * mask[:, None].to(x.dtype)  # (B, width, T_even)
        h = self.norm1(F.gelu(self.conv1(x)), mask)  # (B, 2·width, T_even)
        h = h * mask[:, None].to(h.dtype)
        out_lens = self.output_lengths(lens)
        out_mask = lengths_to_mask(out_lens, x.shape[2] // 2)  # (B, T_even/2)
        h = self.norm2(F.gelu(self.conv2(h)), out_mask)  # (B, width, T_even/2)
        y = self.llm_proj(h.transpose(1, 2))  # (B, T_even/2, d_llm)
        return y * out_mask[..., None].to(y.dtype), out_lens


class MLP(nn.Module):
    """Two-layer MLP + llm_proj, no downsampling (MuQ is already 25 Hz).

    Shapes:
        x (B, T, d_enc), lens (B,) -> (B, T, d_llm), (B,)
    """

    def __init__(self, d_enc: int, width: int, d_llm: int):
        super().__init__()
        self.d_enc, self.out_dim = d_enc, d_llm
        self.fc1 = nn.Linear(d_enc, width)
        self.fc2 = nn.Linear(width, width)
        self.llm_proj = nn.Linear(width, d_llm)

    def output_lengths(self, lens: torch.Tensor) -> torch.Tensor:
        return lens

    def forward(self, x: torch.Tensor, lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.llm_proj(F.gelu(self.fc2(F.gelu(self.fc1(x)))))  # (B, T, d_llm)
        return zero_padding(y, lens), lens


class Identity(nn.Module):
    """No parameters: native encoder features pass through (ALARM-P conditional streams).

    Shapes:
        x (B, T, d_enc), lens (B,) -> (B, T, d_enc), (B,)
    """

    def __init__(self, d_enc: int):
        super().__init__()
        self.d_enc = self.out_dim = d_enc

    def output_lengths(self, lens: torch.Tensor) -> torch.Tensor:
        return lens

    def forward(self, x: torch.Tensor, lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x, lens


# ---------------------------------------------------------------------------------------------------------------
# registry (keys = the `kind` literals of alarm.config.AdapterConfig)


def build_downsample(cfg: DownsampleAdapterConfig, d_enc: int, d_llm: int) -> Downsample:
    return Downsample(d_enc, cfg.width, d_llm, cfg.norm)


def build_mlp(cfg: MLPAdapterConfig, d_enc: int, d_llm: int) -> MLP:
    return MLP(d_enc, cfg.width, d_llm)


def build_identity(cfg: IdentityAdapterConfig, d_enc: int, d_llm: int) -> Identity:
    return Identity(d_enc)


ADAPTERS: dict[str, Callable[..., nn.Module]] = {
    "downsample": build_downsample,
    "mlp": build_mlp,
    "identity": build_identity,
}
