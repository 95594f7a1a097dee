"""Speech synthesis with espeak-ng, resampled deterministically to 16 kHz.

espeak-ng writes 22.05 kHz 16-bit mono; we resample with a polyphase filter in
float64 (``scipy.signal.resample_poly``) so that the same text, voice, rate and
pitch always give the same bytes, on any machine and thread count.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from math import gcd

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

__all__ = ["EspeakMissingError", "espeak_binary", "synthesize", "resample"]

INSTALL_HINT = (
    "install it with `sudo apt-get install espeak-ng` (Debian/Ubuntu), "
    "`brew install espeak-ng` (macOS), or put the binary on PATH / in $ESPEAK_NG"
)


class EspeakMissingError(RuntimeError):
    """espeak-ng is not installed (or not where ``$ESPEAK_NG`` says)."""


def espeak_binary() -> str:
    """Return the path of the espeak-ng executable, or explain how to install it.

    Returns
    -------
    str
        ``$ESPEAK_NG`` if set, else ``espeak-ng`` found on ``PATH``.

    Example
    -------
    >>> import os
    >>> os.path.basename(espeak_binary())  # doctest: +SKIP
    'espeak-ng'
    """
    path = os.environ.get("ESPEAK_NG") or shutil.which("espeak-ng")
    if not path or not os.path.exists(path):
        raise EspeakMissingError(
            "espeak-ng was not found (the mini corpus is synthesised with it): " + INSTALL_HINT
        )
    return path


def resample(audio: np.ndarray, orig_sr: int, new_sr: int) -> np.ndarray:
    """Resample a 1-D signal with a float64 polyphase filter (deterministic).

    Arguments
    ---------
    audio : np.ndarray
        Samples ``(N,)``, any numeric dtype.
    orig_sr, new_sr : int
        Sampling rates in Hz.

    Returns
    -------
    np.ndarray
        float64 samples ``(ceil(N * new_sr / orig_sr),)``.

    Example
    -------
    >>> x = np.sin(np.arange(22050) * 2 * np.pi * 440 / 22050)
    >>> y = resample(x, 22050, 16000)
    >>> y.shape
    (16000,)
    >>> bool(abs(np.abs(y[100:-100]).max() - 1.0) < 0.01)
    True
    """
    if orig_sr == new_sr:
        return np.asarray(audio, dtype=np.float64)
    g = gcd(orig_sr, new_sr)
    return resample_poly(np.asarray(audio, dtype=np.float64), new_sr // g, orig_sr // g)


def synthesize(
    text: str,
    voice: str = "en-us",
    rate: int = 160,
    pitch: int = 50,
    sample_rate: int = 16000,
) -> np.ndarray:
    """Synthesise ``text`` with espeak-ng.

    Arguments
    ---------
    text : str
        The words to speak.
    voice : str
        An espeak-ng voice, optionally with a variant: ``en-us+m3``, ``en-gb-x-rp+f2``.
    rate : int
        Speaking rate in words per minute (espeak-ng ``-s``).
    pitch : int
        Pitch, 0-99 (espeak-ng ``-p``).
    sample_rate : int
        Output sampling rate in Hz.

    Returns
    -------
    np.ndarray
        float64 samples in [-1, 1], shape ``(N,)``.

    Example
    -------
    >>> wav = synthesize("hello world", voice="en-us+m3", rate=170)  # doctest: +SKIP
    >>> 0.5 < len(wav) / 16000 < 2.0  # doctest: +SKIP
    True
    """
    binary = espeak_binary()
    with tempfile.TemporaryDirectory(prefix="espeak_") as tmp:
        out = os.path.join(tmp, "out.wav")
        cmd = [binary, "-v", voice, "-s", str(int(rate)), "-p", str(int(pitch)), "-w", out, text]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0 or not os.path.exists(out):
            raise RuntimeError(
                f"espeak-ng failed for voice '{voice}' (exit {proc.returncode}): "
                f"{proc.stderr.strip() or 'no output file'}; command: {' '.join(cmd)}"
            )
        audio, sr = sf.read(out, dtype="int16")
    if audio.ndim != 1 or len(audio) == 0:
        raise RuntimeError(f"espeak-ng produced no mono audio for voice '{voice}' and text {text!r}")
    return resample(audio.astype(np.float64) / 32768.0, sr, sample_rate)
