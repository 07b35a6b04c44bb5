"""Describers: the paper's format for every family, rounding, turns, pass-through, typo and VCTK fixes, errors."""

from __future__ import annotations

import pytest

from alarm.corpus.describe import FAMILIES, describe, fix_typos, fix_vctk, fmt_value, mmss, speaker_name
from alarm.errors import InvalidInput

# ---------------------------------------------------------------------------------------------------------------
# canonical strings (the ALARM paper's description format)


def test_esc50_label():
    assert describe({"category": "dog"}, 5.0, "labels") == "[00:00-00:05] |dog| (duration: 5s)"


def test_cameo_speaker_with_transcript():
    md = {"text": "I don't want to eat that.", "Emotion": "Disgust", "gender": "Female", "age": 29,
          "language": "English"}
    assert describe(md, 3.2, "speaker") == (
        "[00:00-00:03] I don't want to eat that. (duration: 3s, emotion: Disgust, gender: Female, age: 29, "
        "language: English)"
    )


def test_nsynth_midi_pitch():
    md = {"instrument_family_str": "bass", "instrument_family": 0, "instrument_source": 0,
          "instrument_source_str": "acoustic", "pitch": 24, "velocity": 100, "qualities": [0, 1],
          "qualities_str": ["dark", "fast_decay"]}
    assert describe(md, 4.0, "music") == (
        "[00:00-00:04] |bass musical note| (duration: 4s, instrument source: acoustic, midi pitch: 24 out of 127, "
        "velocity: 100 out of 127, qualities: dark, fast_decay)"
    )


def test_nisqa_quality():
    md = {"mos": 2.7500001, "noi": 1.8, "col": 3, "dis": 4.2, "loud": 3.1,
          "degradataion description": "VoIP-landline to mobile"}
    assert describe(md, 9.4, "quality") == (
        "[00:00-00:09] |Speech| (duration: 9s, mos: 2.75, noise level: 3.2/5, coloration level: 2/5, "
        "discontinuity level: 0.8/5, loudness: 3.1/5, degradation description: VoIP-landline to mobile)"
    )


def test_quality_levels_given_as_levels_pass_through():
    md = {"mos": 4, "noise level": "1.5/5", "coloration level": 2.25}
    assert describe(md, 2, "quality") == (
        "[00:00-00:02] |Speech| (duration: 2s, mos: 4, noise level: 1.5/5, coloration level: 2.25/5)"
    )


def test_asvspoof5_spoof():
    md = {"label": "spoof", "attack": "A11", "attack_description": "Text-To-Speech using GlowTTS"}
    assert describe(md, 2.2, "spoof") == (
        "[00:00-00:02] |Speech| (duration: 2s, is bona fide or spoof: spoof, spoof algorithm description: "
        "Text-To-Speech using GlowTTS, attack: A11)"
    )


def test_spoof_bona_fide_drops_placeholder_algorithm():
    assert describe({"key": "bonafide", "attack": "-"}, 3, "spoof") == (
        "[00:00-00:03] |Speech| (duration: 3s, is bona fide or spoof: bona fide)"
    )


def test_spoof_typo_fixed():
    md = {"label": "spoof", "spoof algorithm description": "Singning Voice Synthesis"}
    assert "spoof algorithm description: Singing Voice Synthesis" in describe(md, 3, "spoof")


# ---------------------------------------------------------------------------------------------------------------
# the other families


def test_transcript_librispeech():
    md = {"text": "HE HOPED THERE WOULD BE STEW FOR DINNER", "speaker_id": 1089, "chapter_id": 134686}
    assert describe(md, 10.435, "transcript") == (
        "[00:00-00:10] HE HOPED THERE WOULD BE STEW FOR DINNER (duration: 10s, speaker id: 1089, chapter id: 134686)"
    )


def test_caption_clotho_several_captions():
    md = {"caption_1": "Rain falls on a roof.", "caption_2": "Heavy rain on metal."}
    assert describe(md, 20.6, "caption") == (
        "[00:00-00:21] |Rain falls on a roof.; Heavy rain on metal.| (duration: 21s)"
    )
    assert describe({"caption": "A man speaks"}, 10, "caption") == "[00:00-00:10] |A man speaks| (duration: 10s)"


def test_audioset_label_list():
    assert describe({"labels": ["Speech", "Music"]}, 10, "labels") == "[00:00-00:10] |Speech, Music| (duration: 10s)"


def test_speaker_without_transcript():
    assert describe({"gender": "male", "accent": "Scottish"}, 4, "speaker") == (
        "[00:00-00:04] |Speech| (duration: 4s, gender: male, accent: Scottish)"
    )


def test_music_gtzan_and_caption():
    assert describe({"genre": "blues"}, 30.0, "music") == "[00:00-00:30] |Music| (duration: 30s, genre: blues)"
    assert describe({"caption": "Calm piano piece"}, 61, "music") == (
        "[00:00-01:01] |Calm piano piece| (duration: 61s)"
    )


@pytest.mark.parametrize("md,content", [
    ({"text": "hello"}, "hello"), ({"caption": "wind"}, "|wind|"), ({"label": "cat"}, "|cat|"), ({}, "|Audio|"),
])
def test_generic_content(md, content):
    assert describe(md, 1, "generic") == f"[00:00-00:01] {content} (duration: 1s)"


def test_every_family_describes_something():
    md = {"text": "hi", "caption": "c", "label": "l", "turns": [{"speaker": "a", "start": 0, "end": 1}]}
    for family in FAMILIES:
        spoof = {"label": "spoof"} if family == "spoof" else {}
        assert describe({**md, **spoof}, 1, family).startswith("[00:00-00:01")


# ---------------------------------------------------------------------------------------------------------------
# rounding, values, pass-through


@pytest.mark.parametrize("seconds,expected", [(2.49, "00:02"), (2.5, "00:03"), (59.5, "01:00"), (0, "00:00"),
                                              (125.2, "02:05")])
def test_mmss_rounds_half_up(seconds, expected):
    assert mmss(seconds) == expected


def test_duration_rounding_and_tiny_clips():
    assert describe({"label": "x"}, 4.5, "labels").startswith("[00:00-00:05] |x| (duration: 5s")
    assert describe({"label": "x"}, 0.3, "labels") == "[00:00-00:01] |x| (duration: 1s)"


def test_unknown_fields_pass_through_in_order_with_values_rendered():
    md = {"label": "bird", "Zeta": 2.7500001, "alpha_beta": ["a", "", "b"], "flag": True, "none": None, "nan":
          float("nan"), "empty": "", "count": 3.0, "nested": {"X": 1}, "id": "secret-1", "audio": "/x.wav"}
    assert describe(md, 1, "labels") == (
        "[00:00-00:01] |bird| (duration: 1s, zeta: 2.75, alpha beta: a, b, flag: yes, count: 3, nested: x: 1)"
    )


def test_fmt_value():
    assert fmt_value(0.1 + 0.2) == "0.3" and fmt_value(12) == "12" and fmt_value([]) is None
    assert fmt_value("  two   words ") == "two words" and fmt_value("-") is None


def test_typos_fixed_in_keys_and_labels_not_in_transcripts():
    assert fix_typos("Singning Voice Synthesis") == "Singing Voice Synthesis"
    assert describe({"label": "singning", "degradataion": "x"}, 1, "labels") == (
        "[00:00-00:01] |singing| (duration: 1s, degradation: x)"
    )
    assert describe({"text": "she was singning"}, 1, "transcript").startswith("[00:00-00:01] she was singning")


def test_metadata_not_modified():
    md = {"Label": "dog", "turns": None}
    before = dict(md)
    describe(md, 1, "labels")
    assert md == before


# ---------------------------------------------------------------------------------------------------------------
# turns


def test_multi_turn_dialogue():
    md = {"turns": [
        {"speaker": "A", "start": 0, "end": 7.2, "text": "Did you see the game?", "emotion": "happy"},
        {"speaker": "B", "start": 7.2, "end": 19.4, "text": "I missed it.", "sentiment": "negative",
         "speech_act": "inform"},
        {"speaker": "A", "start": 19.4, "end": 21, "text": "Too bad."},
    ], "topic": "sports"}
    assert describe(md, 99, "turns") == (
        "[00:00-00:07, the first speaker] Did you see the game? (emotion: happy) "
        "[00:07-00:19, the second speaker] I missed it. (sentiment: negative, speech act: inform) "
        "[00:19-00:21, the first speaker] Too bad. (duration: 21s, topic: sports)"
    )


def test_turn_without_text_reads_speech():
    out = describe({"turns": [{"speaker": 1, "start": "0.5", "end": "3"}]}, 3, "turns")
    assert out == "[00:01-00:03, the first speaker] |Speech| (duration: 3s)"


def test_speaker_ordinals():
    assert [speaker_name(i) for i in (0, 1, 9, 10, 11, 12, 20, 21)] == [
        "the first speaker", "the second speaker", "the tenth speaker", "the 11th speaker", "the 12th speaker",
        "the 13th speaker", "the 21st speaker", "the 22nd speaker",
    ]


@pytest.mark.parametrize("turns,field", [
    (None, "metadata.turns"),
    ([], "metadata.turns"),
    (["text"], "turns[0]"),
    ([{"speaker": "a", "end": 1}], "turns[0].start"),
    ([{"speaker": "a", "start": 0}], "turns[0].end"),
    ([{"start": 0, "end": 1}], "turns[0].speaker"),
    ([{"speaker": "a", "start": 0, "end": 1}, {"speaker": "b", "start": 3, "end": 2}], "turns[1]"),
    ([{"speaker": "a", "start": "soon", "end": 1}], "turns[0].start"),
    ([{"speaker": "a", "start": 0, "end": float("nan")}], "turns[0].end"),
    ([{"speaker": "a", "start": -1, "end": 1}], "turns[0]"),
])
def test_malformed_turns_raise_naming_the_field(turns, field):
    with pytest.raises(InvalidInput, match=field.replace("[", r"\[").replace("]", r"\]")):
        describe({"turns": turns}, 1, "turns")


# ---------------------------------------------------------------------------------------------------------------
# errors and fixes


@pytest.mark.parametrize("family,md", [("transcript", {"speaker": "x"}), ("caption", {"label": "x"}),
                                       ("labels", {"caption": "x"}), ("spoof", {"label": "maybe"}),
                                       ("spoof", {})])
def test_missing_required_field_raises(family, md):
    with pytest.raises(InvalidInput):
        describe(md, 1, family)


@pytest.mark.parametrize("md", [{"pitch": 130}, {"pitch": 24.5}, {"velocity": "loud"}])
def test_bad_midi_values_raise(md):
    with pytest.raises(InvalidInput, match="metadata"):
        describe(md, 1, "music")


@pytest.mark.parametrize("duration", [-1, float("nan"), float("inf"), "long", None])
def test_bad_duration_raises(duration):
    with pytest.raises(InvalidInput, match="duration_s"):
        describe({"label": "x"}, duration, "labels")


def test_bad_family_and_metadata():
    with pytest.raises(ValueError, match="valid families"):
        describe({}, 1, "podcast")
    with pytest.raises(InvalidInput, match="JSON object"):
        describe(["x"], 1, "generic")


def test_vctk_fixer_undoes_the_column_shift():
    md = {"text": "Please call Stella.", "age": "23", "gender": "Male", "accent": "F",
          "region": "English Southern England"}
    assert fix_vctk(md) == {"text": "Please call Stella.", "age": "23", "gender": "Female", "accent": "English",
                            "region": "Southern England"}
    assert describe(md, 2.4, "speaker", source="vctk") == (
        "[00:00-00:02] Please call Stella. (duration: 2s, age: 23, gender: Female, accent: English, "
        "region: Southern England)"
    )
    assert "accent: F" in describe(md, 2.4, "speaker", source="noisy_vctk")  # only exact or "vctk_*" names
    assert "accent: English" in describe(md, 2.4, "speaker", source="vctk-16k")
    assert "accent: F" in describe(md, 2.4, "speaker")  # no source: no fixer


def test_vctk_fixer_leaves_clean_or_unknown_rows_alone():
    clean = {"gender": "Female", "accent": "Scottish", "region": "Edinburgh"}
    assert fix_vctk(clean) == clean
    odd = {"accent": "M", "region": "Somewhere Else"}  # not a known accent: do not guess
    assert fix_vctk(odd) == odd
    only_accent = {"accent": "M", "region": "American"}
    assert fix_vctk(only_accent) == {"gender": "Male", "accent": "American"}
