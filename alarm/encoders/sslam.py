"""SSLAM (`ta012/SSLAM_AS2M_Finetuned`): the EAT ViT-B audio encoder, loaded without `trust_remote_code`.

Rebuilt from the checkpoint's remote code (`modeling_eat.py`: `EATModel.model = EAT(config)`; `eat_model.py`:
`EAT.encode`; `model_core.py`: `PatchEmbed_new`, `FixedPositionalEncoder`, `AltBlock`, `AltAttention`):

    normalised fbank (N, 1, T, 128) -> Conv2d 16x16 / stride 16 -> (N, T/16 * 8, D) time-major patches
    -> + fixed 2-D sin-cos positions -> prepend CLS (`extra_tokens`) -> pre_norm -> 12 post-norm blocks

Parameter names equal the checkpoint's (`model.local_encoder.proj.*`, `model.blocks.*`, ...). The classifier
(`model.fc_norm`, `model.head`) is not used for features and is skipped on load (`UNUSED_KEYS`). Also here: the
frozen wrapper, the checkpoint format, the EAT fbank front-end and the tiny checkpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from alarm.audio.features import EDGE_PAD, FrontEnd, kaldi_fbank, kaldi_frames
from alarm.encoders import family
from alarm.encoders.base import FrozenEncoder
from alarm.encoders.checkpoint import CheckpointFormat, random_state, write_folder

UNUSED_KEYS = ("model.fc_norm.", "model.head.")


def sincos_positions(embed_dim: int, grid: tuple[int, int]) -> Tensor:
    """EAT's `get_2d_sincos_pos_embed_flexible` (no CLS row): `(1, H * W, D)` for an H (time) x W grid."""

    def one_d(dim: int, pos: np.ndarray) -> np.ndarray:
        omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float32) / (dim / 2.0))
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    h, w = grid
    gw, gh = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))  # w first, as EAT
    emb = np.concatenate([one_d(embed_dim // 2, gw), one_d(embed_dim // 2, gh)], axis=1)  # (H*W, D)
    return torch.from_numpy(emb).float().unsqueeze(0)


class PatchEmbed(nn.Module):
    def __init__(self, patch: int, stride: int, in_chans: int, dim: int):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=patch, stride=stride)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # (N, D, T/16, 8) -> (N, T/16 * 8, D), time-major


class FixedPositionalEncoder(nn.Module):
    def __init__(self, dim: int, grid: tuple[int, int]):
        super().__init__()
        # a frozen Parameter, so stored in the checkpoint as `model.fixed_positional_encoder.positions`
        self.positions = nn.Parameter(torch.zeros(1, grid[0] * grid[1], dim), requires_grad=False)
        if not self.positions.is_meta:
            self.positions.data.copy_(sincos_positions(dim, grid))


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, qkv_bias: bool):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        N, T, D = x.shape
        qkv = self.qkv(x).reshape(N, T, 3, self.heads, D // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (N, H, T, hd)
        out = F.scaled_dot_product_attention(q, k, v)  # scale hd ** -0.5, no mask (EAT.encode passes none)
        return self.proj(out.transpose(1, 2).reshape(N, T, D))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    """EAT's AltBlock at inference (drop-path and dropouts are identities)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, qkv_bias: bool, eps: float, affine: bool,
                 layer_norm_first: bool):
        super().__init__()
        self.layer_norm_first = layer_norm_first
        self.norm1 = nn.LayerNorm(dim, eps=eps, elementwise_affine=affine)
        self.attn = Attention(dim, heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=eps, elementwise_affine=affine)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor) -> Tensor:
        if self.layer_norm_first:
            x = x + self.attn(self.norm1(x))
            return x + self.mlp(self.norm2(x))
        r = self.norm1(x + self.attn(x))
        return self.norm2(r + self.mlp(r))


class EAT(nn.Module):
    """EAT's encoder. `config` is the checkpoint's config.json (EATConfig fields)."""

    def __init__(self, config: dict[str, Any]):
        super().__init__()
        c = {**EAT_DEFAULTS, **config}
        dim, patch = int(c["embed_dim"]), int(c["patch_size"])
        self.mel_bins, self.patch = int(c["mel_bins"]), patch
        self.local_encoder = PatchEmbed(patch, int(c["stride"]), int(c["in_chans"]), dim)
        self.extra_tokens = nn.Parameter(torch.zeros(1, 1, dim))
        if c["fixed_positions"]:
            grid = (int(c["max_length"]), self.mel_bins // patch)
            self.fixed_positional_encoder = FixedPositionalEncoder(dim, grid)
        else:
            self.fixed_positional_encoder = None
        eps, affine = float(c["norm_eps"]), bool(c["norm_affine"])
        self.blocks = nn.ModuleList(
            Block(dim, int(c["num_heads"]), float(c["mlp_ratio"]), bool(c["qkv_bias"]), eps, affine,
                  bool(c["layer_norm_first"]))
            for _ in range(int(c["depth"]))
        )
        self.pre_norm = nn.LayerNorm(dim, eps=eps, elementwise_affine=affine)

    def forward(self, fbank: Tensor, keep: set[int]) -> list[Tensor | None]:
        """`(N, T, mel_bins)` -> one `(N, 1 + patches, D)` state per block (None where not in `keep`)."""
        x = self.local_encoder(fbank.unsqueeze(1))  # (N, P, D)
        if self.fixed_positional_encoder is not None:
            x = x + self.fixed_positional_encoder.positions[:, : x.shape[1]]
        x = torch.cat((self.extra_tokens.expand(x.shape[0], -1, -1), x), dim=1)  # (N, 1 + P, D), CLS first
        x = self.pre_norm(x)
        states: list[Tensor | None] = []
        for i, blk in enumerate(self.blocks[: max(keep) + 1]):
            x = blk(x)
            states.append(x if i in keep else None)
        return states + [None] * (len(self.blocks) - len(states))


# EATConfig defaults of the remote code (configuration_eat.py); config.json values override them.
EAT_DEFAULTS: dict[str, Any] = {
    "embed_dim": 768, "depth": 12, "num_heads": 12, "patch_size": 16, "stride": 16, "in_chans": 1,
    "mel_bins": 128, "max_length": 768, "num_classes": 527, "model_variant": "pretrain", "mlp_ratio": 4.0,
    "qkv_bias": True, "layer_norm_first": False, "norm_eps": 1e-6, "norm_affine": True,
    "fixed_positions": True,
}


# ---------------------------------------------------------------------------------------------------------------
# the frozen wrapper and the checkpoint format (EATModel folders)


class FrozenSSLAM(FrozenEncoder):
    """Input `(B, T, 128)` normalised fbank, T a multiple of 1024 frames.

    No mask (EAT.encode takes none; padding frames are encoded, as in the reference). Per chunk the 512
    patch tokens of the time-major 64 x 8 grid are returned as one sequence, CLS dropped; the reference treats
    it as a 1-D "50 Hz" stream, so out_lens = frames // 2 although the true time resolution is 6.25 Hz.
    """

    name = "sslam"

    @property
    def feature_dim(self) -> int:
        return self.model.mel_bins

    def output_lengths(self, lens: Tensor) -> Tensor:
        return lens.long() // 2

    def encode(self, x: Tensor, x_lens: Tensor) -> Tensor:
        states = self.model(x.to(self.model.extra_tokens.dtype), set(self.layers))
        return torch.stack([states[i][:, 1:] for i in self.layers])  # (L, N, 512, D), CLS dropped


def build(cfg: dict, layers: list[int]) -> nn.Module:
    return FrozenSSLAM(EAT(cfg), layers)


def checkpoint_key(key: str) -> str | None:
    return None if key.startswith(UNUSED_KEYS) else key


FORMAT = CheckpointFormat(build, checkpoint_key, hidden="embed_dim", depth="depth", states_per_depth=0,
                          model_type="eat", features="mel_bins",
                          defaults={"embed_dim": 768, "depth": 12, "mel_bins": 128})  # EATConfig's


# ---------------------------------------------------------------------------------------------------------------
# front-end

MEAN, STD = -4.268, 4.569  # AudioSet fbank statistics (EAT/SSLAM)


def sslam_features(samples: np.ndarray) -> tuple[torch.Tensor, int]:
    """SSLAM/EAT fbank: remove DC, pad 160 each side, Kaldi fbank (128 bins, hanning, htk_compat, no dither,
    no energy), normalise `(x + 4.268) / (2 * 4.569)`.

    Returns:
        `(T, 128)` float32 (`collate` pads T to a multiple of 1024) and T.
    """
    x = torch.from_numpy(samples).double()
    x = torch.nn.functional.pad(x - x.mean(), (EDGE_PAD, EDGE_PAD))
    fb = kaldi_fbank(x, "hann", 128)  # (T, 128)
    fb = (fb - MEAN) / (2 * STD)
    return fb.float(), fb.shape[0]


FRONT_END = FrontEnd(sslam_features, kaldi_frames)


# ---------------------------------------------------------------------------------------------------------------
# tiny checkpoint


def build_tiny(out_dir: Path, seed: int = 0, config: dict | None = None) -> None:
    """An EATModel folder as `ta012/SSLAM_AS2M_Finetuned` (config.json + model.safetensors, "model." keys) with
    random weights: the family's tiny config, or `config` (e.g. its real_config for a full-size one)."""
    cfg = config or family("sslam").tiny_config
    with torch.device("meta"):
        model = EAT(cfg)
    d, n = cfg["embed_dim"], cfg["num_classes"]
    shapes = {f"model.{k}": v for k, v in model.state_dict().items()}
    shapes |= {n_: torch.empty(s, device="meta") for n_, s in {
        "model.fc_norm.weight": (d,), "model.fc_norm.bias": (d,), "model.head.weight": (n, d),
        "model.head.bias": (n,)}.items()}
    tensors = random_state(shapes, seed)
    grid = (cfg["max_length"], cfg["mel_bins"] // cfg["patch_size"])
    tensors["model.fixed_positional_encoder.positions"] = sincos_positions(d, grid)
    write_folder(Path(out_dir), dict(cfg), tensors)
