"""vLLM's engine core in this process, stepped by one thread: the corpus workers' asynchronous engine
(`alarm.corpus.rows.AsyncEngine`) where the engine core runs in-process (`VLLM_ENABLE_V1_MULTIPROCESSING=0`, the
CPU default).

    engine = SteppedEngine(cfg.engine)                      # from any thread; the stepping thread starts here
    completion = await engine.complete(engine.render(messages), 512, cfg.generate.sampling)

AsyncLLM always runs its engine core in a second process and moves every step's outputs over a socket; on a CPU
machine that process competes with the model for the cores (the async pipeline measured about a third of the batch
engine's rows/s on 2 cores). Here one thread owns vLLM's `LLMEngine` (its in-process core, as `vllm.LLM` runs it):
it adds the requests callers queue, steps the engine while any is unfinished, and hands each finished request to
the event loop that awaits it. Requests from every caller batch together continuously, as in AsyncLLM, so a row's
next pass starts as soon as its last one ends. Prompts are rendered and sampled as `services.engines.llm.VLLMEngine`
runs them, so greedy decoding writes the same text on either engine.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import logging
import os
import queue
import threading

from alarm.checkpoints import resolve_checkpoint
from alarm.config import EngineConfig, SamplingConfig
from alarm.errors import EngineDead
from alarm.llm.thinking import Completion
from services.engines.llm import CPU_ENV, ChatText, completion_of, cpu_only, engine_args, prepare_cpu

log = logging.getLogger(__name__)


def in_process_core() -> bool:
    """Whether vLLM runs its engine core in this process (CPU machines by default, or as the environment says)."""
    if cpu_only():
        for k, v in CPU_ENV.items():
            os.environ.setdefault(k, v)
    return os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING", "1").strip().lower() in ("0", "false")


class SteppedEngine(ChatText):
    """`LLMEngine` stepped by its own thread, awaited from event loops.

    Args:
        cfg: The engine settings (the same keywords `VLLMEngine` passes to `vllm.LLM`).
        stat_loggers: vLLM stat logger factories (`services.engines.stats.ray_stat_loggers()` inside Ray); None =
            the engine keeps no statistics.
    """

    def __init__(self, cfg: EngineConfig, stat_loggers: list | None = None):
        if cpu_only():
            prepare_cpu()
        from vllm.engine.arg_utils import EngineArgs
        from vllm.usage.usage_lib import UsageContext
        from vllm.v1.engine.llm_engine import LLMEngine

        folder = resolve_checkpoint(cfg.checkpoint, cfg.revision, expect=["config.json"])
        self.cfg, self.max_model_len = cfg, cfg.max_model_len
        self.engine = LLMEngine.from_engine_args(
            EngineArgs(model=str(folder), tokenizer=str(folder), dtype=cfg.dtype,
                       disable_log_stats=stat_loggers is None, **engine_args(cfg)),
            usage_context=UsageContext.LLM_CLASS, stat_loggers=stat_loggers)
        self.tok = self.engine.get_tokenizer()
        # ("add", id, prompt, params, loop, future) or ("abort", id), from callers to the stepping thread
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._waiting: dict[str, tuple[asyncio.AbstractEventLoop, asyncio.Future]] = {}
        self._ids = itertools.count()
        self._wake, self._closing = threading.Event(), threading.Event()
        self._dead: str | None = None
        self._ending, self._ended = threading.Lock(), False  # set once, by the thread, as it stops taking requests
        self._thread = threading.Thread(target=self._run, name="vllm-steps", daemon=True)
        self._thread.start()

    async def complete(self, prompt: str, max_tokens: int, sampling: SamplingConfig) -> Completion:
        """One text prompt to its end, as `VLLMEngine.generate` runs it (same parameters and caps): a prompt that
        cannot fit `max_model_len` gets finish_reason "error". Raises EngineDead when the engine died."""
        params = self.final_params(prompt, max_tokens, sampling)
        if isinstance(params, Completion):
            return params
        loop, rid = asyncio.get_running_loop(), str(next(self._ids))
        future = loop.create_future()
        with self._ending:  # the thread's last drain takes this lock too: a request is either drained or refused
            if self._ended or self._closing.is_set():
                raise EngineDead(self._dead or "the engine is closed")
            self._post(("add", rid, prompt, params, loop, future))
        try:
            return completion_of(await future)
        except asyncio.CancelledError:
            self._post(("abort", rid))
            raise

    def num_unfinished(self) -> int:
        """Requests added and not yet finished (running or waiting in the engine)."""
        return len(self._waiting)

    async def aclose(self) -> None:
        """Abort what is in flight (its callers get EngineDead), stop the thread, and free the engine."""
        self._closing.set()
        self._wake.set()
        await asyncio.to_thread(self._thread.join, 25)  # under CorpusLLMStage.__del__'s 30 s
        engine, self.engine = self.engine, None
        if engine is not None and not self._thread.is_alive():
            engine.engine_core.shutdown()  # the in-process core: its executor and worker free the model and cache
            del engine
            gc.collect()  # before a rebuild allocates another model beside this one

    # -- the stepping thread -----------------------------------------------------------------------------------

    def _post(self, item: tuple) -> None:
        self._inbox.put(item)
        self._wake.set()

    def _run(self) -> None:
        try:
            while not self._closing.is_set():
                self._take()
                if self.engine.has_unfinished_requests():
                    for out in self.engine.step():
                        if out.finished:
                            self._settle(out.request_id, result=out)
                else:
                    self._wake.wait(1.0)
                    self._wake.clear()  # then _take: a request posted after the clear is still in the inbox
            self._fail_all("the engine was closed while this request was in flight")
        except BaseException as e:  # the engine core failed: it cannot be stepped again
            log.exception("the vLLM engine died")
            self._dead = f"the vLLM engine died: {type(e).__name__}: {e}"
            self._fail_all(self._dead)

    def _take(self) -> None:
        """Add or abort what callers posted (only this thread touches the engine)."""
        for item in self._posted():
            if item[0] == "abort":
                if self._waiting.pop(item[1], None) is not None:
                    self.engine.abort_request([item[1]])
                continue
            _, rid, prompt, params, loop, future = item
            self._waiting[rid] = (loop, future)
            try:
                (engine_input,) = self.engine.renderer.render_cmpl([{"prompt": prompt}])  # as LLM.generate does
                self.engine.add_request(rid, engine_input, params)
            except Exception as e:  # this request is wrong, not the engine
                self._settle(rid, error=e)

    def _posted(self):
        """What callers have posted so far, oldest first, taken out of the inbox."""
        while True:
            try:
                yield self._inbox.get_nowait()
            except queue.Empty:
                return

    def _settle(self, rid: str, result=None, error: BaseException | None = None) -> None:
        entry = self._waiting.pop(rid, None)
        if entry is None:  # aborted meanwhile
            return
        loop, future = entry

        def settle() -> None:
            if not future.done():
                future.set_exception(error) if error is not None else future.set_result(result)

        try:
            loop.call_soon_threadsafe(settle)
        except RuntimeError:  # the caller's loop is closed: nobody awaits this request
            pass

    def _fail_all(self, why: str) -> None:
        """The thread's end: refuse new requests, then fail every one in flight or still in the inbox."""
        with self._ending:
            self._ended = True
        for rid in list(self._waiting):
            self._settle(rid, error=EngineDead(why))
        for item in self._posted():
            if item[0] == "add":
                self._waiting[item[1]] = (item[4], item[5])
                self._settle(item[1], error=EngineDead(why))


def async_corpus_engine(cfg: EngineConfig, stat_loggers: list | None = None):
    """The asynchronous corpus engine for this machine: a SteppedEngine where vLLM's engine core runs in-process,
    else AsyncLLM (its core in a second process, which keeps a GPU busy while this one handles outputs)."""
    if in_process_core():
        return SteppedEngine(cfg, stat_loggers=stat_loggers)
    from services.engines.vllm_async import VLLMAsyncBackend

    return VLLMAsyncBackend.from_config(cfg, stat_loggers=stat_loggers)
