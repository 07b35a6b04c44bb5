"""CTranslate2 Whisper -> transformers: a pure-Python reader of CTranslate2's `model.bin` and a converter that
writes a `WhisperForConditionalGeneration` folder (safetensors, config, generation config, feature extractor and,
when the CT2 folder has one, the tokenizer) that `load_encoder("whisper", folder, ...)` reads.

    ct2 = read_ct2_model(ct2_dir / "model.bin")        # variables by CT2 name, aliases, spec name
    report = convert_ct2_whisper(ct2_dir, out_dir)     # every HF weight filled, every CT2 variable used

The mapping reverses `ctranslate2.converters.transformers.WhisperLoader` (ctranslate2 4.x): CT2 fuses the
self-attention q/k/v into one `linear_0` (k's bias written as zeros, since Whisper's k_proj has none) and the
cross-attention k/v into `linear_1`; the output projection is an alias of the token embedding.
"""

from __future__ import annotations

import json
import math
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import torch
from torch import Tensor

from alarm.errors import CheckpointError, CheckpointMismatch

# ---------------------------------------------------------------------------------------------------------------
# model.bin reader

CT2_BINARY_VERSION = 6  # what ctranslate2.specs.model_spec.CURRENT_BINARY_VERSION writes (ctranslate2 4.x)
# DataType enum order of include/ctranslate2/types.h (ctranslate2.specs.model_spec._dtype_to_type_id)
CT2_DTYPES = (torch.float32, torch.int8, torch.int16, torch.int32, torch.float16, torch.bfloat16)


@dataclass(frozen=True)
class CT2Model:
    """The contents of one `model.bin`: variables by their `/`-scoped CT2 name, and aliases (name -> target)."""

    spec: str  # e.g. "WhisperSpec"
    revision: int  # the spec's revision (WhisperSpec: 3)
    binary_version: int
    variables: dict[str, Tensor] = field(repr=False)
    aliases: dict[str, str] = field(default_factory=dict)

    def get(self, name: str) -> Tensor:
        """A variable by name, following an alias."""
        return self.variables[self.aliases.get(name, name)]


class _Reader:
    def __init__(self, f: BinaryIO, path: Path):
        self.f, self.path = f, path

    def read(self, n: int) -> bytes:
        data = self.f.read(n)
        if len(data) != n:
            raise CheckpointError(f"{self.path}: truncated at byte {self.f.tell()} (wanted {n} more bytes); "
                                  "the file is incomplete — reinstall or re-convert it")
        return data

    def unpack(self, fmt: str) -> int:
        return struct.unpack("<" + fmt, self.read(struct.calcsize(fmt)))[0]

    def string(self) -> str:
        raw = self.read(self.unpack("H"))  # length includes the trailing NUL
        return raw[:-1].decode("utf-8")


def read_ct2_model(path: str | Path) -> CT2Model:
    """Read a CTranslate2 `model.bin` (binary version 6) into CPU tensors, without ctranslate2.

    Layout (little-endian, as `ctranslate2.specs.model_spec.ModelSpec._serialize` writes it):
    u32 version; string spec name; u32 spec revision; u32 n; n x (string name; u8 rank; rank x u32 dim;
    u8 dtype id; u32 num_bytes; raw bytes); u32 m; m x (string alias; string target). A string is a u16
    length (NUL included), the UTF-8 bytes and a NUL.

    Raises:
        CheckpointError: the file is missing, truncated, of another binary version, or inconsistent.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"CTranslate2 model file {path} does not exist")
    with open(path, "rb") as f:
        r = _Reader(f, path)
        version = r.unpack("I")
        if version != CT2_BINARY_VERSION:
            raise CheckpointError(
                f"{path}: CTranslate2 binary version {version}; this reader understands version "
                f"{CT2_BINARY_VERSION} (ctranslate2 4.x) — re-convert the model with a current ctranslate2"
            )
        spec, revision = r.string(), r.unpack("I")
        variables = {}
        for _ in range(r.unpack("I")):
            name = r.string()
            shape = tuple(r.unpack("I") for _ in range(r.unpack("B")))
            type_id, num_bytes = r.unpack("B"), r.unpack("I")
            if type_id >= len(CT2_DTYPES):
                raise CheckpointError(f"{path}: variable {name!r} has unknown dtype id {type_id}")
            dtype, numel = CT2_DTYPES[type_id], math.prod(shape)
            if numel * dtype.itemsize != num_bytes:
                raise CheckpointError(f"{path}: variable {name!r} {shape} {dtype} declares {num_bytes} bytes, "
                                      f"expected {numel * dtype.itemsize}")
            data = bytearray(r.read(num_bytes))  # writable copy: torch.frombuffer warns on read-only bytes
            flat = torch.frombuffer(data, dtype=dtype) if numel else torch.empty(0, dtype=dtype)
            variables[name] = flat.reshape(shape)
        aliases = {}
        for _ in range(r.unpack("I")):
            alias, target = r.string(), r.string()
            if target not in variables:
                raise CheckpointError(f"{path}: alias {alias!r} points at missing variable {target!r}")
            aliases[alias] = target
        if f.read(1):
            raise CheckpointError(f"{path}: unexpected bytes after the alias table at byte {f.tell() - 1}")
    return CT2Model(spec, revision, version, variables, aliases)


# ---------------------------------------------------------------------------------------------------------------
# CT2 Whisper -> transformers state dict

GELU = 3  # ctranslate2.specs.common_spec.Activation.GELU
# spec scalars that are not weights: what CT2 needs to rebuild the graph. Each is checked against what a
# transformers Whisper computes (or used for the config) instead of being copied.
SPEC_SCALARS = {
    "encoder/num_heads": "encoder_attention_heads",
    "decoder/num_heads": "decoder_attention_heads",
    "decoder/activation": f"must be GELU ({GELU}), as transformers Whisper's gelu",
    "decoder/pre_norm": "must be 1: Whisper layers are pre-norm",
    "decoder/scale_embeddings": "must be 0: Whisper does not scale token embeddings",
    "decoder/alibi": "must be 0: Whisper uses learned positions",
    "decoder/start_from_zero_embedding": "must be 0: positions start at index 0 without a zero embedding",
    "decoder/alignment_heads": "CT2's word-timestamp setting; generation_config.alignment_heads comes from "
                               "config.json instead",
    "decoder/alignment_layer": "CT2's word-timestamp setting (see decoder/alignment_heads)",
    # written by ctranslate2 >= 4.x converters (absent from older Whisper conversions); inert while alibi is 0
    "decoder/alibi_use_positive_positions": "ALiBi setting; inert: decoder/alibi is 0",
    "decoder/scale_alibi": "ALiBi setting; inert: decoder/alibi is 0",
}
_EXPECTED_FLAGS = {"decoder/activation": GELU, "decoder/pre_norm": 1, "decoder/scale_embeddings": 0,
                   "decoder/alibi": 0, "decoder/start_from_zero_embedding": 0}


class _Taker:
    """Hands out CT2 variables by name and remembers which were used, so leftovers can be reported."""

    def __init__(self, ct2: CT2Model, path: Path):
        self.ct2, self.path, self.used = ct2, path, set()

    def __call__(self, name: str) -> Tensor:
        target = self.ct2.aliases.get(name, name)
        if target not in self.ct2.variables:
            raise CheckpointMismatch(f"{self.path}: CT2 Whisper variable {name!r} is missing; is this a "
                                     f"WhisperSpec model (found spec {self.ct2.spec!r})?")
        self.used.update({name, target})
        return self.ct2.variables[target]

    def layer_norm(self, scope: str) -> dict[str, Tensor]:
        return {"weight": self(f"{scope}/gamma"), "bias": self(f"{scope}/beta")}

    def linear(self, scope: str) -> dict[str, Tensor]:
        return {"weight": self(f"{scope}/weight"), "bias": self(f"{scope}/bias")}


def _split_kv_bias(bias: Tensor, d: int, scope: str, path: Path) -> Tensor:
    """CT2 writes zeros for Whisper's bias-free k_proj inside fused biases; refuse anything else."""
    if bias[:d].abs().max() != 0:
        raise CheckpointMismatch(f"{path}: {scope}: the k part of the fused bias is non-zero, but transformers "
                                 "Whisper's k_proj has no bias; this is not a Whisper conversion")
    return bias[d:]


def _attention(take: _Taker, scope: str, prefix: str, d: int, fused_qkv: bool, path: Path) -> dict[str, Tensor]:
    """Self-attention (`linear_0` = q|k|v, `linear_1` = out) or cross-attention (q; k|v; out)."""
    out: dict[str, Tensor] = {}
    if fused_qkv:
        qkv = take.linear(f"{scope}/linear_0")  # weight (3D, D), bias (3D,)
        w, b = qkv["weight"], qkv["bias"]
        q_w, k_w, v_w = w.split(d)
        q_b, v_b = b[:d], _split_kv_bias(b[d:], d, f"{scope}/linear_0", path)
        o = take.linear(f"{scope}/linear_1")
    else:
        q = take.linear(f"{scope}/linear_0")
        kv = take.linear(f"{scope}/linear_1")  # weight (2D, D), bias (2D,)
        q_w, q_b = q["weight"], q["bias"]
        k_w, v_w = kv["weight"].split(d)
        v_b = _split_kv_bias(kv["bias"], d, f"{scope}/linear_1", path)
        o = take.linear(f"{scope}/linear_2")
    out[f"{prefix}.q_proj.weight"], out[f"{prefix}.q_proj.bias"] = q_w, q_b
    out[f"{prefix}.k_proj.weight"] = k_w
    out[f"{prefix}.v_proj.weight"], out[f"{prefix}.v_proj.bias"] = v_w, v_b
    out[f"{prefix}.out_proj.weight"], out[f"{prefix}.out_proj.bias"] = o["weight"], o["bias"]
    return out


def _named(prefix: str, tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    return {f"{prefix}.{k}": v for k, v in tensors.items()}


def _layer(take: _Taker, side: str, i: int, d: int, path: Path) -> dict[str, Tensor]:
    src, dst = f"{side}/layer_{i}", f"model.{side}.layers.{i}"
    sd = _attention(take, f"{src}/self_attention", f"{dst}.self_attn", d, True, path)
    sd |= _named(f"{dst}.self_attn_layer_norm", take.layer_norm(f"{src}/self_attention/layer_norm"))
    if side == "decoder":
        sd |= _attention(take, f"{src}/attention", f"{dst}.encoder_attn", d, False, path)
        sd |= _named(f"{dst}.encoder_attn_layer_norm", take.layer_norm(f"{src}/attention/layer_norm"))
    sd |= _named(f"{dst}.fc1", take.linear(f"{src}/ffn/linear_0"))
    sd |= _named(f"{dst}.fc2", take.linear(f"{src}/ffn/linear_1"))
    sd |= _named(f"{dst}.final_layer_norm", take.layer_norm(f"{src}/ffn/layer_norm"))
    return sd


def _num_layers(ct2: CT2Model, side: str) -> int:
    return len({m[1] for n in ct2.variables if (m := re.match(rf"{side}/layer_(\d+)/", n))})


def whisper_state_dict(ct2: CT2Model, path: Path) -> tuple[dict[str, Tensor], dict[str, Any], dict[str, str]]:
    """Map a CT2 WhisperSpec to `WhisperForConditionalGeneration` weights.

    Returns:
        (state dict by HF name, architecture fields for WhisperConfig, intentionally unused CT2 names -> why).

    Raises:
        CheckpointMismatch: another spec, a missing variable, a CT2 variable left unused, or a graph flag
            (activation, pre-norm, embedding scale) a transformers Whisper does not compute.
    """
    if ct2.spec != "WhisperSpec":
        raise CheckpointMismatch(f"{path}: expected a CTranslate2 WhisperSpec model, found {ct2.spec!r}")
    take = _Taker(ct2, path)
    conv1 = take.linear("encoder/conv1")  # weight (D, n_mels, 3)
    d, n_mels = conv1["weight"].shape[:2]
    n_enc, n_dec = _num_layers(ct2, "encoder"), _num_layers(ct2, "decoder")

    sd = _named("model.encoder.conv1", conv1) | _named("model.encoder.conv2", take.linear("encoder/conv2"))
    sd["model.encoder.embed_positions.weight"] = take("encoder/position_encodings/encodings")  # (1500, D)
    for i in range(n_enc):
        sd |= _layer(take, "encoder", i, d, path)
    sd |= _named("model.encoder.layer_norm", take.layer_norm("encoder/layer_norm"))

    sd["model.decoder.embed_tokens.weight"] = take("decoder/embeddings/weight")  # (V, D)
    sd["model.decoder.embed_positions.weight"] = take("decoder/position_encodings/encodings")  # (448, D)
    for i in range(n_dec):
        sd |= _layer(take, "decoder", i, d, path)
    sd |= _named("model.decoder.layer_norm", take.layer_norm("decoder/layer_norm"))
    sd["proj_out.weight"] = take("decoder/projection/weight")  # (V, D), CT2 aliases it to the embedding: tied
    if not torch.equal(sd["proj_out.weight"], sd["model.decoder.embed_tokens.weight"]):
        raise CheckpointMismatch(f"{path}: decoder/projection/weight differs from the token embedding, but "
                                 "transformers Whisper ties them; this is not an OpenAI Whisper conversion")

    for name, want in _EXPECTED_FLAGS.items():
        if name not in ct2.variables:  # older spec revisions lack some flags; their default is the Whisper one
            continue
        found = int(take(name).item())
        if found != want:
            raise CheckpointMismatch(f"{path}: {name}={found}, but a transformers Whisper needs {want} "
                                     f"({SPEC_SCALARS[name]})")
    unused = {n: SPEC_SCALARS[n] for n in SPEC_SCALARS if n in ct2.variables}
    take.used.update(unused)
    left = sorted((set(ct2.variables) | set(ct2.aliases)) - take.used)
    if left:
        hint = ("int8 models carry *_scale variables: convert a float16/float32 CTranslate2 model"
                if any(n.endswith("_scale") for n in left) else "the converter does not know this Whisper variant")
        raise CheckpointMismatch(f"{path}: {len(left)} CT2 variable(s) have no transformers counterpart: "
                                 f"{left[:8]}; {hint}")
    arch = {
        "d_model": d, "num_mel_bins": n_mels, "encoder_layers": n_enc, "decoder_layers": n_dec,
        "encoder_attention_heads": int(take("encoder/num_heads").item()),
        "decoder_attention_heads": int(take("decoder/num_heads").item()),
        "encoder_ffn_dim": ct2.get("encoder/layer_0/ffn/linear_0/weight").shape[0],
        "decoder_ffn_dim": ct2.get("decoder/layer_0/ffn/linear_0/weight").shape[0],
        "vocab_size": sd["model.decoder.embed_tokens.weight"].shape[0],
        "max_source_positions": sd["model.encoder.embed_positions.weight"].shape[0],
        "max_target_positions": sd["model.decoder.embed_positions.weight"].shape[0],
    }
    return sd, arch, unused


# ---------------------------------------------------------------------------------------------------------------
# tokens, configs and the converter


def read_vocabulary(ct2_dir: Path) -> list[str]:
    """CT2's target vocabulary (token by id): vocabulary.json (a list) or vocabulary.txt (one per line)."""
    if (ct2_dir / "vocabulary.json").is_file():
        return json.loads((ct2_dir / "vocabulary.json").read_text(encoding="utf-8"))
    if (ct2_dir / "vocabulary.txt").is_file():
        return (ct2_dir / "vocabulary.txt").read_text(encoding="utf-8").split("\n")[:-1]  # one token per line
    raise CheckpointError(f"{ct2_dir}: no vocabulary.json or vocabulary.txt; a CT2 Whisper folder has one")


def _token_ids(vocab: list[str], path: Path) -> dict[str, Any]:
    index = {t: i for i, t in enumerate(vocab)}
    need = ("<|endoftext|>", "<|startoftranscript|>", "<|translate|>", "<|transcribe|>", "<|startofprev|>",
            "<|notimestamps|>")
    missing = [t for t in need if t not in index]
    if missing:
        raise CheckpointMismatch(f"{path}: the vocabulary lacks Whisper's special tokens {missing}")
    sot = index["<|startoftranscript|>"]
    ids: dict[str, Any] = {
        "eos": index["<|endoftext|>"], "sot": sot, "no_timestamps": index["<|notimestamps|>"],
        "prev_sot": index["<|startofprev|>"],
        # openai-whisper's rule (`n_vocab >= 51865`), which CTranslate2 uses too. Not CT2's config `lang_ids`:
        # its converter fills them for English-only models as well, and HF generate would then detect a language.
        "is_multilingual": len(vocab) >= 51865,
    }
    if ids["is_multilingual"]:  # the language tokens sit between <|startoftranscript|> and <|translate|>
        ids["lang_to_id"] = {vocab[i]: i for i in range(sot + 1, index["<|translate|>"])}
        ids["task_to_id"] = {t: index[f"<|{t}|>"] for t in ("transcribe", "translate")}
    return ids


def _configs(arch: dict, ids: dict, ct2_cfg: dict) -> tuple[Any, Any]:
    from transformers import GenerationConfig, WhisperConfig

    suppress = list(ct2_cfg.get("suppress_ids") or [])
    begin_suppress = list(ct2_cfg.get("suppress_ids_begin") or [])
    config = WhisperConfig(
        **arch, pad_token_id=ids["eos"], bos_token_id=ids["sot"], eos_token_id=ids["eos"],
        decoder_start_token_id=ids["sot"], suppress_tokens=suppress, begin_suppress_tokens=begin_suppress,
        scale_embedding=False, activation_function="gelu", tie_word_embeddings=True,
        architectures=["WhisperForConditionalGeneration"],
    )
    extra = {k: ids[k] for k in ("lang_to_id", "task_to_id") if k in ids}
    generation = GenerationConfig(
        bos_token_id=ids["sot"], decoder_start_token_id=ids["sot"], eos_token_id=ids["eos"],
        pad_token_id=ids["eos"], max_length=arch["max_target_positions"], suppress_tokens=suppress,
        begin_suppress_tokens=begin_suppress, alignment_heads=ct2_cfg.get("alignment_heads"),
        is_multilingual=ids["is_multilingual"], no_timestamps_token_id=ids["no_timestamps"],
        prev_sot_token_id=ids["prev_sot"], max_initial_timestamp_index=50, return_timestamps=False, **extra,
    )
    return config, generation


def _save_tokenizer(ct2_dir: Path, vocab: list[str], out_dir: Path) -> bool:
    """tokenizer.json -> a WhisperTokenizer, plus CT2's extra vocabulary (the timestamp tokens) as added tokens,
    checked id by id against the CT2 vocabulary. False when the CT2 folder has no tokenizer.json."""
    if not (ct2_dir / "tokenizer.json").is_file():
        return False
    from transformers import AddedToken, WhisperTokenizer

    tok = WhisperTokenizer(tokenizer_file=str(ct2_dir / "tokenizer.json"))
    have = len(tok)
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in vocab[have:]])
    ids = tok.convert_tokens_to_ids(vocab)
    bad = [(i, t, j) for i, (t, j) in enumerate(zip(vocab, ids, strict=True)) if i != j]
    if bad:
        raise CheckpointMismatch(f"{ct2_dir}: tokenizer.json and the CT2 vocabulary disagree on {len(bad)} "
                                 f"token ids, e.g. (id, token, tokenizer id) {bad[:3]}")
    tok.save_pretrained(str(out_dir))
    return True


@dataclass(frozen=True)
class Conversion:
    """What `convert_ct2_whisper` wrote and checked (also saved as conversion.json)."""

    params: int  # unique parameters of the full model (proj_out tied to the token embedding)
    encoder_params: int
    unused: dict[str, str]  # CT2 names intentionally not copied -> reason
    tokenizer: bool  # tokenizer files written
    source: str


def convert_ct2_whisper(ct2_dir: str | Path, out_dir: str | Path, dtype: torch.dtype = torch.float32) -> Conversion:
    """Convert a CTranslate2 Whisper folder (model.bin, config.json, vocabulary.*) to a transformers folder.

    Writes config.json, generation_config.json, model.safetensors, preprocessor_config.json, conversion.json
    and, when the CT2 folder has tokenizer.json, the tokenizer files. Every HF parameter is filled from a CT2
    variable of matching shape, and every CT2 variable is used or listed in `Conversion.unused`.

    Args:
        ct2_dir: the CTranslate2 model folder.
        out_dir: where to write (created; existing files of the same names are overwritten).
        dtype: float type of the saved weights (fp16 CT2 weights are widened exactly to fp32).

    Raises:
        CheckpointError: unreadable CT2 files. CheckpointMismatch: not a Whisper model this converter knows.
    """
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration

    ct2_dir, out_dir = Path(ct2_dir), Path(out_dir)
    ct2 = read_ct2_model(ct2_dir / "model.bin")
    ct2_cfg = json.loads((ct2_dir / "config.json").read_text()) if (ct2_dir / "config.json").is_file() else {}
    vocab = read_vocabulary(ct2_dir)
    state, arch, unused = whisper_state_dict(ct2, ct2_dir / "model.bin")
    if len(vocab) != arch["vocab_size"]:
        raise CheckpointMismatch(f"{ct2_dir}: {len(vocab)} vocabulary tokens, but the embedding has "
                                 f"{arch['vocab_size']} rows")
    config, generation = _configs(arch, _token_ids(vocab, ct2_dir), ct2_cfg)

    with torch.device("meta"):
        model = WhisperForConditionalGeneration(config)
    expected = model.state_dict()
    missing, extra = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or extra:
        raise CheckpointMismatch(f"{ct2_dir}: HF weights not filled {missing[:5]}, mapped names HF lacks "
                                 f"{extra[:5]}")
    bad = [(k, tuple(state[k].shape), tuple(v.shape)) for k, v in expected.items() if state[k].shape != v.shape]
    if bad:
        raise CheckpointMismatch(f"{ct2_dir}: shape mismatches (name, CT2, HF): {bad[:5]}")
    model.load_state_dict({k: v.to(dtype) for k, v in state.items()}, strict=True, assign=True)
    model.tie_weights()
    assert model.proj_out.weight is model.model.decoder.embed_tokens.weight, "proj_out must stay tied"
    left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    assert not left, f"tensors left on the meta device: {left[:5]}"
    model.generation_config = generation

    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out_dir), safe_serialization=True)
    WhisperFeatureExtractor(feature_size=arch["num_mel_bins"]).save_pretrained(str(out_dir))
    report = Conversion(
        params=sum(p.numel() for p in model.parameters()),
        encoder_params=sum(p.numel() for p in model.model.encoder.parameters()),
        unused=unused, tokenizer=_save_tokenizer(ct2_dir, vocab, out_dir), source=str(ct2_dir),
    )
    meta = {**report.__dict__, "spec": ct2.spec, "spec_revision": ct2.revision,
            "binary_version": ct2.binary_version, "dtype": str(dtype).removeprefix("torch.")}
    (out_dir / "conversion.json").write_text(json.dumps(meta, indent=2) + "\n")
    return report
