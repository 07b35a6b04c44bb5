"""The plain-PyTorch training loop: micro-steps with gradient accumulation, evaluation, exact resume.

The same `Trainer` runs inside a Ray Train worker (the caller wraps the adapter in DDP and feeds its data shard)
and in-process (`fit` over a list of examples: tests, baselines); both batch with `epoch_batches`. It knows
nothing of Ray.

    trainer = Trainer(model.adapter, model.builder, model.llm, cfg, total_steps=plan_total_steps(cfg, n))
    for batch in batches:
        r = trainer.train_micro_batch(batch)       # r.stepped once every cfg.grad_accum micro-batches
    save_training_state(trainer, "runs/x/checkpoint-000200")   # adapter/ loads with load_adapter for inference
"""

from __future__ import annotations

import contextlib
import math
import random
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from alarm.config import TrainConfig, write_config
from alarm.errors import CheckpointError, CheckpointMismatch
from alarm.files import fsync_path, replace_folder, staged_folder
from alarm.model.audio_adapter import AudioAdapter
from alarm.model.checkpoint import load_adapter, save_adapter
from alarm.model.prompt import PromptBuilder
from alarm.training.batch import TrainBatch, epoch_batches, to_train_batch
from alarm.training.step import (
    StepOutput,
    WarmupCosine,
    autocast_context,
    build_optimizer,
    build_scheduler,
    forward_loss,
    trainable,
)

STATE_VERSION = 1
ADAPTER_DIR, TRAINER_FILE = "adapter", "trainer.pt"


@dataclass
class MicroStep:
    """What one micro-batch did. `metrics` covers the whole accumulation window when `stepped`, else this batch."""

    output: StepOutput
    stepped: bool
    metrics: dict[str, float]


@dataclass
class _Window:
    """Token-weighted sums over the micro-batches of one optimizer step."""

    loss_sum: float = 0.0
    n_tokens: int = 0
    n_correct: int = 0
    per_source: dict[str, list[float]] = field(default_factory=dict)

    def add(self, out: StepOutput) -> None:
        self.loss_sum += float(out.loss.detach()) * out.n_tokens
        self.n_tokens += out.n_tokens
        self.n_correct += out.n_correct
        for src, (s, n) in out.per_source.items():
            acc = self.per_source.setdefault(src, [0.0, 0])
            acc[0] += s
            acc[1] += n

    def metrics(self, prefix: str = "") -> dict[str, float]:
        n = max(self.n_tokens, 1)
        out = {f"{prefix}loss": self.loss_sum / n, f"{prefix}token_acc": self.n_correct / n,
               f"{prefix}tokens": float(self.n_tokens)}
        out.update({f"{prefix}loss/{src}": s / max(k, 1) for src, (s, k) in sorted(self.per_source.items())})
        return out


class Trainer:
    """Adapter training: AdamW + warmup/cosine, gradient accumulation, clipping, evaluation, state for resuming.

    Args:
        adapter: the AudioAdapter; its `adapter_frozen` encoders must already be frozen.
        builder: prompt assembly over the LLM's frozen input embedding (also fixes the device).
        llm: the causal LM; it is frozen here (requires_grad False, eval mode) whatever it was.
        cfg: the run's TrainConfig (optim, batch.max_length, precision, grad_accum).
        total_steps: optimizer steps in the whole run (end of the cosine).
        module: what to call forward on, when it is a wrapper of `adapter` (DDP); gradients are synchronised
            only on the last micro-batch of each accumulation window.
        grad_accum: micro-batches per optimizer step; defaults to `cfg.grad_accum`.
    """

    def __init__(
        self,
        adapter: AudioAdapter,
        builder: PromptBuilder,
        llm: nn.Module,
        cfg: TrainConfig,
        total_steps: int,
        *,
        module: nn.Module | None = None,
        grad_accum: int | None = None,
    ):
        self.adapter, self.builder, self.llm, self.cfg = adapter, builder, llm, cfg
        self.module = module if module is not None else adapter
        self.total_steps = total_steps
        self.grad_accum = grad_accum or cfg.grad_accum
        self.optimizer = build_optimizer(adapter, cfg.optim)
        self.scheduler = build_scheduler(self.optimizer, cfg.optim, total_steps)
        self.step = 0  # optimizer steps taken
        self.micro_step = 0  # micro-batches seen
        self.epoch = 0
        self.examples_seen = 0  # in the current epoch, on this worker
        self.skipped_steps = 0  # optimizer steps skipped for a non-finite gradient norm
        self._window = _Window()
        llm.requires_grad_(False)
        llm.eval()
        self.module.train()  # AudioAdapter.train keeps frozen adapters in eval mode

    @property
    def device(self) -> torch.device:
        return self.builder.embed_tokens.weight.device

    # -- training --------------------------------------------------------------------------------------------------

    def train_micro_batch(self, batch: TrainBatch) -> MicroStep:
        """Forward + backward of `loss / grad_accum`; the optimizer steps after every `grad_accum`-th call."""
        last = (self.micro_step + 1) % self.grad_accum == 0
        no_sync = getattr(self.module, "no_sync", None)
        sync = contextlib.nullcontext() if last or no_sync is None else no_sync()
        with sync:
            with autocast_context(self.cfg.precision, self.device):
                out = forward_loss(self.module, self.builder, self.llm, batch, self.cfg.batch.max_length)
            (out.loss / self.grad_accum).backward()
        self.micro_step += 1
        self.examples_seen += len(batch)
        self._window.add(out)
        if not last:
            return MicroStep(out, False, {"loss": float(out.loss.detach()), "tokens": float(out.n_tokens)})
        return MicroStep(out, True, self._optimizer_step())

    def _optimizer_step(self) -> dict[str, float]:
        params = list(trainable(self.adapter))
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, self.cfg.optim.grad_clip))
        lr = self.optimizer.param_groups[0]["lr"]
        if math.isfinite(grad_norm):
            self.optimizer.step()
            self.scheduler.step()
        else:  # never apply NaN/inf updates; count them so the run log shows it, and keep the schedule on time
            self.skipped_steps += 1
            with warnings.catch_warnings():  # "lr_scheduler.step() before optimizer.step()": intended here
                warnings.simplefilter("ignore", UserWarning)
                self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        metrics = self._window.metrics()
        self._window = _Window()
        metrics.update(grad_norm=grad_norm, lr=lr, step=float(self.step), epoch=float(self.epoch),
                       skipped_steps=float(self.skipped_steps))
        return metrics

    def next_epoch(self) -> None:
        self.epoch += 1
        self.examples_seen = 0

    # -- evaluation ------------------------------------------------------------------------------------------------

    def evaluate(self, batches: Iterable[TrainBatch]) -> dict[str, float]:
        """Token-weighted validation loss and accuracy (`val_loss`, `val_token_acc`, `val_loss/<source>`)."""
        was_training = self.module.training
        self.module.eval()
        window = _Window()
        try:
            with torch.no_grad(), autocast_context(self.cfg.precision, self.device):
                for batch in batches:
                    window.add(forward_loss(self.module, self.builder, self.llm, batch, self.cfg.batch.max_length))
        finally:
            self.module.train(was_training)
        return window.metrics("val_")

    # -- state -----------------------------------------------------------------------------------------------------

    def state_dict(self, with_adapter: bool = True) -> dict:
        """Everything a resumed run needs to continue exactly (adapter tensors include BatchNorm statistics)."""
        state = {
            "version": STATE_VERSION,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "counters": {
                "step": self.step, "micro_step": self.micro_step, "epoch": self.epoch,
                "examples_seen": self.examples_seen, "skipped_steps": self.skipped_steps,
                "grad_accum": self.grad_accum, "total_steps": self.total_steps,
            },
            "rng": rng_state(),
        }
        if with_adapter:
            state["adapter"] = {k: v.detach().clone() for k, v in self.adapter.state_dict().items()}
        return state

    def load_state_dict(self, state: dict) -> None:
        """Restore `state_dict()`. This run's total_steps and warmup (from the config) shape the schedule."""
        if state.get("version") != STATE_VERSION:
            raise CheckpointMismatch(f"trainer state version {state.get('version')!r}, this code reads {STATE_VERSION}")
        c = state["counters"]
        if c["grad_accum"] != self.grad_accum:
            raise CheckpointMismatch(
                f"the checkpoint accumulated {c['grad_accum']} micro-batches per step, this run {self.grad_accum}; "
                "resume with the same batch.per_worker, batch.effective and workers.num_workers"
            )
        if "adapter" in state:
            self.adapter.load_state_dict(state["adapter"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        schedule = WarmupCosine(self.cfg.optim.warmup_steps, self.total_steps)  # e.g. a raised max_steps
        self.scheduler.lr_lambdas[0] = schedule
        for group, base in zip(self.optimizer.param_groups, self.scheduler.base_lrs, strict=True):
            group["lr"] = base * schedule(self.scheduler.last_epoch)
        self.step, self.micro_step, self.epoch = c["step"], c["micro_step"], c["epoch"]
        self.examples_seen, self.skipped_steps = c["examples_seen"], c["skipped_steps"]
        self._window = _Window()
        set_rng_state(state["rng"])


# ---------------------------------------------------------------------------------------------------------------
# random number generators (plain lists and tensors, so torch.load(weights_only=True) reads them)


def rng_state() -> dict:
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": [version, list(internal), gauss],
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
    }


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))


# ---------------------------------------------------------------------------------------------------------------
# checkpoints: folder/adapter (an inference-ready adapter checkpoint) + folder/trainer.pt + folder/config.json


def save_training_state(trainer: Trainer, folder: str | Path) -> Path:
    """Write the trainer's state to `folder` atomically (a temporary sibling renamed into place).

    Raises:
        CheckpointError: called in the middle of an accumulation window (its gradients would be lost).
    """
    if trainer.micro_step % trainer.grad_accum:
        raise CheckpointError(
            f"save_training_state at micro-step {trainer.micro_step}, inside an accumulation window of "
            f"{trainer.grad_accum}; save right after an optimizer step"
        )
    folder = Path(folder)
    with staged_folder(folder) as tmp:
        save_adapter(trainer.adapter, trainer.cfg.model, tmp / ADAPTER_DIR)
        torch.save(trainer.state_dict(with_adapter=False), tmp / TRAINER_FILE)
        fsync_path(tmp / TRAINER_FILE)
        write_config(trainer.cfg, tmp)
        replace_folder(tmp, folder)
    return folder


def load_training_state(trainer: Trainer, folder: str | Path) -> None:
    """Restore a `save_training_state` folder into `trainer` (weights in place, so the optimizer keeps its params).

    Raises:
        CheckpointError: files missing.
        CheckpointMismatch: the adapter does not fit `trainer.cfg.model`, or the run's accumulation differs.
    """
    folder = Path(folder)
    if not (folder / TRAINER_FILE).exists():
        raise CheckpointError(f"{folder} is not a training checkpoint: {TRAINER_FILE} is missing")
    stored, _ = load_adapter(folder / ADAPTER_DIR, trainer.cfg.model)
    trainer.adapter.load_state_dict(stored.state_dict())
    trainer.load_state_dict(torch.load(folder / TRAINER_FILE, map_location="cpu", weights_only=True))



# ---------------------------------------------------------------------------------------------------------------
# in-process driving (a list of examples; Ray Train workers feed their own shard to train_micro_batch instead)


def plan_total_steps(cfg: TrainConfig, num_examples: int) -> int:
    """Optimizer steps for `cfg.epochs` over `num_examples` (drop_last at batch and step level), capped by max_steps."""
    per_epoch = num_examples // cfg.batch.effective
    total = math.ceil(cfg.epochs * per_epoch)
    if cfg.max_steps is not None:
        total = min(total, cfg.max_steps)
    if total < 1:
        raise ValueError(f"{num_examples} examples make no optimizer step of batch.effective={cfg.batch.effective}")
    return total


def fit(
    trainer: Trainer,
    examples: list[dict],
    max_steps: int | None = None,
    on_step: Callable[[Trainer, dict[str, float]], None] | None = None,
) -> list[dict[str, float]]:
    """Train on in-memory examples until `max_steps` (default: trainer.total_steps), resuming at the data position.

    The examples are batched as a Ray Train worker batches its shard (`epoch_batches`: the same windows, buckets,
    drop-last and resume skip), so this in-process path trains on the data order production trains on.

    Returns:
        The metrics of every optimizer step taken (also passed to `on_step`, e.g. to log, evaluate or save).
    """
    stop = min(max_steps or trainer.total_steps, trainer.total_steps)
    history: list[dict[str, float]] = []
    encoders = list(trainer.adapter.encoders)
    while trainer.step < stop:
        n_batches = 0
        for group in epoch_batches(examples, trainer.cfg, trainer.epoch, trainer.examples_seen):
            n_batches += 1
            r = trainer.train_micro_batch(to_train_batch(group, encoders))
            if r.stepped:
                history.append(r.metrics)
                if on_step is not None:
                    on_step(trainer, r.metrics)
                if trainer.step >= stop:
                    return history
        if n_batches == 0 and trainer.examples_seen == 0:
            raise ValueError(f"{len(examples)} examples fill no batch of batch.per_worker="
                             f"{trainer.cfg.batch.per_worker}")
        trainer.next_epoch()
    return history
