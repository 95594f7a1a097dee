"""Files a run writes: complete or absent, and named so that runs never overwrite each other's.

``atomic_write(path)`` opens a hidden file beside ``path`` and renames it into
place when the ``with`` block ends without an error: a crash leaves the
previous file (or none), never a half-written one. ``data_tag(folder)`` names
a data folder uniquely and readably (``data-1a2b3c4d``: its name and a hash of
its absolute path), for outputs that depend on which data was read, such as
an evaluation's hypotheses.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from typing import IO, Iterator

__all__ = ["atomic_write", "data_tag"]


@contextlib.contextmanager
def atomic_write(path: str, mode: str = "w", **open_kwargs) -> Iterator[IO]:
    """Write ``path`` all at once: into a temporary file, renamed over ``path`` on success.

    Arguments
    ---------
    path : str
        The file to (re)write; its folder is created.
    mode : str
        ``"w"`` (text, UTF-8 unless ``encoding`` is given) or ``"wb"``.
    **open_kwargs
        More arguments of ``open`` (``newline=""`` for csv).

    Example
    -------
    >>> d = tempfile.mkdtemp(); p = os.path.join(d, "a.txt")
    >>> with atomic_write(p) as f:
    ...     _ = f.write("one")
    >>> try:
    ...     with atomic_write(p) as f:
    ...         _ = f.write("two, half")
    ...         raise KeyboardInterrupt
    ... except KeyboardInterrupt:
    ...     pass
    >>> open(p).read(), os.listdir(d)
    ('one', ['a.txt'])
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write: mode must be 'w' or 'wb', got {mode!r}")
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    if mode == "w":
        open_kwargs.setdefault("encoding", "utf-8")
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, mode, **open_kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def data_tag(folder: str) -> str:
    """A readable name for a data folder, unique by its absolute path: ``<name>-<8 hex>``.

    Example
    -------
    >>> data_tag("/data/mini").startswith("mini-"), data_tag("/data/mini") == data_tag("/other/mini")
    (True, False)
    """
    real = os.path.realpath(folder)
    name = os.path.basename(real.rstrip(os.sep)) or "root"
    return f"{name}-{hashlib.sha1(real.encode()).hexdigest()[:8]}"
