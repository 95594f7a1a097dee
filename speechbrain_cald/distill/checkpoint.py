"""Checkpoint helpers: atomic SpeechBrain checkpoints and a saved RNG state.

SpeechBrain 1.1's ``Checkpointer.save_checkpoint`` writes ``CKPT.yaml`` first
and the parameter files after it, so a run killed while saving leaves a
directory that looks complete and is picked for recovery. ``AtomicCheckpointer``
writes the whole checkpoint into a hidden ``.tmp-CKPT+...`` directory (ignored
by ``list_checkpoints``) and renames it into place once every file is written;
a rename within one directory is atomic on POSIX file systems.

``RNGState`` puts the Python, NumPy and torch (CPU and CUDA) generator states
in the checkpoint, so that a resumed run draws the same dropout masks as an
uninterrupted one.

No file of a checkpoint runs code when it is loaded: ``RNGState`` stores its
states as tensors and numbers, and ``AtomicCheckpointer.load_checkpoint`` reads
modules, optimizers, schedulers and grad scalers (SpeechBrain's default
``torch_recovery`` hook) with ``weights_only=True`` passed explicitly and runs
every other load hook (SpeechBrain's own schedulers) with weights-only loading
forced. RNG checkpoints of the older format (NumPy's state tuple, pickled with
NumPy arrays) load through :data:`LEGACY_RNG_GLOBALS`, an explicit allow-list of
the NumPy objects that format names (docs/security.md).
"""

from __future__ import annotations

import logging
import os
import pathlib
import pickle
import random
import shutil

import numpy as np
import torch
from speechbrain.utils.checkpoints import (
    METAFNAME,
    PARAMFILE_EXT,
    DEFAULT_LOAD_HOOKS,
    DEFAULT_SAVE_HOOKS,
    Checkpoint,
    Checkpointer,
    get_default_hook,
    hook_on_loading_state_dict_checkpoint,
    mark_as_loader,
    mark_as_saver,
    register_checkpoint_hooks,
    torch_recovery,
)
from speechbrain.utils.distributed import ddp_barrier, ddp_broadcast, if_main_process

from speechbrain_cald.distill.sb_compat import new_checkpoint_dir, rebuild_checkpointer, write_checkpoint_meta
from speechbrain_cald.safe_load import UnsafeFileError, load_weights_only, weights_only_loads

__all__ = ["AtomicCheckpointer", "RNGState", "make_atomic", "weights_only_recovery", "LEGACY_RNG_GLOBALS"]

logger = logging.getLogger(__name__)

TMP_PREFIX = ".tmp-"


def _naming_the_file(hook):
    """``hook`` with a refused unpickling reported as an ``UnsafeFileError`` naming the file."""

    def load(obj, path, end_of_epoch):
        try:
            hook(obj, path, end_of_epoch)
        except pickle.UnpicklingError as error:
            raise UnsafeFileError(
                f"{path}: refused: the file holds Python objects other than tensors, numbers and strings, "
                "and unpickling them could run any code (docs/security.md)"
            ) from error

    return load


def weights_only_recovery(obj, path: pathlib.Path, end_of_epoch: bool) -> None:
    """SpeechBrain's ``torch_recovery`` load hook with ``weights_only=True`` passed explicitly.

    Same effect (SpeechBrain's state-dict key patching, strict loading where
    the object supports it) for modules, optimizers, schedulers and grad
    scalers, but a file holding other objects is refused, naming it.

    Arguments
    ---------
    obj : object with ``load_state_dict``
        The recoverable.
    path : pathlib.Path
        Its file in the checkpoint.
    end_of_epoch : bool
        Unused (SpeechBrain's hook signature).
    """
    del end_of_epoch
    state = hook_on_loading_state_dict_checkpoint(load_weights_only(path, map_location="cpu"))
    try:
        obj.load_state_dict(state, strict=True)
    except TypeError:  # optimizers and schedulers take no `strict`
        obj.load_state_dict(state)


class AtomicCheckpointer(Checkpointer):
    """A SpeechBrain ``Checkpointer`` whose checkpoints appear all at once and load no code.

    Same arguments and behaviour as ``speechbrain.utils.checkpoints.Checkpointer``;
    :meth:`load_checkpoint` unpickles nothing but weights, whichever hook reads a file.

    Example
    -------
    >>> import tempfile
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> ckpt = AtomicCheckpointer(d, {"lin": torch.nn.Linear(2, 2)})
    >>> saved = ckpt.save_checkpoint()
    >>> saved.path.name.startswith("CKPT"), sorted(p.name for p in saved.path.iterdir())
    (True, ['CKPT.yaml', 'lin.ckpt'])
    >>> [p.name.startswith(TMP_PREFIX) for p in d.iterdir()]
    [False]
    """

    def save_checkpoint(self, meta={}, end_of_epoch=True, name=None, verbosity=logging.INFO):
        """Save a checkpoint into a hidden directory, then rename it into place.

        Arguments and return value as ``Checkpointer.save_checkpoint``.
        """
        final_dir = tmp_dir = None
        saved_meta = None
        if if_main_process():
            final_dir = new_checkpoint_dir(self, name)
            tmp_dir = final_dir.parent / (TMP_PREFIX + final_dir.name)
            if tmp_dir.exists():  # left over by a run killed while saving
                shutil.rmtree(tmp_dir)
            os.makedirs(tmp_dir)
            saved_meta = write_checkpoint_meta(self, tmp_dir / METAFNAME, meta, end_of_epoch)
        tmp_dir = ddp_broadcast(tmp_dir, src=0)

        for obj_name, obj in self.recoverables.items():
            savepath = tmp_dir / f"{obj_name}{PARAMFILE_EXT}"
            if obj_name in self.custom_save_hooks:
                self.custom_save_hooks[obj_name](obj, savepath)
                continue
            default_hook = get_default_hook(obj, DEFAULT_SAVE_HOOKS)
            if default_hook is None:
                raise RuntimeError(
                    f"Don't know how to save recoverable '{obj_name}' of type {type(obj)}: "
                    "register a default hook or add a custom hook"
                )
            default_hook(obj, savepath)

        ddp_barrier()  # savers on other processes (per rank, once per node) must be done
        if if_main_process():
            if final_dir.exists():  # a custom name saved again: replace it
                shutil.rmtree(final_dir)
            os.replace(tmp_dir, final_dir)
        # Every process must see the renamed checkpoint before it returns:
        # delete_checkpoints lists the folder on each process and broadcasts
        # once per deletion, so differing lists would deadlock.
        ddp_barrier()
        if not if_main_process():
            return None
        paramfiles = {p.stem: p for p in final_dir.iterdir() if p.suffix == PARAMFILE_EXT}
        ckpt_type = "end-of-epoch" if end_of_epoch else "intra-epoch"
        logger.log(verbosity, f"Saved an {ckpt_type} checkpoint in {final_dir}")
        return Checkpoint(final_dir, saved_meta, paramfiles)

    def load_checkpoint(self, checkpoint: Checkpoint) -> None:
        """Load ``checkpoint`` without unpickling anything but weights.

        For this load, SpeechBrain's default ``torch_recovery`` hook (a
        ``torch.load`` without ``weights_only``, which torch before 2.6 or
        ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` turn into unpickling) becomes
        :func:`weights_only_recovery`; the other hooks (SpeechBrain's
        schedulers call ``torch.load(path)`` themselves) run inside
        ``safe_load.weights_only_loads()``; a refused file is named.
        ``recover_if_possible`` comes through here.

        Arguments
        ---------
        checkpoint : Checkpoint
            The checkpoint to load.
        """
        own_hooks = dict(self.custom_load_hooks)
        for name, obj in self.recoverables.items():
            hook = own_hooks.get(name) or get_default_hook(obj, DEFAULT_LOAD_HOOKS)
            if hook is torch_recovery:
                hook = weights_only_recovery
            if hook is not None:  # None: SpeechBrain's own error follows
                self.custom_load_hooks[name] = _naming_the_file(hook)
        try:
            with weights_only_loads():
                super().load_checkpoint(checkpoint)
        finally:  # in place: a checkpointer remade by make_atomic shares this dict
            self.custom_load_hooks.clear()
            self.custom_load_hooks.update(own_hooks)


def make_atomic(checkpointer: Checkpointer) -> Checkpointer:
    """An ``AtomicCheckpointer`` for a plain SpeechBrain ``Checkpointer`` (a recipe YAML's).

    ``AtomicCheckpointer`` adds no state, so the one returned shares the plain
    one's recoverables and hooks (``sb_compat.rebuild_checkpointer``): what is
    added to either is saved by both. An ``AtomicCheckpointer`` is returned as is.

    Example
    -------
    >>> import tempfile
    >>> c = make_atomic(Checkpointer(tempfile.mkdtemp()))
    >>> isinstance(c, AtomicCheckpointer)
    True
    """
    if type(checkpointer) is Checkpointer:
        return rebuild_checkpointer(checkpointer, AtomicCheckpointer)
    if not isinstance(checkpointer, AtomicCheckpointer):
        logger.warning(
            "checkpointer %s is a subclass of Checkpointer that is not an AtomicCheckpointer: "
            "its checkpoints may be left half-written by a killed run",
            type(checkpointer).__name__,
        )
    return checkpointer


def _legacy_rng_globals() -> list:
    """The NumPy objects an older ``rng.ckpt`` names (NumPy's state array), under NumPy 1 and 2 names."""
    try:
        from numpy._core.multiarray import _reconstruct as reconstruct
    except ImportError:  # NumPy 1
        from numpy.core.multiarray import _reconstruct as reconstruct
    allowed = [reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]
    if reconstruct.__module__ != "numpy.core.multiarray":  # NumPy 2 reading a file written by NumPy 1
        allowed.append((reconstruct, "numpy.core.multiarray._reconstruct"))
    return allowed


LEGACY_RNG_GLOBALS = _legacy_rng_globals()


class RNGState:
    """Python / NumPy / torch generator states as a checkpoint recoverable.

    A data loader draws from the torch generator when its iterator starts
    (at the start of each epoch). So an end-of-epoch checkpoint's states are
    applied at once (the next epoch's loader draws from them, as it did in the
    uninterrupted run), while an intra-epoch checkpoint's states wait for
    ``apply_pending()`` at the first training batch (the resumed loader's draw
    must not shift the stream: in the uninterrupted run it came before the
    checkpoint).

    Under DDP every process saves its own states (``rng.ckpt`` for rank 0,
    ``rng.rank<r>`` beside it for the others) and loads its own, falling back
    to rank 0's when the number of processes changed.

    The file holds tensors and numbers only (format 2), read with
    ``weights_only=True``; format 1 files (NumPy's state tuple as saved by
    earlier versions) load through :data:`LEGACY_RNG_GLOBALS`.

    Example
    -------
    >>> import tempfile
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "rng.ckpt"
    >>> rng = RNGState()
    >>> _ = torch.manual_seed(0); rng._save(path); a = torch.rand(1)
    >>> rng._load(path, end_of_epoch=False); _ = torch.rand(3)
    >>> rng.apply_pending(); torch.equal(torch.rand(1), a)
    True
    >>> rng._load(path, end_of_epoch=True); torch.equal(torch.rand(1), a)
    True
    """

    def __init__(self):
        self.pending = None

    @staticmethod
    def _own_path(path: pathlib.Path) -> pathlib.Path:
        rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
        return path if rank == 0 else path.with_name(f"{path.stem}.rank{rank}")

    @mark_as_saver
    def _save(self, path: pathlib.Path) -> None:
        py_version, py_internal, py_gauss = random.getstate()
        np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
        state = {
            "format": 2,
            "python": {"version": py_version, "internal": torch.tensor(py_internal, dtype=torch.int64),
                       "gauss_next": py_gauss},
            "numpy": {"bit_generator": np_name, "keys": torch.from_numpy(np_keys.astype(np.int64)),
                      "pos": int(np_pos), "has_gauss": int(np_has_gauss), "cached_gaussian": float(np_gauss)},
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        }
        torch.save(state, self._own_path(pathlib.Path(path)))

    @staticmethod
    def _read(path: pathlib.Path) -> dict:
        """The states in ``path`` as ``random.getstate()`` / ``np.random.get_state()`` tuples and tensors."""
        try:
            state = load_weights_only(path)
        except UnsafeFileError:
            state = load_weights_only(path, allowed_globals=LEGACY_RNG_GLOBALS)  # format 1
        try:
            if state.get("format") == 2:
                py, nps = state["python"], state["numpy"]
                state = dict(
                    state,
                    python=(py["version"], tuple(py["internal"].tolist()), py["gauss_next"]),
                    numpy=(nps["bit_generator"], nps["keys"].numpy().astype(np.uint32), nps["pos"],
                           nps["has_gauss"], nps["cached_gaussian"]),
                )
            return {key: state[key] for key in ("python", "numpy", "torch", "cuda")}
        except (AttributeError, KeyError, TypeError) as error:
            raise ValueError(
                f"{path}: not an RNG state saved by RNGState (expected keys python, numpy, torch, cuda): {error!r}"
            ) from None

    @mark_as_loader
    def _load(self, path: pathlib.Path, end_of_epoch: bool) -> None:
        own = self._own_path(pathlib.Path(path))
        self.pending = self._read(own if own.exists() else pathlib.Path(path))
        if end_of_epoch:
            self.apply_pending()

    def apply_pending(self) -> None:
        """Apply the states loaded from a checkpoint, once."""
        if self.pending is None:
            return
        state, self.pending = self.pending, None
        random.setstate(state["python"])
        np.random.set_state(state["numpy"])
        torch.set_rng_state(state["torch"])
        if state["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])


# Every process saves its own generator states (the default saves on rank 0 only).
register_checkpoint_hooks(RNGState, save_on_main_only=False)
