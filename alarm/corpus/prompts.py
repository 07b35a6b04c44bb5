"""The user prompt P: a deterministic pick from per-family template pools, or an LLM writer + checker.

    prompt, origin = choose_prompt("esc50/1-100038-A-14", "labels", {"category": "dog"})  # origin 'template:labels:4'

The reference's writer/checker instructions and selection rule were never released (D1); the texts and the rule
here are our own. Every choice is a pure function of the row key (sha256, not Python's salted `hash()`), so a
rerun gives the same prompts.
"""

from __future__ import annotations

import hashlib
import re

from alarm.corpus.describe import norm_key

MAX_PROMPT_CHARS = 300  # longer "prompts" from the writer are paragraphs, not questions

# (template, metadata keys of which at least one must be present; () = always eligible)
Template = tuple[str, tuple[str, ...]]

_COMMON_REASONING: list[Template] = [
    ("Listen carefully and explain, step by step, what is happening in this recording.", ()),
    ("What can you infer about where and how this audio was recorded? Justify your answer.", ()),
]

TEMPLATES: dict[str, list[Template]] = {
    "transcript": [
        ("Transcribe the speech in this recording.", ()),
        ("Write down exactly what the speaker says.", ()),
        ("What is being said in this audio? Give the full text.", ()),
        ("Provide a verbatim transcript of this clip.", ()),
        ("Summarize the spoken content in one or two sentences.", ()),
        ("What is the main topic of what the speaker is saying, and what in the speech tells you so?", ()),
        ("Transcribe the utterance, then point out any words that were hard to make out and why.", ()),
        ("In which language is this spoken, and what does the speaker say?", ()),
        ("Does the speaker sound like they are reading a text or talking spontaneously? Explain.", ()),
    ],
    "caption": [
        ("Describe the sounds in this recording.", ()),
        ("Write a one-sentence caption for this audio clip.", ()),
        ("What is happening in this audio?", ()),
        ("List the sound events you can hear, in the order they occur.", ()),
        ("Describe the acoustic scene: where might this have been recorded, and what gives it away?", ()),
        ("What is the most prominent sound here, and what is in the background?", ()),
        ("Imagine you are a sound designer: explain how you would recreate this clip.", ()),
        ("Is there any human activity in this clip? Reason about what you hear before answering.", ()),
        *_COMMON_REASONING,
    ],
    "labels": [
        ("What sound is this?", ()),
        ("Identify the main sound source in this clip.", ()),
        ("Which category best describes this sound?", ()),
        ("Tag this audio with the sound classes you can hear.", ()),
        ("What do you hear in this recording?", ()),
        ("What could be producing this sound? Explain which acoustic cues point you there.", ()),
        ("Is this sound natural, mechanical or man-made? Explain your reasoning.", ()),
        ("Describe this sound and suggest what situation it might come from.", ()),
        ("What would most likely happen right after this sound? Reason it through.", ()),
    ],
    "speaker": [
        ("Describe the speaker's voice.", ()),
        ("What can you tell about the speaker from their voice alone?", ()),
        ("What emotion does the speaker convey?", ("emotion",)),
        ("How does the speaker feel? Point to the vocal cues behind your answer.", ("emotion",)),
        ("Is the speaker male or female?", ("gender",)),
        ("Estimate the speaker's age and explain what in the voice suggests it.", ("age",)),
        ("What accent does the speaker have?", ("accent", "region")),
        ("Where might the speaker be from, judging by how they speak?", ("accent", "region", "language")),
        ("What language is spoken here?", ("language",)),
        ("Transcribe what is said and describe how it is said.", ("text", "transcript", "transcription")),
        ("Describe the speaker's delivery: pace, pitch, loudness and mood.", ()),
    ],
    "turns": [
        ("How many people are speaking in this recording?", ()),
        ("Transcribe the conversation, labelling each speaker.", ()),
        ("Summarize the conversation.", ()),
        ("Who speaks first, and what do they say?", ()),
        ("Describe how the mood of the conversation changes over time.", ()),
        ("What is the relationship between the speakers? Explain what in the exchange suggests it.", ()),
        ("What is each speaker trying to achieve in this exchange?", ()),
        ("Identify the emotion of each speaker turn.", ("emotion",)),
        ("Describe the overall sentiment of the dialogue and how it develops.", ("sentiment",)),
    ],
    "quality": [
        ("How would you rate the quality of this speech recording on a scale from 1 to 5?", ()),
        ("Describe the audio quality of this recording.", ()),
        ("Is this speech clean or degraded? Explain what you hear.", ()),
        ("What kind of distortions, if any, affect this recording?", ()),
        ("Is there background noise in this clip? How strong is it?", ()),
        ("Would this recording be pleasant to listen to on a phone call? Reason about its quality.", ()),
        ("What transmission channel or processing might have produced this sound quality? Explain.", ()),
        ("Rate the loudness, noisiness and clarity of this speech and justify each rating.", ()),
    ],
    "music": [
        ("Describe this piece of audio.", ()),
        ("What instrument is playing?", ("instrument family", "instrument family str", "instrument")),
        ("Which note is being played, and how loud is it?", ("pitch", "midi pitch")),
        ("Is the pitch of this note high or low? Estimate it.", ("pitch", "midi pitch")),
        ("What genre is this music? Explain the cues you rely on.", ("genre",)),
        ("Describe the timbre of this sound.", ()),
        ("Is this sound acoustic, electronic or synthetic? Justify your answer.",
         ("instrument source", "instrument source str")),
        ("What mood does this music evoke, and why?", ()),
        ("Describe the rhythm, tempo and instrumentation you hear.", ()),
        ("Where could this sound be used, for example in a film or a game? Explain.", ()),
    ],
    "spoof": [
        ("Is this speech genuine or synthesized?", ()),
        ("Could this recording be a deepfake? Explain your reasoning.", ()),
        ("Was this voice produced by a human or by a machine?", ()),
        ("Assess whether this speech is bona fide or spoofed, and explain the cues.", ()),
        ("If this speech is synthetic, how might it have been generated?", ()),
        ("Do you notice any artifacts that suggest the speech was generated or converted? Describe them.", ()),
        ("Would you trust this recording as evidence of what a real person said? Why or why not?", ()),
        ("Describe the naturalness of this voice.", ()),
    ],
    "generic": [
        ("Describe this audio.", ()),
        ("What do you hear in this recording?", ()),
        ("Give a short caption for this clip.", ()),
        ("What is the most notable thing about this audio?", ()),
        ("Describe this recording in detail, as if to someone who cannot hear it.", ()),
        ("What kind of recording is this, and what is it likely used for?", ()),
        *_COMMON_REASONING,
    ],
}


def _u64(*parts: str) -> int:
    return int.from_bytes(hashlib.sha256("\0".join(parts).encode()).digest()[:8], "big")


def eligible_templates(family: str, metadata: dict) -> list[int]:
    """Indices into `TEMPLATES[family]` whose required metadata fields are present and non-empty."""
    if family not in TEMPLATES:
        raise ValueError(f"unknown prompt family {family!r}; valid families: {', '.join(TEMPLATES)}")
    present = {norm_key(k) for k, v in metadata.items() if v not in (None, "", [])}
    if family == "turns":  # per-turn attributes live inside metadata.turns
        for turn in metadata.get("turns") or []:
            if isinstance(turn, dict):
                present |= {norm_key(k) for k, v in turn.items() if v not in (None, "", [])}
    return [i for i, (_, req) in enumerate(TEMPLATES[family]) if not req or present & set(req)]


def choose_prompt(key: str, family: str, metadata: dict) -> tuple[str, str]:
    """A template prompt for one row, a pure function of (key, family, metadata).

    Args:
        key: Row key (schema.make_key); the pick is sha256-based, so stable across processes and runs.
        family: Task family (config `Family`).
        metadata: The row's metadata; templates asking about a field (e.g. emotion) need that field.

    Returns:
        `(prompt, "template:<family>:<index into TEMPLATES[family]>")`.

    Raises:
        ValueError: an unknown family.
    """
    pool = eligible_templates(family, metadata)
    i = pool[_u64("template", key) % len(pool)]
    return TEMPLATES[family][i][0], f"template:{family}:{i}"


# ---------------------------------------------------------------------------------------------------------------
# LLM writer and checker

FAMILY_FOCUS: dict[str, str] = {
    "transcript": "speech whose words are known: transcription, summarizing, topic, language, speaking style",
    "caption": "general sounds and acoustic scenes: captioning, sound events, their order, the environment",
    "labels": "sound events: identifying the source, classifying, reasoning about what produces the sound",
    "speaker": "a speaker's voice: emotion, gender, age, accent, language, delivery, and what is said",
    "turns": "conversations between several speakers: who speaks when, turn content, emotions, relationships",
    "quality": "speech quality: overall rating, noise, coloration, discontinuities, loudness, degradations",
    "music": "music and musical notes: instrument, pitch, loudness, timbre, genre, mood, rhythm",
    "spoof": "whether speech is genuine or synthetic, and how synthetic speech might have been produced",
    "generic": "any aspect of the audio: content, sources, scene, quality",
}

WRITER_SYSTEM = (
    "You write user requests for an audio assistant. You get a text record of an audio clip; the assistant that "
    "will answer your requests only hears the clip itself and never sees this record.\n\n"
    "Record format: '[start-end] content (duration: Ns, key: value, ...)'. Content is a transcript, or a "
    "caption or label between | bars |. Conversations have one bracketed segment per speaker turn.\n\n"
    "Rules for the requests:\n"
    "- Each one must be answerable by listening to the clip; the record is only there so you know what the clip "
    "contains.\n"
    "- Never mention the record, its fields, labels, tags, captions, metadata, transcripts or any text: the "
    "listener has none of them.\n"
    "- Do not give the answer away inside the request.\n"
    "- Vary them: short and long, direct questions and instructions, simple ones and ones that ask for "
    "step-by-step reasoning.\n"
    "- Write one request per line inside <answer></answer>, with no numbering and nothing else in the block."
)

CHECKER_SYSTEM = (
    "You review user requests written for an audio assistant that can only hear an audio clip. You get a text "
    "record of the clip and a numbered list of requests.\n\n"
    "A request is valid when all of these hold:\n"
    "- It can be answered by listening to the clip described by the record.\n"
    "- It does not refer to any text about the clip: no record, description, caption, label, tag, metadata or "
    "transcript that the listener would have to read.\n"
    "- It does not reveal the answer it asks for.\n"
    "- It is a single, clear request.\n\n"
    "Think briefly, then write the numbers of the valid requests, separated by commas, inside <answer></answer>. "
    "Write <answer>none</answer> if none is valid."
)


def writer_messages(description: str, family: str, n: int) -> list[dict]:
    """Chat messages asking the prompt writer for `n` diverse candidate prompts about the clip described by D.

    Raises:
        ValueError: an unknown family or n < 1.
    """
    if family not in FAMILY_FOCUS:
        raise ValueError(f"unknown prompt family {family!r}; valid families: {', '.join(FAMILY_FOCUS)}")
    if n < 1:
        raise ValueError(f"n must be >= 1 candidate prompts, found {n} (prompts.candidates)")
    user = (
        f"Audio record:\n{description}\n\n"
        f"This clip comes from a collection about {FAMILY_FOCUS[family]}.\n"
        f"Write {n} different requests a user could make about this clip, one per line inside <answer></answer>."
    )
    return [{"role": "system", "content": WRITER_SYSTEM}, {"role": "user", "content": user}]


_BULLET = re.compile(r"^\s*(?:[-*•·]+|\(?\d{1,3}[.):\]]|[A-Za-z][.)])\s+")
_QUOTES = "\"'“”‘’`«»"


def _answer_block(text: str) -> str | None:
    """Content of the last <answer> after the model's own reasoning; an unclosed block runs to the end."""
    text = text.rsplit("</think>", 1)[-1]
    start = text.rfind("<answer>")
    if start < 0:
        return None
    body = text[start + len("<answer>"):]
    return body.split("</answer>", 1)[0]


def parse_candidates(text: str) -> list[str]:
    """Candidate prompts from the writer's output: one per line inside the last <answer> block.

    Strips numbering, bullets, surrounding quotes and markdown emphasis; drops empty lines, headings (ending in
    ':'), lines over `MAX_PROMPT_CHARS` and case-insensitive duplicates. No <answer> block -> [] (the pipeline
    falls back to a template and records it in prompt_origin).
    """
    block = _answer_block(text)
    if block is None:
        return []
    out: list[str] = []
    seen: set[str] = set()
    for line in block.splitlines():
        s = _BULLET.sub("", line.strip()).strip().strip("*_").strip()
        while len(s) >= 2 and s[0] in _QUOTES and s[-1] in _QUOTES:
            s = s[1:-1].strip()
        if not s or s.endswith(":") or len(s) > MAX_PROMPT_CHARS or "<" in s:
            continue
        if s.lower() not in seen:
            seen.add(s.lower())
            out.append(s)
    return out


def checker_messages(description: str, candidates: list[str]) -> list[dict]:
    """Chat messages asking which candidates are answerable from the audio alone and reveal no text surrogate."""
    listing = "\n".join(f"{i}. {c}" for i, c in enumerate(candidates, 1))
    user = f"Audio record:\n{description}\n\nRequests:\n{listing}\n\nWhich requests are valid?"
    return [{"role": "system", "content": CHECKER_SYSTEM}, {"role": "user", "content": user}]


def parse_checker(text: str, n: int) -> list[int]:
    """0-based indices of the candidates the checker marked valid (1-based numbers in its <answer> block).

    Out-of-range numbers are dropped; duplicates removed; sorted. No <answer> block or 'none' -> [].
    """
    block = _answer_block(text)
    if block is None:
        return []
    return sorted({int(m) - 1 for m in re.findall(r"\d+", block) if 1 <= int(m) <= n})


def select_prompt(key: str, candidates: list[str], valid: list[int]) -> tuple[str, str] | None:
    """One prompt per item: a key-seeded pick among the valid candidates.

    Returns:
        `(prompt, "llm:<candidate index>")`, or None when no candidate is valid (the pipeline then falls back to
        `choose_prompt` and records `template-fallback:<family>:<i>`).
    """
    pool = sorted({i for i in valid if 0 <= i < len(candidates)})
    if not pool:
        return None
    i = pool[_u64("llm-prompt", key) % len(pool)]
    return candidates[i], f"llm:{i}"

