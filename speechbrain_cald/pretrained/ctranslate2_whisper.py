"""Whisper from a CTranslate2 folder: a transformers ``WhisperForConditionalGeneration`` folder.

CTranslate2 (faster-whisper's engine) ships Whisper as ``model.bin`` (the
variables in CTranslate2's binary layout), ``config.json`` (suppressed tokens,
alignment heads), ``tokenizer.json`` and ``vocabulary.txt``. This module reads
that layout (the format its writer ``ctranslate2.specs.ModelSpec._serialize``
documents: version, spec name, revision, then per variable its name, rank,
dims, dtype id and bytes, then the aliases), maps every variable back to its
transformers name (splitting the fused Q/K/V projections), and writes a folder
that ``--pretrained_dir`` accepts like any ``save_pretrained`` checkpoint:
``config.json`` (from the weights' shapes), ``model.safetensors`` (fp32),
the tokenizer, the feature extractor and ``generation_config.json``.

No code runs from the folder: ``model.bin`` is parsed with ``struct`` and
NumPy, the JSON files are read as data.

    python -m speechbrain_cald.pretrained.ctranslate2_whisper SRC DST [--overwrite]

Example
-------
>>> import tempfile
>>> convert_ctranslate2_whisper(tempfile.mkdtemp(), tempfile.mkdtemp())  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
speechbrain_cald.pretrained.ctranslate2_whisper.NotCTranslate2WhisperError: ... holds no model.bin: not a CTranslate2 model folder (it is empty)
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import shutil
import struct
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

__all__ = [
    "CTranslate2Model",
    "NotCTranslate2WhisperError",
    "convert_ctranslate2_whisper",
    "read_ctranslate2_model",
    "whisper_config",
    "whisper_state_dict",
]

logger = logging.getLogger(__name__)

# CTranslate2's dtype ids (ctranslate2/specs/model_spec.py: _dtype_to_type_id)
_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16, 5: "bfloat16"}
_GELU = 3  # ctranslate2.specs.common_spec.Activation.GELU
_SUPPORTED_BINARY_VERSIONS = range(1, 7)
_LAYER = re.compile(r"^(encoder|decoder)/layer_(\d+)/")


class NotCTranslate2WhisperError(ValueError):
    """A folder that is not a (readable) CTranslate2 Whisper model; the message says what it is."""


@dataclass
class CTranslate2Model:
    """The content of a CTranslate2 ``model.bin``.

    Attributes
    ----------
    spec : str
        The model specification's name (``"WhisperSpec"``).
    revision : int
        The specification's revision.
    variables : dict
        Variable name -> ``np.ndarray`` (``bfloat16`` arrives as ``float32``).
    aliases : dict
        Alias -> variable name (``decoder/projection/weight`` -> the embeddings).
    """

    spec: str
    revision: int
    variables: Dict[str, np.ndarray]
    aliases: Dict[str, str]

    def get(self, name: str) -> np.ndarray:
        """A variable by name or alias, dequantised to float32 when stored as int8 / int16."""
        name = self.aliases.get(name, name)
        if name not in self.variables:
            raise NotCTranslate2WhisperError(f"model.bin has no variable '{name}', which a Whisper model holds")
        value = self.variables[name]
        scale_name = name.rsplit("/", 1)[0] + "/weight_scale"
        if value.dtype in (np.int8, np.int16) and name.endswith("/weight") and scale_name in self.variables:
            # CTranslate2 quantises per output row: q = round(w * scale)
            scale = self.variables[scale_name].astype(np.float32)
            return value.astype(np.float32) / scale.reshape(-1, *([1] * (value.ndim - 1)))
        return value.astype(np.float32) if value.dtype in (np.float16, np.float32) else value

    def scalar(self, name: str) -> int:
        """An integer scalar variable (``encoder/num_heads``)."""
        return int(np.asarray(self.get(name)).reshape(-1)[0])


def _read_string(f, path: Path) -> str:
    raw = f.read(2)
    if len(raw) < 2:
        raise NotCTranslate2WhisperError(f"{path}: truncated (a string's length is missing)")
    (n,) = struct.unpack("<H", raw)
    data = f.read(n)
    if len(data) < n:
        raise NotCTranslate2WhisperError(f"{path}: truncated inside a string")
    return data[:-1].decode("utf-8")


def _read_exact(f, n: int, path: Path, what: str) -> bytes:
    data = f.read(n)
    if len(data) < n:
        raise NotCTranslate2WhisperError(f"{path}: truncated in {what} ({len(data)} of {n} bytes)")
    return data


def read_ctranslate2_model(path: Path) -> CTranslate2Model:
    """Parse a CTranslate2 ``model.bin`` (binary versions 1-6; the ones with a dtype per variable: 4-6).

    Arguments
    ---------
    path : pathlib.Path
        The ``model.bin`` file.

    Returns
    -------
    CTranslate2Model

    Raises
    ------
    NotCTranslate2WhisperError
        A file that is truncated or not in CTranslate2's layout, named.
    """
    path = Path(path)
    with open(path, "rb") as f:
        (version,) = struct.unpack("<I", _read_exact(f, 4, path, "the binary version"))
        if version not in _SUPPORTED_BINARY_VERSIONS:
            raise NotCTranslate2WhisperError(
                f"{path}: binary version {version}, expected a CTranslate2 model.bin (versions 1-6): "
                "this is not a CTranslate2 model file"
            )
        if version < 4:
            raise NotCTranslate2WhisperError(
                f"{path}: CTranslate2 binary version {version} (before 2.0); convert it again with a current "
                "ct2-transformers-converter"
            )
        spec = _read_string(f, path)
        (revision,) = struct.unpack("<I", _read_exact(f, 4, path, "the revision"))
        (count,) = struct.unpack("<I", _read_exact(f, 4, path, "the variable count"))
        variables: Dict[str, np.ndarray] = {}
        for _ in range(count):
            name = _read_string(f, path)
            rank = _read_exact(f, 1, path, f"variable {name}")[0]
            dims = struct.unpack(f"<{rank}I", _read_exact(f, 4 * rank, path, f"variable {name}"))
            dtype_id = _read_exact(f, 1, path, f"variable {name}")[0]
            (nbytes,) = struct.unpack("<I", _read_exact(f, 4, path, f"variable {name}"))
            data = _read_exact(f, nbytes, path, f"variable {name}")
            if dtype_id not in _DTYPES:
                raise NotCTranslate2WhisperError(f"{path}: variable {name} has an unknown dtype id {dtype_id}")
            dtype = _DTYPES[dtype_id]
            if dtype == "bfloat16":
                array = (np.frombuffer(data, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)
            else:
                array = np.frombuffer(data, dtype=dtype)
            if array.size != int(np.prod(dims, dtype=np.int64)):
                raise NotCTranslate2WhisperError(f"{path}: variable {name} holds {array.size} values, shape {dims}")
            variables[name] = array.reshape(dims)
        aliases: Dict[str, str] = {}
        raw = f.read(4)
        if len(raw) == 4:
            (n_aliases,) = struct.unpack("<I", raw)
            for _ in range(n_aliases):
                alias = _read_string(f, path)
                aliases[alias] = _read_string(f, path)
    return CTranslate2Model(spec, revision, variables, aliases)


def _count_layers(model: CTranslate2Model, stack: str) -> int:
    found = {int(m.group(2)) for name in model.variables if (m := _LAYER.match(name)) and m.group(1) == stack}
    if not found or found != set(range(max(found) + 1)):
        raise NotCTranslate2WhisperError(f"model.bin: the {stack} layers are not numbered 0..N-1 (found {sorted(found)})")
    return max(found) + 1


def whisper_config(model: CTranslate2Model, ct2_config: dict, special: Dict[str, int]):
    """A transformers ``WhisperConfig`` read off the weights' shapes and CTranslate2's config.

    Arguments
    ---------
    model : CTranslate2Model
        The parsed ``model.bin`` (a ``WhisperSpec``).
    ct2_config : dict
        CTranslate2's ``config.json`` (``suppress_ids``, ``suppress_ids_begin``).
    special : dict
        Special token name -> id from the tokenizer (``<|endoftext|>``, ``<|startoftranscript|>``).

    Returns
    -------
    transformers.WhisperConfig
    """
    from transformers import WhisperConfig

    activation = model.scalar("decoder/activation") if "decoder/activation" in model.variables else _GELU
    if activation != _GELU:
        raise NotCTranslate2WhisperError(f"model.bin: decoder activation id {activation}, Whisper's is GELU ({_GELU})")
    d_model, n_mels, _ = model.get("encoder/conv1/weight").shape
    eot = special["<|endoftext|>"]
    sot = special["<|startoftranscript|>"]
    return WhisperConfig(
        vocab_size=model.get("decoder/embeddings/weight").shape[0],
        num_mel_bins=int(n_mels),
        d_model=int(d_model),
        encoder_layers=_count_layers(model, "encoder"),
        decoder_layers=_count_layers(model, "decoder"),
        encoder_attention_heads=model.scalar("encoder/num_heads"),
        decoder_attention_heads=model.scalar("decoder/num_heads"),
        encoder_ffn_dim=int(model.get("encoder/layer_0/ffn/linear_0/weight").shape[0]),
        decoder_ffn_dim=int(model.get("decoder/layer_0/ffn/linear_0/weight").shape[0]),
        max_source_positions=int(model.get("encoder/position_encodings/encodings").shape[0]),
        max_target_positions=int(model.get("decoder/position_encodings/encodings").shape[0]),
        activation_function="gelu",
        scale_embedding=False,
        tie_word_embeddings=True,
        bos_token_id=eot,
        eos_token_id=eot,
        pad_token_id=eot,
        decoder_start_token_id=sot,
        suppress_tokens=list(ct2_config.get("suppress_ids") or []),
        begin_suppress_tokens=list(ct2_config.get("suppress_ids_begin") or []),
    )


def _attention(model, src: str, dst: str, fused: Sequence[str], n_fused: int, prefix_linear: int) -> Dict[str, np.ndarray]:
    """One attention's projections: the fused ``linear_{prefix_linear}`` split into ``fused`` roles."""
    out: Dict[str, np.ndarray] = {}
    weight = model.get(f"{src}/linear_{prefix_linear}/weight")
    bias = model.get(f"{src}/linear_{prefix_linear}/bias")
    for role, w, b in zip(fused, np.split(weight, n_fused), np.split(bias, n_fused)):
        out[f"{dst}.{role}_proj.weight"] = w
        if role != "k":  # Whisper's key projections have no bias (CTranslate2 stores zeros there)
            out[f"{dst}.{role}_proj.bias"] = b
    return out


def _linear(model, src: str, dst: str) -> Dict[str, np.ndarray]:
    return {f"{dst}.weight": model.get(f"{src}/weight"), f"{dst}.bias": model.get(f"{src}/bias")}


def _norm(model, src: str, dst: str) -> Dict[str, np.ndarray]:
    return {f"{dst}.weight": model.get(f"{src}/gamma"), f"{dst}.bias": model.get(f"{src}/beta")}


def whisper_state_dict(model: CTranslate2Model, config) -> Dict[str, torch.Tensor]:
    """transformers ``WhisperForConditionalGeneration`` weights (fp32) from CTranslate2's variables.

    Arguments
    ---------
    model : CTranslate2Model
        The parsed ``model.bin``.
    config : transformers.WhisperConfig
        From :func:`whisper_config` (layer counts).

    Returns
    -------
    dict
        ``state_dict`` keys of ``WhisperForConditionalGeneration`` -> fp32 tensors
        (``proj_out.weight`` tied to the decoder's embeddings).
    """
    sd: Dict[str, np.ndarray] = {}
    for i in (1, 2):
        sd.update(_linear(model, f"encoder/conv{i}", f"model.encoder.conv{i}"))
    sd["model.encoder.embed_positions.weight"] = model.get("encoder/position_encodings/encodings")
    sd.update(_norm(model, "encoder/layer_norm", "model.encoder.layer_norm"))
    for i in range(config.encoder_layers):
        sd.update(_layer(model, f"encoder/layer_{i}", f"model.encoder.layers.{i}"))
    sd["model.decoder.embed_tokens.weight"] = model.get("decoder/embeddings/weight")
    sd["model.decoder.embed_positions.weight"] = model.get("decoder/position_encodings/encodings")
    sd.update(_norm(model, "decoder/layer_norm", "model.decoder.layer_norm"))
    for i in range(config.decoder_layers):
        src, dst = f"decoder/layer_{i}", f"model.decoder.layers.{i}"
        sd.update(_layer(model, src, dst))
        sd.update(_attention(model, f"{src}/attention", f"{dst}.encoder_attn", "q", 1, 0))
        sd.update(_attention(model, f"{src}/attention", f"{dst}.encoder_attn", "kv", 2, 1))
        sd.update(_linear(model, f"{src}/attention/linear_2", f"{dst}.encoder_attn.out_proj"))
        sd.update(_norm(model, f"{src}/attention/layer_norm", f"{dst}.encoder_attn_layer_norm"))
    projection = "decoder/projection/weight"
    if projection in model.variables or projection in model.aliases:
        sd["proj_out.weight"] = model.get(projection)
    return {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)) for k, v in sd.items()}


def _layer(model, src: str, dst: str) -> Dict[str, np.ndarray]:
    """A layer's self-attention (fused Q/K/V split), its norm and its feed-forward block."""
    out = _attention(model, f"{src}/self_attention", f"{dst}.self_attn", "qkv", 3, 0)
    out.update(_linear(model, f"{src}/self_attention/linear_1", f"{dst}.self_attn.out_proj"))
    out.update(_norm(model, f"{src}/self_attention/layer_norm", f"{dst}.self_attn_layer_norm"))
    out.update(_linear(model, f"{src}/ffn/linear_0", f"{dst}.fc1"))
    out.update(_linear(model, f"{src}/ffn/linear_1", f"{dst}.fc2"))
    out.update(_norm(model, f"{src}/ffn/layer_norm", f"{dst}.final_layer_norm"))
    return out


def _describe(folder: Path) -> str:
    """What a folder that is not a CTranslate2 Whisper model looks like it is."""
    names = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
    if not names:
        return "it is empty"
    config = folder / "config.json"
    if config.is_file():
        try:
            data = json.loads(config.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError):
            data = {}
        if isinstance(data, dict) and data.get("model_type"):
            return (
                f"its config.json is a transformers '{data['model_type']}' config: a transformers folder, "
                "which --pretrained_dir takes as it is"
            )
    if (folder / "model.ckpt").is_file() or (folder / "hyperparams.yaml").is_file():
        return "it looks like a SpeechBrain checkpoint folder"
    return "it holds " + ", ".join(names[:8]) + (" ..." if len(names) > 8 else "")


def _special_tokens(tokenizer_json: Path) -> Dict[str, int]:
    try:
        data = json.loads(tokenizer_json.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError) as err:
        raise NotCTranslate2WhisperError(f"{tokenizer_json}: not a readable tokenizer.json ({err})") from None
    special = {t["content"]: int(t["id"]) for t in data.get("added_tokens", []) if isinstance(t, dict)}
    missing = [t for t in ("<|endoftext|>", "<|startoftranscript|>", "<|notimestamps|>") if t not in special]
    if missing:
        raise NotCTranslate2WhisperError(f"{tokenizer_json}: no Whisper special tokens {missing}: not Whisper's tokenizer")
    return special


def _generation_config(config, ct2_config: dict, special: Dict[str, int]):
    from transformers import GenerationConfig

    # transformers' rule: English-only Whisper models have 51,864 tokens, multilingual ones more (their
    # tokenizer files list the language tokens either way)
    multilingual = config.vocab_size >= 51865
    no_timestamps = special["<|notimestamps|>"]
    options = dict(
        decoder_start_token_id=special["<|startoftranscript|>"],
        bos_token_id=special["<|endoftext|>"],
        eos_token_id=special["<|endoftext|>"],
        pad_token_id=special["<|endoftext|>"],
        suppress_tokens=list(ct2_config.get("suppress_ids") or []),
        begin_suppress_tokens=list(ct2_config.get("suppress_ids_begin") or []),
        no_timestamps_token_id=no_timestamps,
        is_multilingual=multilingual,
        max_length=config.max_target_positions,
        max_initial_timestamp_index=50,
        return_timestamps=False,
    )
    if "<|startofprev|>" in special:
        options["prev_sot_token_id"] = special["<|startofprev|>"]
    if ct2_config.get("alignment_heads"):
        options["alignment_heads"] = [list(h) for h in ct2_config["alignment_heads"]]
    if multilingual:
        options["lang_to_id"] = {t: i for t, i in special.items() if re.fullmatch(r"<\|[a-z]{2,3}(_[a-z]+)?\|>", t)
                                 and t not in ("<|nocaptions|>",)}
        options["task_to_id"] = {k: special[f"<|{k}|>"] for k in ("transcribe", "translate") if f"<|{k}|>" in special}
    return GenerationConfig(**options)


def convert_ctranslate2_whisper(src, dst, overwrite: bool = False) -> Path:
    """Write a transformers Whisper folder (fp32) from a CTranslate2 Whisper folder.

    Arguments
    ---------
    src : str or pathlib.Path
        The CTranslate2 folder: ``model.bin``, ``config.json``, ``tokenizer.json``.
    dst : str or pathlib.Path
        The folder to write (created; must not hold a model unless ``overwrite``).
        Written in a temporary folder beside it and renamed into place: complete or absent.
    overwrite : bool
        Replace a model already in ``dst``.

    Returns
    -------
    pathlib.Path
        ``dst``, loadable with ``WhisperForConditionalGeneration.from_pretrained`` and
        ``WhisperProcessor.from_pretrained``.

    Raises
    ------
    NotCTranslate2WhisperError
        ``src`` is not a CTranslate2 Whisper folder (the message says what it looks like).
    FileExistsError
        ``dst`` holds a model and ``overwrite`` is False, or ``dst`` is ``src``.
    """
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration, WhisperTokenizerFast

    src, dst = Path(src).expanduser().resolve(), Path(dst).expanduser().resolve()
    if not src.is_dir():
        raise NotCTranslate2WhisperError(f"{src} is not a folder: expected a CTranslate2 Whisper folder")
    if not (src / "model.bin").is_file():
        raise NotCTranslate2WhisperError(f"{src} holds no model.bin: not a CTranslate2 model folder ({_describe(src)})")
    if dst == src or src in dst.parents:
        raise FileExistsError(f"the output folder {dst} is the CTranslate2 folder or inside it: pick another")
    if dst.exists() and any(dst.iterdir()) and not overwrite:
        raise FileExistsError(f"{dst} is not empty: pass overwrite=True (--overwrite) to replace it")
    model = read_ctranslate2_model(src / "model.bin")
    if model.spec != "WhisperSpec":
        raise NotCTranslate2WhisperError(
            f"{src / 'model.bin'} is a CTranslate2 '{model.spec}' model, not Whisper (WhisperSpec)"
        )
    ct2_config = {}
    if (src / "config.json").is_file():
        try:
            ct2_config = json.loads((src / "config.json").read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as err:
            raise NotCTranslate2WhisperError(f"{src / 'config.json'}: not valid JSON ({err})") from None
    if not (src / "tokenizer.json").is_file():
        raise NotCTranslate2WhisperError(
            f"{src} holds no tokenizer.json: Whisper's tokenizer is needed besides the weights (faster-whisper's "
            "folders ship it; ct2-transformers-converter writes it with --copy_files tokenizer.json). Copy the "
            "original model's tokenizer.json into the folder"
        )
    special = _special_tokens(src / "tokenizer.json")
    config = whisper_config(model, ct2_config, special)
    state = whisper_state_dict(model, config)
    with torch.device("meta"):
        net = WhisperForConditionalGeneration(config)
    expected = set(net.state_dict())
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise NotCTranslate2WhisperError(f"{src / 'model.bin'}: weights do not fit Whisper: missing {missing[:5]}, unexpected {unexpected[:5]}")
    net = WhisperForConditionalGeneration(config)
    net.load_state_dict(state, strict=False, assign=True)
    net.tie_weights()
    net.generation_config = _generation_config(config, ct2_config, special)
    tokenizer = WhisperTokenizerFast(
        tokenizer_file=str(src / "tokenizer.json"),
        bos_token="<|endoftext|>", eos_token="<|endoftext|>", unk_token="<|endoftext|>", pad_token="<|endoftext|>",
        predict_timestamps=False,
    )
    extractor = WhisperFeatureExtractor(feature_size=config.num_mel_bins)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{dst.name}-", dir=dst.parent))
    try:
        net.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        extractor.save_pretrained(tmp)
        (tmp / "ctranslate2_source.json").write_text(
            json.dumps({"source": str(src), "spec": model.spec, "revision": model.revision,
                        "variables": len(model.variables)}, indent=2) + "\n", encoding="utf-8"
        )
        if dst.exists():
            shutil.rmtree(dst)
        tmp.rename(dst)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    logger.info("wrote %s (Whisper, %d variables from %s)", dst, len(model.variables), src)
    return dst


def main(argv: Optional[List[str]] = None) -> int:
    """Command line: ``python -m speechbrain_cald.pretrained.ctranslate2_whisper SRC DST [--overwrite]``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("src", help="the CTranslate2 Whisper folder (model.bin, config.json, tokenizer.json)")
    parser.add_argument("dst", help="the transformers folder to write")
    parser.add_argument("--overwrite", action="store_true", help="replace a model already in DST")
    args = parser.parse_args(argv)
    try:
        out = convert_ctranslate2_whisper(args.src, args.dst, overwrite=args.overwrite)
    except (NotCTranslate2WhisperError, FileExistsError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
