"""Shared by the serving unit tests: the tiny serve config (HF backend, random tiny Qwen3) and request builders."""

from __future__ import annotations

import io

import numpy as np
import soundfile as sf

from alarm.config import ServeConfig, load_config
from services.serve._proto.alarm.v1 import alarm_pb2 as pb

CFG = load_config(ServeConfig, "tiny", ["model.llm.checkpoint=tiny://qwen3", "llm.backend=hf"], section="serve")


def wav(seconds: float = 1.0, rate: int = 16000) -> bytes:
    buf = io.BytesIO()
    t = np.arange(int(seconds * rate)) / rate
    sf.write(buf, (0.2 * np.sin(2 * np.pi * 330 * t)).astype(np.float32), rate, format="FLAC")
    return buf.getvalue()


def req(**kw) -> pb.GenerateRequest:
    sampling = kw.pop("sampling", {})
    r = pb.GenerateRequest(prompt=kw.pop("prompt", "What is it?"), sampling=pb.SamplingParams(**sampling), **kw)
    return r
