"""AudioAdapter: composition, wrapping with audio separators, length bookkeeping (25 tokens/s), freezing, sizes."""

from __future__ import annotations

import pytest
import torch

from alarm.config import ModelConfig
from alarm.model.adapters import LayerMix
from alarm.model.audio_adapter import AudioAdapter, audio_token_count, build_audio_adapter, encoder_frames
from alarm.model.fusion import SumFusion

torch.set_num_threads(1)

DURATIONS = [0.3, 10.0, 31.0, 59.9]

TINY_ENCODERS = {
    "whisper": {"checkpoint": "tiny://whisper", "hidden_size": 16, "layers": [1, 2],
                "adapter": {"kind": "downsample", "width": 32, "norm": "batch"}},
    "w2vbert": {"checkpoint": "tiny://w2vbert", "hidden_size": 24, "layers": [0, 1, 2],
                "adapter": {"kind": "downsample", "width": 24, "norm": "layer"}},
    "muq": {"checkpoint": "tiny://muq", "hidden_size": 24, "layers": [1, 2],
            "adapter": {"kind": "mlp", "width": 32}},
    "sslam": {"checkpoint": "tiny://sslam", "hidden_size": 16, "layers": [0, 1],
              "adapter": {"kind": "downsample", "width": 32, "norm": "layer"}},
}
TINY_FUSIONS = {
    "sum": {"kind": "sum"},
    "cross_attention": {"kind": "cross_attention", "d_model": 16, "num_heads": 2, "ffn_dim": 32},
    "perceiver": {"kind": "perceiver", "num_latents": 20, "latent_dim": 16, "cross_heads": 2, "self_heads": 2,
                  "self_layers": 2, "self_repeats": 2},
}


def tiny_cfg(fusion: str, encoders=("whisper", "w2vbert", "muq", "sslam"), *, summary: int = 0,
             reads: str = "fused", count: bool = False, drop_frames: float = 0.0, **enc_overrides) -> ModelConfig:
    encs = {k: dict(TINY_ENCODERS[k]) for k in encoders}
    if fusion == "perceiver":
        for k in encoders[1:]:
            encs[k]["adapter"] = {"kind": "identity"}
    for k, extra in enc_overrides.items():
        encs[k].update(extra)
    return ModelConfig.model_validate({
        "name": f"tiny-{fusion}", "llm": {"checkpoint": "tiny://qwen3", "hidden_size": 32, "vocab_size": 64},
        "encoders": encs, "fusion": TINY_FUSIONS[fusion], "summary": {"tokens": summary, "heads": 2, "reads": reads,
                                                                   "count": count, "drop_frames": drop_frames},
    })


def full_cfg(fusion: str) -> ModelConfig:
    encs = {
        "whisper": {"hidden_size": 1280, "layers": [7, 15, 23, 31], "adapter": {"kind": "downsample", "norm": "batch"}},
        "w2vbert": {"hidden_size": 1024, "layers": [6, 10, 15, 20, 24], "adapter": {"kind": "downsample"}},
        "muq": {"hidden_size": 1024, "layers": [4, 8, 12], "adapter": {"kind": "mlp"}},
        "sslam": {"hidden_size": 768, "layers": [3, 7, 11], "adapter": {"kind": "downsample"}},
    }
    if fusion == "sum":
        encs = {"whisper": encs["whisper"]}
    if fusion == "perceiver":
        for k in ("w2vbert", "muq", "sslam"):
            encs[k]["adapter"] = {"kind": "identity"}
    return ModelConfig.model_validate({
        "name": f"full-{fusion}", "llm": {"checkpoint": "Qwen/Qwen3-4B-Thinking-2507", "hidden_size": 2560,
                                          "vocab_size": 151936},
        "encoders": {k: {"checkpoint": k, **v} for k, v in encs.items()}, "fusion": {"kind": fusion},
    })


def encoder_batch(cfg: ModelConfig, durations=DURATIONS, seed=0):
    """Random tapped states (L, B, T, D) and lengths at each encoder's real output rate."""
    g = torch.Generator().manual_seed(seed)
    states, lens = {}, {}
    for k, e in cfg.encoders.items():
        n = torch.tensor([encoder_frames(k, d) for d in durations])
        states[k] = torch.randn(len(e.layers), len(durations), int(n.max()), e.hidden_size, generator=g)
        lens[k] = n
    return states, lens


# ---------------------------------------------------------------------------------------------------------------
# token counts


def test_every_encoder_reaches_25_tokens_per_second_after_its_adapter():
    cfg = full_cfg("cross_attention")
    for k in cfg.encoders:
        frames = encoder_frames(k, 30.0)
        assert frames == (750 if k == "muq" else 1500)
    adapter = build_audio_adapter(tiny_cfg("cross_attention"))
    for k in cfg.encoders:
        n = torch.tensor([encoder_frames(k, 30.0), encoder_frames(k, 60.0)])
        assert adapter.adapters[k].output_lengths(n).tolist() == [750, 1500]


def test_audio_token_count_matches_the_method():
    assert audio_token_count(full_cfg("sum"), 30.0) == 752
    assert audio_token_count(full_cfg("sum"), 60.0) == 1502
    assert audio_token_count(full_cfg("cross_attention"), 30.0) == 752
    assert audio_token_count(full_cfg("cross_attention"), 60.0) == 1502
    assert audio_token_count(full_cfg("perceiver"), 30.0) == 814
    assert audio_token_count(full_cfg("perceiver"), 60.0) == 1564
    assert audio_token_count(full_cfg("sum"), 0.0) == 3  # min one token


# ---------------------------------------------------------------------------------------------------------------
# forward


@pytest.mark.parametrize("fusion", ["sum", "cross_attention", "perceiver"])
def test_forward_wraps_and_counts(fusion):
    torch.manual_seed(0)
    cfg = tiny_cfg(fusion)
    adapter = build_audio_adapter(cfg).eval()
    states, lens = encoder_batch(cfg)
    with torch.no_grad():
        embeds, out_lens = adapter(states, lens)
    expected = [audio_token_count(cfg, d) for d in DURATIONS]
    assert out_lens.tolist() == expected == adapter.output_lengths(lens).tolist()
    extra = 64 if fusion == "perceiver" else 2
    assert expected[1] == 250 + extra and expected[3] == 1498 + extra
    assert embeds.shape == (4, max(expected), 32)
    for i, n in enumerate(expected):
        assert torch.equal(embeds[i, 0], adapter.audio_start)
        assert torch.equal(embeds[i, n - 1], adapter.audio_end)
        assert torch.all(embeds[i, n:] == 0)
    parts = adapter.split(embeds, out_lens)
    assert [p.shape for p in parts] == [(n, 32) for n in expected]


@pytest.mark.parametrize(("summary", "reads", "count"),
                         [(0, "fused", False), (3, "fused", False), (3, "whisper", False), (3, "muq", False),
                          (2, "fused", True), (2, "whisper", True)])
@pytest.mark.parametrize("fusion", ["sum", "cross_attention", "perceiver"])
def test_forward_is_padding_invariant(fusion, summary, reads, count):
    torch.manual_seed(0)
    cfg = tiny_cfg(fusion, summary=summary, reads=reads, count=count)
    adapter = build_audio_adapter(cfg).eval()
    durations = [0.3, 3.1, 1.7]
    states, lens = encoder_batch(cfg, durations, seed=4)
    with torch.no_grad():
        embeds, out_lens = adapter(states, lens)
        for i in range(len(durations)):
            alone, alone_lens = adapter(
                {k: s[:, i : i + 1, : int(lens[k][i])] for k, s in states.items()},
                {k: n[i : i + 1] for k, n in lens.items()},
            )
            assert int(alone_lens) == int(out_lens[i])
            torch.testing.assert_close(embeds[i, : int(out_lens[i])], alone[0], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("fusion", ["sum", "perceiver"])
def test_summary_tokens_follow_the_frames_before_the_end_vector(fusion):
    torch.manual_seed(0)
    plain = build_audio_adapter(tiny_cfg(fusion)).eval()
    cfg = tiny_cfg(fusion, summary=3)
    adapter = build_audio_adapter(cfg).eval()
    missing, unexpected = adapter.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing and all(k.startswith("summary.") for k in missing)
    states, lens = encoder_batch(cfg, [0.3, 3.1, 0.0])
    with torch.no_grad():
        base, base_lens = plain(states, lens)
        embeds, out_lens = adapter(states, lens)
    assert out_lens.tolist() == (base_lens + 3).tolist() == adapter.output_lengths(lens).tolist()
    assert out_lens.tolist() == [audio_token_count(cfg, d) for d in (0.3, 3.1, 0.0)]
    if fusion == "sum":
        assert out_lens[2] == 1 + 3 + 2  # an empty clip keeps its one zero frame, then the summary
    for i, n in enumerate(base_lens.tolist()):
        torch.testing.assert_close(embeds[i, : n - 1], base[i, : n - 1])  # start vector + the frames, unchanged
        tokens = embeds[i, n - 1 : n + 2]
        assert tokens.abs().sum(-1).min() > 0 and not torch.equal(tokens[0], tokens[1])
        assert torch.equal(embeds[i, n + 2], adapter.audio_end) and torch.all(embeds[i, n + 3 :] == 0)


def test_summary_tokens_learn_and_count_in_token_arithmetic():
    cfg = tiny_cfg("sum", encoders=("whisper",), summary=2)
    adapter = build_audio_adapter(cfg).train()
    states, lens = encoder_batch(cfg, [1.0, 0.5])
    embeds, _ = adapter(states, lens)
    embeds.square().sum().backward()
    assert adapter.summary.queries.grad.abs().sum() > 0
    assert adapter.adapters["whisper"].conv1.weight.grad.abs().sum() > 0
    full = full_cfg("sum").model_copy(update={"summary": {"tokens": 4}})
    full = ModelConfig.model_validate(full.model_dump())
    assert audio_token_count(full, 30.0) == 756 and audio_token_count(full, 0.0) == 7
    with pytest.raises(ValueError, match="summary.heads=3 must divide llm.hidden_size=32"):
        ModelConfig.model_validate({**tiny_cfg("sum").model_dump(), "summary": {"tokens": 2, "heads": 3}})


def test_the_count_token_adds_one_position_and_sums_the_events_it_detects():
    """`summary.count`: one more token after the summary's (in the bookkeeping too), whose pre-projection value is
    a sum over frames: each further event adds the same amount, which an attention average cannot do."""
    from alarm.model.audio_adapter import Count

    cfg = tiny_cfg("sum", encoders=("whisper",), summary=2, reads="whisper", count=True)
    assert cfg.summary.total == 3
    adapter = build_audio_adapter(cfg).train()
    states, lens = encoder_batch(cfg, [1.0, 0.5])
    embeds, out_lens = adapter(states, lens)
    plain = build_audio_adapter(tiny_cfg("sum", encoders=("whisper",), summary=2, reads="whisper"))
    assert (out_lens - plain(states, lens)[1]).tolist() == [1, 1]
    assert out_lens.tolist() == [audio_token_count(cfg, d) for d in (1.0, 0.5)]
    embeds.square().sum().backward()
    assert adapter.summary.count.detect.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="summary.count adds to the summary tokens"):
        tiny_cfg("sum", encoders=("whisper",), summary=0, count=True)

    torch.manual_seed(0)
    count = Count(8, 16)
    event = torch.randn(8)

    def summed(k: int) -> torch.Tensor:
        x = torch.zeros(1, 40, 8)
        for j in range(k):
            x[0, 5 + 10 * j] = event
        return count.events(x, torch.ones(1, 40, dtype=torch.bool))[0]

    one, two, three = summed(1) - summed(0), summed(2) - summed(1), summed(3) - summed(2)
    assert one.abs().sum() > 0
    torch.testing.assert_close(two, one)
    torch.testing.assert_close(three, one)


def test_the_mlp_count_head_keeps_the_number_of_events_that_the_norm_head_loses():
    """`summary.count_head`: with a detector that fires on events alone, the sum is k times one event's output. A
    LayerNorm first (`norm`) gives the same token for every k; `mlp` gives each k its own. The option reaches the
    built adapter, and an adapter trained with one head does not fit a model with the other."""
    from alarm.model.audio_adapter import Count
    from alarm.model.checkpoint import fit_problems

    torch.manual_seed(0)
    event = torch.randn(16)
    tokens = {}
    for head in ("norm", "mlp"):
        count = Count(8, 16, head)
        tokens[head] = [count.out(k * event[None])[0] for k in (1, 2, 3)]
    for k in (1, 2):
        torch.testing.assert_close(tokens["norm"][k], tokens["norm"][0], rtol=1e-4, atol=1e-4)
        assert (tokens["mlp"][k] - tokens["mlp"][0]).abs().max() > 1e-2
    with pytest.raises(ValueError, match="count head must be 'norm' or 'mlp'"):
        Count(8, 16, "max")

    cfg = tiny_cfg("sum", encoders=("whisper",), summary=2, reads="whisper", count=True)
    mlp = ModelConfig.model_validate({**cfg.model_dump(), "summary": {**cfg.summary.model_dump(), "count_head": "mlp"}})
    assert cfg.summary.count_head == "norm"
    assert isinstance(build_audio_adapter(mlp).summary.count.out[1], torch.nn.GELU)
    assert isinstance(build_audio_adapter(cfg).summary.count.out[0], torch.nn.LayerNorm)
    assert [p for p in fit_problems(mlp, cfg, rebuild=True) if "count_head" in p], fit_problems(mlp, cfg, rebuild=True)


def test_dropped_frames_are_zeroed_in_training_only_and_the_summary_still_reads_them():
    """`summary.drop_frames`: in training mode some clips reach the LLM as zero frames plus their summary tokens,
    which are those of the intact clip; the rest are untouched, and eval mode never drops."""
    cfg = tiny_cfg("sum", encoders=("whisper",), summary=2, reads="whisper", count=True, drop_frames=0.5)
    torch.manual_seed(0)
    adapter = build_audio_adapter(cfg)
    plain = build_audio_adapter(tiny_cfg("sum", encoders=("whisper",), summary=2, reads="whisper", count=True))
    plain.load_state_dict(adapter.state_dict())
    states, lens = encoder_batch(cfg, [1.0, 0.5, 2.0, 1.5] * 4)
    with torch.no_grad():
        a, a_lens = adapter.train()(states, lens)
        b, b_lens = plain.train()(states, lens)
        assert torch.equal(a_lens, b_lens)
        dropped = []
        for i, n in enumerate(a_lens.tolist()):
            frames, rest = slice(1, n - 4), slice(n - 4, n)  # start, frames, 3 summary tokens, end
            torch.testing.assert_close(a[i, rest], b[i, rest])
            torch.testing.assert_close(a[i, 0], b[i, 0])
            if a[i, frames].abs().sum() == 0:
                dropped.append(i)
            else:
                torch.testing.assert_close(a[i, frames], b[i, frames])
        assert 0 < len(dropped) < len(a_lens)  # 16 clips at 0.5: some dropped, some kept
        torch.testing.assert_close(adapter.eval()(states, lens)[0], plain.eval()(states, lens)[0])
    with pytest.raises(ValueError, match="summary.drop_frames leaves a clip its summary tokens alone"):
        tiny_cfg("sum", encoders=("whisper",), summary=0, drop_frames=0.5)
    with pytest.raises(ValueError, match="drop_frames"):
        tiny_cfg("sum", encoders=("whisper",), summary=2, drop_frames=1.0)


@pytest.mark.parametrize("fusion", ["sum", "perceiver"])
def test_summary_can_read_an_encoders_states_before_its_adapter(fusion):
    """`summary.reads: whisper`: the queries read whisper's layer-mixed states (its width, its frame rate), so the
    summary tokens change with them even where the adapter's frames do not, and the frames are as with `fused`."""
    torch.manual_seed(0)
    fused = build_audio_adapter(tiny_cfg(fusion, summary=3)).eval()
    cfg = tiny_cfg(fusion, summary=3, reads="whisper")
    adapter = build_audio_adapter(cfg).eval()
    assert adapter.summary.read.kv_norm.normalized_shape == (TINY_ENCODERS["whisper"]["hidden_size"],)
    shared = {k: v for k, v in fused.state_dict().items() if not k.startswith("summary.")}
    adapter.load_state_dict(shared, strict=False)
    states, lens = encoder_batch(cfg, [0.3, 3.1, 1.0])
    with torch.no_grad():
        a, a_lens = fused(states, lens)
        b, b_lens = adapter(states, lens)
    assert torch.equal(a_lens, b_lens)
    for i, n in enumerate(b_lens.tolist()):
        torch.testing.assert_close(b[i, : n - 4], a[i, : n - 4])  # start vector + the frames
    # the summary sees what only the encoder states hold: a change the adapter's frames cannot show
    adapter.adapters["whisper"].llm_proj.weight.data.zero_()
    adapter.adapters["whisper"].llm_proj.bias.data.zero_()
    other = {k: (v + torch.randn_like(v) if k == "whisper" else v) for k, v in states.items()}
    with torch.no_grad():
        x, _ = adapter(states, lens)
        y, _ = adapter(other, lens)
    n = int(b_lens[1])
    assert not torch.allclose(x[1, n - 4 : n - 1], y[1, n - 4 : n - 1])
    if fusion == "sum":  # whisper is the only stream: its frames are zero either way
        torch.testing.assert_close(x[1, 1 : n - 4], y[1, 1 : n - 4])
    with pytest.raises(ValueError, match="summary.reads must be 'fused' or one of the encoders"):
        tiny_cfg(fusion, summary=3, reads="clap")


def test_single_encoder_gradients_reach_layer_mix_and_separators():
    cfg = tiny_cfg("sum", encoders=("whisper",))
    adapter = build_audio_adapter(cfg).train()
    states, lens = encoder_batch(cfg, [1.0, 0.5])
    embeds, _ = adapter(states, lens)
    embeds.square().sum().backward()
    assert adapter.mix["whisper"].logits.grad.abs().sum() > 0
    assert adapter.audio_start.grad.abs().sum() > 0 and adapter.audio_end.grad.abs().sum() > 0
    assert adapter.adapters["whisper"].conv1.weight.grad.abs().sum() > 0


def test_key_sets_must_match():
    with pytest.raises(ValueError, match=r"adapters \['muq', 'whisper'\].*fusion \['whisper'\]"):
        AudioAdapter({"whisper": torch.nn.Identity(), "muq": torch.nn.Identity()}, SumFusion(["whisper"]),
                     {"whisper": LayerMix(2), "muq": LayerMix(2)}, 32)


def test_forward_rejects_wrong_states():
    cfg = tiny_cfg("sum", encoders=("whisper",))
    adapter = build_audio_adapter(cfg)
    states, lens = encoder_batch(cfg, [1.0])
    with pytest.raises(ValueError, match="encoders.whisper.hidden_size"):
        adapter({"whisper": states["whisper"][..., :8]}, lens)
    with pytest.raises(ValueError, match=r"found states \[\]"):
        adapter({}, lens)


def test_separator_init_std():
    cfg = tiny_cfg("sum", encoders=("whisper",)).model_copy(update={"separator_init_std": 0.01})
    adapter = build_audio_adapter(cfg)
    assert float(adapter.audio_start.detach().abs().max()) < 0.1


# ---------------------------------------------------------------------------------------------------------------
# freezing


def test_frozen_adapter_stays_eval_and_batchnorm_does_not_drift():
    cfg = tiny_cfg("cross_attention")
    adapter = build_audio_adapter(cfg)
    adapter.freeze_adapter("whisper")
    adapter.train()
    bn = adapter.adapters["whisper"].norm1
    mean, var, count = bn.running_mean.clone(), bn.running_var.clone(), int(bn.num_batches_tracked)
    assert not adapter.adapters["whisper"].training and not adapter.mix["whisper"].training
    assert adapter.fusion.training and adapter.adapters["w2vbert"].training
    states, lens = encoder_batch(cfg, [1.0, 0.6])
    for _ in range(3):
        embeds, _ = adapter(states, lens)
        embeds.sum().backward()
    assert torch.equal(bn.running_mean, mean) and torch.equal(bn.running_var, var)
    assert int(bn.num_batches_tracked) == count
    assert all(p.grad is None for p in adapter.adapters["whisper"].parameters())
    assert adapter.mix["whisper"].logits.grad is None
    assert adapter.fusion.out_proj.weight.grad.abs().sum() > 0
    trainable = {id(p) for p in adapter.trainable_parameters()}
    assert not any(id(p) in trainable for p in adapter.adapters["whisper"].parameters())
    assert id(adapter.audio_start) in trainable and id(adapter.fusion.out_proj.weight) in trainable
    # an unfrozen BatchNorm adapter does update its statistics in train mode
    other = build_audio_adapter(cfg).train()
    other(states, lens)
    assert int(other.adapters["whisper"].norm1.num_batches_tracked) == 1


def test_freeze_unknown_encoder():
    adapter = build_audio_adapter(tiny_cfg("sum", encoders=("whisper",)))
    with pytest.raises(KeyError, match="muq"):
        adapter.freeze_adapter("muq")


# ---------------------------------------------------------------------------------------------------------------
# sizes at full scale (built on the meta device: no memory, no init cost)


def count(module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_full_size_parameter_counts_match_the_method():
    with torch.device("meta"):
        ca = build_audio_adapter(full_cfg("cross_attention"))
        p = build_audio_adapter(full_cfg("perceiver"))
    per_adapter = {k: count(ca.mix[k]) + count(ca.adapters[k]) for k in ca.encoders}
    estimates = {"whisper": 18.63e6, "w2vbert": 17.31e6, "sslam": 18.10e6, "muq": 4.72e6}
    for k, est in estimates.items():
        assert abs(per_adapter[k] - est) / est < 0.01, (k, per_adapter[k])
    assert per_adapter == {"whisper": 18_625_028, "w2vbert": 17_313_285, "sslam": 18_100_739, "muq": 4_723_203}
    assert abs(count(ca.fusion) - 63.5e6) / 63.5e6 < 0.01 and count(ca.fusion) == 63_503_872
    p_fusion = count(p.fusion) + sum(count(p.mix[k]) for k in ("w2vbert", "muq", "sslam"))
    assert abs(p_fusion - 81.2e6) / 81.2e6 < 0.01 and count(p.fusion) == 81_228_288
    assert count(ca) == sum(per_adapter.values()) + count(ca.fusion) + 2 * 2560
