"""Files a run writes: complete or absent, and named so that runs never overwrite each other's.

``atomic_write(path)`` opens a hidden file beside ``path`` and renames it into
place when the ``with`` block ends without an error: a crash leaves the
previous file (or none), never a half-written one. ``data_tag(folder)`` names
a data folder uniquely and readably (``data-1a2b3c4d``: its name and a hash of
its absolute path), for outputs that depend on which data was read, such as
an evaluation's hypotheses. ``check_writable(folders)`` tries each folder a
run will write before any work, and :class:`FolderNotWritable` says which
cannot be written and why, in one message.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from typing import IO, Iterator, List, Mapping

__all__ = ["FolderNotWritable", "atomic_target", "atomic_write", "check_writable", "data_tag", "not_writable"]


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
    if mode == "w":
        open_kwargs.setdefault("encoding", "utf-8")
    with atomic_target(path) as tmp, open(tmp, mode, **open_kwargs) as f:
        yield f
        f.flush()
        os.fsync(f.fileno())


@contextlib.contextmanager
def atomic_target(path: str) -> Iterator[str]:
    """A fresh temporary name beside ``path`` for a writer that takes a file name, renamed over ``path`` on success.

    For writers that open the file themselves (``torch.save``, an encoder's
    ``save``, a writer function): the name is unique to this call (two runs
    writing the same file never share a temporary), and it is removed when
    the block fails.

    Arguments
    ---------
    path : str
        The file to (re)write; its folder is created.

    Example
    -------
    >>> d = tempfile.mkdtemp(); p = os.path.join(d, "t.txt")
    >>> with atomic_target(p) as tmp:
    ...     with open(tmp, "w") as f:
    ...         _ = f.write("saved")
    >>> os.listdir(d), open(p).read()
    (['t.txt'], 'saved')
    >>> with atomic_target(p) as a, atomic_target(p) as b:
    ...     a != b
    True
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


class FolderNotWritable(PermissionError):
    """A folder a run must write to cannot be written (read-only, a file in the way...); names each one."""


def not_writable(failed: List[str]) -> FolderNotWritable:
    """The one message for folders a run cannot write: ``failed`` holds ``"<key> <folder>: <reason>"`` each."""
    return FolderNotWritable(
        "cannot write where this run must (checked before training, nothing was trained): " + "; ".join(failed)
    )


def check_writable(folders: Mapping[str, str]) -> None:
    """Create each folder and write a file in it; one :class:`FolderNotWritable` naming every one that fails.

    Example
    -------
    >>> d = tempfile.mkdtemp(); open(f"{d}/a_file", "w").close()
    >>> check_writable({"output_folder": d})
    >>> check_writable({"output_folder": d, "save_folder": f"{d}/a_file/save"})
    Traceback (most recent call last):
    ...
    speechbrain_cald.files.FolderNotWritable: cannot write where this run must (checked before training, nothing was trained): save_folder .../a_file/save: Not a directory
    """
    failed = []
    for key, folder in folders.items():
        try:
            os.makedirs(folder, exist_ok=True)
            with tempfile.TemporaryFile(dir=folder):
                pass
        except OSError as err:
            failed.append(f"{key} {folder}: {err.strerror or err}")
    if failed:
        raise not_writable(failed)


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
