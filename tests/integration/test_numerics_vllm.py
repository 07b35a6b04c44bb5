"""vLLM in portable numerics (`alarm.numerics`): the engine loads vLLM's AVX2 kernels where torch runs its
AVX2 ones, and greedy decoding gives the same tokens and log-probabilities, bit for bit, on an AVX2-only CPU
(here: what MKL sees with `MKL_ENABLE_INSTRUCTIONS=AVX2`). Each run is its own process: kernels are chosen
once per process."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from alarm import numerics
from alarm.tiny import ensure_tiny

DECODE = """
import hashlib, json, sys
if __name__ == "__main__":
    from alarm import numerics
    if sys.argv[2] == "portable":
        numerics.make_portable()
    from services.engines.llm import _vllm_kernel_libs, prepare_cpu
    prepare_cpu()
    from vllm import LLM, SamplingParams
    llm = LLM(model=sys.argv[1], tokenizer=sys.argv[1], dtype="float32", max_model_len=256, enforce_eager=True,
              seed=0)
    outs = llm.generate(["Describe the sound.", "Is the tone high?", "How many beeps?"],
                        SamplingParams(max_tokens=24, temperature=0, logprobs=3), use_tqdm=False)
    h = hashlib.sha256()
    for o in outs:
        c = o.outputs[0]
        h.update(repr([(t, sorted((k, v.logprob) for k, v in lp.items())) for t, lp in zip(c.token_ids, c.logprobs)])
                 .encode())
    print("RESULT " + json.dumps({"digest": h.hexdigest(), "kernels": sorted(_vllm_kernel_libs())}))
"""


# slow: three vLLM engines start (about a minute and a half on 2 cores)
FLAGS = numerics.cpu_flags()
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif("avx2" not in FLAGS, reason="portable numerics pin x86-64 CPUs with AVX2")]


def run(code: str, *args: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in numerics.PORTABLE and k != "MKL_ENABLE_INSTRUCTIONS"}
    return subprocess.run([sys.executable, "-c", code, *args], env={**clean, "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
                          **env}, capture_output=True, text=True, timeout=300)


def decoded(model: str, mode: str, **env: str) -> dict:
    done = run(DECODE, model, mode, **env)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(next(line for line in done.stdout.splitlines() if line.startswith("RESULT "))[7:])


def test_greedy_decoding_is_the_same_on_an_avx2_cpu_in_portable_mode():
    model = str(ensure_tiny("qwen3"))
    here = decoded(model, "portable")
    assert here["kernels"] == ["_C_AVX2"]
    assert decoded(model, "portable", MKL_ENABLE_INSTRUCTIONS="AVX2") == here
    if "avx512f" in FLAGS:  # vLLM's own choice on this CPU, and what it computes
        native = decoded(model, "native")
        assert native["kernels"] != ["_C_AVX2"] and native["digest"] != here["digest"]


def test_kernels_loaded_before_the_switch_are_refused():
    if "avx512f" not in FLAGS:
        pytest.skip("on an AVX2-only CPU vLLM's own kernels are the AVX2 ones")
    done = run("import os, vllm._custom_ops; os.environ['ATEN_CPU_CAPABILITY'] = 'avx2'; "
               "from services.engines.llm import vllm_kernels; vllm_kernels()")
    assert done.returncode != 0 and "set ATEN_CPU_CAPABILITY=avx2 before vLLM is imported" in done.stderr
