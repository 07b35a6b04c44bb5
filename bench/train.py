"""Training examples/s: Ray Train + Ray Data + encoder actors vs a plain single-process PyTorch loop.

    python bench/train.py [--preset tiny] [key=value ...]      # needs a corpus (python -m alarm.generate)

Both arms train the same model on the same corpus rows with the same batch settings and count steady-state
examples/s (the first optimizer step, which pays start-up and warm-up, is excluded from both). The baseline does
everything in one process: decode, front-ends and frozen encoders for each micro-batch (batched by the same
`epoch_batches` policy as the Ray workers), then the train step; with `encoders.cache` (the toy preset) both arms
encode every clip once before the timed steps. The Ray arm is `python -m alarm.train` itself with one worker, its
rate the run's examples over its seconds (validations, checkpoints and reports included). Target: ratio >= 0.8 at
one worker.

    python bench/train.py --preset toy corpus=runs/toy/seed-0/toy-corpus model.llm.checkpoint=FOLDER --steps 100
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

from alarm.cli import add_config_args, config_from_args
from alarm.config import TrainConfig


def baseline(cfg: TrainConfig, steps: int) -> float:
    import torch

    from alarm.audio.decode import load_audio
    from alarm.model.alarm_model import AlarmModel
    from alarm.training.batch import epoch_batches, to_train_batch
    from alarm.training.trainer import Trainer
    from services.train.data import READ, open_corpus

    store = open_corpus(cfg.corpus)
    rows = [r for r in store.read_shards(READ).to_pylist() if r["keep"] and r["split"] == "train"]
    torch.manual_seed(cfg.seed)
    model = AlarmModel.build(cfg.model, with_llm=True)
    trainer = Trainer(model.adapter, model.builder, model.llm, cfg, total_steps=steps + 1)

    def encoded(group: list[dict]) -> list[dict]:
        waves = [load_audio(r["audio_bytes"] or r["audio_uri"]) for r in group]
        with torch.no_grad():
            states = model.encode(model.features(waves))
        return [{**r, **{f"states_{e}": s.states[:, j, : int(s.lens[j])].clone().numpy()
                         for e, s in states.items()}} for j, r in enumerate(group)]

    if cfg.encoders.cache:  # as the Ray arm's materialized states: every clip encoded once, before the steps
        size = cfg.encoders.batch_size
        rows = [x for i in range(0, len(rows), size) for x in encoded(rows[i: i + size])]
    t_first = None
    while trainer.step < steps + 1:  # production's batches: bucketed by clip length (here before encoding)
        for group in epoch_batches(rows, cfg, trainer.epoch, length=lambda r: r["duration_s"]):
            examples = group if cfg.encoders.cache else encoded(group)
            if trainer.train_micro_batch(to_train_batch(examples, list(cfg.model.encoders))).stepped:
                t_first = t_first or time.perf_counter()
                if trainer.step >= steps + 1:
                    break
        trainer.next_epoch()
    return steps * cfg.batch.effective / (time.perf_counter() - t_first)


def ray_train(cfg: TrainConfig, steps: int) -> float:
    from services.train.driver import run

    with tempfile.TemporaryDirectory() as out:
        summary = run(cfg.model_copy(update={"output": out, "max_steps": steps + 1, "run_id": "bench"}))
    return summary["examples_per_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_config_args(parser, "train", "tiny", TrainConfig)
    parser.add_argument("--steps", type=int, default=10, help="timed optimizer steps per arm")
    args = parser.parse_args()
    args.overrides = ["epochs=50", "checkpoint_every=1000", "eval_every=1000", *args.overrides]
    cfg = config_from_args(args, TrainConfig, "train")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    base = baseline(cfg, args.steps)
    ray_rate = ray_train(cfg, args.steps)
    print(f"model={cfg.model.name} encoders={list(cfg.model.encoders)} per_worker={cfg.batch.per_worker} "
          f"effective={cfg.batch.effective} steps={args.steps}")
    print(f"single-process PyTorch loop         : {base:7.2f} examples/s")
    print(f"Ray Train + Ray Data + encoder actors: {ray_rate:7.2f} examples/s (1 worker)")
    print(f"ratio ray/plain: {ray_rate / base:.2f} (target >= 0.8)")


if __name__ == "__main__":
    main()
