"""The Trainer: overfitting, gradient accumulation, exact resume, frozen adapters, evaluation, checkpoints."""

import copy
import os

import numpy as np
import pytest
import torch

from alarm.errors import CheckpointError
from alarm.model.audio_adapter import build_audio_adapter
from alarm.model.checkpoint import load_adapter
from alarm.training.batch import to_train_batch
from alarm.training.trainer import Trainer, fit, load_training_state, plan_total_steps, save_training_state
from tests.unit.training import SCRIPTED_LLM, SCRIPTED_TARGETS, build_model, make_examples, train_config


@pytest.fixture(scope="module")
def whisper():
    return build_model("tiny-whisper", [SCRIPTED_LLM])


@pytest.fixture(scope="module")
def examples(whisper):
    return make_examples(whisper, 8)


def trainer_for(model, adapter=None, total_steps=100, **cfg) -> Trainer:
    adapter = adapter if adapter is not None else copy.deepcopy(model.adapter)
    return Trainer(adapter, model.builder, model.llm, train_config(model, **cfg), total_steps)


def state_of(module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


@pytest.mark.parametrize("preset", ["tiny-whisper", "tiny"])
def test_overfits_four_examples(preset):
    torch.manual_seed(0)
    m = build_model(preset, [SCRIPTED_LLM])
    batch = to_train_batch(make_examples(m, 4, targets=SCRIPTED_TARGETS), list(m.adapter.encoders))
    t = trainer_for(m, m.adapter, total_steps=30, optim={"lr": 3e-2, "warmup_steps": 3})
    history = [t.train_micro_batch(batch).metrics for _ in range(30)]
    first, last = history[0], history[-1]
    assert last["loss"] < 0.5 * first["loss"], [round(h["loss"], 3) for h in history]
    assert last["token_acc"] > first["token_acc"]
    assert t.step == 30 and last["lr"] < 0.01 * 3e-2  # the cosine ends at 0


def test_grad_accumulation_equals_one_big_batch():
    m = build_model("tiny-whisper", ["encoders.whisper.adapter.norm=layer"])  # BatchNorm couples the items
    exs = make_examples(m, 4, targets=[SCRIPTED_TARGETS[0]])  # equal token counts: mean of means == mean
    grads = {}
    for per_worker in (2, 4):
        t = trainer_for(m, batch={"per_worker": per_worker, "effective": 4})

        def capture(opt, args, kwargs, _t=t, _pw=per_worker):  # after clipping, before the update
            grads[_pw] = {n: p.grad.clone() for n, p in _t.adapter.named_trainable_parameters()}

        t.optimizer.register_step_pre_hook(capture)
        results = [t.train_micro_batch(to_train_batch(exs[i : i + per_worker], ["whisper"]))
                   for i in range(0, 4, per_worker)]
        assert [r.stepped for r in results] == [False] * (len(results) - 1) + [True]
        grads[f"metrics{per_worker}"] = results[-1].metrics
    for name, g in grads[4].items():
        torch.testing.assert_close(grads[2][name], g, rtol=1e-4, atol=1e-6, msg=name)
    assert grads["metrics2"]["loss"] == pytest.approx(grads["metrics4"]["loss"], rel=1e-5)
    assert grads["metrics2"]["grad_norm"] == pytest.approx(grads["metrics4"]["grad_norm"], rel=1e-5)


def test_resume_continues_exactly(whisper, examples, tmp_path):
    """3 steps + save + load into a fresh Trainer + 3 steps == 6 steps straight (crossing an epoch boundary)."""
    cfg = {"batch": {"per_worker": 2, "effective": 4}, "optim": {"lr": 1e-2, "warmup_steps": 2}}
    seen = {"straight": [], "resumed": []}

    def recording(t, name):
        inner = t.train_micro_batch
        t.train_micro_batch = lambda b: (seen[name].append(tuple(b.keys)), inner(b))[1]
        return t

    init = copy.deepcopy(whisper.adapter)
    straight = recording(trainer_for(whisper, copy.deepcopy(init), total_steps=6, **cfg), "straight")
    fit(straight, examples)

    first = recording(trainer_for(whisper, copy.deepcopy(init), total_steps=6, **cfg), "resumed")
    fit(first, examples, max_steps=3)
    assert (first.step, first.epoch, first.examples_seen) == (3, 1, 4)  # 8 examples = 2 steps per epoch
    save_training_state(first, tmp_path / "ckpt")
    torch.manual_seed(123)
    np.random.seed(123)  # disturb every generator; the checkpoint restores them
    fresh = recording(trainer_for(whisper, build_audio_adapter(whisper.cfg), total_steps=6, **cfg), "resumed")
    load_training_state(fresh, tmp_path / "ckpt")
    assert (fresh.step, fresh.micro_step, fresh.epoch, fresh.examples_seen) == (3, 6, 1, 4)
    fit(fresh, examples)

    assert seen["resumed"] == seen["straight"]
    assert fresh.step == straight.step == 6
    a, b = state_of(straight.adapter), state_of(fresh.adapter)
    for k in a:  # parameters and the whisper adapter's BatchNorm statistics
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=1e-6, msg=k)
    assert fresh.optimizer.param_groups[0]["lr"] == straight.optimizer.param_groups[0]["lr"]
    assert not any(n.startswith(".") for n in os.listdir(tmp_path))  # no temporary folders left behind


def test_state_dict_restores_random_generators(whisper):
    t = trainer_for(whisper)
    state = t.state_dict()
    want = (torch.rand(3), np.random.rand(3), __import__("random").random())
    torch.manual_seed(7)
    t.load_state_dict(state)
    got = (torch.rand(3), np.random.rand(3), __import__("random").random())
    torch.testing.assert_close(got[0], want[0])
    assert np.array_equal(got[1], want[1]) and got[2] == want[2]


def test_frozen_adapter_keeps_weights_and_batchnorm_statistics():
    m = build_model("tiny", [SCRIPTED_LLM])  # the whisper adapter has BatchNorm (norm: batch)
    m.adapter.freeze_adapter("whisper")
    frozen_before = state_of(m.adapter.adapters["whisper"])
    mix_before = state_of(m.adapter.mix["whisper"])
    t = trainer_for(m, m.adapter, optim={"lr": 1e-2, "warmup_steps": 0})
    assert t.adapter.training and not t.adapter.adapters["whisper"].training
    batch = to_train_batch(make_examples(m, 4), list(m.adapter.encoders))
    fusion_before = state_of(m.adapter.fusion)
    for _ in range(2):
        assert t.train_micro_batch(batch).stepped
    for k, v in state_of(m.adapter.adapters["whisper"]).items():
        assert torch.equal(v, frozen_before[k]), k
    assert all(torch.equal(v, mix_before[k]) for k, v in state_of(m.adapter.mix["whisper"]).items())
    assert any(not torch.equal(v, fusion_before[k]) for k, v in state_of(m.adapter.fusion).items())


def test_evaluate_restores_train_mode_and_takes_no_gradients(whisper, examples):
    t = trainer_for(whisper)
    batches = [to_train_batch(examples[i : i + 4], ["whisper"]) for i in (0, 4)]
    bn_before = state_of(t.adapter)
    metrics = t.evaluate(batches)
    assert t.adapter.training
    assert all(p.grad is None for p in t.adapter.parameters())
    assert all(torch.equal(v, bn_before[k]) for k, v in state_of(t.adapter).items())  # eval mode: no BN updates
    assert {"val_loss", "val_token_acc", "val_tokens", "val_loss/src_a", "val_loss/src_b"} <= set(metrics)
    assert metrics["val_tokens"] == sum(len(whisper.builder.ids(e["target"])) for e in examples)
    t.adapter.eval()
    again = t.evaluate(batches)
    assert not t.adapter.training and again["val_loss"] == pytest.approx(metrics["val_loss"], rel=1e-6)


def test_nonfinite_gradients_skip_the_update(whisper, examples):
    t = trainer_for(whisper)
    hook = t.adapter.audio_start.register_hook(lambda g: g * float("nan"))
    before = state_of(t.adapter)
    r = t.train_micro_batch(to_train_batch(examples[:4], ["whisper"]))
    hook.remove()
    assert r.stepped and r.metrics["skipped_steps"] == 1 and t.step == 1
    assert all(torch.equal(v, before[k]) for k, v in state_of(t.adapter).items() if "running" not in k
               and "num_batches" not in k)
    assert t.train_micro_batch(to_train_batch(examples[:4], ["whisper"])).metrics["skipped_steps"] == 1


def test_checkpoint_folder_is_inference_ready_and_replaceable(whisper, examples, tmp_path):
    t = trainer_for(whisper, batch={"per_worker": 2, "effective": 4})
    t.train_micro_batch(to_train_batch(examples[:2], ["whisper"]))
    with pytest.raises(CheckpointError, match="accumulation window"):
        save_training_state(t, tmp_path / "ckpt")
    t.train_micro_batch(to_train_batch(examples[2:4], ["whisper"]))
    folder = save_training_state(t, tmp_path / "ckpt")
    assert sorted(os.listdir(folder)) == ["adapter", "config.json", "trainer.pt"]
    torch.load(folder / "trainer.pt", weights_only=True)
    adapter, cfg = load_adapter(folder / "adapter")
    assert cfg == whisper.cfg
    for k, v in state_of(t.adapter).items():
        assert torch.equal(adapter.state_dict()[k], v), k
    t.train_micro_batch(to_train_batch(examples[4:6], ["whisper"]))
    t.train_micro_batch(to_train_batch(examples[6:8], ["whisper"]))
    save_training_state(t, folder)  # a newer state replaces the folder
    assert torch.load(folder / "trainer.pt", weights_only=True)["counters"]["step"] == 2
    assert sorted(os.listdir(tmp_path)) == ["ckpt"]


def test_plan_total_steps(whisper):
    cfg = train_config(whisper, batch={"per_worker": 4, "effective": 8})  # epochs: 2
    assert plan_total_steps(cfg, 100) == 24  # 12 whole steps per epoch
    assert plan_total_steps(train_config(whisper, batch={"per_worker": 4, "effective": 8}, max_steps=5), 100) == 5
    with pytest.raises(ValueError, match="no optimizer step"):
        plan_total_steps(cfg, 7)


def test_fit_batches_like_the_ray_train_worker(whisper, examples):
    """One batching policy: fit trains on the micro-batches a Ray Train worker streams from the same rows (windows
    of 2 batches, bucketed per epoch), and an epoch ends without trimming to whole accumulation windows."""
    from services.train.worker import stream_batches
    from tests.unit.training.test_stream_batches import Shard

    t = trainer_for(whisper, total_steps=3, batch={"per_worker": 2, "effective": 4, "window_batches": 2},
                    epochs=1)
    seen = []
    inner = t.train_micro_batch
    t.train_micro_batch = lambda b: (seen.append(list(b.keys)), inner(b))[1]
    fit(t, examples[:6])  # 3 batches an epoch, 2 per step: the second step spans the epoch boundary
    stream = [[r["key"] for r in b] for e in (0, 1, 2) for b in stream_batches(Shard(examples[:6]), t.cfg, e, 0)]
    assert seen == stream[: len(seen)] and len(seen) == 6
    assert (t.step, t.epoch, t.examples_seen) == (3, 1, 6)


def test_fit_refuses_too_few_examples_for_one_batch(whisper, examples):
    with pytest.raises(ValueError, match="3 examples fill no batch of batch.per_worker=4"):
        fit(trainer_for(whisper), examples[:3])
