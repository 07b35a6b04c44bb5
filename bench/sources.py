"""The corpus's read + describe + prompt stages (no LLM) at scale: rows/s and the driver's peak memory, which
must not grow with the corpus (the rows are read in Ray tasks and stats are merged per shard).

    python bench/sources.py [--sizes 100000 1000000] [--files 8] [--num-cpus 4] [--warmup 20000]

Each size is a Parquet source of N synthetic rows (id, a path to one 0.1 s WAV, a label and a caption) in
`--files` files, read and run through the CPU stages (probe, describe, prompt) by the pipeline's own
`services.corpus.pipeline.described`, and consumed as the pipeline consumes it: batches of `shard_rows` on the
driver, each reduced to its statistics counts and merged. A thread samples the driver's memory every 20 ms. A small
first run (`--warmup`) takes the one-time costs (imports, Ray Data's operators, caches) out of the figures.
Reported per size: rows/s (wall time of the whole read, stages and consumption), the peak above the start of the
driver's own (private) memory, which must stay flat as rows grow, and of its RSS, which also counts the
object-store pages it has mapped.
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


def memory() -> dict[str, int]:
    """This process's resident memory in bytes: 'rss' (all of it) and 'own' (its private, anonymous pages).

    The difference is mostly Ray's object store: the driver maps the store's shared memory, and every store page
    it touches while reading blocks counts in its RSS until the store reuses it, however little the driver holds.
    'own' is what the driver itself keeps (Linux: RssAnon in /proc/self/status; elsewhere the RSS).
    """
    rss = psutil.Process().memory_info().rss
    try:
        with open("/proc/self/status") as f:
            fields = dict(line.split(":", 1) for line in f if line.startswith("Rss"))
        return {"rss": rss, "own": int(fields["RssAnon"].split()[0]) * 1024}
    except (OSError, KeyError):
        return {"rss": rss, "own": rss}


class PeakRSS:
    """Samples `memory()` in a thread; `peak` holds the highest value of each figure, `start` the first."""

    def __init__(self, every_s: float = 0.02):
        self.every_s = every_s
        self.start = memory()
        self.peak = dict(self.start)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        self.peak = {k: max(v, self.peak[k]) for k, v in memory().items()}

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            time.sleep(self.every_s)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


def run_size(folder: Path, n: int) -> dict:
    from alarm.config import CorpusConfig, load_config
    from alarm.corpus.stats import finish_stats, merge_counts, shard_counts
    from services.corpus.pipeline import described

    cfg = load_config(CorpusConfig, "paper", [f"sources=[{{kind: parquet, name: bench, path: '{folder}', "
                                              "family: caption, id_column: id}]"], section="corpus")
    with PeakRSS() as rss:
        t0 = time.perf_counter()
        total, rows = shard_counts([]), 0
        for batch in described(cfg).iter_batches(batch_size=cfg.shard_rows, batch_format="pyarrow"):
            rows += batch.num_rows
            total = merge_counts([total, shard_counts(batch.select(["source", "prompt_origin"]).to_pylist())])
        seconds = time.perf_counter() - t0
    assert rows == n and finish_stats(total)["rows"] == n, (rows, n)
    return {"rows": n, "seconds": round(seconds, 1), "rows_per_s": round(n / seconds),
            "driver_own_peak_mib": round((rss.peak["own"] - rss.start["own"]) / 2**20, 1),
            "driver_rss_peak_mib": round((rss.peak["rss"] - rss.start["rss"]) / 2**20, 1),
            "driver_rss_mib": round(rss.peak["rss"] / 2**20)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    p.add_argument("--files", type=int, default=8)
    p.add_argument("--num-cpus", type=int, default=4)
    p.add_argument("--warmup", type=int, default=20_000,
                   help="rows of a first, unreported run: its one-time imports and caches are not the corpus's cost")
    args = p.parse_args()
    import ray

    ray.init(num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        if args.warmup:
            run_size(write_source(Path(tmp) / "warmup", args.warmup, args.files), args.warmup)
        for n in args.sizes:
            folder = write_source(Path(tmp) / f"n{n}", n, args.files)
            results.append(run_size(folder, n))
            print(results[-1], flush=True)
    ray.shutdown()
    first, last = results[0], results[-1]
    print(f"driver's own memory (private pages), peak above start: {first['driver_own_peak_mib']} MiB at "
          f"{first['rows']} rows, {last['driver_own_peak_mib']} MiB at {last['rows']} rows "
          f"(x{last['rows'] / first['rows']:g} rows); RSS incl. mapped object-store pages: "
          f"{first['driver_rss_peak_mib']} -> {last['driver_rss_peak_mib']} MiB; "
          f"rows/s {first['rows_per_s']} -> {last['rows_per_s']}")

if __name__ == "__main__":
    main()
