"""The toy world's loop (`python -m alarm.toy`): the teacher and encoder, the data, then `alarm.generate`,
`alarm.train` and the held-out evaluation through their real code paths on the `toy` presets, and the report.

    report = run(Path("runs/toy"), SIZES["small"])     # resumable: finished stages only check
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
from alarm.toy.report import TARGETS, render


@dataclass(frozen=True)
class Size:
    train_clips: int
    eval_clips: int
    epochs: float


# full: held-out audio-only accuracy (192 clips, in-process trainer) 86% after 10 epochs, 91% after 20, 95% after 30
SIZES = {"full": Size(train_clips=400, eval_clips=96, epochs=30), "small": Size(train_clips=128, eval_clips=32, epochs=12)}
TRAIN_SEED, EVAL_SEED = 1, 2  # the teacher's own descriptions come from another source (teacher.SOURCE_SEED)
THINKING_BUDGET = 256
TEACHER = "tiny://qwen3-teacher"


def run(out: Path, size: Size, teacher: str = TEACHER) -> dict:
    from alarm.checkpoints import resolve_checkpoint
    from alarm.config import CorpusConfig, TrainConfig, load_config
    from alarm.toy.world import toy_item, write_benchmark, write_source

    times: dict[str, float] = {}
    with _stage(times, "teacher + encoder"):
        resolve_checkpoint(teacher)
        resolve_checkpoint("pretrained://whisper-tiny.en")
    with _stage(times, "data"):
        train_items = [toy_item(TRAIN_SEED, i) for i in range(size.train_clips)]
        eval_items = [toy_item(EVAL_SEED, i) for i in range(size.eval_clips)]
        manifest = write_source(out / "data" / "train", train_items)
        meta = write_benchmark(out / "data" / "eval", eval_items)
    corpus_cfg = load_config(CorpusConfig, "toy", [f"output={out}", f"engine.checkpoint={teacher}", (
        f"sources=[{{kind: manifest, name: toy, path: '{manifest}', prompt_column: prompt, family_column: family}}]")],
        section="corpus")
    with _stage(times, "generate"):
        from services.corpus.pipeline import run as generate

        stats = generate(corpus_cfg)
    corpus = out / corpus_cfg.run_id
    train_cfg = load_config(TrainConfig, "toy", [f"output={out}", f"corpus={corpus}", f"epochs={size.epochs}",
                                                  f"model.llm.checkpoint={teacher}"],
                            section="train")
    with _stage(times, "train"):
        from services.train.driver import run as train

        summary = train(train_cfg)
    with _stage(times, "eval"):
        scores = asyncio.run(_evaluate(out, meta, eval_items, summary["adapter"], teacher))
    report = {
        "size": size.__dict__,
        "corpus": {"rows": stats["rows"], "kept": stats["kept"], "leak_rate": stats["leak_rate"]},
        "train": {k: summary[k] for k in ("steps", "train_examples", "first_loss", "last_loss", "last_val_loss")},
        "accuracy": {"audio": scores["audio"], "teacher_text": scores["text"], "chance": 1 / len(eval_items[0].choices)},
        "parse_ok": {"audio": scores["audio_parse_ok"], "teacher_text": scores["text_parse_ok"]},
        "audio_per_kind": scores["audio_per_kind"],
        "seconds": {k: round(v, 1) for k, v in times.items()}, "total_s": round(sum(times.values()), 1),
    }
    upper = report["accuracy"]["teacher_text"]
    report["accuracy"]["audio_vs_teacher"] = report["accuracy"]["audio"] / upper if upper else None
    report["targets"] = TARGETS
    report["targets_met"] = (report["accuracy"]["audio_vs_teacher"] or 0) >= TARGETS["audio_vs_teacher"] and \
        stats["leak_rate"]["rephrased"] <= TARGETS["leak_after"]
    atomic_write(out / "report.json", json.dumps(report, indent=2) + "\n")
    atomic_write(out / "report.md", render(report) + "\n")
    return report


async def _evaluate(out: Path, meta: Path, items: list, adapter: str, teacher: str) -> dict:
    """Held-out questions through one in-process serving pipeline: audio only, then the teacher with the text."""
    from alarm.checkpoints import resolve_checkpoint
    from alarm.config import ServeConfig, load_config
    from alarm.eval.benchmarks import load_items
    from alarm.eval.harness import run_benchmark
    from alarm.eval.runner import RunSettings
    from alarm.toy.world import audio_path
    from services.serve.local import LocalPipeline

    cfg = load_config(ServeConfig, "toy", [f"adapters.toy.checkpoint={adapter}", f"model.llm.checkpoint={teacher}"],
                      section="serve")
    pipe = await LocalPipeline.create(cfg)
    with open(Path(resolve_checkpoint(adapter)) / "adapter.safetensors", "rb") as f:  # a retrained adapter is
        weights = hashlib.file_digest(f, "sha256").hexdigest()[:16]  # another model: never resume its answers
    root = meta.parent
    descriptions = {str(root / audio_path(it)): it.description for it in items}
    settings = RunSettings("mmau", "native", THINKING_BUDGET, 0, None, None, None)
    bench = load_items("mmau", [meta])
    scores = {}
    try:
        for name, answerer in (("audio", _Shared(pipe)), ("text", _DescriptionInstead(pipe, descriptions))):
            folder = out / "eval" / name

            async def make(a=answerer):
                return a

            model = f"toy {name}: {teacher}" + (f", adapter sha256 {weights}" if name == "audio" else "")
            await run_benchmark(bench, [meta], str(root), folder, settings, make, model=model, concurrency=8,
                                max_errors=1, scorers=("strict",))
            rep = json.loads((folder / "report.json").read_text())
            scores[name] = rep["scores"]["strict"]["overall"]["accuracy"]
            scores[f"{name}_parse_ok"] = rep["parse"]["ok"] / max(rep["items"]["answered"], 1)
            scores[f"{name}_per_kind"] = {k: c["accuracy"] for k, c in
                                          rep["scores"]["strict"]["groups"].get("sub-category", {}).items()}
    finally:
        await pipe.aclose()
    return scores


class _Shared:
    """The in-process pipeline as an `Answerer` that leaves the pipeline open (two runs share it)."""

    def __init__(self, pipe):
        from services.serve.answerers import LocalAnswerer

        self.local = LocalAnswerer(pipe, temperature=0.0)

    async def answer(self, audio, prompt, system_prompt, max_thinking_tokens, max_tokens, seed):
        return await self.local.answer(audio, prompt, system_prompt, max_thinking_tokens, max_tokens, seed)


class _DescriptionInstead(_Shared):
    """The teacher reading the clip's description where the audio would be (text only), as in self-generation."""

    def __init__(self, pipe, descriptions: dict[str, str]):
        super().__init__(pipe)
        self.descriptions = descriptions

    async def answer(self, audio, prompt, system_prompt, max_thinking_tokens, max_tokens, seed):
        d = self.descriptions[str(audio)]
        return await self.local.answer(None, f"<start_audio>{d}<end_audio>\n\n{prompt}", system_prompt,
                                       max_thinking_tokens, max_tokens, seed)


@contextmanager
def _stage(times: dict[str, float], name: str):
    print(f"[toy] {name} ...", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    yield
    times[name] = time.perf_counter() - t0
    print(f"[toy] {name}: {times[name]:.1f} s", file=sys.stderr, flush=True)
