"""Fusions: registry, shapes and lengths, per-stream masks (D12), padding invariance, the perceiver's +62."""

from __future__ import annotations

from typing import get_args

import pytest
import torch

from alarm.config import CrossAttentionFusionConfig, FusionConfig, PerceiverFusionConfig, SumFusionConfig
from alarm.model.audio_adapter import encoder_frames
from alarm.model.fusion import FUSIONS, CrossAttentionFusion, PerceiverFusion, SumFusion

torch.set_num_threads(1)

DURATIONS = [0.3, 10.0, 31.0, 59.9]
D_LLM = 32
COND = ("w2vbert", "muq", "sslam")
CA_CFG = CrossAttentionFusionConfig(d_model=16, num_heads=2, ffn_dim=32)
P_CFG = PerceiverFusionConfig(num_latents=20, latent_dim=16, cross_heads=2, self_heads=2, self_layers=2, self_repeats=2)
NATIVE = {"w2vbert": 24, "muq": 24, "sslam": 16}  # ALARM-P conditional streams keep their encoder widths


def lengths_25hz() -> dict[str, torch.Tensor]:
    """Adapter output lengths (25 Hz) of every encoder for DURATIONS."""
    out = {}
    for k in ("whisper", *COND):
        n = torch.tensor([encoder_frames(k, d) for d in DURATIONS])
        out[k] = n if k == "muq" else (n + 1) // 2
    return out


def native_lengths() -> dict[str, torch.Tensor]:
    """Main stream at 25 Hz, conditional streams at their encoders' rates (identity adapters)."""
    out = {k: torch.tensor([encoder_frames(k, d) for d in DURATIONS]) for k in COND}
    out["whisper"] = lengths_25hz()["whisper"]
    return out


def make_streams(lens: dict[str, torch.Tensor], dims: dict[str, int], seed: int = 0, garbage: float = 0.0):
    """Random streams; positions past each length hold `garbage`-scaled noise (0 = zeros)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, n in lens.items():
        T = int(n.max()) + 3  # padded beyond the longest item too
        x = torch.randn(len(n), T, dims[k], generator=g)
        pad = ~(torch.arange(T)[None] < n[:, None])
        out[k] = torch.where(pad[..., None], garbage * torch.randn(x.shape, generator=g), x)
    return out


def assert_padding_invariant(fusion, streams, lens, atol=1e-5):
    """Every item's valid output equals the output for that item alone, cropped to its own lengths."""
    y, y_lens = fusion(streams, lens)
    for i in range(len(y_lens)):
        alone_s = {k: x[i : i + 1, : int(lens[k][i])] for k, x in streams.items()}
        alone_l = {k: n[i : i + 1] for k, n in lens.items()}
        alone, alone_lens = fusion(alone_s, alone_l)
        n = int(y_lens[i])
        assert int(alone_lens) == n and alone.shape[1] == n
        torch.testing.assert_close(y[i, :n], alone[0], atol=atol, rtol=1e-4)


def test_registry_keys_match_config_literals():
    literals = {m.model_fields["kind"].default for m in get_args(get_args(FusionConfig)[0])}
    assert set(FUSIONS) == literals == {"sum", "cross_attention", "perceiver"}


# ---------------------------------------------------------------------------------------------------------------
# sum


def test_sum_is_identity_with_one_encoder():
    lens = {"whisper": lengths_25hz()["whisper"]}
    streams = make_streams(lens, {"whisper": D_LLM})
    f = FUSIONS["sum"](SumFusionConfig(), {"whisper": D_LLM}, D_LLM)
    y, y_lens = f(streams, lens)
    assert y.shape == streams["whisper"].shape and torch.equal(y_lens, lens["whisper"])
    assert torch.equal(y, streams["whisper"])  # padding is already zero here


def test_sum_shapes_lengths_and_padding_invariance():
    lens = lengths_25hz()
    lens["muq"] = lens["muq"] - torch.tensor([1, 0, 2, 1])  # lengths differ per encoder
    dims = dict.fromkeys(lens, D_LLM)
    streams = make_streams(lens, dims, garbage=50.0)
    f = FUSIONS["sum"](SumFusionConfig(), dims, D_LLM)
    assert isinstance(f, SumFusion)
    y, y_lens = f(streams, lens)
    assert y.shape == (4, max(x.shape[1] for x in streams.values()), D_LLM)
    assert torch.equal(y_lens, torch.stack(list(lens.values())).amax(0))
    assert y_lens.tolist() == [8, 250, 775, 1498]
    assert_padding_invariant(f, streams, lens)


def test_sum_rejects_unprojected_streams():
    with pytest.raises(ValueError, match="muq"):
        FUSIONS["sum"](SumFusionConfig(), {"whisper": D_LLM, "muq": 24}, D_LLM)


# ---------------------------------------------------------------------------------------------------------------
# cross_attention


def build_ca() -> CrossAttentionFusion:
    torch.manual_seed(0)
    return FUSIONS["cross_attention"](CA_CFG, dict.fromkeys(("whisper", *COND), D_LLM), D_LLM).eval()


def test_cross_attention_shapes_and_lengths():
    f = build_ca()
    assert [type(layer).__name__ for layer in f.layers.values()] == ["TransformerDecoderLayer"] * 3
    assert list(f.layers) == list(COND) and all(layer.norm_first for layer in f.layers.values())
    lens = lengths_25hz()
    streams = make_streams(lens, dict.fromkeys(lens, D_LLM))
    y, y_lens = f(streams, lens)
    assert y.shape == (4, streams["whisper"].shape[1], D_LLM)
    assert torch.equal(y_lens, lens["whisper"]) and y_lens.tolist() == [8, 250, 775, 1498]


def test_cross_attention_padding_invariance():
    lens = lengths_25hz()
    lens["sslam"] = lens["sslam"] - torch.tensor([3, 7, 0, 100])  # conditional streams shorter than main
    streams = make_streams(lens, dict.fromkeys(lens, D_LLM), garbage=10.0)
    assert_padding_invariant(build_ca(), streams, lens)


def test_cross_attention_masks_each_stream_with_its_own_lengths():
    f = build_ca()
    lens = lengths_25hz()
    lens["muq"] = lens["muq"] // 2  # muq much shorter than the main stream
    clean = make_streams(lens, dict.fromkeys(lens, D_LLM), seed=1, garbage=0.0)
    dirty = {k: v.clone() for k, v in clean.items()}
    pad = ~(torch.arange(dirty["muq"].shape[1])[None] < lens["muq"][:, None])
    dirty["muq"][pad] = 30.0 * torch.randn(int(pad.sum()), D_LLM)
    y_clean, _ = f(clean, lens)
    y_dirty, _ = f(dirty, lens)
    valid = torch.arange(y_clean.shape[1])[None] < lens["whisper"][:, None]
    torch.testing.assert_close(y_clean[valid], y_dirty[valid], atol=1e-5, rtol=1e-4)
    # with the reference's main-length memory mask (D12) the garbage would leak in
    leaky = dict(lens, muq=lens["whisper"])
    assert not torch.allclose(f(dirty, leaky)[0][valid], y_clean[valid], atol=1e-3)


def test_cross_attention_rejects_missing_stream():
    with pytest.raises(ValueError, match="sslam"):
        FUSIONS["cross_attention"](CA_CFG, dict.fromkeys(("whisper", "w2vbert", "muq"), D_LLM), D_LLM)


# ---------------------------------------------------------------------------------------------------------------
# perceiver


def build_p() -> PerceiverFusion:
    torch.manual_seed(0)
    return FUSIONS["perceiver"](P_CFG, {"whisper": D_LLM, **NATIVE}, D_LLM).eval()


def test_perceiver_returns_a_tensor_with_62_extra_tokens():
    f = build_p()
    lens = native_lengths()
    streams = make_streams(lens, {"whisper": D_LLM, **NATIVE})
    out = f(streams, lens)
    assert isinstance(out, tuple) and len(out) == 2
    y, y_lens = out
    assert isinstance(y, torch.Tensor) and y.shape == (4, 62 + streams["whisper"].shape[1], D_LLM)
    assert torch.equal(y_lens, lens["whisper"] + 62) and y_lens.tolist() == [70, 312, 837, 1560]
    assert torch.equal(f.output_lengths(lens), y_lens)
    # layout: [cond_start] + 3 × 20 latents + [cond_end] + main tokens
    assert torch.equal(y[:, 0], f.cond_start.expand(4, -1))
    assert torch.equal(y[:, 61], f.cond_end.expand(4, -1))
    for i, n in enumerate(lens["whisper"].tolist()):
        assert torch.equal(y[i, 62 : 62 + n], streams["whisper"][i, :n])
        assert torch.all(y[i, 62 + n :] == 0)


def test_perceiver_padding_invariance_and_own_masks():
    f = build_p()
    lens = native_lengths()
    streams = make_streams(lens, {"whisper": D_LLM, **NATIVE}, seed=2, garbage=30.0)
    assert_padding_invariant(f, streams, lens)
    clean = make_streams(lens, {"whisper": D_LLM, **NATIVE}, seed=2, garbage=0.0)
    torch.testing.assert_close(f(clean, lens)[0][:, :62], f(streams, lens)[0][:, :62], atol=1e-5, rtol=1e-4)


def test_perceiver_structure_and_init():
    f = build_p()
    p = f.perceivers["w2vbert"]
    assert p.latents.shape == (20, 16) and len(p.block) == 2 and p.self_repeats == 2
    assert p.cross.attn.k_proj.in_features == NATIVE["w2vbert"]
    assert f.perceivers["sslam"].cross.attn.k_proj.in_features == NATIVE["sslam"]
    assert f.cond_start.shape == f.cond_end.shape == (1, D_LLM)
    assert 0.01 < float(p.block[0].attn.q_proj.weight.detach().std()) < 0.03  # N(0, 0.02)


def test_perceiver_gradients_reach_latents_and_separators():
    f = build_p().train()
    lens = native_lengths()
    streams = make_streams({k: v[:2] for k, v in lens.items()}, {"whisper": D_LLM, **NATIVE})
    y, _ = f(streams, {k: v[:2] for k, v in lens.items()})
    y.sum().backward()
    assert f.perceivers["muq"].latents.grad.abs().sum() > 0 and f.cond_start.grad.abs().sum() > 0


def test_perceiver_rejects_unprojected_main():
    with pytest.raises(ValueError, match="encoders.whisper"):
        FUSIONS["perceiver"](P_CFG, {"whisper": 16, **NATIVE}, D_LLM)
