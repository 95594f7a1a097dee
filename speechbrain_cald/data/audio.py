"""Reading audio for training and evaluation (soundfile only): the file must be what the model expects.

SpeechBrain's ``read_audio`` returns ``(samples,)`` for mono and ``(samples,
channels)`` for anything else and never looks at the sample rate, so a stereo
file fails batches later with an ``IndexError`` inside the features and an
8 kHz file decodes to garbage without a word. :func:`read_audio` here reads a
file or a segment of one (FLAC, WAV, NIST SPHERE, ...), checks the rate and
the channels first and names the file when they are wrong;
:func:`audio_problems` is the same check as a list of findings, used by
``speechbrain_cald.data.validate`` before training starts;
:func:`speech_datasets` builds the SpeechBrain ``DynamicItemDataset`` s of
speech recipes (``ID, duration, wav`` manifests, with ``start`` / ``stop`` in
seconds for segments cut from a longer recording such as a TED-LIUM talk).
"""

from __future__ import annotations

import os
from typing import Callable, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple, Union

import soundfile as sf
import speechbrain as sb
import torch

__all__ = [
    "AudioFileError",
    "AudioFormatError",
    "AudioInfo",
    "audio_info",
    "audio_problems",
    "declared_frames",
    "read_audio",
    "speech_datasets",
    "truncation_problem",
]

# Samples decoded at the end of a file to prove it is complete: a truncated
# FLAC keeps its header's length and fails only when its last frames are read.
TAIL_SAMPLES = 1024


class AudioFileError(ValueError):
    """An audio file that cannot be used as it is (names the file and what is wrong)."""


AudioFormatError = AudioFileError  # the name the speech-recipe code first used


def audio_info(path: str):
    """soundfile's ``info`` (``samplerate``, ``frames``, ``channels``, ``duration``), with the path in errors."""
    try:
        return sf.info(path)
    except (RuntimeError, sf.LibsndfileError) as err:
        raise AudioFileError(f"{path}: unreadable: soundfile cannot open it as audio ({err})") from None


def _sphere_declared_frames(head: bytes) -> Optional[int]:
    """``sample_count`` of a NIST SPHERE header (None: not stated, or compressed samples)."""
    fields = {}
    for line in head.split(b"end_head", 1)[0].decode("ascii", "replace").splitlines()[2:]:
        parts = line.split(None, 2)
        if len(parts) == 3:
            fields[parts[0]] = parts[2].strip()
    if "shorten" in fields.get("sample_coding", "") or not fields.get("sample_count", "").isdigit():
        return None
    return int(fields["sample_count"])


def _wav_declared_frames(path: str) -> Optional[int]:
    """Frames the ``data`` chunk's size states in a RIFF WAVE file (None: not found, or a streaming placeholder)."""
    offset, block_align = 12, None
    with open(path, "rb") as f:
        while True:
            f.seek(offset)
            chunk = f.read(8)
            if len(chunk) < 8:
                return None
            size = int.from_bytes(chunk[4:], "little")
            if chunk[:4] == b"fmt ":
                block_align = int.from_bytes(f.read(14)[12:14], "little")
            elif chunk[:4] == b"data":
                if not block_align or size in (0, 0xFFFFFFFF):
                    return None
                return size // block_align
            offset += 8 + size + (size & 1)


def declared_frames(path: str) -> Optional[int]:
    """The samples per channel a file's header declares, where it states them apart from the content.

    NIST SPHERE (``sample_count``) and WAV (the ``data`` chunk's size): soundfile
    reports what the file holds, so a file cut short in a copy reads as a
    shorter recording without a word. None for other formats (a truncated
    FLAC keeps its length and fails to decode its end: ``audio_problems``'s
    tail check).

    Example
    -------
    >>> import tempfile, numpy as np
    >>> p = os.path.join(tempfile.mkdtemp(), "a.wav")
    >>> sf.write(p, np.zeros(1000), 16000, subtype="PCM_16")
    >>> declared_frames(p)
    1000
    >>> _ = open(p, "r+b").truncate(44 + 2 * 400)
    >>> declared_frames(p), sf.info(p).frames
    (1000, 400)
    """
    with open(path, "rb") as f:
        head = f.read(1024)
    if head.startswith(b"NIST_1A"):
        return _sphere_declared_frames(head)
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return _wav_declared_frames(path)
    return None


def truncation_problem(path: str, frames: int) -> Optional[str]:
    """A sentence when the header of ``path`` declares more than the ``frames`` it holds, else None."""
    declared = declared_frames(path)
    if declared is None or declared <= frames:
        return None
    return (
        f"truncated: the header says {declared} samples, the file holds {frames} "
        f"({frames / declared:.0%}; an interrupted copy or download?)"
    )


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

    Besides rate, channels and length: a header that declares more samples
    than the file holds (a SPHERE or WAV cut short, :func:`truncation_problem`)
    and, with ``check_tail``, a compressed file whose end does not decode.

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
    cut = truncation_problem(path, info.frames)
    if cut is not None:
        problems.append(cut)
    return problems, info


def read_audio(
    source: Union[str, dict],
    sample_rate: Optional[int] = None,
    channels: int = 1,
    start: Optional[float] = None,
    stop: Optional[float] = None,
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
    start, stop : float, optional
        Segment bounds in **seconds** for a path ``source`` (None: the start /
        the end of the file).

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
    >>> read_audio(p, 16000, start=0.025, stop=0.05).shape
    torch.Size([400])
    >>> read_audio(p, 8000)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    speechbrain_cald.data.audio.AudioFileError: ...a.wav: sample rate: expected 8000 Hz, found 16000 Hz (resample the corpus to 8000 Hz, or set the YAML's sample_rate)
    """
    if isinstance(source, dict):
        path, first, last = source["file"], int(source.get("start", 0)), source.get("stop")
        last = None if last is None or int(last) == first else int(last)
    else:
        path, first, last = source, None, None
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
        if first is None:  # seconds (or the whole file)
            first = 0 if start is None else int(round(float(start) * f.samplerate))
            last = f.frames if stop is None else min(int(round(float(stop) * f.samplerate)), f.frames)
            if first >= last:
                raise AudioFileError(f"{path}: empty segment [{start}, {stop}) s of a {f.frames / f.samplerate:.2f} s file")
        f.seek(first)
        audio = f.read(-1 if last is None else last - first, dtype="float32", always_2d=True)
    return torch.from_numpy(audio[:, 0].copy()) if channels == 1 else torch.from_numpy(audio)


def _optional_float(value) -> Optional[float]:
    return None if value in (None, "", "None") else float(value)


def speech_datasets(
    csv_files: Mapping[str, str],
    data_root: str,
    sample_rate: int = 16000,
    text_pipeline: Optional[Callable] = None,
    text_keys: Sequence[str] = (),
    sort: Optional[str] = None,
) -> Dict[str, sb.dataio.dataset.DynamicItemDataset]:
    """SpeechBrain datasets for ``{name: manifest}``: ``id``, ``sig`` and the text keys.

    Arguments
    ---------
    csv_files : mapping
        Dataset name -> manifest CSV (``ID, duration, wav``; optional
        ``start``, ``stop`` seconds; ``wrd`` etc.).
    data_root : str
        What ``$data_root`` in the manifests stands for (the corpus root).
    sample_rate : int
        Every file must have this rate.
    text_pipeline : callable, optional
        A SpeechBrain ``@takes/@provides`` function added to each dataset
        (e.g. ``wrd -> wrd, tokens``).
    text_keys : sequence of str
        The keys it provides, added to the outputs.
    sort : str, optional
        ``"ascending"`` / ``"descending"`` by duration (long-form evaluation
        and dynamic batching sort themselves).

    Returns
    -------
    dict
        Name -> dataset with output keys ``id, sig, *text_keys``.
    """

    @sb.utils.data_pipeline.takes("wav", "start", "stop")
    @sb.utils.data_pipeline.provides("sig")
    def segment_pipeline(wav, start, stop):
        return read_audio(wav, sample_rate, start=_optional_float(start), stop=_optional_float(stop))

    @sb.utils.data_pipeline.takes("wav")
    @sb.utils.data_pipeline.provides("sig")
    def file_pipeline(wav):
        return read_audio(wav, sample_rate=sample_rate)

    datasets = {}
    for name, csv_path in csv_files.items():
        ds = sb.dataio.dataset.DynamicItemDataset.from_csv(csv_path, replacements={"data_root": str(data_root)})
        segments = bool(ds.data) and "start" in next(iter(ds.data.values()))
        ds.add_dynamic_item(segment_pipeline if segments else file_pipeline)
        if text_pipeline is not None:
            ds.add_dynamic_item(text_pipeline)
        ds.set_output_keys(["id", "sig", *text_keys])
        if sort:
            ds = ds.filtered_sorted(sort_key="duration", reverse=sort == "descending")
        datasets[name] = ds
    return datasets
