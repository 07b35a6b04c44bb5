"""What rank 0 shows of a training run while it runs: the progress line (stderr, every log_every), TensorBoard
event files (<run>/tensorboard, written live), curves.png refreshed at every validation, and the optional W&B or
MLflow run through Ray Train's integrations.

    monitor = Monitor(cfg, out_uri, storage_options, total_steps, start_step=trainer.step, state=saved)
    monitor.train(record); monitor.validation(record, trainer.adapter, history); monitor.close()

A resumed run appends: its event file starts with TensorBoard's purge at the first step it trains, so steps the
stopped attempt logged past its last checkpoint are dropped by the viewer, never shown twice; the MLflow run id and
the W&B run id travel in the checkpoint (`state`) so the same tracking run continues.
"""

from __future__ import annotations

import hashlib
import logging
import os
import posixpath
import sys
import tempfile
import time
from pathlib import Path

from alarm.config import TrainConfig
from alarm.progress import Progress
from alarm.training.curves import plot_curves
from services.storage import RunStore

log = logging.getLogger(__name__)

TB_DIR = "tensorboard"
# metrics.jsonl record key -> TensorBoard tag (per-source losses, 'loss/<source>', keep their source name)
TRAIN_TAGS = {"loss": "train/loss", "accuracy": "train/token_acc", "lr": "train/lr", "grad_norm": "train/grad_norm",
              "examples_per_s": "train/examples_per_s"}
VAL_TAGS = {"loss": "val/loss", "accuracy": "val/token_acc"}


class Monitor:
    """Rank 0's outputs besides checkpoints. Other ranks make no Monitor."""

    def __init__(self, cfg: TrainConfig, out_uri: str, storage_options: dict | None, total_steps: int,
                 start_step: int, state: dict | None = None):
        self.cfg, self.total_steps = cfg, total_steps
        self.out = RunStore(out_uri, storage_options)
        self.progress = Progress("train", total_steps, start_step, unit="steps")
        self.state = dict(state or {})
        self.writer, self.tb_local = None, None
        if cfg.tracking.tensorboard:
            self.tb_local = self.out.path(TB_DIR) if self.out.local else tempfile.mkdtemp(prefix="alarm-tb-")
            self.writer = EventFile(self.tb_local, start_step)
        self.tracker = _tracker(cfg, self.state, resumed=start_step > 0)

    # -- records ---------------------------------------------------------------------------------------------------

    def train(self, record: dict) -> None:
        """One optimizer step's record: to TensorBoard and the tracker at every log_every (and step 1), with the
        progress line."""
        step = record["step"]
        if not (step % self.cfg.log_every == 0 or step == 1):
            return
        scalars = {TRAIN_TAGS[k]: v for k, v in record.items() if k in TRAIN_TAGS and v is not None}
        scalars |= {f"train/{k}": v for k, v in record.items() if k.startswith("loss/") and v is not None}
        self._log(scalars, step)
        print(self.progress.line(step, f"epoch {record['epoch']} loss {record['loss']:.4f} "
                                       f"acc {record['accuracy']:.3f} lr {record['lr']:.2e} "
                                       f"{record['examples_per_s']:.1f} ex/s"), file=sys.stderr, flush=True)

    def validation(self, record: dict, adapter, history: list[dict]) -> None:
        """A validation pass: its losses, the layer-mix weights of every encoder, and a fresh curves.png."""
        step = record["step"]
        scalars = {VAL_TAGS[k]: v for k, v in record.items() if k in VAL_TAGS and v is not None}
        scalars |= {f"val/{k.removeprefix('val_')}": v for k, v in record.items()
                    if k.startswith("val_loss/") and v is not None}
        scalars |= mix_weights(adapter, self.cfg)
        self._log(scalars, step)
        print(f"validation step {step}: loss {record.get('loss', float('nan')):.4f}", file=sys.stderr, flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            png = plot_curves(history, Path(tmp) / "curves.png")
            self.out.write_bytes("curves.png", png.read_bytes())  # atomic: a viewer never sees half a PNG
        self._upload_events()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self._upload_events()
        if self.tracker is not None:
            self.tracker.close()

    # -- internals -------------------------------------------------------------------------------------------------

    def _log(self, scalars: dict[str, float], step: int) -> None:
        if self.writer is not None:
            self.writer.add(scalars, step)  # flushed: visible to `tensorboard --logdir` now
        if self.tracker is not None:
            self.tracker.log(scalars, step)

    def _upload_events(self) -> None:
        """S3 runs: copy the local event files to <run>/tensorboard (each upload replaces the whole file)."""
        if self.out.local or self.tb_local is None:
            return
        for name in sorted(os.listdir(self.tb_local)):
            self.out.write_bytes(posixpath.join(TB_DIR, name), (Path(self.tb_local) / name).read_bytes())


def mix_weights(adapter, cfg: TrainConfig) -> dict[str, float]:
    """'mix/<encoder>/layer_<tap>' -> the softmax weight the adapter gives that tapped layer."""
    out = {}
    for name, enc in cfg.model.encoders.items():
        weights = adapter.mix[name].weights().detach().cpu().tolist()
        out |= {f"mix/{name}/layer_{tap}": w for tap, w in zip(enc.layers, weights, strict=True)}
    return out


class EventFile:
    """A TensorBoard event file written synchronously (tensorboardX's SummaryWriter queues events to a thread
    that its flush() does not wait for, so a reader could miss the last step). The name holds the start time then
    the start step, so it sorts after every earlier attempt's; a resumed attempt's file starts with TensorBoard's
    purge of the steps after its checkpoint."""

    def __init__(self, logdir: str, start_step: int):
        from tensorboardX.event_file_writer import EventsWriter
        from tensorboardX.proto.event_pb2 import Event, SessionLog

        os.makedirs(logdir, exist_ok=True)
        self._event = Event
        self.file = EventsWriter(os.path.join(logdir, "events"), f".step{start_step:09d}.{os.getpid()}")
        if start_step:
            self.file.write_event(Event(step=start_step + 1, session_log=SessionLog(status=SessionLog.START)))
            self.file.flush()

    def add(self, scalars: dict[str, float], step: int) -> None:
        from tensorboardX.summary import scalar

        for tag, value in scalars.items():
            self.file.write_event(self._event(wall_time=time.time(), step=step, summary=scalar(tag, float(value))))
        self.file.flush()

    def close(self) -> None:
        self.file.close()


class _Tracker:
    """A W&B run or an MLflow run, opened with Ray Train's integration (rank 0 only)."""

    def __init__(self, backend: str, handle):
        self.backend, self.handle = backend, handle

    def log(self, scalars: dict[str, float], step: int) -> None:
        if self.backend == "wandb":
            self.handle.log(scalars, step=step)
        else:  # MLflow metric names may not hold every character a TensorBoard tag may; '/' is fine
            self.handle.log_metrics(scalars, step=step)

    def close(self) -> None:
        if self.backend == "wandb":
            self.handle.finish()
        else:
            self.handle.end_run()


def _tracker(cfg: TrainConfig, state: dict, resumed: bool) -> _Tracker | None:
    """Open the configured tracking run; `state` carries its id between attempts (saved in checkpoints)."""
    t = cfg.tracking
    params = cfg.model_dump(mode="json")
    if t.backend == "wandb":
        from ray.air.integrations.wandb import setup_wandb

        run_id = state.setdefault("wandb_id", hashlib.sha256(f"{cfg.output}/{cfg.run_id}".encode()).hexdigest()[:16])
        run = setup_wandb(config=params, project=t.project, name=cfg.run_id, id=run_id, resume="allow")
        return _Tracker("wandb", run)
    if t.backend == "mlflow":
        from ray.air.integrations.mlflow import setup_mlflow

        if state.get("mlflow_run_id"):
            os.environ["MLFLOW_RUN_ID"] = state["mlflow_run_id"]  # mlflow.start_run continues that run
        mlflow = setup_mlflow(config=None if resumed else _flat(params), tracking_uri=t.tracking_uri,
                              experiment_name=t.project, run_name=cfg.run_id, create_experiment_if_not_exists=True)
        state["mlflow_run_id"] = mlflow.active_run().info.run_id
        return _Tracker("mlflow", mlflow)
    return None


def _flat(d: dict, prefix: str = "") -> dict:
    """Nested config -> {'optim.lr': 1e-4, ...} (MLflow params are flat and short)."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out |= _flat(v, f"{prefix}{k}.")
        else:
            out[f"{prefix}{k}"] = str(v)[:500]
    return out
