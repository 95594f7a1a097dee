"""Real human speech for testing: the LibriVox utterances of Debian's pocketsphinx-testdata.

Five utterances of *Sense and Sensibility* read by a LibriVox volunteer, with
their transcripts, live in ``/usr/share/pocketsphinx/test/data/librivox`` when
the package ``pocketsphinx-testdata`` is installed. They make an out-of-domain
test set for models trained on synthetic speech (report it, never tune to it).
"""

from __future__ import annotations

import os
import re
from typing import Dict, List, Optional

import numpy as np
import soundfile as sf

from .espeak import resample
from .manifest import write_manifest

__all__ = ["POCKETSPHINX_CARDS", "POCKETSPHINX_LIBRIVOX", "read_transcription", "prepare_librivox", "prepare_sphinx_clips"]

POCKETSPHINX_LIBRIVOX = "/usr/share/pocketsphinx/test/data/librivox"
# five spoken card names ("ten of clubs"), another real speaker
POCKETSPHINX_CARDS = "/usr/share/pocketsphinx/test/data/cards"
_LINE = re.compile(r"^\s*(?:<s>)?\s*(?P<text>.*?)\s*(?:</s>)?\s*\((?P<id>[^()]+)\)\s*$")


def read_transcription(path: str) -> Dict[str, str]:
    """Parse a Sphinx ``transcription`` file: ``<s> words </s> (utterance_id)`` per line.

    Arguments
    ---------
    path : str
        The transcription file.

    Returns
    -------
    dict
        Utterance id -> lowercase transcript with single spaces.

    Example
    -------
    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "transcription")
    >>> _ = open(p, "w").write("<s> He was  NOT ill </s> (utt-1)\\n")
    >>> read_transcription(p)
    {'utt-1': 'he was not ill'}
    """
    out: Dict[str, str] = {}
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            m = _LINE.match(line)
            if m is None:
                raise ValueError(f"{path}:{n}: expected '<s> words </s> (id)', found {line.strip()!r}")
            out[m["id"]] = " ".join(m["text"].lower().split())
    return out


def prepare_librivox(data_folder: str, source: str = POCKETSPHINX_LIBRIVOX, sample_rate: int = 16000) -> Optional[str]:
    """Copy the LibriVox utterances as 16 kHz wavs and write ``librivox.csv``.

    Arguments
    ---------
    data_folder : str
        The corpus folder (wavs go to ``wav/librivox``).
    source : str
        Folder with ``transcription`` and ``<id>.wav`` files.
    sample_rate : int
        Output sampling rate.

    Returns
    -------
    str or None
        The manifest path, or None when ``source`` does not exist.
    """
    return prepare_sphinx_clips(data_folder, "librivox", source, "transcription", sample_rate)


def prepare_sphinx_clips(
    data_folder: str, name: str, source: str, transcription: str, sample_rate: int = 16000
) -> Optional[str]:
    """Copy a folder of Sphinx test clips (``<id>.wav`` + a transcription file) and write ``<name>.csv``.

    Arguments
    ---------
    data_folder : str
        The corpus folder (wavs go to ``wav/<name>``).
    name : str
        The set's name (``librivox``, ``cards``): manifest, folder and speaker id.
    source : str
        Folder with the transcription file and ``<id>.wav`` files.
    transcription : str
        The transcription file's name inside ``source`` (``transcription``, ``cards.transcription``).
    sample_rate : int
        Output sampling rate.

    Returns
    -------
    str or None
        The manifest path, or None when ``source`` has no such transcription.
    """
    transcription = os.path.join(source, transcription)
    if not os.path.exists(transcription):
        return None
    folder = os.path.join(data_folder, "wav", name)
    os.makedirs(folder, exist_ok=True)
    rows: List[dict] = []
    for uid, text in sorted(read_transcription(transcription).items()):
        src = os.path.join(source, uid + ".wav")
        audio, sr = sf.read(src, dtype="float64")
        if audio.ndim == 2:
            audio = audio.mean(axis=1)
        audio = resample(audio, sr, sample_rate)
        pcm = np.round(np.clip(audio, -1.0, 32767 / 32768) * 32768).astype(np.int16)
        sf.write(os.path.join(folder, uid + ".wav"), pcm, sample_rate, subtype="PCM_16")
        rows.append(dict(ID=uid, duration=len(pcm) / sample_rate, wav=f"$data_root/wav/{name}/{uid}.wav", spk_id=name, wrd=text))
    path = os.path.join(data_folder, f"{name}.csv")
    write_manifest(path, rows)
    return path
