"""Read weights files without running code from them.

``torch.load(path, weights_only=False)`` unpickles: a crafted file runs any
command while it is read. Every file this toolkit reads with ``torch.load``
(model folders, checkpoints, snapshots) goes through :func:`load_weights_only`:
``weights_only=True`` always passed explicitly (so neither a torch older than
2.6 nor ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` turns it off), and a refusal that
names the file. Only tensors, numbers, strings, ``None`` and containers of them
load, plus the globals a caller lists in ``allowed_globals`` for one call (an
explicit allow-list, e.g. the NumPy types of old RNG checkpoints).
:func:`weights_only_loads` makes every ``torch.load`` inside a block
weights-only, for loaders that are not ours (SpeechBrain's schedulers). See
docs/security.md.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import re
from typing import Any, Iterator, Sequence, Union

import torch

__all__ = ["UnsafeFileError", "load_weights_only", "weights_only_loads"]

# torch's own switches, read by every torch.load call (torch >= 2.5)
FORCE_WEIGHTS_ONLY = "TORCH_FORCE_WEIGHTS_ONLY_LOAD"
FORCE_NO_WEIGHTS_ONLY = "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"


class UnsafeFileError(ValueError):
    """A file holds objects other than weights; it was refused, nothing in it ran."""


def _refused_global(error: Exception) -> str:
    found = re.search(r"GLOBAL (\S+) was not an allowed global", str(error))
    if found:
        return f"it names the Python object '{found.group(1)}'"
    return str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__


def load_weights_only(
    path: Union[str, os.PathLike],
    map_location: Any = "cpu",
    allowed_globals: Sequence[Any] = (),
) -> Any:
    """``torch.load(path, weights_only=True)``, refusing anything else with an error naming ``path``.

    Arguments
    ---------
    path : path-like
        A file written by ``torch.save``.
    map_location : str or torch.device
        Where tensors are loaded.
    allowed_globals : sequence
        Python objects (classes, functions, or ``(object, "dotted.name")``
        pairs) the file may name besides what ``weights_only`` allows, for this
        call only (``torch.serialization.safe_globals``). Keep it to what a
        known older format needs.

    Returns
    -------
    object
        What the file holds.

    Raises
    ------
    UnsafeFileError
        The file names another Python object (a pickle that would run code,
        a pickled module): it is not loaded.

    Example
    -------
    >>> import tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "w.ckpt")
    >>> torch.save({"w": torch.ones(2), "step": 3}, path)
    >>> load_weights_only(path)["step"]
    3
    >>> torch.save({"w": print}, path)
    >>> load_weights_only(path)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    speechbrain_cald.safe_load.UnsafeFileError: .../w.ckpt: refused: it names the Python object 'print'...
    """
    try:
        if not allowed_globals:
            return torch.load(path, map_location=map_location, weights_only=True)
        safe_globals = getattr(torch.serialization, "safe_globals", None)
        if safe_globals is None:
            raise UnsafeFileError(
                f"{path}: this older format needs an allow-list of globals, which torch "
                f"{torch.__version__} cannot apply to one load (torch.serialization.safe_globals, torch>=2.6)"
            )
        with safe_globals(list(allowed_globals)):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        raise UnsafeFileError(
            f"{path}: refused: {_refused_global(error)}, and this toolkit loads only tensors, numbers and "
            "strings from files (torch.load(weights_only=True)); unpickling other objects can run any code. "
            "A file you wrote yourself with an older version: see docs/security.md"
        ) from error


@contextlib.contextmanager
def weights_only_loads() -> Iterator[None]:
    """Within the block, every ``torch.load`` is weights-only, even one that does not ask for it.

    Sets torch's ``TORCH_FORCE_WEIGHTS_ONLY_LOAD`` (and lifts
    ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD``) for the block, then restores both: for
    load hooks that call ``torch.load(path)`` themselves, such as SpeechBrain's
    schedulers. The variables are process-wide, so another thread's loads in
    the meantime are weights-only too.

    Example
    -------
    >>> import tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "s.ckpt")
    >>> torch.save({"fn": print}, path)
    >>> with weights_only_loads():
    ...     torch.load(path, weights_only=False)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    _pickle.UnpicklingError: Weights only load failed...
    >>> FORCE_WEIGHTS_ONLY in os.environ
    False
    """
    saved = {name: os.environ.get(name) for name in (FORCE_WEIGHTS_ONLY, FORCE_NO_WEIGHTS_ONLY)}
    os.environ[FORCE_WEIGHTS_ONLY] = "1"
    os.environ.pop(FORCE_NO_WEIGHTS_ONLY, None)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
