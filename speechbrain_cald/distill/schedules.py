"""Learning-rate schedules stepped by ``DistillBrain`` after every optimizer step.

``WarmupCosineLR``: linear warm-up, then a cosine decay to a floor; the CALD LM
reference's schedule (``--lr_scheduler_type cosine --warmup_ratio 0.03
--min_lr 3e-5 --lr_decay_steps N``). The horizon may be left open
(``total_steps=None``) and fixed when training starts, from the planned number
of optimizer steps (:meth:`WarmupCosineLR.plan`).
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from speechbrain.utils import checkpoints

from speechbrain_cald.safe_load import load_weights_only

__all__ = ["WarmupCosineLR"]


@checkpoints.register_checkpoint_hooks
class WarmupCosineLR:
    """Linear warm-up to ``lr``, cosine decay to ``min_lr`` at ``total_steps``, then ``min_lr``.

    Arguments
    ---------
    lr : float
        Peak learning rate.
    min_lr : float
        The floor reached at ``total_steps``.
    total_steps : int, optional
        Decay horizon in optimizer steps; None until :meth:`plan`.
    warmup_steps : int, optional
        Warm-up length; default ``round(warmup_ratio * total_steps)``.
    warmup_ratio : float
        Warm-up as a fraction of ``total_steps`` (when ``warmup_steps`` is None).

    Example
    -------
    >>> opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.0)
    >>> sched = WarmupCosineLR(lr=1.0, min_lr=0.1, total_steps=10, warmup_steps=2)
    >>> lrs = [sched.apply(opt)]  # before the first step
    >>> for _ in range(11):  # after each step: the rate of the next one
    ...     sched(opt); lrs.append(round(opt.param_groups[0]["lr"], 3))
    >>> lrs
    [0.5, 1.0, 0.966, 0.868, 0.722, 0.55, 0.378, 0.232, 0.134, 0.1, 0.1, 0.1]
    """

    def __init__(
        self,
        lr: float,
        min_lr: float = 0.0,
        total_steps: Optional[int] = None,
        warmup_steps: Optional[int] = None,
        warmup_ratio: float = 0.0,
    ):
        if min_lr > lr:
            raise ValueError(f"WarmupCosineLR: min_lr {min_lr} is above the peak lr {lr}")
        self.lr = float(lr)
        self.min_lr = float(min_lr)
        self.total_steps = total_steps
        self.warmup_steps = warmup_steps
        self.warmup_ratio = float(warmup_ratio)
        self.current_step = 0

    def plan(self, planned_steps: Optional[int]) -> None:
        """Fix an open horizon to the run's planned optimizer steps."""
        if self.total_steps is None:
            if not planned_steps:
                raise ValueError(
                    "WarmupCosineLR: total_steps is null and the number of steps is unknown; "
                    "set total_steps (e.g. lr_decay_steps) in the YAML"
                )
            self.total_steps = int(planned_steps)

    def value(self, step: int) -> float:
        """The learning rate for optimizer step ``step`` (1-based)."""
        if self.total_steps is None:
            raise ValueError("WarmupCosineLR: call plan(planned_steps) or give total_steps before training")
        warmup = self.warmup_steps if self.warmup_steps is not None else round(self.warmup_ratio * self.total_steps)
        if step <= warmup:
            return self.lr * step / max(warmup, 1)
        progress = min(1.0, (step - warmup) / max(self.total_steps - warmup, 1))
        return self.min_lr + 0.5 * (self.lr - self.min_lr) * (1.0 + math.cos(math.pi * progress))

    def apply(self, optimizer: torch.optim.Optimizer) -> float:
        """Set the learning rate of the next optimizer step (call once before training too)."""
        lr = self.value(self.current_step + 1)
        for group in optimizer.param_groups:
            group["lr"] = lr
        return lr

    def __call__(self, optimizer: torch.optim.Optimizer) -> None:
        """After an optimizer step: count it and set the rate of the next one."""
        self.current_step += 1
        self.apply(optimizer)

    @checkpoints.mark_as_saver
    def save(self, path):
        torch.save({"current_step": self.current_step, "total_steps": self.total_steps}, path)

    @checkpoints.mark_as_loader
    def load(self, path, end_of_epoch=False, device=None):
        data = load_weights_only(path)
        self.current_step = data["current_step"]
        self.total_steps = data["total_steps"]
