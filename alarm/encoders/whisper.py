"""Whisper (`openai/whisper-large-v3`, or any Whisper): the transformers encoder, its log-mel front-end, its
checkpoint format and its tiny checkpoint. `whisper_ct2` converts CTranslate2 Whisper folders into this format.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from transformers.audio_utils import mel_filter_bank

from alarm.audio.features import FrontEnd
from alarm.encoders import family
from alarm.encoders.base import FrozenEncoder, stack
from alarm.encoders.checkpoint import CheckpointFormat, hf_fields, random_state, write_folder
from alarm.errors import CheckpointMismatch

PIECE = 480_000  # 30 s at 16 kHz
N_FFT, HOP = 400, 160
MEL_BINS = (80, 128)  # Whisper v1/v2 (tiny .. large-v2), large-v3


class FrozenWhisper(FrozenEncoder):
    """Input `(B, T_mel, M)` log-mel, T_mel a multiple of 3000, M = the checkpoint's `num_mel_bins` (128 for
    large-v3, 80 for tiny.en).

    No mask: the Whisper encoder always sees full windows (padding included), as in the reference: 3000 frames
    (30 s), or `chunk` = 2 x max_source_positions for a checkpoint with a shorter audio context.
    """

    name = "whisper"

    @property
    def feature_dim(self) -> int:
        return self.model.config.num_mel_bins

    def output_lengths(self, lens: Tensor) -> Tensor:
        return lens.long() // 2  # conv2 has stride 2: 100 -> 50 Hz

    def encode(self, x: Tensor, x_lens: Tensor) -> Tensor:
        dtype = self.model.conv1.weight.dtype
        # all 33 states are materialised before selection (~250 MB per chunk in fp32), as in the reference
        out = self.model(x.transpose(1, 2).to(dtype), output_hidden_states=True)  # (N, M, 3000) in
        return stack(out.hidden_states, self.layers)  # (L, N, 1500, D)


# ---------------------------------------------------------------------------------------------------------------
# checkpoint format: WhisperForConditionalGeneration or WhisperModel folders


def build(cfg: dict, layers: list[int]) -> nn.Module:
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    # the window the checkpoint encodes: 2 mel frames per position (30 s = 3000 frames, or fewer, e.g. 10 s), a
    # divisor of the 3000-frame pieces the front-end pads to
    piece = family("whisper").chunk
    chunk = 2 * int(cfg.get("max_source_positions", 1500))
    if chunk <= 0 or piece % chunk:
        raise CheckpointMismatch(f"whisper config.json: max_source_positions={cfg.get('max_source_positions')} "
                                 f"gives {chunk}-frame windows, which do not divide the front-end's {piece}-frame "
                                 f"pieces; use 1500 (30 s) or a divisor such as 500 (10 s)")
    return FrozenWhisper(WhisperEncoder(WhisperConfig(**hf_fields(cfg))), layers, chunk)


def checkpoint_key(key: str) -> str | None:
    # WhisperForConditionalGeneration: model.encoder.*; WhisperModel: encoder.*. Decoder keys are not ours.
    for prefix in ("model.encoder.", "encoder."):
        if key.startswith(prefix):
            return "model." + key[len(prefix):]
    return None


FORMAT = CheckpointFormat(build, checkpoint_key, hidden="d_model", depth="encoder_layers", states_per_depth=1,
                          model_type="whisper", features="num_mel_bins",
                          defaults={"num_mel_bins": 80})  # WhisperConfig's


# ---------------------------------------------------------------------------------------------------------------
# front-end


@functools.cache
def _mel(n_mels: int) -> torch.Tensor:
    """(201, n_mels) Slaney mel filters of `WhisperFeatureExtractor(feature_size=n_mels)`."""
    m = mel_filter_bank(
        num_frequency_bins=1 + N_FFT // 2, num_mel_filters=n_mels, min_frequency=0.0,
        max_frequency=8000.0, sampling_rate=16000, norm="slaney", mel_scale="slaney",
    )
    return torch.from_numpy(m).float()


def valid_frames(samples: int) -> int:
    """The extractor's attention mask: ceil(N / 160) mel frames."""
    return -(-samples // HOP)


def whisper_features(samples: np.ndarray, feature_dim: int = 128) -> tuple[torch.Tensor, int]:
    """Whisper log-mel: 30 s pieces, each zero-padded to 3000 frames and normalised on its own.

    Matches `WhisperFeatureExtractor(feature_size=feature_dim)` called on the list of 30 s pieces (the
    reference), then concatenated along time. Valid length = `valid_frames(N)`.

    Args:
        feature_dim: mel bins, the checkpoint's `num_mel_bins` (128: large-v3, 80: every earlier Whisper).

    Returns:
        `(3000 * ceil(N / 480000), feature_dim)` float32 and the valid frame count.
    """
    n = len(samples)
    pieces = math.ceil(n / PIECE)
    wave = torch.zeros(pieces * PIECE, dtype=torch.float32)
    wave[:n] = torch.from_numpy(samples)
    wave = wave.view(pieces, PIECE)  # (P, 480000)
    window = torch.hann_window(N_FFT)
    stft = torch.stft(wave, N_FFT, HOP, window=window, return_complex=True)  # (P, 201, 3001)
    power = (stft[..., :-1].abs() ** 2).contiguous()  # (P, 201, 3000)
    log_spec = torch.clamp(_mel(feature_dim).T @ power, min=1e-10).log10()  # (P, M, 3000)
    peak = log_spec.amax(dim=(1, 2), keepdim=True)  # per 30 s piece, as the extractor does per batch item
    log_spec = (torch.maximum(log_spec, peak - 8.0) + 4.0) / 4.0
    feats = log_spec.transpose(1, 2).reshape(pieces * (PIECE // HOP), feature_dim)  # (T, M)
    return feats, valid_frames(n)


FRONT_END = FrontEnd(whisper_features, valid_frames, widths=MEL_BINS)


# ---------------------------------------------------------------------------------------------------------------
# tiny checkpoint


def build_tiny(out_dir: Path, seed: int = 0, config: dict | None = None) -> None:
    """A WhisperForConditionalGeneration folder (config, model.safetensors, preprocessor_config.json) with random
    weights: the family's tiny config, or `config` (e.g. its real_config for a full-size random checkpoint)."""
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration

    config = WhisperConfig(**(config or family("whisper").tiny_config))
    with torch.device("meta"):
        model = WhisperForConditionalGeneration(config)
    shapes = {k: v for k, v in model.state_dict().items() if k != "proj_out.weight"}  # tied to embed_tokens
    cfg = {**config.to_diff_dict(), "architectures": ["WhisperForConditionalGeneration"]}
    write_folder(Path(out_dir), cfg, random_state(shapes, seed))
    WhisperFeatureExtractor(feature_size=128).to_json_file(str(Path(out_dir) / "preprocessor_config.json"))
