"""The corpus's read + describe + prompt stages (no LLM) at scale: rows/s and the driver's peak memory, which
must not grow with the corpus (the rows are read in Ray tasks and stats are merged per shard).

    python bench/sources.py [--sizes 100000 1000000] [--files 8] [--num-cpus 4]

Each size is a Parquet source of N synthetic rows (id, a path to one 0.1 s WAV, a label and a caption) in
`--files` files, read by `services.corpus.sources.read_sources`, run through `cpu_stages` (probe, describe,
prompt) and consumed as the pipeline consumes it: batches of `shard_rows` on the driver, each reduced to its
statistics counts and merged. A thread samples the driver's RSS every 20 ms. Reported per size: rows/s (wall
time of the whole read, stages and consumption) and the driver's peak RSS above its RSS before the run; the
closing line gives the ratio of the largest size's peak to the smallest's (flat = about 1).
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.parquet as pq
import soundfile as sf

LABELS = ("dog", "rain", "siren", "engine", "bird", "door knock", "laughter", "keyboard")


def write_source(folder: Path, n: int, files: int) -> Path:
    """N rows in `files` Parquet files; every row points at the same tiny WAV (decoding is not what is measured)."""
    folder.mkdir(parents=True, exist_ok=True)
    t = np.arange(1600) / 16000
    sf.write(folder / "clip.wav", (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 16000)
    per = -(-n // files)
    for f in range(files):
        lo, hi = f * per, min(n, (f + 1) * per)
        ids = np.arange(lo, hi)
        pq.write_table(pa.table({
            "id": pa.array([f"r{i:08d}" for i in ids]),
            "audio": pa.array(["clip.wav"] * len(ids)),
            "label": pa.array([LABELS[i % len(LABELS)] for i in ids]),
            "caption": pa.array([f"a {LABELS[i % len(LABELS)]} recorded outdoors, take {i % 97}" for i in ids]),
        }), folder / f"part-{f:04d}.parquet", row_group_size=16384)
    return folder


class PeakRSS:
    """Samples this process's RSS in a thread; `peak` is the highest value seen, `start` the first."""

    def __init__(self, every_s: float = 0.02):
        self.proc, self.every_s = psutil.Process(), every_s
        self.start = self.peak = self.proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(self.every_s)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)


def run_size(folder: Path, n: int) -> dict:
    from alarm import env
    from alarm.config import CorpusConfig, load_config
    from alarm.corpus.stats import finish_stats, merge_counts, shard_counts
    from services.corpus.sources import read_sources
    from services.corpus.stages import cpu_stages

    cfg = load_config(CorpusConfig, "paper", [f"sources=[{{kind: parquet, name: bench, path: '{folder}', "
                                              "family: caption, id_column: id}]"], section="corpus")
    cfg_json = cfg.model_dump(mode="json")
    with PeakRSS() as rss:
        t0 = time.perf_counter()
        ds = read_sources(cfg, set()).map_batches(
            cpu_stages, fn_kwargs={"cfg_json": cfg_json, "storage_options": env.s3_storage_options()},
            batch_format="pyarrow", batch_size=64, num_cpus=0.5)
        total, rows = shard_counts([]), 0
        for batch in ds.iter_batches(batch_size=cfg.shard_rows, batch_format="pyarrow"):
            rows += batch.num_rows
            total = merge_counts([total, shard_counts(batch.select(["source", "prompt_origin"]).to_pylist())])
        seconds = time.perf_counter() - t0
    assert rows == n and finish_stats(total)["rows"] == n, (rows, n)
    return {"rows": n, "seconds": round(seconds, 1), "rows_per_s": round(n / seconds),
            "driver_peak_mib": round((rss.peak - rss.start) / 2**20, 1), "driver_rss_mib": round(rss.peak / 2**20)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    p.add_argument("--files", type=int, default=8)
    p.add_argument("--num-cpus", type=int, default=4)
    args = p.parse_args()
    import ray

    ray.init(num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            folder = write_source(Path(tmp) / f"n{n}", n, args.files)
            results.append(run_size(folder, n))
            print(results[-1], flush=True)
    ray.shutdown()
    first, last = results[0], results[-1]
    print(f"driver peak RSS above start: {first['driver_peak_mib']} MiB at {first['rows']} rows, "
          f"{last['driver_peak_mib']} MiB at {last['rows']} rows (x{last['rows'] // first['rows']} rows); "
          f"rows/s {first['rows_per_s']} -> {last['rows_per_s']}")


if __name__ == "__main__":
    main()
