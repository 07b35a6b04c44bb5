"""One CUDA GPU, no model hub: the paper's models at full size with random weights, each stage timed, one table.

    scripts/gpu-check.sh [--dry-run] [--stages llm,encoders,train,serve] [--cache DIR]

Stages: `llm` (Qwen3-4B-Thinking-2507 from its config, random bf16 weights written once to the cache, served by
vLLM's AsyncLLM with prompt embeddings and the thinking budget: new tokens/s at 1, 16 and 64 sequences, and what a
token costs at 16 against 64, the most the asynchronous corpus engine can gain over batches of 16 rows),
`encoders` (Whisper large-v3, W2V-BERT 2.0, MuQ, SSLAM from the registry's real configs, bf16: 30 s clips/s at
batch 1 and 16), `train` (ALARM-CA's audio adapter from the alarm-ca preset over the frozen LLM, 20 steps with
bf16 autocast: loss finite, memory peak), `serve` (`python -m alarm.serve --preset alarm-ca` as a user starts it,
on the random-weight checkpoints with the deployments' GPU fractions set to fit one GPU: time to SERVING, then 16
concurrent gRPC requests end to end, each a 10 s clip). On a GPU each stage runs in its own process with a timeout, inside an
overall bound of 8 minutes; a stage that fails or runs out of time is a FAIL row and the others still run.
Without a GPU it exits 0 saying it skipped. `--dry-run` runs every stage on the meta device instead: the same
configs and builders, no weights, no engine start, and checks each output shape, and that the serving layout fits
one GPU and a clip's positions fit the engine's context (CI runs it).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from a checkout: `alarm` and `services` are the checkout's

BOUND_S = 480  # the whole check
STAGE_S = {"llm": 240, "encoders": 120, "train": 150, "serve": 240}
SEQS = (1, 16, 64)
CLIP_S = 30.0
LLM_DIR = "qwen3-4b-thinking-2507-random"


@dataclass
class Row:
    stage: str
    case: str
    value: str
    status: str = "ok"


# ---------------------------------------------------------------------------------------------------------------
# llm


def llm_arch() -> dict:
    from alarm.model.llm import QWEN3_4B_THINKING_2507

    return QWEN3_4B_THINKING_2507


def llm_checkpoint(cache: Path) -> Path:
    """The random-weight Qwen3-4B-Thinking-2507 folder (bf16 safetensors, the real tokenizer), built once."""
    from alarm.files import build_once

    def make(tmp: Path) -> None:
        import torch
        from transformers import GenerationConfig, Qwen3Config, Qwen3ForCausalLM

        from alarm.model.qwen_tokenizer import save_qwen3_tokenizer

        torch.manual_seed(0)
        with torch.device("cuda"):
            model = Qwen3ForCausalLM(Qwen3Config(**llm_arch(), torch_dtype="bfloat16")).to(torch.bfloat16)
        model.save_pretrained(str(tmp), safe_serialization=True)
        GenerationConfig(bos_token_id=151643, eos_token_id=[151645, 151643], pad_token_id=151643).save_pretrained(
            str(tmp))
        save_qwen3_tokenizer(tmp)

    return build_once(cache / LLM_DIR, make)


def stage_llm(dry: bool, cache: Path) -> list[Row]:
    import torch

    from alarm.model.llm import build_llm_meta

    arch = llm_arch()
    if dry:
        llm = build_llm_meta(arch)
        n = sum(p.numel() for p in llm.parameters())
        ids = torch.zeros(2, 16, dtype=torch.long, device="meta")
        hidden = llm.model.embed_tokens(ids)
        expect(tuple(hidden.shape), (2, 16, arch["hidden_size"]), "llm: prompt embeddings")
        expect(tuple(llm.lm_head.weight.shape), (arch["vocab_size"], arch["hidden_size"]), "llm: output head")
        return [Row("llm", "Qwen3-4B-Thinking-2507 on meta", f"{n / 1e9:.2f} B parameters")]
    return llm_throughput(llm_checkpoint(cache))


def llm_throughput(folder: Path, dtype: str = "bfloat16", seqs: tuple[int, ...] = SEQS,
                   max_tokens: int = 256) -> list[Row]:
    """New tokens/s of the serving engine (prompt embeddings, thinking budget max_tokens / 2) at each of `seqs`
    concurrent requests."""
    import asyncio

    from alarm.llm.backends import GenerationParams
    from services.engines.vllm_async import VLLMAsyncBackend

    async def run() -> list[Row]:
        engine = VLLMAsyncBackend(folder, max_model_len=4096, dtype=dtype, max_num_seqs=max(seqs),
                                  gpu_memory_utilization=0.5)
        try:
            prompt = engine.embed_text(engine.render([{"role": "user", "content": "What do you hear?"}]))
            params = GenerationParams(max_tokens=max_tokens, max_thinking_tokens=max_tokens // 2, seed=0)
            await engine.generate(prompt, params)  # warm-up
            rows, rates = [], {}
            for n in seqs:
                t0 = time.perf_counter()
                outs = await asyncio.gather(*(engine.generate(prompt, params) for _ in range(n)))
                rates[n] = sum(o.n_tokens for o in outs) / (time.perf_counter() - t0)
                rows.append(Row("llm", f"vLLM, prompt_embeds + budget, {n} seqs", f"{rates[n]:,.0f} tokens/s"))
            return rows + batching_rows(rates)
        finally:
            await engine.aclose()

    return asyncio.run(run())


def batching_rows(rates: dict[int, float], few: int = 16) -> list[Row]:
    """What a sequence's token costs at `few` sequences against the most measured: how far keeping more rows in
    flight (the asynchronous corpus engine, `workers.engine=async`) can lead batches of `few` rows. On a 2-core CPU
    it is 1.0-1.1 (bench/generate.py's row-step costs); the async pipeline's 1.3x target needs more than that."""
    most = max(rates)
    if few not in rates or most <= few or rates[few] <= 0:
        return []
    return [Row("llm", f"a token's cost at {few} seqs / at {most} seqs", f"{rates[most] / rates[few]:.2f}x")]


# ---------------------------------------------------------------------------------------------------------------
# encoders


def stage_encoders(dry: bool, cache: Path) -> list[Row]:
    import torch

    from alarm.encoders import FAMILIES
    from alarm.encoders.checkpoint import build_encoder_meta, checkpoint_format

    rows = []
    for kind, fam in FAMILIES.items():
        if kind not in ("whisper", "w2vbert", "muq", "sslam"):
            continue
        if dry:
            enc = build_encoder_meta(kind)
            x, lens = clip_batch(fam, 2, "meta")
            states = meta_encode(enc, x, lens)
            d = fam.real_config[checkpoint_format(kind)[1].hidden]
            t = int(enc.output_lengths(torch.tensor([fam.chunk]))[0])
            expect(tuple(states.shape), (len(fam.layers), 2, t, d), f"encoders: {kind} states")
            rows.append(Row("encoders", f"{kind} on meta", f"states {tuple(states.shape)}"))
            continue
        rows += encoder_throughput(kind, fam.real_config, fam.layers, "cuda")
    return rows


def encoder_throughput(kind: str, config: dict, layers: list[int], device: str, batches=(1, 16),
                       reps: int = 3) -> list[Row]:
    """CLIP_S-second clips/s of encoder `kind` built from `config` with random weights, bf16, at each batch size."""
    import torch

    from alarm.encoders import family
    from alarm.encoders.checkpoint import checkpoint_format

    fam, (_, fmt) = family(kind), checkpoint_format(kind)
    with torch.device(device):
        enc = fmt.build(config, layers).to(torch.bfloat16).eval()
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    rows = []
    for b in batches:
        x, lens = clip_batch(fam, b, device)
        enc(x, lens)  # warm-up
        sync()
        t0 = time.perf_counter()
        for _ in range(reps):
            enc(x, lens)
        sync()
        rows.append(Row("encoders", f"{kind} bf16, batch {b}",
                        f"{reps * b / (time.perf_counter() - t0):.1f} clips/s ({CLIP_S:.0f} s clips)"))
    del enc
    if device == "cuda":
        torch.cuda.empty_cache()
    return rows


def clip_batch(fam, batch: int, device: str):
    """`batch` clips of CLIP_S seconds as the encoder takes them: (B, T, F) features or (B, N) samples, T or N
    padded to the family's chunk."""
    import math

    import torch

    n = int(CLIP_S * fam.input_rate)
    n = math.ceil(n / fam.chunk) * fam.chunk
    shape = (batch, n, fam.feature_dim) if fam.feature_dim else (batch, n)
    return torch.randn(shape, device=device) if device != "meta" else torch.empty(shape, device="meta"), \
        torch.full((batch,), n, dtype=torch.long, device=device)


def meta_encode(enc, x, lens):
    """One chunk batch through the encoder on meta (the chunk-and-stitch reads lengths, which meta has none of).
    W2V-BERT runs unmasked: transformers reads the attention mask's values."""
    if enc.name == "w2vbert":
        from alarm.encoders.base import stack

        out = enc.model(input_features=x[:, : enc.chunk], output_hidden_states=True)
        return stack(out.hidden_states, enc.layers)
    return enc.encode(x[:, : enc.chunk], lens)


# ---------------------------------------------------------------------------------------------------------------
# train


def stage_train(dry: bool, cache: Path) -> list[Row]:
    from alarm.config import ModelConfig, load_config

    cfg = load_config(ModelConfig, "alarm-ca", [], section="model")
    if not dry:
        return train_steps(cfg, llm_checkpoint(cache), "cuda")
    adapter, states, lens = train_inputs(cfg, "meta")
    # AudioAdapter.forward up to the fusion (its last step, `wrap`, reads the lengths' values)
    streams = {k: adapter.adapters[k](adapter.mix[k](states[k]), lens[k]) for k in adapter.encoders}
    fused, _ = adapter.fusion({k: v[0] for k, v in streams.items()}, {k: v[1] for k, v in streams.items()})
    expect((fused.shape[0], fused.shape[2]), (2, cfg.llm.hidden_size), "train: fused audio (B, D_llm)")
    n = sum(p.numel() for p in adapter.parameters() if p.requires_grad)
    return [Row("train", "ALARM-CA adapter on meta", f"{n / 1e6:.1f} M trainable, fused audio {tuple(fused.shape)}")]


def train_inputs(cfg, device: str):
    """A fresh AudioAdapter for `cfg` on `device` and the encoder states of two CLIP_S clips."""
    import torch

    from alarm.encoders import family
    from alarm.model.audio_adapter import build_audio_adapter

    with torch.device(device):
        adapter = build_audio_adapter(cfg)
    states, lens = {}, {}
    for k, e in cfg.encoders.items():
        t = int(CLIP_S * family(k).output_rate)
        states[k] = torch.randn(len(e.layers), 2, t, e.hidden_size, device=device)
        lens[k] = torch.full((2,), t, dtype=torch.long, device=device)
    return adapter, states, lens


def train_steps(cfg, folder: Path, device: str, steps: int = 20) -> list[Row]:
    """`steps` optimiser steps of the adapter over the frozen LLM in `folder`, bf16 autocast (the trainer's)."""
    import math

    import torch

    from alarm.config import OptimConfig
    from alarm.model.llm import load_llm, load_tokenizer
    from alarm.model.prompt import PromptBuilder
    from alarm.training.batch import TrainBatch
    from alarm.training.step import autocast_context, build_optimizer, forward_loss

    adapter, states, lens = train_inputs(cfg, device)
    n = sum(p.numel() for p in adapter.parameters() if p.requires_grad)
    llm = load_llm(folder, cfg.llm, dtype=torch.bfloat16, device=device)
    builder = PromptBuilder(load_tokenizer(folder), llm.get_input_embeddings())
    batch = TrainBatch(keys=["a", "b"], sources=["check"] * 2, prompts=["What do you hear?"] * 2,
                       targets=["I hear a dog barking twice, then a car passing."] * 2, states=states, lens=lens)
    opt = build_optimizer(adapter, OptimConfig())
    adapter.train()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0, losses = time.perf_counter(), []
    for _ in range(steps):
        with autocast_context("bf16", device):
            out = forward_loss(adapter, builder, llm, batch, max_length=4096)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(float(out.loss))
    dt = time.perf_counter() - t0
    peak = f", peak {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB" if device == "cuda" else ""
    status = "ok" if all(math.isfinite(v) for v in losses) else "FAIL"
    return [Row("train", f"{cfg.name}, {steps} steps, bf16, batch 2 ({n / 1e6:.1f} M trainable)",
                f"{steps / dt:.2f} steps/s, loss {losses[0]:.2f} -> {losses[-1]:.2f}{peak}", status)]


# ---------------------------------------------------------------------------------------------------------------
# serve

SERVE_REQUESTS, SERVE_CLIP_S, SERVE_MAX_TOKENS = 16, 10.0, 128
CLEANUP_S = 40  # of a stage's time, kept for stopping the server it started
_deadline: float | None = None  # a child's end (monotonic), from --budget: its stage ends what it started by then
SERVE_GPUS = {"llm": 0.5, "encoder": 0.09, "fusion": 0.09}  # 0.5 + 4 x 0.09 + 0.09 = 0.95 of the one GPU


def serve_overrides(cache: Path) -> list[str]:
    """The alarm-ca serving preset on one GPU: the random-weight checkpoints in `cache`, one replica per
    deployment with GPU fractions that fit one GPU, a short context and thinking budget."""
    out = [f"model.llm.checkpoint={cache / LLM_DIR}", "model.llm.revision=null",
           f"adapters.alarm-ca.checkpoint={cache / 'alarm-ca-adapter-random'}", "limits.audio_uri_prefixes=[]",
           "llm.max_model_len=4096", "llm.gpu_memory_utilization=0.5",
           "defaults.max_thinking_tokens=64", f"defaults.max_tokens={SERVE_MAX_TOKENS}"]
    for name in ("ingress", "encoder", "fusion", "llm"):
        out += [f"deployments.{name}.num_cpus=1", f"deployments.{name}.autoscaling.min_replicas=1",
                f"deployments.{name}.autoscaling.max_replicas=1"]
        if name in SERVE_GPUS:
            out.append(f"deployments.{name}.num_gpus={SERVE_GPUS[name]}")
    for kind in ("whisper", "w2vbert", "muq", "sslam"):
        out += [f"model.encoders.{kind}.checkpoint={cache / f'{kind}-random'}", f"model.encoders.{kind}.revision=null"]
    return out


def stage_serve(dry: bool, cache: Path) -> list[Row]:
    from alarm.config import ServeConfig, load_config

    overrides = serve_overrides(cache)
    cfg = load_config(ServeConfig, "alarm-ca", overrides, section="serve")
    layout = serving_layout(cfg)
    if dry:
        return [Row("serve", "alarm-ca app on one GPU (layout)", layout)]
    random_checkpoints(cfg, cache)
    left = (_deadline or time.monotonic() + STAGE_S["serve"]) - time.monotonic() - CLEANUP_S
    if left < 60:
        return [Row("serve", "not run", f"{left + CLEANUP_S:.0f} s left after the checkpoints: too little to start "
                    "a server", "FAIL")]
    return serve_requests("alarm-ca", overrides, SERVE_REQUESTS, budget_s=left)


def serving_layout(cfg) -> str:
    """Check that the app's replicas fit one GPU and that a SERVE_CLIP_S clip, its prompt and the answer fit the
    engine's context; the layout in words."""
    import torch

    from alarm.encoders import family
    from alarm.model.audio_adapter import build_audio_adapter
    from services.serve.app import deployment_specs

    specs = deployment_specs(cfg)
    gpus = sum(s.num_gpus * s.autoscaling.max_replicas for s in specs.values())
    if not 0 < gpus <= 1:
        raise AssertionError(f"serve: the deployments ask for {gpus:.2f} GPUs at their maximum; one GPU holds 1")
    with torch.device("meta"):
        adapter = build_audio_adapter(cfg.model)
    lens = {k: torch.tensor([int(SERVE_CLIP_S * family(k).output_rate)]) for k in cfg.model.encoders}
    positions = int(adapter.output_lengths(lens)[0])
    need = positions + 256 + cfg.defaults.max_tokens  # 256: the chat template and the question, with room
    if need > cfg.llm.max_model_len:
        raise AssertionError(f"serve: a {SERVE_CLIP_S:.0f} s clip needs {need} positions with its prompt and answer; "
                             f"llm.max_model_len is {cfg.llm.max_model_len}")
    return (f"{len(specs)} deployments, {gpus:.2f} GPU, {sum(s.num_cpus for s in specs.values()):g} CPUs; a "
            f"{SERVE_CLIP_S:.0f} s clip is {positions} positions")


def random_checkpoints(cfg, cache: Path) -> None:
    """The folders `serve_overrides` points at: the LLM, each encoder from its family's real config, and an
    adapter for the model, all with random weights, each built once."""
    import torch

    from alarm.encoders import family
    from alarm.files import build_once
    from alarm.model.audio_adapter import build_audio_adapter
    from alarm.model.checkpoint import save_adapter
    from alarm.tiny import builder

    llm_checkpoint(cache)
    for kind in cfg.model.encoders:
        build = builder(kind)
        build_once(Path(cfg.model.encoders[kind].checkpoint), lambda tmp, b=build, k=kind: b(tmp, 0, family(k).real_config))
    folder = Path(cfg.adapters["alarm-ca"].checkpoint)
    if not folder.is_dir():
        torch.manual_seed(0)
        save_adapter(build_audio_adapter(cfg.model), cfg.model, folder)


def serve_requests(preset: str, overrides: list[str], n: int, port: int = 9410, budget_s: float = 200.0,
                   clip_s: float = SERVE_CLIP_S, max_tokens: int = SERVE_MAX_TOKENS) -> list[Row]:
    """`python -m alarm.serve --preset <preset> <overrides>` started as a user starts it (its own local Ray), the
    time until gRPC health says SERVING, then `n` concurrent requests to 127.0.0.1, then SIGTERM; all of it within
    `budget_s` (the start-up gets what leaves 30 s for the requests), then the server's stop."""
    import contextlib
    import signal
    import statistics
    import tempfile
    from concurrent.futures import ThreadPoolExecutor

    import grpc

    from alarm.client import AlarmClient

    end = time.monotonic() + budget_s
    ready_s = budget_s - 30
    cmd = [sys.executable, "-m", "alarm.serve", "--preset", preset, "--ready-timeout", str(ready_s),
           f"grpc_port={port}", f"http_port={port + 1}", "host=127.0.0.1", *overrides]
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            with AlarmClient(f"127.0.0.1:{port}", timeout_s=budget_s) as client:
                t0 = time.monotonic()
                while not _serving(client):
                    if proc.poll() is not None or time.monotonic() - t0 > ready_s:
                        log.seek(0)
                        tail = log.read()[-300:].strip()
                        return [Row("serve", "not SERVING", f"after {time.monotonic() - t0:.0f} s: {tail}", "FAIL")]
                    time.sleep(1.0)
                ready = time.monotonic() - t0
                audio = tone(clip_s)

                def one(i: int) -> tuple[str, float, int]:
                    t = time.perf_counter()
                    try:
                        r = client.generate(audio, f"What do you hear? ({i})", max_tokens=max_tokens, temperature=0.0,
                                            timeout_s=max(1.0, end - time.monotonic()))
                    except grpc.RpcError as e:
                        return e.code().name, time.perf_counter() - t, 0
                    return "OK", time.perf_counter() - t, r.usage.total_tokens

                t = time.perf_counter()
                with ThreadPoolExecutor(n) as pool:
                    results = list(pool.map(one, range(n)))
                wall = time.perf_counter() - t
        finally:  # SIGTERM to the server first, so that it shuts Serve and its Ray down; then the whole group
            proc.terminate()
            try:
                proc.wait(CLEANUP_S - 10)
            except subprocess.TimeoutExpired:
                pass
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
    ok = [(s, tokens) for code, s, tokens in results if code == "OK"]
    codes = ", ".join(f"{c} {sum(r[0] == c for r in results)}" for c in sorted({r[0] for r in results}))
    lat = sorted(s for s, _ in ok) or [float("nan")]
    return [Row("serve", f"{preset} app, python -m alarm.serve to SERVING", f"{ready:.0f} s"),
            Row("serve", f"{n} concurrent gRPC requests, {clip_s:.0f} s clips", f"{codes}; p50 {statistics.median(lat):.1f} s, "
                f"max {lat[-1]:.1f} s; {len(ok) / wall:.2f} req/s, {sum(k for _, k in ok) / wall:,.0f} tokens/s",
                "ok" if len(ok) == n else "FAIL")]


def _serving(client) -> bool:
    try:
        return client.health(timeout_s=5) == "SERVING"
    except Exception:  # not listening yet
        return False


def tone(seconds: float, rate: int = 16000) -> bytes:
    """A WAV file of a 440 Hz tone, as a client would send one."""
    import io

    import numpy as np
    import soundfile as sf

    t = np.arange(int(seconds * rate)) / rate
    buf = io.BytesIO()
    sf.write(buf, (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------------------------
# driver

STAGES = {"llm": stage_llm, "encoders": stage_encoders, "train": stage_train, "serve": stage_serve}


def expect(found, want, what: str) -> None:
    if found != want:
        raise AssertionError(f"{what}: expected shape {want}, found {found}")


def run_stage(name: str, dry: bool, cache: Path) -> list[Row]:
    """One stage in this process; an exception is one FAIL row naming it."""
    try:
        return STAGES[name](dry, cache)
    except Exception as e:
        return [Row(name, "failed", f"{type(e).__name__}: {e}"[:300], "FAIL")]


def run_isolated(name: str, cache: Path, timeout_s: float) -> list[Row]:
    """One stage in a child process (GPU memory freed between stages; a hang is killed at `timeout_s`)."""
    cmd = [sys.executable, __file__, "--child", name, "--cache", str(cache), "--budget", f"{timeout_s - 5:.0f}"]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return [Row(name, "timed out", f"no result within {timeout_s:.0f} s", "FAIL")]
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    if p.returncode != 0 or not lines:
        return [Row(name, "crashed", f"exit {p.returncode}: {p.stderr.strip()[-300:]}", "FAIL")]
    return [Row(**r) for r in json.loads(lines[-1])]


def table(rows: list[Row]) -> str:
    w = [max(len(getattr(r, f)) for r in rows) for f in ("stage", "case", "value")]
    lines = [f"{'stage':<{w[0]}}  {'case':<{w[1]}}  {'value':<{w[2]}}  status"]
    lines += [f"{r.stage:<{w[0]}}  {r.case:<{w[1]}}  {r.value:<{w[2]}}  {r.status}" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dry-run", action="store_true", help="every stage on the meta device: shapes only")
    p.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated subset of {','.join(STAGES)}")
    p.add_argument("--cache", type=Path, default=None, help="where the random-weight checkpoints are kept")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--budget", type=float, default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    from alarm import env

    cache = a.cache or env.cache_dir() / "gpu-check"
    if a.child:
        global _deadline
        _deadline = time.monotonic() + a.budget if a.budget else None
        print(json.dumps([asdict(r) for r in run_stage(a.child, False, cache)]))
        return 0
    names = [s for s in a.stages.split(",") if s]
    if bad := [s for s in names if s not in STAGES]:
        p.error(f"--stages: unknown {bad}; valid: {','.join(STAGES)}")
    if not a.dry_run:
        import torch

        if not torch.cuda.is_available():
            print("gpu-check: skipped, no CUDA GPU here (torch.cuda.is_available() is False); "
                  "--dry-run checks the shapes on CPU")
            return 0
    start, rows = time.monotonic(), []
    for name in names:
        t0 = time.monotonic()
        if a.dry_run:
            got = run_stage(name, True, cache)
        else:
            left = BOUND_S - (time.monotonic() - start)
            got = run_isolated(name, cache, min(STAGE_S[name], left)) if left > 5 else [
                Row(name, "not run", f"the {BOUND_S} s bound was spent", "FAIL")]
        rows += got + [Row(name, "stage time", f"{time.monotonic() - t0:.1f} s")]
    print(table(rows))
    return 1 if any(r.status != "ok" for r in rows) else 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    raise SystemExit(main())
