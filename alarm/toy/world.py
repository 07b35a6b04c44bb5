"""The toy world's task: name the kind of a synthetic sound, as a multiple-choice question.

    items = [toy_item(seed, i) for i in range(n)]   # clip bytes, its text description, an MCQ, the gold option

Clips come from the synthetic source (8 kinds, `alarm.corpus.synthetic`); their descriptions from the corpus
describer, exactly as `alarm.generate` writes them; the question is MMAU's native format (answer with the option's
text, `alarm.eval.prompts.text_user_text`), so the corpus, the teacher and `alarm.eval --format native` all see the
same prompt.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from alarm import jsonl
from alarm.config import SyntheticSourceConfig
from alarm.corpus import rows as R
from alarm.corpus.synthetic import KINDS, synthetic_row
from alarm.eval.prompts import text_user_text
from alarm.files import atomic_write

NAMES = {
    "tone": "a steady tone", "chord": "a chord", "noise": "noise", "clicks": "a train of clicks",
    "sweep": "a frequency sweep", "tremolo": "a pulsing tremolo tone", "beeps": "short beeps",
    "turns": "two voices taking turns",
}
QUESTIONS = (
    "What is the main sound in this clip?", "Which sound do you hear?", "What kind of sound is this?",
    "Identify the sound in the recording.",
)
N_OPTIONS = 4
assert set(NAMES) == set(KINDS)


@dataclass(frozen=True)
class ToyItem:
    key: str
    kind: str
    family: str  # the describer of `metadata`
    metadata: dict
    audio: bytes  # FLAC
    description: str
    question: str
    choices: tuple[str, ...]
    gold: int

    @property
    def prompt(self) -> str:
        """The user text after the audio: the MCQ in MMAU's native format (answer with the option's text)."""
        return text_user_text(self.question, self.choices)


def toy_item(seed: int, index: int, min_s: float = 1.0, max_s: float = 5.0) -> ToyItem:
    """Clip `index` of the toy source `seed`, its description and a seeded 4-way question about its kind."""
    src = SyntheticSourceConfig(name=f"toy{seed}", num_clips=index + 1, seed=seed, min_duration_s=min_s,
                                max_duration_s=max_s)
    row = R.describe_row(R.probe_row(synthetic_row(src, index), 60.0))
    kind = _kind(json.loads(row["metadata"]))
    rng = random.Random(f"{seed}/{index}")
    others = rng.sample([k for k in NAMES if k != kind], N_OPTIONS - 1)
    order = [kind, *others]
    rng.shuffle(order)
    return ToyItem(row["key"], kind, row["family"], json.loads(row["metadata"]), row["audio_bytes"],
                   row["audio_description"], rng.choice(QUESTIONS), tuple(NAMES[k] for k in order), order.index(kind))


def _kind(metadata: dict) -> str:
    label = metadata["label"]
    for kind, needle in (("tremolo", "tremolo"), ("chord", "chord"), ("noise", "noise"), ("clicks", "click"),
                         ("sweep", "sweep"), ("beeps", "beep"), ("turns", "voices"), ("tone", "tone")):
        if needle in label:
            return kind
    raise ValueError(f"cannot tell the kind of synthetic label {label!r}")


def write_source(folder: Path, items: list[ToyItem]) -> Path:
    """A corpus source for `alarm.generate`: `folder/manifest.jsonl` (id, audio, prompt = the MCQ, family, and
    the clip's metadata columns) and `folder/audio/<id>.flac`. Returns the manifest path."""
    rows = []
    for item in items:
        item_id = item.key.rsplit("/", 1)[-1]
        rows.append({"id": item_id, "audio": _write_audio(folder, item), "prompt": item.prompt,
                     "family": item.family, **item.metadata})
    return atomic_write(folder / "manifest.jsonl", jsonl.dumps(rows))


def write_benchmark(folder: Path, items: list[ToyItem]) -> Path:
    """The held-out questions in MMAU's metadata format (`alarm.eval benchmark=mmau audio_root=folder`):
    `folder/toy-mmau.json` and `folder/audio/<id>.flac`. Returns the metadata path."""
    records = [{"id": item.key, "audio_id": _write_audio(folder, item), "question": item.question,
                "choices": list(item.choices), "answer": item.choices[item.gold], "task": "sound",
                "difficulty": "easy", "sub-category": item.kind, "category": "toy"} for item in items]
    path = folder / "toy-mmau.json"
    atomic_write(path, json.dumps(records, indent=1) + "\n")
    return path


def audio_path(item: ToyItem) -> str:
    """Where `write_source` / `write_benchmark` put the item's FLAC, relative to their folder."""
    return f"audio/{item.key.replace('/', '-')}.flac"


def _write_audio(folder: Path, item: ToyItem) -> str:
    rel = audio_path(item)
    path = folder / rel
    if not path.exists() or path.read_bytes() != item.audio:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, item.audio)
    return rel
