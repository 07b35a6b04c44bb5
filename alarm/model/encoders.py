"""The four frozen audio encoders: spec table, strict checkpoint loading, chunking, and the Whisper / W2V-BERT
wrappers (MuQ and SSLAM live in `muq.py` / `sslam.py`).

Every encoder maps padded features to the tapped hidden states, as the reference does (method.md §3.2):
fixed chunks encoded independently (no context across chunks), concatenated along time, trimmed to the
longest item.

    states, out_lens = encoder(feats, lens)   # (L, B, T_out, D), (B,) int64

Loading reads a local folder in the published checkpoint's own format (no hub access, no `trust_remote_code`)
and refuses anything that does not match key by key. `TINY_BUILDERS` write random-weight checkpoints in the
same formats (hidden 16, 2 layers) so that the same loader serves tests and the `tiny` preset.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from alarm.audio.features import FEATURES
from alarm.errors import CheckpointError, CheckpointMismatch


@runtime_checkable
class Encoder(Protocol):
    """What every encoder module provides (see the module docstring for shapes)."""

    layers: list[int]
    feature_dim: int | None  # F of the (B, T, F) inputs its checkpoint takes; None for raw waveforms (B, N)

    def __call__(self, feats: Tensor, lens: Tensor) -> tuple[Tensor, Tensor]: ...

    def output_lengths(self, lens: Tensor) -> Tensor: ...


# ---------------------------------------------------------------------------------------------------------------
# spec table


@dataclass(frozen=True)
class EncoderSpec:
    """Static facts about one encoder. Configs are the checkpoint's own config.json fields (do not mutate)."""

    checkpoint: str
    revision: str  # commit sha the real presets pin
    sample_rate: int  # Hz of the audio the front-end consumes
    input_rate: int  # input frames per second (samples per second for MuQ)
    feature_dim: int | None  # F of the real checkpoint's (B, T, F) inputs; None for raw waveforms (B, N)
    chunk: int  # input frames (samples) per independently encoded chunk
    hidden_size: int  # D of the real checkpoint
    num_hidden_states: int  # length of the real checkpoint's hidden-states tuple
    layers: list[int]  # default tapped hidden states
    output_rate: int  # nominal output frames per second
    real_config: dict[str, Any] = field(repr=False)
    tiny_config: dict[str, Any] = field(repr=False)
    tiny_layers: list[int] = field(default_factory=list)


_W2V2_REAL = {  # MuQ's w2v2_config: conformer settings (hidden size and depth come from encoder_dim/depth)
    "hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16, "intermediate_size": 4096,
    "hidden_act": "swish", "conv_depthwise_kernel_size": 31, "position_embeddings_type": "rotary",
    "rotary_embedding_base": 10000, "layer_norm_eps": 1e-5, "num_conv_pos_embeddings": 128,
    "num_conv_pos_embedding_groups": 16, "model_type": "wav2vec2-conformer",
}
_W2V2_TINY = {**_W2V2_REAL, "hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2,
              "intermediate_size": 32}
_MUQ_STAT = {"melspec_2048_cnt": 14282760192, "melspec_2048_mean": 6.768444971712967,
             "melspec_2048_std": 18.417922652295623}
_MUQ_BASE = {
    "label_rate": 25, "num_codebooks": 1, "codebook_dim": 16, "features": ["melspec_2048"], "hop_length": 240,
    "n_mels": 128, "mask_hop": 0.4, "mask_prob": 0.6, "is_flash": False, "stat": _MUQ_STAT,
    "use_rvq_target": False, "use_vq_target": False, "use_encodec_target": False, "rvq_ckpt_path": None,
    "recon_loss_ratio": None, "resume_checkpoint": None, "rvq_n_codebooks": 8, "rvq_multi_layer_num": 1,
}
_EAT_BASE = {
    "architectures": ["EATModel"], "model_type": "eat", "patch_size": 16, "stride": 16, "in_chans": 1,
    "mel_bins": 128, "model_variant": "finetune", "qkv_bias": True, "layer_norm_first": False,
    "norm_eps": 1e-6, "norm_affine": True, "fixed_positions": True, "img_size": [1024, 128],
}

ENCODERS: dict[str, EncoderSpec] = {
    "whisper": EncoderSpec(
        checkpoint="openai/whisper-large-v3", revision="06f233fe06e710322aca913c1bc4249a0d71fce1", sample_rate=16000, input_rate=100,
        feature_dim=128, chunk=3000, hidden_size=1280, num_hidden_states=33, layers=[7, 15, 23, 31],
        output_rate=50,
        real_config={"d_model": 1280, "encoder_layers": 32, "encoder_attention_heads": 20,
                     "encoder_ffn_dim": 5120, "decoder_layers": 32, "decoder_attention_heads": 20,
                     "decoder_ffn_dim": 5120, "num_mel_bins": 128, "max_source_positions": 1500,
                     "max_target_positions": 448, "vocab_size": 51866},
        tiny_config={"d_model": 16, "encoder_layers": 2, "encoder_attention_heads": 2, "encoder_ffn_dim": 32,
                     "decoder_layers": 1, "decoder_attention_heads": 2, "decoder_ffn_dim": 32,
                     "num_mel_bins": 128, "max_source_positions": 1500, "max_target_positions": 16,
                     "vocab_size": 64, "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2,
                     "decoder_start_token_id": 1, "suppress_tokens": [], "begin_suppress_tokens": [3]},
        tiny_layers=[1, 2],
    ),
    "w2vbert": EncoderSpec(
        checkpoint="facebook/w2v-bert-2.0", revision="da985ba0987f70aaeb84a80f2851cfac8c697a7b", sample_rate=16000, input_rate=50, feature_dim=160,
        chunk=1500, hidden_size=1024, num_hidden_states=25, layers=[6, 10, 15, 20, 24], output_rate=50,
        real_config={"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16,
                     "intermediate_size": 4096, "feature_projection_input_dim": 160, "hidden_act": "swish",
                     "position_embeddings_type": "relative_key", "left_max_position_embeddings": 64,
                     "right_max_position_embeddings": 8, "conv_depthwise_kernel_size": 31,
                     "add_adapter": False, "output_hidden_size": 1024},
        tiny_config={"hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2,
                     "intermediate_size": 32, "feature_projection_input_dim": 160, "hidden_act": "swish",
                     "position_embeddings_type": "relative_key", "left_max_position_embeddings": 64,
                     "right_max_position_embeddings": 8, "conv_depthwise_kernel_size": 31,
                     "add_adapter": False, "output_hidden_size": 16},
        tiny_layers=[1, 2],
    ),
    "muq": EncoderSpec(
        checkpoint="OpenMuQ/MuQ-large-msd-iter", revision="0562a57814f6f8bbd9fdea0a25921a2fce1a841a", sample_rate=24000, input_rate=24000,
        feature_dim=None, chunk=720_000, hidden_size=1024, num_hidden_states=13, layers=[4, 8, 12],
        output_rate=25,
        real_config={**_MUQ_BASE, "codebook_size": 4096, "conv_dim": 512, "encoder_dim": 1024,
                     "encoder_depth": 12, "w2v2_config": _W2V2_REAL},
        tiny_config={**_MUQ_BASE, "codebook_size": 64, "conv_dim": 8, "encoder_dim": 16, "encoder_depth": 2,
                     "w2v2_config": _W2V2_TINY},
        tiny_layers=[1, 2],
    ),
    "sslam": EncoderSpec(
        checkpoint="ta012/SSLAM_AS2M_Finetuned", revision="150a38ceca16cc8e56bf626147c7a9325e252f2d", sample_rate=16000, input_rate=100,
        feature_dim=128, chunk=1024, hidden_size=768, num_hidden_states=12, layers=[3, 7, 11], output_rate=50,
        real_config={**_EAT_BASE, "embed_dim": 768, "depth": 12, "num_heads": 12, "mlp_ratio": 4.0,
                     "max_length": 768, "num_classes": 527},
        tiny_config={**_EAT_BASE, "embed_dim": 16, "depth": 2, "num_heads": 2, "mlp_ratio": 2.0,
                     "max_length": 64, "num_classes": 8},
        tiny_layers=[0, 1],
    ),
}


# ---------------------------------------------------------------------------------------------------------------
# chunking and freezing (shared by all four wrappers)


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
    """requires_grad False everywhere and eval mode (the wrappers' `train` keeps it there)."""
    for p in module.parameters():
        p.requires_grad_(False)
    return module.eval()


def _stack(hidden: tuple[Tensor, ...] | list, layers: list[int]) -> Tensor:
    return torch.stack([hidden[i] for i in layers])  # (L, N, T_c, D)


# ---------------------------------------------------------------------------------------------------------------
# Whisper and W2V-BERT wrappers (transformers modules, driven through their public forward)


class FrozenWhisper(nn.Module):
    """`openai/whisper-large-v3` encoder (or any Whisper). Input `(B, T_mel, M)` log-mel, T_mel a multiple of
    3000, M = the checkpoint's `num_mel_bins` (128 for large-v3, 80 for tiny.en).

    No mask: the Whisper encoder always sees full windows (padding included), as in the reference: 3000 frames
    (30 s), or `chunk` = 2 x max_source_positions for a checkpoint with a shorter audio context.
    """

    def __init__(self, model: nn.Module, layers: list[int], chunk: int = 3000):
        super().__init__()
        self.model, self.layers, self.chunk = model, list(layers), chunk
        freeze(self)

    def train(self, mode: bool = True) -> FrozenWhisper:
        return super().train(False)

    @property
    def feature_dim(self) -> int:
        return self.model.config.num_mel_bins

    def output_lengths(self, lens: Tensor) -> Tensor:
        return lens.long() // 2  # conv2 has stride 2: 100 -> 50 Hz

    @torch.no_grad()
    def forward(self, feats: Tensor, lens: Tensor) -> tuple[Tensor, Tensor]:
        feats, lens = to_module_device(self, feats, lens)
        check_input("whisper", feats, lens, self.chunk, self.feature_dim)
        return encode_chunked(self._encode, feats, lens, self.chunk, self.output_lengths(lens))

    def _encode(self, x: Tensor, x_lens: Tensor) -> Tensor:
        dtype = self.model.conv1.weight.dtype
        # all 33 states are materialised before selection (~250 MB per chunk in fp32), as in the reference
        out = self.model(x.transpose(1, 2).to(dtype), output_hidden_states=True)  # (N, M, 3000) in
        return _stack(out.hidden_states, self.layers)  # (L, N, 1500, D)


class FrozenW2VBert(nn.Module):
    """`facebook/w2v-bert-2.0`. Input `(B, T, 160)` SeamlessM4T features at 50 Hz, T a multiple of 1500.

    Each chunk is masked to its valid frames (attention and the conformer convolutions honour the mask).
    """

    def __init__(self, model: nn.Module, layers: list[int], chunk: int = 1500):
        super().__init__()
        self.model, self.layers, self.chunk = model, list(layers), chunk
        freeze(self)

    def train(self, mode: bool = True) -> FrozenW2VBert:
        return super().train(False)

    @property
    def feature_dim(self) -> int:
        return self.model.config.feature_projection_input_dim

    def output_lengths(self, lens: Tensor) -> Tensor:
        return lens.long()

    @torch.no_grad()
    def forward(self, feats: Tensor, lens: Tensor) -> tuple[Tensor, Tensor]:
        feats, lens = to_module_device(self, feats, lens)
        check_input("w2vbert", feats, lens, self.chunk, self.feature_dim)
        return encode_chunked(self._encode, feats, lens, self.chunk, self.output_lengths(lens))

    def _encode(self, x: Tensor, x_lens: Tensor) -> Tensor:
        mask = torch.arange(x.shape[1], device=x.device)[None, :] < x_lens[:, None]  # (N, C)
        dtype = self.model.feature_projection.projection.weight.dtype
        out = self.model(input_features=x.to(dtype), attention_mask=mask.long(), output_hidden_states=True)
        return _stack(out.hidden_states, self.layers)  # (L, N, 1500, D)


# ---------------------------------------------------------------------------------------------------------------
# per-format facts: how to build from config.json, which checkpoint key feeds which parameter


def _build_whisper(cfg: dict, layers: list[int]) -> nn.Module:
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    # the window the checkpoint encodes: 2 mel frames per position (30 s = 3000 frames, or fewer, e.g. 10 s), a
    # divisor of the 3000-frame pieces the front-end pads to
    chunk = 2 * int(cfg.get("max_source_positions", 1500))
    if chunk <= 0 or FEATURES['whisper'].chunk % chunk:
        raise CheckpointMismatch(f"whisper config.json: max_source_positions={cfg.get('max_source_positions')} "
                                 f"gives {chunk}-frame windows, which do not divide the front-end's "
                                 f"{FEATURES['whisper'].chunk}-frame pieces; use 1500 (30 s) or a divisor such as 500 (10 s)")
    return FrozenWhisper(WhisperEncoder(WhisperConfig(**_hf_fields(cfg))), layers, chunk)


def _build_w2vbert(cfg: dict, layers: list[int]) -> nn.Module:
    from transformers import Wav2Vec2BertConfig, Wav2Vec2BertModel

    return FrozenW2VBert(Wav2Vec2BertModel(Wav2Vec2BertConfig(**_hf_fields(cfg))), layers)


def _build_muq(cfg: dict, layers: list[int]) -> nn.Module:
    from alarm.model.muq import FrozenMuQ, MuQModel

    return FrozenMuQ(MuQModel(cfg), layers)


def _build_sslam(cfg: dict, layers: list[int]) -> nn.Module:
    from alarm.model.sslam import EAT, FrozenSSLAM

    return FrozenSSLAM(EAT(cfg), layers)


def _hf_fields(cfg: dict) -> dict:
    return {k: v for k, v in cfg.items() if k not in ("model_type", "transformers_version")}


def _whisper_key(key: str) -> str | None:
    # WhisperForConditionalGeneration: model.encoder.*; WhisperModel: encoder.*. Decoder keys are not ours.
    for prefix in ("model.encoder.", "encoder."):
        if key.startswith(prefix):
            return "model." + key[len(prefix):]
    return None


def _w2vbert_key(key: str) -> str | None:
    return "model." + key.removeprefix("wav2vec2_bert.")


def _muq_key(key: str) -> str | None:
    from alarm.model.muq import UNUSED_KEYS

    return None if key.startswith(UNUSED_KEYS) else key


def _sslam_key(key: str) -> str | None:
    from alarm.model.sslam import UNUSED_KEYS

    return None if key.startswith(UNUSED_KEYS) else key


@dataclass(frozen=True)
class _Format:
    build: Callable[[dict, list[int]], nn.Module]
    key: Callable[[str], str | None]  # checkpoint key -> parameter name, None = not used by the encoder
    hidden: str  # config.json field holding D
    depth: str  # config.json field holding the layer count
    states_per_depth: int  # hidden states = depth + this (embedding output counted or not)
    model_type: str | None  # required config.json model_type, if the format has one
    features: str | None  # config.json field holding F of the (B, T, F) inputs; None for raw waveforms
    optional: tuple[str, ...] = ("num_batches_tracked",)  # may be absent from a checkpoint (zero-filled)
    defaults: dict[str, Any] = field(default_factory=dict)  # the config class defaults a config.json may omit


_FORMATS: dict[str, _Format] = {
    "whisper": _Format(_build_whisper, _whisper_key, "d_model", "encoder_layers", 1, "whisper",
                       "num_mel_bins", defaults={"num_mel_bins": 80}),  # WhisperConfig
    "w2vbert": _Format(_build_w2vbert, _w2vbert_key, "hidden_size", "num_hidden_layers", 1, "wav2vec2-bert",
                       "feature_projection_input_dim",
                       optional=("num_batches_tracked", "masked_spec_embed"),  # SpecAugment only
                       defaults={"feature_projection_input_dim": 160}),  # Wav2Vec2BertConfig
    "muq": _Format(_build_muq, _muq_key, "encoder_dim", "encoder_depth", 1, None, None,
                   defaults={"encoder_dim": 1024, "encoder_depth": 12}),  # MuQConfig
    "sslam": _Format(_build_sslam, _sslam_key, "embed_dim", "depth", 0, "eat", "mel_bins",
                     defaults={"embed_dim": 768, "depth": 12, "mel_bins": 128}),  # EATConfig
}
_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                 "pytorch_model.bin.index.json")


def _spec(kind: str) -> EncoderSpec:
    if kind not in ENCODERS:
        raise ValueError(f"unknown encoder {kind!r}; expected one of {sorted(ENCODERS)}")
    return ENCODERS[kind]


def _check_layers(kind: str, layers: list[int], n_states: int, where: str) -> None:
    bad = [i for i in layers if not 0 <= i < n_states]
    if not layers or bad:
        raise CheckpointMismatch(
            f"{where}: {kind} has {n_states} hidden states (indices 0..{n_states - 1}), but "
            f"layers={list(layers)} taps {bad or 'nothing'}; fix encoders.{kind}.layers"
        )


def build_encoder_meta(kind: str, layers: list[int] | None = None, tiny: bool = False) -> nn.Module:
    """The full-size (or tiny) encoder on the meta device from the spec's config, without any files."""
    spec, fmt = _spec(kind), _FORMATS[kind]
    cfg = spec.tiny_config if tiny else spec.real_config
    layers = list(layers if layers is not None else (spec.tiny_layers if tiny else spec.layers))
    where = f"{kind} spec ({'tiny' if tiny else 'real'})"
    _check_layers(kind, layers, int(cfg[fmt.depth]) + fmt.states_per_depth, where)
    with torch.device("meta"):
        return fmt.build(cfg, layers).to("meta")  # .to: a few legacy constructors ignore the device context


# ---------------------------------------------------------------------------------------------------------------
# loading


def load_encoder(
    kind: str,
    folder: str | Path,
    layers: list[int],
    hidden_size: int | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> nn.Module:
    """Load a frozen encoder from a local folder in the published checkpoint's format.

    Args:
        kind: "whisper", "w2vbert", "muq" or "sslam".
        folder: config.json + weights (model.safetensors, a sharded index, or pytorch_model.bin).
        layers: hidden-state indices to return, in this order.
        hidden_size: expected D (config `encoders.<kind>.hidden_size`); checked when given.
        device, dtype: where and in which float type the weights live.

    Raises:
        CheckpointError: the folder, its config.json or its weight files are missing or unreadable.
        CheckpointMismatch: hidden size, layer indices, or any weight name or shape differs from what the
            config.json architecture needs.
    """
    folder = Path(folder)
    cfg, fmt = _load_config(kind, folder), _FORMATS[kind]
    found_d = cfg.get(fmt.hidden)
    if hidden_size is not None and found_d != hidden_size:
        raise CheckpointMismatch(
            f"{folder}/config.json: {fmt.hidden}={found_d}, but encoders.{kind}.hidden_size={hidden_size}; "
            f"set hidden_size to {found_d} or use a checkpoint of width {hidden_size}"
        )
    _check_layers(kind, list(layers), int(cfg[fmt.depth]) + fmt.states_per_depth, str(folder))
    with torch.device("meta"):
        module = fmt.build(cfg, list(layers))
    tensors, origin = _read_weights(kind, folder, fmt.key)
    _assign(module, tensors, origin, folder, kind, fmt.optional, dtype)
    return freeze(module.to(device))


def checkpoint_feature_dim(kind: str, folder: str | Path) -> int | None:
    """F of the `(B, T, F)` features the checkpoint in `folder` takes (None: raw waveform), from config.json
    alone: what `load_encoder(kind, folder, ...).feature_dim` is, for processes that extract features without
    loading the encoder (the training data pipeline).

    Raises:
        CheckpointError, CheckpointMismatch: as `load_encoder` for the folder and its config.json.
    """
    cfg, fmt = _load_config(kind, Path(folder)), _FORMATS[kind]
    return None if fmt.features is None else int(cfg[fmt.features])


def _load_config(kind: str, folder: Path) -> dict:
    """config.json over the format's defaults, with the model_type checked."""
    spec, fmt = _spec(kind), _FORMATS[kind]
    cfg = {**fmt.defaults, **_read_config(kind, folder, spec)}
    if fmt.model_type is not None and cfg.get("model_type", fmt.model_type) != fmt.model_type:
        raise CheckpointMismatch(
            f"{folder}/config.json: expected model_type {fmt.model_type!r} for the {kind} encoder, found "
            f"{cfg.get('model_type')!r}; point encoders.{kind}.checkpoint at a {spec.checkpoint} checkpoint"
        )
    return cfg


def _read_config(kind: str, folder: Path, spec: EncoderSpec) -> dict:
    fix = f"download {spec.checkpoint} there, or write a tiny one with TINY_BUILDERS[{kind!r}](folder)"
    if not folder.is_dir():
        raise CheckpointError(
            f"{kind} checkpoint folder {folder} does not exist; expected config.json and one of "
            f"{list(_WEIGHT_FILES)} in it; {fix}"
        )
    path = folder / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{kind} checkpoint {folder} has no config.json (expected {path}); {fix}")
    try:
        cfg = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path}: unreadable config.json ({e})") from e
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{path}: expected a JSON object, found {type(cfg).__name__}")
    # PyTorchModelHubMixin (MuQ) writes the `config` init argument flat; accept a nested one too
    return cfg["config"] if set(cfg) == {"config"} and isinstance(cfg["config"], dict) else cfg


def _weight_files(kind: str, folder: Path) -> list[Path]:
    for name in _WEIGHT_FILES:
        path = folder / name
        if path.is_file():
            if not name.endswith(".index.json"):
                return [path]
            try:
                shards = sorted(set(json.loads(path.read_text())["weight_map"].values()))
            except (OSError, ValueError, KeyError, AttributeError) as e:
                raise CheckpointError(f"{path}: unreadable shard index ({e!r})") from e
            missing = [s for s in shards if not (folder / s).is_file()]
            if missing:
                raise CheckpointError(f"{path} lists shards missing from {folder}: {missing}")
            return [folder / s for s in shards]
    raise CheckpointError(
        f"{kind} checkpoint {folder} has no weights: expected one of {list(_WEIGHT_FILES)}, found "
        f"{sorted(p.name for p in folder.iterdir())}"
    )


def _read_weights(
    kind: str, folder: Path, key: Callable[[str], str | None]
) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Tensors this encoder uses, by parameter name, and each name's original checkpoint key."""
    from safetensors import SafetensorError, safe_open

    tensors: dict[str, Tensor] = {}
    origin: dict[str, str] = {}
    for path in _weight_files(kind, folder):
        try:
            if path.suffix == ".safetensors":
                with safe_open(str(path), framework="pt", device="cpu") as f:
                    for k in f.keys():
                        if (name := key(k)) is not None:
                            tensors[name], origin[name] = f.get_tensor(k), k
            else:
                for k, v in torch.load(path, map_location="cpu", weights_only=True, mmap=True).items():
                    if (name := key(k)) is not None:
                        tensors[name], origin[name] = v, k
        except (SafetensorError, OSError, RuntimeError, ValueError) as e:
            raise CheckpointError(f"{path}: unreadable weight file ({e})") from e
    return tensors, origin


def _assign(module: nn.Module, tensors: dict[str, Tensor], origin: dict[str, str], folder: Path, kind: str,
            optional: tuple[str, ...], dtype: torch.dtype) -> None:
    """Load `tensors` into the meta-device `module` key by key, or raise CheckpointMismatch naming the key."""
    expected = module.state_dict()
    unexpected = sorted(set(tensors) - set(expected))
    if unexpected:
        raise CheckpointMismatch(
            f"{folder}: unexpected {kind} weight {origin[unexpected[0]]!r} ({len(unexpected)} in all: "
            f"{[origin[k] for k in unexpected[:5]]}); the config.json architecture has no such parameter — "
            "is this the right checkpoint and config?"
        )
    missing = [k for k in expected if k not in tensors and not k.endswith(optional)]
    if missing:
        raise CheckpointMismatch(
            f"{folder}: {kind} weight {missing[0]!r} is missing ({len(missing)} in all: {missing[:5]}); "
            "expected by the config.json architecture — the weight file is incomplete or renamed"
        )
    for k, ref in expected.items():
        if k in tensors and tuple(tensors[k].shape) != tuple(ref.shape):
            raise CheckpointMismatch(
                f"{folder}: {kind} weight {origin[k]!r} has shape {tuple(tensors[k].shape)}, expected "
                f"{tuple(ref.shape)} from config.json; config and weights disagree"
            )
    state = {}
    for k, ref in expected.items():
        t = tensors.get(k, torch.zeros(ref.shape, dtype=ref.dtype))
        state[k] = t.to(dtype) if t.is_floating_point() else t
    module.load_state_dict(state, strict=True, assign=True)
    left = [n for n, t in [*module.named_parameters(), *module.named_buffers()] if t.is_meta]
    assert not left, f"{kind}: tensors left on the meta device after loading: {left[:5]}"


# ---------------------------------------------------------------------------------------------------------------
# tiny checkpoints (random weights, real on-disk formats)


def random_state(shapes: dict[str, Tensor], seed: int) -> dict[str, Tensor]:
    """Deterministic random tensors for a state dict layout (norm scales near 1, weights ~ 1/sqrt(fan_in))."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name in sorted(shapes):
        shape, dtype = tuple(shapes[name].shape), shapes[name].dtype
        if not dtype.is_floating_point:
            t = torch.zeros(shape, dtype=dtype)
        elif name.endswith("running_var"):
            t = 1.0 + 0.1 * torch.rand(shape, generator=g)
        elif len(shape) <= 1 and name.endswith("weight"):
            t = 1.0 + 0.1 * torch.randn(shape, generator=g)
        elif len(shape) <= 1:
            t = 0.1 * torch.randn(shape, generator=g)
        else:
            t = torch.randn(shape, generator=g) / math.sqrt(math.prod(shape[1:]))
        out[name] = t.to(torch.float32 if dtype.is_floating_point else dtype).contiguous()
    return out


def _write(out_dir: Path, config: dict, tensors: dict[str, Tensor]) -> None:
    from safetensors.torch import save_file

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    save_file(tensors, str(out_dir / "model.safetensors"), metadata={"format": "pt"})


def build_tiny_whisper(out_dir: Path, seed: int = 0) -> None:
    """A WhisperForConditionalGeneration folder (config, model.safetensors, preprocessor_config.json)."""
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration

    config = WhisperConfig(**ENCODERS["whisper"].tiny_config)
    with torch.device("meta"):
        model = WhisperForConditionalGeneration(config)
    shapes = {k: v for k, v in model.state_dict().items() if k != "proj_out.weight"}  # tied to embed_tokens
    cfg = {**config.to_diff_dict(), "architectures": ["WhisperForConditionalGeneration"]}
    _write(Path(out_dir), cfg, random_state(shapes, seed))
    WhisperFeatureExtractor(feature_size=128).to_json_file(str(Path(out_dir) / "preprocessor_config.json"))


def build_tiny_w2vbert(out_dir: Path, seed: int = 0) -> None:
    """A Wav2Vec2BertModel folder (config, model.safetensors, preprocessor_config.json)."""
    from transformers import SeamlessM4TFeatureExtractor, Wav2Vec2BertConfig, Wav2Vec2BertModel

    config = Wav2Vec2BertConfig(**ENCODERS["w2vbert"].tiny_config)
    with torch.device("meta"):
        model = Wav2Vec2BertModel(config)
    cfg = {**config.to_diff_dict(), "architectures": ["Wav2Vec2BertModel"]}
    _write(Path(out_dir), cfg, random_state(model.state_dict(), seed))
    SeamlessM4TFeatureExtractor().to_json_file(str(Path(out_dir) / "preprocessor_config.json"))


def build_tiny_muq(out_dir: Path, seed: int = 0) -> None:
    """A MuQ.from_pretrained folder (config.json = MuQConfig fields, model.safetensors with "model." keys).

    Also writes the tensors the real checkpoint carries but the encoder does not use (head, quantizer,
    positional conv, rotary inv_freq), so that loading exercises the same skip list.
    """
    from alarm.model.muq import MuQModel

    cfg = ENCODERS["muq"].tiny_config
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
    _write(Path(out_dir), dict(cfg), tensors)


def build_tiny_sslam(out_dir: Path, seed: int = 0) -> None:
    """An EATModel folder as `ta012/SSLAM_AS2M_Finetuned` (config.json + model.safetensors, "model." keys)."""
    from alarm.model.sslam import EAT, sincos_positions

    cfg = ENCODERS["sslam"].tiny_config
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
    _write(Path(out_dir), dict(cfg), tensors)


TINY_BUILDERS: dict[str, Callable[[Path, int], None]] = {
    "whisper": build_tiny_whisper,
    "w2vbert": build_tiny_w2vbert,
    "muq": build_tiny_muq,
    "sslam": build_tiny_sslam,
}
