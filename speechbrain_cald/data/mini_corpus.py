"""The synthetic mini corpus: seeded sentences spoken by espeak-ng voices.

Layout written under ``data_folder``::

    wav/{train,valid,test,longform,pretrain}/<ID>.wav     16 kHz mono PCM_16
    train.csv valid.csv test.csv longform.csv pretrain.csv    SpeechBrain manifests ($data_root paths)
    corpus.json                                           the configuration (written last)

A *voice* is an espeak-ng accent plus a variant (``en-gb-x-rp+f2``). Every split
uses all accents, but the variants are disjoint, so valid and test voices are
never heard in training. The long-form set concatenates test utterances with
short pauses into recordings of about ``longform_seconds`` each.

The optional ``pretrain`` split (``n_pretrain > 0``) is a different corpus for a
recipe's pre-training stage, as a self-supervised model is pre-trained on other
data than its fine-tuning task: its sentences come from a generator of their own
(``pretrain_seed``) and its voices are variants no other split uses. Adding it
leaves the bytes of the other splits unchanged.

Everything is a function of the configuration: the same configuration gives the
same bytes.
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np
import soundfile as sf

from .espeak import espeak_binary, synthesize
from .manifest import write_manifest
from .vocabulary import SentenceGenerator

__all__ = ["MiniCorpusConfig", "espeak_variants", "utterance_specs", "prepare_mini_corpus"]

ACCENTS: Tuple[str, ...] = (
    "en-us", "en", "en-gb-x-rp", "en-gb-scotland", "en-029", "en-us-nyc", "en-gb-x-gbclan", "en-gb-x-gbcwmd",
)
# Many training voices: with 12 the teacher fitted the training voices (train CTC
# loss 0.05 vs 0.38 on unseen ones, valid WER 36%). Robotic, whispered and Klatt
# variants are left out.
VARIANTS: Dict[str, Tuple[str, ...]] = {
    "train": (
        "m1", "m2", "m3", "m4", "m5", "m8", "f1", "f2", "f3", "adam", "linda", "Alex", "steph", "steph2",
        "Alicia", "Andrea", "Andy", "Denis", "Diogo", "Gene", "Henrique", "Hugo", "Jacky", "Lee", "Marco",
        "Mario", "Michael", "Mike", "Nguyen", "antonio", "aunty", "belinda", "benjamin", "boris", "caleb",
        "david", "ed", "iven", "john", "paul", "pedro", "quincy", "rob", "robert", "sandro", "shelby",
        "travis", "victor", "grandpa", "norbert", "miguel",
    ),
    "valid": ("m6", "f4", "max"),
    "test": ("m7", "f5", "edward", "Annie"),
    # the pre-training corpus: variants no other split uses (edward2, a sibling of a
    # test voice, and the robotic / whispered / Klatt ones are left out)
    "pretrain": (
        "AnxiousAndy", "Gene2", "RicishayMax", "Storm", "anika", "announcer", "gustave",
        "iven2", "marcelo", "michel", "pablo", "steph3", "zac", "grandma",
    ),
}


@dataclass
class MiniCorpusConfig:
    """What the mini corpus holds; every field changes the bytes written.

    Arguments
    ---------
    n_train, n_valid, n_test : int
        Utterances per split.
    seed : int
        Seed of sentences, voices, rates, pitches, gains, noise and long-form order.
    n_pretrain : int
        Utterances of the pre-training split (0: none).
    pretrain_seed : int
        Seed of the pre-training split's own sentences and voice draws.
    rate : (int, int)
        Speaking-rate range in words per minute (espeak-ng ``-s``), uniform.
    pitch : (int, int)
        Pitch range 0-99 (espeak-ng ``-p``), uniform.
    gain_db : (float, float)
        Level range in dB relative to espeak-ng's output.
    noise_db : float
        Level of the white dither noise in dB full scale (keeps silences non-digital).
    longform_seconds : list of float
        Target durations of the long-form recordings.
    longform_per_duration : int
        Recordings per target duration.
    pause : (float, float)
        Pause range in seconds between concatenated utterances.
    accents, variants : see module constants
    sample_rate : int
        Output sampling rate.
    """

    n_train: int = 4000
    n_valid: int = 150
    n_test: int = 300
    seed: int = 1234
    n_pretrain: int = 0
    pretrain_seed: int = 4321
    rate: Tuple[int, int] = (120, 190)
    pitch: Tuple[int, int] = (25, 75)
    gain_db: Tuple[float, float] = (-8.0, 0.0)
    noise_db: float = -60.0
    longform_seconds: List[float] = field(default_factory=lambda: [30.0, 60.0, 120.0])
    longform_per_duration: int = 2
    pause: Tuple[float, float] = (0.3, 0.8)
    accents: Tuple[str, ...] = ACCENTS
    variants: Dict[str, Tuple[str, ...]] = field(default_factory=lambda: dict(VARIANTS))
    sample_rate: int = 16000

    def to_json(self) -> str:
        """The configuration as canonical JSON (lists for tuples, sorted keys)."""
        return json.dumps(json.loads(json.dumps(asdict(self))), sort_keys=True, indent=1)


def espeak_variants() -> List[str]:
    """Names of the voice variants this espeak-ng installation has (``m3``, ``f2``, ``Alex``...).

    Returns
    -------
    list of str
        Variant names as accepted after ``+`` in ``-v en-us+m3``.
    """
    out = subprocess.run([espeak_binary(), "--voices=variant"], capture_output=True, text=True).stdout
    return sorted(set(re.findall(r"!v/(\S+)", out)))


def _check_voices(config: MiniCorpusConfig) -> None:
    # espeak-ng silently falls back to the plain accent for an unknown variant,
    # which would quietly merge "unseen" test voices into training voices.
    known = set(espeak_variants())
    wanted = {v for vs in config.variants.values() for v in vs}
    missing = sorted(wanted - known)
    if missing:
        raise ValueError(f"espeak-ng variants {missing} are not installed; available: {sorted(known)}")
    seen: Dict[str, str] = {}
    for split, vs in config.variants.items():
        for v in vs:
            if v in seen:
                raise ValueError(f"variant '{v}' is in both '{seen[v]}' and '{split}': splits must not share voices")
            seen[v] = split


def utterance_specs(config: MiniCorpusConfig) -> Dict[str, List[dict]]:
    """Draw every utterance's text, voice, rate, pitch, gain and noise seed.

    Arguments
    ---------
    config : MiniCorpusConfig
        The corpus configuration.

    Returns
    -------
    dict
        split -> list of dicts with keys ``ID, text, voice, rate, pitch, gain_db, noise_seed``.

    Example
    -------
    >>> cfg = MiniCorpusConfig(n_train=4, n_valid=2, n_test=3)
    >>> specs = utterance_specs(cfg)
    >>> [len(specs[s]) for s in ("train", "valid", "test")]
    [4, 2, 3]
    >>> specs == utterance_specs(cfg)
    True
    >>> {s["voice"].split("+")[1] for s in specs["test"]} <= set(cfg.variants["test"])
    True
    >>> specs == {k: v for k, v in utterance_specs(MiniCorpusConfig(n_train=4, n_valid=2, n_test=3, n_pretrain=2)).items()
    ...           if k != "pretrain"}  # the pre-training split changes no other split
    True
    """
    rng = random.Random(config.seed)
    sentences = SentenceGenerator(config.seed)
    specs: Dict[str, List[dict]] = {}
    for split, n in (("train", config.n_train), ("valid", config.n_valid), ("test", config.n_test)):
        specs[split] = _draw(split, n, rng, sentences, config)
    if config.n_pretrain > 0:  # its own generators: the other splits stay as they are
        specs["pretrain"] = _draw(
            "pretrain", config.n_pretrain, random.Random(config.pretrain_seed), SentenceGenerator(config.pretrain_seed), config
        )
    return specs


def _draw(split: str, n: int, rng: random.Random, sentences: SentenceGenerator, config: MiniCorpusConfig) -> List[dict]:
    return [
        dict(
            ID=f"{split}_{i:05d}",
            text=sentences.sentence(),
            voice=f"{rng.choice(config.accents)}+{rng.choice(config.variants[split])}",
            rate=rng.randint(*config.rate),
            pitch=rng.randint(*config.pitch),
            gain_db=round(rng.uniform(*config.gain_db), 2),
            noise_seed=rng.randrange(2**31),
        )
        for i in range(n)
    ]


def _to_int16(x: np.ndarray) -> np.ndarray:
    return np.round(np.clip(x, -1.0, 32767 / 32768) * 32768).astype(np.int16)


def _render(spec: dict, config: MiniCorpusConfig) -> np.ndarray:
    wav = synthesize(spec["text"], spec["voice"], spec["rate"], spec["pitch"], config.sample_rate)
    wav = wav * 10 ** (spec["gain_db"] / 20)
    noise = np.random.default_rng(spec["noise_seed"]).standard_normal(len(wav))
    return _to_int16(wav + noise * 10 ** (config.noise_db / 20))


def _write_split(data_folder: str, split: str, specs: List[dict], config: MiniCorpusConfig, workers: int) -> List[dict]:
    folder = os.path.join(data_folder, "wav", split)
    os.makedirs(folder, exist_ok=True)

    def job(spec: dict) -> dict:
        audio = _render(spec, config)
        sf.write(os.path.join(folder, spec["ID"] + ".wav"), audio, config.sample_rate, subtype="PCM_16")
        return dict(
            ID=spec["ID"],
            duration=len(audio) / config.sample_rate,
            wav=f"$data_root/wav/{split}/{spec['ID']}.wav",
            spk_id=spec["voice"],
            wrd=spec["text"],
        )

    # espeak-ng runs as a subprocess, so threads overlap well; order is kept by map.
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        rows = list(pool.map(job, specs))
    write_manifest(os.path.join(data_folder, f"{split}.csv"), rows)
    return rows


def _write_longform(data_folder: str, test_rows: List[dict], config: MiniCorpusConfig) -> List[dict]:
    rng = random.Random(config.seed + 1)
    order = list(range(len(test_rows)))
    rng.shuffle(order)
    folder = os.path.join(data_folder, "wav", "longform")
    os.makedirs(folder, exist_ok=True)
    rows, cursor, sr = [], 0, config.sample_rate
    for target in config.longform_seconds:
        for k in range(config.longform_per_duration):
            pieces, words, total = [], [], 0.0
            while total < target and cursor < len(order):
                row = test_rows[order[cursor]]
                cursor += 1
                audio, _ = sf.read(row["wav"].replace("$data_root", data_folder), dtype="int16")
                pause = np.random.default_rng(rng.randrange(2**31)).standard_normal(int(rng.uniform(*config.pause) * sr))
                pieces += [audio, _to_int16(pause * 10 ** (config.noise_db / 20))]
                words.append(row["wrd"])
                total += (len(audio) + len(pieces[-1])) / sr
            if total < target:
                raise ValueError(
                    f"not enough test utterances ({len(test_rows)}) for {config.longform_per_duration} long-form "
                    f"recording(s) of each of {config.longform_seconds} s: raise n_test or lower longform_seconds"
                )
            uid = f"long_{int(target):03d}s_{k}"
            audio = np.concatenate(pieces)
            sf.write(os.path.join(folder, uid + ".wav"), audio, sr, subtype="PCM_16")
            rows.append(dict(ID=uid, duration=len(audio) / sr, wav=f"$data_root/wav/longform/{uid}.wav", spk_id="mixed", wrd=" ".join(words)))
    write_manifest(os.path.join(data_folder, "longform.csv"), rows)
    return rows


def prepare_mini_corpus(data_folder: str, config: Optional[MiniCorpusConfig] = None, workers: int = 2) -> Dict[str, str]:
    """Synthesise the mini corpus into ``data_folder`` (skipped when it is already there).

    Arguments
    ---------
    data_folder : str
        Where wavs and manifests go.
    config : MiniCorpusConfig, optional
        What to synthesise (defaults to ``MiniCorpusConfig()``).
    workers : int
        Parallel espeak-ng processes.

    Returns
    -------
    dict
        Split name (``train, valid, test, longform``, and ``pretrain`` when
        ``n_pretrain > 0``) -> manifest path.

    Example
    -------
    >>> import tempfile
    >>> cfg = MiniCorpusConfig(n_train=2, n_valid=1, n_test=2, longform_seconds=[3.0], longform_per_duration=1)
    >>> paths = prepare_mini_corpus(tempfile.mkdtemp(), cfg)  # doctest: +SKIP
    >>> sorted(paths)  # doctest: +SKIP
    ['longform', 'test', 'train', 'valid']
    """
    config = config or MiniCorpusConfig()
    data_folder = os.path.abspath(data_folder)
    splits = ("train", "valid", "test", "longform") + (("pretrain",) if config.n_pretrain > 0 else ())
    paths = {s: os.path.join(data_folder, f"{s}.csv") for s in splits}
    stamp = os.path.join(data_folder, "corpus.json")
    if os.path.exists(stamp) and all(os.path.exists(p) for p in paths.values()):
        with open(stamp) as f:
            if f.read() == config.to_json():
                return paths
    _check_voices(config)
    os.makedirs(data_folder, exist_ok=True)
    if os.path.exists(stamp):
        os.remove(stamp)  # a changed config: rewrite everything before stamping again
    specs = utterance_specs(config)
    rows = {s: _write_split(data_folder, s, split_specs, config, workers) for s, split_specs in specs.items()}
    _write_longform(data_folder, rows["test"], config)
    with open(stamp, "w") as f:
        f.write(config.to_json())
    return paths
