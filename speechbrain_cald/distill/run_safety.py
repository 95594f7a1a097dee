"""What makes a training run safe to kill, resume and leave alone: ``SafeRunMixin``.

``DistillBrain`` inherits it, so every recipe gets:

- **Resume = uninterrupted.** SpeechBrain's ``Brain`` calls ``set_epoch`` only
  on ``self.train_sampler``, which stays ``None`` when a recipe passes
  ``batch_sampler=`` (a ``DynamicBatchSampler``) itself: every epoch then
  shuffles from the sampler's last state, and a resumed run replays another
  order than the uninterrupted one. Here the sampler a loader was built with
  (``batch_sampler=`` or ``sampler=``, or that of a ready ``DataLoader``) is
  the one whose epoch is set, so the order of each epoch is a function of the
  seed and the epoch alone, recomputed identically on resume.
- **Non-finite losses never reach the weights.** A batch whose loss (or
  gradient) is NaN or inf is not back-propagated and no optimizer steps on it;
  the warning names its utterance IDs. After ``nonfinite_patience`` such
  batches in an epoch (SpeechBrain's run option, default 3) the run stops with
  ``NonFiniteLossError`` naming every one of them; the checkpoints already
  saved hold finite weights. Under DDP the ranks agree before anyone skips.
- **No leftovers.** At the start of ``fit``, hidden ``.tmp-CKPT...`` folders
  of saves that were killed, and checkpoints a killed run would have deleted
  (superseded by the keep policy, or intra-epoch ones older than the last
  end-of-epoch one), are removed. The output folder's lock
  (``speechbrain_cald.experiment``) makes this safe: no other run writes there.
- **Nothing recorded before training.** What waits for training to start
  (the output folder's record of options, written by ``speechbrain_cald.experiment``:
  a refused or failed rerun must leave a finished folder as it was) is run by
  ``training_starts()``, first thing in ``on_fit_start`` (and by any export
  that trains nothing).
- **An honest log.** When a run starts where an earlier attempt left a
  ``train_log.txt``, a line says so: resumed from which checkpoint (epoch,
  step), or started afresh; lines above it for later epochs are the
  interrupted attempt's.
"""

from __future__ import annotations

import datetime
import logging
import os
import shutil
from typing import Any, Callable, Dict, List, Optional

import torch
from speechbrain.utils.checkpoints import ckpt_recency
from speechbrain.utils.distributed import ddp_all_reduce, ddp_barrier, if_main_process

from speechbrain_cald.distill.checkpoint import TMP_PREFIX
from speechbrain_cald.distill.sb_compat import INTRA_EPOCH_CKPT_FLAG

__all__ = ["NonFiniteLossError", "SafeRunMixin", "at_training_start", "training_starts"]

logger = logging.getLogger(__name__)

# what waits for this process's training to start, by name (a later registration replaces an earlier one)
_AT_TRAINING_START: Dict[str, Callable[[], None]] = {}


def at_training_start(name: str, action: Callable[[], None]) -> None:
    """Run ``action`` when this process's training starts (``training_starts``), replacing one of that name.

    Example
    -------
    >>> at_training_start("greet", lambda: print("training starts"))
    >>> training_starts()
    training starts
    >>> training_starts()  # once
    """
    _AT_TRAINING_START[name] = action


def training_starts() -> None:
    """Run, once, what waits for training to start (``at_training_start``)."""
    while _AT_TRAINING_START:
        _AT_TRAINING_START.pop(next(iter(_AT_TRAINING_START)))()


class NonFiniteLossError(ValueError):
    """Too many batches with a NaN / inf loss or gradient in one epoch (a ValueError, as SpeechBrain's own)."""


def _total_norm(tensors: List[torch.Tensor]) -> torch.Tensor:
    """The 2-norm of all ``tensors`` together (non-finite if any element is)."""
    fused = getattr(torch.nn.utils, "get_total_norm", None)  # torch >= 2.6: one fused pass
    if fused is not None:
        return fused(tensors)
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(t.float()) for t in tensors]))


class SafeRunMixin:
    """Sampler epochs, non-finite batches, checkpoint clean-up and the resume mark (see the module docstring).

    For a ``speechbrain.Brain`` subclass; reads ``self.cfg.keep_checkpoints``,
    ``checkpoint_min_key`` / ``checkpoint_max_key`` and ``train_logger`` when
    present (``DistillConfig``).
    """

    # ------------------------------------------------------------ sampler epochs
    def set_sampler_epoch(self, train_set: Any, epoch: int) -> None:
        """``set_epoch(epoch)`` on the loader's own sampler when SpeechBrain keeps none.

        SpeechBrain's fit loop sets the epoch of ``self.train_sampler`` (the
        samplers it made itself); a ``batch_sampler=`` or ``sampler=`` the
        recipe passed is found on the loader. Call from ``on_stage_start`` of
        the training stage, before the first batch: once per epoch either way.
        """
        if self.train_sampler is not None:
            return
        for attr in ("batch_sampler", "sampler"):
            candidate = getattr(train_set, attr, None)
            if hasattr(candidate, "set_epoch"):
                candidate.set_epoch(epoch)
                return

    # -------------------------------------------------------- non-finite batches
    @staticmethod
    def batch_ids(batch: Any) -> Optional[List[str]]:
        """The utterance IDs of a batch (SpeechBrain's ``PaddedBatch.id``), for messages."""
        ids = getattr(batch, "id", None)
        if ids is None and isinstance(batch, dict):
            ids = batch.get("id")
        return list(ids) if ids is not None else None

    def all_finite(self, value: torch.Tensor) -> bool:
        """Whether ``value`` is finite on every process (one all-reduce under DDP)."""
        finite = torch.isfinite(value.detach()).all().to(torch.float32).reshape(1)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            finite = ddp_all_reduce(finite.to(self.device), torch.distributed.ReduceOp.MIN)
        return bool(finite.item() > 0)

    def skip_nonfinite_batch(self, batch: Any, what: str) -> None:
        """Drop this batch's gradients (and any accumulated ones); stop after the patience."""
        self.zero_grad(set_to_none=True)
        self.nonfinite_count = getattr(self, "nonfinite_count", 0) + 1
        ids = self.batch_ids(batch)
        where = f"utterances {', '.join(map(str, ids))}" if ids else "a batch without IDs"
        terms = getattr(self, "last_terms", None)
        entry = f"epoch batch {self.step} ({where}): {what}" + (f", terms {terms}" if terms else "")
        self.nonfinite_batches = getattr(self, "nonfinite_batches", []) + [entry]
        if self.nonfinite_count > self.nonfinite_patience:
            saved = self.checkpointer.find_checkpoint() if self.checkpointer is not None else None
            kept = f"the last checkpoint, {saved.path}, holds finite weights" if saved else "no checkpoint was saved"
            raise NonFiniteLossError(
                f"{self.nonfinite_count} batches this epoch had a non-finite loss or gradient "
                f"(more than --nonfinite_patience={self.nonfinite_patience}); no optimizer stepped on them and "
                f"{kept}. Check these utterances (audio, transcript length vs frames) or lower the learning "
                "rate:\n  " + "\n  ".join(self.nonfinite_batches)
            )
        logger.warning("skipped %s (not back-propagated, no optimizer step; %d of patience %d)",
                       entry, self.nonfinite_count, self.nonfinite_patience)

    def optimizers_step(self):
        """SpeechBrain's step, unless a gradient is NaN / inf (then no optimizer steps)."""
        grads = [p.grad for p in self.modules.parameters() if p.grad is not None]
        if grads:
            total = _total_norm([g.detach() for g in grads])
            if not self.all_finite(total):
                self.skip_nonfinite_batch(getattr(self, "_current_batch", None), "non-finite gradient")
                return
        super().optimizers_step()

    # ------------------------------------------------------------- checkpoints
    def clean_checkpoint_folder(self) -> None:
        """Remove killed saves' ``.tmp-*`` folders and checkpoints a killed run would have deleted."""
        ckpt = self.checkpointer
        if ckpt is None:
            return
        if if_main_process() and os.path.isdir(ckpt.checkpoints_dir):
            for entry in os.scandir(ckpt.checkpoints_dir):
                if entry.name.startswith(TMP_PREFIX) and entry.is_dir():
                    shutil.rmtree(entry.path)
                    logger.info("removed %s (a checkpoint save that was killed)", entry.path)
        ddp_barrier()
        cfg = getattr(self, "cfg", None)
        keep = getattr(cfg, "keep_checkpoints", 1)
        min_key = getattr(cfg, "checkpoint_min_key", None)
        max_key = getattr(cfg, "checkpoint_max_key", None)
        # end-of-epoch checkpoints: the policy of every end-of-epoch save (DistillBrain.on_stage_end)
        ckpt.delete_checkpoints(
            num_to_keep=keep,
            min_keys=[min_key] if min_key else [],
            max_keys=[max_key] if max_key else [],
            importance_keys=[ckpt_recency],
            ckpt_predicate=lambda c: INTRA_EPOCH_CKPT_FLAG not in c.meta,
        )
        # intra-epoch ones: the newest, and only if no end-of-epoch checkpoint came after it
        epochs = ckpt.find_checkpoints(ckpt_predicate=lambda c: INTRA_EPOCH_CKPT_FLAG not in c.meta)
        newest_epoch_end = max((c.meta["unixtime"] for c in epochs), default=float("-inf"))
        intra = ckpt.find_checkpoints(ckpt_predicate=lambda c: INTRA_EPOCH_CKPT_FLAG in c.meta)
        keep_intra = intra[:1] if intra and intra[0].meta["unixtime"] > newest_epoch_end else []
        ckpt.delete_checkpoints(
            num_to_keep=len(keep_intra),
            importance_keys=[ckpt_recency],
            ckpt_predicate=lambda c: INTRA_EPOCH_CKPT_FLAG in c.meta,
        )

    def mark_attempt_in_log(self, resumed_from) -> None:
        """One line in ``train_log.txt`` when an earlier attempt wrote there (main process)."""
        cfg = getattr(self, "cfg", None)
        log = getattr(getattr(cfg, "train_logger", None), "save_file", None)
        if not log or not if_main_process() or not os.path.exists(log) or os.path.getsize(log) == 0:
            return
        now = datetime.datetime.now().isoformat(timespec="seconds")
        if resumed_from is not None:
            meta = resumed_from.meta
            kind = "end of an epoch" if meta.get("end-of-epoch") else "mid-epoch"
            line = (f"# {now}: resumed from checkpoint {os.path.basename(resumed_from.path)} ({kind}, optimizer step "
                    f"{self.optimizer_step}); lines above for later epochs come from the interrupted attempt")
        else:
            line = f"# {now}: started again with no checkpoint to resume from; the lines above are an earlier attempt's"
        with open(log, "a", encoding="utf-8") as f:
            f.write(line + "\n")

    def on_fit_start(self):
        """What waits for training (``training_starts``), clean the checkpoint folder, recover, mark the log."""
        training_starts()
        self.clean_checkpoint_folder()
        resumed_from = self.checkpointer.find_checkpoint() if self.checkpointer is not None else None
        super().on_fit_start()
        self.mark_attempt_in_log(resumed_from)
