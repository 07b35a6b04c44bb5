"""Inference over benchmark items through an `Answerer`, with bounded concurrency and resume.

    store = PredictionStore(out / "predictions.jsonl")
    stats = asyncio.run(run_items(items, answerer, settings, store, audio=locations, concurrency=8))

Each finished item is appended to predictions.jsonl as one JSON line (id, raw answer, reasoning, finish
reason); a rerun skips ids already there, so an interrupted run resumes. Parsing and scoring read that file
later, so a run can be rescored with another parse mode, fallback or scorer without inference. Audio is
checked before anything runs: missing files are listed up front.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

from alarm import jsonl
from alarm.errors import AlarmError
from alarm.eval.benchmarks import Item
from alarm.eval.prompts import build_prompt
from alarm.progress import Progress


class EvalRunError(AlarmError):
    """A run that cannot start or continue: missing audio, a folder holding another run, too many errors."""


@runtime_checkable
class Answerer(Protocol):
    """One question about one clip in, (answer text, reasoning, finish reason name) out.

    audio: file bytes, a local path or a URI the server reads (s3://), or None (text only).
    max_thinking_tokens and max_tokens: 0 = the server's default; -1 thinking = unlimited. The in-process
    and gRPC implementations are in `services.serve.answerers`; tests use a scripted fake.
    """

    async def answer(self, audio: bytes | str | None, prompt: str, system_prompt: str | None,
                     max_thinking_tokens: int, max_tokens: int, seed: int | None) -> tuple[str, str, str]: ...


@dataclass(frozen=True)
class RunSettings:
    """What changes the model's answers; a results folder holds one set of these (checked on resume)."""

    benchmark: str
    format: str
    max_thinking_tokens: int
    max_tokens: int
    temperature: float | None = None
    seed: int | None = None
    crop_audio_s: float | None = None

    def mismatch(self, saved: dict) -> str | None:
        """The first setting that differs from a saved run.json, as 'key: saved -> now', else None."""
        for key, value in asdict(self).items():
            if key in saved and saved[key] != value:
                return f"{key}: {saved[key]!r} -> {value!r}"
        return None


# -- predictions.jsonl ---------------------------------------------------------------------------------------


class PredictionStore:
    """Append-only JSON lines keyed by item id (`alarm.jsonl`: any answer text round-trips).

    A last line cut short by a crash is left out on load, with a warning, and cut off by the next append, so a
    resumed run answers that item again; a bad line anywhere else is an EvalRunError naming the file and line.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def load(self) -> dict[str, dict]:
        if not self.path.exists():
            return {}
        done = {}
        try:
            for n, rec in jsonl.lines(self.path.read_bytes(), str(self.path), torn="drop"):
                if not (isinstance(rec, dict) and isinstance(rec.get("id"), str)
                        and isinstance(rec.get("answer"), str)):
                    raise EvalRunError(f"{self.path}: line {n} is not a prediction record "
                                       "(it needs the strings 'id' and 'answer'); fix or remove that line")
                done[rec["id"]] = rec
        except jsonl.JsonlError as e:
            raise EvalRunError(str(e)) from None
        return done

    def append(self, record: dict) -> None:
        jsonl.append(self.path, record)


# -- audio ---------------------------------------------------------------------------------------------------


def audio_locations(items: Sequence[Item], root: str) -> dict[str, str]:
    """Item id -> the full path or s3:// URI of its audio under `root`."""
    if root.startswith("s3://"):
        base = root.rstrip("/")
        return {it.id: f"{base}/{it.audio}" for it in items}
    if "://" in root:
        raise EvalRunError(f"audio_root={root!r}: only local folders and s3:// URIs are supported")
    return {it.id: str(Path(root) / it.audio) for it in items}


def check_audio(locations: dict[str, str], root: str, exists: Callable[[list[str]], set[str]] | None = None,
                show: int = 5) -> None:
    """Raise EvalRunError listing the first `show` missing files (before any inference runs)."""
    paths = list(locations.values())
    found = (exists or (_existing_s3 if root.startswith("s3://") else _existing_local))(paths)
    missing = [p for p in paths if p not in found]
    if missing:
        raise EvalRunError(
            f"{len(missing)} of {len(paths)} audio files are missing under audio_root={root}, e.g.:\n  "
            + "\n  ".join(missing[:show])
            + "\nCheck audio_root: it must be the folder the metadata paths are relative to (MMAU: the "
            "folder holding test-mini-audios/; AIR-Bench: the folder holding Foundation/)."
        )


def _existing_local(paths: list[str]) -> set[str]:
    return {p for p in paths if Path(p).is_file()}


def _existing_s3(uris: list[str]) -> set[str]:
    """The s3:// URIs that exist, from one listing per distinct parent prefix."""
    from alarm.checkpoints import s3_filesystem

    fs = s3_filesystem()
    found: set[str] = set()
    for parent in sorted({u.rsplit("/", 1)[0] for u in uris}):
        try:
            found |= {f"s3://{p}" for p in fs.find(parent.removeprefix("s3://"))}
        except FileNotFoundError:
            continue
    return found


def cropped_clip(location: str, seconds: float) -> bytes:
    """The clip as WAV bytes (mono, native rate), cut to its first `seconds` when longer: ALARM's AIR-Bench
    protocol crops to 60 s, and the server rejects clips at or over `audio.max_duration_s`."""
    import io

    import soundfile as sf

    from alarm import env
    from alarm.audio.decode import load_audio

    opts = env.s3_storage_options() if location.startswith("s3://") else None
    wave = load_audio(location, max_duration_s=86400.0, storage_options=opts)
    buf = io.BytesIO()
    sf.write(buf, wave.samples[: int(seconds * wave.sample_rate)], wave.sample_rate, format="WAV",
             subtype="FLOAT")
    return buf.getvalue()


# -- the run -------------------------------------------------------------------------------------------------


@dataclass
class RunStats:
    done: int = 0
    skipped: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0


async def run_items(items: Sequence[Item], answerer: Answerer, settings: RunSettings,
                    store: PredictionStore, *, audio: dict[str, str], concurrency: int = 8,
                    max_errors: int = 10, progress_every: int = 25) -> RunStats:
    """Answer every item not yet in `store`; append each result as it finishes.

    A failed request is reported and left out of the store (a rerun retries it); after `max_errors` failures
    the remaining items are skipped and the run stops with EvalRunError.
    """
    stats = RunStats()
    done = store.load()
    todo = [it for it in items if it.id not in done]
    stats.skipped = len(items) - len(todo)
    if stats.skipped:
        print(f"resuming: {stats.skipped} of {len(items)} items already answered", file=sys.stderr)
    sem, start = asyncio.Semaphore(max(1, concurrency)), time.perf_counter()
    progress = Progress("eval", len(items), stats.skipped, unit="items")

    async def one(item: Item) -> None:
        async with sem:
            if len(stats.failed) >= max_errors:
                return
            prompt = build_prompt(item, settings.format, settings.benchmark)
            t0 = time.perf_counter()
            try:
                clip = audio[item.id]
                if settings.crop_audio_s is not None:
                    clip = await asyncio.to_thread(cropped_clip, clip, settings.crop_audio_s)
                text, reasoning, finish = await answerer.answer(
                    clip, prompt.user, prompt.system, settings.max_thinking_tokens,
                    settings.max_tokens, settings.seed)
            except Exception as e:  # recorded per item; the run goes on up to max_errors
                stats.failed[item.id] = _describe(e)
                return
            store.append({"id": item.id, "answer": text, "reasoning": reasoning, "finish_reason": finish,
                          "elapsed_s": round(time.perf_counter() - t0, 3)})
            stats.done += 1
            if stats.done % progress_every == 0 or stats.done == len(todo):
                print(progress.line(stats.done + stats.skipped, f"{len(stats.failed)} failed"),
                      file=sys.stderr, flush=True)

    await asyncio.gather(*(one(it) for it in todo))
    stats.seconds = time.perf_counter() - start
    if len(stats.failed) >= max_errors:
        first = "\n  ".join(f"{k}: {v}" for k, v in list(stats.failed.items())[:5])
        raise EvalRunError(f"stopped after {len(stats.failed)} failed requests (max_errors={max_errors}):"
                           f"\n  {first}\nAnswered items are saved; fix the cause and rerun to resume.")
    return stats


def _describe(e: BaseException) -> str:
    code, details = getattr(e, "code", None), getattr(e, "details", None)
    if callable(code) and callable(details):  # grpc.RpcError
        try:
            return f"{code().name}: {details()}"
        except Exception:
            pass
    return f"{type(e).__name__}: {e}"
