"""Rank 0's monitor: TensorBoard scalars (train, validation, layer-mix weights), a resumed run appending without
repeating steps, curves.png at every validation, and the tracking backends wired through Ray's integrations."""

from __future__ import annotations

import importlib.machinery
import json
import sys
import types

import pytest

from alarm.config import ConfigError, TrainConfig, load_config
from alarm.model.audio_adapter import build_audio_adapter
from services.train import monitor as M
from tests.tb_events import scalars


def cfg_for(tmp_path, *overrides) -> TrainConfig:
    return load_config(TrainConfig, "tiny", [f"output={tmp_path}", "run_id=r", "model=tiny-whisper", "log_every=1",
                                             *overrides], section="train")


def record(step: int, loss: float) -> dict:
    return {"kind": "train", "step": step, "epoch": 0, "loss": loss, "accuracy": 0.5, "lr": 1e-3, "grad_norm": 2.0,
            "examples_per_s": 8.0, "loss/synthetic": loss}


def test_scalars_validation_and_mix_weights(tmp_path, capsys):
    cfg = cfg_for(tmp_path)
    m = M.Monitor(cfg, str(tmp_path / "r"), None, total_steps=4, start_step=0)
    history = [record(1, 3.0), record(2, 2.0)]
    for r in history:
        m.train(r)
    val = {"kind": "val", "step": 2, "loss": 2.5, "accuracy": 0.4, "val_loss": 2.5, "val_loss/synthetic": 2.5}
    adapter = build_audio_adapter(cfg.model)
    m.validation(val, adapter, [*history, val])
    got = scalars(tmp_path / "r" / "tensorboard")  # read before close: the writer flushed
    assert got["train/loss"] == [(1, 3.0), (2, 2.0)] and got["train/grad_norm"] == [(1, 2.0), (2, 2.0)]
    assert got["train/lr"][0][1] == pytest.approx(1e-3) and got["train/loss/synthetic"][1] == (2, 2.0)
    assert got["val/loss"] == [(2, 2.5)] and got["val/loss/synthetic"] == [(2, 2.5)]
    taps = cfg.model.encoders["whisper"].layers
    mix = [got[f"mix/whisper/layer_{t}"][0][1] for t in taps]
    assert sum(mix) == pytest.approx(1.0, abs=1e-5)
    assert (tmp_path / "r" / "curves.png").stat().st_size > 1000
    err = capsys.readouterr().err
    assert "train 2/4 (50%)" in err and "eta" in err and "loss 2.0000" in err
    m.close()


def test_a_resumed_run_appends_without_repeating_steps(tmp_path):
    cfg = cfg_for(tmp_path)
    first = M.Monitor(cfg, str(tmp_path / "r"), None, total_steps=6, start_step=0)
    for step in range(1, 6):  # logged up to 5, but the last checkpoint was at step 3
        first.train(record(step, 10.0 + step))
    first.close()
    resumed = M.Monitor(cfg, str(tmp_path / "r"), None, total_steps=6, start_step=3)
    for step in range(4, 7):
        resumed.train(record(step, 20.0 + step))
    resumed.close()
    loss = scalars(tmp_path / "r" / "tensorboard")["train/loss"]
    assert loss == [(1, 11.0), (2, 12.0), (3, 13.0), (4, 24.0), (5, 25.0), (6, 26.0)]


def test_log_every_thins_the_records(tmp_path):
    m = M.Monitor(cfg_for(tmp_path, "log_every=3"), str(tmp_path / "r"), None, total_steps=7, start_step=0)
    for step in range(1, 8):
        m.train(record(step, 1.0))
    m.close()
    assert [s for s, _ in scalars(tmp_path / "r" / "tensorboard")["train/loss"]] == [1, 3, 6]


def test_a_missing_tracking_package_is_a_config_error(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in ("mlflow", "wandb") else
                        real(name, *a))
    for backend, package in (("mlflow", "mlflow"), ("wandb", "wandb")):
        with pytest.raises(ConfigError, match=rf"tracking.backend: {backend} needs the '{package}' package, which "
                                              rf"is not installed: pip install {package}"):
            load_config(TrainConfig, "tiny", [f"tracking.backend={backend}"], section="train")
    assert load_config(TrainConfig, "tiny", [], section="train").tracking.backend == "none"


class FakeMlflow(types.ModuleType):
    """Stands in for the mlflow module that ray.air.integrations.mlflow.setup_mlflow returns."""

    def __init__(self):
        super().__init__("mlflow")
        self.__spec__ = importlib.machinery.ModuleSpec("mlflow", None)
        self.metrics, self.ended = [], False

    def active_run(self):
        return types.SimpleNamespace(info=types.SimpleNamespace(run_id="run-123"))

    def log_metrics(self, metrics, step):
        self.metrics.append((step, dict(metrics)))

    def end_run(self):
        self.ended = True


def test_mlflow_is_opened_through_rays_setup_mlflow_and_continued_on_resume(tmp_path, monkeypatch):
    calls, fake = [], FakeMlflow()

    def setup_mlflow(**kwargs):
        calls.append(kwargs)
        return fake

    monkeypatch.setitem(sys.modules, "mlflow", fake)  # the config check finds the package
    monkeypatch.setattr("ray.air.integrations.mlflow.setup_mlflow", setup_mlflow)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    cfg = cfg_for(tmp_path, "tracking.backend=mlflow", "tracking.tracking_uri=file:///tmp/mlruns",
                  "tracking.project=exp", "tracking.tensorboard=false")
    m = M.Monitor(cfg, str(tmp_path / "r"), None, total_steps=4, start_step=0)
    m.train(record(1, 3.0))
    m.close()
    assert calls[0]["tracking_uri"] == "file:///tmp/mlruns" and calls[0]["experiment_name"] == "exp"
    assert calls[0]["run_name"] == "r" and calls[0]["config"]["optim.lr"] == str(cfg.optim.lr)
    assert fake.metrics == [(1, {"train/loss": 3.0, "train/token_acc": 0.5, "train/lr": 1e-3, "train/grad_norm": 2.0,
                                 "train/examples_per_s": 8.0, "train/loss/synthetic": 3.0})]
    assert fake.ended and m.state == {"mlflow_run_id": "run-123"} and not (tmp_path / "r" / "tensorboard").exists()
    M.Monitor(cfg, str(tmp_path / "r"), None, total_steps=4, start_step=2, state=m.state).close()
    import os

    assert os.environ["MLFLOW_RUN_ID"] == "run-123" and calls[1]["config"] is None  # params are logged once


class FakeWandbRun:
    """Stands in for the wandb Run that ray.air.integrations.wandb.setup_wandb returns."""

    def __init__(self):
        self.logged, self.finished = [], False

    def log(self, metrics, step):
        self.logged.append((step, dict(metrics)))

    def finish(self):
        self.finished = True


def test_wandb_is_opened_through_rays_setup_wandb_with_a_run_id_that_a_resume_reuses(tmp_path, monkeypatch):
    """Ray's real setup_wandb (its API-key check, its init arguments) over a stand-in wandb module."""
    from ray.air.integrations import wandb as ray_wandb

    inits, runs = [], []

    def init(**kwargs):
        inits.append(kwargs)
        runs.append(FakeWandbRun())
        return runs[-1]

    wandb = types.ModuleType("wandb")
    wandb.__spec__ = importlib.machinery.ModuleSpec("wandb", None)
    wandb.init = init
    monkeypatch.setitem(sys.modules, "wandb", wandb)  # the config check finds the package
    monkeypatch.setattr(ray_wandb, "wandb", wandb)
    for name in ("Image", "Video", "WBValue"):  # the wandb types Ray's config cleaning checks values against
        monkeypatch.setattr(ray_wandb, name, type(name, (), {}), raising=False)
    monkeypatch.setattr(ray_wandb, "json_dumps_safer", json.dumps)
    monkeypatch.setenv("WANDB_API_KEY", "test-key")
    cfg = cfg_for(tmp_path, "tracking.backend=wandb", "tracking.project=proj")
    m = M.Monitor(cfg, str(tmp_path / "r"), None, total_steps=4, start_step=0)
    m.train(record(1, 3.0))
    m.close()
    M.Monitor(cfg, str(tmp_path / "r"), None, total_steps=4, start_step=1, state=m.state).close()
    first, second = inits
    assert first["project"] == "proj" and first["name"] == "r" and first["resume"] == "allow"
    assert first["config"]["optim"]["lr"] == cfg.optim.lr and len(first["id"]) == 16
    assert second["id"] == first["id"] == m.state["wandb_id"]  # the resumed attempt continues the same W&B run
    assert runs[0].logged[0][0] == 1 and runs[0].logged[0][1]["train/loss"] == 3.0
    assert runs[0].finished and runs[1].finished
    assert (tmp_path / "r" / "tensorboard").is_dir()  # TensorBoard stays on beside the tracker


def test_the_run_throughput_counts_the_slow_steps_at_their_time():
    from alarm.training.curves import examples_per_s

    steps = [{"examples_per_s": 1.0}] + [{"examples_per_s": 40.0}] * 4 + [{"examples_per_s": 8 / 1.2}]
    assert examples_per_s(steps) == pytest.approx(40 / 2.0)  # 5 steps of 8 examples in 4 x 0.2 + 1.2 s
    assert examples_per_s(steps[:1]) == 0.0
