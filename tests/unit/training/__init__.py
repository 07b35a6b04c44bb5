"""Helpers shared by the training tests: tiny models and examples made by the real tiny encoders."""

from __future__ import annotations

import numpy as np
import torch

from alarm.config import ModelConfig, TrainConfig, load_config
from alarm.model.alarm_model import AlarmModel
from alarm.tiny.scripted import REPHRASED_TARGET, SELF_GENERATION_OUTPUT
from alarm.types import Waveform

TARGETS = [
    "A dog barks twice near a busy road.",
    "Soft rain falls on a tin roof.",
    "A woman says hello in a quiet room.",
    "Piano chords ring out over light applause.",
    "An engine idles while birds sing.",
    "Two people laugh at a joke.",
    "A bell rings three times.",
    "Wind gusts across an open field.",
]

# Pieces of the texts the tiny scripted Qwen3 was trained on. A frozen 2-layer D=64 LLM cannot be steered to
# arbitrary text: even free per-clip audio vectors plateau near 0.45 x the initial loss on TARGETS (the random
# tiny://qwen3 near 0.9 x: its logits span only about +-1.3). On text it can produce, the audio has to pick which
# continuation each clip gets, which a working training step learns in a few dozen steps.
SCRIPTED_TARGETS = [SELF_GENERATION_OUTPUT[:80], REPHRASED_TARGET[:80], SELF_GENERATION_OUTPUT[80:160],
                    REPHRASED_TARGET[80:160]]
SCRIPTED_LLM = "llm.checkpoint=tiny://qwen3-scripted"


def build_model(preset: str, overrides: list[str] = ()) -> AlarmModel:
    torch.manual_seed(0)
    return AlarmModel.build(load_config(ModelConfig, preset, list(overrides)), with_llm=True)


def make_examples(model: AlarmModel, n: int, seed: int = 0, targets: list[str] | None = None) -> list[dict]:
    """`n` examples of 0.5-2 s noise + tone clips at 16 kHz, with the tiny encoders' trimmed states as numpy."""
    rng = np.random.default_rng(seed)
    waves = []
    for _ in range(n):
        t = np.arange(int(rng.uniform(0.5, 2.0) * 16000)) / 16000
        x = 0.3 * np.sin(2 * np.pi * rng.uniform(100, 2000) * t) + 0.05 * rng.standard_normal(len(t))
        waves.append(Waveform(x.astype(np.float32), 16000))
    states = model.encode(model.features(waves))
    targets = targets or TARGETS
    out = []
    for i in range(n):
        ex = {"key": f"ex{i}", "source": "src_a" if i % 2 == 0 else "src_b", "prompt": "What do you hear?",
              "target": targets[i % len(targets)]}
        for enc, s in states.items():
            ex[f"states_{enc}"] = s.states[:, i, : int(s.lens[i])].numpy().copy()  # (L, T_i, D)
        out.append(ex)
    return out


def train_config(model: AlarmModel, **kw) -> TrainConfig:
    """A TrainConfig for `model` with a short schedule; keyword args override top-level and nested sections."""
    data = {"run_id": "test", "corpus": "unused", "model": model.cfg.model_dump(), "precision": "fp32",
            "optim": {"lr": 1e-3, "warmup_steps": 0}, "batch": {"per_worker": 4, "effective": 4}}
    for k, v in kw.items():
        data[k] = {**data[k], **v} if isinstance(v, dict) and isinstance(data.get(k), dict) else v
    return TrainConfig.model_validate(data)
