"""A family added in a test (`convstack`: one module + the record below) goes through every path the paper's four
do: config validation, tiny build and strict loading, feature extraction, frame arithmetic, the AudioAdapter."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from alarm.audio.features import collate, extract_features, feature_spec
from alarm.config import ConfigError, ModelConfig, load_config, validate
from alarm.encoders import FAMILIES, EncoderFamily, register
from alarm.encoders.checkpoint import build_encoder_meta, checkpoint_feature_dim, load_encoder
from alarm.errors import CheckpointMismatch
from alarm.model.audio_adapter import audio_token_count, build_audio_adapter, encoder_frames
from alarm.tiny import ensure_tiny
from alarm.types import Waveform

torch.set_num_threads(1)

RECORD = EncoderFamily(
    name="convstack", module="tests.unit.encoders.convstack",
    checkpoint="example/convstack", revision="0" * 40,
    sample_rate=16000, input_rate=100, output_rate=50, feature_dim=80, chunk=1000, min_samples=80,
    layers=[2, 4, 6],
    real_config={"model_type": "convstack", "hidden_size": 256, "num_layers": 6, "num_mel_bins": 80},
    tiny_config={"model_type": "convstack", "hidden_size": 16, "num_layers": 2, "num_mel_bins": 80},
    tiny_layers=[1, 2],
)
ENCODER = {"checkpoint": "tiny://convstack", "hidden_size": 16, "layers": [1, 2],
           "adapter": {"kind": "downsample", "width": 32, "norm": "layer"}}


@pytest.fixture
def convstack():
    register(RECORD)
    yield RECORD
    del FAMILIES[RECORD.name]


def model_cfg(**fusion) -> dict:
    tiny = load_config(ModelConfig, "tiny").model_dump()
    return {**tiny, "encoders": {"convstack": ENCODER, "whisper": tiny["encoders"]["whisper"]},
            "fusion": fusion or {"kind": "sum"}}


def test_the_config_accepts_it_once_registered(convstack):
    cfg = validate(ModelConfig, model_cfg(kind="cross_attention", main="whisper", order=["convstack"], d_model=16,
                                          num_heads=2, ffn_dim=32))
    assert set(cfg.encoders) == {"convstack", "whisper"} and cfg.fusion.order == ["convstack"]
    cfg = load_config(ModelConfig, "tiny", [f"encoders.convstack={json.dumps(ENCODER)}",
                                            "fusion.order=[w2vbert, muq, sslam, convstack]"])
    assert cfg.encoders["convstack"].layers == [1, 2]


def test_the_config_names_the_registered_families_only():
    with pytest.raises(ConfigError, match=r"encoders.convstack.\[key\]: Input should be 'whisper', 'w2vbert', 'muq' "
                                          r"or 'sslam'"):
        validate(ModelConfig, model_cfg())
    with pytest.raises(ConfigError, match="unknown key 'encoders.convstack'; valid keys under encoders: whisper, "
                                          "w2vbert, muq, sslam"):
        load_config(ModelConfig, "tiny", [f"encoders.convstack={json.dumps(ENCODER)}"])
    for value in ("[whisper, muq]", "{whisper: 1}", "3"):  # not even a name: the same message, no traceback
        with pytest.raises(ConfigError, match=r"fusion.main: Input should be 'whisper', 'w2vbert', 'muq' or 'sslam'"):
            load_config(ModelConfig, "tiny", [f"fusion.main={value}"])


def test_tiny_build_and_strict_load(convstack, tmp_path):
    folder = ensure_tiny("convstack", tmp_path)
    assert folder.name.startswith("convstack-v2-") and checkpoint_feature_dim("convstack", folder) == 80
    enc = load_encoder("convstack", folder, [2, 0], hidden_size=16)
    assert enc.layers == [2, 0] and enc.chunk == 1000 and not enc.training
    meta = build_encoder_meta("convstack", tiny=True)
    assert {k: v.shape for k, v in meta.state_dict().items()} == {k: v.shape for k, v in enc.state_dict().items()}
    assert 1.1e6 < sum(p.numel() for p in build_encoder_meta("convstack").parameters()) < 1.3e6
    with pytest.raises(CheckpointMismatch, match="3 hidden states"):
        load_encoder("convstack", folder, [3])


def test_features_frames_and_the_adapter(convstack, tmp_path):
    enc = load_encoder("convstack", ensure_tiny("convstack", tmp_path), [1, 2], hidden_size=16)
    rng = np.random.default_rng(0)
    durations = [0.3, 10.0, 12.7]
    waves = [Waveform((0.1 * rng.standard_normal(round(44100 * d))).astype(np.float32), 44100) for d in durations]
    feats = collate("convstack", [extract_features("convstack", w) for w in waves])
    assert feats.values.shape == (3, 2000, 80) and feature_spec("convstack").sample_rate == 16000
    states, lens = enc(feats.values, feats.lens)
    assert lens.tolist() == [encoder_frames("convstack", d, 44100) for d in durations]
    assert states.shape == (2, 3, int(lens.max()), 16)

    cfg = validate(ModelConfig, {**model_cfg(), "encoders": {"convstack": ENCODER}})
    adapter = build_audio_adapter(cfg).eval()
    embeds, n = adapter({"convstack": states}, {"convstack": lens})
    assert embeds.shape == (3, int(n.max()), cfg.llm.hidden_size)
    assert n.tolist() == [audio_token_count(cfg, d, 44100) for d in durations]
