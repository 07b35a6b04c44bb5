"""Which asynchronous corpus engine a machine gets (services.engines.stepped.async_corpus_engine)."""

from __future__ import annotations

import pytest

from services.engines import stepped


@pytest.mark.parametrize("value, inproc", [("0", True), ("false", True), ("1", False), ("true", False)])
def test_the_environment_says_where_the_engine_core_runs(monkeypatch, value, inproc):
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", value)
    assert stepped.in_process_core() is inproc


def test_a_cpu_machine_runs_the_core_in_process_unless_told_otherwise(monkeypatch):
    monkeypatch.delenv("VLLM_ENABLE_V1_MULTIPROCESSING", raising=False)
    monkeypatch.setattr(stepped, "cpu_only", lambda: True)
    assert stepped.in_process_core()
    monkeypatch.delenv("VLLM_ENABLE_V1_MULTIPROCESSING", raising=False)
    monkeypatch.setattr(stepped, "cpu_only", lambda: False)
    assert not stepped.in_process_core()  # vLLM's default: the core in its own process


def test_the_engine_follows_the_core(monkeypatch):
    built = []
    monkeypatch.setattr(stepped, "SteppedEngine", lambda cfg, stat_loggers=None: built.append("stepped") or "s")
    from services.engines import vllm_async

    monkeypatch.setattr(vllm_async.VLLMAsyncBackend, "from_config",
                        classmethod(lambda cls, cfg, stat_loggers=None: built.append("asyncllm") or "a"))
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    assert stepped.async_corpus_engine(object()) == "s"
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "1")
    assert stepped.async_corpus_engine(object()) == "a"
    assert built == ["stepped", "asyncllm"]
