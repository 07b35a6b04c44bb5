"""The GPU check's engine stage on CPU (it starts vLLM, so it lives with the integration tests)."""

from __future__ import annotations

from tests.unit.test_gpu_check import load_gpu_check


def test_the_llm_stage_measures_the_serving_engine_on_the_tiny_model():
    """The GPU stage's code on CPU: vLLM's AsyncLLM with prompt embeddings and the thinking budget."""
    from alarm.tiny import ensure_tiny

    rows = load_gpu_check().llm_throughput(ensure_tiny("qwen3"), "float32", seqs=(1, 2), max_tokens=16)
    assert [r.case for r in rows] == ["vLLM, prompt_embeds + budget, 1 seqs", "vLLM, prompt_embeds + budget, 2 seqs"]
    assert all(r.status == "ok" and r.value.endswith("tokens/s") and not r.value.startswith("0 ") for r in rows)
