"""Everything this package takes from SpeechBrain that SpeechBrain does not promise to keep.

The rest of the package uses SpeechBrain's public API: ``Brain``'s hooks (``fit_batch``,
``on_fit_start``, ``on_stage_start`` / ``on_stage_end``, ``evaluate_batch``,
``optimizers_step``, ``fit(..., progressbar=...)``) and ``Checkpointer``'s public methods.
What cannot be public lives here, once:

- ``INTRA_EPOCH_CKPT_FLAG``: the meta key SpeechBrain's intra-epoch checkpoints carry
  (``run_safety`` keeps the newest and removes the rest);
- :func:`new_checkpoint_dir` and :func:`write_checkpoint_meta`: the naming and metadata
  file of ``Checkpointer.save_checkpoint``, which ``AtomicCheckpointer`` repeats into a
  hidden folder before renaming it into place;
- :func:`rebuild_checkpointer`: a plain ``Checkpointer`` (a recipe YAML's) remade as a
  subclass sharing its state (``CHECKPOINTER_STATE``).

``REVIEWED`` names the SpeechBrain functions whose behaviour those hooks and helpers rely on,
with a digest of their source as read for ``SPEECHBRAIN_SERIES``; the test
``tests/unit/distill/test_sb_compat.py`` fails when the installed SpeechBrain differs, so an
upgrade is read against this list before it is allowed (then update the digests and the
``speechbrain`` range in pyproject.toml). At import, another series than the reviewed one is
logged as a warning.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import logging
import pathlib
import textwrap
from typing import Dict, List, Mapping, Optional, Type, TypeVar

import speechbrain
from speechbrain.core import INTRA_EPOCH_CKPT_FLAG
from speechbrain.utils.checkpoints import Checkpointer

__all__ = [
    "CHECKPOINTER_STATE",
    "INTRA_EPOCH_CKPT_FLAG",
    "REVIEWED",
    "SPEECHBRAIN_SERIES",
    "changed_sources",
    "new_checkpoint_dir",
    "rebuild_checkpointer",
    "source_digest",
    "write_checkpoint_meta",
]

logger = logging.getLogger(__name__)

SPEECHBRAIN_SERIES = "1.1"

# qualified name -> (what this package relies on, sha256 of its source, first 16 hex digits)
REVIEWED: Dict[str, tuple] = {
    "speechbrain.core.Brain.fit": (
        "makes the loaders, calls on_fit_start, runs the epochs and stops at the optimizer step limit; "
        "progressbar=False silences its bars (DistillBrain draws its own)",
        "83b4ede91d163228",
    ),
    "speechbrain.core.Brain._fit_train": (
        "on_stage_start(TRAIN) before set_epoch (on self.train_sampler only) and before the first batch; "
        "self.step += 1 before fit_batch; update_average after it; intra-epoch checkpoints; "
        "on_stage_end(TRAIN); self.step = 0",
        "9e14f127d4e76b9c",
    ),
    "speechbrain.core.Brain._fit_valid": (
        "on_stage_start(VALID), evaluate_batch per batch, on_stage_end(VALID)",
        "f1ddd75893b3cfcf",
    ),
    "speechbrain.core.Brain.update_average": (
        "a pure running mean over self.step that skips non-finite losses",
        "6685c0cd39ee89f6",
    ),
    "speechbrain.core.Brain._optimizer_step_limit_exceeded": (
        "optimizer_step >= optimizer_step_limit (DistillBrain makes the limit an int)",
        "5a23f471dba8604f",
    ),
    "speechbrain.core.Brain._save_intra_epoch_ckpt": (
        "intra-epoch checkpoints carry INTRA_EPOCH_CKPT_FLAG in their meta",
        "dbe386af655da42c",
    ),
    "speechbrain.utils.checkpoints.Checkpointer.__init__": (
        "the state rebuild_checkpointer shares: CHECKPOINTER_STATE",
        "890781e3b35c396b",
    ),
    "speechbrain.utils.checkpoints.Checkpointer.save_checkpoint": (
        "what AtomicCheckpointer.save_checkpoint repeats, into a hidden folder renamed into place",
        "e64f2683619a8408",
    ),
    "speechbrain.utils.checkpoints.Checkpointer._new_checkpoint_dirpath": (
        "new_checkpoint_dir(name=None)",
        "673d1b5a07f76a0c",
    ),
    "speechbrain.utils.checkpoints.Checkpointer._custom_checkpoint_dirpath": (
        "new_checkpoint_dir(name)",
        "850a6b627b729129",
    ),
    "speechbrain.utils.checkpoints.Checkpointer._save_checkpoint_metafile": (
        "write_checkpoint_meta",
        "9ca178a515d8253a",
    ),
}

CHECKPOINTER_STATE = (
    "checkpoints_dir",
    "recoverables",
    "optional_recoverables",
    "custom_load_hooks",
    "custom_save_hooks",
    "allow_partial_load",
)

C = TypeVar("C", bound=Checkpointer)


def _resolve(qualified: str):
    """``"speechbrain.core.Brain.fit"`` -> the function (a property: its getter)."""
    parts = qualified.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            obj = inspect.getattr_static(obj, attr)
        return obj.fget if isinstance(obj, property) else obj
    raise ImportError(qualified)


def source_digest(qualified: str) -> Optional[str]:
    """The first 16 hex digits of the sha256 of a function's source (None: it no longer exists).

    Example
    -------
    >>> len(source_digest("speechbrain.core.Brain.fit"))
    16
    >>> source_digest("speechbrain.core.Brain.no_such_method") is None
    True
    """
    try:
        source = textwrap.dedent(inspect.getsource(_resolve(qualified)))
    except (AttributeError, ImportError, OSError, TypeError):
        return None
    return hashlib.sha256(source.encode()).hexdigest()[:16]


def changed_sources(reviewed: Mapping[str, tuple] = REVIEWED) -> List[str]:
    """The reviewed SpeechBrain functions whose installed source differs, each with what relies on it.

    Example
    -------
    >>> changed_sources({"speechbrain.core.Brain.fit": ("the fit loop", "0" * 16)})
    ['speechbrain.core.Brain.fit (changed; relied on: the fit loop)']
    """
    out = []
    for name, (relied_on, digest) in reviewed.items():
        found = source_digest(name)
        if found != digest:
            out.append(f"{name} ({'gone' if found is None else 'changed'}; relied on: {relied_on})")
    return out


def new_checkpoint_dir(checkpointer: Checkpointer, name: Optional[str] = None) -> pathlib.Path:
    """The folder ``checkpointer.save_checkpoint(name=name)`` would write (not created).

    Example
    -------
    >>> import tempfile
    >>> ckpt = Checkpointer(tempfile.mkdtemp())
    >>> new_checkpoint_dir(ckpt, "best").name
    'CKPT+best'
    """
    if name is None:
        return checkpointer._new_checkpoint_dirpath()
    return checkpointer._custom_checkpoint_dirpath(name)


def write_checkpoint_meta(checkpointer: Checkpointer, path: pathlib.Path, meta: Mapping, end_of_epoch: bool) -> dict:
    """Write a checkpoint's ``CKPT.yaml`` as ``save_checkpoint`` does; returns the meta written."""
    return checkpointer._save_checkpoint_metafile(path, meta, end_of_epoch)


def rebuild_checkpointer(checkpointer: Checkpointer, cls: Type[C]) -> C:
    """A ``cls`` (a ``Checkpointer`` subclass adding no state) sharing ``checkpointer``'s state.

    The recoverables and hooks are the same dicts, so what is added through either object
    (``Brain.__init__`` adds the brain's counters) is saved and loaded by both.

    Example
    -------
    >>> import tempfile, torch
    >>> class Loud(Checkpointer): pass
    >>> plain = Checkpointer(tempfile.mkdtemp(), {"lin": torch.nn.Linear(1, 1)})
    >>> loud = rebuild_checkpointer(plain, Loud)
    >>> type(loud).__name__, loud.recoverables is plain.recoverables
    ('Loud', True)
    """
    rebuilt = cls(checkpointer.checkpoints_dir)
    for attr in CHECKPOINTER_STATE:
        setattr(rebuilt, attr, getattr(checkpointer, attr))
    return rebuilt


def _check_series() -> None:
    series = ".".join(speechbrain.__version__.split(".")[:2])
    if series != SPEECHBRAIN_SERIES:
        logger.warning(
            "speechbrain %s is installed; speechbrain_cald was reviewed against %s.x "
            "(speechbrain_cald/distill/sb_compat.py lists what it relies on; run "
            "tests/unit/distill/test_sb_compat.py)",
            speechbrain.__version__,
            SPEECHBRAIN_SERIES,
        )


_check_series()
