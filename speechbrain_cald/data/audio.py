"""Reading audio for training and evaluation: the file must be what the model expects.

SpeechBrain's ``read_audio`` returns ``(samples,)`` for mono and ``(samples,
channels)`` for anything else and never looks at the sample rate, so a stereo
file fails batches later with an ``IndexError`` inside the features and an
8 kHz file decodes to garbage without a word. ``read_audio`` here checks the
rate and the channels first and names the file when they are wrong;
``audio_problems`` is the same check as a list of findings, used by
``speechbrain_cald.data.validate`` before training starts.
"""

from __future__ import annotations

import os
from typing import List, NamedTuple, Optional, Tuple, Union

import soundfile as sf
import torch

__all__ = ["AudioFileError", "AudioInfo", "audio_problems", "read_audio"]

# Samples decoded at the end of a file to prove it is complete: a truncated
# FLAC keeps its header's length and fails only when its last frames are read.
TAIL_SAMPLES = 1024


class AudioFileError(ValueError):
    """An audio file that cannot be used as it is (names the file and what is wrong)."""


class AudioInfo(NamedTuple):
    """What a file's header says."""

    samplerate: int
    channels: int
    frames: int


def audio_problems(
    path: str,
    sample_rate: Optional[int] = None,
    channels: Optional[int] = 1,
    min_samples: int = 1,
    check_tail: bool = True,
) -> Tuple[List[str], Optional["AudioInfo"]]:
    """What is wrong with one audio file, as short sentences (empty when nothing).

    Arguments
    ---------
    path : str
        The audio file.
    sample_rate : int, optional
        The rate the model was trained for (None: any).
    channels : int, optional
        Expected channels (None: any).
    min_samples : int
        Fewer samples than this is a problem (1: the file must not be empty).
    check_tail : bool
        Decode the last samples (catches truncated compressed files, whose
        header still states the full length; costs one seek).

    Returns
    -------
    (list of str, AudioInfo or None)
        The problems, and the file's header (None when it does not open).

    Example
    -------
    >>> import tempfile, os, numpy as np
    >>> p = os.path.join(tempfile.mkdtemp(), "a.wav")
    >>> sf.write(p, np.zeros((800, 2)), 8000)
    >>> audio_problems(p, sample_rate=16000)[0]
    ['sample rate: expected 16000 Hz, found 8000 Hz', 'channels: expected 1 (mono), found 2']
    >>> audio_problems(p + ".missing")[0]
    ['file does not exist']
    """
    if not os.path.exists(path):
        return ["file does not exist"], None
    try:
        with sf.SoundFile(path) as f:
            info = AudioInfo(f.samplerate, f.channels, f.frames)
            tail_error = None
            if check_tail and f.frames > 0:
                try:
                    f.seek(max(f.frames - TAIL_SAMPLES, 0))
                    f.read(TAIL_SAMPLES, dtype="float32")
                except (sf.LibsndfileError, RuntimeError) as err:
                    tail_error = str(err)
    except (sf.LibsndfileError, RuntimeError, OSError) as err:
        reason = str(err).replace(f"Error opening {path!r}: ", "")
        return [f"unreadable: soundfile cannot open it as audio ({reason})"], None
    problems = []
    if sample_rate is not None and info.samplerate != sample_rate:
        problems.append(f"sample rate: expected {sample_rate} Hz, found {info.samplerate} Hz")
    if channels is not None and info.channels != channels:
        problems.append(f"channels: expected {channels}{' (mono)' if channels == 1 else ''}, found {info.channels}")
    if info.frames < min_samples:
        problems.append(
            "empty: no samples" if info.frames == 0 else f"too short: {info.frames} samples (at least {min_samples})"
        )
    if tail_error is not None:
        problems.append(f"truncated or corrupt: its last samples do not decode ({tail_error})")
    return problems, info


def read_audio(
    source: Union[str, dict],
    sample_rate: Optional[int] = None,
    channels: int = 1,
) -> torch.Tensor:
    """Read a mono file (or a segment of one) as a float32 tensor ``(samples,)``.

    Arguments
    ---------
    source : str or dict
        A path, or SpeechBrain's ``{"file": path, "start": s, "stop": e}``
        (samples; ``stop`` exclusive).
    sample_rate : int, optional
        The rate the model expects; another rate is an error naming the file
        (resample the corpus first), as is more than ``channels`` channels.
    channels : int
        Expected channels (1: mono).

    Returns
    -------
    torch.Tensor
        ``(samples,)`` float32 in [-1, 1].

    Example
    -------
    >>> import tempfile, os, numpy as np
    >>> p = os.path.join(tempfile.mkdtemp(), "a.wav")
    >>> sf.write(p, np.zeros(1600), 16000)
    >>> read_audio(p, 16000).shape
    torch.Size([1600])
    >>> read_audio({"file": p, "start": 100, "stop": 300}).shape
    torch.Size([200])
    >>> read_audio(p, 8000)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    speechbrain_cald.data.audio.AudioFileError: ...a.wav: sample rate: expected 8000 Hz, found 16000 Hz (resample the corpus to 8000 Hz, or set the YAML's sample_rate)
    """
    if isinstance(source, dict):
        path, start, stop = source["file"], int(source.get("start", 0)), source.get("stop")
        stop = None if stop is None or int(stop) == start else int(stop)
    else:
        path, start, stop = source, 0, None
    with sf.SoundFile(path) as f:
        if sample_rate is not None and f.samplerate != sample_rate:
            raise AudioFileError(
                f"{path}: sample rate: expected {sample_rate} Hz, found {f.samplerate} Hz "
                f"(resample the corpus to {sample_rate} Hz, or set the YAML's sample_rate)"
            )
        if f.channels != channels:
            raise AudioFileError(
                f"{path}: channels: expected {channels}{' (mono)' if channels == 1 else ''}, found {f.channels} "
                "(downmix the corpus first, e.g. `sox in.wav -c 1 out.wav`)"
            )
        f.seek(start)
        audio = f.read(-1 if stop is None else stop - start, dtype="float32", always_2d=True)
    return torch.from_numpy(audio[:, 0].copy()) if channels == 1 else torch.from_numpy(audio)
