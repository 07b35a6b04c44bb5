"""The toy world's tasks: multiple-choice questions about a synthetic clip that need what it sounds like.

    items = toy_items(seed, 3)          # every question clip 3 of world `seed` supports
    train = train_items(seed, 150)      # 150 questions of each type, in clip order (the training rows)
    train = train_items(seed, {**dict.fromkeys(QTYPES, 150), "loudness": 225})   # or a number per type
    held_out = eval_items(seed, 32)     # 32 questions of each type, one per clip (the held-out benchmark)

Clips come from the synthetic source (8 kinds, `alarm.corpus.synthetic`) and their descriptions from the corpus
describer, exactly as `alarm.generate` writes them. Beside "which kind is it?", seven question types ask for an
attribute the clip renders: pitch (high/low), loudness (quiet/loud), duration (shorter/longer than N s), sweep
direction, pulse or click rate (slow/fast), the number of beeps, and which voice speaks first. A type is asked only
where its attribute varies within the kind and lies clearly on one side of the line (`Separation`), so the kind
alone never gives the answer and the audio always does. Half of the attribute questions are yes/no. Every question
is MMAU's native format (answer with the option's text, `alarm.eval.prompts.text_user_text`), so the corpus, the
teacher and `alarm.eval --format native` all see the same prompt.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Mapping
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
QTYPES = ("kind", "pitch", "loudness", "duration", "direction", "rate", "count", "voices")
N_KIND_OPTIONS = 4
MIN_S, MAX_S = 1.0, 5.0  # clip durations


@dataclass(frozen=True)
class Separation:
    """Where an attribute is asked: only clearly on one side of its line (the audio decides with margin)."""

    low_octave: int = 3  # pitch: notes of octave 3 and below (<= 247 Hz) are low, 5 and above (>= 523 Hz) high
    high_octave: int = 5
    short_s: float = 2.2  # duration: short at or below (described as 1-2 s), long at or above (4-5 s)
    long_s: float = 3.8
    slow_tremolo_hz: int = 4  # tremolo: slow at or below, fast at or above
    fast_tremolo_hz: int = 8
    slow_clicks: int = 4  # clicks per second
    fast_clicks: int = 10
    max_beeps: int = 4


SEP = Separation()
COUNT_WORDS = ("one beep", "two beeps", "three beeps", "four beeps")
assert set(NAMES) == set(KINDS) and len(COUNT_WORDS) == SEP.max_beeps


@dataclass(frozen=True)
class ToyItem:
    """One question about one clip.

    `facts` are what the answer rests on: the description's words for it and the category they mean, e.g.
    {"register": "treble", "level": "high"} for a pitch question (what the teacher cites, then says it hears).
    """

    key: str  # the clip's key + "#" + the question type
    clip: str  # the clip's key (source/item_id): several questions share a clip
    kind: str
    family: str  # the describer of `metadata`
    metadata: dict
    audio: bytes  # FLAC
    description: str
    qtype: str
    wording: int  # which of the type's question wordings (the teacher's reasoning style follows it)
    question: str
    choices: tuple[str, ...]
    gold: int
    facts: dict

    @property
    def prompt(self) -> str:
        """The user text after the audio: the MCQ in MMAU's native format (answer with the option's text)."""
        return text_user_text(self.question, self.choices)

    @property
    def answer(self) -> str:
        return self.choices[self.gold]

    @property
    def yes_no(self) -> bool:
        return set(self.choices) == {"yes", "no"}


@dataclass(frozen=True)
class Clip:
    """A rendered clip: `source` is the synthetic source's metadata (numbers included), `metadata` what its
    description renders (`described`)."""

    key: str
    kind: str
    family: str
    source: dict
    metadata: dict
    audio: bytes
    description: str
    duration_s: float


def clip(seed: int, index: int) -> Clip:
    """Clip `index` of the synthetic source `seed` (1-5 s), with its description as the corpus renders it."""
    src = SyntheticSourceConfig(name=f"toy{seed}", num_clips=index + 1, seed=seed, min_duration_s=MIN_S,
                                max_duration_s=MAX_S)
    row = synthetic_row(src, index)
    source = json.loads(row["metadata"])
    kind = kind_of(source)
    row = R.probe_row({**row, "family": "turns" if kind == "turns" else "labels"}, 60.0)
    meta = {**described(kind, source), "span": span(row["duration_s"])}
    row = R.describe_row({**row, "metadata": json.dumps(meta)})
    return Clip(row["key"], kind, row["family"], source, meta, row["audio_bytes"], row["audio_description"],
                row["duration_s"])


def kind_of(metadata: dict) -> str:
    label = metadata["label"]
    for kind, needle in (("tremolo", "tremolo"), ("chord", "chord"), ("noise", "noise"), ("clicks", "click"),
                         ("sweep", "sweep"), ("beeps", "beep"), ("turns", "voices"), ("tone", "tone")):
        if needle in label:
            return kind
    raise ValueError(f"cannot tell the kind of synthetic label {label!r}")


# The words descriptions use for what the questions ask: never an option's or a question's words, so that the
# teacher, like an LLM reading "emotion: Anger" to answer "angry", finds the value by its word alone.
LEVELS = {"quiet": "faint", "moderate": "medium", "loud": "strong"}
SPANS = ("brief", "middling", "extended")
PATTERNS = ("single", "double", "triple", "quadruple", "quintuple")
LABELS = {"tone": "sine tone", "chord": "{quality} chord", "noise": "{colour} noise", "clicks": "click train",
          "sweep": "frequency sweep", "tremolo": "tremolo tone", "beeps": "beeps", "turns": "two hums"}


def described(kind: str, source: dict) -> dict:
    """The metadata a clip's description renders: a label, the attributes its questions ask about in words of
    the description's own (register, pace, pattern, ...; no digits besides the duration), and the level. The span
    (the length in words) is added by `clip`, which knows the decoded duration."""
    chord = source.get("chord", "")
    meta: dict = {"label": LABELS[kind].format(quality=chord.split(" ")[-2] if chord else "",
                                               colour=source.get("noise colour", ""))}
    if kind in ("tone", "tremolo"):
        meta["register"] = _register(source["note"])
    if kind in ("tremolo", "clicks"):
        meta["pace"] = _pace(kind, source)
    if kind == "sweep":
        meta["direction"] = source["direction"]
    if kind == "beeps":
        meta["pattern"] = PATTERNS[source["beeps"] - 1]
    if kind == "turns":
        meta["turns"] = [{**t, "text": "[hum]"} for t in source["turns"]]
        meta["opening voice"] = "deep" if source["turns"][0]["speaker"] == "A" else "shrill"
    meta["level"] = LEVELS[source["loudness"]]
    return meta


def span(duration_s: float) -> str:
    """The description's word for a clip's length: brief up to `SEP.short_s`, extended from `SEP.long_s`."""
    return SPANS[0] if duration_s <= SEP.short_s else SPANS[2] if duration_s >= SEP.long_s else SPANS[1]


def _register(note: str) -> str:
    octave = int(note[-1])
    return "treble" if octave >= SEP.high_octave else "bass" if octave <= SEP.low_octave else "middle"


def _pace(kind: str, source: dict) -> str:
    rate, slow, fast = ((source["tremolo rate hz"], SEP.slow_tremolo_hz, SEP.fast_tremolo_hz) if kind == "tremolo"
                        else (source["clicks per second"], SEP.slow_clicks, SEP.fast_clicks))
    return "rapid" if rate >= fast else "leisurely" if rate <= slow else "moderate"


# -- question types: (clip, rng) -> (wording, question, choices, gold, facts), or None where not asked ----------

Asked = tuple[int, str, tuple[str, ...], int, dict] | None


def _pick(rng: random.Random, wordings: tuple[str, ...], choices: tuple[str, ...], answer: str, facts: dict,
          yes_no: tuple[tuple[str, str], ...] = ()) -> Asked:
    """A choice question (options in a seeded order) or, half the time when `yes_no` wordings exist, a yes/no one:
    `yes_no` holds (wording, the option it asks about); its facts add that option (`asked`) and the other one."""
    if yes_no and rng.random() < 0.5:
        k = rng.randrange(len(yes_no))
        text, asked = yes_no[k]
        order = ["yes", "no"]
        rng.shuffle(order)
        gold = order.index("yes" if asked == answer else "no")
        other = next(c for c in choices if c != asked)
        return len(wordings) + k, text, tuple(order), gold, {**facts, "asked": asked, "other": other}
    k = rng.randrange(len(wordings))
    order = list(choices)
    rng.shuffle(order)
    return k, wordings[k], tuple(order), order.index(answer), facts


def _kind(c: Clip, rng: random.Random) -> Asked:
    others = rng.sample([k for k in NAMES if k != c.kind], N_KIND_OPTIONS - 1)
    wordings = ("What is the main sound in this clip?", "Which sound do you hear?", "What kind of sound is this?",
                "Identify the sound in the recording.")
    return _pick(rng, wordings, (NAMES[c.kind], *(NAMES[k] for k in others)), NAMES[c.kind], {"name": NAMES[c.kind]})


def _pitch(c: Clip, rng: random.Random) -> Asked:
    register = c.metadata.get("register")
    if register not in ("treble", "bass"):
        return None
    level = "high" if register == "treble" else "low"
    wordings = ("Is the tone high or low?", "Is the pitch of the sound high or low?", "How high is the note?")
    yes_no = (("Is the tone high?", "high"), ("Is the pitch low?", "low"))
    return _pick(rng, wordings, ("high", "low"), level, {"register": register, "level": level}, yes_no)


def _loudness(c: Clip, rng: random.Random) -> Asked:
    level = c.source["loudness"]
    if level == "moderate":  # the classes are 3-4 dB apart at their edges; quiet and loud are 14 dB apart
        return None
    wordings = ("Is the sound quiet or loud?", "How loud is the clip?", "Is the recording loud or quiet?")
    yes_no = (("Is the sound loud?", "loud"), ("Is the clip quiet?", "quiet"))
    return _pick(rng, wordings, ("quiet", "loud"), level, {"name": NAMES[c.kind], "word": LEVELS[level],
                                                           "level": level}, yes_no)


def _duration(c: Clip, rng: random.Random) -> Asked:
    if c.metadata["span"] == SPANS[1]:
        return None
    length = "long" if c.metadata["span"] == SPANS[2] else "short"
    wordings = ("Is the clip short or long?", "Does the sound last a short or a long time?",
                "How long is the recording, short or long?")
    yes_no = (("Is the clip long?", "long"), ("Is the sound short?", "short"))
    facts = {"name": NAMES[c.kind], "span": c.metadata["span"], "length": length}
    return _pick(rng, wordings, ("short", "long"), length, facts, yes_no)


def _direction(c: Clip, rng: random.Random) -> Asked:
    if c.kind != "sweep":
        return None
    way = "rising" if c.metadata["direction"] == "upward" else "falling"
    wordings = ("Does the pitch rise or fall?", "Is the sweep rising or falling?", "Which way does the pitch move?")
    yes_no = (("Does the pitch rise?", "rising"), ("Is the pitch falling?", "falling"))
    return _pick(rng, wordings, ("rising", "falling"), way, {"dir": c.metadata["direction"], "way": way}, yes_no)


def _rate(c: Clip, rng: random.Random) -> Asked:
    pace = c.metadata.get("pace")
    if pace not in ("rapid", "leisurely"):
        return None
    speed = "fast" if pace == "rapid" else "slow"
    wordings = ("Is the rhythm slow or fast?", "Are the pulses slow or fast?", "How fast does the sound repeat?")
    yes_no = (("Is the rhythm fast?", "fast"), ("Does the sound repeat slowly?", "slow"))
    return _pick(rng, wordings, ("slow", "fast"), speed, {"pace": pace, "speed": speed}, yes_no)


def _count(c: Clip, rng: random.Random) -> Asked:
    if c.kind != "beeps" or c.source["beeps"] > SEP.max_beeps:
        return None
    n = c.source["beeps"]
    wordings = ("How many beeps do you hear?", "How many times does it beep?", "Count the beeps in the clip.")
    return _pick(rng, wordings, COUNT_WORDS, COUNT_WORDS[n - 1], {"pattern": c.metadata["pattern"]})


def _voices(c: Clip, rng: random.Random) -> Asked:
    if c.kind != "turns":
        return None
    first = "the low voice" if c.metadata["opening voice"] == "deep" else "the high voice"
    wordings = ("Which voice speaks first?", "Who starts, the low or the high voice?", "Which voice is heard first?")
    yes_no = (("Does the low voice speak first?", "the low voice"), ("Does the high voice start?", "the high voice"))
    return _pick(rng, wordings, ("the low voice", "the high voice"), first,
                 {"opener": c.metadata["opening voice"], "first": first}, yes_no)


QUESTIONS: dict[str, Callable[[Clip, random.Random], Asked]] = {
    "kind": _kind, "pitch": _pitch, "loudness": _loudness, "duration": _duration, "direction": _direction,
    "rate": _rate, "count": _count, "voices": _voices,
}
assert tuple(QUESTIONS) == QTYPES


def ask(c: Clip, qtype: str, rng: random.Random) -> ToyItem | None:
    """Question `qtype` about clip `c` (wording, form, options and their order drawn from `rng`), or None where
    the type is not asked of this clip."""
    asked = QUESTIONS[qtype](c, rng)
    if asked is None:
        return None
    wording, question, choices, gold, facts = asked
    return ToyItem(f"{c.key}#{qtype}", c.key, c.kind, c.family, c.metadata, c.audio, c.description, qtype, wording,
                   question, choices, gold, facts)


def toy_items(seed: int, index: int) -> list[ToyItem]:
    """Every question clip `index` of source `seed` supports (1 to 5, one per type)."""
    c = clip(seed, index)
    return [it for q in QTYPES if (it := ask(c, q, _rng(seed, c, q))) is not None]


def train_items(seed: int, per_type: int | Mapping[str, int]) -> list[ToyItem]:
    """Every question of source `seed`'s clips, in clip order, until each type has its number of them (`per_type`:
    one for every type, or one per type, every type named): a type that every kind supports (kind, loudness,
    duration) stops early, while the clips go on until the rarest (count: beeps only) has its share. All questions
    of the first 400 clips, by contrast, give 400 of "kind" and 44 of "count". A clip none of whose questions is
    still needed is left out. Each type's questions are its first ones in clip order whatever the other types'
    numbers, so raising one type's number adds questions and clips, and changes no other type's.

    Raises:
        ValueError: `per_type` does not name every type once with a number >= 1.
    """
    need = dict.fromkeys(QTYPES, per_type) if isinstance(per_type, int) else dict(per_type)
    if set(need) != set(QTYPES) or not all(isinstance(n, int) and n >= 1 for n in need.values()):
        raise ValueError(f"training questions per type must be a number >= 1 for each of {', '.join(QTYPES)}; "
                         f"found {per_type}")
    chosen: list[ToyItem] = []
    index, most = 0, max(need.values())
    while any(need.values()):
        for it in toy_items(seed, index):
            if need[it.qtype]:
                need[it.qtype] -= 1
                chosen.append(it)
        index += 1
        if index > 40 * most:
            raise RuntimeError(f"source {seed} does not yield the training questions asked: still missing {need}")
    return chosen


def eval_items(seed: int, per_type: int) -> list[ToyItem]:
    """`per_type` questions of every type, each on its own clip of source `seed`, in clip order.

    The clips are walked in index order; each goes to the type, among those it supports that still need
    questions, that the fewest kinds support (the rarer types first)."""
    need = dict.fromkeys(QTYPES, per_type)
    chosen: list[ToyItem] = []
    index = 0
    while any(need.values()):
        c = clip(seed, index)
        index += 1
        options = [it for q in QTYPES if need[q] and (it := ask(c, q, _rng(seed, c, q))) is not None]
        if options:
            it = min(options, key=lambda x: (_RARITY[x.qtype], QTYPES.index(x.qtype)))
            need[it.qtype] -= 1
            chosen.append(it)
        if index > 40 * per_type * len(QTYPES):
            raise RuntimeError(f"source {seed} does not yield {per_type} questions of every type: {need}")
    return chosen


def _rng(seed: int, c: Clip, qtype: str) -> random.Random:
    return random.Random(f"{seed}/{c.key}/{qtype}")


_RARITY = {"count": 0, "voices": 0, "direction": 0, "pitch": 1, "rate": 1, "duration": 2, "loudness": 2, "kind": 3}


def chance(items: list[ToyItem]) -> float:
    """The accuracy of guessing: the mean of 1 / number of options."""
    return sum(1 / len(it.choices) for it in items) / len(items)


# -- files ------------------------------------------------------------------------------------------------------


def write_source(folder: Path, items: list[ToyItem]) -> Path:
    """A corpus source for `alarm.generate`: `folder/manifest.jsonl` (id, audio, prompt = the MCQ, family, and
    the clip's metadata columns) and `folder/audio/<clip>.flac` (shared by a clip's questions). Returns the path."""
    rows = []
    for item in items:
        item_id = item.key.split("/", 1)[1].replace("#", "-")
        rows.append({"id": item_id, "audio": _write_audio(folder, item), "prompt": item.prompt,
                     "family": item.family, **item.metadata})
    return atomic_write(folder / "manifest.jsonl", jsonl.dumps(rows))


def write_benchmark(folder: Path, items: list[ToyItem]) -> Path:
    """The held-out questions in MMAU's metadata format (`alarm.eval benchmark=mmau audio_root=folder`):
    `folder/toy-mmau.json` and `folder/audio/<clip>.flac`. Returns the metadata path."""
    records = [{"id": item.key, "audio_id": _write_audio(folder, item), "question": item.question,
                "choices": list(item.choices), "answer": item.answer, "task": "sound", "difficulty": "easy",
                "sub-category": item.qtype, "category": item.kind} for item in items]
    path = folder / "toy-mmau.json"
    atomic_write(path, json.dumps(records, indent=1) + "\n")
    return path


def audio_path(item: ToyItem) -> str:
    """Where `write_source` / `write_benchmark` put the item's FLAC, relative to their folder."""
    return f"audio/{item.clip.replace('/', '-')}.flac"


def _write_audio(folder: Path, item: ToyItem) -> str:
    rel = audio_path(item)
    path = folder / rel
    if not path.exists() or path.read_bytes() != item.audio:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, item.audio)
    return rel
