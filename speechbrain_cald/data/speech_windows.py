"""A speech corpus of natural English sentences in 30-second windows, synthesised offline.

The mini Whisper recipe's stage 0. Text: the example sentences of WordNet's
glosses (Debian ``wordnet-base``: ~48,000 sentences of modern English such as
"the oceans are teeming with life"), split by a seeded draw into training and
test sentences that never overlap. Voices, from the ``VOICES`` registry:
``espeak`` (espeak-ng, Debian) and ``hibari`` (PyPI ``hibari-tts``, a neural voice
distilled from Kokoro; only its bundled voice, which needs no download).
Utterances are packed into windows of up to 30 s, as Whisper was trained
(its encoder reads 30 s; a window filled with speech spends no compute on
padding), separated by short pauses; the window's transcript is its
sentences joined. Test sets per voice hold unseen sentences; the real clips of
Debian's ``pocketsphinx-testdata`` (LibriVox, cards) are copied as they are.

Manifests are SpeechBrain CSVs ``ID, duration, wav, spk_id, wrd`` under
``save_folder``; a preparation with the same options is skipped.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import re
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import soundfile as sf

from speechbrain_cald.data.espeak import resample, synthesize
from speechbrain_cald.data.librivox import POCKETSPHINX_CARDS, POCKETSPHINX_LIBRIVOX, prepare_sphinx_clips
from speechbrain_cald.data.manifest import write_manifest
from speechbrain_cald.data.prepared import already_prepared, mark_prepared

__all__ = [
    "VOICES",
    "WORDNET",
    "WindowCorpusConfig",
    "pack_windows",
    "prepare_window_corpus",
    "wordnet_sentences",
    "written",
]

logger = logging.getLogger(__name__)

WORDNET = "/usr/share/wordnet"
SAMPLE_RATE = 16000
_QUOTED = re.compile(r'"([^"]+)"')
_CLEAN = re.compile(r"^[A-Za-z][A-Za-z ,.'?!;-]*$")


class WordNetMissingError(FileNotFoundError):
    """WordNet's data files are not installed (Debian package wordnet-base)."""


def wordnet_sentences(folder: str = WORDNET, min_words: int = 6, max_words: int = 24) -> List[str]:
    """The example sentences quoted in WordNet's glosses, cleaned, unique, sorted.

    Arguments
    ---------
    folder : str
        WordNet's dictionary folder (``data.noun``, ``data.verb``, ``data.adj``, ``data.adv``).
    min_words, max_words : int
        Keep sentences of this many words (shorter examples are phrases, not sentences).

    Returns
    -------
    list of str
        Sentences of letters, spaces and ordinary punctuation (no digits, which
        a speaker and Whisper write differently), first letter kept as found.

    Raises
    ------
    WordNetMissingError
        No WordNet data in ``folder``.

    Example
    -------
    >>> import tempfile, os
    >>> d = tempfile.mkdtemp()
    >>> _ = open(os.path.join(d, "data.noun"), "w").write(
    ...     '00001 03 n | a thing; "the oceans are teeming with life"; "3 of them"; "AS IS"\\n')
    >>> wordnet_sentences(d, min_words=4)
    ['the oceans are teeming with life']
    """
    files = [os.path.join(folder, f"data.{pos}") for pos in ("noun", "verb", "adj", "adv")]
    files = [f for f in files if os.path.isfile(f)]
    if not files:
        raise WordNetMissingError(
            f"no WordNet data files (data.noun ...) in {folder}: install Debian's wordnet-base "
            "(./run.sh does: apt-get install wordnet-base)"
        )
    found = set()
    for path in files:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("  "):  # the licence header
                    continue
                gloss = line.partition(" | ")[2]
                for sentence in _QUOTED.findall(gloss):
                    sentence = " ".join(sentence.split())
                    if _CLEAN.match(sentence) and min_words <= len(sentence.split()) <= max_words:
                        found.add(sentence)
    return sorted(found)


def written(sentence: str) -> str:
    """A sentence as Whisper writes one: capital first letter, final punctuation.

    Example
    -------
    >>> written("the oceans are teeming with life"), written("is it late?")
    ('The oceans are teeming with life.', 'Is it late?')
    """
    sentence = sentence.strip()
    end = "" if sentence[-1:] in ".?!" else "."
    return sentence[:1].upper() + sentence[1:] + end


# ----------------------------------------------------------------- voices
@dataclass
class Voice:
    """A synthetic voice: ``speak(text, rng) -> float32 samples at 16 kHz``."""

    name: str
    speak: Callable[[str, random.Random], np.ndarray]
    description: str


def _espeak(text: str, rng: random.Random) -> np.ndarray:
    variant = rng.choice(["", "+m3", "+f2", "+m1", "+f4"])
    return synthesize(text, voice="en-us" + variant, rate=rng.randint(150, 185), pitch=rng.randint(35, 65)).astype(np.float32)


_HIBARI = {}


def _hibari(text: str, rng: random.Random) -> np.ndarray:
    if "tts" not in _HIBARI:
        try:
            from hibari import Hibari
        except ImportError as err:
            raise ImportError("the hibari voice needs PyPI's hibari-tts (./run.sh installs it)") from err
        _HIBARI["tts"] = Hibari(voice="heart", threads=1)  # the bundled voice: never a download
    audio = _HIBARI["tts"](text, speed=rng.uniform(0.9, 1.1), seed=rng.randint(0, 2**31 - 1))
    return resample(np.asarray(audio, dtype=np.float64), 24000, SAMPLE_RATE).astype(np.float32)


VOICES: Dict[str, Voice] = {
    "espeak": Voice("espeak", _espeak, "espeak-ng en-us, five variants, 150-185 words/min"),
    "hibari": Voice("hibari", _hibari, "hibari-tts 'heart' (neural, bundled), speed 0.9-1.1"),
}


# ----------------------------------------------------------------- packing
def pack_windows(durations: Sequence[float], max_seconds: float = 30.0, gap_seconds: float = 0.4,
                 alone: Sequence[int] = ()) -> List[List[int]]:
    """Group consecutive utterances into windows of at most ``max_seconds`` (gaps included).

    Arguments
    ---------
    durations : sequence of float
        Each utterance's length in seconds, in order.
    max_seconds : float
        The window length (Whisper: 30 s).
    gap_seconds : float
        Pause between two utterances of a window.
    alone : sequence of int
        Utterances that get a window of their own (the rest of it Whisper's padding).

    Returns
    -------
    list of list of int
        Utterance indices per window, in order; an utterance longer than a
        window is left out (named in the log).

    Example
    -------
    >>> pack_windows([10, 12, 9, 29, 31, 2], max_seconds=30, gap_seconds=1)
    [[0, 1], [2], [3], [5]]
    >>> pack_windows([5, 5, 5, 5], max_seconds=30, gap_seconds=1, alone=[1])
    [[0], [1], [2, 3]]
    """
    windows: List[List[int]] = []
    current: List[int] = []
    used = 0.0
    alone = set(alone)
    for i, d in enumerate(durations):
        if d > max_seconds:
            logger.warning("utterance %d (%.1f s) is longer than a %.0f s window: left out", i, d, max_seconds)
            continue
        if i in alone:
            if current:
                windows.append(current)
            windows.append([i])
            current, used = [], 0.0
            continue
        need = d if not current else used + gap_seconds + d
        if current and need > max_seconds:
            windows.append(current)
            current, used = [], 0.0
            need = d
        current.append(i)
        used = need
    if current:
        windows.append(current)
    return windows


@dataclass
class WindowCorpusConfig:
    """What the corpus holds; every field changes the bytes written.

    Arguments
    ---------
    voices : list of str
        Names in ``VOICES``.
    train_sentences : int
        Training sentences (each spoken by one voice, drawn in turn).
    test_sentences : int
        Unseen sentences per voice's test set.
    dev_sentences : int
        Unseen sentences for validation (all voices in turn).
    max_seconds, gap_seconds : float
        Window length and pause (``pack_windows``).
    seed : int
        The draw of sentences and voice settings.
    noise_snr_db : tuple of float
        Training windows get white noise at an SNR drawn in this range (dB);
        None: clean.
    real_sets : bool
        Copy pocketsphinx-testdata's LibriVox and cards clips when installed.
    alone_fraction : float
        Share of the training sentences that get a window of their own, the rest
        of it padding: what a short recording looks like to Whisper.
    """

    voices: List[str] = field(default_factory=lambda: ["espeak", "hibari"])
    train_sentences: int = 2000
    test_sentences: int = 100
    dev_sentences: int = 40
    max_seconds: float = 30.0
    gap_seconds: float = 0.4
    seed: int = 1234
    noise_snr_db: Optional[Tuple[float, float]] = (25.0, 45.0)
    real_sets: bool = True
    alone_fraction: float = 0.05


def _render_one(job: Tuple[str, str, int, bool, Optional[Tuple[float, float]]]) -> np.ndarray:
    """One utterance: the voice, a level, optional white noise; its own seeded draw (order-free)."""
    text, voice, seed, noisy, snr_range = job
    rng = random.Random(seed)
    audio = VOICES[voice].speak(text, rng)
    peak = float(np.abs(audio).max()) or 1.0
    audio = audio / peak * rng.uniform(0.3, 0.9)
    if noisy and snr_range is not None:
        snr = rng.uniform(*snr_range)
        power = float(np.mean(audio**2))
        noise = np.random.default_rng(rng.randint(0, 2**31)).standard_normal(len(audio)).astype(np.float32)
        audio = audio + noise * np.sqrt(power / 10 ** (snr / 10))
    return audio.astype(np.float32)


def _render(items: List[Tuple[str, str]], split: str, config: WindowCorpusConfig, noisy: bool,
            workers: int) -> List[np.ndarray]:
    base = int(hashlib.sha256(f"{config.seed}:{split}".encode()).hexdigest()[:8], 16)
    jobs = [(text, voice, base + i, noisy, config.noise_snr_db) for i, (text, voice) in enumerate(items)]
    if workers <= 1 or len(jobs) < 8:
        return [_render_one(j) for j in jobs]
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        return pool.map(_render_one, jobs, chunksize=8)


def _write_windows(save_folder: str, split: str, items: List[Tuple[str, str]], config: WindowCorpusConfig,
                   noisy: bool, workers: int, alone_fraction: float = 0.0) -> str:
    """Synthesise ``items`` ((sentence, voice) in order), pack them, write wavs + manifest."""
    folder = os.path.join(save_folder, "wav", split)
    os.makedirs(folder, exist_ok=True)
    audios = _render(items, split, config, noisy, workers)
    durations = [len(a) / SAMPLE_RATE for a in audios]
    gap = np.zeros(int(config.gap_seconds * SAMPLE_RATE), dtype=np.float32)
    rows = []
    step = int(round(1 / alone_fraction)) if alone_fraction > 0 else 0
    alone = range(step // 2, len(items), step) if step else ()
    for n, window in enumerate(pack_windows(durations, config.max_seconds, config.gap_seconds, alone)):
        parts: List[np.ndarray] = []
        for i in window:
            if parts:
                parts.append(gap)
            parts.append(audios[i])
        audio = np.clip(np.concatenate(parts), -1.0, 32767 / 32768)
        voices = sorted({items[i][1] for i in window})
        uid = f"{split}-{n:05d}"
        sf.write(os.path.join(folder, uid + ".wav"), np.round(audio * 32768).astype(np.int16), SAMPLE_RATE,
                 subtype="PCM_16")
        rows.append(dict(ID=uid, duration=len(audio) / SAMPLE_RATE, wav=f"$data_root/wav/{split}/{uid}.wav",
                         spk_id="+".join(voices), wrd=" ".join(written(items[i][0]) for i in window)))
    path = os.path.join(save_folder, f"{split}.csv")
    write_manifest(path, rows)
    logger.info("%s: %d windows, %.1f min of speech", path, len(rows), sum(durations) / 60)
    return path


def prepare_window_corpus(save_folder: str, config: Optional[WindowCorpusConfig] = None,
                          wordnet_folder: str = WORDNET, workers: int = 2) -> Dict[str, str]:
    """Write the corpus (skipped when ``save_folder`` holds the same preparation).

    Arguments
    ---------
    save_folder : str
        Where the wavs (``wav/<split>/``) and manifests (``<split>.csv``) go.
    config : WindowCorpusConfig, optional
        Sizes, voices, seed.
    wordnet_folder : str
        WordNet's data folder.
    workers : int
        Processes that synthesise (the result does not depend on it).

    Returns
    -------
    dict
        Split -> manifest: ``train``, ``dev``, ``test_<voice>`` per voice, and
        ``librivox`` / ``cards`` when pocketsphinx-testdata is installed.
    """
    config = config or WindowCorpusConfig()
    unknown = [v for v in config.voices if v not in VOICES]
    if unknown:
        raise KeyError(f"unknown voice(s) {unknown}: expected names from {sorted(VOICES)}")
    splits = ["train", "dev"] + [f"test_{v}" for v in config.voices]
    real = {"librivox": (POCKETSPHINX_LIBRIVOX, "transcription"), "cards": (POCKETSPHINX_CARDS, "cards.transcription")}
    if config.real_sets:
        splits += [name for name, (src, tr) in real.items() if os.path.isfile(os.path.join(src, tr))]
    outputs = {s: os.path.join(save_folder, f"{s}.csv") for s in splits}
    options = asdict(config)
    if already_prepared(save_folder, "speech_windows", options, outputs.values()):
        logger.info("skip: %s already holds this corpus", save_folder)
        return outputs
    sentences = wordnet_sentences(wordnet_folder)
    rng = random.Random(config.seed)
    rng.shuffle(sentences)
    n_test = config.test_sentences * len(config.voices)
    need = config.train_sentences + config.dev_sentences + n_test
    if need > len(sentences):
        raise ValueError(f"the corpus asks for {need} sentences, WordNet has {len(sentences)}")
    test, dev = sentences[:n_test], sentences[n_test:n_test + config.dev_sentences]
    train = sentences[n_test + config.dev_sentences:need]
    voices = config.voices
    _write_windows(save_folder, "train", [(s, voices[i % len(voices)]) for i, s in enumerate(train)], config, True, workers,
                   config.alone_fraction)
    _write_windows(save_folder, "dev", [(s, voices[i % len(voices)]) for i, s in enumerate(dev)], config, False, workers)
    for k, voice in enumerate(voices):
        part = test[k * config.test_sentences:(k + 1) * config.test_sentences]
        _write_windows(save_folder, f"test_{voice}", [(s, voice) for s in part], config, False, workers)
    for name in splits:
        if name in real:
            prepare_sphinx_clips(save_folder, name, *real[name])
    mark_prepared(save_folder, "speech_windows", options)
    return outputs
