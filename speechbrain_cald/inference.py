"""Trained CTC models as folders SpeechBrain's own ``EncoderASR`` loads offline.

``export_encoder_asr(model, tokens, folder)`` writes

- ``hyperparams.yaml``: the architecture from scratch (the transformers config
  inline, no pretrained folder needed; a converted student rebuilt by
  ``convert_in_place`` with the mixer options it was trained with), the
  ``encoder`` module (``CTCLogProbs``: waveforms -> CTC log-probabilities),
  the tokenizer and greedy CTC decoding;
- ``model.ckpt`` (the weights) and ``tokenizer.ckpt`` (the character
  inventory, or the SentencePiece model), which the YAML's ``pretrainer``
  loads the SpeechBrain way (``<name>.ckpt`` beside the YAML).

Then, with no network::

    from speechbrain.inference.ASR import EncoderASR
    asr = EncoderASR.from_hparams(source="results/librispeech_mamba_target/inference", savedir="/tmp/asr")
    asr.transcribe_file("talk.flac")   # a long recording goes through a linear-time student in one pass

``load_trained_model(folder)`` rebuilds a recipe's trained model from its
``hyperparams.yaml`` + ``model.ckpt`` (what stage 4 exports from).
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Any, Dict, Tuple

import torch
from torch import nn

from speechbrain_cald.lobes.hf_speech import CTCModel, HFSpeechEncoder

__all__ = ["export_encoder_asr", "load_encoder_asr", "load_trained_model"]


def load_trained_model(folder: str, key: str = "model") -> Tuple[Dict[str, Any], nn.Module]:
    """``(hparams, model in eval mode)`` from a training folder's ``hyperparams.yaml`` + ``model.ckpt``."""
    from hyperpyyaml import load_hyperpyyaml

    for name in ("hyperparams.yaml", "model.ckpt"):
        if not os.path.exists(os.path.join(folder, name)):
            raise FileNotFoundError(f"model folder '{folder}' has no {name}: train it first (stage 2 or 3)")
    with open(os.path.join(folder, "hyperparams.yaml"), encoding="utf-8") as f:
        hparams = load_hyperpyyaml(f)
    model = hparams[key]
    model.load_state_dict(torch.load(os.path.join(folder, "model.ckpt"), map_location="cpu", weights_only=True))
    return hparams, model.eval()


def _yaml_value(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def export_encoder_asr(model: nn.Module, tokens, folder: str, note: str = "") -> str:
    """Write an ``EncoderASR`` folder for a ``CTCModel`` (teacher or converted student).

    Arguments
    ---------
    model : CTCModel
        Over an :class:`HFSpeechEncoder`; a student carries ``cald_conversion``.
    tokens : CharTokens or PieceTokens
        The model's output tokens (``speechbrain_cald.data.tokens``).
    folder : str
        Output folder (created; replaced files are written aside then renamed).
    note : str
        A line for the YAML's header (where the model came from).

    Returns
    -------
    str
        ``folder``.
    """
    if not isinstance(model, CTCModel) or not isinstance(model.encoder, HFSpeechEncoder):
        raise TypeError(f"export_encoder_asr: expected a CTCModel over an HFSpeechEncoder, found {type(model).__name__}")
    if len(tokens) != model.ctc_lin.out_features:
        raise ValueError(f"export_encoder_asr: {len(tokens)} tokens but the CTC head has {model.ctc_lin.out_features} outputs")
    os.makedirs(folder, exist_ok=True)
    enc = model.encoder
    config = enc.config.to_dict()
    for unused in ("transformers_version", "architectures", "_name_or_path"):
        config.pop(unused, None)
    conversion = getattr(model, "cald_conversion", None)
    lines = [
        "# An EncoderASR folder written by speechbrain_cald.inference.export_encoder_asr.",
        f"# {note}" if note else "#",
        "# Load offline: EncoderASR.from_hparams(source=<this folder>, savedir=<any folder>)",
        f"sample_rate: {enc.sample_rate}",
        "architecture: !new:speechbrain_cald.lobes.hf_speech.CTCModel",
        "    encoder: !new:speechbrain_cald.lobes.hf_speech.HFSpeechEncoder",
        f"        config: {_yaml_value(config)}",
        f"        normalize_waveform: {_yaml_value(enc.normalize_waveform)}",
        f"        sample_rate: {enc.sample_rate}",
        "        freeze_feature_encoder: false",
        f"    n_tokens: {model.ctc_lin.out_features}",
        "    dropout: 0.0",
    ]
    if conversion is not None:
        lines += [
            "model: !apply:speechbrain_cald.convert.linear_time.convert_in_place",
            "    model: !ref <architecture>",
            f"    mixer: {conversion['mixer']}",
            f"    init: {conversion.get('init', 'default')}",
            f"    family: {conversion['family']}",
            f"    mixer_options: {_yaml_value(conversion.get('mixer_options') or {})}",
        ]
    else:
        lines += ["model: !ref <architecture>"]
    if tokens.kind == "char":
        tokenizer = ["tokenizer: !new:speechbrain.dataio.encoder.CTCTextEncoder"]
    else:
        tokenizer = ["tokenizer: !new:sentencepiece.SentencePieceProcessor"]
    lines += [
        "encoder: !new:speechbrain_cald.lobes.hf_speech.CTCLogProbs",
        "    model: !ref <model>",
        *tokenizer,
        "decoding_function: !name:speechbrain.decoders.ctc_greedy_decode",
        f"    blank_id: {tokens.blank_index}",
        "modules:",
        "    encoder: !ref <encoder>",
        "pretrainer: !new:speechbrain.utils.parameter_transfer.Pretrainer",
        "    loadables:",
        "        model: !ref <model>",
        "        tokenizer: !ref <tokenizer>",
    ]
    _atomic_write(os.path.join(folder, "hyperparams.yaml"), lambda p: open(p, "w").write("\n".join(lines) + "\n"))
    _atomic_write(os.path.join(folder, "model.ckpt"), lambda p: torch.save(model.state_dict(), p))
    _atomic_write(os.path.join(folder, "tokenizer.ckpt"), lambda p: shutil.copyfile(tokens.path, p))
    return folder


def _atomic_write(path: str, write) -> None:
    write(path + ".tmp")
    os.replace(path + ".tmp", path)


def load_encoder_asr(folder: str, savedir: str, device: str = "cpu"):
    """``EncoderASR.from_hparams`` on an exported folder (offline; files linked into ``savedir``)."""
    from speechbrain.inference.ASR import EncoderASR

    if not os.path.exists(os.path.join(folder, "hyperparams.yaml")):
        raise FileNotFoundError(f"'{folder}' is not an exported EncoderASR folder (no hyperparams.yaml): run stage 4")
    return EncoderASR.from_hparams(source=os.path.abspath(folder), savedir=os.path.abspath(savedir), run_opts={"device": device})
