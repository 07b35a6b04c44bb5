"""MuQ (`OpenMuQ/MuQ-large-msd-iter`) as a plain module that loads the published weights without `muq`.

The `muq` pip package (0.1.0) pins nothing but would pull torch 2.14, torchaudio, nnAudio and x-clip into the
environment, and it reads `hidden_states` from a transformers 4.x encoder output that transformers 5 no longer
returns; so its feature path is rebuilt here from the source (`muq/muq/models/muq_model.py`,
`modules/features.py`, `modules/conv.py`, and transformers' `Wav2Vec2ConformerEncoder`, which MuQ builds):

    24 kHz waveform -> MelSpectrogram(n_fft 2048, hop 240, 128 HTK mels, power) -> dB -> drop last frame
    -> (x - mean) / std -> Conv2dSubsampling (2 residual conv blocks, /4 in time and freq) -> Linear
    -> 12 conformer layers (rotary positions) -> hidden_states: embedding output + 12 layer outputs, the last
    after the encoder LayerNorm (13 in all).

Parameter names equal the checkpoint's (`model.conv.*`, `model.conformer.layers.*`): its state dict loads
as is. Checkpoint tensors used only in pre-training are listed in `UNUSED_KEYS` and skipped on load. Also here:
the frozen wrapper, the checkpoint format, the (raw waveform) front-end and the tiny checkpoint.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from alarm.audio.features import FrontEnd
from alarm.encoders import family
from alarm.encoders.base import FrozenEncoder
from alarm.encoders.checkpoint import CheckpointFormat, random_state, write_folder

# The conformer settings MuQ inherits from its `w2v2_config` (transformers Wav2Vec2ConformerConfig defaults as
# shipped in the MuQ recipe); hidden_size and num_hidden_layers are overridden by encoder_dim / encoder_depth.
W2V2_DEFAULTS: dict[str, Any] = {
    "num_attention_heads": 16,
    "intermediate_size": 4096,
    "hidden_act": "swish",
    "conv_depthwise_kernel_size": 31,
    "position_embeddings_type": "rotary",
    "rotary_embedding_base": 10000,
    "layer_norm_eps": 1e-5,
}

# Tensors of the published checkpoint that do not influence the hidden states: the masked-prediction head and
# its targets (random-projection quantizer / Mel-RVQ, reconstruction head, CLS token), the positional conv
# embedding that transformers' conformer builds but never calls (named weight_g/weight_v or parametrizations.*
# depending on the torch that saved it), and the rotary `inv_freq` (recomputed from the config).
UNUSED_KEYS = (
    "model.linear.",
    "model.cls_token",
    "model.quantizer_",
    "model.rvq.",
    "model.recon_proj.",
    "model.conformer.pos_conv_embed.",
    "model.conformer.embed_positions.",
)

_ACTS = {"swish": nn.SiLU, "silu": nn.SiLU, "gelu": nn.GELU, "relu": nn.ReLU}


# ---------------------------------------------------------------------------------------------------------------
# front-end: torchaudio MelSpectrogram + AmplitudeToDB, re-expressed in torch (torchaudio is not a dependency)


def _hz_to_mel(f: float) -> float:
    return 2595.0 * math.log10(1.0 + f / 700.0)


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, device=None) -> Tensor:
    """HTK-scale triangular filters without area normalisation, as `torchaudio.functional.melscale_fbanks`.

    Returns:
        `(n_fft // 2 + 1, n_mels)` float32.
    """
    all_freqs = torch.linspace(0, sample_rate // 2, n_fft // 2 + 1, device=device)
    m_pts = torch.linspace(_hz_to_mel(0.0), _hz_to_mel(sample_rate / 2), n_mels + 2, device=device)
    f_pts = 700.0 * (10 ** (m_pts / 2595.0) - 1.0)
    f_diff = f_pts[1:] - f_pts[:-1]
    slopes = f_pts.unsqueeze(0) - all_freqs.unsqueeze(1)  # (F, n_mels + 2)
    down = -slopes[:, :-2] / f_diff[:-1]
    up = slopes[:, 2:] / f_diff[1:]
    return torch.clamp(torch.min(down, up), min=0.0)


def log_mel(wave: Tensor, sample_rate: int, n_fft: int, hop: int, n_mels: int) -> Tensor:
    """`(N, samples)` -> `(N, n_mels, samples // hop + 1)` power mel in dB (amin 1e-10, no top_db).

    One row (30 s chunk) at a time: a batched n_fft=2048 STFT is a ~200 MB complex tensor for 8 chunks and runs
    slower than the loop, which keeps each (F, T) spectrogram in cache (bench/encode.py).
    """
    window = torch.hann_window(n_fft, device=wave.device)
    fb = mel_filterbank(sample_rate, n_fft, n_mels, device=wave.device).T.contiguous()  # (n_mels, F)
    mels = []
    for row in wave.float():
        spec = torch.stft(row, n_fft, hop_length=hop, win_length=n_fft, window=window, center=True,
                          pad_mode="reflect", normalized=False, onesided=True, return_complex=True)  # (F, T)
        power = torch.view_as_real(spec).pow(2).sum(-1)  # |X|^2 without the sqrt of abs()
        mels.append(fb @ power)  # (n_mels, T)
    return 10.0 * torch.log10(torch.clamp(torch.stack(mels), min=1e-10))


# ---------------------------------------------------------------------------------------------------------------
# conv subsampling (muq/modules/conv.py)


class Res2dModule(nn.Module):
    def __init__(self, idim: int, odim: int, stride: tuple[int, int]):
        super().__init__()
        self.conv1 = nn.Conv2d(idim, odim, 3, padding=1, stride=stride)
        self.bn1 = nn.BatchNorm2d(odim)
        self.conv2 = nn.Conv2d(odim, odim, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(odim)
        self.diff = idim != odim or stride[0] > 1
        if self.diff:
            self.conv3 = nn.Conv2d(idim, odim, 3, padding=1, stride=stride)
            self.bn3 = nn.BatchNorm2d(odim)

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        if self.diff:
            x = self.bn3(self.conv3(x))
        return F.relu(x + out)


class Conv2dSubsampling(nn.Module):
    def __init__(self, hdim: int, odim: int, strides: tuple[int, int], n_bands: int):
        super().__init__()
        self.conv = nn.Sequential(Res2dModule(1, hdim, (2, strides[0])),
                                  Res2dModule(hdim, hdim, (2, strides[1])))
        self.linear = nn.Linear(hdim * n_bands // 4, odim)

    def forward(self, mel: Tensor) -> Tensor:
        x = self.conv(mel.unsqueeze(1))  # (N, C, F/4, T/4)
        N, C, Fq, T = x.shape
        x = x.permute(0, 3, 1, 2).reshape(N, T, C * Fq)  # "b c f t -> b t (c f)"
        return self.linear(x)  # (N, T/4, D)


# ---------------------------------------------------------------------------------------------------------------
# conformer (same names and maths as transformers' Wav2Vec2Conformer* with rotary positions, eager attention)


class FeedForward(nn.Module):
    def __init__(self, dim: int, ffn: int, act: str):
        super().__init__()
        self.intermediate_dense = nn.Linear(dim, ffn)
        self.intermediate_act_fn = _ACTS[act]()
        self.output_dense = nn.Linear(ffn, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.output_dense(self.intermediate_act_fn(self.intermediate_dense(x)))


class SelfAttention(nn.Module):
    """Rotary positions are applied to the layer input before the q/k projections, as transformers does."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads, self.head_size = heads, dim // heads
        self.linear_q = nn.Linear(dim, dim)
        self.linear_k = nn.Linear(dim, dim)
        self.linear_v = nn.Linear(dim, dim)
        self.linear_out = nn.Linear(dim, dim)

    def forward(self, x: Tensor, bias: Tensor | None, cos: Tensor, sin: Tensor) -> Tensor:
        N, T, D = x.shape
        h = x.view(N, T, self.heads, self.head_size)
        half = self.head_size // 2
        qk = h * cos + torch.cat((-h[..., half:], h[..., :half]), dim=-1) * sin  # (N, T, H, hd)
        qk = qk.reshape(N, T, D)
        q = self.linear_q(qk).view(N, T, self.heads, -1).transpose(1, 2)  # (N, H, T, hd)
        k = self.linear_k(qk).view(N, T, self.heads, -1).transpose(1, 2)
        v = self.linear_v(x).view(N, T, self.heads, -1).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)  # (N, H, T, hd)
        return self.linear_out(out.transpose(1, 2).reshape(N, T, D))


class ConvolutionModule(nn.Module):
    def __init__(self, dim: int, kernel: int, act: str):
        super().__init__()
        self.layer_norm = nn.LayerNorm(dim)
        self.pointwise_conv1 = nn.Conv1d(dim, 2 * dim, 1, bias=False)
        self.depthwise_conv = nn.Conv1d(dim, dim, kernel, padding=(kernel - 1) // 2, groups=dim, bias=False)
        self.batch_norm = nn.BatchNorm1d(dim)
        self.activation = _ACTS[act]()
        self.pointwise_conv2 = nn.Conv1d(dim, dim, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        x = self.layer_norm(x).transpose(1, 2)  # (N, D, T)
        x = F.glu(self.pointwise_conv1(x), dim=1)
        x = self.activation(self.batch_norm(self.depthwise_conv(x)))
        return self.pointwise_conv2(x).transpose(1, 2)  # (N, T, D)


class ConformerLayer(nn.Module):
    def __init__(self, dim: int, heads: int, ffn: int, kernel: int, act: str):
        super().__init__()
        self.ffn1_layer_norm = nn.LayerNorm(dim)
        self.ffn1 = FeedForward(dim, ffn, act)
        self.self_attn_layer_norm = nn.LayerNorm(dim)
        self.self_attn = SelfAttention(dim, heads)
        self.conv_module = ConvolutionModule(dim, kernel, act)
        self.ffn2_layer_norm = nn.LayerNorm(dim)
        self.ffn2 = FeedForward(dim, ffn, act)
        self.final_layer_norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor, bias: Tensor | None, cos: Tensor, sin: Tensor) -> Tensor:
        x = x + 0.5 * self.ffn1(self.ffn1_layer_norm(x))
        x = x + self.self_attn(self.self_attn_layer_norm(x), bias, cos, sin)
        x = x + self.conv_module(x)
        x = x + 0.5 * self.ffn2(self.ffn2_layer_norm(x))
        return self.final_layer_norm(x)


class Conformer(nn.Module):
    def __init__(self, dim: int, depth: int, w2v2: dict[str, Any]):
        super().__init__()
        heads, act = w2v2["num_attention_heads"], w2v2["hidden_act"]
        self.rotary_base = float(w2v2["rotary_embedding_base"])
        self.head_size = dim // heads
        self.layers = nn.ModuleList(
            ConformerLayer(dim, heads, w2v2["intermediate_size"], w2v2["conv_depthwise_kernel_size"], act)
            for _ in range(depth)
        )
        self.layer_norm = nn.LayerNorm(dim, eps=w2v2["layer_norm_eps"])

    def rotary(self, T: int, x: Tensor) -> tuple[Tensor, Tensor]:
        d = self.head_size
        inv_freq = 1.0 / (self.rotary_base ** (torch.arange(0, d, 2, device=x.device).float() / d))
        freqs = torch.outer(torch.arange(T, device=x.device).float(), inv_freq)
        emb = torch.cat((freqs, freqs), dim=-1)[None, :, None, :]  # (1, T, 1, hd)
        return emb.cos().to(x.dtype), emb.sin().to(x.dtype)

    def forward(self, x: Tensor, mask: Tensor, keep: set[int]) -> list[Tensor | None]:
        """The 1 + depth hidden states, None where not in `keep`; layers past max(keep) are not run."""
        x = x.masked_fill(~mask[..., None], 0.0)  # padded frames output 0, as transformers does
        bias = (~mask)[:, None, None, :].to(x.dtype) * torch.finfo(x.dtype).min  # (N, 1, 1, T)
        cos, sin = self.rotary(x.shape[1], x)
        states: list[Tensor | None] = [x if 0 in keep else None]
        depth = len(self.layers)
        for i, layer in enumerate(self.layers[: max(keep)], start=1):
            x = layer(x, bias, cos, sin)
            if i == depth:
                x = self.layer_norm(x)  # the last hidden state is taken after the encoder LayerNorm
            states.append(x if i in keep else None)
        return states + [None] * (depth + 1 - len(states))


# ---------------------------------------------------------------------------------------------------------------
# the model (state-dict prefix "model." as in the published checkpoint)


class MuQModel(nn.Module):
    """MuQ's feature path. `config` is the checkpoint's config.json (MuQConfig fields)."""

    def __init__(self, config: dict[str, Any]):
        super().__init__()
        given = config.get("w2v2_config") or {}
        w2v2 = {**W2V2_DEFAULTS, **{k: v for k, v in given.items() if k in W2V2_DEFAULTS}}
        if w2v2["position_embeddings_type"] != "rotary":
            raise ValueError(f"only rotary positions are built, found {w2v2['position_embeddings_type']!r}")
        self.n_fold = int(100 // config.get("label_rate", 25))
        self.hop = int(config.get("hop_length", 240))
        self.n_mels = int(config.get("n_mels", 128))
        self.sample_rate = 24000
        stat = config.get("stat") or {}
        self.mean = float(stat.get("melspec_2048_mean", 0.0))
        self.std = float(stat.get("melspec_2048_std", 1.0))
        dim = int(config.get("encoder_dim", 1024))
        strides = {4: (2, 2), 2: (2, 1)}[self.n_fold]
        self.conv = Conv2dSubsampling(int(config.get("conv_dim", 512)), dim, strides, self.n_mels)
        self.conformer = Conformer(dim, int(config.get("encoder_depth", 12)), w2v2)

    @property
    def samples_per_token(self) -> int:
        return self.hop * self.n_fold  # 960 at 24 kHz -> 25 Hz

    def forward(self, wave: Tensor, lens: Tensor, keep: set[int]) -> list[Tensor | None]:
        """`(N, samples)` waveform, `(N,)` valid samples -> 1 + depth states `(N, T, D)`, None if not kept."""
        mel = log_mel(wave, self.sample_rate, 2048, self.hop, self.n_mels)[..., :-1]  # (N, 128, samples/hop)
        mel = (mel - self.mean) / self.std
        x = self.conv(mel.to(self.conv.linear.weight.dtype))  # (N, T, D)
        # MuQ subsamples the sample mask: token t is valid iff sample t * 960 is (muq_model.encoder)
        mask = (torch.arange(x.shape[1], device=x.device) * self.samples_per_token)[None, :] < lens[:, None]
        return self.conformer(x, mask, keep)


# ---------------------------------------------------------------------------------------------------------------
# the frozen wrapper and the checkpoint format (MuQ.from_pretrained folders: config.json = MuQConfig fields)


class FrozenMuQ(FrozenEncoder):
    """Input `(B, N)` raw 24 kHz samples, N a multiple of 720,000 (30 s).

    Each chunk gets MuQ's own attention mask (sample mask subsampled every 960 samples); outputs are 25 Hz.
    """

    name = "muq"

    @property
    def feature_dim(self) -> None:
        return None  # raw waveform

    def output_lengths(self, lens: Tensor) -> Tensor:
        return lens.long() // self.model.samples_per_token

    def encode(self, x: Tensor, x_lens: Tensor) -> Tensor:
        states = self.model(x, x_lens, set(self.layers))
        return torch.stack([states[i] for i in self.layers])  # (L, N, 750, D)


def build(cfg: dict, layers: list[int]) -> nn.Module:
    return FrozenMuQ(MuQModel(cfg), layers)


def checkpoint_key(key: str) -> str | None:
    return None if key.startswith(UNUSED_KEYS) else key


FORMAT = CheckpointFormat(build, checkpoint_key, hidden="encoder_dim", depth="encoder_depth", states_per_depth=1,
                          model_type=None, features=None,
                          defaults={"encoder_dim": 1024, "encoder_depth": 12})  # MuQConfig's


def valid_frames(samples: int) -> int:
    return samples


def muq_features(samples: np.ndarray) -> tuple[Tensor, int]:
    """MuQ takes the raw 24 kHz waveform. Returns `(N,)` float32 and N."""
    return torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32)), len(samples)


FRONT_END = FrontEnd(muq_features, valid_frames)


def build_tiny(out_dir: Path, seed: int = 0, config: dict | None = None) -> None:
    """A MuQ.from_pretrained folder (config.json = MuQConfig fields, model.safetensors with "model." keys) with
    random weights: the family's tiny config, or `config` (e.g. its real_config for a full-size one).

    Also writes the tensors the real checkpoint carries but the encoder does not use (head, quantizer,
    positional conv, rotary inv_freq), so that loading exercises the same skip list.
    """
    cfg = config or family("muq").tiny_config
    with torch.device("meta"):
        model = MuQModel(cfg)
    shapes = {f"model.{k}": v for k, v in model.state_dict().items()}
    d, w2v2 = cfg["encoder_dim"], cfg["w2v2_config"]
    k, groups = w2v2["num_conv_pos_embeddings"], w2v2["num_conv_pos_embedding_groups"]
    extra = {  # as MuQModel + transformers Wav2Vec2ConformerEncoder (weight-norm parametrisation) name them
        "model.linear.weight": (cfg["codebook_size"], d), "model.linear.bias": (cfg["codebook_size"],),
        "model.cls_token": (d,),
        "model.quantizer_melspec_2048.random_projection": (cfg["n_mels"] * 4, cfg["codebook_dim"]),
        "model.quantizer_melspec_2048.codebook": (cfg["codebook_size"], cfg["codebook_dim"]),
        "model.conformer.pos_conv_embed.conv.bias": (d,),
        "model.conformer.pos_conv_embed.conv.parametrizations.weight.original0": (1, 1, k),
        "model.conformer.pos_conv_embed.conv.parametrizations.weight.original1": (d, d // groups, k),
    }
    tensors = random_state({**shapes, **{n: torch.empty(s, device="meta") for n, s in extra.items()}}, seed)
    hd = d // w2v2["num_attention_heads"]
    tensors["model.conformer.embed_positions.inv_freq"] = 1.0 / (
        w2v2["rotary_embedding_base"] ** (torch.arange(0, hd, 2).float() / hd))
    write_folder(Path(out_dir), dict(cfg), tensors)
