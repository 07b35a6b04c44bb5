"""Corpus generation through Ray Data with the real tiny vLLM engine (the scripted tiny Qwen3)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from alarm.config import CorpusConfig, load_config
from alarm.errors import InvalidInput

ROOT = Path(__file__).resolve().parents[2]


def corpus_cfg(tmp_path, *overrides) -> CorpusConfig:
    return load_config(CorpusConfig, "tiny", [f"output={tmp_path}", "run_id=test", *overrides], section="corpus")


def read_rows(run: Path) -> list[dict]:
    return [r for p in sorted((run / "shards").glob("*.parquet")) for r in pq.read_table(p).to_pylist()]


def test_pipeline_writes_flagged_keyed_rows(ray_cluster, tmp_path):
    from services.corpus.pipeline import run

    cfg = corpus_cfg(tmp_path, "sources.0.num_clips=16")
    stats = run(cfg)
    run_dir = tmp_path / "test"
    rows = read_rows(run_dir)
    keys = [r["key"] for r in rows]
    assert sorted(keys) == [f"synthetic/{i:06d}" for i in range(16)]  # every key exactly once
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["complete"] and manifest["rows"] == 16 and len(manifest["shards"]) == 2
    assert CorpusConfig.model_validate_json((run_dir / "config.json").read_text()) == cfg
    assert stats["rows"] == 16 and stats["throughput"]["rows_per_s"] > 0
    assert json.loads((run_dir / "stats.json").read_text())["rows"] == 16
    kept = [r for r in rows if r["keep"]]
    assert kept, "the scripted tiny LLM follows both formats, so rows must pass the filters"
    for r in kept:
        assert r["answer_generated"] and r["answer_rephrased"] and r["target"] == r["answer_rephrased"]
        assert r["has_answer_tag"] and json.loads(r["flags"]) == []
        assert "<answer>" not in r["target"] and "text_llm_reasoning" not in r["target"]
    # the rephrased targets no longer read like the model was given text
    assert stats["leak_rate"]["generated"] > stats["leak_rate"]["rephrased"]
    assert {r["split"] for r in rows} <= {"train", "validation"}


GREEDY = ("generate.sampling.temperature=0", "rephrase.sampling.temperature=0")
# the toy teacher names what each row's description names (rows differ) and, with a 4-token thinking budget,
# every rephrase is forced into phase 2
TEACHER = ("engine.checkpoint=tiny://qwen3-teacher", "rephrase.thinking_budget=4", "rephrase.max_tokens=16",
           "rephrase.max_total_tokens=24", "rephrase.retries=1")  # cut short, no rephrase parses: each is retried


# the teacher's build (about 8 minutes on 2 cores when its recipe changes) keeps its case out of the default suite
@pytest.mark.parametrize("model", [pytest.param(("engine.checkpoint=tiny://qwen3-scripted",), id="scripted"),
                                   pytest.param(TEACHER, id="teacher", marks=pytest.mark.slow)])
def test_the_async_workers_write_what_the_batched_engine_writes(ray_cluster, tmp_path, model):
    """Greedy decoding (and seeded sampling for the teacher's rephrase retries): the pipeline's rows (AsyncLLM, rows in flight across batches) equal, column for column,
    what `vllm.LLM` gives the same rows in batches of workers.batch_size. With the teacher the rows' texts differ
    and every rephrase is forced, so a row given another's output or a wrong phase 2 would show."""
    from alarm.corpus import rows as R
    from alarm.corpus.synthetic import synthetic_row
    from services.corpus.pipeline import run
    from services.engines.llm import VLLMEngine
    from services.storage import to_table

    cfg = corpus_cfg(tmp_path, "sources.0.num_clips=16", "workers.engine=async", *GREEDY, *model)
    run(cfg)
    got = sorted(read_rows(tmp_path / "test"), key=lambda r: r["key"])
    source = [R.prompt_row(R.describe_row(R.probe_row(synthetic_row(cfg.sources[0], i), cfg.filters.max_duration_s)),
                           cfg.prompts.mode) for i in range(16)]
    engine, bs, f = VLLMEngine(cfg.engine), cfg.workers.batch_size, cfg.filters
    want = [R.finish_row(r, f, cfg.split.val_fraction, cfg.split.salt, engine.count_tokens)
            for i in range(0, 16, bs) for r in R.llm_stages(source[i : i + bs], engine, cfg)]
    want = sorted(to_table(want).to_pylist(), key=lambda r: r["key"])
    assert set(got[0]) == set(want[0])
    for col in want[0]:
        assert [r[col] for r in got] == [r[col] for r in want], col
    if model is TEACHER:
        assert len({r["answer_generated"] for r in got}) > 4 and all(r["forced_rephrase"] for r in got)
        assert {r["rephrase_tries"] for r in got} == {2}  # the sampled, seeded retries agree between the engines


def test_the_pipeline_calls_no_deprecated_ray_api(ray_cluster, tmp_path, ray_deprecations):
    from services.corpus.pipeline import build

    build(corpus_cfg(tmp_path))  # the calls are made while the dataset is planned, before it runs
    assert ray_deprecations() == []


def test_s3_output(ray_cluster, s3_endpoint, tmp_path):
    from alarm.checkpoints import s3_filesystem
    from services.corpus.pipeline import run

    fs = s3_filesystem()
    fs.mkdir("gen-corpora")
    cfg = load_config(CorpusConfig, "tiny", ["output=s3://gen-corpora/runs", "run_id=s3test",
                                             "sources.0.num_clips=6", "shard_rows=4"], section="corpus")
    stats = run(cfg)
    names = sorted(p.rsplit("/", 1)[-1] for p in fs.find("gen-corpora/runs/s3test"))
    assert {"config.json", "manifest.json", "stats.json"} <= set(names)
    assert stats["rows"] == 6
    with fs.open("gen-corpora/runs/s3test/manifest.json") as f:
        assert json.load(f)["rows"] == 6


def test_unreachable_or_missing_bucket_is_a_clear_error(s3_endpoint, tmp_path):
    from services.corpus.pipeline import run

    cfg = load_config(CorpusConfig, "tiny", ["output=s3://no-such-bucket/runs"], section="corpus")
    with pytest.raises(InvalidInput, match="s3://no-such-bucket does not exist"):
        run(cfg)


def test_bad_manifest_rows_are_flagged_not_fatal(ray_cluster, tmp_path):
    from services.corpus.pipeline import run

    t = np.arange(16000 * 2) / 16000
    sf.write(tmp_path / "good.flac", (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 16000)
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot really")
    lines = [
        {"id": "a", "audio": "good.flac", "label": "tone"},
        {"id": "b", "audio": "missing.flac", "label": "tone"},
        {"id": "c", "audio": "corrupt.wav", "label": "tone"},
        {"id": "", "audio": "good.flac", "label": "tone"},
        {"id": "e", "audio": "good.flac", "label": {"nested": "dict"}},
        {"id": "a", "audio": "good.flac", "label": "duplicate id"},
    ]
    (tmp_path / "m.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    cfg = corpus_cfg(tmp_path / "out", "sources=[{kind: manifest, name: esc, family: labels, path: "
                     f"{tmp_path / 'm.jsonl'}}}]")
    stats = run(cfg)
    rows = {r["key"]: r for r in read_rows(tmp_path / "out" / "test")}
    assert len(rows) == 6 and stats["rows"] == 6
    assert rows["esc/a"]["audio_ok"]
    for key in ("esc/b", "esc/c"):
        assert not rows[key]["keep"] and "undecodable" in json.loads(rows[key]["flags"]), rows[key]
    assert "missing.flac" in rows["esc/b"]["audio_error"]
    assert not rows["esc/e"]["keep"]
    assert any(k.startswith("esc/a#dup") for k in rows)


@pytest.mark.slow
def test_killed_job_resumes_with_every_key_once(tmp_path):
    """Kill `python -m alarm.generate` after its first shard, rerun it: each key exactly once."""
    args = [sys.executable, "-m", "alarm.generate", f"output={tmp_path}", "run_id=kill", "shard_rows=2",
            "sources.0.num_clips=24", "workers.batch_size=2"]
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(args, cwd=ROOT, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    shards = tmp_path / "kill" / "shards"
    deadline = time.time() + 300
    while time.time() < deadline and not (shards.exists() and any(shards.glob("*.parquet"))):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    first = {r["key"] for r in read_rows(tmp_path / "kill")}
    assert 0 < len(first) < 24, "the kill must land mid-run"
    subprocess.run(args, cwd=ROOT, env=env, check=True, capture_output=True, timeout=600)
    keys = [r["key"] for r in read_rows(tmp_path / "kill")]
    assert sorted(keys) == [f"synthetic/{i:06d}" for i in range(24)]
    stats = json.loads((tmp_path / "kill" / "stats.json").read_text())
    assert stats["throughput"]["resumed_rows"] == len(first) and stats["rows"] == 24
