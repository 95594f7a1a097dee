"""Trained models as folders SpeechBrain's own ``EncoderASR`` / ``EncoderClassifier`` load offline.

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

``export_encoder_classifier(model, label_encoder_file, folder)`` writes the same
for an utterance classifier (``EncoderClassifier``: ``classify_file``), with
``label_encoder.ckpt`` instead of the tokenizer.

``load_trained_model(folder)`` rebuilds a recipe's trained model from its
``hyperparams.yaml`` + ``model.ckpt`` (what stage 4 exports from).
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Any, Dict, List, Tuple

import torch
from torch import nn

from speechbrain_cald.lobes.hf_speech import CTCModel, HFSpeechEncoder
from speechbrain_cald.files import atomic_target

__all__ = [
    "WhisperTranscriber",
    "export_encoder_asr",
    "export_encoder_classifier",
    "load_encoder_asr",
    "load_encoder_classifier",
    "load_trained_model",
    "load_whisper_folder",
    "whisper_encoder_factory",
]


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


def _model_lines(model: nn.Module, head_class: str, head_args: Dict[str, Any]) -> List[str]:
    """YAML lines that rebuild ``model`` from scratch: ``sample_rate``, ``architecture`` and ``model``.

    ``architecture`` is ``head_class`` (``CTCModel``, ``UtteranceClassifier``...) over an
    :class:`HFSpeechEncoder` with the transformers config inline; ``model`` is it, or, for a
    converted student, it converted again by ``convert_in_place`` with the mixer options
    the student was trained with. The weights come from ``model.ckpt``.
    """
    enc = model.encoder
    config = enc.config.to_dict()
    for unused in ("transformers_version", "architectures", "_name_or_path"):
        config.pop(unused, None)
    lines = [
        f"sample_rate: {enc.sample_rate}",
        f"architecture: !new:{head_class}",
        "    encoder: !new:speechbrain_cald.lobes.hf_speech.HFSpeechEncoder",
        f"        config: {_yaml_value(config)}",
        f"        normalize_waveform: {_yaml_value(enc.normalize_waveform)}",
        f"        sample_rate: {enc.sample_rate}",
        "        freeze_feature_encoder: false",
        *(f"    {key}: {_yaml_value(value)}" for key, value in head_args.items()),
        "    dropout: 0.0",
    ]
    conversion = getattr(model, "cald_conversion", None)
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
    return lines


def _write_folder(
    folder: str,
    interface: str,
    writer: str,
    model: nn.Module,
    head_class: str,
    head_args: Dict[str, Any],
    slots: List[str],
    modules: List[str],
    companion: Tuple[str, str],
    note: str,
) -> str:
    """Write an inference folder SpeechBrain's ``interface`` (``EncoderASR``...) loads: YAML, ``model.ckpt``, a companion.

    The YAML is a header (naming ``writer``, the public function), the model (:func:`_model_lines`), the interface's ``slots``,
    ``modules`` (names of slots) and a ``pretrainer`` loading ``model`` and the companion
    ``(name, source file)`` from ``model.ckpt`` and ``<name>.ckpt``.
    """
    name, source = companion
    os.makedirs(folder, exist_ok=True)
    lines = [
        f"# An {interface} folder written by speechbrain_cald.inference.{writer}.",
        f"# {note}" if note else "#",
        f"# Load offline: {interface}.from_hparams(source=<this folder>, savedir=<any folder>)",
        *_model_lines(model, head_class, head_args),
        *slots,
        "modules:",
        *(f"    {m}: !ref <{m}>" for m in modules),
        "pretrainer: !new:speechbrain.utils.parameter_transfer.Pretrainer",
        "    loadables:",
        "        model: !ref <model>",
        f"        {name}: !ref <{name}>",
    ]
    _atomic_write(os.path.join(folder, "hyperparams.yaml"), lambda p: open(p, "w").write("\n".join(lines) + "\n"))
    _atomic_write(os.path.join(folder, "model.ckpt"), lambda p: torch.save(model.state_dict(), p))
    _atomic_write(os.path.join(folder, f"{name}.ckpt"), lambda p: shutil.copyfile(source, p))
    return folder


def _from_hparams(interface, folder: str, savedir: str, device: str):
    """``interface.from_hparams`` on an exported folder (offline; files linked into ``savedir``)."""
    if not os.path.exists(os.path.join(folder, "hyperparams.yaml")):
        raise FileNotFoundError(
            f"'{folder}' is not an exported {interface.__name__} folder (no hyperparams.yaml): run stage 4"
        )
    return interface.from_hparams(source=os.path.abspath(folder), savedir=os.path.abspath(savedir), run_opts={"device": device})


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
    tokenizer = "speechbrain.dataio.encoder.CTCTextEncoder" if tokens.kind == "char" else "sentencepiece.SentencePieceProcessor"
    slots = [
        "encoder: !new:speechbrain_cald.lobes.hf_speech.CTCLogProbs",
        "    model: !ref <model>",
        f"tokenizer: !new:{tokenizer}",
        "decoding_function: !name:speechbrain.decoders.ctc_greedy_decode",
        f"    blank_id: {tokens.blank_index}",
    ]
    return _write_folder(folder, "EncoderASR", "export_encoder_asr", model, "speechbrain_cald.lobes.hf_speech.CTCModel",
                         {"n_tokens": model.ctc_lin.out_features}, slots, ["encoder"], ("tokenizer", tokens.path), note)


def _atomic_write(path: str, write) -> None:
    with atomic_target(path) as tmp:
        write(tmp)


def load_encoder_asr(folder: str, savedir: str, device: str = "cpu"):
    """``EncoderASR.from_hparams`` on an exported folder (offline; files linked into ``savedir``)."""
    from speechbrain.inference.ASR import EncoderASR

    return _from_hparams(EncoderASR, folder, savedir, device)


def export_encoder_classifier(model: nn.Module, label_encoder_file: str, folder: str, note: str = "") -> str:
    """Write an ``EncoderClassifier`` folder for an ``UtteranceClassifier`` (teacher or converted student).

    ``embedding_model`` is the pooled encoder output ``(B, 1, D)``, ``classifier``
    the head's log-probabilities ``(B, 1, C)``; the features and normalisation
    slots pass the waveform through (the encoder normalises it itself). The
    label encoder (``label_encoder.ckpt``) gives ``classify_batch`` its text labels.

    Arguments
    ---------
    model : UtteranceClassifier
        Over an :class:`HFSpeechEncoder`; a student carries ``cald_conversion``.
    label_encoder_file : str
        The model's label encoder (``CategoricalEncoder`` text file).
    folder, note : str
        The output folder and the header line, as for :func:`export_encoder_asr`.

    Returns
    -------
    str
        ``folder``.
    """
    from speechbrain_cald.data.labels import load_label_encoder
    from speechbrain_cald.tasks.classification import UtteranceClassifier

    if not isinstance(model, UtteranceClassifier) or not isinstance(model.encoder, HFSpeechEncoder):
        raise TypeError(
            f"export_encoder_classifier: expected an UtteranceClassifier over an HFSpeechEncoder, found {type(model).__name__}"
        )
    load_label_encoder(label_encoder_file, expect=model.n_classes)  # the head and the labels agree
    adapters = "speechbrain_cald.tasks.classification"
    slots = [
        f"compute_features: !new:{adapters}.PassThrough",
        f"mean_var_norm: !new:{adapters}.PassThrough",
        f"embedding_model: !new:{adapters}.UtteranceEmbedding",
        "    model: !ref <model>",
        f"classifier: !new:{adapters}.UtteranceLogProbs",
        "    model: !ref <model>",
        "label_encoder: !new:speechbrain.dataio.encoder.CategoricalEncoder",
    ]
    modules = ["compute_features", "mean_var_norm", "embedding_model", "classifier"]
    return _write_folder(folder, "EncoderClassifier", "export_encoder_classifier", model, f"{adapters}.UtteranceClassifier",
                         {"n_classes": model.n_classes}, slots, modules, ("label_encoder", label_encoder_file), note)


def load_encoder_classifier(folder: str, savedir: str, device: str = "cpu"):
    """``EncoderClassifier.from_hparams`` on an exported folder (offline; files linked into ``savedir``)."""
    from speechbrain.inference.classifiers import EncoderClassifier

    classifier = _from_hparams(EncoderClassifier, folder, savedir, device)
    classifier.hparams.label_encoder.expect_len(len(classifier.hparams.label_encoder))
    return classifier


# ------------------------------------------------------------------ Whisper
def load_whisper_folder(folder: str) -> nn.Module:
    """A Whisper teacher (``save_pretrained``) or converted student (``save_student``) from a folder, in eval mode."""
    from speechbrain_cald.pretrained import local_source

    folder = str(local_source(folder, "Whisper model"))
    if os.path.isfile(os.path.join(folder, "cald_conversion.json")):
        from speechbrain_cald.convert import load_student

        return load_student(folder).eval()
    from transformers import WhisperForConditionalGeneration

    from speechbrain_cald.convert.io import load_pretrained

    return load_pretrained(folder, WhisperForConditionalGeneration, "Whisper model").eval()


def whisper_encoder_factory(folder: str) -> Tuple[Callable[[torch.Tensor], torch.Tensor], Callable[[float], torch.Tensor]]:
    """``bench.speed`` factory: time Whisper's encoder layers on ``seconds`` of audio (front end outside the timing)."""
    from speechbrain_cald.lobes.whisper import encoder_frontend, encoder_layers

    model = load_whisper_folder(folder)
    encoder = model.get_encoder()
    with open(os.path.join(folder, "preprocessor_config.json"), encoding="utf-8") as f:
        hop = json.load(f).get("hop_length", 160)
    n_mels = encoder.conv1.in_channels

    def make_input(seconds: float) -> torch.Tensor:
        frames = int(round(seconds * 16000 / hop))
        with torch.no_grad():
            return encoder_frontend(encoder, torch.randn(1, n_mels, frames))

    return (lambda x: encoder_layers(encoder, x)), make_input


class WhisperTranscriber:
    """A Whisper teacher or converted student from its ``inference/`` folder, with ``transcribe_file``.

    SpeechBrain's ``WhisperASR`` builds its encoder from a transformers checkpoint by
    name and cannot hold a converted encoder, so the Whisper recipes' folders are
    read by this class (same call as SpeechBrain's interfaces). A file longer
    than 30 s is cut into 30-s windows, transcribed one after the other (no
    timestamps, no context carried over).

    Arguments
    ---------
    model : transformers.WhisperForConditionalGeneration
        Teacher or student, in eval mode.
    text : lobes.whisper.WhisperText
        Tokenizer and prompt.
    extractor : transformers.WhisperFeatureExtractor
        The log-mel front end.

    Example
    -------
    >>> asr = WhisperTranscriber.from_hparams("results/mini_mamba_target/inference")  # doctest: +SKIP
    >>> asr.transcribe_file("/usr/share/pocketsphinx/test/data/librivox/sense_and_sensibility_01_austen_64kb-0880.wav")  # doctest: +SKIP
    'He was not an ill-disposed young man.'
    """

    def __init__(self, model, text, extractor):
        self.model, self.text, self.extractor = model, text, extractor

    @classmethod
    def from_hparams(cls, source: str, savedir: str = None) -> "WhisperTranscriber":
        """Load ``source`` (an ``inference/`` folder; ``savedir`` is accepted for SpeechBrain's call and unused)."""
        from transformers import WhisperFeatureExtractor

        from speechbrain_cald.lobes.whisper import WhisperText

        model = load_whisper_folder(source)
        return cls(model, WhisperText(source), WhisperFeatureExtractor.from_pretrained(source))

    def transcribe_file(self, path: str) -> str:
        """The transcript of an audio file (any rate: resampled to 16 kHz; several channels: averaged)."""
        import soundfile as sf

        from speechbrain_cald.data.espeak import resample
        from speechbrain_cald.lobes.whisper import greedy_decode, log_mel

        try:
            audio, rate = sf.read(path, dtype="float64", always_2d=True)
        except (RuntimeError, sf.LibsndfileError) as err:
            raise ValueError(f"{path}: not a readable audio file ({err})") from None
        audio = audio.mean(axis=1)
        if rate != 16000:
            audio = resample(audio, rate, 16000)
        if len(audio) == 0:
            raise ValueError(f"{path}: no audio samples")
        window = 30 * 16000
        feats = [torch.from_numpy(log_mel(self.extractor, audio[i:i + window].astype("float32")))
                 for i in range(0, len(audio), window)]
        ids = greedy_decode(self.model, torch.stack(feats), self.text)
        return " ".join(t for t in (self.text.decode(i) for i in ids) if t)
