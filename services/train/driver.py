"""The training job's driver, `run(cfg)`: checks the corpus and checkpoints, plans the steps, launches a
TorchTrainer of `worker.train_loop` over the Ray Data splits (data.py), and exports the final adapter, metrics and
curves to output/run_id. Resumable."""

from __future__ import annotations

import logging
import posixpath
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

from alarm import env
from alarm.checkpoints import resolve_checkpoint
from alarm.config import TrainConfig
from alarm.config.base import RAY_RENAMED
from alarm.errors import InvalidInput
from alarm.model.llm import resolve_llm
from alarm.training.curves import examples_per_s, plot_curves, read_metrics
from alarm.training.trainer import plan_total_steps
from services.connect import check_shared_paths, gpu_options, init_ray, real_gpus
from services.errors import alarm_error_in
from services.storage import INDEX, RunStore, fingerprint
from services.train.data import audio_paths, build_splits, count_examples, open_corpus
from services.train.worker import METRICS, train_loop

log = logging.getLogger(__name__)
CORPUS = "corpus.json"  # the corpus a run trains on: its uri and fingerprint


def run(cfg: TrainConfig, callbacks: list | None = None) -> dict:
    """Train (or resume, or find finished) run `cfg.run_id`; returns summary.json's content.

    Args:
        callbacks: `ray.train.UserCallback`s for the TorchTrainer (called on the controller after each report).
    """
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    check_shared_paths(cfg.ray, cfg.node_paths(), cfg.storage.shared)  # before anything is read or written
    corpus = open_corpus(cfg.corpus)
    check_shared_paths(cfg.ray, audio_paths(corpus), cfg.storage.shared)
    out = RunStore(posixpath.join(cfg.output, cfg.run_id))
    out.check_reachable()
    out.check_config(cfg.model_dump(mode="json"), ignore=("workers", "encoders", "ray", "storage", *RAY_RENAMED,
                                                          "max_steps", "stop_after", "epochs", "eval_every",
                                                          "log_every", "report_every", "tracking"),
                    model=TrainConfig)
    corpus_id = check_corpus(out, corpus, cfg.corpus)
    counts = count_examples(corpus)
    n_train, n_val = counts.get("train", 0), counts.get("validation", 0)
    if n_train < cfg.batch.effective:
        raise InvalidInput(f"corpus {cfg.corpus} has {n_train} kept train rows, fewer than one optimizer step "
                           f"(batch.effective={cfg.batch.effective}); generate more or lower batch.effective")
    total_steps = plan_total_steps(cfg, n_train)
    done = out.read_json("summary.json")
    if done and done.get("steps") == done.get("planned_steps") == total_steps and \
            done.get("train_examples") == n_train and out.read_json("adapter/meta.json") is not None:
        print(f"{cfg.run_id}: already trained ({total_steps} steps, adapter {done['adapter']}); nothing to do",
              file=sys.stderr)
        return done  # a rerun of a finished job must not encode the corpus again to find that out
    # Every checkpoint resolves here, on the driver: a missing one is a clear error, not a worker stack trace.
    resolve_llm(cfg.model.llm)
    for enc in cfg.model.encoders.values():
        resolve_checkpoint(enc.checkpoint, enc.revision, expect=["config.json"])
    for uri in [cfg.init_adapter, *(e.adapter_init for e in cfg.model.encoders.values())]:
        if uri is not None:
            resolve_checkpoint(uri, expect=["adapter.safetensors", "model_config.json"])
    init_ray(cfg.ray, log_to_driver=True)  # the workers print the progress lines
    with bad_data_as_input_errors():  # encoders.cache materializes the states here, on the driver
        # no validation rows (tiny corpora): evaluate on a fixed slice of train, and say so in the summary
        datasets = build_splits(cfg, corpus, n_train, n_val)
    # A worker's GPU: Ray Train's own (CUDA, NCCL), or on a local multi-node cluster the stand-in resource, with
    # the work on CPU (gloo).
    gpu = cfg.workers.use_gpu and real_gpus()
    per_worker = {"CPU": cfg.workers.num_cpus}
    if cfg.workers.use_gpu and not gpu:
        per_worker |= gpu_options(1)["resources"]
    storage_path = out.root if out.local else out.root.rsplit("/", 1)[0]
    trainer = TorchTrainer(
        train_loop,
        train_loop_config={"cfg": cfg.model_dump(mode="json"), "total_steps": total_steps, "out": out.uri,
                           # built here: environment variables do not reach a cluster's workers
                           "storage_options": None if out.local else env.s3_storage_options()},
        scaling_config=ScalingConfig(num_workers=cfg.workers.num_workers, use_gpu=gpu,
                                     resources_per_worker=per_worker),
        run_config=RunConfig(
            name="train" if out.local else posixpath.basename(out.root) + "/train",
            storage_path=storage_path, storage_filesystem=None if out.local else out.arrow_filesystem(),
            checkpoint_config=CheckpointConfig(num_to_keep=cfg.num_to_keep),
            failure_config=FailureConfig(max_failures=cfg.workers.max_failures),
            callbacks=callbacks,
        ),
        datasets=datasets,
        torch_config=TorchConfig(backend="nccl" if gpu else "gloo"),
    )
    with bad_data_as_input_errors():
        result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError(f"training {cfg.run_id} finished without a checkpoint: {result.error}")
    return export(result.checkpoint, out, cfg, total_steps, n_train, n_val, corpus_id)


@contextmanager
def bad_data_as_input_errors():
    """Bad data or checkpoints surfaced inside a Ray task, actor or Train worker: reported as what they are."""
    try:
        yield
    except Exception as e:
        cause = alarm_error_in(e)
        if cause is not None:
            raise InvalidInput(cause) from None
        raise


def check_corpus(out: RunStore, corpus: RunStore, uri: str) -> dict:
    """Record the corpus's fingerprint in the run (corpus.json) on its first start; refuse to resume the run on a
    corpus with another one (regenerated, extended, or a different run), which would silently mix data."""
    index = corpus.read_json(INDEX) or {}
    now = {"corpus": uri, "fingerprint": fingerprint(index), "rows": index.get("rows"),
           "shards": len(index.get("shards", []))}
    seen = out.read_json(CORPUS)
    if seen is None:
        out.write_json(CORPUS, now)
    elif seen["fingerprint"] != now["fingerprint"]:
        raise InvalidInput(
            f"run {out.uri} was trained on corpus {seen['corpus']} (fingerprint {seen['fingerprint'][:12]}, "
            f"{seen['rows']} rows in {seen['shards']} shards); corpus {uri} now has fingerprint "
            f"{now['fingerprint'][:12]} ({now['rows']} rows in {now['shards']} shards). Resume it on the same "
            "corpus, or train a new run_id"
        )
    return now


def export(checkpoint, out: RunStore, cfg: TrainConfig, total_steps: int, n_train: int, n_val: int,
           corpus_id: dict) -> dict:
    """Final adapter (loads directly into inference), metrics.jsonl and curves.png next to the checkpoints."""
    with checkpoint.as_directory() as d, tempfile.TemporaryDirectory() as tmp:
        d = Path(d)
        history = read_metrics(d / METRICS)
        plot = plot_curves(history, Path(tmp) / "curves.png")
        for name in ("adapter.safetensors", "model_config.json", "meta.json"):
            out.write_bytes(posixpath.join("adapter", name), (d / "adapter" / name).read_bytes())
        out.write_bytes(METRICS, (d / METRICS).read_bytes())
        out.write_bytes("curves.png", plot.read_bytes())
    train = [h for h in history if h["kind"] == "train"]
    val = [h for h in history if h["kind"] == "val"]
    summary = {
        "run": out.uri, "adapter": posixpath.join(out.uri, "adapter"),
        "steps": train[-1]["step"] if train else 0, "planned_steps": total_steps,
        "train_examples": n_train, "val_examples": n_val or f"none (validated on {cfg.eval_batches} train batches)",
        "first_loss": train[0]["loss"] if train else None, "last_loss": train[-1]["loss"] if train else None,
        "last_val_loss": val[-1]["loss"] if val else None,
        "examples_per_s": round(examples_per_s(train), 3),
        "corpus_fingerprint": corpus_id["fingerprint"],
    }
    out.write_json("summary.json", summary)
    return summary
