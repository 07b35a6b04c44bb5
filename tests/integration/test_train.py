"""Adapter training through Ray Train + Ray Data + encoder actors on the tiny model and a generated corpus."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from alarm.config import TrainConfig, load_config
from alarm.errors import InvalidInput


def train_cfg(corpus: Path, output, *overrides, model: str = "tiny-whisper") -> TrainConfig:
    """The tiny train preset; one encoder (tiny-whisper) unless a test needs the whole four-encoder stack."""
    return load_config(TrainConfig, "tiny", [f"model={model}", f"corpus={corpus}", f"output={output}", "run_id=t",
                                             "checkpoint_every=2", "eval_every=4", "epochs=20", *overrides], section="train")


def history(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def test_the_data_pipeline_calls_no_deprecated_ray_api(ray_cluster, tiny_corpus, tmp_path, ray_deprecations, capsys):
    """... and sorts the rows into the key order in range partitions of its own, not Ray Data's default number
    of them (about 150 reduce tasks for these 24 rows, every epoch). With `encoders.cache`, one pass gives both
    splits; where a corpus has no validation rows, "val" is the first rows of train (run b of the test below
    compares the one pass with validation rows against streamed splits, byte for byte)."""
    from services.train.data import build_split, build_splits, count_examples, open_corpus

    store = open_corpus(str(tiny_corpus))
    built = {}
    for split in ("train", "validation"):
        ds = build_split(train_cfg(tiny_corpus, tmp_path, "encoders.cache=false"), store, split)
        capsys.readouterr()
        ds.explain()
        assert "SortShuffleReduce(partitions=2)" in capsys.readouterr().out
        built[split] = ds.materialize().take_all()
    cfg = train_cfg(tiny_corpus, tmp_path, "encoders.cache=true", "eval_batches=1")
    one_pass = {k: v.take_all() for k, v in build_splits(cfg, store, count_examples(store)["train"], 0).items()}
    assert [r["key"] for r in one_pass["train"]] == [r["key"] for r in built["train"]]
    assert [r["key"] for r in one_pass["val"]] == [r["key"] for r in built["train"]][: cfg.batch.per_worker]
    assert set(one_pass["val"][0]) == set(built["train"][0])  # no split column left behind
    for a, b in zip(one_pass["train"], built["train"], strict=True):
        assert a["states_whisper"].tobytes() == b["states_whisper"].tobytes()
    assert ray_deprecations() == []


def relaid(corpus: Path, out: Path) -> Path:
    """The same rows as `corpus` in other shards and another order, as a second generation run may write them
    (its actors finish blocks in another order)."""
    (out / "shards").mkdir(parents=True)
    table = pa.concat_tables([pq.read_table(p) for p in sorted((corpus / "shards").glob("*.parquet"))])
    order = np.random.default_rng(0).permutation(table.num_rows)
    shards = []
    for i, part in enumerate(np.array_split(order, 3)):
        pq.write_table(table.take(part), out / "shards" / f"part-9-{i}.parquet")
        shards.append({"path": f"shards/part-9-{i}.parquet", "rows": len(part)})
    manifest = json.loads((corpus / "manifest.json").read_text())
    (out / "manifest.json").write_text(json.dumps({**manifest, "shards": shards}))
    return out


def test_the_adapter_is_a_function_of_the_rows_whatever_their_layout_or_cache(ray_cluster, tiny_corpus, tmp_path,
                                                                               monkeypatch):
    """Three runs of 4 steps (3 per epoch, so every run starts a second epoch) share the work of six checks:
    a  the corpus as written, states encoded every epoch, the run written to S3 (checkpoints, adapter, metrics);
    b  the rows relaid, states kept in memory across epochs (encoders.cache) and stored on disk (cache_dir);
    c  the corpus as written, every state loaded from b's disk cache, none encoded or rewritten.
    b and c are byte-identical (the shard layout and the disk cache change nothing, and a repeated run gives the
    same bytes); a matches them (the in-memory cache and the storage change nothing); rerunning c trains nothing,
    more steps do."""
    import services.train.driver as train_driver
    from alarm.checkpoints import s3_filesystem
    from alarm.model.checkpoint import load_adapter

    fs = s3_filesystem()
    fs.mkdir("trained")
    states = tmp_path / "states"
    runs = {"a": (tiny_corpus, ["encoders.cache=false"]),
            "b": (relaid(tiny_corpus, tmp_path / "relaid"), ["encoders.cache=true", f"encoders.cache_dir={states}"]),
            "c": (tiny_corpus, ["encoders.cache=false", f"encoders.cache_dir={states}"])}
    outputs = {"a": "s3://trained/runs", "b": tmp_path / "b", "c": tmp_path / "c"}
    out, stamps = {}, {}
    for name, (corpus, extra) in runs.items():
        if name == "c":
            stamps = {p: p.stat().st_mtime_ns for p in states.rglob("*.npy")}
            assert stamps, "run b stored no encoder states"
        summary = train_driver.run(train_cfg(corpus, outputs[name], "max_steps=4", *extra))
        assert summary["steps"] == 4
        out[name] = summary
    assert {p: p.stat().st_mtime_ns for p in states.rglob("*.npy")} == stamps  # c loaded, wrote nothing
    files = {p.rsplit("/", 1)[-1] for p in fs.find("trained/runs/t")}
    assert {"adapter.safetensors", "model_config.json", "metrics.jsonl", "curves.png", "summary.json"} <= files
    assert any("checkpoint_" in p for p in fs.find("trained/runs/t/train"))
    assert out["a"]["adapter"] == "s3://trained/runs/t/adapter"
    (tmp_path / "a").mkdir()
    fs.get("trained/runs/t", str(tmp_path / "a" / "t"), recursive=True)
    adapter = {n: (tmp_path / n / "t" / "adapter" / "adapter.safetensors").read_bytes() for n in runs}
    assert adapter["b"] == adapter["c"]
    losses = {n: [h["loss"] for h in history(tmp_path / n / "t") if h["kind"] == "train"] for n in runs}
    assert losses["a"] == pytest.approx(losses["b"], rel=1e-5)
    trained = {n: load_adapter(tmp_path / n / "t" / "adapter")[0].state_dict() for n in "ab"}
    for k, v in trained["a"].items():
        torch.testing.assert_close(trained["b"][k], v, rtol=1e-4, atol=1e-6, msg=k)

    def never(*a, **k):
        raise AssertionError("a finished run built its datasets again")

    monkeypatch.setattr(train_driver, "build_splits", never)
    c_cfg = train_cfg(tiny_corpus, tmp_path / "c", "max_steps=4", *runs["c"][1])
    assert train_driver.run(c_cfg) == out["c"]
    with pytest.raises(AssertionError, match="built its datasets again"):  # more steps: it does train on
        train_driver.run(train_cfg(tiny_corpus, tmp_path / "c", "max_steps=5", *runs["c"][1]))

    # b's corpus regenerated under the same name: its run is not resumed (nor found finished) on it
    b_corpus, b_extra = runs["b"]
    assert json.loads((tmp_path / "b" / "t" / "corpus.json").read_text())["rows"] == 24
    index = json.loads((b_corpus / "manifest.json").read_text())
    index["shards"][0]["sha256"] = "0" * 64
    (b_corpus / "manifest.json").write_text(json.dumps(index))
    with pytest.raises(InvalidInput, match=r"was trained on corpus .*fingerprint .* now has fingerprint"):
        train_driver.run(train_cfg(b_corpus, tmp_path / "b", "max_steps=4", *b_extra))


@pytest.mark.slow
def test_restarted_job_resumes_where_it_stopped(ray_cluster, tiny_corpus, tmp_path):
    from services.train.driver import run

    first = run(train_cfg(tiny_corpus, tmp_path / "a", "max_steps=8", "stop_after=4"))
    assert first["steps"] == 4 and first["planned_steps"] == 8
    resumed = run(train_cfg(tiny_corpus, tmp_path / "a", "max_steps=8"))
    straight = run(train_cfg(tiny_corpus, tmp_path / "b", "max_steps=8"))
    h = [x for x in history(tmp_path / "a" / "t") if x["kind"] == "train"]
    assert [x["step"] for x in h] == list(range(1, 9))  # nothing repeated, nothing lost
    assert resumed["steps"] == straight["steps"] == 8
    # N steps + restart + N steps matches 2N straight steps (same batches, schedule, RNG and optimizer state)
    assert resumed["last_loss"] == pytest.approx(straight["last_loss"], rel=1e-4, abs=1e-5)


@pytest.mark.slow
def test_killed_worker_resumes_from_last_checkpoint(ray_cluster, tiny_corpus, tmp_path):
    from services.train.driver import run

    cfg = train_cfg(tiny_corpus, tmp_path, "max_steps=10")
    result: dict = {}
    t = threading.Thread(target=lambda: result.update(run(cfg)))
    t.start()
    ckpts = tmp_path / "t" / "train"
    deadline = time.time() + 300
    while time.time() < deadline and not (ckpts.exists() and any(ckpts.glob("checkpoint_*"))):
        time.sleep(0.2)
    workers = train_worker_pids()
    assert workers, "no live Ray Train worker to kill"
    os.kill(workers[0], signal.SIGKILL)
    t.join(600)
    assert result.get("steps") == 10
    steps = [h["step"] for h in history(tmp_path / "t") if h["kind"] == "train"]
    assert steps == list(range(1, 11))


def train_worker_pids() -> list[int]:
    """PIDs of live Ray Train worker actors (Ray titles actor processes `ray::<Class>...`)."""
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                cmd = (d / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if cmd.startswith("ray::") and "TrainWorker" in cmd.split("\0")[0]:
                pids.append(int(d.name))
    return pids


def test_bad_corpus_gives_a_clear_error(ray_cluster, tiny_corpus, tmp_path):
    from services.train.driver import run

    with pytest.raises(InvalidInput, match="no manifest.json"):
        run(train_cfg(tmp_path / "nowhere", tmp_path))
    # a shard without the target column
    bad = tmp_path / "bad"
    (bad / "shards").mkdir(parents=True)
    (bad / "manifest.json").write_text("{}")
    table = pa.concat_tables([pq.read_table(p) for p in sorted((tiny_corpus / "shards").glob("*.parquet"))])
    pq.write_table(table.drop(["target"]), bad / "shards" / "part-000.parquet")
    with pytest.raises(InvalidInput, match="lacks column\\(s\\) target"):
        run(train_cfg(bad, tmp_path))
    # kept rows whose audio cannot be decoded: the error names the row
    corrupt = tmp_path / "corrupt"
    (corrupt / "shards").mkdir(parents=True)
    (corrupt / "manifest.json").write_text("{}")
    rows = table.to_pylist()
    for r in rows:
        r["audio_bytes"] = b"not audio at all"
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), corrupt / "shards" / "part-000.parquet")
    with pytest.raises(InvalidInput, match="audio cannot be read for training"):
        run(train_cfg(corrupt, tmp_path / "o", "workers.max_failures=0"))


class ReadEventsAfterReport:
    """A ray.train.UserCallback (made a subclass in `watching`): after every report, while the run is still
    training, it reads the run's TensorBoard events and curves.png and records what it found."""

    def __init__(self, run: str, out: str):
        self.run, self.out = run, out

    def after_report(self, run_context, metrics, checkpoint):
        from tests.tb_events import scalars

        found = scalars(Path(self.run) / "tensorboard")
        seen = {"reported": metrics[0].get("step"), "kind_val": "val_loss" in metrics[0],
                "train_steps": [s for s, _ in found.get("train/loss", [])],
                "val_steps": [s for s, _ in found.get("val/loss", [])],
                "mix_tags": sorted(t for t in found if t.startswith("mix/")),
                "curves": (Path(self.run) / "curves.png").exists(),
                "exported": (Path(self.run) / "summary.json").exists()}  # written once fit() returns
        with open(self.out, "a") as f:
            f.write(json.dumps(seen) + "\n")


def watching(run: Path, out: Path):
    import ray.train

    cls = type("Watch", (ReadEventsAfterReport, ray.train.UserCallback), {})
    return [cls(str(run), str(out))]


def test_the_four_encoder_stack_logs_while_training_resumes_and_loads_for_inference(ray_cluster, tiny_corpus,
                                                                                     tmp_path):
    """The whole tiny stack (four encoders, each clip encoded once per run: `encoders.cache`) through Ray Train:
    3 steps reported every step, then resumed to 6 with reports only at validations and checkpoints; TensorBoard
    events and curves.png are there while it trains, and the run appends; the exported adapter is the last
    checkpoint's and loads straight into inference."""
    from alarm.model.alarm_model import AlarmModel
    from alarm.model.audio_adapter import audio_token_count
    from alarm.model.checkpoint import load_adapter
    from alarm.types import Waveform
    from services.train.driver import run
    from tests.tb_events import scalars

    def cfg(*extra):
        return train_cfg(tiny_corpus, tmp_path, "encoders.cache=true", *extra, model="tiny")

    seen_file, run_dir = tmp_path / "seen.jsonl", tmp_path / "t"
    overrides = ["max_steps=6", "log_every=1", "report_every=1", "eval_every=2", "checkpoint_every=2"]
    first = run(cfg(*overrides, "stop_after=3"), callbacks=watching(run_dir, seen_file))
    assert first["steps"] == 3
    seen = [json.loads(x) for x in seen_file.read_text().splitlines()]
    assert [s["reported"] for s in seen] == [1, 2, 3]
    for s in seen:  # at each report, during the run, the step is already in the event files (and the worker,
        # which goes on training while the controller runs the callback, may have logged later ones too)
        assert not s["exported"] and s["train_steps"][: s["reported"]] == list(range(1, s["reported"] + 1))
    assert seen[1]["val_steps"][:1] == [2] and seen[1]["curves"]  # validation at step 2: val loss and curves.png
    encoders = cfg().model.encoders
    assert len(encoders) == 4
    assert seen[1]["mix_tags"] == sorted(f"mix/{k}/layer_{t}" for k, e in encoders.items() for t in e.layers)
    resumed_seen = tmp_path / "resumed-seen.jsonl"
    default = [o for o in overrides if not o.startswith("report_every=")]  # reports only with validation/checkpoints
    resumed = run(cfg(*default), callbacks=watching(run_dir, resumed_seen))
    assert resumed["steps"] == 6
    assert [json.loads(x)["reported"] for x in resumed_seen.read_text().splitlines()] == [4, 6]
    final = scalars(run_dir / "tensorboard")
    assert [s for s, _ in final["train/loss"]] == list(range(1, 7))  # appended, no step twice
    assert [s for s, _ in final["val/loss"]] == [2, 3, 4, 6]
    assert {"train/lr", "train/grad_norm", "train/examples_per_s", "train/token_acc"} <= set(final)
    logged = [h for h in history(run_dir) if h["kind"] == "train"]
    assert [h["step"] for h in logged] == list(range(1, 7))  # metrics.jsonl too: appended, no step twice
    assert [h["step"] for h in history(run_dir) if h["kind"] == "val"] == [2, 3, 4, 6]
    assert [v for _, v in final["train/loss"]] == pytest.approx([h["loss"] for h in logged], rel=1e-6)
    assert (run_dir / "curves.png").stat().st_size > 1000

    checkpoints = sorted(p for p in (run_dir / "train").glob("checkpoint_*") if p.is_dir())
    assert 1 < len(checkpoints) <= cfg().num_to_keep
    model = AlarmModel.build(cfg().model, adapter=run_dir / "adapter")  # loads straight into inference
    (earlier, _), (last, _) = (load_adapter(c / "adapter") for c in checkpoints[-2:])
    assert any(not torch.equal(v, last.state_dict()[k]) for k, v in earlier.state_dict().items())  # it trained
    for k, v in last.state_dict().items():  # the exported adapter is the last checkpoint's trained weights
        assert torch.equal(model.adapter.state_dict()[k], v), k
    wave = Waveform(np.sin(np.arange(32000) * 0.05).astype(np.float32) * 0.3, 16000)
    (block,) = model.audio_embeds([wave])
    assert block.shape == (audio_token_count(cfg().model, 2.0, 16000), cfg().model.llm.hidden_size)
