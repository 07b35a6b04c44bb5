"""The Ray Train worker function: plain PyTorch (alarm.training.Trainer) fed by this worker's dataset shard."""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from alarm import jsonl
from alarm.config import TrainConfig
from alarm.errors import InvalidInput
from alarm.model.alarm_model import AlarmModel
from alarm.training.batch import epoch_batches, to_train_batch
from alarm.training.curves import read_metrics
from alarm.training.trainer import Trainer, load_training_state, save_training_state
from services.train.monitor import Monitor

METRICS = "metrics.jsonl"
TRACKING = "tracking.json"  # the tracking run's ids, so a resumed attempt continues it


def rows_of(batch: dict[str, np.ndarray]) -> list[dict]:
    n = len(batch["key"])
    return [{k: v[i] for k, v in batch.items()} for i in range(n)]


def stream_batches(shard, cfg: TrainConfig, epoch: int, skip: int) -> Iterator[list[dict]]:
    """This worker's micro-batches of the epoch: its dataset shard streamed through `epoch_batches` (the batching
    policy the in-process `fit` uses too); `skip` examples of the epoch already trained on (a resumed run)."""

    def examples() -> Iterator[dict]:
        size = cfg.batch.per_worker
        for batch in shard.iter_batches(batch_size=size, batch_format="numpy", prefetch_batches=2):
            yield from rows_of(batch)

    return epoch_batches(examples(), cfg, epoch, skip)


def train_loop(config: dict) -> None:
    import ray.train
    import ray.train.torch

    cfg = TrainConfig.model_validate(config["cfg"])
    total_steps, encoders = config["total_steps"], list(cfg.model.encoders)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.manual_seed(cfg.seed)
    device = ray.train.torch.get_device() if world > 1 or torch.cuda.is_available() else torch.device("cpu")
    model = AlarmModel.build(cfg.model, cfg.init_adapter, with_llm=True, with_encoders=False, device=str(device))
    module = ray.train.torch.prepare_model(model.adapter, move_to_device=False) if world > 1 else model.adapter
    trainer = Trainer(model.adapter, model.builder, model.llm, cfg, total_steps, module=module)
    history: list[dict] = []
    tracking: dict = {}
    ckpt = ray.train.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            load_training_state(trainer, d)
            history = read_metrics(Path(d) / METRICS)
            if (Path(d) / TRACKING).exists():
                tracking = json.loads((Path(d) / TRACKING).read_text())
    val_rows = [r for b in ray.train.get_dataset_shard("val").iter_batches(batch_size=cfg.batch.per_worker,
                                                                           batch_format="numpy")
                for r in rows_of(b)][: cfg.eval_batches * cfg.batch.per_worker]  # a fixed subset
    val = [to_train_batch(val_rows[i : i + cfg.batch.per_worker], encoders)
           for i in range(0, len(val_rows), cfg.batch.per_worker)]
    if cfg.stop_after is not None and trainer.step >= cfg.stop_after:
        return  # already there (a rerun with the same stop_after)
    monitor = Monitor(cfg, config["out"], config.get("storage_options"), total_steps, trainer.step, tracking) \
        if rank == 0 else None
    try:
        _train(trainer, cfg, ray.train.get_dataset_shard("train"), val, history, monitor, rank, world)
    finally:
        if monitor is not None:
            monitor.close()


def _train(trainer: Trainer, cfg: TrainConfig, shard, val: list, history: list[dict], monitor: Monitor | None,
           rank: int, world: int) -> None:
    """Epochs over this worker's shard until the run's last step (or stop_after): records, validation passes,
    reports and checkpoints."""
    import ray.train

    encoders, total_steps = list(cfg.model.encoders), trainer.total_steps
    per_step, t_last = cfg.batch.per_worker * trainer.grad_accum * world, time.perf_counter()
    while trainer.step < total_steps:
        n_batches = 0
        for group in stream_batches(shard, cfg, trainer.epoch, trainer.examples_seen):
            n_batches += 1
            r = trainer.train_micro_batch(to_train_batch(group, encoders))
            if not r.stepped:
                continue
            step = trainer.step
            last = step >= total_steps or (cfg.stop_after is not None and step >= cfg.stop_after)
            now = time.perf_counter()
            record = {"kind": "train", "step": step, "epoch": trainer.epoch, **_train_metrics(r.metrics),
                      "examples_per_s": per_step / max(now - t_last, 1e-9)}
            t_last = now
            history.append(record)
            if monitor is not None:
                monitor.train(record)
            report_now = cfg.report_every is not None and step % cfg.report_every == 0
            if step % cfg.eval_every == 0 or last:
                if val:
                    m = trainer.evaluate(val)
                    history.append({"kind": "val", "step": step, "loss": m.get("val_loss"),
                                    "accuracy": m.get("val_token_acc"), **m})
                    if monitor is not None:
                        monitor.validation(history[-1], trainer.adapter, history)
                report_now = True
            if step % cfg.checkpoint_every == 0 or last:
                _report_with_checkpoint(trainer, history, rank, cfg, monitor)
            elif report_now:
                ray.train.report({k: v for k, v in history[-1].items() if isinstance(v, int | float)})
            if last:
                return
        if n_batches == 0 and trainer.examples_seen == 0:
            raise InvalidInput(f"worker {rank}: the train split yields no full batch of batch.per_worker="
                               f"{cfg.batch.per_worker}; generate more rows or lower batch.per_worker")
        trainer.next_epoch()


def _train_metrics(m: dict) -> dict:
    return {"loss": m.get("loss"), "accuracy": m.get("token_acc"), "lr": m.get("lr"),
            "grad_norm": m.get("grad_norm"), **{k: v for k, v in m.items() if k.startswith("loss/")}}


def _report_with_checkpoint(trainer: Trainer, history: list[dict], rank: int, cfg: TrainConfig,
                            monitor: Monitor | None) -> None:
    import ray.train

    metrics = {k: v for k, v in history[-1].items() if isinstance(v, int | float)}
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = None
        if rank == 0:  # one writer; every rank still calls report (it is a synchronisation point)
            folder = Path(tmp) / "ckpt"
            save_training_state(trainer, folder)
            (folder / METRICS).write_text(jsonl.dumps(history), encoding="utf-8")
            (folder / "config.json").write_text(cfg.model_dump_json(indent=2))
            (folder / TRACKING).write_text(json.dumps(monitor.state if monitor is not None else {}))
            checkpoint = ray.train.Checkpoint.from_directory(str(folder))
        ray.train.report(metrics, checkpoint=checkpoint)
