"""Batching, the loss (label masking, truncation, gradient flow), optimizer, schedule and precision."""

import math
import warnings
from itertools import pairwise

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from alarm.config import OptimConfig
from alarm.errors import InvalidInput
from alarm.model.prompt import IGNORE, collate_training
from alarm.training.batch import bucket_by_length, collate_states, example_length, to_train_batch
from alarm.training.step import autocast_context, build_optimizer, build_scheduler, forward_loss
from tests.unit.training import TARGETS, build_model, make_examples


@pytest.fixture(scope="module")
def model():
    return build_model("tiny-whisper")


@pytest.fixture(scope="module")
def examples(model):
    return make_examples(model, 4)


def fake_example(key: str, frames: dict[str, int], dtype=np.float32) -> dict:
    ex = {"key": key, "source": "s", "prompt": "p", "target": "t"}
    for enc, t in frames.items():
        ex[f"states_{enc}"] = (np.arange(3 * t * 5).reshape(3, t, 5) + 1).astype(dtype)
    return ex


# -- batch.py ---------------------------------------------------------------------------------------------------


def test_collate_states_right_pads_with_zeros():
    exs = [fake_example("a", {"whisper": 4, "muq": 2}), fake_example("b", {"whisper": 7, "muq": 3}, np.float16)]
    states, lens = collate_states(exs, ["whisper", "muq"])
    assert states["whisper"].shape == (3, 2, 7, 5) and states["muq"].shape == (3, 2, 3, 5)
    assert states["whisper"].dtype == torch.float32 and lens["whisper"].dtype == torch.int64
    assert lens["whisper"].tolist() == [4, 7] and lens["muq"].tolist() == [2, 3]
    torch.testing.assert_close(states["whisper"][:, 0, :4], torch.from_numpy(exs[0]["states_whisper"]))
    assert states["whisper"][:, 0, 4:].abs().sum() == 0
    torch.testing.assert_close(states["whisper"][:, 1], torch.from_numpy(exs[1]["states_whisper"]).float())


def test_collate_states_names_the_bad_example():
    good, bad = fake_example("good", {"whisper": 4}), fake_example("bad", {"whisper": 4})
    bad["states_whisper"] = bad["states_whisper"][:2]  # L=2 instead of 3
    with pytest.raises(InvalidInput, match="'bad'.*states_whisper"):
        collate_states([good, bad], ["whisper"])
    bad = fake_example("nan", {"whisper": 4})
    bad["states_whisper"][1, 2, 3] = np.nan
    with pytest.raises(InvalidInput, match="'nan'.*non-finite"):
        collate_states([good, bad], ["whisper"])
    with pytest.raises(InvalidInput, match="no 'states_muq'"):
        collate_states([good], ["muq"])
    with pytest.raises(InvalidInput, match="must be strings"):
        to_train_batch([{**good, "target": None}], ["whisper"])


def test_to_train_batch_keeps_text_fields(examples):
    b = to_train_batch(examples, ["whisper"])
    assert len(b) == 4 and b.keys == [e["key"] for e in examples] and b.targets == [e["target"] for e in examples]
    assert b.lens["whisper"].tolist() == [e["states_whisper"].shape[1] for e in examples]


def test_bucket_by_length_is_seeded_and_limits_padding():
    items = [fake_example(str(i), {"whisper": t}) for i, t in enumerate(np.random.default_rng(0).integers(1, 500, 97))]
    a = bucket_by_length(items, example_length, 8, seed=1)
    assert [[x["key"] for x in b] for b in a] == [[x["key"] for x in b] for b in bucket_by_length(items, example_length, 8, seed=1)]
    assert [b[0]["key"] for b in a] != [b[0]["key"] for b in bucket_by_length(items, example_length, 8, seed=2)]
    assert len(a) == 12 and all(len(b) == 8 for b in a)  # drop_last: 97 = 12 x 8 + 1
    keys = [x["key"] for b in bucket_by_length(items, example_length, 8, seed=1, drop_last=False) for x in b]
    assert sorted(keys) == sorted(x["key"] for x in items)
    def padding(batches):
        return sum(len(b) * max(map(example_length, b)) - sum(map(example_length, b)) for b in batches)

    assert padding(a) < 0.2 * padding([items[i : i + 8] for i in range(0, 96, 8)])


# -- forward_loss -----------------------------------------------------------------------------------------------


def test_only_target_tokens_count(model, examples):
    torch.manual_seed(0)
    batch = to_train_batch(examples, ["whisper"])
    out = forward_loss(model.adapter, model.builder, model.llm, batch, max_length=4096)
    assert out.n_tokens == sum(len(model.builder.ids(t)) for t in TARGETS[:4])
    assert sum(n for _, n in out.per_source.values()) == out.n_tokens
    assert set(out.per_source) == {"src_a", "src_b"}
    assert math.isclose(sum(s for s, _ in out.per_source.values()) / out.n_tokens, out.loss.item(), rel_tol=1e-5)
    # the same loss from the LLM's own full logits, with labels only over the targets
    blocks = model.adapt({"whisper": _states(batch)})
    prompts = [model.builder.build_training(e["prompt"], blk, e["target"]) for e, blk in zip(examples, blocks, strict=True)]
    for p, e in zip(prompts, examples, strict=True):
        assert model.builder.tok.decode(p.input_ids[p.labels != IGNORE]) == e["target"]
    inp = collate_training(prompts)
    logits = model.llm(inputs_embeds=inp["inputs_embeds"], attention_mask=inp["attention_mask"]).logits
    ref = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), inp["labels"][:, 1:].flatten(), ignore_index=IGNORE)
    torch.testing.assert_close(out.loss, ref, rtol=1e-5, atol=1e-5)
    correct = (logits[:, :-1].argmax(-1) == inp["labels"][:, 1:]).sum().item()
    assert out.n_correct == correct


def _states(batch):
    from alarm.types import EncoderStates

    return EncoderStates("whisper", batch.states["whisper"], batch.lens["whisper"])


def test_targets_are_cut_at_max_length_without_touching_the_builder(model, examples):
    batch = to_train_batch(examples[:2], ["whisper"])
    full = forward_loss(model.adapter, model.builder, model.llm, batch, max_length=4096)
    blocks = model.adapt({"whisper": _states(batch)})
    prompt_len = [model.builder.build("What do you hear?", b).length for b in blocks]
    cut = forward_loss(model.adapter, model.builder, model.llm, batch, max_length=max(prompt_len) + 3)
    room = [max(prompt_len) + 3 - n for n in prompt_len]
    want = [min(r, len(model.builder.ids(t))) for r, t in zip(room, batch.targets, strict=True)]
    assert cut.n_tokens == sum(want) < full.n_tokens
    assert cut.n_truncated == sum(w < len(model.builder.ids(t)) for w, t in zip(want, batch.targets, strict=True)) >= 1
    assert full.n_truncated == 0
    assert model.builder.max_length == 4096
    with pytest.raises(InvalidInput, match="'ex0'.*max_length"):
        forward_loss(model.adapter, model.builder, model.llm, batch, max_length=min(prompt_len))


def test_gradients_reach_the_adapter_only(model, examples):
    adapter = model.adapter.train()
    adapter.zero_grad(set_to_none=True)
    out = forward_loss(adapter, model.builder, model.llm, to_train_batch(examples, ["whisper"]), 4096)
    out.loss.backward()
    for name, p in adapter.named_trainable_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    assert all(not p.requires_grad and p.grad is None for p in model.llm.parameters())
    assert all(not p.requires_grad and p.grad is None for enc in model.encoders.values() for p in enc.parameters())
    adapter.zero_grad(set_to_none=True)
    adapter.eval()


# -- optimizer, schedule, precision -----------------------------------------------------------------------------


def test_optimizer_holds_trainable_parameters_only():
    m = build_model("tiny", ["encoders.whisper.adapter.norm=layer"])
    m.adapter.freeze_adapter("whisper")
    opt = build_optimizer(m.adapter, OptimConfig(lr=2e-4))
    held = {id(p) for g in opt.param_groups for p in g["params"]}
    assert held == {id(p) for p in m.adapter.trainable_parameters()}
    assert not held & {id(p) for p in m.adapter.adapters["whisper"].parameters()}
    assert opt.defaults["lr"] == 2e-4 and opt.defaults["betas"] == (0.9, 0.999) and opt.defaults["weight_decay"] == 0


def lrs(warmup: int, total: int, steps: int) -> list[float]:
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([p], lr=1.0)
    sched = build_scheduler(opt, OptimConfig(lr=1.0, warmup_steps=warmup), total)
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_schedule_warms_up_linearly_then_decays_to_zero():
    lr = lrs(warmup=10, total=100, steps=101)
    assert lr[0] == 0 and lr[5] == pytest.approx(0.5) and lr[10] == pytest.approx(1.0)
    assert all(a <= b for a, b in pairwise(lr[:11])) and all(a >= b for a, b in pairwise(lr[10:]))
    assert lr[55] == pytest.approx(0.5) and lr[99] < 1e-3 and lr[100] == 0
    assert lrs(warmup=1500, total=20, steps=21)[20] == pytest.approx(1.0)  # warmup capped at total_steps
    assert lrs(warmup=0, total=10, steps=1)[0] == 1.0


def test_autocast_context():
    with autocast_context("auto", "cpu"):
        assert not torch.is_autocast_enabled("cpu")
    with autocast_context("fp32", "cuda"):
        assert not torch.is_autocast_enabled("cuda")
    with autocast_context("bf16", "cpu"):
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
    with warnings.catch_warnings():  # "CUDA is not available ... Disabling autocast" on CPU machines
        warnings.simplefilter("ignore")
        ctx = autocast_context("auto", torch.device("cuda", 0))
    assert isinstance(ctx, torch.autocast) and ctx.device == "cuda" and ctx.fast_dtype == torch.bfloat16
    with pytest.raises(ValueError, match="precision"):
        autocast_context("fp16", "cuda")
