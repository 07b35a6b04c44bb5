"""Self-rephrasing R0 -> R: the rewrite prompt, per-row input preparation, and output parsing.

    messages, complete = rephrase_messages(r0)            # the rephraser sees R0 only, never D or P
    result = parse_rephrase(engine_output, complete)      # RephraseResult(answer=R or None, has_answer_tag=...)

The system prompt and the four few-shot pairs are our own texts with the intent of the paper's: light edits that
turn text-perception wording into listening wording, structure and mistakes untouched, truncated reasoning left
truncated. Fixes D19 (a missing <answer> never turns the rephraser's own output into a target) and D20 (the
`<think>` decision is made per row).
"""

from __future__ import annotations

from dataclasses import dataclass

THINK, END_THINK = "<think>", "</think>"
REASONING, END_REASONING = "<text_llm_reasoning>", "</text_llm_reasoning>"
# R0 may contain answer tags of its own; renamed so the rephraser's outer <answer> block stays unambiguous.
ANSWER, END_ANSWER = "<answer>", "</answer>"
TEXT_ANSWER, END_TEXT_ANSWER = "<text_llm_answer>", "</text_llm_answer>"

REPHRASE_SYSTEM_PROMPT = """\
You edit responses written by a text-only language model so that they read as if an audio-understanding \
language model had written them after listening to the audio.

How the text model worked: it could not hear the audio. It received a text record of the audio clip between \
<start_audio> and <end_audio>, followed by the user's prompt. A record looks like \
"[00:00-00:05] content (duration: 5s, key: value, ...)": the bracket holds the start and end time; the content is \
either a transcript of the speech or a caption or label between vertical bars, such as |dog barking|; the \
parentheses hold metadata such as duration, emotion, gender, age, accent, quality scores or labels. A conversation \
has one bracketed segment per speaker turn, such as "[00:00-00:07, the first speaker] ...". You will not see the \
record, only the text model's response. Its reasoning is enclosed in <text_llm_reasoning> and \
</text_llm_reasoning>; whatever follows the closing tag is its final response to the user.

Edit the response following these rules:
1. Keep the structure: the same paragraphs, line breaks, lists and formatting, and about the same length and \
number of words.
2. Change only a few words or phrases. Never rewrite, summarize, shorten or extend the response.
3. Where the text refers to the audio, replace wording about reading text ("mentioned", "provided", "given", \
"listed", "described", "the description says") with wording about listening ("I hear", "it sounds like", "the \
speaker sounds", "the background noise suggests"). Leave phrases about the model's own intentions or knowledge as \
they are ("I need to", "let me", "I think", "I remember").
4. Never suggest that the model had a text, transcript, caption, label, tag, metadata or description of the audio. \
Every property of the audio must read as heard or inferred by listening, or as the model's own knowledge.
5. Keep the meaning. Do not correct mistakes or change conclusions, even wrong ones. If the response is \
incomplete, do not complete it and do not add an answer.
6. Apply the light edits to both the reasoning and the final response; if the response is incomplete, edit only \
the part that exists.
7. Keep the tone and style of the original model.
8. Never mention the <start_audio> or <end_audio> tags; say "the beginning of the audio" or "the end of the audio" \
instead.

Output: return the whole edited response, with the <text_llm_reasoning> and </text_llm_reasoning> tags where they \
were, inside <answer></answer>. Keep the number of paragraphs and the length aligned with the original, and leave \
every part that needs no edit exactly as it is."""

REMINDER = (
    "Edit this response following the rules: change only a few words in both the reasoning and the final "
    "response, keep the structure and length, do not correct anything, and return the whole edited response "
    "inside <answer></answer>."
)
INCOMPLETE_NOTE = (
    "This response stops in the middle of the reasoning and has no final response. Do not complete it: the "
    "edited version must stop at the same point."
)


def prepare_rephrase_input(r0: str) -> tuple[str, bool]:
    """Prepare one R0 for the rephraser (decided per row, D20).

    Prepend `<think>\\n` when R0 lacks a leading `<think>` (engine output normally does: the tag is in the chat
    template); append `</think>` when it is missing and report the row incomplete; then rename the tags to
    `<text_llm_reasoning>` so the rephraser does not mistake R0's reasoning for its own.

    Returns:
        `(prepared text, complete)`; complete is False when R0 was cut off inside its reasoning.
    """
    text = r0 if r0.lstrip().startswith(THINK) else f"{THINK}\n{r0}"
    complete = END_THINK in text
    if not complete:
        text = text.rstrip() + f"\n{END_THINK}"
    text = text.replace(ANSWER, TEXT_ANSWER).replace(END_ANSWER, END_TEXT_ANSWER)
    return text.replace(THINK, REASONING).replace(END_THINK, END_REASONING), complete


def user_turn(prepared: str, complete: bool) -> str:
    """The rephraser's user turn: the prepared response in <NEW_TEXT_LLM_RESPONSE>, then the reminder."""
    note = "" if complete else f" {INCOMPLETE_NOTE}"
    return f"<NEW_TEXT_LLM_RESPONSE>\n{prepared}\n</NEW_TEXT_LLM_RESPONSE>\n\n{REMINDER}{note}"


# ---------------------------------------------------------------------------------------------------------------
# few-shot pairs: (R0 as the engine returns it, the lightly edited version as the target would read)

FEW_SHOT: list[tuple[str, str]] = [
    (  # speaker emotion
        "Okay, the user wants to know which emotion the speaker is expressing. Let me look at what was given. The "
        "description says the speaker is saying \"I can't believe you did that again\" and the emotion is listed "
        "as Anger. The gender is given as male, age 41.\n\n"
        "So the emotion is anger. The words fit too, since \"again\" suggests frustration with something that keeps "
        "happening. I should answer clearly and mention the cues.\n</think>\n\n"
        "The speaker is expressing **anger**. The metadata marks the emotion as anger, and the sentence \"I can't "
        "believe you did that again\" matches a frustrated, annoyed tone.",
        "Okay, the user wants to know which emotion the speaker is expressing. Let me listen to what is there. I "
        "hear the speaker saying \"I can't believe you did that again\" and the emotion sounds like Anger. The "
        "voice sounds male, around age 41.\n\n"
        "So the emotion is anger. The words fit too, since \"again\" suggests frustration with something that keeps "
        "happening. I should answer clearly and mention the cues.\n</think>\n\n"
        "The speaker is expressing **anger**. The voice sounds angry, and the sentence \"I can't believe you did "
        "that again\" matches a frustrated, annoyed tone.",
    ),
    (  # imagining what follows a car-engine start (keeps the unsupported 'diesel truck' guess)
        "The user asks what might happen next. The caption provided is \"a car engine starts and idles\", and the "
        "duration is 10 seconds. An engine that starts and then idles... the tag is about a vehicle. Since it "
        "idles, it is probably a diesel truck warming up.\n\n"
        "What comes next? Usually the driver puts it in gear and drives away, so we would hear the engine rev and "
        "the sound move away. Maybe a door closes first. Let me list a few possibilities.\n</think>\n\n"
        "After the engine starts and idles, the most likely next events are:\n"
        "1. A car door closing as the driver settles in.\n"
        "2. The engine revving as the vehicle pulls away.\n"
        "3. The sound fading as it drives off.\n\n"
        "Since the caption mentions idling, the vehicle is likely warming up first, which is typical of a diesel "
        "truck.",
        "The user asks what might happen next. What I hear is a car engine that starts and idles, and the clip "
        "lasts 10 seconds. An engine that starts and then idles... the sound is clearly a vehicle. Since it idles, "
        "it is probably a diesel truck warming up.\n\n"
        "What comes next? Usually the driver puts it in gear and drives away, so we would hear the engine rev and "
        "the sound move away. Maybe a door closes first. Let me list a few possibilities.\n</think>\n\n"
        "After the engine starts and idles, the most likely next events are:\n"
        "1. A car door closing as the driver settles in.\n"
        "2. The engine revving as the vehicle pulls away.\n"
        "3. The sound fading as it drives off.\n\n"
        "Since I hear it idling, the vehicle is likely warming up first, which is typical of a diesel truck.",
    ),
    (  # SNR question, cut off inside the reasoning (keeps the wrong '10 times' and stays incomplete)
        "Okay, the question is about the signal-to-noise ratio of this recording. The information says the SNR is "
        "5 dB and the noise type is listed as cafeteria babble. The transcript is \"Please bring the red folder to "
        "my office.\"\n\n"
        "An SNR of 5 dB is fairly low, meaning the noise is only a bit quieter than the speech. In power terms, "
        "5 dB means the speech is about 10 times stronger than the noise, so",
        "Okay, the question is about the signal-to-noise ratio of this recording. From what I hear, the SNR is "
        "around 5 dB and the noise sounds like cafeteria babble. The speaker says \"Please bring the red folder to "
        "my office.\"\n\n"
        "An SNR of 5 dB is fairly low, meaning the noise is only a bit quieter than the speech. In power terms, "
        "5 dB means the speech is about 10 times stronger than the noise, so",
    ),
    (  # spoof-origin summary, with an audio-tag mention to replace
        "The user wants a short summary of where this speech comes from. According to the given text, it is "
        "labeled spoof, and the spoof algorithm description is \"voice conversion with a neural vocoder\". The "
        "speech starts right after the <start_audio> tag and lasts 4s.\n\n"
        "So this is not a real recording of the person; it was generated. I should summarize that briefly.\n"
        "</think>\n\n"
        "**Summary:** This speech is not genuine. The provided information indicates a spoof created by voice "
        "conversion with a neural vocoder, so the voice was produced by converting another speaker's recording "
        "rather than recorded directly.",
        "The user wants a short summary of where this speech comes from. From listening, it sounds like a spoof, "
        "and the artifacts suggest \"voice conversion with a neural vocoder\". The speech starts right at the "
        "beginning of the audio and lasts 4s.\n\n"
        "So this is not a real recording of the person; it was generated. I should summarize that briefly.\n"
        "</think>\n\n"
        "**Summary:** This speech is not genuine. What I hear indicates a spoof created by voice conversion with a "
        "neural vocoder, so the voice was produced by converting another speaker's recording rather than recorded "
        "directly.",
    ),
]


def few_shot_messages() -> list[dict]:
    """The four pairs as chat turns: user = prepared R0 + reminder, assistant = <answer>edited R0</answer>."""
    return [dict(t) for t in _FEW_SHOT_TURNS]


def _build_few_shot() -> tuple[dict, ...]:
    turns: list[dict] = []
    for original, edited in FEW_SHOT:
        prepared, complete = prepare_rephrase_input(original)
        edited_prepared, _ = prepare_rephrase_input(edited)  # an incomplete one stops where the original stops
        turns.append({"role": "user", "content": user_turn(prepared, complete)})
        turns.append({"role": "assistant", "content": f"<answer>\n{edited_prepared}\n</answer>"})
    return tuple(turns)


_FEW_SHOT_TURNS = _build_few_shot()


def rephrase_messages(r0: str) -> tuple[list[dict], bool]:
    """Chat messages for rephrasing one R0: system prompt, the few-shot turns, then the user turn.

    Returns:
        `(messages, complete)`; pass `complete` to `parse_rephrase`.
    """
    prepared, complete = prepare_rephrase_input(r0)
    messages = [{"role": "system", "content": REPHRASE_SYSTEM_PROMPT}, *few_shot_messages()]
    messages.append({"role": "user", "content": user_turn(prepared, complete)})
    return messages, complete


# ---------------------------------------------------------------------------------------------------------------
# output parsing


@dataclass(frozen=True)
class RephraseResult:
    """Parsed rephraser output.

    Attributes:
        answer: R in target form (`reasoning\\n</think>\\n\\nanswer`, or truncated reasoning without `</think>`);
            None when the output had no usable answer block.
        has_answer_tag: The output held a closed `<answer>...</answer>` block after the rephraser's own reasoning.
        problem: Why `answer` is None although the tag was there (empty, or the reasoning tag was lost).
    """

    answer: str | None
    has_answer_tag: bool
    problem: str | None = None


def parse_rephrase(output: str, complete: bool) -> RephraseResult:
    """Extract R from the rephraser's output.

    Takes the text after the last `<answer>` (looking only after the rephraser's own `</think>`, if any) up to the
    next `</answer>`; renames the tags back; drops the leading `<think>` (it lives in the chat template). A
    complete R0 keeps its `</think>` (normalised to `reasoning\\n</think>\\n\\nanswer`); an incomplete one is cut
    at any `</think>` the rephraser added, so truncated reasoning stays truncated. No closed block -> answer None,
    has_answer_tag False: the rephraser's own output is never a target (D19).

    Args:
        output: The rephraser's generated text (its own reasoning, `</think>`, then the answer block).
        complete: From `prepare_rephrase_input` / `rephrase_messages`: R0 closed its reasoning.
    """
    region = output.split(END_THINK, 1)[1] if END_THINK in output else output
    start = region.rfind(ANSWER)
    end = region.find(END_ANSWER, start) if start >= 0 else -1
    if end < 0:
        return RephraseResult(None, False)
    body = region[start + len(ANSWER):end]
    body = body.replace(REASONING, THINK).replace(END_REASONING, END_THINK)
    body = body.replace(TEXT_ANSWER, ANSWER).replace(END_TEXT_ANSWER, END_ANSWER).strip()
    if body.startswith(THINK):
        body = body[len(THINK):].lstrip()
    if complete:
        if END_THINK not in body:
            return RephraseResult(None, True, "the rephraser dropped the closing reasoning tag of a complete R0")
        reasoning, _, after = body.partition(END_THINK)
        body = reasoning.rstrip() + f"\n{END_THINK}" + (f"\n\n{after.strip()}" if after.strip() else "")
        if not reasoning.strip():
            return RephraseResult(None, True, "empty reasoning")
    else:
        body = body.split(END_THINK, 1)[0].rstrip()
        if not body:
            return RephraseResult(None, True, "empty answer block")
    return RephraseResult(body, True)
