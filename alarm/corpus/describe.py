"""The description D: a source's metadata rendered in the ALARM paper's text format.

    describe({"label": "dog"}, 5.0, "labels")   # '[00:00-00:05] |dog| (duration: 5s)'

One segment `[00:00-MM:SS] <content> (duration: Ns, k1: v1, ...)`, content = the transcript for speech with a
known transcript, else `|caption or label|`; or, for the `turns` family, one segment per speaker turn. Keys are
lower-cased (underscores read as spaces) and kept in insertion order; unknown fields pass through. Known metadata
defects are fixed here rather than reproduced (D22): label/key typos (`TYPO_FIXES`) and source-specific fixers
(`FIXERS`, e.g. VCTK's shifted accent/region columns). Malformed structured fields raise `InvalidInput` naming
the field; the pipeline turns that into a `bad_metadata` flag.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

from alarm.errors import InvalidInput

FAMILIES = ("transcript", "caption", "labels", "speaker", "turns", "quality", "music", "spoof", "generic")

# Label and key typos seen in the source metadata (lower-case word -> fix); applied to keys and label values,
# never to transcripts.
TYPO_FIXES: dict[str, str] = {
    "degradataion": "degradation",
    "singning": "singing",
}
_TYPO_RE = re.compile(r"\b(" + "|".join(map(re.escape, TYPO_FIXES)) + r")\b", re.IGNORECASE)

# Bookkeeping keys that are not about the sound and must not reach the LLM (paths would even leak file names).
SKIP_KEYS = frozenset({
    "id", "audio", "audio path", "audio uri", "path", "file", "filename", "file name", "duration", "duration s",
})
# CSV markers of a missing value (pandas NaN floats are handled separately).
_MISSING = frozenset({"", "-", "nan"})

TRANSCRIPT_KEYS = ("transcript", "text", "transcription", "sentence", "normalized text")
CAPTION_KEYS = ("caption", "captions")
LABEL_KEYS = ("label", "labels", "category", "class", "tags")
_ORDINALS = ("first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth")


# ---------------------------------------------------------------------------------------------------------------
# value formatting


def fix_typos(text: str) -> str:
    """Replace known label typos word by word, keeping the first letter's case ('Singning' -> 'Singing')."""

    def repl(m: re.Match) -> str:
        fixed = TYPO_FIXES[m.group(0).lower()]
        return fixed[0].upper() + fixed[1:] if m.group(0)[0].isupper() else fixed

    return _TYPO_RE.sub(repl, text)


def norm_key(key: Any) -> str:
    """Metadata key as rendered: stripped, lower-cased, '_' read as a space, runs of spaces collapsed, typos fixed."""
    return fix_typos(" ".join(str(key).replace("_", " ").lower().split()))


def fmt_number(x: float) -> str:
    """Compact number: 2.7500001 -> '2.75', 3.0 -> '3', 24 -> '24' (at most 3 decimals)."""
    if isinstance(x, int):
        return str(x)
    r = round(float(x), 3)
    if r == int(r) and abs(r) < 1e15:
        return str(int(r))
    return repr(r)


def fmt_value(value: Any) -> str | None:
    """Render a metadata value; None for missing/empty (skipped). Lists join with ', '; bools read yes/no."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float):
        return None if isinstance(value, float) and math.isnan(value) else fmt_number(value)
    if isinstance(value, list | tuple):
        parts = [p for p in (fmt_value(v) for v in value) if p]
        return ", ".join(parts) or None
    if isinstance(value, dict):
        parts = [f"{norm_key(k)}: {p}" for k, v in value.items() if (p := fmt_value(v))]
        return ", ".join(parts) or None
    text = " ".join(str(value).split())
    return None if text.lower() in _MISSING else fix_typos(text)


def round_s(seconds: float) -> int:
    """Whole seconds, halves rounded up (Python's round() would send 2.5 to 2)."""
    return int(math.floor(seconds + 0.5))


def mmss(seconds: float) -> str:
    s = round_s(seconds)
    return f"{s // 60:02d}:{s % 60:02d}"


def _number(value: Any, field: str) -> float:
    """A finite number from an int, float or numeric string, else InvalidInput naming `field`."""
    try:
        x = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        x = math.nan
    if not math.isfinite(x):
        raise InvalidInput(f"metadata.{field} must be a finite number, found {value!r}; fix the source's metadata")
    return x


# ---------------------------------------------------------------------------------------------------------------
# family describers: (normalised metadata) -> (content, [(key, rendered value), ...]) in insertion order

Attrs = list[tuple[str, str]]


def _pop_first(md: dict[str, Any], keys: tuple[str, ...]) -> str | None:
    """Remove every key in `keys` from md; return the first non-empty rendered value among them."""
    found = None
    for k in keys:
        if k in md:
            value = md.pop(k)
            text = " ".join(str(value).split()) if isinstance(value, str) else fmt_value(value)
            if found is None and text and text.lower() not in _MISSING:
                found = text
    return found


def _attrs(md: dict[str, Any], rename: dict[str, Callable[[Any], tuple[str, str | None]]] | None = None) -> Attrs:
    """Remaining fields as (key, value) in insertion order; `rename[key](value)` gives (new key, rendered value)."""
    out = []
    for k, v in md.items():
        if k in SKIP_KEYS or fmt_value(v) is None:
            continue
        key, text = rename[k](v) if rename and k in rename else (k, fmt_value(v))
        if text:
            out.append((key, text))
    return out


def _require(content: str | None, family: str, keys: tuple[str, ...]) -> str:
    if content is None:
        raise InvalidInput(
            f"family {family!r} needs one of the metadata fields {list(keys)} (non-empty), found none; "
            "fix the manifest's column names or choose another family (sources.N.family)"
        )
    return content


def describe_transcript(md: dict[str, Any]) -> tuple[str, Attrs]:
    """LibriSpeech/MLS-like: content = the transcript (required)."""
    content = _require(_pop_first(md, TRANSCRIPT_KEYS), "transcript", TRANSCRIPT_KEYS)
    return content, _attrs(md)


def describe_caption(md: dict[str, Any]) -> tuple[str, Attrs]:
    """AudioCaps/Clotho-like: content = |caption| (required; several captions join with '; ')."""
    numbered = tuple(k for k in md if re.fullmatch(r"caption \d+", k))
    captions = [t for k in (*CAPTION_KEYS, *numbered) if k in md and (t := fmt_value(md.pop(k)))]
    content = _require("; ".join(captions) or None, "caption", CAPTION_KEYS)
    return f"|{fix_typos(content)}|", _attrs(md)


def describe_labels(md: dict[str, Any]) -> tuple[str, Attrs]:
    """ESC-50/AudioSet-like: content = |label| or |label1, label2| (required)."""
    labels = [t for k in LABEL_KEYS if k in md and (t := fmt_value(md.pop(k)))]
    content = _require(", ".join(labels) or None, "labels", LABEL_KEYS)
    return f"|{content}|", _attrs(md)


def describe_speaker(md: dict[str, Any]) -> tuple[str, Attrs]:
    """Cameo/VCTK/GLOBE-like: the transcript if known, else |Speech|; emotion, gender, age, accent... follow."""
    content = _pop_first(md, TRANSCRIPT_KEYS)
    return content if content is not None else "|Speech|", _attrs(md)


def describe_generic(md: dict[str, Any]) -> tuple[str, Attrs]:
    """Any source: transcript if present, else |caption or label|, else |Audio|."""
    content = _pop_first(md, TRANSCRIPT_KEYS)
    if content is None:
        label = _pop_first(md, CAPTION_KEYS + LABEL_KEYS)
        content = f"|{fix_typos(label)}|" if label else "|Audio|"
    return content, _attrs(md)


def _inverted_level(name: str) -> Callable[[Any], tuple[str, str | None]]:
    # NISQA dimension scores are 5 = clean; as 'levels' (more = worse) they read naturally, as in the reference.
    return lambda v: (name, f"{fmt_number(5 - _number(v, name))}/5")


def _out_of_5(name: str) -> Callable[[Any], tuple[str, str | None]]:
    def render(v: Any) -> tuple[str, str | None]:
        if isinstance(v, str) and not re.fullmatch(r"\s*[-+\d.eE]+\s*", v):
            return name, fmt_value(v)  # already rendered, e.g. '3.2/5'
        return name, f"{fmt_number(_number(v, name))}/5"

    return render


def _renamed(name: str) -> Callable[[Any], tuple[str, str | None]]:
    return lambda v: (name, fmt_value(v))


QUALITY_FIELDS: dict[str, Callable[[Any], tuple[str, str | None]]] = {
    "mos": lambda v: ("mos", fmt_number(_number(v, "mos"))),
    "noi": _inverted_level("noise level"),
    "col": _inverted_level("coloration level"),
    "dis": _inverted_level("discontinuity level"),
    "loud": _out_of_5("loudness"),
    "noise level": _out_of_5("noise level"),
    "coloration level": _out_of_5("coloration level"),
    "discontinuity level": _out_of_5("discontinuity level"),
    "loudness": _out_of_5("loudness"),
    "con description": _renamed("degradation description"),
    "degradation": _renamed("degradation description"),
    "degradation type": _renamed("degradation description"),
}


def describe_quality(md: dict[str, Any]) -> tuple[str, Attrs]:
    """NISQA-like: content |Speech|; mos, noise/coloration/discontinuity levels and loudness out of 5.

    Raw NISQA dimension columns (noi, col, dis; 5 = clean) become levels 5 - x (more = worse); columns already
    named '... level' are rendered as given.
    """
    _pop_first(md, TRANSCRIPT_KEYS)  # NISQA ships the placeholder text 'Speech', not a transcript
    return "|Speech|", _attrs(md, QUALITY_FIELDS)


def _midi(name: str) -> Callable[[Any], tuple[str, str | None]]:
    def render(v: Any) -> tuple[str, str | None]:
        x = _number(v, name)
        if x != int(x) or not 0 <= x <= 127:
            raise InvalidInput(f"metadata.{name} must be a MIDI value, an integer in 0..127, found {v!r}")
        return ("midi pitch" if name == "pitch" else name), f"{int(x)} out of 127"

    return render


MUSIC_FIELDS: dict[str, Callable[[Any], tuple[str, str | None]]] = {
    "pitch": _midi("pitch"),
    "midi pitch": _midi("pitch"),
    "velocity": _midi("velocity"),
    "instrument source str": _renamed("instrument source"),
    "qualities str": _renamed("qualities"),
}


def describe_music(md: dict[str, Any]) -> tuple[str, Attrs]:
    """NSynth/GTZAN-like: |caption or label|, else |<instrument family> musical note|, else |Music|.

    pitch -> 'midi pitch: N out of 127', velocity -> 'velocity: N out of 127'; genre, instrument source and
    qualities pass through (qualities lists join with ', '). NSynth's '*_str' columns are read by their names.
    """
    content = _pop_first(md, CAPTION_KEYS + LABEL_KEYS)
    family = _pop_first(md, ("instrument family str", "instrument family"))
    if content is None and family is not None:
        content = f"{family} musical note"
    elif family is not None:
        md["instrument family"] = family
    for numeric in ("instrument family", "instrument source", "qualities") if "instrument source str" in md else ():
        md.pop(numeric, None)  # NSynth ships both the ids and the '*_str' names; keep the names
    return f"|{fix_typos(content) if content else 'Music'}|", _attrs(md, MUSIC_FIELDS)


_BONA_FIDE = {"bonafide", "bona fide", "bona-fide", "genuine", "real", "bona_fide"}
_SPOOF = {"spoof", "spoofed", "fake", "deepfake"}
SPOOF_LABEL_KEYS = ("is bona fide or spoof", "label", "key", "bonafide or spoof", "class")
SPOOF_ALGO_KEYS = ("spoof algorithm description", "algorithm description", "attack description")
SPOOF_ID_KEYS = ("attack", "algorithm", "system id")  # used only when no description is given


def describe_spoof(md: dict[str, Any]) -> tuple[str, Attrs]:
    """ASVspoof-like: content |Speech|; 'is bona fide or spoof' then the spoof algorithm, then other fields."""
    raw = None
    for k in SPOOF_LABEL_KEYS:
        if k in md:
            raw = md.pop(k)
            break
    verdict = str(raw).strip().lower() if raw is not None else ""
    if verdict in _BONA_FIDE:
        verdict = "bona fide"
    elif verdict in _SPOOF:
        verdict = "spoof"
    else:
        raise InvalidInput(
            f"family 'spoof' needs a bona fide/spoof label in one of {list(SPOOF_LABEL_KEYS)}, found {raw!r}; "
            "expected bonafide | bona fide | spoof"
        )
    algo = _pop_first(md, SPOOF_ALGO_KEYS) or _pop_first(md, SPOOF_ID_KEYS)
    attrs = [("is bona fide or spoof", verdict)]
    if algo and verdict == "spoof":
        attrs.append(("spoof algorithm description", fix_typos(algo)))
    return "|Speech|", attrs + _attrs(md)


DESCRIBERS: dict[str, Callable[[dict[str, Any]], tuple[str, Attrs]]] = {
    "transcript": describe_transcript,
    "caption": describe_caption,
    "labels": describe_labels,
    "speaker": describe_speaker,
    "quality": describe_quality,
    "music": describe_music,
    "spoof": describe_spoof,
    "generic": describe_generic,
}


# ---------------------------------------------------------------------------------------------------------------
# multi-speaker turns


def speaker_name(i: int) -> str:
    """0 -> 'the first speaker', 10 -> 'the 11th speaker'."""
    if i < len(_ORDINALS):
        return f"the {_ORDINALS[i]} speaker"
    n = i + 1
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"the {n}{suffix} speaker"


def describe_turns(md: dict[str, Any]) -> str:
    """One segment per turn `[MM:SS-MM:SS, the first speaker] text (emotion: ...)`, then the total duration.

    Speakers get ordinal names by first appearance; total duration = the last turn's end.
    """
    turns = md.pop("turns", None)
    if not isinstance(turns, list) or not turns:
        raise InvalidInput(
            f"family 'turns' needs metadata.turns, a non-empty list of {{speaker, start, end, text}} objects, "
            f"found {type(turns).__name__ if turns is not None else 'nothing'}"
        )
    names: dict[str, str] = {}
    segments, last_end = [], 0.0
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict):
            raise InvalidInput(f"metadata.turns[{i}] must be an object, found {type(turn).__name__}")
        t = {norm_key(k): v for k, v in turn.items()}
        for field in ("speaker", "start", "end"):
            if t.get(field) is None or t.get(field) == "":
                raise InvalidInput(f"metadata.turns[{i}].{field} is missing; every turn needs speaker, start, end")
        start, end = _number(t.pop("start"), f"turns[{i}].start"), _number(t.pop("end"), f"turns[{i}].end")
        if start < 0 or end < start:
            raise InvalidInput(
                f"metadata.turns[{i}] has start={start} and end={end}; expected 0 <= start <= end (seconds)"
            )
        speaker = str(t.pop("speaker"))
        names.setdefault(speaker, speaker_name(len(names)))
        text = _pop_first(t, TRANSCRIPT_KEYS)
        attrs = _attrs(t)
        seg = f"[{mmss(start)}-{mmss(end)}, {names[speaker]}] {text if text else '|Speech|'}"
        if attrs:
            seg += " (" + ", ".join(f"{k}: {v}" for k, v in attrs) + ")"
        segments.append(seg)
        last_end = max(last_end, end)
    tail = [("duration", f"{round_s(last_end)}s"), *_attrs(md)]
    return " ".join(segments) + " (" + ", ".join(f"{k}: {v}" for k, v in tail) + ")"


# ---------------------------------------------------------------------------------------------------------------
# source-specific fixers (D22)

VCTK_ACCENTS = frozenset({
    "english", "scottish", "irish", "northernirish", "welsh", "american", "canadian", "southafrican",
    "australian", "newzealand", "indian", "british",
})


def fix_vctk(md: dict[str, Any]) -> dict[str, Any]:
    """Undo the reference's VCTK column shift: `accent: F`, `region: English Southern England`.

    When `accent` is a bare gender letter and `region` starts with a known accent, the letter becomes the gender
    and the region's first word the accent; the rest stays the region. The shifted `gender` column held no
    information (the reference derived it from the wrong field), so it is replaced. Anything else is left as is.
    """
    keys = {norm_key(k): k for k in md}
    accent, region = md.get(keys.get("accent", "")), md.get(keys.get("region", ""))
    if not (isinstance(accent, str) and accent.strip().upper() in ("F", "M") and isinstance(region, str)):
        return md
    first, _, rest = region.strip().partition(" ")
    if first.lower() not in VCTK_ACCENTS:
        return md
    out = {k: v for k, v in md.items() if norm_key(k) not in ("gender", "accent", "region")}
    out["gender"] = "Female" if accent.strip().upper() == "F" else "Male"
    out["accent"] = first
    if rest.strip():
        out["region"] = rest.strip()
    return out


FIXERS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "vctk": fix_vctk,
}


def fixer_for(source: str | None) -> Callable[[dict[str, Any]], dict[str, Any]] | None:
    """The fixer registered for a source name: exact match or '<name>_...', '<name>-...' (case-insensitive)."""
    if not source:
        return None
    s = source.lower()
    for name, fn in FIXERS.items():
        if s == name or (s.startswith(name) and s[len(name)] in "_-."):
            return fn
    return None


# ---------------------------------------------------------------------------------------------------------------
# entry point


def describe(metadata: dict, duration_s: float, family: str, *, source: str | None = None) -> str:
    """Render the description D of one clip.

    Args:
        metadata: The source's fields for this item (JSON object); not modified.
        duration_s: Clip duration in seconds (ignored by `turns`, whose total is the last turn's end).
        family: One of `FAMILIES` (config `Family`).
        source: Source name; selects a fixer from `FIXERS` (e.g. 'vctk').

    Returns:
        `[00:00-MM:SS] <content> (duration: Ns, k: v, ...)`, or the per-turn form for `turns`.

    Raises:
        InvalidInput: a malformed field (named in the message), a missing required field, a bad duration.
        ValueError: an unknown family.
    """
    if family not in FAMILIES:
        raise ValueError(f"unknown describer family {family!r}; valid families: {', '.join(FAMILIES)}")
    if not isinstance(metadata, dict):
        raise InvalidInput(f"metadata must be a JSON object, found {type(metadata).__name__}")
    fixer = fixer_for(source)
    md: dict[str, Any] = {}
    for k, v in (fixer(dict(metadata)) if fixer else metadata).items():
        md.setdefault(norm_key(k), v)
    if family == "turns":
        return describe_turns(md)
    seconds = _number(duration_s, "duration_s")
    if seconds < 0:
        raise InvalidInput(f"duration_s must be >= 0 seconds, found {duration_s!r}")
    whole = max(round_s(seconds), 1 if seconds > 0 else 0)  # a 0.3 s clip reads as 1 s, not as empty
    content, attrs = DESCRIBERS[family](md)
    tail = ", ".join(f"{k}: {v}" for k, v in [("duration", f"{whole}s"), *attrs])
    return f"[00:00-{mmss(whole)}] {content} ({tail})"
