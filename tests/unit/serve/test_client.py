"""`python -m alarm.client` output: the reasoning (stderr) and the answer (stdout) stream as they come, and the
reasoning ends with a line break before the answer, so the two never run together on one terminal."""

from __future__ import annotations

import io
from contextlib import contextmanager, redirect_stderr, redirect_stdout

import pytest

import alarm.client as cli
from services.serve._proto.alarm.v1 import alarm_pb2 as pb


def events(reasoning: list[str], answer: list[str]) -> list[pb.GenerateStreamResponse]:
    final = pb.GenerateResponse(answer="".join(answer), reasoning="".join(reasoning), finish_reason=pb.STOP,
                                request_id="r-1")
    return ([pb.GenerateStreamResponse(reasoning_delta=t) for t in reasoning]
            + [pb.GenerateStreamResponse(answer_delta=t) for t in answer] + [pb.GenerateStreamResponse(final=final)])


@contextmanager
def terminal():
    """stdout and stderr going to one terminal, as when the command runs in a shell."""
    screen = io.StringIO()
    with redirect_stdout(screen), redirect_stderr(screen):
        yield screen


@pytest.mark.parametrize("reasoning, answer, shown", [
    (["I hear", " a tone."], ["A 440 Hz", " tone."], "I hear a tone.\nA 440 Hz tone.\n"),
    (["A tone.\n"], ["Yes."], "A tone.\nYes.\n"),  # already ends its line: no blank line
    ([], ["Yes."], "Yes.\n"),  # without --reasoning
    (["Still thinking"], [], "Still thinking\n\n"),  # out of tokens while reasoning: the line is closed
])
def test_reasoning_and_answer_never_run_together(reasoning, answer, shown):
    with terminal() as screen:
        final = cli.show(events(reasoning, answer))
    assert screen.getvalue() == shown and final.request_id == "r-1"


def test_the_command_prints_them_apart(monkeypatch, tmp_path):
    class Client:
        def __init__(self, *a, **k):
            pass

        def stream(self, *a, **k):
            self.kwargs = k
            return iter(events(["The clip has", " one tone."], ["A tone."]))

        def close(self):
            pass

    monkeypatch.setattr(cli, "AlarmClient", Client)
    clip = tmp_path / "a.wav"
    clip.write_bytes(b"RIFF")
    with terminal() as screen:
        assert cli.main([str(clip), "--prompt", "What is it?", "--reasoning"]) == 0
    lines = screen.getvalue().splitlines()
    assert lines[:2] == ["The clip has one tone.", "A tone."] and lines[2].startswith("[STOP;")


@pytest.mark.parametrize("flags, no_thinking", [([], False), (["--no-thinking"], True)])
def test_no_thinking_reaches_the_request(monkeypatch, tmp_path, flags, no_thinking):
    sent = []

    class Client:
        def __init__(self, *a, **k):
            pass

        def stream(self, *a, **k):
            sent.append(k)
            return iter(events([], ["A tone."]))

        def close(self):
            pass

    monkeypatch.setattr(cli, "AlarmClient", Client)
    clip = tmp_path / "a.wav"
    clip.write_bytes(b"RIFF")
    with terminal():
        assert cli.main([str(clip), "--prompt", "What is it?", *flags]) == 0
    assert sent[0]["no_thinking"] is no_thinking


def test_stop_strings_from_the_command_line_reach_the_request(monkeypatch):
    sent = {}

    class Client:
        def __init__(self, *a, **k):
            pass

        def stream(self, audio, prompt, **k):
            sent["request"] = cli.make_request(audio, prompt, **k)
            final = pb.GenerateResponse(answer="A", finish_reason=pb.STOP, stop_string="\n", request_id="r")
            return iter([pb.GenerateStreamResponse(answer_delta="A"), pb.GenerateStreamResponse(final=final)])

        def close(self):
            pass

    monkeypatch.setattr(cli, "AlarmClient", Client)
    with terminal() as screen:
        assert cli.main(["--prompt", "Hi", "--stop", "\n", "--stop", "Q:"]) == 0
    assert list(sent["request"].stop) == ["\n", "Q:"] and "[STOP at '\\n';" in screen.getvalue()
    assert list(cli.make_request(None, "Hi", stop="end").stop) == ["end"]  # one string is a list of one
