"""Every model preset builds: real presets on the meta device (no download), with the paper's sizes."""

import pytest
import torch

from alarm.config import ModelConfig, load_config, preset_names
from alarm.encoders.checkpoint import build_encoder_meta, checkpoint_format
from alarm.model.audio_adapter import audio_token_count, build_audio_adapter
from alarm.model.llm import QWEN3_4B_THINKING_2507, build_llm_meta
from alarm.tiny.pretrained import WHISPER_TINY_EN
from alarm.tiny.qwen3 import TINY_QWEN3
from alarm.tiny.teacher import TEACHER_ARCH

REAL = ["alarm-ca", "alarm-p", "al-whisper"]


def n_params(module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("name", preset_names("model"))
def test_preset_builds_on_meta(name):
    cfg = load_config(ModelConfig, name)
    tiny = name not in REAL
    for enc_name, enc in cfg.encoders.items():
        spec, fmt = checkpoint_format(enc_name)
        if enc.checkpoint.startswith("pretrained://whisper-tiny.en"):  # toy: a real small Whisper, no meta spec for it
            assert enc.hidden_size == WHISPER_TINY_EN["d_model"]
            assert max(enc.layers) <= WHISPER_TINY_EN["encoder_layers"]
            continue
        if not tiny:
            assert enc.hidden_size == spec.real_config[fmt.hidden], f"encoders.{enc_name}.hidden_size"
            assert enc.checkpoint == spec.checkpoint and enc.revision == spec.revision
        module = build_encoder_meta(enc_name, enc.layers, tiny=tiny)
        assert all(p.is_meta for p in module.parameters())
    with torch.device("meta"):
        adapter = build_audio_adapter(cfg)
    assert n_params(adapter) > 0
    arch = TEACHER_ARCH if cfg.llm.checkpoint == "tiny://qwen3-teacher" else TINY_QWEN3 if tiny else \
        QWEN3_4B_THINKING_2507
    assert (arch["hidden_size"], arch["vocab_size"]) == (cfg.llm.hidden_size, cfg.llm.vocab_size)


def test_real_llm_architecture_on_meta():
    llm = build_llm_meta(QWEN3_4B_THINKING_2507)
    assert 4.0e9 < n_params(llm) < 4.1e9  # Qwen3-4B: 4.02B with tied embeddings


@pytest.mark.parametrize("name, trainable", [("al-whisper", 18.63e6), ("alarm-ca", 63.5e6 + 58.76e6),
                                             ("alarm-p", 81.23e6 + 18.63e6)])
def test_adapter_sizes_match_the_paper(name, trainable):
    cfg = load_config(ModelConfig, name)
    with torch.device("meta"):
        adapter = build_audio_adapter(cfg)
    assert abs(n_params(adapter) - trainable) / trainable < 0.01


@pytest.mark.parametrize("name, s30, s60", [("alarm-ca", 752, 1502), ("alarm-p", 814, 1564),
                                             ("al-whisper", 752, 1502)])
def test_token_budget(name, s30, s60):
    cfg = load_config(ModelConfig, name)
    assert audio_token_count(cfg, 30.0) == s30 and audio_token_count(cfg, 60.0) == s60
