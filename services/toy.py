"""The toy world's loop (`python -m alarm.toy`): per world seed the teacher and encoder, the data, then
`alarm.generate`, `alarm.train` and the held-out evaluation runs (the ablations) through their real code paths on
the `toy` presets; the report over the seeds.

    summary = run(Path("runs/toy"), SIZES["small"], [0])     # resumable: finished stages only check
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from alarm.files import atomic_write


@dataclass(frozen=True)
class Size:
    train_per_type: int  # training questions of every question type (`alarm.toy.world.train_items`)...
    per_type: int  # held-out questions per question type
    epochs: float
    train_types: tuple[tuple[str, int], ...] = ()  # ...but these types' own numbers, e.g. (("loudness", 225),)

    def train_quota(self) -> dict[str, int]:
        """Training questions per question type, every type named."""
        from alarm.toy.world import QTYPES

        return {**dict.fromkeys(QTYPES, self.train_per_type), **dict(self.train_types)}

    def record(self) -> dict:
        """The size as JSON (`size.json`, the report)."""
        return {"train_per_type": self.train_per_type, "train_types": dict(self.train_types),
                "per_type": self.per_type, "epochs": self.epochs}


SIZES = {"full": Size(train_per_type=150, per_type=32, epochs=12),
         "small": Size(train_per_type=36, per_type=4, epochs=6)}
BUDGETS = (256, 64, 0)
MAX_TOKENS = 192
ENCODER = "pretrained://whisper-tiny.en-10s"  # the toy model preset's (its sha256 goes into the report)


PORTABLE_THREADS = 2  # torch threads of this process in portable numerics (the evaluation pipeline runs here)


def use_portable_numerics() -> None:
    """Portable numerics (`alarm.numerics`) for this process and every Ray worker it starts, and a fixed
    number of threads here: the other stages' threads follow their presets' CPUs (Ray sets OMP_NUM_THREADS),
    the teacher's build runs on one. So on any Intel x86-64 CPU with AVX2 the same command computes the same
    bytes (on another vendor's CPU, the same bytes run after run there: `alarm.numerics`).
    Call it before this process computes anything with torch or starts Ray."""
    import torch

    from alarm import numerics

    numerics.make_portable()
    torch.set_num_threads(PORTABLE_THREADS)


def run(out: Path, size: Size, seeds, teacher: str | None = None) -> dict:
    """Every seed's loop (or its saved result), then the report over them; writes report.json and report.md.
    Runs in this process's numerics mode (`use_portable_numerics`, or native)."""
    from alarm.toy.report import render, summarize

    results = [run_seed(out / f"seed-{s}", size, s, teacher, out / "encoder-states") for s in seeds]
    summary = summarize(results)
    atomic_write(out / "report.json", json.dumps(summary, indent=2) + "\n")
    atomic_write(out / "report.md", render(summary) + "\n")
    return summary


def teacher_for(seed: int) -> str:
    """The folder of the toy teacher of world `seed` (`tiny://qwen3-teacher` for seed 0), built once in the cache.
    The folder, not the URI, goes to every stage: the URI names the teacher the code of the moment builds, and a
    stage that resolved it after an edit of the teacher's code would train or answer with another teacher than
    the one that wrote the corpus (a run resumed across such an edit is refused: its configs name the old folder)."""
    from alarm.tiny import ensure_tiny

    return str(ensure_tiny("qwen3-teacher", seed=seed))


def run_seed(out: Path, size: Size, seed: int, teacher: str | None, states: Path) -> dict:
    """One world seed end to end; returns (and writes to out/result.json) its counts, times and environment."""
    from alarm.checkpoints import resolve_checkpoint
    from alarm.config import CorpusConfig, TrainConfig, load_config
    from alarm.tiny.teacher import reading
    from alarm.toy.world import eval_items, train_items, write_benchmark, write_source

    check_size(out, size)
    times: dict[str, float] = {}
    with _stage(times, "teacher + encoder", seed):
        teacher = teacher or teacher_for(seed)
        teacher_dir = resolve_checkpoint(teacher)
        whisper_dir = resolve_checkpoint(ENCODER)
    with _stage(times, "data", seed):
        questions = train_items(sources(seed)["train clips"], size.train_quota())
        held_out = eval_items(sources(seed)["held-out clips"], size.per_type)
        manifest = write_source(out / "data" / "train", questions)
        meta = write_benchmark(out / "data" / "eval", held_out)
    source = f"sources=[{{kind: manifest, name: toy, path: '{manifest}', prompt_column: prompt, family_column: family}}]"
    corpora = {}
    with _stage(times, "generate", seed):
        from services.corpus.pipeline import run as generate

        for name, extra in (("R", []), ("R0", ["run_id=toy-corpus-r0", "rephrase.enabled=false"])):
            cfg = load_config(CorpusConfig, "toy", [f"output={out}", f"engine.checkpoint={teacher}", source, *extra],
                              section="corpus")
            generate(cfg)
            corpora[name] = out / cfg.run_id
    adapters, trained = {}, {}
    with _stage(times, "train", seed):
        from services.train.driver import run as train

        for name in ("R", "R0"):
            cfg = load_config(TrainConfig, "toy", [
                f"output={out}", f"corpus={corpora[name]}", f"epochs={size.epochs}", f"model.llm.checkpoint={teacher}",
                f"encoders.cache_dir={states}", *(["run_id=toy-train-r0"] if name == "R0" else [])], section="train")
            summary = train(cfg)
            adapters[name] = summary["adapter"]
            trained[name] = {k: summary[k] for k in ("steps", "train_examples", "first_loss", "last_loss")}
    with _stage(times, "eval", seed):
        runs, text_identical = asyncio.run(_evaluate(out, meta, held_out, adapters, teacher))
    result = {
        "seed": seed, "size": {**size.record(), "train_clips": len({it.clip for it in questions})},
        "corpus": _corpus_facts(corpora), "train": trained,
        "eval": {"items": len(held_out), "per_type": size.per_type, "chance": _chance(held_out)},
        "per_type": _per_type(runs), "runs": {k: _totals(v) for k, v in runs.items()},
        "text_identical": text_identical, "depends_on": depends_on(seed, teacher_dir, whisper_dir),
        "teacher_reading": reading(teacher_dir),
        "seconds": stage_seconds(out, times),
    }
    atomic_write(out / "result.json", json.dumps(result, indent=2) + "\n")
    return result


def check_size(out: Path, size: Size) -> None:
    """Records the seed folder's size and numerics mode (`size.json`), or checks that a resumed run keeps
    them: the data stage rewrites the training manifest, and a corpus resumed over another manifest would mix
    two sets of questions; stages run in another numerics mode (or portable mode on another vendor's CPU,
    `alarm.numerics.mode`) would mix two machines' worth of float results.

    Raises:
        InvalidInput: `out` holds a run of another size or numerics mode.
    """
    from alarm import numerics
    from alarm.errors import InvalidInput

    path = out / "size.json"
    want = {**size.record(), "numerics": numerics.mode()}
    if path.exists():
        had = json.loads(path.read_text())
        had.setdefault("numerics", "native")  # runs from before the mode existed
        had.setdefault("train_types", {})  # runs from before types had their own numbers
        if had != want:
            diff = ", ".join(f"{k} {had.get(k)} -> {want[k]}" for k in want if had.get(k) != want[k])
            raise InvalidInput(f"{out} holds a toy run of another size or numerics mode ({diff}); resume it with the "
                               f"same --size, --train-per-type, --train-type, --epochs and --numerics on a machine whose "
                               f"CPU computes as the one it started on (`alarm.numerics.mode`), or give another --out")
        return
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(want) + "\n")


def stage_seconds(out: Path, times: dict[str, float]) -> dict[str, float]:
    """Seconds per stage for `out/result.json`: each stage's longest time over this invocation and the one that wrote
    the result before, so that a rerun whose finished stages only check (a minute in all) reports the times of the
    run that did the work, not its own."""
    path = out / "result.json"
    before = json.loads(path.read_text()).get("seconds", {}) if path.is_file() else {}
    return {k: round(max(v, before.get(k, 0.0)), 1) for k, v in times.items()}


def sources(seed: int) -> dict[str, int]:
    """The synthetic sources of world `seed`: training clips, held-out clips and the teacher's own clips."""
    from alarm.tiny.teacher import source_seed

    return {"train clips": 10 * seed + 1, "held-out clips": 10 * seed + 2, "teacher clips": source_seed(seed)}


def depends_on(seed: int, teacher_dir: Path, whisper_dir: Path) -> dict:
    """What this seed's numbers depend on besides the code: seeds, the numerics mode, the CPU kernels torch
    picked and its threads (`alarm.numerics.describe`), weights."""
    from alarm import numerics

    return {"world seed": seed, **{f"{k} (source seed)": v for k, v in sources(seed).items()},
            **numerics.describe(),
            "teacher sha256": _sha256(Path(teacher_dir) / "model.safetensors")[:16],
            "whisper sha256": _sha256(Path(whisper_dir) / "model.safetensors")[:16]}


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _chance(items: list) -> float:
    from alarm.toy.world import chance

    return chance(items)


def _corpus_facts(corpora: dict[str, Path]) -> dict:
    """Rows, kept rows, distinct targets, and the leak rates of R0 and R under both judges."""
    from alarm.toy.judge import leak_rates
    from services.storage import RunStore

    t = RunStore(str(corpora["R"])).read_shards(["keep", "answer_generated", "answer_rephrased", "target"])
    rows = t.to_pylist()
    kept = [r for r in rows if r["keep"]]
    return {"rows": len(rows), "kept": len(kept), "distinct_targets": len({r["target"] for r in kept}),
            "leak": {"R0": leak_rates([r["answer_generated"] or "" for r in rows]),
                     "R": leak_rates([r["answer_rephrased"] or "" for r in rows])}}


# -- evaluation --------------------------------------------------------------------------------------------------


async def _evaluate(out: Path, meta: Path, items: list, adapters: dict[str, str], teacher: str):
    """Every evaluation run's scored items, and the text-only answers with and without the adapters compared."""
    from alarm.config import ServeConfig, load_config
    from services.serve.local import LocalPipeline

    descriptions = {str(meta.parent / _audio_path(it)): it.description for it in items}
    weights = {k: _adapter_sha(v) for k, v in adapters.items()}
    cfg = load_config(ServeConfig, "toy", [f"model.llm.checkpoint={teacher}", "adapters.toy=null",
                                          f"adapters.r.checkpoint={adapters['R']}",
                                          f"adapters.r0.checkpoint={adapters['R0']}", "default_adapter=r",
                                          "max_adapters_per_replica=2"], section="serve")
    runs = {}
    pipe = await LocalPipeline.create(cfg)
    try:  # the text-only run at the same time as audio requests: they share the engine's batches and caches
        main_run, text_run = await asyncio.gather(
            _run(out / "eval" / "R@256", meta, Answerer(pipe, "r"), 256, f"adapter r sha256 {weights['R']}"),
            _run(out / "eval" / "teacher", meta, Answerer(pipe, None, descriptions), 256, "teacher, text only"))
        runs.update({"R@256": main_run, "teacher": text_run})
        for budget in BUDGETS[1:]:
            runs[f"R@{budget}"] = await _run(out / "eval" / f"R@{budget}", meta, Answerer(pipe, "r"), budget,
                                             f"adapter r sha256 {weights['R']}")
        runs["R0@256"] = await _run(out / "eval" / "R0@256", meta, Answerer(pipe, "r0"), 256,
                                    f"adapter r0 sha256 {weights['R0']}")
    finally:
        await pipe.aclose()
    base = load_config(ServeConfig, "toy", [f"model.llm.checkpoint={teacher}"], section="serve")  # untrained adapter
    pipe = await LocalPipeline.create(base)
    try:
        alone = await _run(out / "eval" / "teacher-alone", meta, Answerer(pipe, None, descriptions), 256,
                           "teacher, text only, no trained adapter")
    finally:
        await pipe.aclose()
    pairs = [(a["record"], b["record"]) for a, b in zip(text_run, alone, strict=True)]
    same = sum((a["answer"], a["reasoning"]) == (b["answer"], b["reasoning"]) for a, b in pairs)
    return runs, {"same": same, "n": len(pairs)}


async def _run(folder: Path, meta: Path, answerer, budget: int, model: str) -> list[dict]:
    """One evaluation run (resumable, keyed by `model`); every item with its parse, correctness and record."""
    from alarm.eval.benchmarks import load_items
    from alarm.eval.harness import run_benchmark
    from alarm.eval.report import score_predictions
    from alarm.eval.runner import PredictionStore, RunSettings

    settings = RunSettings("mmau", "native", budget, MAX_TOKENS, 0.0, None, None)
    bench = load_items("mmau", [meta])

    async def make():
        return answerer

    await run_benchmark(bench, [meta], str(meta.parent), folder, settings, make, model=model, concurrency=32,
                        max_errors=1, scorers=("strict",))
    scored = score_predictions(bench, PredictionStore(folder / "predictions.jsonl").load(), benchmark="mmau",
                               fmt="native", scorers=("strict",))
    return [{"qtype": it.groups["sub-category"], "correct": p.index == it.gold, "parsed": p.parse_ok,
             "record": rec} for it, rec, p in scored.rows]


def _totals(scored: list[dict]) -> dict:
    from alarm.toy.judge import leak_rates, own_reasoning

    return {"n": len(scored), "correct": sum(s["correct"] for s in scored),
            "parsed": sum(s["parsed"] for s in scored),
            "leak": leak_rates([own_reasoning(s["record"].get("reasoning") or "") for s in scored])}


def _per_type(runs: dict[str, list[dict]]) -> dict[str, dict]:
    from alarm.toy.world import QTYPES

    return {q: {name: {k: v for k, v in _totals([s for s in scored if s["qtype"] == q]).items() if k != "leak"}
                for name, scored in runs.items()} for q in QTYPES}


def _adapter_sha(adapter: str) -> str:
    from alarm.checkpoints import resolve_checkpoint

    return _sha256(Path(resolve_checkpoint(adapter)) / "adapter.safetensors")[:16]


def _audio_path(item) -> str:
    from alarm.toy.world import audio_path

    return audio_path(item)


class Answerer:
    """The in-process pipeline as an `alarm.eval` answerer for one adapter (left open: runs share it); with
    `descriptions` the clip's text description goes where the audio would be (text only, as in self-generation).
    Every toy run states its thinking budget, so 0 here means none (`no_thinking`), not the server's default."""

    def __init__(self, pipe, adapter: str | None, descriptions: dict[str, str] | None = None):
        self.pipe, self.adapter, self.descriptions = pipe, adapter, descriptions

    async def answer(self, audio, prompt, system_prompt, max_thinking_tokens, max_tokens, seed):
        from services.serve._proto.alarm.v1.alarm_pb2 import FinishReason
        from services.serve.client import make_request

        if self.descriptions is not None:
            prompt, audio = f"<start_audio>{self.descriptions[str(audio)]}<end_audio>\n\n{prompt}", None
        req = await asyncio.to_thread(make_request, audio, prompt, system_prompt=system_prompt,
                                      max_thinking_tokens=max_thinking_tokens, max_tokens=max_tokens,
                                      temperature=0.0, seed=seed, adapter_id=self.adapter or "",
                                      return_reasoning=True, no_thinking=max_thinking_tokens == 0)
        reply = await self.pipe.generate(req)
        return reply.answer, reply.reasoning, FinishReason.Name(reply.finish_reason)


@contextmanager
def _stage(times: dict[str, float], name: str, seed: int):
    print(f"[toy seed {seed}] {name} ...", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    yield
    times[name] = time.perf_counter() - t0
    print(f"[toy seed {seed}] {name}: {times[name]:.1f} s", file=sys.stderr, flush=True)

