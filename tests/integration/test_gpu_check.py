"""The GPU check's engine stage on CPU (it starts vLLM, so it lives with the integration tests)."""

from __future__ import annotations

import socket

import pytest

from tests.unit.test_gpu_check import load_gpu_check


def test_the_llm_stage_measures_the_serving_engine_on_the_tiny_model():
    """The GPU stage's code on CPU: vLLM's AsyncLLM with prompt embeddings and the thinking budget."""
    from alarm.tiny import ensure_tiny

    rows = load_gpu_check().llm_throughput(ensure_tiny("qwen3"), "float32", seqs=(1, 2), max_tokens=16)
    assert [r.case for r in rows] == ["vLLM, prompt_embeds + budget, 1 seqs", "vLLM, prompt_embeds + budget, 2 seqs"]
    assert all(r.status == "ok" and r.value.endswith("tokens/s") and not r.value.startswith("0 ") for r in rows)


@pytest.mark.slow
def test_the_serve_stage_starts_the_server_as_a_user_does_and_counts_each_request():
    """The GPU stage's code on CPU: `python -m alarm.serve` in its own process group with its own Ray, SERVING,
    concurrent requests over gRPC, every one OK, then SIGTERM leaves nothing listening."""
    rows = load_gpu_check().serve_requests("tiny", [], 4, port=9430, budget_s=330, clip_s=2.0, max_tokens=8)
    assert [r.case for r in rows] == ["tiny app, python -m alarm.serve to SERVING",
                                      "4 concurrent gRPC requests, 2 s clips"], rows
    assert all(r.status == "ok" for r in rows) and rows[1].value.startswith("OK 4;"), rows
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", 9430)) != 0, "the server still listens after SIGTERM"
