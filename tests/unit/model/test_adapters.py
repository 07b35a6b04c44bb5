"""Layer mixing and the per-encoder adapters: shapes, the ÷2 length rule, padding invariance, masked BatchNorm."""

from __future__ import annotations

from typing import get_args

import pytest
import torch
from torch import nn

from alarm.config import AdapterConfig, DownsampleAdapterConfig, IdentityAdapterConfig, MLPAdapterConfig
from alarm.model.adapters import ADAPTERS, MLP, Downsample, Identity, LayerMix, MaskedBatchNorm1d
from alarm.model.audio_adapter import encoder_frames

torch.set_num_threads(1)

DURATIONS = [0.3, 10.0, 31.0, 59.9]
D_ENC, WIDTH, D_LLM = 16, 32, 32


def batch(lens: list[int], d: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    lens_t = torch.tensor(lens)
    return torch.randn(len(lens), max(lens), d, generator=g), lens_t  # (B, T, D)


def test_registry_keys_match_config_literals():
    literals = {m.model_fields["kind"].default for m in get_args(get_args(AdapterConfig)[0])}
    assert set(ADAPTERS) == literals == {"downsample", "mlp", "identity"}


def test_registry_builds_each_kind():
    assert isinstance(ADAPTERS["downsample"](DownsampleAdapterConfig(width=WIDTH), D_ENC, D_LLM), Downsample)
    assert isinstance(ADAPTERS["mlp"](MLPAdapterConfig(width=WIDTH), D_ENC, D_LLM), MLP)
    ident = ADAPTERS["identity"](IdentityAdapterConfig(), D_ENC, D_LLM)
    assert isinstance(ident, Identity) and ident.out_dim == D_ENC and not list(ident.parameters())


def test_layer_mix_weights_sum_to_one_and_gradients_reach_logits():
    mix = LayerMix(4)
    assert mix.logits.dtype == torch.float32 and torch.equal(mix.logits, torch.zeros(4))
    assert torch.allclose(mix.weights(), torch.full((4,), 0.25))
    with torch.no_grad():
        mix.logits.copy_(torch.tensor([0.5, -1.0, 2.0, 0.0]))
    assert torch.allclose(mix.weights().sum(), torch.tensor(1.0))
    states = torch.randn(4, 2, 7, 5)  # (L, B, T, D)
    out = mix(states)
    assert out.shape == (2, 7, 5)
    expected = (mix.weights()[:, None, None, None] * states).sum(0)
    assert torch.allclose(out, expected, atol=1e-6)
    out.square().sum().backward()
    assert mix.logits.grad is not None and mix.logits.grad.abs().sum() > 0


def test_layer_mix_rejects_wrong_layer_count():
    with pytest.raises(ValueError, match="L=3"):
        LayerMix(3)(torch.randn(4, 1, 2, 5))


@pytest.mark.parametrize("norm", ["batch", "layer"])
@pytest.mark.parametrize("d_enc", [D_ENC, WIDTH])
def test_downsample_shapes_and_lengths(norm, d_enc):
    ad = Downsample(d_enc, WIDTH, D_LLM, norm).eval()
    assert (ad.input_proj is None) == (d_enc == WIDTH)
    lens = [encoder_frames("whisper", d) for d in DURATIONS]  # 50 Hz: [15, 500, 1550, 2995]
    x, lens_t = batch(lens, d_enc)
    y, out_lens = ad(x, lens_t)
    assert y.shape == (4, (max(lens) + 1) // 2, D_LLM)
    assert out_lens.tolist() == [(n + 1) // 2 for n in lens] == ad.output_lengths(lens_t).tolist()
    for i, n in enumerate(out_lens.tolist()):  # zero past each length
        assert torch.all(y[i, n:] == 0) and y[i, :n].abs().sum() > 0


def test_downsample_is_25_tokens_per_second():
    ad = Downsample(D_ENC, WIDTH, D_LLM)
    for dur, tokens in [(30.0, 750), (60.0, 1500), (10.0, 250)]:
        n = encoder_frames("whisper", dur)  # 50 Hz
        assert n == 50 * dur and int(ad.output_lengths(torch.tensor([n]))) == tokens


@pytest.mark.parametrize("norm", ["batch", "layer"])
def test_downsample_padding_invariance_eval(norm):
    ad = Downsample(D_ENC, WIDTH, D_LLM, norm)
    if norm == "batch":  # non-trivial running statistics
        ad.train()
        x, lens_t = batch([40, 33], D_ENC, seed=3)
        ad(x, lens_t)
    ad.eval()
    lens = [15, 500, 1551, 2995, 8]  # odd and even lengths
    x, lens_t = batch(lens, D_ENC, seed=1)
    x = x + 100.0 * (~(torch.arange(x.shape[1])[None] < lens_t[:, None]))[..., None]  # garbage in padding
    y, out_lens = ad(x, lens_t)
    for i, n in enumerate(lens):
        alone, alone_lens = ad(x[i : i + 1, :n], lens_t[i : i + 1])
        m = int(out_lens[i])
        assert alone.shape[1] == m == int(alone_lens)
        torch.testing.assert_close(y[i, :m], alone[0], atol=1e-5, rtol=1e-5)


def test_masked_batchnorm_statistics_use_valid_frames_only():
    torch.manual_seed(0)
    C, lens = 6, torch.tensor([9, 4, 7])
    x = torch.randn(3, C, 9)  # (B, C, T)
    mask = torch.arange(9)[None] < lens[:, None]
    garbage = torch.where(mask[:, None], x, torch.full_like(x, 1e3))
    a, b = MaskedBatchNorm1d(C), MaskedBatchNorm1d(C)
    ya, yb = a(x * mask[:, None], mask), b(garbage, mask)
    torch.testing.assert_close(a.running_mean, b.running_mean)
    torch.testing.assert_close(a.running_var, b.running_var)
    torch.testing.assert_close(ya * mask[:, None], yb * mask[:, None])
    # same as plain BatchNorm1d over the concatenated valid frames
    ref = nn.BatchNorm1d(C)
    valid = torch.cat([x[i, :, :n] for i, n in enumerate(lens.tolist())], dim=1)[None]  # (1, C, sum lens)
    yr = ref(valid)
    torch.testing.assert_close(a.running_mean, ref.running_mean)
    torch.testing.assert_close(a.running_var, ref.running_var)
    torch.testing.assert_close(ya[0, :, :9], yr[0, :, :9], atol=1e-5, rtol=1e-5)
    assert int(a.num_batches_tracked) == 1


def test_masked_batchnorm_keeps_batchnorm_state_dict_names():
    assert MaskedBatchNorm1d(8).state_dict().keys() == nn.BatchNorm1d(8).state_dict().keys()
    MaskedBatchNorm1d(8).load_state_dict(nn.BatchNorm1d(8).state_dict())


def test_downsample_bf16_autocast_runs():
    ad = Downsample(D_ENC, WIDTH, D_LLM, "batch").train()
    x, lens = batch([11, 6], D_ENC)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, _ = ad(x, lens)
    assert y.shape == (2, 6, D_LLM) and torch.isfinite(y).all()


def test_mlp_and_identity_keep_the_rate():
    lens = [encoder_frames("muq", d) for d in DURATIONS]  # 25 Hz
    assert lens[1] == 250
    x, lens_t = batch(lens, D_ENC)
    mlp = MLP(D_ENC, WIDTH, D_LLM)
    y, out = mlp(x, lens_t)
    assert y.shape == (4, max(lens), D_LLM) and torch.equal(out, lens_t)
    assert torch.all(y[0, lens[0] :] == 0)
    alone, _ = mlp(x[:1, : lens[0]], lens_t[:1])
    torch.testing.assert_close(y[0, : lens[0]], alone[0])
    y, out = Identity(D_ENC)(x, lens_t)
    assert y is x and torch.equal(out, lens_t)


def test_adapter_parameter_names():
    names = set(dict(Downsample(D_ENC, WIDTH, D_LLM, "batch").named_parameters()))
    assert {"input_proj.weight", "conv1.weight", "norm1.weight", "conv2.weight", "norm2.bias"} <= names
    assert {"llm_proj.weight", "llm_proj.bias"} <= names
    assert set(dict(MLP(D_ENC, WIDTH, D_LLM).named_parameters())) == {
        f"{m}.{p}" for m in ("fc1", "fc2", "llm_proj") for p in ("weight", "bias")
    }
