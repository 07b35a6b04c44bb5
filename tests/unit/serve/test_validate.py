"""Request validation at the edge: every field checked with a message naming it, the engines' limits included,
before any audio is decoded or any model runs; the same checks for a request built by another protocol."""

from __future__ import annotations

import pytest

from alarm.errors import InvalidInput
from services.serve.validate import RequestSpec, Undecodable, parse_request, request_id_of, validate_request
from tests.unit.serve import CFG, req, wav


def test_defaults_resolve_from_the_preset():
    p = parse_request(req(audio_bytes=wav()), CFG, "r1")
    d = CFG.defaults
    assert (p.llm.max_tokens, p.llm.max_thinking_tokens) == (None, d.max_thinking_tokens)
    assert (p.llm.temperature, p.llm.top_p, p.llm.top_k, p.llm.seed) == (d.temperature, d.top_p, d.top_k, None)
    assert p.llm.system == CFG.model.system_prompt and p.adapters == (CFG.default_adapter,)
    assert p.audio.sample_rate == 16000 and abs(p.audio.duration_s - 1.0) < 1e-6 and p.llm.request_id == "r1"


def test_explicit_values_and_text_only():
    r = req(max_tokens=7, max_thinking_tokens=-1, system_prompt="", adapter_id="tiny-b",
            sampling={"temperature": 0.0, "top_p": 1.0, "top_k": 0, "seed": 3})
    p = parse_request(r, CFG, "r")
    assert p.audio is None and p.adapters == ()  # text only: no adapter runs
    assert (p.llm.max_tokens, p.llm.max_thinking_tokens, p.llm.system) == (7, -1, None)
    assert (p.llm.temperature, p.llm.top_p, p.llm.top_k, p.llm.seed) == (0.0, 1.0, 0, 3)
    e = parse_request(req(audio_bytes=wav(), ensemble_adapter_ids=["tiny", "tiny-b"]), CFG, "r")
    assert e.adapters == ("tiny", "tiny-b")
    assert p.llm.stop == () and parse_request(req(stop=["\n\n", "Q:"]), CFG, "r").llm.stop == ("\n\n", "Q:")


def test_no_thinking_is_a_thinking_budget_of_0():
    assert parse_request(req(no_thinking=True), CFG, "r").llm.max_thinking_tokens == 0
    spec = RequestSpec(prompt="q", no_thinking=True)
    assert validate_request(spec, CFG, "r").llm.max_thinking_tokens == 0
    assert parse_request(req(), CFG, "r").llm.max_thinking_tokens == CFG.defaults.max_thinking_tokens


@pytest.mark.parametrize("fields, needle", [
    (dict(prompt=""), "prompt is empty"),
    (dict(prompt="x" * 20000), "limit of 16384"),
    (dict(max_thinking_tokens=-7), "max_thinking_tokens"),
    (dict(max_tokens=-1), "max_tokens"),
    (dict(no_thinking=True, max_thinking_tokens=64), "leave max_thinking_tokens 0, found 64"),
    (dict(no_thinking=True, max_thinking_tokens=-1), "leave max_thinking_tokens 0"),
    (dict(sampling={"temperature": float("nan")}), "temperature"),
    (dict(sampling={"top_p": 1.5}), "top_p"),
    (dict(sampling={"top_k": -1}), "top_k"),
    (dict(sampling={"temperature": 2.5}), "sampling.temperature must be a number in [0, 2] (0 = greedy), found 2.5"),
    (dict(sampling={"temperature": 1e30}), "sampling.temperature must be a number in [0, 2]"),
    (dict(sampling={"seed": -1}), "sampling.seed must be in [0, 9223372036854775807] or unset, found -1"),
    (dict(audio_bytes=wav(), ensemble_adapter_ids=["tiny", "tiny"]), "distinct"),
    (dict(audio_bytes=wav(), ensemble_adapter_ids=["a", "b", "c", "d", "e"]), "limit of 4"),
    (dict(ensemble_adapter_ids=["tiny", "tiny-b"]), "needs audio"),
    (dict(audio_uri="http://example.com/a.wav"), "audio_uri is off"),
    (dict(audio_bytes=b"\x00" * 64), "cannot decode"),
    (dict(audio_bytes=wav(61.0, rate=8000)), "60"),
    (dict(stop=["a", "b", "c", "d", "e"]), "stop holds 5 strings; send at most 4"),
    (dict(stop=["ok", ""]), "stop[1] must be a string of 1 to 64 characters, found 0 characters"),
    (dict(stop=["x" * 65]), "stop[0] must be a string of 1 to 64 characters, found 65 characters"),
])
def test_bad_requests_name_the_field(fields, needle):
    with pytest.raises(InvalidInput) as e:
        parse_request(req(**fields), CFG, "r")
    assert needle in str(e.value)


def test_request_ids():
    assert request_id_of(req(request_id="abc"), "proxy") == "abc"
    assert request_id_of(req(), "proxy") == "proxy"
    assert len(request_id_of(req(), None)) == 32
    for bad in ("x" * 129, "tab\there", "é"):
        with pytest.raises(InvalidInput):
            request_id_of(req(request_id=bad), None)


def test_engine_limits_are_checked_before_the_audio_is_decoded(monkeypatch):
    import services.serve.validate as validate

    monkeypatch.setattr(validate, "load_audio", lambda *a, **k: pytest.fail("decoded a request it then refused"))
    with pytest.raises(InvalidInput, match="temperature"):
        parse_request(req(audio_bytes=wav(), sampling={"temperature": 2.5}), CFG, "r")


def test_the_server_defaults_pass_the_engine_limits():
    p = parse_request(req(), CFG, "r")
    assert p.llm.temperature <= 2 and 0 < p.llm.top_p <= 1


def test_another_protocol_gets_the_same_checks_with_its_own_field_names():
    spec = RequestSpec(prompt="What is it?", temperature=3.0, audio_bytes=wav())
    with pytest.raises(InvalidInput, match=r"^temperature must be a number in \[0, 2\]"):
        validate_request(spec, CFG, "r", sampling_prefix="")
    p = validate_request(RequestSpec(prompt="What is it?", audio_bytes=wav(), top_k=5), CFG, "r")
    assert (p.llm.top_k, p.adapters) == (5, (CFG.default_adapter,))
    with pytest.raises(InvalidInput, match="either audio_bytes or audio_uri"):
        validate_request(RequestSpec(prompt="x", audio_bytes=wav(), audio_uri="s3://b/a.wav"), CFG, "r")


def test_bytes_that_did_not_parse_are_invalid_input():
    bad = Undecodable("the request is not a valid alarm.v1.GenerateRequest (String field had bad UTF-8)")
    assert request_id_of(bad, "proxy-id") == "proxy-id"
    with pytest.raises(InvalidInput, match="bad UTF-8"):
        parse_request(bad, CFG, "proxy-id")
