"""Audio reading and the SpeechBrain datasets of speech recipes (soundfile only).

Every speech recipe's manifest has ``ID, duration, wav`` (``$data_root/...``)
and, for segments cut from a longer recording (TED-LIUM talks), ``start`` and
``stop`` in seconds. :func:`read_audio` reads a file or a segment with
soundfile (FLAC, WAV, NIST SPHERE, ...) and checks the sample rate and the
channel count; :func:`speech_datasets` builds SpeechBrain
``DynamicItemDataset`` s with ``sig`` (the waveform), ``wrd`` (the
transcript, when the manifest has one) and whatever the recipe adds.
"""

from __future__ import annotations

from typing import Callable, Dict, Mapping, Optional, Sequence

import numpy as np
import soundfile as sf
import speechbrain as sb
import torch

__all__ = ["AudioFormatError", "audio_info", "read_audio", "speech_datasets"]


class AudioFormatError(ValueError):
    """An audio file whose rate or channels are not what the recipe expects."""


def audio_info(path: str):
    """soundfile's ``info`` (``samplerate``, ``frames``, ``channels``, ``duration``), with the path in errors."""
    try:
        return sf.info(path)
    except (RuntimeError, sf.LibsndfileError) as err:
        raise AudioFormatError(f"cannot read audio '{path}': {err}") from None


def read_audio(
    path: str,
    start: Optional[float] = None,
    stop: Optional[float] = None,
    sample_rate: Optional[int] = 16000,
) -> torch.Tensor:
    """A mono waveform ``(N,)`` float32 in [-1, 1], the whole file or ``[start, stop)`` seconds.

    Arguments
    ---------
    path : str
        Audio file soundfile reads (FLAC, WAV, NIST SPHERE...).
    start, stop : float, optional
        Segment bounds in seconds (None: the start / the end of the file).
    sample_rate : int, optional
        Required rate (None: any); a file at another rate is an error (resample
        the corpus once, not at every read).

    Returns
    -------
    torch.Tensor

    Example
    -------
    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "a.flac")
    >>> sf.write(path, np.arange(32000) % 100 / 1000, 16000)
    >>> read_audio(path).shape, read_audio(path, start=0.5, stop=1.0).shape
    (torch.Size([32000]), torch.Size([8000]))
    >>> read_audio(path, sample_rate=8000)
    Traceback (most recent call last):
    ...
    speechbrain_cald.data.audio.AudioFormatError: audio '...a.flac' is 16000 Hz, expected 8000 Hz (resample the corpus first, e.g. sox in.flac -r 8000 out.flac)
    """
    info = audio_info(path)
    if sample_rate is not None and info.samplerate != sample_rate:
        raise AudioFormatError(
            f"audio '{path}' is {info.samplerate} Hz, expected {sample_rate} Hz "
            f"(resample the corpus first, e.g. sox in.flac -r {sample_rate} out.flac)"
        )
    first = 0 if start is None else int(round(float(start) * info.samplerate))
    last = info.frames if stop is None else min(int(round(float(stop) * info.samplerate)), info.frames)
    if first >= last:
        raise AudioFormatError(f"audio '{path}': empty segment [{start}, {stop}) s of a {info.duration:.2f} s file")
    data, _ = sf.read(path, start=first, stop=last, dtype="float32", always_2d=True)
    if data.shape[1] != 1:
        raise AudioFormatError(f"audio '{path}' has {data.shape[1]} channels, expected mono")
    return torch.from_numpy(np.ascontiguousarray(data[:, 0]))


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
        return read_audio(wav, _optional_float(start), _optional_float(stop), sample_rate)

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
