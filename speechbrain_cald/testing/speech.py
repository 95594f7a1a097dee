"""Tiny stand-ins for trying the speech recipes offline: random models and corpora in the official layouts.

- :func:`save_tiny_speech_model`: a random wav2vec2 / HuBERT / WavLM /
  Wav2Vec2-Conformer saved with ``save_pretrained`` (with its
  ``preprocessor_config.json``), the real models' CNN geometry (320 samples
  per frame) at a tiny width;
- :func:`write_librispeech`: LibriSpeech as distributed
  (``<root>/<split>/<spk>/<chapter>/<spk>-<chapter>-<utt>.flac`` + one
  ``<spk>-<chapter>.trans.txt`` per chapter, upper-case transcripts);
- :func:`write_tedlium`: TED-LIUM release 3 (``<root>/legacy/<split>/{sph,stm}``)
  or release 2 (``<root>/<split>/{sph,stm}``): talk-level 16 kHz 16-bit NIST
  SPHERE audio with TED-LIUM's header fields and STM segments, including
  ``ignore_time_segment_in_scoring`` gaps and TED-LIUM's tokenisation
  (``it 's``, ``<unk>``).

Speech is espeak-ng's (deterministic): the recipes can be run end to end on a
CPU in a minute, e.g. ``python -m speechbrain_cald.testing.speech librispeech
/tmp/LibriSpeech /tmp/w2v2``. Where espeak-ng is not installed (a lent GPU
machine), :func:`tone_speech` stands in: one tone per letter, enough for a
pipeline check (nothing to learn from).
"""

from __future__ import annotations

import argparse
import os
import random
from typing import Dict, List, Optional, Sequence

import numpy as np
import soundfile as sf

__all__ = ["save_tiny_speech_model", "tone_speech", "write_librispeech", "write_sphere", "write_tedlium", "SENTENCES"]

SENTENCES = [
    "the cat sat on the mat", "a dog ran in the park", "she reads a book at night", "we go home now",
    "the sun is hot today", "he has a red car", "they like to sing", "it is a good day",
    "my friend plays the piano", "the bird flew over the house", "you can see the sea", "i want some tea",
    "the boy kicked the ball", "our team won the game", "the tree is very tall", "please open the door",
    "the night was cold and dark", "she sells sea shells", "we walked to the river", "the book is on the table",
]
VOICES = ["en-us+m3", "en-us+f2", "en-gb+m1", "en-us+f4", "en-gb+f3", "en-us+m7"]


def save_tiny_speech_model(folder: str, model_type: str = "wav2vec2", hidden_size: int = 32, layers: int = 2,
                           feat_extract_norm: str = "group", seed: int = 0) -> str:
    """Save a random tiny ``model_type`` base model (+ ``preprocessor_config.json``) into ``folder``.

    Arguments
    ---------
    folder : str
        Output directory.
    model_type : str
        ``wav2vec2``, ``hubert``, ``wavlm`` or ``wav2vec2-conformer``.
    hidden_size, layers : int
        Width and depth (heads: 2; FFN: 2 x width).
    feat_extract_norm : str
        ``"group"`` (wav2vec2-base style) or ``"layer"`` (large-lv60 style).
    seed : int
        Weights seed.

    Returns
    -------
    str
        ``folder``.
    """
    import torch
    from transformers import AutoConfig, AutoModel, Wav2Vec2FeatureExtractor

    torch.manual_seed(seed)
    cfg = AutoConfig.for_model(
        model_type, hidden_size=hidden_size, num_hidden_layers=layers, num_attention_heads=2,
        intermediate_size=2 * hidden_size, conv_dim=(16,) * 7, conv_stride=(5, 2, 2, 2, 2, 2, 2),
        conv_kernel=(10, 3, 3, 3, 3, 2, 2), num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
        feat_extract_norm=feat_extract_norm, do_stable_layer_norm=feat_extract_norm == "layer",
        mask_time_length=4, vocab_size=8,
    )
    if model_type == "wavlm":
        cfg.num_buckets, cfg.max_bucket_distance = 16, 64
    AutoModel.from_config(cfg).save_pretrained(folder)
    Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True,
                             return_attention_mask=feat_extract_norm == "layer").save_pretrained(folder)
    return folder


def _speak(text: str, voice: str) -> np.ndarray:
    from speechbrain_cald.data.espeak import synthesize

    return synthesize(text, voice=voice, rate=175)


def tone_speech(text: str, voice: str = "", sample_rate: int = 16000) -> np.ndarray:
    """A stand-in for speech with no synthesiser: 60 ms of a tone per letter, 40 ms of silence per space.

    The pitch follows the letter (and shifts with ``voice``), so transcripts
    and audio stay in step; deterministic.

    Arguments
    ---------
    text : str
        What to "say".
    voice : str
        Any label (one of ``VOICES``); shifts every pitch a little.
    sample_rate : int
        Output rate.

    Returns
    -------
    np.ndarray
        ``(N,)`` float samples in [-0.5, 0.5].

    Example
    -------
    >>> wav = tone_speech("ab c")
    >>> len(wav) == int(3 * 0.06 * 16000) + int(0.04 * 16000), float(abs(wav).max()) <= 0.5
    (True, True)
    """
    shift = sum(map(ord, voice)) % 7 * 10.0
    pieces = []
    for ch in text.lower():
        if ch == " ":
            pieces.append(np.zeros(int(0.04 * sample_rate)))
            continue
        t = np.arange(int(0.06 * sample_rate)) / sample_rate
        pieces.append(0.5 * np.sin(2 * np.pi * (150.0 + 25.0 * (ord(ch) % 32) + shift) * t) * np.hanning(len(t)))
    return np.concatenate(pieces) if pieces else np.zeros(0)


SYNTHS = {"espeak": _speak, "tones": tone_speech}


def _int16(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x * 32767), -32768, 32767).astype(np.int16)


def write_librispeech(root: str, splits: Dict[str, int], chapters_per_split: int = 2, seed: int = 0,
                      synth: str = "espeak") -> Dict[str, List[str]]:
    """Write a tiny LibriSpeech in the distributed layout.

    Arguments
    ---------
    root : str
        The corpus root (what ``--data_folder`` points to; holds the split folders).
    splits : dict
        Split name (``train-clean-100``, ``dev-clean``...) -> number of utterances.
    chapters_per_split : int
        Speaker/chapter folders per split (utterances dealt round-robin).
    seed : int
        Sentence choice.
    synth : str
        ``"espeak"`` (espeak-ng) or ``"tones"`` (:func:`tone_speech`: no synthesiser needed).

    Returns
    -------
    dict
        Split -> utterance ids written.
    """
    if synth not in SYNTHS:
        raise ValueError(f"write_librispeech: synth must be one of {sorted(SYNTHS)}, got '{synth}'")
    speak = SYNTHS[synth]
    rng = random.Random(seed)
    written: Dict[str, List[str]] = {}
    spk_base = 100
    for s_i, (split, n) in enumerate(splits.items()):
        ids = []
        chapters = [(spk_base + 10 * s_i + c, 1000 + 10 * s_i + c) for c in range(chapters_per_split)]
        per_chapter: Dict[tuple, List[str]] = {ch: [] for ch in chapters}
        for u in range(n):
            spk, chapter = chapters[u % len(chapters)]
            utt_id = f"{spk}-{chapter}-{u // len(chapters):04d}"
            text = rng.choice(SENTENCES)
            folder = os.path.join(root, split, str(spk), str(chapter))
            os.makedirs(folder, exist_ok=True)
            wav = speak(text, VOICES[(spk + u) % len(VOICES)])
            sf.write(os.path.join(folder, utt_id + ".flac"), _int16(wav), 16000, subtype="PCM_16", format="FLAC")
            per_chapter[(spk, chapter)].append(f"{utt_id} {text.upper()}")
            ids.append(utt_id)
        for (spk, chapter), lines in per_chapter.items():
            if lines:
                with open(os.path.join(root, split, str(spk), str(chapter), f"{spk}-{chapter}.trans.txt"), "w") as f:
                    f.write("\n".join(lines) + "\n")
        written[split] = ids
    return written


def write_sphere(path: str, samples: np.ndarray, sample_rate: int = 16000) -> None:
    """Write 16-bit mono PCM NIST SPHERE with TED-LIUM's header fields (1024-byte header, little-endian samples).

    Example
    -------
    >>> import tempfile
    >>> p = os.path.join(tempfile.mkdtemp(), "t.sph")
    >>> write_sphere(p, np.array([0, 1000, -1000], dtype=np.int16))
    >>> sf.read(p, dtype="int16")[0].tolist(), sf.info(p).samplerate
    ([0, 1000, -1000], 16000)
    """
    samples = np.asarray(samples, dtype="<i2")
    fields = [
        "NIST_1A", "   1024",
        f"sample_count -i {len(samples)}",
        "sample_n_bytes -i 2",
        "channel_count -i 1",
        "sample_byte_format -s2 01",
        f"sample_rate -i {sample_rate}",
        "sample_coding -s3 pcm",
        "sample_sig_bits -i 16",
        "end_head",
    ]
    header = ("\n".join(fields) + "\n").encode("ascii")
    header = header + b" " * (1024 - len(header))
    with open(path, "wb") as f:
        f.write(header)
        f.write(samples.tobytes())


# TED-LIUM's transcripts split contractions ("it 's") and mark unknown words as <unk>
_TED_TEXTS = [
    "it 's a good day", "we 're going home now", "the cat sat on the mat", "i do n't like the rain",
    "she reads a book at night", "that 's the <unk> of the story", "the sun is hot today", "you can see the sea",
    "they 've won the game", "our team played well", "he 's got a red car", "the tree is very tall",
]


def write_tedlium(root: str, talks: Dict[str, int], release: int = 3, gap_s: float = 0.6, seed: int = 0) -> Dict[str, Dict[str, List[str]]]:
    """Write a tiny TED-LIUM (release 3 ``legacy/`` layout, or release 2).

    Arguments
    ---------
    root : str
        The corpus root (``TEDLIUM_release-3`` or ``TEDLIUM_release2``).
    talks : dict
        Split (``train``, ``dev``, ``test``) -> segments per talk; two talks
        per split, each a few segments joined by silences, with an
        ``inter_segment_gap`` line (``ignore_time_segment_in_scoring``) between
        segments and a ``<unk>`` in some transcripts.
    release : int
        3 or 2.
    gap_s : float
        Silence between segments.
    seed : int
        Text choice.

    Returns
    -------
    dict
        Split -> talk -> the scored segments' transcripts (as in the STM).
    """
    rng = random.Random(seed)
    base = os.path.join(root, "legacy") if release == 3 else root
    out: Dict[str, Dict[str, List[str]]] = {}
    for s_i, (split, n_seg) in enumerate(talks.items()):
        out[split] = {}
        for t in range(2):
            talk = f"Speaker{s_i}{t}_201{t}"
            gap = np.zeros(int(gap_s * 16000))
            audio = [gap]
            stm, texts = [], []
            pos = len(gap) / 16000
            for k in range(n_seg):
                text = rng.choice(_TED_TEXTS)
                wav = _speak(text.replace(" '", "'").replace("<unk>", "mumble"), VOICES[(s_i + t + k) % len(VOICES)])
                start, stop = pos, pos + len(wav) / 16000
                stm.append(f"{talk} 1 {talk} {start:.2f} {stop:.2f} <o,f0,male> {text}")
                texts.append(text)
                audio += [wav, gap]
                pos = stop + len(gap) / 16000
                if k < n_seg - 1:
                    stm.append(f"{talk} 1 inter_segment_gap {stop:.2f} {pos:.2f} <o,,unknown> ignore_time_segment_in_scoring")
            for sub in ("sph", "stm"):
                os.makedirs(os.path.join(base, split, sub), exist_ok=True)
            write_sphere(os.path.join(base, split, "sph", f"{talk}.sph"), _int16(np.concatenate(audio)))
            with open(os.path.join(base, split, "stm", f"{talk}.stm"), "w") as f:
                f.write("\n".join(stm) + "\n")
            out[split][talk] = texts
    return out


def main(argv: Optional[Sequence[str]] = None) -> None:
    """``python -m speechbrain_cald.testing.speech {librispeech,tedlium} CORPUS_DIR MODEL_DIR [--model_type hubert]``."""
    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("corpus", choices=["librispeech", "tedlium"])
    p.add_argument("corpus_dir")
    p.add_argument("model_dir")
    p.add_argument("--model_type", default="wav2vec2")
    p.add_argument("--utterances", type=int, default=12)
    args = p.parse_args(argv)
    if args.corpus == "librispeech":
        write_librispeech(args.corpus_dir, {"train-clean-100": args.utterances, "dev-clean": 4, "test-clean": 4, "test-other": 4})
    else:
        write_tedlium(args.corpus_dir, {"train": max(2, args.utterances // 2), "dev": 2, "test": 2})
    save_tiny_speech_model(args.model_dir, args.model_type)
    print(f"{args.corpus} -> {args.corpus_dir}; tiny random {args.model_type} -> {args.model_dir}")


if __name__ == "__main__":
    main()
