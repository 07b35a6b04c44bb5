"""Fusion of the per-encoder adapter streams (sum | cross_attention | perceiver) and the FUSIONS registry.

Every fusion takes `streams: {enc: (B, T_k, D_k)}` and `lens: {enc: (B,)}` and returns a tensor
`(B, T_out, D_llm)` plus its lengths `(B,)`; `output_lengths(lens)` gives the lengths without running it. Each
stream is masked with its OWN lengths (the reference used the main encoder's lengths everywhere, D12), so an
item's output does not depend on the other items in the batch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import nn

from alarm.config import CrossAttentionFusionConfig, PerceiverFusionConfig, SumFusionConfig
from alarm.model.adapters import zero_padding
from alarm.types import lengths_to_mask


@runtime_checkable
class Fusion(Protocol):
    """What AudioAdapter needs from a fusion. `encoders` names the streams it expects."""

    encoders: tuple[str, ...]

    def __call__(
        self, streams: dict[str, torch.Tensor], lens: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]: ...

    def output_lengths(self, lens: dict[str, torch.Tensor]) -> torch.Tensor: ...


def _check_keys(fusion: str, expected: tuple[str, ...], streams: dict, lens: dict) -> None:
    if set(streams) != set(expected) or set(lens) != set(expected):
        raise ValueError(
            f"{fusion} fusion expects streams for encoders {sorted(expected)}, found streams {sorted(streams)} and "
            f"lens {sorted(lens)}"
        )


def _valid_mask(lens: torch.Tensor, T: int) -> torch.Tensor:
    """Key mask (B, T), True = valid; at least one key per item so attention never sees an all-masked row."""
    return lengths_to_mask(lens.clamp(min=1), T)


# ---------------------------------------------------------------------------------------------------------------
# sum


class SumFusion(nn.Module):
    """Zero-pad every stream to the longest T and add them; identity with one encoder.

    Shapes:
        streams {enc: (B, T_k, D_llm)} -> (B, max T_k, D_llm); lens = max over encoders per item
    """

    def __init__(self, encoders: list[str]):
        super().__init__()
        self.encoders = tuple(encoders)

    def output_lengths(self, lens: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.stack([lens[k] for k in self.encoders]).amax(0)

    def forward(
        self, streams: dict[str, torch.Tensor], lens: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        _check_keys("sum", self.encoders, streams, lens)
        T = max(x.shape[1] for x in streams.values())
        out = None
        for k in self.encoders:
            x = zero_padding(streams[k], lens[k])
            x = F.pad(x, (0, 0, 0, T - x.shape[1]))  # (B, T, D_llm)
            out = x if out is None else out + x
        return out, self.output_lengths(lens)


# ---------------------------------------------------------------------------------------------------------------
# cross_attention (ALARM-CA)


class CrossAttentionFusion(nn.Module):
    """ALARM-CA: the main stream attends to each conditional stream in turn.

    in_proj[enc] for every stream; one pre-norm TransformerDecoderLayer per conditional encoder in `order`
    (self-attention over the running main stream, cross-attention to that encoder); out_proj back to D_llm.
    Self-attention is masked with the main lengths, cross-attention with that encoder's own lengths.

    Shapes:
        streams {main: (B, T_main, D), cond: (B, T_k, D_k)} -> (B, T_main, D_llm); lens = main lengths
    """

    def __init__(
        self,
        main: str,
        order: list[str],
        dims: dict[str, int],
        d_llm: int,
        d_model: int,
        num_heads: int,
        ffn_dim: int,
        dropout: float,
    ):
        super().__init__()
        self.main, self.order = main, tuple(order)
        self.encoders = (main, *self.order)
        self.in_proj = nn.ModuleDict({k: nn.Linear(dims[k], d_model) for k in self.encoders})
        self.layers = nn.ModuleDict(
            {
                k: nn.TransformerDecoderLayer(
                    d_model, num_heads, ffn_dim, dropout, activation="gelu", batch_first=True, norm_first=True
                )
                for k in self.order
            }
        )
        self.out_proj = nn.Linear(d_model, d_llm)

    def output_lengths(self, lens: dict[str, torch.Tensor]) -> torch.Tensor:
        return lens[self.main]

    def forward(
        self, streams: dict[str, torch.Tensor], lens: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        _check_keys("cross_attention", self.encoders, streams, lens)
        x = self.in_proj[self.main](streams[self.main])  # (B, T_main, d_model)
        pad = ~_valid_mask(lens[self.main], x.shape[1])  # (B, T_main), True = padding
        for k in self.order:
            mem = self.in_proj[k](streams[k])  # (B, T_k, d_model)
            mem_pad = ~_valid_mask(lens[k], mem.shape[1])  # (B, T_k): this encoder's own lengths (fixes D12)
            x = self.layers[k](x, mem, tgt_key_padding_mask=pad, memory_key_padding_mask=mem_pad)
        return self.out_proj(x), self.output_lengths(lens)  # (B, T_main, D_llm)


# ---------------------------------------------------------------------------------------------------------------
# perceiver (ALARM-P)


class Attention(nn.Module):
    """Multi-head attention, queries of width `dim` over keys/values of width `kv_dim`."""

    def __init__(self, dim: int, kv_dim: int, heads: int, dropout: float):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(kv_dim, dim)
        self.v_proj = nn.Linear(kv_dim, dim)
        self.o_proj = nn.Linear(dim, dim)

    def forward(self, q: torch.Tensor, kv: torch.Tensor, kv_mask: torch.Tensor | None = None) -> torch.Tensor:
        B, N, C = q.shape
        T, h = kv.shape[1], self.heads
        q = self.q_proj(q).view(B, N, h, C // h).transpose(1, 2)  # (B, h, N, C/h)
        k = self.k_proj(kv).view(B, T, h, C // h).transpose(1, 2)  # (B, h, T, C/h)
        v = self.v_proj(kv).view(B, T, h, C // h).transpose(1, 2)  # (B, h, T, C/h)
        mask = None if kv_mask is None else kv_mask[:, None, None, :]  # (B, 1, 1, T)
        y = F.scaled_dot_product_attention(q, k, v, mask, dropout_p=self.dropout if self.training else 0.0)
        return self.o_proj(y.transpose(1, 2).reshape(B, N, C))  # (B, N, C)


class PerceiverLayer(nn.Module):
    """Pre-norm residual attention + MLP (widening 1). Cross-attention when `kv_dim` is given, else self."""

    def __init__(self, dim: int, heads: int, dropout: float, kv_dim: int | None = None):
        super().__init__()
        self.q_norm = nn.LayerNorm(dim)
        self.kv_norm = nn.LayerNorm(kv_dim) if kv_dim is not None else None
        self.attn = Attention(dim, kv_dim or dim, heads, dropout)
        self.mlp = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, kv: torch.Tensor | None = None, kv_mask: torch.Tensor | None = None):
        h = self.q_norm(x)
        kv = h if self.kv_norm is None else self.kv_norm(kv)
        x = x + self.drop(self.attn(h, kv, kv_mask))
        return x + self.drop(self.mlp(x))


class PerceiverEncoder(nn.Module):
    """Perceiver-IO style encoder (as krasserm/perceiver-io): learned latents read one stream.

    One cross-attention layer from the latents to the stream (its own padding mask, no positional encoding), then
    a block of `self_layers` self-attention layers applied `self_repeats` times with shared weights.

    Shapes:
        x (B, T, in_dim), lens (B,) -> (B, num_latents, latent_dim)
    """

    def __init__(
        self,
        in_dim: int,
        num_latents: int,
        latent_dim: int,
        cross_heads: int,
        self_heads: int,
        self_layers: int,
        self_repeats: int,
        dropout: float,
    ):
        super().__init__()
        self.latents = nn.Parameter(torch.empty(num_latents, latent_dim))
        self.cross = PerceiverLayer(latent_dim, cross_heads, dropout, kv_dim=in_dim)
        self.block = nn.ModuleList(PerceiverLayer(latent_dim, self_heads, dropout) for _ in range(self_layers))
        self.self_repeats = self_repeats

    def forward(self, x: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
        z = self.latents.to(x.dtype).expand(x.shape[0], -1, -1)  # (B, N, C)
        z = self.cross(z, x, _valid_mask(lens, x.shape[1]))
        for _ in range(self.self_repeats):
            for layer in self.block:
                z = layer(z)
        return z


class PerceiverFusion(nn.Module):
    """ALARM-P: one Perceiver per conditional stream, latents prepended to the main stream.

    Output per item: [cond_start] + latents of each conditional encoder in `order` (projected to D_llm) +
    [cond_end] + the main stream's valid tokens, zero-padded on the right. Returns a tensor (the reference
    returned a tuple its caller did not unpack, D2).

    Shapes:
        streams {main: (B, T, D_llm), cond: (B, T_k, D_k)} -> (B, 2 + n_cond·num_latents + T, D_llm);
        lens = main lengths + n_cond·num_latents + 2
    """

    def __init__(self, cfg: PerceiverFusionConfig, dims: dict[str, int], d_llm: int):
        super().__init__()
        self.main, self.order = cfg.main, tuple(cfg.order)
        self.encoders = (self.main, *self.order)
        self.num_latents = cfg.num_latents
        self.perceivers = nn.ModuleDict(
            {
                k: PerceiverEncoder(
                    dims[k], cfg.num_latents, cfg.latent_dim, cfg.cross_heads, cfg.self_heads, cfg.self_layers,
                    cfg.self_repeats, cfg.dropout,
                )
                for k in self.order
            }
        )
        self.out_proj = nn.ModuleDict({k: nn.Linear(cfg.latent_dim, d_llm) for k in self.order})
        self.cond_start = nn.Parameter(torch.randn(1, d_llm))
        self.cond_end = nn.Parameter(torch.randn(1, d_llm))
        self._init_weights(cfg.init_std)

    @torch.no_grad()
    def _init_weights(self, std: float) -> None:
        for m in [*self.perceivers.modules(), *self.out_proj.modules()]:
            if isinstance(m, nn.Linear):
                m.weight.normal_(0.0, std)
                m.bias.zero_()
        for p in self.perceivers.values():
            p.latents.normal_(0.0, std)

    def output_lengths(self, lens: dict[str, torch.Tensor]) -> torch.Tensor:
        return lens[self.main] + len(self.order) * self.num_latents + 2

    def forward(
        self, streams: dict[str, torch.Tensor], lens: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        _check_keys("perceiver", self.encoders, streams, lens)
        main = zero_padding(streams[self.main], lens[self.main])  # (B, T, D_llm)
        B, dt = main.shape[0], main.dtype
        parts = [self.cond_start.to(dt).expand(B, -1, -1)]  # (B, 1, D_llm)
        for k in self.order:
            z = self.perceivers[k](streams[k], lens[k])  # (B, num_latents, latent_dim)
            parts.append(self.out_proj[k](z).to(dt))  # (B, num_latents, D_llm)
        parts += [self.cond_end.to(dt).expand(B, -1, -1), main]
        return torch.cat(parts, dim=1), self.output_lengths(lens)


# ---------------------------------------------------------------------------------------------------------------
# registry (keys = the `kind` literals of alarm.config.FusionConfig); builders take (cfg, dims, d_llm)


def _check_dims(kind: str, expected: tuple[str, ...], dims: dict[str, int]) -> None:
    if set(dims) != set(expected):
        raise ValueError(
            f"fusion.kind={kind} is configured for encoders {sorted(expected)} (fusion.main + fusion.order) but "
            f"the adapters provide {sorted(dims)}; fix fusion.order or the encoders section"
        )


def build_sum(cfg: SumFusionConfig, dims: dict[str, int], d_llm: int) -> SumFusion:
    bad = {k: d for k, d in dims.items() if d != d_llm}
    if bad:
        raise ValueError(
            f"fusion.kind=sum adds streams of the LLM width {d_llm}, found widths {bad}; those encoders need a "
            "projecting adapter (encoders.<enc>.adapter.kind=downsample or mlp)"
        )
    return SumFusion(list(dims))


def build_cross_attention(cfg: CrossAttentionFusionConfig, dims: dict[str, int], d_llm: int) -> CrossAttentionFusion:
    _check_dims("cross_attention", (cfg.main, *cfg.order), dims)
    if cfg.d_model % cfg.num_heads:
        raise ValueError(
            f"fusion.d_model={cfg.d_model} must be divisible by fusion.num_heads={cfg.num_heads}; change either"
        )
    return CrossAttentionFusion(
        cfg.main, cfg.order, dims, d_llm, cfg.d_model, cfg.num_heads, cfg.ffn_dim, cfg.dropout
    )


def build_perceiver(cfg: PerceiverFusionConfig, dims: dict[str, int], d_llm: int) -> PerceiverFusion:
    _check_dims("perceiver", (cfg.main, *cfg.order), dims)
    if dims[cfg.main] != d_llm:
        raise ValueError(
            f"fusion.main={cfg.main} is passed through to the LLM, so its adapter must output {d_llm} channels, "
            f"found {dims[cfg.main]}; use a projecting adapter for encoders.{cfg.main}"
        )
    for key, heads in (("cross_heads", cfg.cross_heads), ("self_heads", cfg.self_heads)):
        if cfg.latent_dim % heads:
            raise ValueError(f"fusion.latent_dim={cfg.latent_dim} must be divisible by fusion.{key}={heads}")
    return PerceiverFusion(cfg, dims, d_llm)


FUSIONS: dict[str, Callable[..., nn.Module]] = {
    "sum": build_sum,
    "cross_attention": build_cross_attention,
    "perceiver": build_perceiver,
}
