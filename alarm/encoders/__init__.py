"""The frozen audio encoders: one record per family (this registry) and one module per family.

    fam = family("whisper")              # the record: rates, chunk, width, default layers, configs
    code = fam.code()                    # its module: wrapper, checkpoint format, front-end, tiny builder

The records are plain data and import without torch (`alarm.config` validates encoder names against them); each
record names its family's module by import path, imported on first use. The front-end table
(`alarm.audio.features.feature_spec`), the frame arithmetic (`alarm.model.audio_adapter.encoder_frames`), the
config's encoder names and the tiny checkpoints (`tiny://<name>`) are all derived from these records, so adding a
family is one module (see `alarm.encoders.whisper` for what it defines) plus one `register(EncoderFamily(...))`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from alarm.errors import ConfigError


@dataclass(frozen=True, eq=False)
class EncoderFamily:
    """Static facts about one encoder family. Configs are the checkpoint's own config.json fields (do not mutate).

    `module` must define `FORMAT` (an `alarm.encoders.checkpoint.CheckpointFormat`), `FRONT_END` (an
    `alarm.audio.features.FrontEnd`) and `build_tiny(out_dir, seed)`.
    """

    name: str
    module: str  # import path of the family's code
    checkpoint: str  # the paper's checkpoint (hub id)
    revision: str  # commit sha the real presets pin
    sample_rate: int  # Hz of the audio the front-end consumes
    input_rate: int  # encoder input frames per second (samples per second for a raw waveform)
    output_rate: int  # encoder output frames per second (nominal)
    feature_dim: int | None  # F of the real checkpoint's (B, T, F) inputs; None for raw waveforms (B, N)
    chunk: int  # input frames (samples) per independently encoded chunk
    min_samples: int  # shortest input (at sample_rate) that yields one valid frame
    layers: list[int]  # default tapped hidden states of the real checkpoint
    real_config: dict[str, Any] = field(repr=False)
    tiny_config: dict[str, Any] = field(repr=False)
    tiny_layers: list[int] = field(default_factory=list)

    def code(self) -> ModuleType:
        """The family's module (imported on first use)."""
        return importlib.import_module(self.module)


FAMILIES: dict[str, EncoderFamily] = {}


def register(record: EncoderFamily) -> EncoderFamily:
    """Add a family. Raises ValueError if the name is taken."""
    if record.name in FAMILIES:
        raise ValueError(f"encoder family {record.name!r} is already registered (from {FAMILIES[record.name].module})")
    FAMILIES[record.name] = record
    return record


def family(name: str) -> EncoderFamily:
    """The record of `name`. Raises ConfigError listing the valid names."""
    if name not in FAMILIES:
        raise ConfigError(f"unknown encoder {name!r}; valid: {', '.join(FAMILIES)}")
    return FAMILIES[name]


# ---------------------------------------------------------------------------------------------------------------
# the paper's four families

_WHISPER_TINY = {"d_model": 16, "encoder_layers": 2, "encoder_attention_heads": 2, "encoder_ffn_dim": 32,
                 "decoder_layers": 1, "decoder_attention_heads": 2, "decoder_ffn_dim": 32, "num_mel_bins": 128,
                 "max_source_positions": 1500, "max_target_positions": 16, "vocab_size": 64, "pad_token_id": 0,
                 "bos_token_id": 1, "eos_token_id": 2, "decoder_start_token_id": 1, "suppress_tokens": [],
                 "begin_suppress_tokens": [3]}
_W2VBERT_REAL = {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16, "intermediate_size": 4096,
                 "feature_projection_input_dim": 160, "hidden_act": "swish",
                 "position_embeddings_type": "relative_key", "left_max_position_embeddings": 64,
                 "right_max_position_embeddings": 8, "conv_depthwise_kernel_size": 31, "add_adapter": False,
                 "output_hidden_size": 1024}
_W2V2_REAL = {  # MuQ's w2v2_config: conformer settings (hidden size and depth come from encoder_dim/depth)
    "hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16, "intermediate_size": 4096,
    "hidden_act": "swish", "conv_depthwise_kernel_size": 31, "position_embeddings_type": "rotary",
    "rotary_embedding_base": 10000, "layer_norm_eps": 1e-5, "num_conv_pos_embeddings": 128,
    "num_conv_pos_embedding_groups": 16, "model_type": "wav2vec2-conformer",
}
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

register(EncoderFamily(
    name="whisper", module="alarm.encoders.whisper",
    checkpoint="openai/whisper-large-v3", revision="06f233fe06e710322aca913c1bc4249a0d71fce1",
    sample_rate=16000, input_rate=100, output_rate=50, feature_dim=128, chunk=3000, min_samples=1,
    layers=[7, 15, 23, 31],
    real_config={"d_model": 1280, "encoder_layers": 32, "encoder_attention_heads": 20, "encoder_ffn_dim": 5120,
                 "decoder_layers": 32, "decoder_attention_heads": 20, "decoder_ffn_dim": 5120,
                 "num_mel_bins": 128, "max_source_positions": 1500, "max_target_positions": 448,
                 "vocab_size": 51866},
    tiny_config=_WHISPER_TINY, tiny_layers=[1, 2],
))
register(EncoderFamily(
    name="w2vbert", module="alarm.encoders.w2vbert",
    checkpoint="facebook/w2v-bert-2.0", revision="da985ba0987f70aaeb84a80f2851cfac8c697a7b",
    # two fbank frames need 240 samples once 2 x 160 are padded on; one frame has no variance to normalise
    sample_rate=16000, input_rate=50, output_rate=50, feature_dim=160, chunk=1500, min_samples=240,
    layers=[6, 10, 15, 20, 24],
    real_config=_W2VBERT_REAL,
    tiny_config={**_W2VBERT_REAL, "hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2,
                 "intermediate_size": 32, "output_hidden_size": 16},
    tiny_layers=[1, 2],
))
register(EncoderFamily(
    name="muq", module="alarm.encoders.muq",
    checkpoint="OpenMuQ/MuQ-large-msd-iter", revision="0562a57814f6f8bbd9fdea0a25921a2fce1a841a",
    sample_rate=24000, input_rate=24000, output_rate=25, feature_dim=None, chunk=720_000, min_samples=1,
    layers=[4, 8, 12],
    real_config={**_MUQ_BASE, "codebook_size": 4096, "conv_dim": 512, "encoder_dim": 1024, "encoder_depth": 12,
                 "w2v2_config": _W2V2_REAL},
    tiny_config={**_MUQ_BASE, "codebook_size": 64, "conv_dim": 8, "encoder_dim": 16, "encoder_depth": 2,
                 "w2v2_config": {**_W2V2_REAL, "hidden_size": 16, "num_hidden_layers": 2,
                                 "num_attention_heads": 2, "intermediate_size": 32}},
    tiny_layers=[1, 2],
))
register(EncoderFamily(
    name="sslam", module="alarm.encoders.sslam",
    checkpoint="ta012/SSLAM_AS2M_Finetuned", revision="150a38ceca16cc8e56bf626147c7a9325e252f2d",
    # one Kaldi frame (400 samples) needs 80 once 2 x 160 are padded on
    sample_rate=16000, input_rate=100, output_rate=50, feature_dim=128, chunk=1024, min_samples=80,
    layers=[3, 7, 11],
    real_config={**_EAT_BASE, "embed_dim": 768, "depth": 12, "num_heads": 12, "mlp_ratio": 4.0, "max_length": 768,
                 "num_classes": 527},
    tiny_config={**_EAT_BASE, "embed_dim": 16, "depth": 2, "num_heads": 2, "mlp_ratio": 2.0, "max_length": 64,
                 "num_classes": 8},
    tiny_layers=[0, 1],
))
