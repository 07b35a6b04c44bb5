"""One evaluation run end to end, and rescoring of a finished one; what `python -m alarm.eval` calls.

    paths = asyncio.run(run_benchmark(items, audio_root, out, settings, make_answerer, model="tiny"))
    paths = rescore(out, scorers=("official",), parse="reference")

An output folder holds one run: run.json (the settings that change answers, the metadata files, the model),
predictions.jsonl (raw answers, appended per item), and the scored outputs of `report.write_outputs`.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict
from pathlib import Path

from alarm.eval.benchmarks import Item, load_items
from alarm.eval.report import file_sha256, score_predictions, write_outputs
from alarm.eval.runner import (
    Answerer,
    EvalRunError,
    PredictionStore,
    RunSettings,
    audio_locations,
    check_audio,
    run_items,
)
from alarm.eval.scoring import check_vocab
from alarm.files import atomic_write

RUN_FILE, PREDICTIONS = "run.json", "predictions.jsonl"


def meta_facts(meta: Sequence[str | Path]) -> list[dict]:
    return [{"path": str(Path(m).resolve()), "sha256": file_sha256(m)} for m in meta]


def read_run(out: Path) -> dict | None:
    path = Path(out) / RUN_FILE
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise EvalRunError(f"{path}: not valid JSON ({e.msg}); it is written atomically, so it was edited "
                           "by hand: fix or remove it") from None


async def run_benchmark(items: Sequence[Item], meta: Sequence[str | Path], audio_root: str, out: str | Path,
                        settings: RunSettings, make_answerer: Callable[[], Awaitable[Answerer]], *,
                        model: str, concurrency: int = 8, max_errors: int = 10,
                        scorers: Sequence[str] = ("official", "strict"), parse: str = "standard",
                        fallback: str = "none",
                        check: Callable[[list[str]], set[str]] | None = None) -> tuple[dict[str, Path], int]:
    """Check audio, answer the items not yet answered in `out`, then score and write the outputs.

    Returns (written paths, number of items whose request failed). Raises EvalRunError for missing audio or an
    output folder that holds a run with other settings, ScoreError for group values the official scorer cannot
    score (when it is asked for); nothing runs in any of these cases.
    """
    out = Path(out)
    if "official" in scorers:  # the official MMAU/MMAR scorers crash on other group values: say so up front
        check_vocab(settings.benchmark, items)
    locations = audio_locations(items, audio_root)
    check_audio(locations, audio_root, exists=check)
    saved = read_run(out)
    if saved is not None and (diff := settings.mismatch(saved)):
        raise EvalRunError(f"{out} holds a run with other settings ({diff}); use another out=..., or the same "
                           f"settings to resume")
    if saved is not None and saved.get("model") not in (None, model):
        raise EvalRunError(f"{out} holds the answers of another model ({saved['model']!r}, now {model!r}); use "
                           f"another out=..., or the same model to resume")
    context = {**asdict(settings), "meta": meta_facts(meta), "audio_root": audio_root, "model": model}
    atomic_write(out / RUN_FILE, json.dumps(context, indent=2) + "\n")

    answerer = await make_answerer()
    try:
        stats = await run_items(items, answerer, settings, PredictionStore(out / PREDICTIONS),
                                audio=locations, concurrency=concurrency, max_errors=max_errors)
    finally:
        if hasattr(answerer, "aclose"):
            await answerer.aclose()
    if stats.failed:
        print(f"{len(stats.failed)} requests failed (rerun to retry them), e.g.:", file=sys.stderr)
        for k, v in list(stats.failed.items())[:5]:
            print(f"  {k}: {v}", file=sys.stderr)
    run = score_predictions(items, PredictionStore(out / PREDICTIONS).load(), benchmark=settings.benchmark,
                            fmt=settings.format, scorers=scorers, parse=parse, fallback=fallback,
                            seed=settings.seed)
    context = {**context, "failed_requests": len(stats.failed), "seconds": round(stats.seconds, 1)}
    return write_outputs(out, run, context, meta_suffix=Path(meta[0]).suffix), len(stats.failed)


def rescore(out: str | Path, *, benchmark: str | None = None, meta: Sequence[str | Path] = (),
            fmt: str | None = None, scorers: Sequence[str] = ("official", "strict"), parse: str = "standard",
            fallback: str = "none", seed: int | None = None, predictions: str | Path | None = None,
            limit: int | None = None) -> dict[str, Path]:
    """Score an existing predictions file again (no inference). Settings missing from the arguments come from
    the folder's run.json; `meta` given here replaces the recorded metadata (predictions join by id)."""
    out = Path(out)
    saved = read_run(out) or {}
    benchmark, fmt = benchmark or saved.get("benchmark"), fmt or saved.get("format")
    meta = list(meta) or [m["path"] for m in saved.get("meta", [])]
    seed = seed if seed is not None else saved.get("seed")
    if not (benchmark and fmt and meta):
        raise EvalRunError(f"{out} has no {RUN_FILE}: pass benchmark=, format= and meta=")
    if fallback == "random" and seed is None:
        raise EvalRunError("fallback=random needs seed= (the run recorded none)")
    store = PredictionStore(predictions or out / PREDICTIONS)
    if not store.path.exists():
        raise EvalRunError(f"no predictions file at {store.path}")
    items = load_items(benchmark, meta)[:limit]
    done = store.load()
    unknown = [k for k in done if k not in {it.id for it in items}]
    if unknown and limit is None:
        print(f"warning: {len(unknown)} predictions have ids not in the metadata, e.g. {unknown[:3]}",
              file=sys.stderr)
    run = score_predictions(items, done, benchmark=benchmark, fmt=fmt, scorers=scorers, parse=parse,
                            fallback=fallback, seed=seed)
    context = {**saved, "benchmark": benchmark, "format": fmt, "seed": seed, "meta": meta_facts(meta)}
    return write_outputs(out, run, context, meta_suffix=Path(meta[0]).suffix)
